"""Sums of squares of many tensors at once: the global gradient norm and the finite-gradient check.

One float64 sum per tensor: finite float32 values cannot overflow it, so a sum is finite exactly when its
tensor is (NaN and infinities propagate). The reference runs 3-4 eager ops per tensor (a cast, a square,
a sum; every parameter's gradient, every step); the CPU kernel reads each tensor once, in one call.
"""

from __future__ import annotations

import paddle

from erniekit.ops import cpu as kernels
from erniekit.ops.registry import Op, rand


def reference(tensors: list[paddle.Tensor]) -> paddle.Tensor:
    """float64 [len(tensors)]: sum(t ** 2) of each tensor."""
    return paddle.stack([t.astype("float64").square().sum() for t in tensors])


def cpu(tensors: list[paddle.Tensor]) -> paddle.Tensor:
    if not kernels.usable(*tensors):
        return reference(tensors)
    return kernels.module().ek_square_sums([kernels.contiguous(t) for t in tensors])


def _cases(dtype: str):
    shapes = [[7], [3, 5], [300, 257], [2, 3, 4]]
    return [(([rand(s, dtype, grad=False, seed=i) * (i + 1) for i, s in enumerate(shapes)],), {})]


OP = Op("square_sums", reference, None, _cases, cpu=cpu)
