"""``erniekit plan``: parameters, optimizer state, activations and FLOPs per device for a recipe.

Arithmetic on the model shape and the degrees (nothing is allocated): check that a recipe fits before
booking a cluster. Memory per device, for the rank holding the most (the first pipeline stage, which
also holds the embedding):
* weights: fp32 (4 B/param); mixed precision autocasts each op's weight, so there is no second copy;
* gradients: 4 B per trainable parameter; AdamW state 8 B per trainable parameter, divided by the
  sharding degree (stage 1); LoRA trains ~1% of the parameters; ``model.freeze`` parts train none;
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

from dataclasses import dataclass

from erniekit.config.core import ConfigError
from erniekit.models.common.args import ModelArgs
from erniekit.ops.cross_entropy import CHUNK_BYTES, KEEP_BYTES

GiB = 1024**3


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
    layers_per_stage = -(-a.num_layers // pp)
    moe_share = a.num_moe_layers / a.num_layers
    per_layer = (
        c.attention / tp
        + (1 - moe_share) * c.dense_mlp / tp
        + moe_share * (c.experts / expert_split + c.shared / tp)
    )
    # the first stage also holds the embedding and the vision encoder (and, with pp = 1, the final norm)
    params = (
        layers_per_stage * per_layer + c.embedding / tp + c.vision / tp + (a.hidden_size if pp == 1 else 0)
    )
    vision_experts = layers_per_stage * moe_share * c.vision_experts / expert_split
    part = {
        "vision_tower": c.vision_tower / tp,
        "resampler": c.resampler / tp,
        "vision_experts": vision_experts,
    }
    part["language_model"] = params - sum(part.values())
    trainable = sum(n for name, n in part.items() if name not in recipe.model.freeze)
    if recipe.lora.enabled:
        trainable = params * 0.01  # adapters: ~1% at typical ranks
    weight_bytes = params * 4  # fp32 parameters; autocast casts each op's weight to bf16 on the fly
    grad_bytes = trainable * 4
    optim_bytes = trainable * 8 / shard  # stage 1: each sharding rank keeps its parameters' moments
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


def render(result: dict, recipe_name: str) -> str:
    rows = [
        ("devices (dp x sharding x tp x pp)", f"{result['devices']}"),
        (
            "parameters (total / active per token)",
            f"{result['total_params_B']:.3f} B / {result['active_params_B']:.3f} B",
        ),
        ("parameters on the fullest device", f"{result['params_per_device_B']:.3f} B"),
        ("weights", f"{result['weights_GiB']:.2f} GiB"),
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
