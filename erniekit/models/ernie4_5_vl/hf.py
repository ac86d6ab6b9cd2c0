"""ERNIE 4.5 VL checkpoints: ``config.json`` <-> ModelArgs, and the weight layout of each format.

Three forms of config and two weight layouts are read:
* transformers' (``model_type`` ``ernie4_5_vl_moe``): nested ``text_config`` / ``vision_config``,
  ``mlp_layer_types``, ``moe_intermediate_size`` = [text, vision]; what ``save_pretrained`` writes;
* ERNIE's original (``ernie4_5_moe_vl``, the -PT and -Paddle releases): flat keys, list-valued
  ``moe_num_experts`` / ``moe_layer_start_index``, ``freq_allocation``, ``im_patch_id``,
  ``spatial_conv_size``;
* weights as transformers saves them or the -PT release stores them (``model.layers``, vision under
  ``vision_model`` with or without ``model.``, ``model.resampler_model``; [out, in] linears) or the
  -Paddle release (``ernie.`` prefix, fused ``qkv_proj`` / ``up_gate_proj``, [in, out] linears).

In both layouts an MoE layer stores its routers as ``mlp.gate.weight`` (text) and ``mlp.gate.weight_1``
(vision), both [H, E]; one ``mlp.moe_statics.e_score_correction_bias`` [2, E] (row 0 text, row 1
vision); and ``mlp.experts.{0..2E-1}``, the text experts first.
"""

from __future__ import annotations

from erniekit.errors import CheckpointError
from erniekit.models.common.args import ModelArgs, VisionArgs, vision_block_params
from erniekit.models.common.hf_layout import decoder_config, decoder_rules, expert_rules, mlp_rules
from erniekit.models.common.weights import Rule
from erniekit.models.ernie4_5_vl.model import ernie4_5_vl_args

MODEL_TYPES = ("ernie4_5_vl_moe", "ernie4_5_moe_vl")
TOKENS = dict(
    image_token_id=100295,
    image_start_token_id=101304,
    image_end_token_id=101305,
    video_token_id=103367,
    video_start_token_id=101306,
    video_end_token_id=101307,
)


def _rope(text: dict) -> tuple[float, tuple[int, int, int]]:
    params = text.get("rope_parameters") or {}
    if params.get("rope_type", "default") != "default":
        kind = params["rope_type"]
        raise CheckpointError(f"config.json: rope_parameters.rope_type {kind!r} is not supported")
    theta = float(params.get("rope_theta", text.get("rope_theta", 500000.0)))
    return theta, tuple(params.get("mrope_section", (22, 22, 20)))


def _from_original(cfg: dict) -> dict:
    """ERNIE's flat config (``ernie4_5_moe_vl``) as transformers' nested one, key by key."""
    experts, inter = cfg["moe_num_experts"], cfg["moe_intermediate_size"]
    experts = experts if isinstance(experts, list) else [experts, experts]
    inter = inter if isinstance(inter, list) else [inter, inter]
    if len(set(experts)) != 1:
        raise CheckpointError(f"config.json: moe_num_experts {experts}: text and vision sets must be equal")
    start, end = cfg.get("moe_layer_start_index", 1), cfg.get("moe_layer_end_index", -1)
    start = min(start) if isinstance(start, list) else start
    end = max(end) if isinstance(end, list) else end
    layers, interval = cfg["num_hidden_layers"], cfg.get("moe_layer_interval", 1)
    end = layers - 1 if end < 0 else end
    sparse = [(i + 1) % interval == 0 and start <= i <= end for i in range(layers)]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    t = cfg.get("freq_allocation", 20)
    hw = head_dim // 2 - t
    v = cfg.get("vision_config") or {}
    width = v.get("hidden_size") or v.get("embed_dim", 1280)
    text = {k: cfg[k] for k in _TEXT_KEYS if k in cfg}
    text.update(
        moe_num_experts=experts[0],
        moe_intermediate_size=inter,
        mlp_layer_types=["sparse" if s else "dense" for s in sparse],
        rope_parameters={
            "rope_type": "default",
            "rope_theta": cfg.get("rope_theta", 500000.0),
            "mrope_section": [hw // 2, hw // 2, t],
        },
    )
    vision = dict(
        depth=v.get("depth", 32),
        hidden_size=width,
        num_heads=v.get("num_heads", 16),
        intermediate_size=int(width * v.get("mlp_ratio", 4)),
        hidden_act=v.get("hidden_act", "quick_gelu"),
        patch_size=v.get("patch_size", 14),
        in_channels=v.get("in_channels", 3),
        spatial_merge_size=cfg.get("spatial_conv_size", v.get("spatial_merge_size", 2)),
        temporal_merge_size=cfg.get("temporal_conv_size", 2),
        rms_norm_eps=1e-6,
    )
    return {
        "text_config": text,
        "vision_config": vision,
        "image_token_id": cfg.get("im_patch_id", TOKENS["image_token_id"]),
        "tie_word_embeddings": cfg.get("tie_word_embeddings", True),
    }


_TEXT_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rms_norm_eps",
    "use_bias",
    "moe_k",
    "moe_num_shared_experts",
    "moe_norm_min",
    "router_aux_loss_coef",
    "tie_word_embeddings",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "initializer_range",
)


