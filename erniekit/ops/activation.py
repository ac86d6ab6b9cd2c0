"""SwiGLU on a fused [gate | up] projection: silu(gate) * up."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from erniekit.ops import cpu as kernels
from erniekit.ops.registry import Op, rand


def reference(gate_up: paddle.Tensor) -> paddle.Tensor:
    gate, up = paddle.chunk(gate_up, 2, axis=-1)
    return F.silu(gate) * up


def fused(gate_up: paddle.Tensor) -> paddle.Tensor:
    return F.swiglu(gate_up)  # one kernel; splits the last axis in halves the same way


def cpu(gate_up: paddle.Tensor) -> paddle.Tensor:
    if not kernels.usable(gate_up):
        return reference(gate_up)
    return kernels.module().ek_swiglu(kernels.contiguous(gate_up))


def _cases(dtype: str):
    wide = rand([2, 5, 70], dtype, seed=1) * 12.0  # saturating gates: exp's range edges
    return [((rand([3, 7, 96], dtype),), {}), ((wide,), {})]


OP = Op("swiglu", reference, fused, _cases, on_cpu=True, cpu=cpu)
