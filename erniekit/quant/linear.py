"""A frozen Linear whose weight is stored quantised (formats.py): each forward dequantises it for its one
matmul and lets it go; the backward, which needs the weight again for the input's gradient, dequantises
once more instead of keeping the float copy alive between the two. No gradient reaches the weight."""

from __future__ import annotations

import dataclasses
import math

import paddle
import paddle.nn.functional as F
from paddle import nn
from paddle.autograd import PyLayer

from erniekit import ops
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
        self.q: Quantized | None = None  # format, shape and group; the arrays live on as buffers only
        self.names: list[str] = []
        self.stored_bytes = 0

    def set_weight(self, weight) -> None:
        weight = weight.numpy() if isinstance(weight, paddle.Tensor) else weight
        if tuple(weight.shape) != self.shape:
            raise ValueError(f"weight of shape {list(weight.shape)} for a {list(self.shape)} layer")
        q = quantize(weight.reshape(-1, self.shape[-1]), self.fmt, self.group)
        self.names, self.stored_bytes = [], q.nbytes
        for name, t in to_tensors(q).items():
            self.register_buffer(f"q_{name}", t, persistable=False)
            self.names.append(name)
        self.q = dataclasses.replace(q, codes=None, scales=None, scale_scale=None, scale_mean=None, mins=None)

    @property
    def tensors(self) -> dict[str, paddle.Tensor]:
        return {name: getattr(self, f"q_{name}") for name in self.names}

    @property
    def weight_bytes(self) -> int:
        return self.stored_bytes

    def dequantized(self) -> paddle.Tensor:
        """The float weight the layer computes with (for merging adapters and exports)."""
        return dequantize(self.q, self.tensors).reshape(list(self.shape))


class QuantizedLinear(QuantizedWeight):
    """``y = x W + b`` with W [in, out] quantised; the bias stays in its dtype.

    Per-channel int8 and int4 run Paddle's weight-only GPU kernel when its start-up probe admitted it
    (ops/weight_only.py): the layer then also keeps Paddle's packed copy of the weight on the device and
    multiplies by it; its own codes move to host memory, for merges and exports. Everything else, and
    every CPU, dequantises for the one matmul (_QuantMatmul)."""

    def __init__(self, shape: tuple[int, int], bias, fmt: str, group: int = 0):
        super().__init__(shape, fmt, group)
        self.bias = bias
        self.kernel_bits = 0  # 8 or 4 when the weight-only kernel runs this layer

    def set_weight(self, weight) -> None:
        weight = weight.numpy() if isinstance(weight, paddle.Tensor) else weight
        super().set_weight(weight)
        per_channel = self.q.group == self.shape[0] and self.fmt in ("int8", "int4")
        if per_channel and ops.weight_only_kernel():
            from erniekit.ops import weight_only

            self.kernel_bits = 8 if self.fmt == "int8" else 4
            packed, scales = weight_only.pack(paddle.to_tensor(weight).astype("bfloat16"), self.kernel_bits)
            self.register_buffer("kernel_weight", packed, persistable=False)
            self.register_buffer("kernel_scales", scales, persistable=False)
            for name in self.names:  # erniekit's codes stay for merging, off the device
                setattr(self, f"q_{name}", getattr(self, f"q_{name}").cpu())

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str, group: int = 0) -> QuantizedLinear:
        layer = cls(tuple(linear.weight.shape), linear.bias, fmt, group)
        layer.set_weight(linear.weight)
        return layer

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.kernel_bits:
            from erniekit.ops import weight_only

            half = x.astype("bfloat16")
            y = weight_only.matmul(half, self.kernel_weight, self.kernel_scales, self.kernel_bits)
            y = y.astype(x.dtype)
        else:
            y = _QuantMatmul.apply(x, self.q, self.tensors)
        return y if self.bias is None else y + self.bias


class QuantizedStack(QuantizedWeight):
    """E stacked [K, N] matrices (routed experts' [E, K, N]) quantised as one [E*K, N] weight whose
    groups never cross two experts (int8/int4; per channel unless ``group``); ``stack[e]`` dequantises
    expert e alone, for its one matmul: the grouped expert MLP indexes it like the unbound float stack."""

    stop_gradient = True  # frozen: the grouped MLP computes no weight gradient for it

    def __init__(self, shape: tuple[int, int, int], fmt: str, group: int = 0):
        if fmt == "nf4":
            raise ValueError("stacked experts are stored in a per-group integer format, not nf4")
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
