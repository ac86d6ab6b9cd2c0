"""Pieces vision encoders share: patch positions, 2D rotary, attention inside each image, blocks.

Legend: P patches of all images of a batch concatenated (merge-block-major, see erniekit.data.images),
D encoder width, N heads, Dh = D / N; a grid (t, h, w) counts patches. An encoder attends within each
image (within each frame of a video), never across, and not causally.
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from erniekit import ops
from erniekit.data.positions import grid_list


def frame_lengths(grid_thw) -> list[int]:
    """Patches per attention segment: one segment per image, per frame for video."""
    return [h * w for t, h, w in grid_list(grid_thw) for _ in range(t)]


def patch_positions(grid_thw, merge: int) -> np.ndarray:
    """[P, 2] (row, column) of every patch in merge-block-major order, repeated for each frame."""
    out = []
    for t, h, w in grid_list(grid_thw):
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        block = (h // merge, merge, w // merge, merge)
        rows, cols = (a.reshape(block).transpose(0, 2, 1, 3).reshape(-1) for a in (rows, cols))
        out.append(np.tile(np.stack([rows, cols], axis=-1), (t, 1)))
    return np.concatenate(out).astype(np.int64)


class AxialRotary(nn.Layer):
    """2D rotary: the first half of each head's rotated pairs turn with the patch row, the second half
    with its column (pairs (i, i + Dh/2), half-split style), at the same Dh/4 frequencies."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        quarter = paddle.arange(0, head_dim // 2, 2, dtype="float32") / (head_dim // 2)
        self.register_buffer("inv_freq", 1.0 / (theta**quarter), persistable=False)

    def forward(self, positions: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """positions [P, 2] -> cos, sin [1, P, 1, Dh/2] (float32), the layout ops.rotary takes."""
        freqs = positions.astype("float32").unsqueeze(-1) * self.inv_freq  # [P, 2, Dh/4]
        freqs = freqs.reshape([freqs.shape[0], -1]).unsqueeze(0).unsqueeze(2)  # rows' then columns'
        return freqs.cos(), freqs.sin()


def quick_gelu(x: paddle.Tensor) -> paddle.Tensor:
    return x * F.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": lambda x: F.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate=True),
}


def vision_linear(in_features: int, out_features: int, bias: bool = True, std: float = 0.02) -> nn.Linear:
    bias_attr = paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)) if bias else False
    weight = paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, std))
    return nn.Linear(in_features, out_features, weight_attr=weight, bias_attr=bias_attr)


class SegmentAttention(nn.Layer):
    """Multi-head self-attention within each segment (image/frame): one fused qkv [D, 3D] (q|k|v)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = vision_linear(dim, 3 * dim)
        self.proj = vision_linear(dim, dim)

    def forward(self, x: paddle.Tensor, cos_sin, lengths: list[int]) -> paddle.Tensor:
        """x [P, D]; cos_sin for ops.rotary (None: no rotary); lengths per segment -> [P, D]."""
        n, d = self.num_heads, self.head_dim
        q, k, v = paddle.split(self.qkv(x).reshape([-1, 3 * n, d]), 3, axis=1)  # [P, N, Dh] each
        if cos_sin is not None:
            q, k = ops.rotary(q.unsqueeze(0), k.unsqueeze(0), *cos_sin, False)
            q, k = q.squeeze(0), k.squeeze(0)
        return self.proj(ops.segment_attention(q, k, v, lengths))


class VisionMLP(nn.Layer):
    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"vision activation {act!r} is not supported; known: {', '.join(ACTIVATIONS)}")
        self.fc1, self.fc2, self.act = (
            vision_linear(dim, hidden),
            vision_linear(hidden, dim),
            ACTIVATIONS[act],
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionBlock(nn.Layer):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)); LayerNorms with bias."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, act: str, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=eps)
        self.attn = SegmentAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, epsilon=eps)
        self.mlp = VisionMLP(dim, mlp_hidden, act)

    def forward(self, x: paddle.Tensor, cos_sin, lengths: list[int]) -> paddle.Tensor:
        x = x + self.attn(self.norm1(x), cos_sin, lengths)
        return x + self.mlp(self.norm2(x))
