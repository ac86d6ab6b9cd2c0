"""``erniekit plan``: parameters, optimizer state, activations and FLOPs per device for a recipe.

Arithmetic on the model shape and the degrees (nothing is allocated): check that a recipe fits before
booking a cluster. Memory per device, for the rank holding the most (the first pipeline stage, which
also holds the embedding):
* weights: fp32 (4 B/param); mixed precision autocasts each op's weight, so there is no second copy.
  A LoRA base stored quantised (``lora.quantize``, peft/qlora.py) is counted per linear as
  erniekit/quant/formats.py lays it out: int8 1 + 4/K bytes per weight of a [K, N] linear, int4
  0.5 + 4/128, nf4 0.5 + (1 + 8/256)/64 (one int8 absmax per group, an fp32 step and mean per block
  of 256 of them, the last block padded); wint4/8 (ERNIEKit's weight_only_mix) routed experts int4
  0.5 + 4/K (unless lora.quantize_group groups them), the other linears int8, one scale per column.
  Embeddings, the LM head, norms, routers and a vision tower stay fp32, and so do routed experts
  under int8/int4/nf4. Under tensor parallelism a row-split linear's column scales are counted once,
  not once per rank (about 4N bytes per matrix); the float copy each matmul dequantises for a moment
  is not counted;
* gradients: 4 B per trainable parameter; AdamW state 8 B per trainable parameter (4 B with
  optim.moment_dtype=bfloat16), divided by the sharding degree (stage 1); ``model.freeze`` parts
  train none. LoRA trains its adapters, r x (K + N)
  per adapted [K, N] linear (fused q|k|v and gate|up share one A), the tensor-split factor divided by
  tp; adapters on a vision tower or resampler are guessed at 1% of its parameters;
* experts are split by ``ep`` (over data ranks or the tensor group), everything else by ``tp`` (a VL
  model's vision encoder too: its blocks and MLPs are split like the decoder's);
* activations per micro-batch and layer after Korthikanti et al. 2022 (https://arxiv.org/abs/2205.05198,
  eq. 1): 10 sbh bytes outside the tensor-parallel regions (divided by t under sequence parallelism),
  24 sbh / t inside, at 2-byte activations; plus, unless flash attention runs (fused ops in bf16/fp16),
  the attention scores and probabilities our reference materialises, B x N/t x S x S in fp32 and the
  compute dtype. Full recompute keeps only each
  layer's input, plus one layer being recomputed. 1F1B keeps up to ``pp`` micro-batches in flight;
* a VL model's vision encoder, when it trains (not frozen, or LoRA on it): merge_size^2 patches per
  image token, every token of a micro-batch an image's in the worst case; each block keeps 34 sbh
  (2-byte units) at the vision width, or with recompute its input plus one block; a frozen encoder
  keeps nothing for the backward pass;
* logits and their gradient in fp32 (vocabulary split by tp); with tp = 1 the chunked head holds one
  block of at most 64 MiB and its softmax instead once the logits exceed 256 MiB.

FLOPs per token for training: 6 x (parameters a token uses, MoE counting its k routed experts and the
shared ones, embeddings excluded) + 12 x layers x seq x (heads x head_dim) for attention (6 N D + causal
attention scores and values, forward and backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from erniekit.config.core import ConfigError
from erniekit.models.common.args import ModelArgs
from erniekit.ops.cross_entropy import CHUNK_BYTES, KEEP_BYTES
from erniekit.peft.targets import LINEAR_NAMES, PART_OF

GiB = 1024**3
PARTS = ("attention", "dense_mlp", "experts", "shared")  # what each decoder layer holds, as Counts names it
# erniekit/quant/formats.py's, repeated here because that module imports Paddle and plan must not
QUANT_DEFAULT_GROUP = {"int8": 0, "int4": 128, "nf4": 64, "q8_0": 32, "q4_1": 32}  # 0: the whole input
NF4_SCALE_BLOCK = 256


@dataclass
class Counts:
    embedding: int  # input embedding (and the separate LM head when untied)
    attention: int  # per layer
    dense_mlp: int  # per dense layer
    experts: int  # per MoE layer, routed experts (both sets of a multimodal model)
    shared: int  # per MoE layer: shared experts + router(s)
    active_per_token: int  # non-embedding parameters one (text) token uses
    vision_tower: int = 0  # a vision-language model's vision encoder (on the first stage)
    resampler: int = 0  # and what maps its output to the decoder (ERNIE VL's resampler, a projector)
    vision_experts: int = 0  # per MoE layer: the vision routed set and its router (in experts/shared)

    @property
    def vision(self) -> int:
        return self.vision_tower + self.resampler


def count(a: ModelArgs) -> Counts:
    h, d = a.hidden_size, a.head_dim
    attention = h * (a.num_heads + 2 * a.num_kv_heads) * d + a.num_heads * d * h + 2 * h
    dense_mlp = 3 * h * a.intermediate_size
    expert = 3 * h * a.moe_intermediate_size
    sets = 2 if a.vision_moe_intermediate_size else 1  # text and vision routed sets
    experts = a.num_experts * (expert + 3 * h * a.vision_moe_intermediate_size)
    shared = a.num_shared_experts * expert + sets * h * a.num_experts if a.num_experts else 0
    moe_layers = a.num_moe_layers
    dense_layers = a.num_layers - moe_layers
    embedding = a.vocab_size * h * (1 if a.tie_word_embeddings else 2)
    active = (
        a.num_layers * attention
        + dense_layers * dense_mlp
        + moe_layers * (shared + a.experts_per_token * expert)
    )
    parts = {}
    if a.vision is not None:
        from erniekit.models import family

        parts = family(a.family).hf.vision_params(a)
    vision_experts = a.num_experts * (3 * h * a.vision_moe_intermediate_size + h) if sets == 2 else 0
    return Counts(
        embedding, attention, dense_mlp, experts, shared, active, **parts, vision_experts=vision_experts
    )


def total_params(a: ModelArgs) -> int:
    c = count(a)
    moe = a.num_moe_layers
    return (
        c.embedding
        + a.num_layers * c.attention
        + (a.num_layers - moe) * c.dense_mlp
        + moe * (c.experts + c.shared)
        + a.hidden_size
        + c.vision
    )


def linears(a: ModelArgs) -> dict[str, list[tuple[int, int]]]:
    """The [K, N] linear weights (K = input width) inside each part of :class:`Counts`: per layer, and
    one entry per routed expert matrix; whatever else a part counts (norms, routers) is not a linear."""
    h, d = a.hidden_size, a.head_dim

    def mlp(inter: int) -> list[tuple[int, int]]:
        return [(h, 2 * inter), (inter, h)] if inter else []

    routed = mlp(a.moe_intermediate_size) + mlp(a.vision_moe_intermediate_size)
    return {
        "attention": [(h, (a.num_heads + 2 * a.num_kv_heads) * d), (a.num_heads * d, h)],
        "dense_mlp": mlp(a.intermediate_size),
        "experts": a.num_experts * routed,
        "shared": mlp(a.moe_intermediate_size * a.num_shared_experts) if a.num_experts else [],
    }


def linear_bytes(fmt: str, k: int, n: int, group: int = 0) -> int:
    """Bytes of a frozen [k, n] weight stored as ``fmt`` ("none": fp32). ``group`` is the input rows per
    scale, 0 for the format's default; like peft/qlora.py, one that does not divide k becomes their gcd."""
    if fmt == "none":
        return 4 * k * n
    rows = math.gcd(k, group or QUANT_DEFAULT_GROUP[fmt] or k)
    scales = k // rows * n
    if fmt in ("int8", "q8_0"):
        return k * n + (2 if fmt == "q8_0" else 4) * scales  # Q8_0: a float16 scale per block
    codes = k * n // 2  # two 4-bit codes per byte
    if fmt in ("int4", "q4_1"):
        return codes + (4 if fmt == "int4" else 2 + 2) * scales  # Q4_1: float16 scale and minimum
    blocks = -(-scales // NF4_SCALE_BLOCK)  # nf4: int8 scales padded to whole blocks, fp32 step + mean each
    return codes + blocks * (NF4_SCALE_BLOCK + 8)


def stored_bytes(a: ModelArgs, quantize: str, group: int = 0) -> dict[str, int]:
    """Bytes of each decoder part of :class:`Counts` (whole, per layer) with its linears stored as
    ``lora.quantize`` keeps them (peft/qlora.py; ``group`` is lora.quantize_group, for wint4/8 only its
    experts') and everything else in fp32."""
    c = count(a)
    out = {}
    for part, shapes in linears(a).items():
        quantised = 0
        for k, n in shapes:
            if quantize == "wint4/8":  # ERNIEKit's weight_only_mix: per column, experts' int4 unless grouped
                fmt, rows = ("int4", group or k) if part == "experts" else ("int8", k)
            else:  # int8 / int4 / nf4 leave routed experts as they are
                fmt, rows = ("none" if part == "experts" else quantize), group
            quantised += linear_bytes(fmt, k, n, rows)
        weights = sum(k * n for k, n in shapes)
        out[part] = quantised + 4 * (getattr(c, part) - weights)
    return out


@dataclass
class PerLayer:
    """One device's share of something each decoder layer holds (parameters, bytes, adapter
    parameters), by the kind of layer; :func:`_first_stage` adds it up over the first stage's layers."""

    attention: float  # every layer
    dense_mlp: float  # a dense layer's MLP
    moe: float  # an MoE layer's routed experts (this rank's), shared experts and routers


def _split(parts: dict[str, float], tp: int, ep: int) -> PerLayer:
    """Per layer on one device: tensor parallelism splits everything but the routed experts, which are
    split whole over ``ep`` ranks."""
    return PerLayer(
        parts["attention"] / tp, parts["dense_mlp"] / tp, parts["experts"] / ep + parts["shared"] / tp
    )


def _first_stage(a: ModelArgs, pp: int, x: PerLayer) -> float:
    moe_share = a.num_moe_layers / a.num_layers
    return -(-a.num_layers // pp) * (x.attention + (1 - moe_share) * x.dense_mlp + moe_share * x.moe)


def adapters(a: ModelArgs, lora, tp: int, ep: int) -> PerLayer:
    """LoRA parameters on one device per layer, as peft/lora.py inserts them: r x (K + N) per adapted
    linear, the column-split (qkv, up_gate) B or the row-split (o, down) A divided by tp; routed experts
    (``experts``, ``vision_experts`` targets) one pair per expert matrix, whole experts split by ep."""
    r, h, targets = lora.rank, a.hidden_size, set(lora.targets)
    names = {PART_OF.get(t, (t, 0))[0] for t in targets}
    if "all-linear" in targets:
        names |= set(LINEAR_NAMES)

    def column(name: str, k: int, n: int) -> float:
        return r * (k + n / tp) if name in names else 0

    def row(name: str, k: int, n: int) -> float:
        return r * (k / tp + n) if name in names else 0

    def mlp(inter: int) -> float:
        return column("up_gate_proj", h, 2 * inter) + row("down_proj", inter, h) if inter else 0

    q, kv = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    attention = column("qkv_proj", h, q + 2 * kv) + row("o_proj", q, h)
    routed = 0.0
    for target, inter in (
        ("experts", a.moe_intermediate_size),
        ("vision_experts", a.vision_moe_intermediate_size),
    ):
        if target in targets and inter:
            routed += a.num_experts / ep * r * (2 * h + 3 * inter)  # up_gate (h + 2I) + down (I + h)
    shared = mlp(a.moe_intermediate_size * a.num_shared_experts) if a.num_experts else 0
    return PerLayer(attention, mlp(a.intermediate_size), routed + shared)


def check_layout(a: ModelArgs, p) -> None:
    """Layout rules that need the model's shape: checked before any weight is read, and by plan."""
    if p.sequence_parallel and p.tp > 1 and a.num_moe_layers:
        raise ConfigError(
            "sequence parallelism does not combine with MoE layers (their routing and experts run on "
            "whole sequences); leave it off and split the experts with ep_group: tp",
            key="parallel.sequence_parallel",
        )


def plan(a: ModelArgs, recipe) -> dict:
    check_layout(a, recipe.parallel)
    p, t = recipe.parallel, recipe.train
    c = count(a)
    seq, mbs = recipe.data.max_seq_len, t.micro_batch_size
    half = t.precision in ("bf16", "fp16") or (t.precision == "auto" and t.device != "cpu")
    tp, pp, shard = p.tp, p.pp, p.sharding.degree
    expert_split = p.ep if p.ep > 1 else 1
    moe_share = a.num_moe_layers / a.num_layers
    layers_per_stage = -(-a.num_layers // pp)
    # the first stage also holds the embedding and the vision encoder (and, with pp = 1, the final norm)
    first_only = c.embedding / tp + c.vision / tp + (a.hidden_size if pp == 1 else 0)
    params = _first_stage(a, pp, _split({k: getattr(c, k) for k in PARTS}, tp, expert_split)) + first_only
    vision_experts = layers_per_stage * moe_share * c.vision_experts / expert_split
    part = {
        "vision_tower": c.vision_tower / tp,
        "resampler": c.resampler / tp,
        "vision_experts": vision_experts,
    }
    part["language_model"] = params - sum(part.values())
    trainable = sum(n for name, n in part.items() if name not in recipe.model.freeze)
    if recipe.lora.enabled:
        trainable = _first_stage(a, pp, adapters(a, recipe.lora, tp, expert_split))
        trainable += sum(0.01 * part[t] for t in ("vision_tower", "resampler") if t in recipe.lora.targets)
    # fp32 parameters (autocast casts each op's weight to bf16 on the fly), or LoRA's base quantised
    quantize = recipe.lora.quantize if recipe.lora.enabled else "none"
    stored = _split(stored_bytes(a, quantize, recipe.lora.quantize_group), tp, expert_split)
    weight_bytes = _first_stage(a, pp, stored) + 4 * first_only
    grad_bytes = trainable * 4
    moments = 4 if recipe.optim.moment_dtype == "bfloat16" else 8  # two moments, fp32 or bf16 each
    optim_bytes = trainable * moments / shard  # stage 1: each sharding rank keeps its parameters' moments
    act = 2 if half else 4
    s_b_h = seq * mbs * a.hidden_size
    # Korthikanti eq. 1 (2-byte units): 10 sbh outside the tensor-parallel regions, 24 sbh inside
    outside = 10 * s_b_h * act / 2 / (tp if p.sequence_parallel else 1)
    inside = 24 * s_b_h * act / 2 / tp
    # flash/flashmask attention (fused ops on, half precision: what GPUs run) keeps no S x S matrix; our
    # reference attention keeps [B, N, S, S] scores and probabilities (fp32 + compute dtype)
    flash = half and recipe.model.fused_ops != "off"
    scores = 0 if flash else mbs * a.num_heads / tp * seq * seq * (8 + act)
    full_layer = outside + inside + scores
    in_flight = min(pp, t.grad_accum)  # 1F1B: stage 0 holds up to pp micro-batches
    if p.recompute.enabled:
        layer_input = s_b_h * act / (tp if p.sequence_parallel else 1)
        activations = in_flight * layers_per_stage * layer_input + full_layer
    else:
        activations = in_flight * layers_per_stage * full_layer
    if a.vision is not None and _vision_tower_trains(recipe):
        v = a.vision
        block = 34 * seq * mbs * v.spatial_merge_size**2 * v.hidden_size * act / 2 / tp
        activations += block * (1 + v.depth / 17 if p.recompute.enabled else v.depth)  # input: 2 of 34
    logits = seq * mbs * a.vocab_size / tp * 4 * 2  # fp32 logits and their gradient on the last stage
    if tp == 1 and logits / 2 > KEEP_BYTES:  # the chunked head holds one block and its softmax at a time
        logits = 2 * CHUNK_BYTES
    flops_token = 6 * c.active_per_token + 12 * a.num_layers * seq * a.num_heads * a.head_dim
    return {
        "devices": p.world,
        "total_params_B": total_params(a) / 1e9,
        "active_params_B": c.active_per_token / 1e9,
        "params_per_device_B": params / 1e9,
        "weight_format": "fp32" if quantize == "none" else quantize,
        "weights_GiB": weight_bytes / GiB,
        "grads_GiB": grad_bytes / GiB,
        "optimizer_GiB": optim_bytes / GiB,
        "activations_GiB": activations / GiB,
        "logits_GiB": logits / GiB,
        "total_GiB": (weight_bytes + grad_bytes + optim_bytes + activations + logits) / GiB,
        "train_flops_per_token_G": flops_token / 1e9,
        "tokens_per_step": seq * mbs * t.grad_accum * p.dp * shard,
    }


def _vision_tower_trains(recipe) -> bool:
    if recipe.lora.enabled:
        return "vision_tower" in recipe.lora.targets
    return "vision_tower" not in recipe.model.freeze


def _weights_label(fmt: str) -> str:
    return "weights (fp32)" if fmt == "fp32" else f"weights (frozen base {fmt})"


def render(result: dict, recipe_name: str) -> str:
    rows = [
        ("devices (dp x sharding x tp x pp)", f"{result['devices']}"),
        (
            "parameters (total / active per token)",
            f"{result['total_params_B']:.3f} B / {result['active_params_B']:.3f} B",
        ),
        ("parameters on the fullest device", f"{result['params_per_device_B']:.3f} B"),
        (_weights_label(result["weight_format"]), f"{result['weights_GiB']:.2f} GiB"),
        ("gradients", f"{result['grads_GiB']:.2f} GiB"),
        ("AdamW state", f"{result['optimizer_GiB']:.2f} GiB"),
        ("activations (micro-batches in flight)", f"{result['activations_GiB']:.2f} GiB"),
        ("logits + their gradient (fp32)", f"{result['logits_GiB']:.2f} GiB"),
        ("total per device", f"{result['total_GiB']:.2f} GiB"),
        ("training FLOPs per token", f"{result['train_flops_per_token_G']:.2f} GFLOP"),
        ("tokens per optimizer step", f"{result['tokens_per_step']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join([f"plan for {recipe_name}", *(f"  {k:<{width}}  {v}" for k, v in rows)])


def recipe_plan(recipe, recipe_name: str, flavor: str | None = None) -> str:
    """``erniekit plan``'s report: the recipe's model (or the named ``flavor``) under its parallel layout,
    then what erniekit cannot train in that layout yet."""
    from erniekit.errors import CheckpointError
    from erniekit.models import flavor_args, list_flavors, load_args

    flavor = flavor or recipe.model.flavor
    if flavor:
        model_args = flavor_args(flavor)
    elif recipe.model.path:
        try:
            model_args = load_args(recipe.model.path)
        except CheckpointError as e:
            raise CheckpointError(
                f"{e}; to plan without the weights pass --flavor, one of: {', '.join(list_flavors())}"
            ) from None
    else:
        raise ConfigError("model: the recipe names neither model.path nor model.flavor; pass --flavor")
    lines = [render(plan(model_args, recipe), recipe_name)]
    lines += [f"  note: erniekit cannot train this layout yet: {p}" for p in recipe.unsupported()]
    return "\n".join(lines)
