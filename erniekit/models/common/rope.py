"""Rotary position embeddings, in both pairings used by our families.

Legend: B batch, S sequence, N heads, D head_dim. Tensors are [B, N, S, D]; positions are [B, S].

* interleaved (ERNIE 4.5, GPT-J style): dims (0,1), (2,3), ... rotate together, pair i at frequency i.
* half (Llama / NeoX style): dims (i, i + D/2) rotate together.
Angles are computed and applied in float32 and cast back, like the HF reference.
"""

from __future__ import annotations

import math

import paddle
from paddle import nn


def inverse_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> paddle.Tensor:
    inv = 1.0 / (theta ** (paddle.arange(0, head_dim, 2, dtype="float32") / head_dim))
    if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
        inv = _llama3_scaling(inv, scaling)
    return inv


def _llama3_scaling(inv: paddle.Tensor, s: dict) -> paddle.Tensor:
    """Llama 3.1 frequency scaling: long wavelengths slowed by `factor`, a smooth ramp in between."""
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    smooth = (old_len / wavelen - low) / (high - low)
    scaled = paddle.where(wavelen > old_len / low, inv / factor, inv)
    mid = (1 - smooth) * scaled / factor + smooth * scaled
    is_mid = (wavelen <= old_len / low) & (wavelen >= old_len / high)
    return paddle.where(is_mid, mid, scaled)


class RotaryEmbedding(nn.Layer):
    """Holds the inverse frequencies; ``angles`` turns positions into cos/sin for every layer."""

    def __init__(self, head_dim: int, theta: float, scaling: dict | None = None):
        super().__init__()
        self.register_buffer("inv_freq", inverse_frequencies(head_dim, theta, scaling), persistable=False)

    def forward(self, position_ids: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """cos, sin of shape [B, 1, S, D/2] for positions [B, S]."""
        freqs = (position_ids.astype("float32").unsqueeze(-1) * self.inv_freq).unsqueeze(1)
        return freqs.cos(), freqs.sin()


def apply_rotary(
    x: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, interleaved: bool
) -> paddle.Tensor:
    x32 = x.astype("float32")
    if interleaved:
        pairs = x32.reshape([*x32.shape[:-1], -1, 2])
        x0, x1 = pairs[..., 0], pairs[..., 1]
        out = paddle.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1).reshape(x32.shape)
    else:
        x0, x1 = paddle.chunk(x32, 2, axis=-1)
        out = paddle.concat([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1)
    return out.astype(x.dtype)
