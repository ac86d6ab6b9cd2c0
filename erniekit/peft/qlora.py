"""QLoRA's frozen base: the decoder's linear layers (and, with wint4/8, its routed experts) stored
quantised (erniekit.quant), before LoRA wraps them.

``quantized_layers`` swaps those layers for empty quantised ones and returns, per checkpoint tensor, the
setter that fills one: ``load_model`` builds the model without memory (``paddle.LazyGuard``) and hands
each tensor to its setter as it is read, so the float base never exists whole. ``quantize_base`` does
the same to a model already in memory (a seeded flavor).

Formats: ``int8`` (per output channel), ``int4``, ``nf4`` (group-wise) for every decoder linear; ERNIEKit's
``wint4/8`` puts the routed experts (text and vision experts) in int4 and the other linears in int8,
both per channel. Embeddings, norms, routers, the LM head and a vision tower keep their precision. A
group size that does not divide a layer's input width falls back to the largest one that does (their
gcd: SmolLM2's 576 rows take int4 groups of 64).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from paddle import nn

from erniekit.models.common.moe import Experts
from erniekit.quant.formats import DEFAULT_GROUP
from erniekit.quant.linear import QuantizedLinear, QuantizedStack, QuantizedWeight
from erniekit.tensors import to_numpy

log = logging.getLogger(__name__)

KEEP = ("lm_head",)  # top-level layers that keep their precision


class QuantizedExperts(Experts):
    """Frozen routed experts whose stacked weights are QuantizedStacks (what wint4/8 does to experts)."""

    def __init__(self, base: Experts, fmt: str, group: int = 0):
        nn.Layer.__init__(self)
        self.num_experts, self.capacity_factor = base.num_experts, base.capacity_factor
        self.up_gate_stack = QuantizedStack(tuple(base.up_gate_proj.shape), fmt, group)
        self.down_stack = QuantizedStack(tuple(base.down_proj.shape), fmt, group)

    def stacked_weights(self):
        return self.up_gate_stack, self.down_stack

    @property
    def weight_bytes(self) -> int:
        return self.up_gate_stack.weight_bytes + self.down_stack.weight_bytes

    def dequantized_state(self) -> dict:
        return {"up_gate_proj": self.up_gate_stack.dequantized(), "down_proj": self.down_stack.dequantized()}


def quantized_layers(model: nn.Layer, fmt: str, group: int = 0) -> dict[str, Callable]:
    """Replace the base's quantisable layers by empty quantised ones -> {tensor name: setter(array)}."""
    linear_fmt = "int8" if fmt == "wint4/8" else fmt
    setters = {}
    for name, layer in list(model.named_sublayers()):
        if name in KEEP or name.startswith("vision."):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_sublayer(parent_name) if parent_name else model
        if type(layer) is nn.Linear:
            shape = tuple(layer.weight.shape)
            quantized = QuantizedLinear(shape, layer.bias, linear_fmt, _group(fmt, group, shape[0]))
            setters[f"{name}.weight"] = quantized.set_weight
        elif type(layer) is Experts and fmt == "wint4/8":
            quantized = QuantizedExperts(layer, "int4", group)
            setters[f"{name}.up_gate_proj"] = quantized.up_gate_stack.set_weight
            setters[f"{name}.down_proj"] = quantized.down_stack.set_weight
        else:
            continue
        setattr(parent, attr, quantized)
    if not setters:
        raise ValueError("lora.quantize: this model has no linear layers to quantise")
    return setters


def quantize_base(model: nn.Layer, fmt: str, group: int = 0) -> None:
    """``quantized_layers`` for a model whose float weights are in memory: each is quantised, then freed."""
    state = model.state_dict()
    for name, set_weight in quantized_layers(model, fmt, group).items():
        set_weight(to_numpy(state.pop(name)))


def storage(model: nn.Layer) -> dict[str, int]:
    """{weights, bytes_float (fp32 of the same weights), bytes}: what the quantised base occupies (a
    stack of experts counts as one weight)."""
    weights, before, after = 0, 0, 0
    for _, layer in model.named_sublayers():
        if isinstance(layer, QuantizedWeight) and layer.q is not None:
            weights += 1
            before += 4 * math.prod(layer.shape)
            after += layer.weight_bytes
    return {"weights": weights, "bytes_float": before, "bytes": after}


def log_storage(model: nn.Layer, fmt: str) -> dict[str, int]:
    s = storage(model)
    log.info(
        "frozen base stored as %s: %d weights, %.1f MB -> %.1f MB",
        fmt,
        s["weights"],
        s["bytes_float"] / 1e6,
        s["bytes"] / 1e6,
    )
    return s


def _group(fmt: str, group: int, rows: int) -> int:
    if fmt == "wint4/8":
        return rows  # int8 per channel
    wanted = group or DEFAULT_GROUP[fmt] or rows
    return math.gcd(rows, wanted)
