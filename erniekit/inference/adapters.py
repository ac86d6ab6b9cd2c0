"""LoRA adapters served without merging: one batch mixes rows for the base model and for different
adapters, each row with its own.

Every linear layer some adapter trains becomes an ``AdapterLinear`` holding all adapters' factors
stacked, ``A [K + 1, in, R]`` and ``B [K + 1, R, out]`` (slot 0 is zeros: the base model; ranks padded to
the largest with zeros; the scale folded into B). ``Selector.rows`` names each row's slot before a
forward pass; a row's output is ``x W + b + (x A[slot]) B[slot]``, the formula LoRA trains with.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from erniekit.errors import CheckpointError
from erniekit.manifest import verify


class Selector:
    """Which adapter slot each row of the next forward pass uses (None: every row the base model)."""

    def __init__(self, names: list[str]):
        self.names = names  # slot i + 1 is names[i]
        self.rows: paddle.Tensor | None = None

    def select(self, slots: list[int]) -> None:
        self.rows = paddle.to_tensor(slots, dtype="int64") if any(slots) else None


class AdapterLinear(nn.Layer):
    def __init__(self, base: nn.Linear, a: np.ndarray, b: np.ndarray, selector: Selector):
        super().__init__()
        self.weight, self.bias, self.selector = base.weight, base.bias, selector
        self.lora_a = paddle.to_tensor(a, dtype=base.weight.dtype)
        self.lora_b = paddle.to_tensor(b, dtype=base.weight.dtype)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = F.linear(x, self.weight, self.bias)
        rows = self.selector.rows
        if rows is None:
            return y
        a, b = paddle.gather(self.lora_a, rows), paddle.gather(self.lora_b, rows)  # [B, in, R], [B, R, out]
        return y + paddle.bmm(paddle.bmm(x, a), b)


def adapter_factors(path: str | Path, base) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The factors of a LoRA run or checkpoint (see lora_factors), or of a PEFT adapter directory."""
    if (Path(path) / "adapter_config.json").is_file():
        return peft_factors(path, base)
    from erniekit.trainer.restore import restore

    return lora_factors(restore(path)[2], base, str(path))


def peft_factors(path: str | Path, base) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The factors of a Hugging Face PEFT LoRA adapter (``adapter_config.json`` +
    ``adapter_model.safetensors``: ``lora_A`` [r, in] and ``lora_B`` [out, r] per transformers module) on
    the served model's layers. The modules that are parts of one of our fused layers (q/k/v of
    ``qkv_proj``, gate/up of ``up_gate_proj``) sit side by side: A [in, sum of r], B block-diagonal, each
    part's B in its own output columns, which is the sum of their updates."""
    from safetensors.numpy import load_file

    from erniekit.peft.adapter import PEFT_PREFIX

    path = Path(path)
    verify(path, missing="ignore")  # an adapter erniekit exported carries a manifest
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / 'adapter_config.json'}: unreadable ({e})") from None
    if config.get("peft_type") != "LORA":
        raise CheckpointError(f"{path}: a {config.get('peft_type')} adapter; only LoRA is served")
    for key in ("use_dora", "rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise CheckpointError(f"{path / 'adapter_config.json'}: {key} is not supported")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{path}: no adapter_model.safetensors")
    tensors = load_file(str(weights))
    where = _peft_modules(base)  # transformers module -> (our layer, column start, width)
    layers = dict(base.named_sublayers())
    parts: dict[str, list[tuple[int, int, np.ndarray, np.ndarray]]] = {}
    for key in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
        module = key[: -len(".lora_A.weight")].removeprefix(PEFT_PREFIX)
        if module not in where:
            raise CheckpointError(f"{weights}: {key} names no linear layer of the served model")
        layer, start, width = where[module]
        a, b = tensors[key], tensors.get(key.replace(".lora_A.", ".lora_B."))
        if b is None or b.shape != (width, a.shape[0]) or a.shape[1] != layers[layer].weight.shape[0]:
            raise CheckpointError(f"{weights}: {module} does not fit the served model")
        parts.setdefault(layer, []).append((start, width, a.T, b.T * scale))
    unread = [k for k in tensors if not k.endswith((".lora_A.weight", ".lora_B.weight"))]
    if unread or not parts:
        what = unread[0] if unread else "no LoRA tensors"
        raise CheckpointError(f"{weights}: {what} (only LoRA A/B tensors are served)")
    factors = {}
    for name, pieces in parts.items():
        a = np.concatenate([p[2] for p in pieces], axis=1)
        b = np.zeros((a.shape[1], layers[name].weight.shape[1]), np.float32)
        row = 0
        for start, width, _, pb in pieces:
            b[row : row + pb.shape[0], start : start + width] = pb
            row += pb.shape[0]
        factors[name] = (a.astype(np.float32), b)
    return factors


