"""RMSNorm, computed in float32 whatever the activation dtype (as the HF reference does)."""

from __future__ import annotations

import paddle
from paddle import nn


class RMSNorm(nn.Layer):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = self.create_parameter([hidden_size], default_initializer=nn.initializer.Constant(1.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x32 = x.astype("float32")
        x32 = x32 * paddle.rsqrt(x32.pow(2).mean(axis=-1, keepdim=True) + self.eps)
        return self.weight * x32.astype(x.dtype)
