"""The ``erniekit`` command: parse arguments, build what the verb needs, run it.

Each verb lives in its own module and is imported only when used, so ``erniekit recipes`` and
``erniekit config show`` never load Paddle.
"""

from __future__ import annotations

import argparse
import sys

from erniekit import __version__
from erniekit.errors import ErniekitError, Interrupted


def _cmd_config_show(args: argparse.Namespace) -> int:
    from erniekit.config import load_recipe, render_yaml

    recipe = load_recipe(args.recipe, args.overrides)
    sys.stdout.write(render_yaml(recipe, comments=not args.no_docs))
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from erniekit.config import recipe_table, recipes_dir
    from erniekit.config.render import preset_table
    from erniekit.resources import shipped_dir

    if args.copy:
        return _copy_recipe(*args.copy)
    print(recipe_table(recipes_dir()))
    print()
    print(preset_table(shipped_dir("configs")))
    return 0


def _copy_recipe(name: str, dest: str) -> int:
    """``recipes --copy NAME DEST``: a shipped recipe (or preset) as a file to edit; its ``base:`` names
    still resolve."""
    import shutil
    from pathlib import Path

    from erniekit.config import ConfigError, recipes_dir
    from erniekit.config.load import find_recipe

    source = find_recipe(name, recipes_dir())
    if source is None:
        raise ConfigError(
            "no shipped recipe or preset of this name; `erniekit recipes` lists them", source=name
        )
    target = Path(dest)
    if target.is_dir() or dest.endswith("/"):
        target = target / source.name
    if target.exists():
        raise ConfigError("already exists; not overwritten", source=str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    print(f"wrote {target}; edit it, then: erniekit train {target}")
    return 0


def _setup_logging() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def _relaunch(args: argparse.Namespace) -> int:
    """``train --nproc N``: run this same command under paddle.distributed.launch with N processes.

    The launcher runs in its own session and gets each Ctrl-C/SIGTERM from here exactly once: on the
    first it sends the workers SIGTERM (they finish the step, save and exit), on a second it kills them.
    Were it in the terminal's process group, one Ctrl-C would reach it twice and force the kill.
    """
    import os
    import signal
    import subprocess
    from pathlib import Path

    main_py = str(Path(__file__).resolve().parent / "__main__.py")
    cmd = [
        sys.executable,
        "-m",
        "paddle.distributed.launch",
        "--nproc_per_node",
        str(args.nproc),
        "--log_dir",
        args.log_dir,
    ]
    if args.nnodes > 1:
        cmd += ["--nnodes", str(args.nnodes)]
    if args.master:
        cmd += ["--master", args.master]
    cmd += [main_py, "train", args.recipe, *args.overrides]
    env = dict(os.environ)
    cores = os.cpu_count() or 1
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // args.nproc)))  # processes share the cores
    print(f"launching: {' '.join(cmd)}", file=sys.stderr)
    launcher = subprocess.Popen(cmd, env=env, start_new_session=True)
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        launcher.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = launcher.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        raise Interrupted(received[0])
    return code


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from erniekit.config import ConfigError, load_recipe
    from erniekit.runtime import setup_runtime

    _setup_logging()
    recipe = load_recipe(args.recipe, args.overrides)  # check the recipe before paying for Paddle
    if args.nproc * args.nnodes > 1 and "PADDLE_TRAINERS_NUM" not in os.environ:
        p = recipe.parallel
        if p.world != args.nproc * args.nnodes:
            raise ConfigError(
                f"dp x sharding.degree x tp x pp = {p.world}, but --nproc {args.nproc} x --nnodes "
                f"{args.nnodes} = {args.nproc * args.nnodes} processes were asked for",
                key="parallel",
            )
        return _relaunch(args)
    settings = setup_runtime()
    import logging

    from erniekit.trainer.loop import Trainer

    logging.getLogger("erniekit").info(settings.describe())
    Trainer(recipe).fit()
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from erniekit.config import load_recipe
    from erniekit.parallel.estimate import recipe_plan

    print(recipe_plan(load_recipe(args.recipe, args.overrides), args.recipe, args.flavor))
    return 0


def _runtime() -> None:
    _setup_logging()
    from erniekit.runtime import setup_runtime

    settings = setup_runtime()
    import logging

    logging.getLogger("erniekit").info(settings.describe())


def _cmd_export(args: argparse.Namespace) -> int:
    _runtime()
    from erniekit.errors import ErniekitError

    args.dtype = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}.get(args.dtype, args.dtype)
    if args.to not in ("gguf", "ollama") and args.dtype == "q8_0":
        raise ErniekitError("--dtype q8_0 is a GGUF quantisation: use it with --to gguf or ollama")
    if args.to == "paddle-inference":
        from erniekit.export.paddle_inference import export_paddle_inference

        export_paddle_inference(args.run, args.out)
    elif args.to in ("gguf", "ollama"):
        from erniekit.export.gguf import export_gguf

        short = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "q8_0": "q8_0", None: "f16"}
        export_gguf(args.run, args.out, short[args.dtype], ollama=args.to == "ollama")
    else:
        from erniekit.export.hf import export_hf

        layout = "paddle" if args.to == "paddle" else "hf"
        export_hf(args.run, args.out, args.merge_lora, args.dtype or "float32", args.max_shard_size, layout)
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    _runtime()
    from erniekit.chat import chat

    return chat(
        args.model,
        prompt=args.prompt,
        system=args.system,
        images=args.image,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    _runtime()
    from erniekit.serve import serve

    return serve(
        args.model,
        args.host,
        args.port,
        api_key=args.api_key,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_model_len=args.max_model_len,
        name=args.name,
        allow_images=args.allow_images,
        reasoning=args.reasoning,
        adapters=args.adapter,
    )


def _cmd_webui(args: argparse.Namespace) -> int:
    _setup_logging()
    from erniekit.webui import webui

    return webui(args.host, args.port, args.root, args.token, args.any_path, args.state_dir)


def _cmd_eval(args: argparse.Namespace) -> int:
    _runtime()
    import json

    from erniekit.evaluate import run_eval

    results = run_eval(args.target, args.overrides, args.data, args.generation, args.out)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


def _cmd_convert_gguf(args: argparse.Namespace) -> int:
    _runtime()
    from erniekit.convert.gguf import convert_gguf

    convert_gguf(args.input, args.out)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """Check a directory against its manifest, or, for a run, every checkpoint and export in it."""
    import time
    from pathlib import Path

    from erniekit.errors import CheckpointError
    from erniekit.manifest import MANIFEST, verify

    root = Path(args.dir)
    dirs = [root] if (root / MANIFEST).is_file() else sorted(p.parent for p in root.glob(f"*/{MANIFEST}"))
    if not dirs:
        raise CheckpointError(f"{root}: no {MANIFEST} here or in its subdirectories (nothing to verify)")
    for d in dirs:
        start = time.perf_counter()
        size = verify(d, missing="error")
        print(f"ok  {d}  ({size / 1e6:.1f} MB in {time.perf_counter() - start:.2f} s)")
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
    show.set_defaults(func=_cmd_config_show)

    train = verbs.add_parser("train", help="run a recipe (SFT, LoRA, DPO, GRPO, PPO)")
    train.add_argument("recipe", help="recipe file, or a name under recipes/ such as ernie4_5/debug_sft")
    train.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="overrides such as train.max_steps=10"
    )
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="processes on this node: relaunch under paddle.distributed.launch (one per GPU)",
    )
    train.add_argument("--nnodes", type=int, default=1, help="nodes taking part (multi-node runs)")
    train.add_argument("--master", help="rendezvous host:port of node 0 (multi-node runs)")
    train.add_argument("--log-dir", default="log", help="where paddle.distributed.launch writes rank logs")
    train.set_defaults(func=_cmd_train)

    plan = verbs.add_parser(
        "plan", help="memory and FLOPs per device for a recipe's model and parallel layout (no Paddle)"
    )
    plan.add_argument("recipe", help="recipe file, or a name under recipes/")
    plan.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. parallel.tp=8")
    plan.add_argument("--flavor", help="plan this named architecture instead, e.g. ernie4_5/300b-a47b")
    plan.set_defaults(func=_cmd_plan)

    export = verbs.add_parser(
        "export", help="write a run as HF safetensors, a PEFT adapter, GGUF or a Paddle program"
    )
    export.add_argument("run", help="a checkpoint-N directory, or a run's output_dir (its newest checkpoint)")
    export.add_argument("--out", required=True, help="directory to write")
    export.add_argument("--to", choices=["hf", "paddle", "gguf", "ollama", "paddle-inference"], default="hf")
    export.add_argument("--merge-lora", action="store_true", help="fold LoRA adapters into the weights")
    export.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16", "f32", "bf16", "f16", "q8_0"],
        help="weights (default: float32 for hf, f16 for gguf; q8_0: gguf and ollama only)",
    )
    export.add_argument("--max-shard-size", default="5GB", help="largest safetensors file, e.g. 500MB, 5GB")
    export.set_defaults(func=_cmd_export)

    chat = verbs.add_parser("chat", help="talk to a model directory or a training run")
    chat.add_argument("model", help="HF model directory, checkpoint, or run directory")
    chat.add_argument("--prompt", help="one message, answered non-interactively")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="an image for the prompt (repeatable; VL models)",
    )
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (the default)")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--top-k", type=int, default=0)
    chat.add_argument("--seed", type=int, default=None)
    chat.set_defaults(func=_cmd_chat)

    srv = verbs.add_parser("serve", help="an OpenAI-compatible HTTP server (continuous batching)")
    srv.add_argument("model", help="HF model directory, checkpoint, or run directory")
    srv.add_argument(
        "--adapter",
        action="append",
        metavar="NAME=PATH",
        help="serve a LoRA run or PEFT adapter dir unmerged as model NAME (repeatable; batches mix them)",
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/ requests")
    srv.add_argument("--max-batch", type=int, default=8, help="requests decoded together (KV-cache rows)")
    srv.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond that; more get 429")
    srv.add_argument("--max-model-len", type=int, help="prompt + reply tokens per request (default 4096)")
    srv.add_argument("--name", help="the model's name in /v1/models (default: the directory's name)")
    srv.add_argument(
        "--allow-images",
        action="append",
        metavar="DIR",
        help="image files may be read under DIR (repeatable)",
    )
    srv.add_argument(
        "--reasoning",
        action="store_true",
        help="replies open inside the reasoning, which ends at </think> (thinking models): reasoning_content",
    )
    srv.set_defaults(func=_cmd_serve)

    web = verbs.add_parser("webui", help="the browser UI: train with live curves, chat, eval, export")
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    web.add_argument("--port", type=int, default=7860)
    web.add_argument("--root", help="the directory whose files the page may use (default: the current one)")
    web.add_argument(
        "--token", help="required of every request (default: a random one when --host is not local)"
    )
    web.add_argument("--any-path", action="store_true", help="let the page use paths outside --root")
    web.add_argument(
        "--state-dir", help="where the page's jobs and uploads are kept (default ROOT/.erniekit/webui)"
    )
    web.set_defaults(func=_cmd_webui)

    ev = verbs.add_parser("eval", help="loss/perplexity and generation scores")
    ev.add_argument("target", help="a recipe, or a model / run directory")
    ev.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. eval.scorer=numeric"
    )
    ev.add_argument(
        "--data", action="append", default=[], help="SFT-format file for loss/perplexity (repeatable)"
    )
    ev.add_argument("--generation", action="append", default=[], help="{prompt, answer} file to score")
    ev.add_argument("--out", help="write results and completions as JSON here")
    ev.set_defaults(func=_cmd_eval)

    convert = verbs.add_parser("convert", help="convert other model formats to an HF directory")
    convert_verbs = convert.add_subparsers(dest="convert_verb", metavar="FORMAT", required=True)
    gguf = convert_verbs.add_parser("gguf", help="llama.cpp GGUF (llama/qwen2 architectures) -> HF directory")
    gguf.add_argument("input", help="the .gguf file")
    gguf.add_argument("--out", required=True, help="directory to write")
    gguf.set_defaults(func=_cmd_convert_gguf)

    ver = verbs.add_parser("verify", help="check a checkpoint, export or run against its SHA-256 manifests")
    ver.add_argument("dir", help="a directory with manifest.json, or a run (checks each one inside)")
    ver.set_defaults(func=_cmd_verify)

    recipes = verbs.add_parser(
        "recipes", help="list the shipped recipes and presets, or copy one out to edit"
    )
    recipes.add_argument(
        "--copy",
        nargs=2,
        metavar=("NAME", "DEST"),
        help="write shipped recipe (or configs/... preset) NAME to the file or directory DEST",
    )
    recipes.set_defaults(func=_cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    # paddle.utils.cpp_extension warns at import that ccache is missing; we build no C++ extensions, and
    # some verbs import Paddle before (or without) the runtime's quiet import.
    warnings.filterwarnings("ignore", message="No ccache found")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may also follow options (``train r --nproc 2 optim.lr=1e-4``).
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except ErniekitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Interrupted, or a Ctrl-C before training started
        print("interrupted (state saved where a checkpoint was due)", file=sys.stderr)
        return 128 + getattr(e, "signum", 2)  # 130 for Ctrl-C, 143 for SIGTERM


if __name__ == "__main__":
    raise SystemExit(main())
