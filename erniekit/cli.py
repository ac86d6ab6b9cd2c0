"""The ``erniekit`` command: parse arguments, build what the verb needs, run it.

Each verb lives in its own module and is imported only when used, so ``erniekit recipes`` and
``erniekit config show`` never load Paddle.
"""

from __future__ import annotations

import argparse
import sys

from erniekit import __version__
from erniekit.errors import ErniekitError


def _cmd_config_show(args: argparse.Namespace) -> int:
    from erniekit.config import load_recipe, render_yaml

    recipe = load_recipe(args.recipe, args.overrides)
    sys.stdout.write(render_yaml(recipe, comments=not args.no_docs))
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from erniekit.config import RECIPES_DIR, recipe_table

    print(recipe_table(RECIPES_DIR))
    return 0


def _setup_logging() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from erniekit.config import load_recipe
    from erniekit.runtime import setup_runtime

    _setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)  # check the recipe before paying for Paddle
    settings = setup_runtime()
    import logging

    from erniekit.trainer.loop import Trainer

    logging.getLogger("erniekit").info(settings.describe())
    Trainer(recipe).fit()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erniekit",
        description="Train and fine-tune ERNIE 4.5 and Llama-family models with PaddlePaddle.",
    )
    parser.add_argument("--version", action="version", version=f"erniekit {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    config = verbs.add_parser("config", help="inspect recipes")
    config_verbs = config.add_subparsers(dest="config_verb", metavar="ACTION", required=True)
    show = config_verbs.add_parser("show", help="print a recipe fully resolved, each field with its doc")
    show.add_argument("recipe", help="recipe file, or a name under recipes/ such as ernie4_5/debug_sft")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides such as optim.lr=3e-4")
    show.add_argument("--no-docs", action="store_true", help="omit the field docs")
    show.set_defaults(run=_cmd_config_show)

    train = verbs.add_parser("train", help="run a recipe (SFT, LoRA, DPO, GRPO, PPO)")
    train.add_argument("recipe", help="recipe file, or a name under recipes/ such as ernie4_5/debug_sft")
    train.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides such as train.max_steps=10"
    )
    train.set_defaults(run=_cmd_train)

    recipes = verbs.add_parser("recipes", help="list the shipped recipes")
    recipes.set_defaults(run=_cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ErniekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (state saved where a checkpoint was due)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
