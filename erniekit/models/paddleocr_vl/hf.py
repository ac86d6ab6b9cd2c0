"""PaddleOCR-VL checkpoints: ``config.json`` <-> ModelArgs, and its weight layout.

The released checkpoint's config is flat (the decoder's keys at the top level, ``rope_scaling`` with
``mrope_section``, plus a ``vision_config``); transformers writes a nested ``text_config``. Both are read.
One safetensors layout serves Paddle and torch users alike: ``model.*`` (the ERNIE 4.5 0.3B decoder,
separate q/k/v and gate/up, [out, in]), ``visual.vision_model.*`` (SigLIP names: conv
``patch_embedding``, ``position_embedding``, ``encoder.layers.N.self_attn.{q,k,v,out}_proj``, ...) and
``mlp_AR.*`` (the projector), ``lm_head.weight`` when untied. The original checkpoint's
``packing_position_embedding`` and SigLIP ``head`` are unused, as in transformers.
"""

from __future__ import annotations

from erniekit.errors import CheckpointError
from erniekit.models.common.args import ModelArgs, VisionArgs, vision_block_params
from erniekit.models.common.hf_layout import decoder_config, decoder_rules
from erniekit.models.common.weights import Rule
from erniekit.models.paddleocr_vl.model import paddleocr_vl_args

MODEL_TYPES = ("paddleocr_vl",)
TOKENS = dict(
    image_token_id=100295, image_start_token_id=101305, image_end_token_id=101306, video_token_id=100296
)
_CONFIG_TOKENS = dict(  # our VisionArgs field -> the config key that holds it
    image_token_id="image_token_id",
    image_start_token_id="vision_start_token_id",
    image_end_token_id="vision_end_token_id",
    video_token_id="video_token_id",
)


def _mrope(text: dict) -> tuple[float, tuple[int, int, int]]:
    params = {**(text.get("rope_scaling") or {}), **(text.get("rope_parameters") or {})}
    if params.get("rope_type", "default") != "default":
        raise CheckpointError(f"config.json: rope type {params['rope_type']!r} is not supported")
    theta = float(params.get("rope_theta", text.get("rope_theta", 500000.0)))
    return theta, tuple(params.get("mrope_section", (16, 24, 24)))


def args_from_config(cfg: dict) -> ModelArgs:
    text = cfg.get("text_config") or cfg  # released configs are flat
    vis = cfg.get("vision_config") or {}
    if text.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"config.json: hidden_act {text['hidden_act']!r} is not supported")
    heads, hidden = text.get("num_attention_heads", 16), text.get("hidden_size", 1024)
    theta, section = _mrope(text)
    image, patch = vis.get("image_size", 384), vis.get("patch_size", 14)
    vparams = vis.get("rope_parameters") or {}
    vision = VisionArgs(
        kind="paddleocr_vl",
        depth=vis.get("num_hidden_layers", 27),
        hidden_size=vis.get("hidden_size", 1152),
        num_heads=vis.get("num_attention_heads", 16),
        intermediate_size=vis.get("intermediate_size", 4304),
        patch_size=patch,
        in_channels=vis.get("num_channels", 3),
        spatial_merge_size=vis.get("spatial_merge_size", 2),
        temporal_merge_size=1,
        layer_norm_eps=vis.get("layer_norm_eps", 1e-6),
        rope_theta=float(vparams.get("rope_theta", 10000.0)),
        hidden_act=vis.get("hidden_act", "gelu_pytorch_tanh"),
        num_positions=(image // patch) ** 2,
        **{ours: cfg.get(key, TOKENS[ours]) for ours, key in _CONFIG_TOKENS.items()},
    )
    # transformers ties unless both levels say otherwise
    tied = cfg.get("tie_word_embeddings", True) or text.get("tie_word_embeddings", True)
    return paddleocr_vl_args(
        vision,
        section,
        vocab_size=text.get("vocab_size", 103424),
        hidden_size=hidden,
        num_layers=text.get("num_hidden_layers", 18),
        num_heads=heads,
        num_kv_heads=text.get("num_key_value_heads") or heads,
        head_dim=text.get("head_dim") or hidden // heads,
        intermediate_size=text.get("intermediate_size", 3072),
        rope_theta=theta,
        rms_norm_eps=text.get("rms_norm_eps", 1e-5),
        tie_word_embeddings=bool(tied),
        linear_bias=bool(text.get("use_bias", False)),
        max_position_embeddings=text.get("max_position_embeddings", 131072),
        initializer_range=text.get("initializer_range", 0.02),
        bos_token_id=text.get("bos_token_id", 1),
        eos_token_id=text.get("eos_token_id", 2),
        pad_token_id=text.get("pad_token_id", 0),
    )


def _mrope_section(args: ModelArgs) -> list[int]:
    return [list(args.rope_axes).count(axis) for axis in range(3)]


def config_from_args(args: ModelArgs) -> dict:
    v = args.vision
    text = {
        "model_type": "paddleocr_vl_text",
        **decoder_config(args),
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": args.rope_theta,
            "mrope_section": _mrope_section(args),
        },
        "use_bias": args.linear_bias,
        "tie_word_embeddings": args.tie_word_embeddings,
        "initializer_range": args.initializer_range,
        "pad_token_id": args.pad_token_id,
        "bos_token_id": args.bos_token_id,
        "eos_token_id": args.eos_token_id,
        "use_cache": True,
    }
    side = round(v.num_positions**0.5)
    vision = {
        "model_type": "paddleocr_vl_vision",
        "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size,
        "num_hidden_layers": v.depth,
        "num_attention_heads": v.num_heads,
        "num_channels": v.in_channels,
        "image_size": side * v.patch_size,
        "patch_size": v.patch_size,
        "hidden_act": v.hidden_act,
        "layer_norm_eps": v.layer_norm_eps,
        "spatial_merge_size": v.spatial_merge_size,
        "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
    }
    return {
        "architectures": ["PaddleOCRVLForConditionalGeneration"],
        "model_type": "paddleocr_vl",
        "text_config": text,
        "vision_config": vision,
        **{key: getattr(v, ours) for ours, key in _CONFIG_TOKENS.items()},
        "tie_word_embeddings": args.tie_word_embeddings,
    }


