"""A frozen Linear whose weight is stored quantised (formats.py): each forward dequantises it for its one
matmul and lets it go; the backward, which needs the weight again for the input's gradient, dequantises
once more instead of keeping the float copy alive between the two. No gradient reaches the weight."""

from __future__ import annotations

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


class QuantizedLinear(nn.Layer):
    """``y = x W + b`` with W held as ``fmt`` (see formats.py); the bias stays in its dtype."""

    def __init__(self, weight, bias, fmt: str, group: int = 0):
        super().__init__()
        self.q = quantize(weight.numpy() if isinstance(weight, paddle.Tensor) else weight, fmt, group)
        self.names = []
        for name, t in to_tensors(self.q).items():  # buffers: they move with the layer, are not trained
            self.register_buffer(f"q_{name}", t, persistable=False)
            self.names.append(name)
        self.bias = bias

    @property
    def tensors(self) -> dict[str, paddle.Tensor]:
        return {name: getattr(self, f"q_{name}") for name in self.names}

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str, group: int = 0) -> QuantizedLinear:
        return cls(linear.weight, linear.bias, fmt, group)

    @property
    def weight_bytes(self) -> int:
        return self.q.nbytes

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = _QuantMatmul.apply(x, self.q, self.tensors)
        return y if self.bias is None else y + self.bias

    def dequantized(self) -> paddle.Tensor:
        """The float weight the layer computes with (for merging adapters and exports)."""
        return dequantize(self.q, self.tensors)


def reference(x: paddle.Tensor, layer: QuantizedLinear) -> paddle.Tensor:
    """What QuantizedLinear computes, the plain way: dequantise, then an ordinary linear."""
    return F.linear(x, layer.dequantized(), layer.bias)
