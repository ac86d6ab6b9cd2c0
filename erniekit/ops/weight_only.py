"""Weight-only quantised matmul: ``x @ W`` with W [K, N] stored as int8 or int4 codes per output channel.

The reference dequantises erniekit's own codes (erniekit.quant) and runs an ordinary matmul. The fused
kernel is Paddle's GPU pair: ``paddle.nn.quant.weight_quantize`` packs the weight in its own tile order
for the device's architecture, once, and ``weight_only_linear`` multiplies by it without ever forming
the float weight (it has an input gradient, so LoRA trains through it). Both quantise the same float
weight symmetrically per column (absmax / 127, absmax / 7), so on the probe cases they agree to the
half-precision tolerance. Paddle 3.3's CPU build registers ``weight_quantize`` but not
``weight_only_linear``.

Call shape: ``(x [..., K], weight [K, N] float, bits 8 | 4)``; a QuantizedLinear that resolved to the
fused kernel keeps Paddle's packed weight instead of erniekit's codes (see quant/linear.py).
"""

from __future__ import annotations

import paddle

from erniekit.ops.registry import Op, rand


def reference(x, weight, bits: int) -> paddle.Tensor:
    """Per-column symmetric codes (what erniekit.quant's int8 / per-channel int4 store), dequantised."""
    w = weight.astype("float32")
    top = 127.0 if bits == 8 else 7.0
    scales = w.abs().max(axis=0, keepdim=True) / top
    scales = paddle.where(scales > 0, scales, paddle.ones_like(scales))
    codes = paddle.clip(paddle.round(w / scales), -top, top)
    return paddle.matmul(x, (codes * scales).astype(x.dtype))


def pack(weight, bits: int) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Paddle's packed codes and per-column scales of a float [K, N] weight, for ``fused``."""
    from paddle.nn.quant import weight_quantize

    return weight_quantize(weight, algo=f"weight_only_int{bits}", arch=_arch())


def matmul(x, packed: paddle.Tensor, scales: paddle.Tensor, bits: int) -> paddle.Tensor:
    from paddle.nn.quant import weight_only_linear

    return weight_only_linear(x, packed, weight_scale=scales, weight_dtype=f"int{bits}", arch=_arch())


def fused(x, weight, bits: int) -> paddle.Tensor:
    packed, scales = pack(weight.astype(x.dtype), bits)
    return matmul(x, packed, scales, bits)


def _arch() -> int:
    """The CUDA compute capability as Paddle's kernels name it (80 for an A100); 80 without a GPU."""
    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count():
        major, minor = paddle.device.cuda.get_device_capability()
        return major * 10 + minor
    return 80


def _cases(dtype: str):
    return [((rand([3, 64], dtype), rand([64, 32], dtype, grad=False, seed=1), bits), {}) for bits in (8, 4)]


OP = Op("weight_only_linear", reference, fused, _cases, half_only=True)
