"""LoRA adapters served without merging: one batch mixes rows for the base model and for different
adapters, each row with its own.

Every linear layer some adapter trains becomes an ``AdapterLinear`` holding all adapters' factors
stacked, ``A [K + 1, in, R]`` and ``B [K + 1, R, out]`` (slot 0 is zeros: the base model; ranks padded to
the largest with zeros; the scale folded into B). ``Selector.rows`` names each row's slot before a
forward pass; a row's output is ``x W + b + (x A[slot]) B[slot]``, the formula LoRA trains with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from erniekit.errors import CheckpointError


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
    """The factors of a LoRA run or checkpoint (see lora_factors)."""
    from erniekit.trainer.restore import restore

    return lora_factors(restore(path)[2], base, str(path))


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
        if not isinstance(target, nn.Linear) or list(target.weight.shape) != list(layer.weight.shape):
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
