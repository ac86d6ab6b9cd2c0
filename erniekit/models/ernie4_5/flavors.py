"""Named ERNIE 4.5 shapes: the released models and tiny ``debug`` ones for tests.

Sizes are those of the ``-PT`` checkpoints' config.json (0.3B verbatim; 21B-A3B as transformers'
Ernie4_5_MoeConfig documents it; 300B-A47B from public fixtures, not verified against its checkpoint).
"""

from __future__ import annotations

from erniekit.models.ernie4_5.model import ernie4_5_args

FLAVORS = {
    "0.3b": ernie4_5_args(
        vocab_size=103424,
        hidden_size=1024,
        num_layers=18,
        num_heads=16,
        num_kv_heads=2,
        head_dim=128,
        intermediate_size=3072,
    ),
    "21b-a3b": ernie4_5_args(
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
        num_shared_experts=2,
        moe_layer_start=1,
        router_aux_loss_coef=0.001,
    ),
    "300b-a47b": ernie4_5_args(
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
        num_shared_experts=0,
        moe_layer_start=3,
        tie_word_embeddings=False,
        router_aux_loss_coef=0.001,
    ),
    # Tiny shapes for tests and the CI recipe; vocab matches the bundled sample tokenizer.
    "debug": ernie4_5_args(
        vocab_size=1024,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
    ),
    "debug-deep": ernie4_5_args(  # deep enough for interleaved pipelines (pp 4 x virtual_pp 2)
        vocab_size=1024,
        hidden_size=64,
        num_layers=8,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
    ),
    "debug-moe": ernie4_5_args(
        vocab_size=1024,
        hidden_size=64,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=128,
        num_experts=8,
        experts_per_token=2,
        moe_intermediate_size=32,
        num_shared_experts=1,
        moe_layer_start=1,
        router_aux_loss_coef=0.001,
    ),
}
