"""Named PaddleOCR-VL shapes: the released 0.9B and a tiny ``debug`` one for tests.

``0.9b``: the released checkpoint's config.json (as mirrored publicly; the hub itself is not reachable
here): decoder 1024 wide, 18 layers, 16/2 heads of 128, FFN 3072, rope theta 500000 with sections
(t, h, w) = (16, 24, 24), untied head; encoder 1152 wide, 27 layers, 16 heads, MLP 4304, patch 14 on a
384-pixel (27 x 27) position table; token ids 100295 (image), 101305/101306 (start/end) and 101307
(video: the mirror's value; transformers' default is 100296). 0.906 B parameters, as its name says.
"""

from __future__ import annotations

from erniekit.models.common.args import VisionArgs
from erniekit.models.paddleocr_vl.hf import TOKENS
from erniekit.models.paddleocr_vl.model import paddleocr_vl_args

FLAVORS = {
    "0.9b": paddleocr_vl_args(
        VisionArgs(
            kind="paddleocr_vl",
            depth=27,
            hidden_size=1152,
            num_heads=16,
            intermediate_size=4304,
            temporal_merge_size=1,
            hidden_act="gelu_pytorch_tanh",
            num_positions=27 * 27,
            **{**TOKENS, "video_token_id": 101307},
        ),
        vocab_size=103424,
        hidden_size=1024,
        num_layers=18,
        num_heads=16,
        num_kv_heads=2,
        head_dim=128,
        intermediate_size=3072,
        tie_word_embeddings=False,
    ),
    # Tiny shapes for tests; the vocabulary holds samples://ernie_vl_tokenizer (ids 1024..1027).
    "debug": paddleocr_vl_args(
        VisionArgs(
            kind="paddleocr_vl",
            depth=2,
            hidden_size=32,
            num_heads=2,
            intermediate_size=64,
            temporal_merge_size=1,
            hidden_act="gelu_pytorch_tanh",
            num_positions=6 * 6,
            image_token_id=1024,
            image_start_token_id=1025,
            image_end_token_id=1026,
            video_token_id=1027,
        ),
        mrope_section=(2, 3, 3),
        vocab_size=1040,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        tie_word_embeddings=False,
    ),
}
