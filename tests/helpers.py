"""Small builders shared by tests (tiny random HF models, numpy conversions)."""

from __future__ import annotations

import numpy as np


def tiny_hf_ernie(path, moe: bool = False, seed: int = 0, **overrides):
    """Save a tiny random transformers ERNIE 4.5 (dense or MoE) to ``path``; returns the torch model.

    Weights are drawn wider than HF's default (std 0.02) so that logits and greedy continuations are
    far from uniform and a comparison can actually fail.
    """
    import torch
    from transformers import Ernie4_5_MoeConfig, Ernie4_5_MoeForCausalLM, Ernie4_5Config, Ernie4_5ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        initializer_range=0.35,
        rope_theta=10000.0,
    )
    if moe:
        cfg = Ernie4_5_MoeConfig(
            **{
                **common,
                "num_hidden_layers": 3,
                "moe_intermediate_size": 24,
                "moe_k": 2,
                "moe_num_experts": 4,
                "moe_num_shared_experts": 1,
                **overrides,
            }
        )
        model = Ernie4_5_MoeForCausalLM(cfg)
    else:
        model = Ernie4_5ForCausalLM(Ernie4_5Config(**{**common, "num_hidden_layers": 2, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "e_score_correction_bias" in name:
                p.copy_(torch.randn_like(p) * 0.05)
            elif "layernorm" in name or name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
    model.eval().save_pretrained(path)
    return model


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def debug_recipe(tmp_path, *overrides, recipe="ernie4_5/debug_sft"):
    """A shipped debug recipe pointed at ``tmp_path``, quiet, with extra ``overrides``."""
    from erniekit.config import load_recipe

    base = [
        f"train.output_dir={tmp_path / 'out'}",
        f"data.cache_dir={tmp_path.parent / 'datasets-cache'}",
        "logging.progress=none",
        "logging.visualdl=false",
    ]
    return load_recipe(recipe, [*base, *overrides])
