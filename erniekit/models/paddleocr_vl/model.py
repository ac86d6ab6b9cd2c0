"""PaddleOCR-VL as single-device math: a NaViT-style SigLIP encoder and a projector on ERNIE 4.5 0.3B.

What makes it PaddleOCR-VL (0.9B), beyond the decoder of erniekit.models.common:
* encoder: a conv patch embedding (our linear over the (C, p, p) patch vector, with bias) plus a learned
  square position table resized to each image's grid (bilinear, half-pixel centres, no antialias),
  2D axial rotary over raster (row, column) positions, pre-norm blocks with tanh-GELU MLPs, attention
  within each image, a final LayerNorm;
* projector: LayerNorm (eps 1e-5) per patch, the 2 x 2 patches of each block (raster order in) side by
  side, linear -> exact GELU -> linear to the decoder width;
* decoder: ERNIE 4.5 0.3B's layers with half-split (NeoX) rotary and 3D sections in (t, h, w) order,
  contiguous: the first ``t`` frequencies turn with time, the next ``h`` with the row, the rest with
  the column. No MoE, no video.
"""

from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn

from erniekit.data.positions import grid_list
from erniekit.models.common.args import ModelArgs, VisionArgs
from erniekit.models.common.multimodal import VisionLanguageModel
from erniekit.models.common.vision import (
    AxialRotary,
    VisionBlock,
    frame_lengths,
    patch_positions,
    vision_linear,
)
from erniekit.models.ernie4_5.model import ernie4_5_args

FAMILY = "paddleocr_vl"


def rope_axes(head_dim: int, mrope_section: tuple[int, int, int]) -> tuple[int, ...]:
    """Contiguous (t, h, w) frequency sections, as Qwen2-VL lays them out."""
    if sum(mrope_section) != head_dim // 2:
        raise ValueError(f"mrope_section {list(mrope_section)} must sum to head_dim/2 = {head_dim // 2}")
    return tuple(axis for axis, n in enumerate(mrope_section) for _ in range(n))


def paddleocr_vl_args(vision: VisionArgs, mrope_section=(16, 24, 24), **shape) -> ModelArgs:
    """ModelArgs with PaddleOCR-VL conventions over ERNIE 4.5's (ids, norms, theta 500000)."""
    axes = rope_axes(shape["head_dim"], tuple(mrope_section))
    return ernie4_5_args(
        **{"family": FAMILY, **shape, "rope_interleaved": False, "rope_axes": axes, "vision": vision}
    )


class Embeddings(nn.Layer):
    def __init__(self, v: VisionArgs):
        super().__init__()
        self.side = math.isqrt(v.num_positions)
        if self.side**2 != v.num_positions:
            raise ValueError(f"num_positions {v.num_positions} is not a square grid")
        self.patch_embedding = vision_linear(v.in_channels * v.patch_size**2, v.hidden_size)
        init = paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, 0.02))
        self.position_embedding = nn.Embedding(v.num_positions, v.hidden_size, weight_attr=init)

    def forward(self, pixel_values: paddle.Tensor, grid_thw) -> paddle.Tensor:
        """pixel_values [P, C*p*p] in raster order -> [P, D] with each image's resized position table."""
        x = self.patch_embedding(pixel_values.astype(self.patch_embedding.weight.dtype))
        table = self.position_embedding.weight  # [side * side, D]
        grid = table.reshape([self.side, self.side, -1]).transpose([2, 0, 1]).unsqueeze(0)  # [1, D, s, s]
        positions = []
        for t, h, w in grid_list(grid_thw):
            if (h, w) == (self.side, self.side):
                resized = table
            else:
                resized = F.interpolate(grid, size=[h, w], mode="bilinear", align_corners=False)
                resized = resized.squeeze(0).reshape([table.shape[1], -1]).transpose([1, 0])  # [h*w, D]
            positions.append(resized.tile([t, 1]))
        return x + paddle.concat(positions).astype(x.dtype)


class VisionTower(nn.Layer):
    def __init__(self, v: VisionArgs):
        super().__init__()
        self.embeddings = Embeddings(v)
        self.rotary = AxialRotary(v.hidden_size // v.num_heads, v.rope_theta)
        self.blocks = nn.LayerList(
            [
                VisionBlock(v.hidden_size, v.num_heads, v.intermediate_size, v.hidden_act, v.layer_norm_eps)
                for _ in range(v.depth)
            ]
        )
        self.post_layernorm = nn.LayerNorm(v.hidden_size, epsilon=v.layer_norm_eps)

    def forward(self, pixel_values: paddle.Tensor, grid_thw) -> paddle.Tensor:
        cos_sin = self.rotary(paddle.to_tensor(patch_positions(grid_thw, 1)))  # raster (row, column)
        lengths = frame_lengths(grid_thw)
        x = self.embeddings(pixel_values, grid_thw)
        for block in self.blocks:
            x = block(x, cos_sin, lengths)
        return self.post_layernorm(x)


class Projector(nn.Layer):
    def __init__(self, args: ModelArgs):
        super().__init__()
        v = args.vision
        self.merge = v.spatial_merge_size
        merged = v.hidden_size * self.merge**2
        self.pre_norm = nn.LayerNorm(v.hidden_size, epsilon=1e-5)  # fixed in the reference, not configured
        self.linear_1, self.linear_2 = vision_linear(merged, merged), vision_linear(merged, args.hidden_size)

    def forward(self, x: paddle.Tensor, grid_thw) -> paddle.Tensor:
        """[P, D] raster patches -> [tokens, H]: each m x m block of an image becomes one token."""
        x, m, out, start = self.pre_norm(x), self.merge, [], 0
        for t, h, w in grid_list(grid_thw):
            image = x[start : start + t * h * w].reshape([t, h // m, m, w // m, m, -1])
            out.append(image.transpose([0, 1, 3, 2, 4, 5]).reshape([t * (h // m) * (w // m), -1]))
            start += t * h * w
        return self.linear_2(F.gelu(self.linear_1(paddle.concat(out)), approximate=False))


class VisionEncoder(nn.Layer):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.tower = VisionTower(args.vision)
        self.projector = Projector(args)

    def forward(self, pixel_values: paddle.Tensor, grid_thw) -> paddle.Tensor:
        return self.projector(self.tower(pixel_values, grid_thw), grid_thw)


def build(args: ModelArgs) -> VisionLanguageModel:
    if args.family != FAMILY:
        raise ValueError(f"not a PaddleOCR-VL configuration: family {args.family!r}")
    return VisionLanguageModel(args, VisionEncoder(args))
