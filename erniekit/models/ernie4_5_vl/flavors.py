"""Named ERNIE 4.5 VL shapes: the released models and tiny ``debug`` ones for tests.

``28b-a3b`` is transformers' Ernie4_5_VLMoeConfig default, which its docstring names as
ERNIE-4.5-VL-28B-A3B (a meta-device build of it counts 29.4 B parameters; tests/parity checks ours).
``424b-a47b``: its model card gives 54 layers, 64/8 query/kv heads, 64 text and 64 vision experts
with 8 active each, 131072 positions, and transformers' conversion script an untied head. Its
config.json could not be read here, so the rest is NOT published data:
* decoder widths, text experts and MoE layers are those of ERNIE-4.5-300B-A47B, the text model the
  card says it extends (hidden 8192, FFN 28672, experts 3584, MoE from layer 3, no shared experts);
* the vision expert width 1536 is derived, not read: it is the width at which the parameter count
  reaches the 424B of the model's name (423.5 B; 512, the 28B model's ratio, would give 341 B);
* the vision tower is the 28B model's (depth 32, width 1280).
Treat ``erniekit plan`` on it as an estimate until a config.json confirms these.
"""

from __future__ import annotations

from erniekit.models.common.args import VisionArgs
from erniekit.models.ernie4_5_vl.hf import TOKENS
from erniekit.models.ernie4_5_vl.model import ernie4_5_vl_args

VISION_28B = VisionArgs(
    kind="ernie4_5_vl", depth=32, hidden_size=1280, num_heads=16, intermediate_size=5120, **TOKENS
)
DEBUG_TOKENS = dict(  # ids of the VL special tokens in samples://ernie_vl_tokenizer
    image_token_id=1024,
    image_start_token_id=1025,
    image_end_token_id=1026,
    video_token_id=1027,
    video_start_token_id=1028,
    video_end_token_id=1029,
)
VISION_DEBUG = VisionArgs(
    kind="ernie4_5_vl", depth=2, hidden_size=32, num_heads=2, intermediate_size=64, **DEBUG_TOKENS
)

FLAVORS = {
    "28b-a3b": ernie4_5_vl_args(
        VISION_28B,
        vocab_size=103424,
        hidden_size=2560,
        num_layers=28,
        num_heads=20,
        num_kv_heads=4,
        head_dim=128,
        intermediate_size=12288,
        num_experts=64,
        experts_per_token=6,
        moe_intermediate_size=1536,
        vision_moe_intermediate_size=512,
        num_shared_experts=2,
        mlp_layer_types=("dense",) + ("sparse",) * 27,
        router_aux_loss_coef=0.001,
    ),
    "424b-a47b": ernie4_5_vl_args(
        VISION_28B,
        vocab_size=103424,
        hidden_size=8192,
        num_layers=54,
        num_heads=64,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=28672,
        num_experts=64,
        experts_per_token=8,
        moe_intermediate_size=3584,
        vision_moe_intermediate_size=1536,
        num_shared_experts=0,
        mlp_layer_types=("dense",) * 3 + ("sparse",) * 51,
        tie_word_embeddings=False,
        router_aux_loss_coef=0.001,
    ),
    # Tiny shapes for tests and the CI recipes; the vocabulary holds samples://ernie_vl_tokenizer.
    "debug": ernie4_5_vl_args(
        VISION_DEBUG,
        mrope_section=(3, 3, 2),
        vocab_size=1040,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        num_experts=4,
        experts_per_token=2,
        moe_intermediate_size=32,
        vision_moe_intermediate_size=16,
        num_shared_experts=1,
        mlp_layer_types=("dense", "sparse"),
        router_aux_loss_coef=0.001,
    ),
}
