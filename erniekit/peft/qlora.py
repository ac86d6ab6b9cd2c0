"""QLoRA's frozen base: every frozen linear layer of the decoder stored quantised (erniekit.quant).

LoRA layers keep their adapters in float and their frozen weight quantised; the other frozen Linears
become QuantizedLinear. Embeddings, norms, routers, routed experts, the LM head and a vision tower keep
their precision. A group size that does not divide a layer's input width falls back to the largest one
that does (their gcd: SmolLM2's 576 rows take int4 groups of 64).
"""

from __future__ import annotations

import logging
import math

from paddle import nn

from erniekit.peft.lora import LoRALinear
from erniekit.quant.formats import DEFAULT_GROUP
from erniekit.quant.linear import QuantizedLinear

log = logging.getLogger(__name__)

KEEP = ("lm_head",)  # top-level layers that keep their precision


def quantize_frozen(model: nn.Layer, fmt: str, group: int = 0) -> dict[str, int]:
    """Quantise ``model``'s frozen linear weights in place; returns {layers, bytes_before, bytes_after}."""
    layers, before, after = 0, 0, 0
    for name, layer in list(model.named_sublayers()):
        if name in KEEP or name.startswith("vision.") or isinstance(layer, QuantizedLinear):
            continue
        parent_name, _, attr = name.rpartition(".")
        if isinstance(layer, LoRALinear) and layer.quantized is None:
            weight = layer.weight
            before += _nbytes(weight)
            layer.quantize_base(fmt, _group(fmt, group, weight.shape[0]))
            after += layer.quantized.weight_bytes
        elif isinstance(layer, nn.Linear) and layer.weight.stop_gradient:
            parent = model.get_sublayer(parent_name) if parent_name else model
            before += _nbytes(layer.weight)
            quantized = QuantizedLinear.from_linear(layer, fmt, _group(fmt, group, layer.weight.shape[0]))
            setattr(parent, attr, quantized)
            after += quantized.weight_bytes
        else:
            continue
        layers += 1
    if not layers:
        raise ValueError("lora.quantize: this model has no frozen linear layers to quantise")
    log.info(
        "frozen base stored as %s: %d linear layers, %.1f MB -> %.1f MB",
        fmt,
        layers,
        before / 1e6,
        after / 1e6,
    )
    return {"layers": layers, "bytes_before": before, "bytes_after": after}


def _nbytes(weight) -> int:
    return int(weight.numel()) * weight.element_size()


def _group(fmt: str, group: int, rows: int) -> int:
    wanted = group or DEFAULT_GROUP[fmt] or rows
    return math.gcd(rows, wanted)
