"""Building a recipe's model (base weights + optional LoRA) and restoring one from a checkpoint.

Used by training, export, chat and eval, so every verb reconstructs a run the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np
import paddle
from paddle.base.framework import EagerParamBase

from erniekit import ops
from erniekit.config import Recipe, load_recipe
from erniekit.config.core import ConfigError
from erniekit.errors import CheckpointError
from erniekit.models import adapt_tokenizer, build_model, flavor_args, load_model
from erniekit.models.common.heads import SCORE, SCORE_RULE, VALUE, attach_head
from erniekit.models.common.moe import set_capacity
from erniekit.models.common.weights import check_and_assign
from erniekit.peft import qlora
from erniekit.tokenizer import load_tokenizer
from erniekit.trainer import checkpoint as ckpt


def recipe_args(recipe: Recipe):
    """The model shape a recipe trains (model.path's config.json, or the flavor), no weights read."""
    from erniekit.models import load_args

    m = recipe.model
    return load_args(m.path) if m.path is not None else flavor_args(m.flavor)


def model_from_recipe(recipe: Recipe):
    """(tokenizer, model): base weights from model.path or a seeded flavor, then LoRA when enabled."""
    m = recipe.model
    ops.configure(m.fused_ops)
    tokenizer = load_tokenizer(m.tokenizer or m.path, recipe.data.template)
    lo = recipe.lora
    quantize = lo.quantize if lo.enabled and lo.quantize != "none" else None  # QLoRA: as it is read
    if m.path is not None:
        store = partial(qlora.quantized_layers, fmt=quantize, group=lo.quantize_group) if quantize else None
        model = load_model(m.path, store=store)
    else:
        model = build_model(flavor_args(m.flavor), seed=recipe.train.seed)
        if quantize:
            qlora.quantize_base(model, quantize, lo.quantize_group)
    if tokenizer.vocab_size > model.args.vocab_size:
        raise ConfigError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary is "
            f"{model.args.vocab_size}",
            key="model.tokenizer",
        )
    adapt_tokenizer(tokenizer, model.args, recipe.data.template)
    set_capacity(model, m.moe_capacity_factor)
    if m.router_aux_loss_coef is not None:
        model.args = dataclasses.replace(model.args, router_aux_loss_coef=m.router_aux_loss_coef)
    freeze(model, m.freeze)
    if lo.enabled:
        from erniekit.peft.lora import apply_lora

        apply_lora(model, lo.targets, lo.rank, lo.alpha, lo.dropout, lo.rslora, lo.lora_plus_ratio)
    if quantize:
        qlora.log_storage(model, quantize)
    return tokenizer, model


def recipe_processor(recipe: Recipe, args):
    """The image processor of a recipe's vision-language model (None for a text model)."""
    if args.vision is None:
        return None
    from erniekit.models import image_processor

    d = recipe.data
    return image_processor(args, recipe.model.path, d.image_min_pixels, d.image_max_pixels)


def vl_part(name: str) -> str:
    """Which model.freeze part a parameter of a vision-language model belongs to. As ERNIEKit groups
    them: the vision expert set (and its router) is not the language model's."""
    if name.startswith("vision.tower."):
        return "vision_tower"
    if name.startswith("vision."):
        return "resampler"  # ERNIE VL's resampler, PaddleOCR-VL's projector
    if ".vision_experts." in name or ".vision_gate." in name:
        return "vision_experts"
    return "language_model"


def freeze(model, parts: list[str]) -> None:
    """Stop the gradients of the named parts of a vision-language model (model.freeze)."""
    if parts and model.args.vision is None:
        raise ConfigError(f"a {model.args.family} model has no vision parts to freeze", key="model.freeze")
    for name, p in model.named_parameters():
        if parts and vl_part(name) in parts:
            p.stop_gradient = True


def scale_learning_rates(named_params: Mapping, optim) -> None:
    """optim.vision_lr_ratio / router_lr_ratio as per-parameter learning-rate multipliers (on top of any
    already set, such as LoRA+'s on B); ``named_params`` by single-device name, after parallel plans."""
    for name, p in named_params.items():
        ratio = optim.vision_lr_ratio if name.startswith("vision.") else 1.0
        if name.endswith("gate.weight") and ".mlp." in name:
            ratio *= optim.router_lr_ratio
        if ratio != 1.0:
            p.optimize_attr["learning_rate"] = p.optimize_attr.get("learning_rate", 1.0) * ratio


def saved_state_names(tensors: Mapping[str, paddle.Tensor]) -> list[str]:
    """What a checkpoint stores: trainable parameters and buffers (frozen base weights are not saved)."""
    return [n for n, t in tensors.items() if not isinstance(t, EagerParamBase) or not t.stop_gradient]


def load_model_arrays(
    target, arrays: dict[str, np.ndarray], origin: str, args_dict: dict | None, model_args
) -> None:
    """Assign checkpoint arrays to a model (or a parallel Layout's tensors) after checking its shape."""
    if args_dict is not None and not model_args.matches(args_dict):
        raise CheckpointError(
            f"{origin}: saved from a different model shape than model.* describes "
            f"(is this adapter for another base model?)"
        )
    tensors = target.tensors if hasattr(target, "tensors") else target.state_dict()
    check_and_assign(tensors, arrays, origin, required=saved_state_names(tensors))


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or the newest checkpoint of a run's output directory."""
    path = Path(path)
    if (path / ckpt.STATE_NAME).is_file():
        return path
    found = ckpt.checkpoints(path)
    if not found:
        raise CheckpointError(f"{path}: neither a checkpoint nor a run directory with checkpoints")
    return found[-1]


def restore(path: str | Path):
    """(recipe, tokenizer, model) of a checkpoint or run directory, weights as trained."""
    checkpoint = find_checkpoint(path)
    recipe = load_recipe(checkpoint / "config.yaml")
    tokenizer, model = model_from_recipe(recipe)
    arrays, _, state = ckpt.read_checkpoint(checkpoint)
    # training-only heads (PPO's value head) are not part of the model that is served or exported; a
    # reward model's score head is
    arrays = {k: v for k, v in arrays.items() if not k.startswith(f"{VALUE}.")}
    if SCORE_RULE.internal in arrays:
        attach_head(model, SCORE)
    load_model_arrays(model, arrays, str(checkpoint), state.get("model_args"), model.args)
    model.eval()
    return recipe, tokenizer, model
