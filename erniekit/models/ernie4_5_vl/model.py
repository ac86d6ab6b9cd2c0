"""ERNIE 4.5 VL as single-device math: a ViT and a variable-resolution resampler on ERNIE 4.5's MoE.

What makes it ERNIE 4.5 VL (28B-A3B, 424B-A47B), beyond the text decoder of erniekit.models.common:
* vision tower: a linear patch embedding (no conv, no position table), 2D axial rotary (half-split,
  theta 10000), pre-norm blocks with quick-GELU MLPs, attention within each image (each video frame);
* resampler: 2 x 2 spatial merge (patches arrive merge-block-major, so a merge is a reshape), an
  fc1-GELU-fc2-LayerNorm MLP, a temporal merge that pairs even and odd frames (an image is paired with
  itself), a second such MLP, a projection to the decoder width and an RMSNorm;
* decoder: modality-isolated MoE (text and vision expert sets with their own fp32 routers and
  correction biases, narrower vision experts, shared experts on every token, dense layers where
  ``mlp_layer_types`` says) and 3D rotary: adjacent pairs as in ERNIE 4.5, frequency i turned by the
  image row (h) or column (w) alternately for the first ``h + w`` frequencies, by time (t) for the rest.
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from erniekit.data.positions import grid_list
from erniekit.models.common.args import ModelArgs, VisionArgs
from erniekit.models.common.multimodal import VisionLanguageModel
from erniekit.models.common.norm import RMSNorm
from erniekit.models.common.vision import (
    AxialRotary,
    VisionBlock,
    frame_lengths,
    patch_positions,
    vision_linear,
)
from erniekit.models.ernie4_5.model import ernie4_5_args

FAMILY = "ernie4_5_vl"


def rope_axes(head_dim: int, mrope_section: tuple[int, int, int]) -> tuple[int, ...]:
    """ERNIE VL's frequency -> axis table for ``mrope_section`` = (h, w, t) frequency counts."""
    h, w, t = mrope_section
    if h != w or h + w + t != head_dim // 2:
        raise ValueError(f"mrope_section {list(mrope_section)} must be [n, n, t] summing to head_dim/2")
    return tuple((1 if i % 2 == 0 else 2) if i < h + w else 0 for i in range(head_dim // 2))


def ernie4_5_vl_args(vision: VisionArgs, mrope_section=(22, 22, 20), **shape) -> ModelArgs:
    """ModelArgs with ERNIE 4.5 VL conventions; ``shape`` sets the decoder's sizes and MoE fields."""
    defaults = dict(family=FAMILY, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    axes = rope_axes(shape["head_dim"], tuple(mrope_section))
    return ernie4_5_args(**{**defaults, **shape, "vision": vision, "rope_axes": axes})


class VisionTower(nn.Layer):
    def __init__(self, v: VisionArgs):
        super().__init__()
        self.merge = v.spatial_merge_size
        self.patch_embed = vision_linear(v.in_channels * v.patch_size**2, v.hidden_size, bias=False)
        self.rotary = AxialRotary(v.hidden_size // v.num_heads, v.rope_theta)
        self.blocks = nn.LayerList(
            [
                VisionBlock(v.hidden_size, v.num_heads, v.intermediate_size, v.hidden_act, v.layer_norm_eps)
                for _ in range(v.depth)
            ]
        )
        self.ln = nn.LayerNorm(v.hidden_size, epsilon=v.layer_norm_eps)

    def forward(self, pixel_values: paddle.Tensor, grid_thw) -> paddle.Tensor:
        """pixel_values [P, C*p*p] (merge-block-major) -> [P, D]."""
        cos_sin = self.rotary(paddle.to_tensor(patch_positions(grid_thw, self.merge)))
        lengths = frame_lengths(grid_thw)
        x = self.patch_embed(pixel_values.astype(self.patch_embed.weight.dtype))
        for block in self.blocks:
            x = block(x, cos_sin, lengths)
        return self.ln(x)


class MergeMLP(nn.Layer):
    """fc1 -> exact GELU -> fc2 -> LayerNorm (the resampler's spatial and temporal stages)."""

    def __init__(self, in_dim: int, out_dim: int, eps: float):
        super().__init__()
        self.fc1, self.fc2 = vision_linear(in_dim, out_dim), vision_linear(out_dim, out_dim)
        self.ln = nn.LayerNorm(out_dim, epsilon=eps)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.ln(self.fc2(F.gelu(self.fc1(x), approximate=False)))


class Resampler(nn.Layer):
    """[P, D] patches -> [tokens, H]: m*m patches per token, then frame pairs (t, h*w/m^2 per frame)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        v = args.vision
        self.merge, self.temporal = v.spatial_merge_size, v.temporal_merge_size
        if self.temporal != 2:
            raise ValueError("the ERNIE VL resampler pairs frames: temporal_merge_size must be 2")
        spatial = v.hidden_size * self.merge**2
        self.spatial_linear = MergeMLP(spatial, spatial, v.layer_norm_eps)
        self.temporal_linear = MergeMLP(spatial * self.temporal, spatial, v.layer_norm_eps)
        self.mlp = vision_linear(spatial, args.hidden_size)
        self.after_norm = RMSNorm(args.hidden_size, args.rms_norm_eps)

    def forward(self, x: paddle.Tensor, grid_thw) -> paddle.Tensor:
        x = self.spatial_linear(x.reshape([-1, x.shape[-1] * self.merge**2]))
        first, second = self.frame_pairs(grid_thw)
        x = paddle.concat([paddle.gather(x, first), paddle.gather(x, second)], axis=-1)
        return self.after_norm(self.mlp(self.temporal_linear(x)))

    def frame_pairs(self, grid_thw) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Row indices of the even and odd frame of each output token (an image: its frame twice)."""
        first, second, offset = [], [], 0
        for t, h, w in grid_list(grid_thw):
            per_frame = h * w // self.merge**2
            frames = np.arange(offset, offset + t * per_frame).reshape(t, per_frame)
            evens, odds = frames[0::2], frames[1::2] if t > 1 else frames[0::2]
            n = min(len(evens), len(odds))
            first.append(evens[:n].reshape(-1))
            second.append(odds[:n].reshape(-1))
            offset += t * per_frame
        return paddle.to_tensor(np.concatenate(first)), paddle.to_tensor(np.concatenate(second))


class VisionEncoder(nn.Layer):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.tower = VisionTower(args.vision)
        self.resampler = Resampler(args)

    def forward(self, pixel_values: paddle.Tensor, grid_thw) -> paddle.Tensor:
        """pixel_values [P, C*p*p], grid_thw [n, 3] -> decoder embeddings [sum of tokens, H]."""
        return self.resampler(self.tower(pixel_values, grid_thw), grid_thw)


def build(args: ModelArgs) -> VisionLanguageModel:
    if args.family != FAMILY:
        raise ValueError(f"not an ERNIE 4.5 VL configuration: family {args.family!r}")
    return VisionLanguageModel(args, VisionEncoder(args))