def args_from_config(cfg: dict) -> ModelArgs:
    if cfg.get("model_type") == "ernie4_5_moe_vl" or "text_config" not in cfg:
        cfg = {**_from_original(cfg), **{k: cfg[k] for k in TOKENS if k in cfg}}
    text, vis = cfg.get("text_config") or {}, cfg.get("vision_config") or {}
    if text.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"config.json: text_config.hidden_act {text['hidden_act']!r} is not supported")
    inter = text.get("moe_intermediate_size", [1536, 512])
    if not (isinstance(inter, list) and len(inter) == 2):
        raise CheckpointError(f"config.json: moe_intermediate_size {inter!r}: expected [text, vision]")
    layers = text.get("num_hidden_layers", 28)
    types = tuple(text.get("mlp_layer_types") or ["dense"] + ["sparse"] * (layers - 1))
    if len(types) != layers or set(types) - {"dense", "sparse"}:
        raise CheckpointError(f"config.json: mlp_layer_types must be {layers} of 'dense'/'sparse'")
    heads = text.get("num_attention_heads", 20)
    hidden = text.get("hidden_size", 2560)
    theta, section = _rope(text)
    vparams = vis.get("rope_parameters") or {}
    vision = VisionArgs(
        kind="ernie4_5_vl",
        depth=vis.get("depth", vis.get("num_hidden_layers", 32)),
        hidden_size=vis.get("hidden_size", 1280),
        num_heads=vis.get("num_heads", vis.get("num_attention_heads", 16)),
        intermediate_size=vis.get("intermediate_size", 5120),
        patch_size=vis.get("patch_size", 14),
        in_channels=vis.get("in_channels", 3),
        spatial_merge_size=vis.get("spatial_merge_size", 2),
        temporal_merge_size=vis.get("temporal_merge_size", 2),
        layer_norm_eps=vis.get("rms_norm_eps", 1e-6),
        rope_theta=float(vparams.get("rope_theta", 10000.0)),
        hidden_act=vis.get("hidden_act", "quick_gelu"),
        **{k: cfg.get(k, default) for k, default in TOKENS.items()},
    )
    return ernie4_5_vl_args(
        vision,
        section,
        vocab_size=text.get("vocab_size", 103424),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=text.get("num_key_value_heads") or heads,
        head_dim=text.get("head_dim") or hidden // heads,
        intermediate_size=text.get("intermediate_size", 12288),
        rope_theta=theta,
        rms_norm_eps=text.get("rms_norm_eps", 1e-5),
        tie_word_embeddings=cfg.get("tie_word_embeddings", text.get("tie_word_embeddings", True)),
        linear_bias=bool(text.get("use_bias", False)),
        max_position_embeddings=text.get("max_position_embeddings", 131072),
        initializer_range=text.get("initializer_range", 0.02),
        bos_token_id=text.get("bos_token_id"),
        eos_token_id=text.get("eos_token_id"),
        pad_token_id=text.get("pad_token_id"),
        num_experts=text.get("moe_num_experts", 64),
        experts_per_token=text.get("moe_k", 6),
        moe_intermediate_size=inter[0],
        vision_moe_intermediate_size=inter[1],
        num_shared_experts=text.get("moe_num_shared_experts", 2) or 0,
        mlp_layer_types=types,
        moe_norm_min=text.get("moe_norm_min", 1e-12),
        router_aux_loss_coef=text.get("router_aux_loss_coef", 0.001),
    )


