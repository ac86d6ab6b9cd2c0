"""A trained run -> files other tools read: an HF model directory, or a PEFT adapter.

    export_hf("output/run", "out/", merge_lora=True)     # config.json, safetensors (+index), tokenizer
    export_hf("output/run", "out/", merge_lora=False)    # LoRA runs: adapter_config.json + adapter weights

An adapter needs its base model on disk. When the run's base was a randomly initialised flavor (tests,
debug runs), the base is written next to the adapter in ``base_model/`` and the adapter points there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from erniekit.errors import CheckpointError
from erniekit.inference.load import load_for_inference
from erniekit.manifest import sealed
from erniekit.models import save_pretrained
from erniekit.models.common.heads import SCORE
from erniekit.peft.adapter import save_peft_adapter
from erniekit.peft.lora import base_state, lora_layers, merged_state
from erniekit.tensors import to_numpy
from erniekit.trainer.restore import recipe_processor, restore

log = logging.getLogger(__name__)


def _write_tokenizer(tokenizer, out: Path) -> None:
    tokenizer.save(out)
    gen_path = out / "generation_config.json"
    generation = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    generation["eos_token_id"] = tokenizer.stop_ids if len(tokenizer.stop_ids) > 1 else tokenizer.stop_ids[0]
    generation["pad_token_id"] = tokenizer.pad_id
    gen_path.write_text(json.dumps(generation, indent=2) + "\n")


def export_hf(
    run: str | Path,
    out: str | Path,
    merge_lora: bool = False,
    dtype: str = "float32",
    max_shard_size: str = "5GB",
    layout: str = "hf",
) -> Path:
    """A run (or checkpoint) as an HF directory, a PEFT adapter (LoRA, unmerged) or, ``layout="paddle"``,
    ERNIE's Paddle checkpoint layout (what ERNIEKit and FastDeploy load). ``run`` may also be a model
    directory, to re-shard (``max_shard_size``), re-type or re-lay-out an export."""
    if (Path(run) / "config.json").is_file():
        tokenizer, model, processor = load_for_inference(run)
        recipe = None
    else:
        recipe, tokenizer, model = restore(run)
        processor = recipe_processor(recipe, model.args)
    if layout == "paddle" and (model.args.family != "ernie4_5" or model.args.vision is not None):
        raise CheckpointError(f"--to paddle writes ERNIE 4.5 text models, not {model.args.family}")
    with sealed(out):
        return _export_hf(
            recipe, tokenizer, model, processor, Path(out), merge_lora, dtype, max_shard_size, layout
        )


def _export_hf(
    recipe, tokenizer, model, processor, out: Path, merge_lora, dtype, max_shard_size, layout
) -> Path:
    has_lora = bool(lora_layers(model))
    scorer = getattr(model, SCORE, None) is not None
    if layout == "paddle" and scorer:
        raise CheckpointError("--to paddle writes language models; export a reward model with --to hf")
    # the Paddle layout has no adapter form; a reward model's head is part of its weights
    merge_lora = merge_lora or layout == "paddle" or scorer
    if has_lora and not merge_lora:
        base = recipe.model.path
        if base is None:
            base_dir = out / "base_model"
            with sealed(base_dir):
                save_pretrained(model, base_dir, dtype, max_shard_size, arrays=_base_arrays(model))
                _write_tokenizer(tokenizer, base_dir)
            base = str(base_dir.resolve())
        save_peft_adapter(model, out, recipe.lora, str(Path(base).resolve()) if recipe.model.path else base)
        tokenizer.save(out)
        log.info("wrote PEFT adapter to %s (base model: %s)", out, base)
        return out
    arrays = {k: v.numpy() for k, v in merged_state(model).items()} if has_lora else None
    save_pretrained(
        model, out, dtype, max_shard_size, arrays, processor, layout, pad_token_id=tokenizer.pad_id
    )
    _write_tokenizer(tokenizer, out)
    kind = "reward" if scorer else "merged" if has_lora else "full"
    log.info("wrote %s model to %s", kind, out)
    return out


def _base_arrays(model) -> dict:
    return {k: to_numpy(v) for k, v in base_state(model).items()}
