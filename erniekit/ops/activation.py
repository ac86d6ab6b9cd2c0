"""SwiGLU on a fused [gate | up] projection: silu(gate) * up."""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

from erniekit.ops.registry import Op, rand


def reference(gate_up: paddle.Tensor) -> paddle.Tensor:
    gate, up = paddle.chunk(gate_up, 2, axis=-1)
    return F.silu(gate) * up


def fused(gate_up: paddle.Tensor) -> paddle.Tensor:
    return F.swiglu(gate_up)  # one kernel; splits the last axis in halves the same way


def _cases(dtype: str):
    return [((rand([3, 7, 96], dtype),), {})]


OP = Op("swiglu", reference, fused, _cases, on_cpu=True)