def detect_layout(keys: list[str]) -> str:
    return "hf"


def _vision_rules(args: ModelArgs) -> list[Rule]:
    v = args.vision
    enc, d = "visual.vision_model.", v.hidden_size

    def affine(dst: str, src: str, kind: str = "copy") -> list[Rule]:
        return [Rule(f"{dst}.weight", (f"{src}.weight",), kind), Rule(f"{dst}.bias", (f"{src}.bias",))]

    emb = f"{enc}embeddings."
    rules = [
        Rule("vision.tower.embeddings.patch_embedding.weight", (f"{emb}patch_embedding.weight",), "patch",
             (v.in_channels, v.patch_size, v.patch_size)),
        Rule("vision.tower.embeddings.patch_embedding.bias", (f"{emb}patch_embedding.bias",)),
        Rule("vision.tower.embeddings.position_embedding.weight", (f"{emb}position_embedding.weight",)),
    ]  # fmt: skip
    for i in range(v.depth):
        dst, src = f"vision.tower.blocks.{i}.", f"{enc}encoder.layers.{i}."
        attn = f"{src}self_attn."
        rules += affine(f"{dst}norm1", f"{src}layer_norm1") + affine(f"{dst}norm2", f"{src}layer_norm2")
        for part in ("weight", "bias"):
            qkv = tuple(f"{attn}{p}_proj.{part}" for p in "qkv")
            rules.append(Rule(f"{dst}attn.qkv.{part}", qkv, "fused", (d, d, d)))
        rules += affine(f"{dst}attn.proj", f"{attn}out_proj", "linear")
        rules += affine(f"{dst}mlp.fc1", f"{src}mlp.fc1", "linear") + affine(
            f"{dst}mlp.fc2", f"{src}mlp.fc2", "linear"
        )
    rules += affine("vision.tower.post_layernorm", f"{enc}post_layernorm")
    rules += affine("vision.projector.pre_norm", "mlp_AR.pre_norm")
    rules += affine("vision.projector.linear_1", "mlp_AR.linear_1", "linear")
    rules += affine("vision.projector.linear_2", "mlp_AR.linear_2", "linear")
    return rules


def weight_rules(args: ModelArgs, layout: str = "hf") -> list[Rule]:
    if layout != "hf":
        raise ValueError(f"PaddleOCR-VL has one checkpoint layout (hf), not {layout!r}")
    return decoder_rules(args, "hf") + _vision_rules(args)


def vision_params(args: ModelArgs) -> dict[str, int]:
    """Parameters of the encoder (vision_tower) and of the projector (resampler) (for erniekit plan)."""
    v = args.vision
    d, s = v.hidden_size, v.hidden_size * v.spatial_merge_size**2
    embeddings = v.in_channels * v.patch_size**2 * d + d + v.num_positions * d
    tower = embeddings + v.depth * vision_block_params(d, v.intermediate_size) + 2 * d
    return {
        "vision_tower": tower,
        "resampler": 2 * d + (s * s + s) + (s * args.hidden_size + args.hidden_size),
    }


def peft_module(name: str) -> str | None:
    """Our module name -> transformers' (PEFT adapters address modules by it); None for the encoder's
    fused qkv, which transformers keeps as three projections."""
    if name.startswith("vision.projector."):
        return "model.projector." + name.removeprefix("vision.projector.")
    if name.startswith("vision.tower.blocks."):
        index, _, rest = name.removeprefix("vision.tower.blocks.").partition(".")
        hf = {"attn.proj": "self_attn.out_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}.get(rest)
        return None if hf is None else f"model.visual.vision_model.encoder.layers.{index}.{hf}"
    return "model.language_model." + name


# transformers' processor class defaults (released checkpoints ship their own preprocessor_config.json)
IMAGE_PROCESSOR = dict(min_pixels=384 * 384, max_pixels=1536 * 1536, block_major=False, lift_small_side=True)
CHAT_TEMPLATE = "paddleocr_vl"  # how image parts render in a prompt (erniekit.tokenizer.templates)
KEEP_FLOAT32 = ()
IGNORE_UNEXPECTED = ("packing_position_embedding", "vision_model.head.")
