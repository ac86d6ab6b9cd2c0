"""A decoder that reads images: encoder outputs spliced over placeholder tokens, 3D rotary positions.

Legend: B batch, S sequence, H decoder hidden, m spatial merge size; a grid (t, h, w) counts patches.
A prompt holds each image as ``<start> <placeholder> x (t*h*w/m^2) <end>`` (video: its own three
tokens). Two kinds of token type are derived from the ids, never taken from the caller, so a forgotten
argument cannot silently route image tokens to the text experts (transformers' ERNIE VL does, when
``moe_mm_token_type_ids`` is left out):

* rotary type: 1 on image placeholders, 2 on video placeholders, 0 elsewhere (start/end tokens are text);
* modality (MoE routing): > 0 on placeholders *and* their start/end tokens.

Positions follow the reference's counter (erniekit.data.positions); decoding continues at
``real tokens + delta`` with ``delta = max position + 1 - real tokens`` (negative after an image).
"""

from __future__ import annotations

import numpy as np
import paddle
from paddle import nn

from erniekit.data.positions import multimodal_positions, vision_tokens
from erniekit.errors import DataError
from erniekit.models.common.args import ModelArgs
from erniekit.models.common.decoder import CausalLM, CausalLMOutput


def splice(x: paddle.Tensor, ids: paddle.Tensor, token_id: int, embeds: paddle.Tensor) -> paddle.Tensor:
    """x [B, S, H] with the rows where ids == token_id replaced, in order, by embeds [n, H]."""
    flat = x.reshape([-1, x.shape[-1]])
    index = paddle.nonzero(ids.reshape([-1]) == token_id).reshape([-1])
    if index.shape[0] != embeds.shape[0]:
        raise DataError(
            f"the prompts hold {index.shape[0]} image placeholder tokens but the images give "
            f"{embeds.shape[0]} (each image needs t*h*w/merge^2 of them)"
        )
    return paddle.scatter(flat, index, embeds.astype(x.dtype), overwrite=True).reshape(x.shape)


class VisionLanguageModel(CausalLM):
    """The text decoder (CausalLM: same layers, names and plans) plus a vision encoder ``vision`` that
    maps (pixel_values [P, C*p*p], grid_thw [n, 3]) to decoder embeddings [sum of tokens, H]."""

    def __init__(self, args: ModelArgs, vision: nn.Layer):
        super().__init__(args)
        if args.vision is None:
            raise ValueError("a vision-language model needs ModelArgs.vision")
        self.vision = vision
        self.register_buffer(
            "vision_token_ids", paddle.to_tensor(vision_tokens(args.vision), "int64"), persistable=False
        )

    def forward(
        self,
        input_ids: paddle.Tensor,
        position_ids: paddle.Tensor | None = None,
        segment_ids: paddle.Tensor | None = None,
        branch_ids: paddle.Tensor | None = None,
        key_padding: paddle.Tensor | None = None,
        cache=None,
        compute_logits: bool = True,
        pixel_values: paddle.Tensor | None = None,
        image_grid_thw=None,
        pixel_values_videos: paddle.Tensor | None = None,
        video_grid_thw=None,
    ) -> CausalLMOutput:
        """As CausalLM.forward, plus images (and videos) for the placeholders in input_ids. Without
        position_ids, positions follow the reference's 3D counter over the real tokens (key_padding)."""
        v = self.args.vision
        x, token_types = self.embed(
            input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw
        )
        if position_ids is None and (cache is None or cache.length == 0):
            real = None if key_padding is None else key_padding[:, -input_ids.shape[1] :].numpy()
            pos, _ = multimodal_positions(
                input_ids.numpy(), real, _grids(image_grid_thw), _grids(video_grid_thw), v
            )
            position_ids = paddle.to_tensor(pos)
        return self.decode(
            x, position_ids, segment_ids, branch_ids, key_padding, cache, compute_logits, token_types
        )

    def embed(
        self, input_ids, pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None
    ) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Token embeddings with the images' (and videos') encodings over their placeholders, and the
        token types that route the MoE: True for image/video tokens and their start/end markers."""
        v = self.args.vision
        x = self.embed_tokens(input_ids)
        if pixel_values is not None:
            x = splice(x, input_ids, v.image_token_id, self.vision(pixel_values, image_grid_thw))
        if pixel_values_videos is not None:
            x = splice(x, input_ids, v.video_token_id, self.vision(pixel_values_videos, video_grid_thw))
        return x, paddle.isin(input_ids, self.vision_token_ids)

    def prompt_positions(self, ids: np.ndarray, real: np.ndarray, images=None, videos=None):
        """Prefill positions [3, B, S] and the decode offsets [B] (see the module doc)."""
        image_grids = images.grid_thw if images is not None else []
        video_grids = videos.grid_thw if videos is not None else []
        return multimodal_positions(ids, real, image_grids, video_grids, self.args.vision)


def _grids(grid_thw):
    return [] if grid_thw is None else grid_thw
