"""SwiGLU feed-forward with the gate and up projections fused into one matmul.

``up_gate_proj`` is [hidden, 2 * intermediate]: the first half is the gate (HF ``gate_proj``, passed
through SiLU), the second half the up projection, the layout of ERNIE's Paddle checkpoints.
"""

from __future__ import annotations

import paddle
from paddle import nn

from erniekit import ops


def linear(in_features: int, out_features: int, bias: bool, std: float) -> nn.Linear:
    init = nn.initializer.Normal(mean=0.0, std=std)
    bias_attr = paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)) if bias else False
    return nn.Linear(
        in_features, out_features, weight_attr=paddle.ParamAttr(initializer=init), bias_attr=bias_attr
    )


class MLP(nn.Layer):
    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool, std: float):
        super().__init__()
        self.up_gate_proj = linear(hidden_size, 2 * intermediate_size, bias, std)
        self.down_proj = linear(intermediate_size, hidden_size, bias, std)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.down_proj(ops.swiglu(self.up_gate_proj(x)))
