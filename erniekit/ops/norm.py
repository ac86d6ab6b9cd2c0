"""RMSNorm: float32 statistics whatever the activation dtype (as the HF reference computes it).

``paddle.square``, not ``pow(2)``: Paddle 3.3's CPU pow kernel is ~30x slower (5 ms on [512, 576]).
"""

from __future__ import annotations

import paddle

from erniekit.ops import cpu as kernels
from erniekit.ops.registry import Op, rand


def reference(x: paddle.Tensor, weight: paddle.Tensor, eps: float) -> paddle.Tensor:
    x32 = x.astype("float32")
    x32 = x32 * paddle.rsqrt(paddle.square(x32).mean(axis=-1, keepdim=True) + eps)
    return weight * x32.astype(x.dtype)


def fused(x: paddle.Tensor, weight: paddle.Tensor, eps: float) -> paddle.Tensor:
    from paddle.incubate.nn.functional import fused_rms_norm

    out = fused_rms_norm(x, weight, None, eps, begin_norm_axis=x.ndim - 1)
    return out[0] if isinstance(out, (tuple, list)) else out


def cpu(x: paddle.Tensor, weight: paddle.Tensor, eps: float) -> paddle.Tensor:
    if not kernels.usable(x, weight):
        return reference(x, weight, eps)
    return kernels.module().ek_rms_norm(kernels.contiguous(x), weight, eps)[0]


def _cases(dtype: str):
    return [
        ((rand([2, 5, 64], dtype), rand([64], "float32", seed=1) + 1.0, 1e-6), {}),
        ((rand([3, 37], dtype, seed=2), rand([37], "float32", seed=3), 1e-5), {}),  # odd width, 2-D
    ]


OP = Op("rms_norm", reference, fused, _cases, cpu=cpu)
