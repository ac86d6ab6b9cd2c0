"""Llama-family decoders as single-device math: our common decoder with Llama's choices.

Half-split (NeoX style) rotary embeddings (optionally Llama-3 frequency scaling), GQA, RMSNorm, SwiGLU,
no biases (Qwen2: biases on q/k/v), tied or separate output embedding. Checkpoints store separate
q/k/v and gate/up projections; we fuse them on load (``hf.py``) for fewer, larger matmuls.
"""

from __future__ import annotations

from erniekit.models.common.args import ModelArgs
from erniekit.models.common.decoder import CausalLM

FAMILY = "llama"


def llama_args(**shape) -> ModelArgs:
    defaults = dict(family=FAMILY, rope_interleaved=False)
    return ModelArgs(**{**defaults, **shape})


def build(args: ModelArgs) -> CausalLM:
    if args.family != FAMILY:
        raise ValueError(f"not a Llama-family configuration: family {args.family!r}")
    return CausalLM(args)
