"""Checkpoint rules for our decoder (see weights.Rule), shared by every family.

Two checkpoint layouts exist:
* ``hf``: ``model.``-prefixed names, separate q/k/v and gate/up linears stored [out, in], experts as
  ``mlp.experts.{e}.{gate,up,down}_proj``, router ``mlp.gate.weight`` [E, H].
* ``paddle`` (ERNIE's own checkpoints, prefix ``ernie.``): already fused and [in, out].
"""

from __future__ import annotations

from collections.abc import Callable

from erniekit.models.common.args import ModelArgs
from erniekit.models.common.weights import Rule


def decoder_config(args: ModelArgs) -> dict:
    """The config.json keys every family's decoder writes alike (transformers' names)."""
    return {
        "vocab_size": args.vocab_size,
        "hidden_size": args.hidden_size,
        "intermediate_size": args.intermediate_size,
        "num_hidden_layers": args.num_layers,
        "num_attention_heads": args.num_heads,
        "num_key_value_heads": args.num_kv_heads,
        "head_dim": args.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": args.max_position_embeddings,
        "rms_norm_eps": args.rms_norm_eps,
    }


def decoder_rules(args: ModelArgs, layout: str = "hf", moe_rules: Callable | None = None) -> list[Rule]:
    """Rules of the whole decoder; ``moe_rules(args, src, dst, hf)`` replaces the MoE layers' rules
    (multimodal ERNIE stores its two expert sets differently)."""
    moe_rules = moe_rules or _moe_rules
    if layout not in ("hf", "paddle"):
        raise ValueError(f"unknown checkpoint layout {layout!r}")
    hf = layout == "hf"
    prefix = "model." if hf else "ernie."
    linear = "linear" if hf else "copy"
    rules = [
        Rule("embed_tokens.weight", (f"{prefix}embed_tokens.weight",)),
        Rule("norm.weight", (f"{prefix}norm.weight",)),
    ]
    if not args.tie_word_embeddings:
        rules.append(Rule("lm_head.weight", ("lm_head.weight",), linear))
    n, kv = args.num_heads * args.head_dim, args.num_kv_heads * args.head_dim
    for i in range(args.num_layers):
        src, dst = f"{prefix}layers.{i}.", f"layers.{i}."
        rules += [
            Rule(f"{dst}{norm}.weight", (f"{src}{norm}.weight",))
            for norm in ("input_layernorm", "post_attention_layernorm")
        ]
        attn_s, attn_d = f"{src}self_attn.", f"{dst}self_attn."
        if hf:
            qkv = tuple(f"{attn_s}{p}_proj.weight" for p in "qkv")
            rules.append(Rule(f"{attn_d}qkv_proj.weight", qkv, "fused", (n, kv, kv)))
        else:
            rules.append(Rule(f"{attn_d}qkv_proj.weight", (f"{attn_s}qkv_proj.weight",)))
        if args.qkv_bias or args.linear_bias:
            names = tuple(f"{attn_s}{p}_proj.bias" for p in "qkv") if hf else (f"{attn_s}qkv_proj.bias",)
            rules.append(Rule(f"{attn_d}qkv_proj.bias", names, "fused" if hf else "copy", (n, kv, kv)))
        rules.append(Rule(f"{attn_d}o_proj.weight", (f"{attn_s}o_proj.weight",), linear))
        if args.linear_bias:
            rules.append(Rule(f"{attn_d}o_proj.bias", (f"{attn_s}o_proj.bias",)))
        if args.is_moe_layer(i):
            rules += moe_rules(args, f"{src}mlp.", f"{dst}mlp.", hf)
        else:
            rules += mlp_rules(args, f"{src}mlp.", f"{dst}mlp.", args.intermediate_size, hf)
    return rules


def mlp_rules(args: ModelArgs, src: str, dst: str, inter: int, hf: bool) -> list[Rule]:
    if hf:
        rules = [
            Rule(
                f"{dst}up_gate_proj.weight",
                (f"{src}gate_proj.weight", f"{src}up_proj.weight"),
                "fused",
                (inter, inter),
            ),
            Rule(f"{dst}down_proj.weight", (f"{src}down_proj.weight",), "linear"),
        ]
    else:
        rules = [
            Rule(f"{dst}up_gate_proj.weight", (f"{src}up_gate_proj.weight",)),
            Rule(f"{dst}down_proj.weight", (f"{src}down_proj.weight",)),
        ]
    if args.linear_bias:
        gate_up = (f"{src}gate_proj.bias", f"{src}up_proj.bias") if hf else (f"{src}up_gate_proj.bias",)
        rules += [
            Rule(f"{dst}up_gate_proj.bias", gate_up, "fused" if hf else "copy", (inter, inter)),
            Rule(f"{dst}down_proj.bias", (f"{src}down_proj.bias",)),
        ]
    return rules


def expert_rules(src: str, dst: str, ids: range, inter: int, hidden: int, hf: bool) -> list[Rule]:
    """Stacked experts ``dst`` {up_gate_proj, down_proj} from the checkpoint's experts ``ids``."""
    if hf:
        up_gate = tuple(f"{src}experts.{e}.{p}_proj.weight" for e in ids for p in ("gate", "up"))
        rules = [Rule(f"{dst}up_gate_proj", up_gate, "experts", (inter, inter))]
    else:
        up_gate = tuple(f"{src}experts.{e}.up_gate_proj.weight" for e in ids)
        rules = [Rule(f"{dst}up_gate_proj", up_gate, "experts", (2 * inter,))]
    down = tuple(f"{src}experts.{e}.down_proj.weight" for e in ids)
    return [*rules, Rule(f"{dst}down_proj", down, "experts", (hidden,))]


def _moe_rules(args: ModelArgs, src: str, dst: str, hf: bool) -> list[Rule]:
    inter = args.moe_intermediate_size
    rules = expert_rules(src, f"{dst}experts.", range(args.num_experts), inter, args.hidden_size, hf)
    rules += [
        Rule(f"{dst}gate.weight", (f"{src}gate.weight",), "linear" if hf else "copy"),
        Rule(f"{dst}gate.e_score_correction_bias", (f"{src}moe_statics.e_score_correction_bias",), "row"),
    ]
    if args.num_shared_experts:
        shared = inter * args.num_shared_experts
        rules += mlp_rules(args, f"{src}shared_experts.", f"{dst}shared_experts.", shared, hf)
    return rules
