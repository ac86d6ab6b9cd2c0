"""ERNIE 4.5 as single-device math: our common decoder with ERNIE's choices.

What makes a decoder ERNIE 4.5 (both the dense 0.3B and the MoE 21B-A3B / 300B-A47B):
* adjacent-pair (GPT-J style) rotary embeddings, base ``rope_theta`` (500000 in released models);
* ``head_dim`` independent of ``hidden_size`` (0.3B: 16 heads x 128 = 2048 > hidden 1024), GQA;
* fused ``qkv_proj`` and ``up_gate_proj`` in its Paddle checkpoints (we keep them fused);
* MoE layers from ``moe_layer_start`` on (every ``moe_layer_interval``): fp32 softmax router whose
  top-k is chosen on probabilities plus an expert-score correction bias, weights renormalised over
  the chosen k, plus always-on shared experts (one MLP of ``num_shared`` x the expert width).
The math itself lives in ``erniekit.models.common``; ``hf.py`` maps checkpoints onto it.
"""

from __future__ import annotations

from erniekit.models.common.args import ModelArgs
from erniekit.models.common.decoder import CausalLM

FAMILY = "ernie4_5"


def ernie4_5_args(**shape) -> ModelArgs:
    """ModelArgs with ERNIE 4.5 conventions; ``shape`` sets sizes (and MoE fields for MoE models)."""
    defaults = dict(
        family=FAMILY,
        rope_interleaved=True,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        max_position_embeddings=131072,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return ModelArgs(**{**defaults, **shape})


def build(args: ModelArgs) -> CausalLM:
    if args.family != FAMILY:
        raise ValueError(f"not an ERNIE 4.5 configuration: family {args.family!r}")
    return CausalLM(args)
