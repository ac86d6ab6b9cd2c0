"""ERNIE 4.5 checkpoints: HF ``config.json`` <-> ModelArgs, and the weight layout of each format.

Reads both the transformers-native ``-PT`` checkpoints (``model_type`` ``ernie4_5`` / ``ernie4_5_moe``)
and ERNIE's Paddle checkpoints (keys prefixed ``ernie.``, fused, [in, out]); writes the HF format.
"""

from __future__ import annotations

from erniekit.errors import CheckpointError
from erniekit.models.common.args import ModelArgs
from erniekit.models.common.hf_layout import decoder_config, decoder_rules
from erniekit.models.common.weights import Rule
from erniekit.models.ernie4_5.model import ernie4_5_args

MODEL_TYPES = ("ernie4_5", "ernie4_5_moe")


def _rope_theta(cfg: dict) -> float:
    params = cfg.get("rope_parameters") or {}
    if params.get("rope_type", "default") != "default":
        raise CheckpointError(
            f"config.json: rope_parameters.rope_type {params['rope_type']!r} is not supported"
        )
    if cfg.get("rope_scaling"):
        raise CheckpointError("config.json: rope_scaling is not supported for ERNIE 4.5")
    return float(params.get("rope_theta", cfg.get("rope_theta", 500000.0)))


def args_from_config(cfg: dict) -> ModelArgs:
    if cfg.get("hidden_act", "silu") != "silu":
        raise CheckpointError(
            f"config.json: hidden_act {cfg['hidden_act']!r} is not supported (ERNIE uses silu)"
        )
    heads = cfg["num_attention_heads"]
    shape = dict(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        intermediate_size=cfg["intermediate_size"],
        rope_theta=_rope_theta(cfg),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        tie_word_embeddings=cfg.get("tie_word_embeddings", True),
        linear_bias=bool(cfg.get("use_bias", False)),
        max_position_embeddings=cfg.get("max_position_embeddings", 131072),
        initializer_range=cfg.get("initializer_range", 0.02),
        bos_token_id=cfg.get("bos_token_id", 1),
        eos_token_id=cfg.get("eos_token_id", 2),
        pad_token_id=cfg.get("pad_token_id", 0),
    )
    experts = cfg.get("moe_num_experts") or 0
    if isinstance(experts, list):
        raise CheckpointError("config.json: multimodal ERNIE (moe_num_experts is a list) is not supported")
    if experts:
        shape.update(
            num_experts=experts,
            experts_per_token=cfg["moe_k"],
            moe_intermediate_size=cfg["moe_intermediate_size"],
            num_shared_experts=cfg.get("moe_num_shared_experts", 0) or 0,
            moe_layer_start=cfg.get("moe_layer_start_index", 1),
            moe_layer_end=cfg.get("moe_layer_end_index", -1),
            moe_layer_interval=cfg.get("moe_layer_interval", 1),
            moe_norm_min=cfg.get("moe_norm_min", 1e-12),
            router_aux_loss_coef=cfg.get("router_aux_loss_coef", 0.001),
        )
    return ernie4_5_args(**shape)


def config_from_args(args: ModelArgs) -> dict:
    moe = args.num_experts > 0
    cfg = {
        "architectures": ["Ernie4_5_MoeForCausalLM" if moe else "Ernie4_5ForCausalLM"],
        "model_type": "ernie4_5_moe" if moe else "ernie4_5",
        **decoder_config(args),
        "rope_theta": args.rope_theta,
        "rope_parameters": {"rope_theta": args.rope_theta, "rope_type": "default"},
        "tie_word_embeddings": args.tie_word_embeddings,
        "use_bias": args.linear_bias,
        "initializer_range": args.initializer_range,
        "use_cache": True,
        "bos_token_id": args.bos_token_id,
        "eos_token_id": args.eos_token_id,
        "pad_token_id": args.pad_token_id,
    }
    if moe:
        cfg.update(
            {
                "moe_num_experts": args.num_experts,
                "moe_k": args.experts_per_token,
                "moe_intermediate_size": args.moe_intermediate_size,
                "moe_num_shared_experts": args.num_shared_experts,
                "moe_layer_start_index": args.moe_layer_start,
                "moe_layer_end_index": args.num_layers - 1 if args.moe_layer_end < 0 else args.moe_layer_end,
                "moe_layer_interval": args.moe_layer_interval,
                "moe_norm_min": args.moe_norm_min,
                "router_aux_loss_coef": args.router_aux_loss_coef,
                "output_router_logits": False,
            }
        )
    return cfg


def detect_layout(keys: list[str]) -> str:
    return "paddle" if any(k.startswith("ernie.") for k in keys) else "hf"


def weight_rules(args: ModelArgs, layout: str = "hf") -> list[Rule]:
    return decoder_rules(args, layout)


KEEP_FLOAT32 = ("mlp.gate.weight", "e_score_correction_bias")  # the router stays fp32 in every export
IGNORE_UNEXPECTED = ("mtp",)  # multi-token-prediction layers of some releases: not used for fine-tuning
