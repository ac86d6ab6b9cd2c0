"""Rotary position embeddings: frequencies (plain or Llama-3 scaled) and the angles of positions.

Legend: B batch, S sequence, D head_dim. Positions are [B, S]; the rotation itself (both pairings our
families use) is :func:`erniekit.ops.rotary`.
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
    """Holds the inverse frequencies; ``forward`` turns positions into cos/sin for every layer.

    Multimodal rotary (``axes``): positions are [3, B, S], one row per axis (t, h, w), and frequency i
    turns with the axis ``axes[i]``; text tokens carry t = h = w, which is plain rotary again.
    """

    def __init__(
        self, head_dim: int, theta: float, scaling: dict | None = None, axes: tuple[int, ...] | None = None
    ):
        super().__init__()
        self.register_buffer("inv_freq", inverse_frequencies(head_dim, theta, scaling), persistable=False)
        if axes is not None and len(axes) != head_dim // 2:
            raise ValueError(f"rope_axes has {len(axes)} entries for {head_dim // 2} frequencies")
        axes_tensor = None if axes is None else paddle.to_tensor(list(axes), "int64")
        self.register_buffer("axes", axes_tensor, persistable=False)

    def forward(self, position_ids: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """cos, sin of shape [B, S, 1, D/2] (float32) for positions [B, S] or, multimodal, [3, B, S]."""
        if position_ids.ndim == 3:
            if self.axes is None:
                raise ValueError("3D positions [3, B, S] need a model with multimodal rotary (rope_axes)")
            per_axis = position_ids.astype("float32").transpose([1, 2, 0])  # [B, S, 3]
            pos = paddle.index_select(per_axis, self.axes, axis=-1)  # [B, S, D/2]: each frequency's axis
            freqs = (pos * self.inv_freq).unsqueeze(2)
        else:
            freqs = (position_ids.astype("float32").unsqueeze(-1) * self.inv_freq).unsqueeze(2)
        return freqs.cos(), freqs.sin()
