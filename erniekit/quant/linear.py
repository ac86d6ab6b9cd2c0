"""A frozen Linear whose weight is stored quantised (formats.py): each forward dequantises it for its one
matmul and lets it go; the backward, which needs the weight again for the input's gradient, dequantises
once more instead of keeping the float copy alive between the two. No gradient reaches the weight."""

from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddle.autograd import PyLayer

from erniekit.quant.formats import Quantized, dequantize, quantize, to_tensors


class _QuantMatmul(PyLayer):
    @staticmethod
    def forward(ctx, x, q: Quantized, tensors: dict):
        ctx.q, ctx.tensors = q, tensors
        return paddle.matmul(x, dequantize(q, tensors, x.dtype))

    @staticmethod
    def backward(ctx, grad):
        weight = dequantize(ctx.q, ctx.tensors, grad.dtype)
        return paddle.matmul(grad, weight, transpose_y=True)


class QuantizedWeight(nn.Layer):
    """A frozen weight held as ``fmt`` (see formats.py), built empty from its shape so that a
    checkpoint's tensor is quantised the moment it is read (``set_weight``) and the float base never
    exists whole. Its arrays are non-persistable buffers: they move with the layer and are not saved
    (a checkpoint of a QLoRA run holds the adapters; the base is re-read and re-quantised)."""

    def __init__(self, shape: tuple[int, ...], fmt: str, group: int):
        super().__init__()
        self.shape, self.fmt, self.group = tuple(shape), fmt, group
        self.q: Quantized | None = None
        self.names: list[str] = []

    def set_weight(self, weight) -> None:
        weight = weight.numpy() if isinstance(weight, paddle.Tensor) else weight
        if tuple(weight.shape) != self.shape:
            raise ValueError(f"weight of shape {list(weight.shape)} for a {list(self.shape)} layer")
        self.q = quantize(weight.reshape(-1, self.shape[-1]), self.fmt, self.group)
        self.names = []
        for name, t in to_tensors(self.q).items():
            self.register_buffer(f"q_{name}", t, persistable=False)
            self.names.append(name)

    @property
    def tensors(self) -> dict[str, paddle.Tensor]:
        return {name: getattr(self, f"q_{name}") for name in self.names}

    @property
    def weight_bytes(self) -> int:
        return self.q.nbytes

    def dequantized(self) -> paddle.Tensor:
        """The float weight the layer computes with (for merging adapters and exports)."""
        return dequantize(self.q, self.tensors).reshape(list(self.shape))


class QuantizedLinear(QuantizedWeight):
    """``y = x W + b`` with W [in, out] quantised; the bias stays in its dtype."""

    def __init__(self, shape: tuple[int, int], bias, fmt: str, group: int = 0):
        super().__init__(shape, fmt, group)
        self.bias = bias

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str, group: int = 0) -> QuantizedLinear:
        layer = cls(tuple(linear.weight.shape), linear.bias, fmt, group)
        layer.set_weight(linear.weight)
        return layer

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = _QuantMatmul.apply(x, self.q, self.tensors)
        return y if self.bias is None else y + self.bias


class QuantizedStack(QuantizedWeight):
    """E stacked [K, N] matrices (routed experts' [E, K, N]) quantised as one [E*K, N] weight whose
    groups never cross two experts (int8/int4; per channel unless ``group``); ``stack[e]`` dequantises
    expert e alone, for its one matmul: the grouped expert MLP indexes it like the unbound float stack."""

    stop_gradient = True  # frozen: the grouped MLP computes no weight gradient for it

    def __init__(self, shape: tuple[int, int, int], fmt: str, group: int = 0):
        if fmt not in ("int8", "int4"):
            raise ValueError(f"stacked experts are stored as int8 or int4, not {fmt}")
        k = shape[1]
        super().__init__(shape, fmt, math.gcd(k, group) if group else k)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, e: int) -> paddle.Tensor:
        k = self.shape[1]
        return dequantize(self.q, self.tensors, rows=slice(e * k, (e + 1) * k))


def reference(x: paddle.Tensor, layer: QuantizedLinear) -> paddle.Tensor:
    """What QuantizedLinear computes, the plain way: dequantise, then an ordinary linear."""
    return F.linear(x, layer.dequantized(), layer.bias)
