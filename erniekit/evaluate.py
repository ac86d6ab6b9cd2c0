"""``erniekit eval``: loss and perplexity on ``data.eval``, and generation scores on ``eval.generation``.

The target is a recipe (its model and data), or a model directory / training run, in which case the data
files come from the command line. An RL recipe's ``data.eval`` holds prompts with answers: they are
generation files (unless ``eval.generation`` names others), not loss data. Results are printed and,
with ``--out``, written as JSON together with every completion.
"""

from __future__ import annotations

import json
from pathlib import Path

from erniekit.config import Recipe, load_recipe
from erniekit.config.core import build
from erniekit.data.files import read_options
from erniekit.data.prompts import read_prompts
from erniekit.scoring import resolve_scorer


def generation_scores(tokenizer, model, recipe: Recipe, processor=None) -> tuple[dict, list[dict]]:
    """Generate for every {prompt, answer} record of eval.generation and score; a vision-language model
    (``processor`` given) reads the prompts' images, paths relative to the prompt file."""
    from erniekit.data.multimodal import PromptEncoder
    from erniekit.inference.engine import Engine, Request

    cfg = recipe.eval
    scorer = resolve_scorer(cfg.scorer)
    encode = PromptEncoder(tokenizer, processor, model.args.vision)
    results, samples = {}, []
    for spec in cfg.generation:
        records = read_prompts(spec.path, recipe.data.skip_bad_lines, spec.max_samples, **read_options(spec))
        completions = []  # token ids, per record
        for start in range(0, len(records), cfg.batch_size):  # images decoded a batch at a time
            encoded = [
                encode(r.messages, r.base_dir, tools=r.tools) for r in records[start : start + cfg.batch_size]
            ]
            batch = [
                Request(
                    ids,
                    cfg.max_new_tokens,
                    cfg.temperature,
                    seed=recipe.train.seed + start + n,  # each record its own draws, whatever its batch
                    eos_token_ids=frozenset(tokenizer.stop_ids),
                    images=images,
                    videos=videos,
                )
                for n, (ids, images, videos) in enumerate(encoded)
            ]
            longest = max(len(r.prompt) for r in batch)
            Engine(model, max_batch=cfg.batch_size, max_model_len=longest + cfg.max_new_tokens).run(batch)
            completions += [r.tokens for r in batch]
        scores = []
        for record, tokens in zip(records, completions):
            completion = tokenizer.decode(tokens)
            score = float(scorer(completion, record.answer, record.data))
            scores.append(score)
            samples.append(
                {"where": record.where, "completion": completion, "answer": record.answer, "score": score}
            )
        results[spec.path] = {"score": sum(scores) / len(scores), "n": len(scores)}
    return results, samples


def loss_scores(tokenizer, model, recipe: Recipe) -> dict:
    if not recipe.data.eval:
        return {}
    from erniekit.methods.sft import SFT

    return SFT(recipe, tokenizer, model).evaluate(model)


def target_recipe(
    target: str, overrides: list[str], data: list[str], generation: list[str]
) -> tuple[Recipe, str]:
    """The recipe to evaluate, and where the weights are: 'recipe' (its model) or a model/run directory."""
    from erniekit.config.load import apply_overrides
    from erniekit.config.schema import DatasetSpec, PolicyGradientConfig
    from erniekit.trainer.restore import find_checkpoint

    path = Path(target)
    if path.is_dir() and (path / "config.json").is_file():
        recipe, weights = (
            build(Recipe, apply_overrides({"model": {"path": str(path)}}, overrides, {})),
            str(path),
        )
    elif path.is_dir():
        recipe, weights = load_recipe(find_checkpoint(path) / "config.yaml", overrides), str(path)
    else:
        recipe, weights = load_recipe(target, overrides), "recipe"
    if isinstance(recipe.method, PolicyGradientConfig):  # an RL recipe's eval files hold prompts, no targets
        recipe.eval.generation = recipe.eval.generation or recipe.data.eval
        recipe.data.eval = []
    recipe.data.eval += [DatasetSpec(path=p) for p in data]
    recipe.eval.generation += [DatasetSpec(path=p) for p in generation]
    return recipe, weights


def run_eval(
    target: str, overrides: list[str], data: list[str], generation: list[str], out: str | None = None
) -> dict:
    from erniekit.inference.load import load_for_inference
    from erniekit.trainer.restore import model_from_recipe

    recipe, weights = target_recipe(target, overrides, data, generation)
    if weights == "recipe":
        from erniekit.trainer.restore import recipe_processor

        tokenizer, model = model_from_recipe(recipe)
        model.eval()
        processor = recipe_processor(recipe, model.args)
    else:
        tokenizer, model, processor = load_for_inference(weights)
    results = {"loss": loss_scores(tokenizer, model, recipe)}
    results["generation"], samples = generation_scores(tokenizer, model, recipe, processor)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({**results, "samples": samples}, indent=2, ensure_ascii=False) + "\n")
    return results
