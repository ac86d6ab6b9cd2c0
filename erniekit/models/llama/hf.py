"""Llama-family checkpoints: HF ``config.json`` (llama, qwen2) <-> ModelArgs, and the weight layout."""

from __future__ import annotations

from erniekit.errors import CheckpointError
from erniekit.models.common.args import ModelArgs
from erniekit.models.common.hf_layout import decoder_config, decoder_rules
from erniekit.models.common.weights import Rule
from erniekit.models.llama.model import llama_args

MODEL_TYPES = ("llama", "qwen2")
KEEP_FLOAT32 = ()
IGNORE_UNEXPECTED = ("rotary_emb.inv_freq",)


def _rope(cfg: dict) -> tuple[float, dict | None]:
    params = dict(cfg.get("rope_parameters") or {})
    scaling = cfg.get("rope_scaling") or ({k: v for k, v in params.items() if k != "rope_theta"} or None)
    theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise CheckpointError(
            f"config.json: rope scaling type {kind!r} is not supported (default, llama3 are)"
        )
    return theta, {**scaling, "rope_type": "llama3"}


def args_from_config(cfg: dict) -> ModelArgs:
    if cfg.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"config.json: hidden_act {cfg['hidden_act']!r} is not supported")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise CheckpointError("config.json: attention_bias/mlp_bias on Llama are not supported")
    if cfg.get("use_sliding_window"):
        raise CheckpointError("config.json: sliding-window attention is not supported")
    heads = cfg["num_attention_heads"]
    theta, scaling = _rope(cfg)
    return llama_args(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        intermediate_size=cfg["intermediate_size"],
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        qkv_bias=cfg.get("model_type") == "qwen2",
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        initializer_range=cfg.get("initializer_range", 0.02),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        pad_token_id=cfg.get("pad_token_id"),
    )


def config_from_args(args: ModelArgs) -> dict:
    qwen = args.qkv_bias
    cfg = {
        "architectures": ["Qwen2ForCausalLM" if qwen else "LlamaForCausalLM"],
        "model_type": "qwen2" if qwen else "llama",
        **decoder_config(args),
        "rope_theta": args.rope_theta,
        "rope_parameters": {"rope_theta": args.rope_theta, **(args.rope_scaling or {"rope_type": "default"})},
        "tie_word_embeddings": args.tie_word_embeddings,
        "initializer_range": args.initializer_range,
        "use_cache": True,
        "bos_token_id": args.bos_token_id,
        "eos_token_id": args.eos_token_id,
        "pad_token_id": args.pad_token_id,
    }
    if not qwen:
        cfg.update({"attention_bias": False, "mlp_bias": False})
    if args.rope_scaling:
        cfg["rope_scaling"] = dict(args.rope_scaling)
    return cfg


def detect_layout(keys: list[str]) -> str:
    return "hf"


def weight_rules(args: ModelArgs, layout: str = "hf") -> list[Rule]:
    return decoder_rules(args, layout)