def _peft_modules(model) -> dict[str, tuple[str, int, int]]:
    """{transformers module name: (our linear layer, first output column, width)} for every linear
    layer of ``model`` and every part of a fused one, named as PEFT names them (see peft/adapter.py)."""
    from erniekit.peft.adapter import hf_module_namer
    from erniekit.peft.lora import output_parts

    module_of, _ = hf_module_namer(model.args)
    out = {}
    for name, layer in model.named_sublayers():
        if not isinstance(layer, nn.Linear):
            continue
        parent, _, leaf = name.rpartition(".")
        start = 0
        for part in output_parts(leaf, layer, model.args, set()):
            hf = module_of(f"{parent}.{part.name}" if parent else part.name)
            if hf is not None:
                out[hf] = (name, start, part.width)
            start += part.width
    return out


def lora_factors(model, base, path: str = "adapter") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{linear layer name: (A [in, r], B [r, out] with the scale folded in)} of a model with LoRA layers,
    checked against the served base model's shapes."""
    from erniekit.peft.lora import LoRAExperts, LoRALinear, lora_layers

    layers = lora_layers(model)
    if not layers:
        raise CheckpointError(f"{path}: not a LoRA run (no adapters in its checkpoint)")
    served = dict(base.named_sublayers())
    factors = {}
    for name, layer in layers:
        if isinstance(layer, LoRAExperts):
            raise CheckpointError(
                f"{path}: adapters on routed experts ({name}) are served merged: "
                f"erniekit export {path} --merge-lora, then serve the export"
            )
        assert isinstance(layer, LoRALinear)
        target = served.get(name)
        shape = [
            layer.lora_A.shape[0],
            layer.lora_B.shape[1],
        ]  # [in, out], whether or not the base is quantised
        if not isinstance(target, nn.Linear) or list(target.weight.shape) != shape:
            raise CheckpointError(f"{path}: adapter layer {name} does not fit the served model")
        factors[name] = (layer.lora_A.numpy(), (layer.delta_b() * layer.scale).numpy())
    return factors


def attach(model, adapters: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]) -> Selector:
    """Replace every linear layer an adapter trains with an AdapterLinear over all adapters (in order)."""
    names = list(adapters)
    selector = Selector(names)
    targets = sorted({layer for factors in adapters.values() for layer in factors})
    layers = dict(model.named_sublayers())
    for layer_name in targets:
        parent_name, _, attr = layer_name.rpartition(".")
        parent = layers[parent_name] if parent_name else model
        base = getattr(parent, attr)
        fan_in, fan_out = base.weight.shape
        rank = max(f[layer_name][0].shape[1] for f in adapters.values() if layer_name in f)
        a = np.zeros((len(names) + 1, fan_in, rank), np.float32)
        b = np.zeros((len(names) + 1, rank, fan_out), np.float32)
        for slot, name in enumerate(names, start=1):
            if layer_name in adapters[name]:
                fa, fb = adapters[name][layer_name]
                a[slot, :, : fa.shape[1]], b[slot, : fb.shape[0]] = fa, fb
        setattr(parent, attr, AdapterLinear(base, a, b, selector))
    return selector