def _mrope_section(args: ModelArgs) -> list[int]:
    hw = sum(1 for a in args.rope_axes if a != 0)
    return [hw // 2, hw // 2, len(args.rope_axes) - hw]


def config_from_args(args: ModelArgs) -> dict:
    v = args.vision
    text = {
        "model_type": "ernie4_5_vl_moe_text",
        **decoder_config(args),
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": args.rope_theta,
            "mrope_section": _mrope_section(args),
        },
        "use_bias": args.linear_bias,
        "moe_num_experts": args.num_experts,
        "moe_k": args.experts_per_token,
        "moe_intermediate_size": [args.moe_intermediate_size, args.vision_moe_intermediate_size],
        "moe_num_shared_experts": args.num_shared_experts,
        "moe_norm_min": args.moe_norm_min,
        "mlp_layer_types": list(args.mlp_layer_types),
        "router_aux_loss_coef": args.router_aux_loss_coef,
        "output_router_logits": False,
        "tie_word_embeddings": args.tie_word_embeddings,
        "initializer_range": args.initializer_range,
        "pad_token_id": args.pad_token_id,
        "bos_token_id": args.bos_token_id,
        "eos_token_id": args.eos_token_id,
        "use_cache": True,
    }
    vision = {
        "model_type": "ernie4_5_vl_moe_vision",
        "depth": v.depth,
        "hidden_size": v.hidden_size,
        "num_heads": v.num_heads,
        "intermediate_size": v.intermediate_size,
        "hidden_act": v.hidden_act,
        "in_channels": v.in_channels,
        "patch_size": v.patch_size,
        "spatial_merge_size": v.spatial_merge_size,
        "temporal_merge_size": v.temporal_merge_size,
        "rms_norm_eps": v.layer_norm_eps,
        "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
    }
    return {
        "architectures": ["Ernie4_5_VLMoeForConditionalGeneration"],
        "model_type": "ernie4_5_vl_moe",
        "text_config": text,
        "vision_config": vision,
        **{k: getattr(v, k) for k in TOKENS},
        "tie_word_embeddings": args.tie_word_embeddings,
    }


def detect_layout(keys: list[str]) -> str:
    return "paddle" if any(k.startswith("ernie.") for k in keys) else "hf"


def canonical_names(keys: list[str]) -> dict[str, str]:
    """{name the rules use: name on disk}: the vision tower and resampler may sit at the top level
    (``vision_model.``) or under the decoder's prefix (``model.`` / ``ernie.``); the rules use the latter."""
    lead = "ernie." if detect_layout(keys) == "paddle" else "model."
    top = ("vision_model.", "resampler_model.")
    return {(lead + k if k.startswith(top) else k): k for k in keys}


