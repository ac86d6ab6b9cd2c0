"""RMSNorm, computed in float32 whatever the activation dtype (as the HF reference does)."""

from __future__ import annotations

import paddle
from paddle import nn

from erniekit import ops


class RMSNorm(nn.Layer):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = self.create_parameter([hidden_size], default_initializer=nn.initializer.Constant(1.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return ops.rms_norm(x, self.weight, self.eps)