def _vl_moe_rules(args: ModelArgs, src: str, dst: str, hf: bool) -> list[Rule]:
    e, h = args.num_experts, args.hidden_size
    bias = (f"{src}moe_statics.e_score_correction_bias",)
    rules = expert_rules(src, f"{dst}experts.", range(e), args.moe_intermediate_size, h, hf)
    vision_width = args.vision_moe_intermediate_size
    rules += expert_rules(src, f"{dst}vision_experts.", range(e, 2 * e), vision_width, h, hf)
    rules += [
        Rule(f"{dst}gate.weight", (f"{src}gate.weight",)),  # [H, E] in every layout, as ours
        Rule(f"{dst}vision_gate.weight", (f"{src}gate.weight_1",)),
        Rule(f"{dst}gate.e_score_correction_bias", bias, "row", (0, 2)),
        Rule(f"{dst}vision_gate.e_score_correction_bias", bias, "row", (1, 2)),
    ]
    if args.num_shared_experts:
        shared = args.moe_intermediate_size * args.num_shared_experts
        rules += mlp_rules(args, f"{src}shared_experts.", f"{dst}shared_experts.", shared, hf)
    return rules


def _vision_rules(args: ModelArgs, layout: str) -> list[Rule]:
    lead = "model." if layout == "hf" else "ernie."
    vis, res = f"{lead}vision_model.", f"{lead}resampler_model."
    linear = "linear" if layout == "hf" else "copy"

    def affine(dst: str, src: str, kind: str = "copy") -> list[Rule]:
        return [Rule(f"{dst}.weight", (f"{src}.weight",), kind), Rule(f"{dst}.bias", (f"{src}.bias",))]

    rules = [Rule("vision.tower.patch_embed.weight", (f"{vis}patch_embed.proj.weight",), linear)]
    for i in range(args.vision.depth):
        dst, src = f"vision.tower.blocks.{i}.", f"{vis}blocks.{i}."
        for name in ("norm1", "norm2"):
            rules += affine(dst + name, src + name)
        for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            rules += affine(dst + name, src + name, linear)
    rules += affine("vision.tower.ln", f"{vis}ln")
    for stage in ("spatial_linear", "temporal_linear"):
        dst, src = f"vision.resampler.{stage}.", f"{res}{stage}."
        rules += affine(dst + "fc1", src + "0", linear) + affine(dst + "fc2", src + "2", linear)
        rules += affine(dst + "ln", src + "3")
    rules += affine("vision.resampler.mlp", f"{res}mlp", linear)
    rules.append(Rule("vision.resampler.after_norm.weight", (f"{res}after_norm.weight",)))
    return rules


def weight_rules(args: ModelArgs, layout: str = "hf") -> list[Rule]:
    return decoder_rules(args, layout, moe_rules=_vl_moe_rules) + _vision_rules(args, layout)


def vision_params(args: ModelArgs) -> dict[str, int]:
    """Parameters of the vision tower and of the resampler (for erniekit plan)."""
    v = args.vision
    d, s = v.hidden_size, v.hidden_size * v.spatial_merge_size**2
    tower = (
        v.in_channels * v.patch_size**2 * d + v.depth * vision_block_params(d, v.intermediate_size) + 2 * d
    )
    merge = 2 * (s * s + s) + 2 * s  # fc1, fc2, LayerNorm of the spatial stage
    temporal = (s * v.temporal_merge_size * s + s) + (s * s + s) + 2 * s
    resampler = merge + temporal + (s * args.hidden_size + args.hidden_size) + args.hidden_size
    return {"vision_tower": tower, "resampler": resampler}


def peft_module(name: str) -> str:
    """Our module name -> transformers' (PEFT adapters address modules by it)."""
    if name.startswith("vision.tower."):
        return "model.vision_tower." + name.removeprefix("vision.tower.")
    if name.startswith("vision.resampler."):
        return "model.resampler_model." + name.removeprefix("vision.resampler.")
    return "model.language_model." + name


IMAGE_PROCESSOR: dict = {}  # erniekit.data.images.ImageProcessor's defaults are ERNIE VL's
CHAT_TEMPLATE = "ernie4_5_vl"  # how image parts render in a prompt (erniekit.tokenizer.templates)
KEEP_FLOAT32 = ("mlp.gate.weight", "e_score_correction_bias")  # both routers (weight, weight_1) stay fp32
IGNORE_UNEXPECTED = ("mtp",)
