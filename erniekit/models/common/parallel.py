"""Parallel plans for the common decoder: swap layers for Paddle fleet's parallel ones, from the outside.

ERNIE 4.5 and the Llama family are both this decoder (their ``model.py`` only fill in ModelArgs), so
their plan lives here, beside the math it splits.

The model stays single-device math (decoder.py); these functions replace its sub-layers in place and
return how each parameter is split (``Split``), so checkpoints always hold whole tensors.

Tensor parallelism (Megatron style, fleet's ``mp`` group of size t):
* ``embed_tokens`` -> ``VocabParallelEmbedding`` (vocabulary rows split); a tied LM head then yields
  vocabulary-parallel logits, scored with fleet's parallel cross-entropy.
* ``qkv_proj`` / ``up_gate_proj`` -> ``ColumnParallelLinear``: rank r holds [q_r | k_r | v_r] and
  [gate_r | up_r], so its heads and SwiGLU halves stay together; attention runs on N/t query and K/t kv
  heads (both must divide by t).
* ``o_proj`` / ``down_proj`` -> ``RowParallelLinear`` (inputs split, outputs all-reduced).
* LoRA layers split the same way: B with the columns of a column-parallel weight, A with the rows of a
  row-parallel one; the other factor is replicated.
* MoE: the router is replicated; shared experts split like an MLP; routed experts are split over the
  tensor group when ``ep_group: tp`` (each rank computes its experts for all tokens, outputs summed).

Expert parallelism over data ranks (``ep_group: dp``) sends each token to the rank that owns its expert
with an all-to-all (Paddle's on GPU; ordered send/recv on gloo, which has none) and back.

Pipeline parallelism describes the model as a fleet ``PipelineLayer`` (embedding, decoder layers, head)
run by fleet's 1F1B schedule (interleaved with ``virtual_pp``), see :class:`Pipeline`.
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn.functional as F
from paddle import nn
from paddle.autograd import PyLayer

from erniekit.models.common.decoder import CausalLM, DecoderLayer
from erniekit.models.common.mlp import MLP
from erniekit.models.common.moe import Experts, MoE
from erniekit.parallel.layout import Split, take_shard
from erniekit.peft.lora import LoRAExperts, LoRALinear

# --- tensor parallelism ------------------------------------------------------------------------------


def _mp_ops():
    from paddle.distributed.fleet.layers.mpu import mp_ops

    return mp_ops


def _set(param: paddle.Tensor, full: np.ndarray, split: Split | None, rank: int, world: int) -> None:
    param.set_value(paddle.to_tensor(take_shard(full, split, rank, world)).astype(param.dtype))


class ColumnParallelLoRA(LoRALinear):
    """A LoRA layer whose base weight and B are split by output columns (A replicated).

    The low-rank activation z = x A enters B through ``c_identity`` so A's gradient sums every rank's
    columns; the base path gets its own ``c_identity`` on x (A's path already yields the full dx)."""

    group = None

    def forward(self, x):
        ops = _mp_ops()
        y = F.linear(ops._c_identity(x, group=self.group), self.weight, self.bias)
        if not self.enabled:
            return y
        h = self.dropout(x) if self.dropout is not None else x
        z = ops._c_identity(paddle.matmul(h, self.lora_A), group=self.group)
        return y + paddle.matmul(z, self.delta_b()) * self.scale


class RowParallelLoRA(LoRALinear):
    """A LoRA layer whose base weight and A are split by input rows (B replicated). The rank-r activation
    x A is all-reduced before B, so B sees (and its gradient covers) the full sum."""

    group = None

    def forward(self, x):
        ops = _mp_ops()

        def allreduce(t):
            return ops._mp_allreduce(t, group=self.group, use_calc_stream=True, use_model_parallel=True)

        y = allreduce(paddle.matmul(x, self.weight))
        if self.enabled:
            h = self.dropout(x) if self.dropout is not None else x
            y = y + paddle.matmul(allreduce(paddle.matmul(h, self.lora_A)), self.delta_b()) * self.scale
        return y if self.bias is None else y + self.bias


def _column(layer, blocks: tuple[int, ...], ctx, prefix: str, splits: dict) -> nn.Layer:
    from paddle.distributed.fleet.meta_parallel import ColumnParallelLinear

    rank, world, group = ctx.tp_rank, ctx.tp_world, ctx.group("tp")
    in_f, out_f = layer.weight.shape
    split_w = Split(1, blocks)
    splits[f"{prefix}.weight"] = split_w
    if layer.bias is not None:
        splits[f"{prefix}.bias"] = Split(0, blocks)
    if isinstance(layer, LoRALinear):
        layer.__class__ = ColumnParallelLoRA
        layer.group = group
        full_w, full_b, full_lb = (
            t.numpy() if t is not None else None for t in (layer.weight, layer.bias, layer.lora_B)
        )
        full_mask = layer.mask.numpy()
        layer.weight = layer.create_parameter([in_f, out_f // world], is_bias=False)
        _set(layer.weight, full_w, split_w, rank, world)
        layer.weight.stop_gradient = True
        if full_b is not None:
            layer.bias = layer.create_parameter([out_f // world], is_bias=True)
            _set(layer.bias, full_b, Split(0, blocks), rank, world)
            layer.bias.stop_gradient = True
        lora_b = layer.create_parameter(
            [layer.rank, out_f // world],
            attr=paddle.ParamAttr(learning_rate=layer.lora_B.optimize_attr["learning_rate"]),
        )
        _set(lora_b, full_lb, split_w, rank, world)
        layer.lora_B = lora_b
        layer.register_buffer(
            "mask", paddle.to_tensor(take_shard(full_mask, Split(0, blocks), rank, world)), persistable=False
        )
        splits[f"{prefix}.lora_B"] = split_w
        for p in (layer.weight, layer.lora_B) + ((layer.bias,) if layer.bias is not None else ()):
            p.is_distributed = True
        return layer
    new = ColumnParallelLinear(in_f, out_f, has_bias=layer.bias is not None, gather_output=False)
    _set(new.weight, layer.weight.numpy(), split_w, rank, world)
    if layer.bias is not None:
        _set(new.bias, layer.bias.numpy(), Split(0, blocks), rank, world)
    return _frozen_like(new, layer)


def _frozen_like(new: nn.Layer, old: nn.Layer) -> nn.Layer:
    """Keep the old layer's trainability (LoRA runs freeze non-adapter weights)."""
    new.weight.stop_gradient = old.weight.stop_gradient
    if getattr(new, "bias", None) is not None:
        new.bias.stop_gradient = old.bias.stop_gradient
    return new


def _row(layer, ctx, prefix: str, splits: dict) -> nn.Layer:
    from paddle.distributed.fleet.meta_parallel import RowParallelLinear

    rank, world, group = ctx.tp_rank, ctx.tp_world, ctx.group("tp")
    in_f, out_f = layer.weight.shape
    splits[f"{prefix}.weight"] = Split(0)
    if isinstance(layer, LoRALinear):
        layer.__class__ = RowParallelLoRA
        layer.group = group
        full_w, full_la = layer.weight.numpy(), layer.lora_A.numpy()
        layer.weight = layer.create_parameter([in_f // world, out_f])
        _set(layer.weight, full_w, Split(0), rank, world)
        layer.weight.stop_gradient = True
        layer.lora_A = layer.create_parameter([in_f // world, layer.rank])
        _set(layer.lora_A, full_la, Split(0), rank, world)
        splits[f"{prefix}.lora_A"] = Split(0)
        layer.weight.is_distributed = layer.lora_A.is_distributed = True
        return layer
    new = RowParallelLinear(in_f, out_f, has_bias=layer.bias is not None, input_is_parallel=True)
    _set(new.weight, layer.weight.numpy(), Split(0), rank, world)
    if layer.bias is not None:
        new.bias.set_value(layer.bias)
    return _frozen_like(new, layer)


def _mlp(mlp: MLP, ctx, prefix: str, splits: dict) -> None:
    inter = mlp.up_gate_proj.weight.shape[1] // 2
    if inter % ctx.tp_world:
        raise ValueError(f"{prefix}: intermediate size {inter} is not divisible by tp={ctx.tp_world}")
    mlp.up_gate_proj = _column(mlp.up_gate_proj, (inter, inter), ctx, f"{prefix}.up_gate_proj", splits)
    mlp.down_proj = _row(mlp.down_proj, ctx, f"{prefix}.down_proj", splits)


def apply_tensor_parallel(model: CausalLM, ctx) -> dict[str, Split]:
    from paddle.distributed.fleet.meta_parallel import VocabParallelEmbedding

    a, t, rank = model.args, ctx.tp_world, ctx.tp_rank
    for what, n in (
        ("num_heads", a.num_heads),
        ("num_kv_heads", a.num_kv_heads),
        ("vocab_size", a.vocab_size),
    ):
        if n % t:
            raise ValueError(f"tensor parallelism: {what}={n} is not divisible by tp={t}")
    splits: dict[str, Split] = {"embed_tokens.weight": Split(0)}
    old = model.embed_tokens
    model.embed_tokens = VocabParallelEmbedding(a.vocab_size, a.hidden_size)
    _set(model.embed_tokens.weight, old.weight.numpy(), Split(0), rank, t)
    model.embed_tokens.weight.stop_gradient = old.weight.stop_gradient
    for i, layer in enumerate(model.layers):
        attn, prefix = layer.self_attn, f"layers.{i}"
        q, kv = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
        attn.qkv_proj = _column(attn.qkv_proj, (q, kv, kv), ctx, f"{prefix}.self_attn.qkv_proj", splits)
        attn.o_proj = _row(attn.o_proj, ctx, f"{prefix}.self_attn.o_proj", splits)
        attn.num_heads, attn.num_kv_heads = a.num_heads // t, a.num_kv_heads // t
        if isinstance(layer.mlp, MoE):
            if layer.mlp.shared_experts is not None:
                _mlp(layer.mlp.shared_experts, ctx, f"{prefix}.mlp.shared_experts", splits)
        else:
            _mlp(layer.mlp, ctx, f"{prefix}.mlp", splits)
    if model.lm_head is not None:
        model.lm_head = _column(model.lm_head, (), ctx, "lm_head", splits)
    model.vocab_group = ctx.group("tp")
    if a.vision is not None:
        _vision_tensor_parallel(model, ctx, splits)
    return splits


def _vision_tensor_parallel(model, ctx, splits: dict) -> None:
    """A vision-language model's encoder, Megatron style too: each block's qkv column-split by heads
    ([q_r | k_r | v_r]) and its output projection row-split; every two-layer MLP (block MLPs, ERNIE VL's
    resampler stages, PaddleOCR-VL's projector) column- then row-split. The LayerNorms after them see
    whole (all-reduced) activations; the resampler's projection to the decoder width stays replicated."""
    v, t = model.args.vision, ctx.tp_world
    if v.num_heads % t:
        raise ValueError(f"tensor parallelism: vision num_heads={v.num_heads} is not divisible by tp={t}")
    d = v.hidden_size

    def mlp(owner, first: str, second: str, prefix: str) -> None:
        setattr(owner, first, _column(getattr(owner, first), (), ctx, f"{prefix}.{first}", splits))
        setattr(owner, second, _row(getattr(owner, second), ctx, f"{prefix}.{second}", splits))

    for i, block in enumerate(model.vision.tower.blocks):
        prefix = f"vision.tower.blocks.{i}"
        block.attn.qkv = _column(block.attn.qkv, (d, d, d), ctx, f"{prefix}.attn.qkv", splits)
        block.attn.proj = _row(block.attn.proj, ctx, f"{prefix}.attn.proj", splits)
        block.attn.num_heads //= t
        mlp(block.mlp, "fc1", "fc2", f"{prefix}.mlp")
    for name, stage in model.vision.named_sublayers():
        if name in ("resampler.spatial_linear", "resampler.temporal_linear"):
            mlp(stage, "fc1", "fc2", f"vision.{name}")
        elif name == "projector":
            mlp(stage, "linear_1", "linear_2", "vision.projector")


# --- experts split over the tensor group (each rank computes its experts for every token) ---------------


class _ExpertShard:
    """Mixed into Experts / LoRAExperts: this rank holds experts [offset, offset + E_local)."""

    def forward(self, x_th, experts_tk, weights_tk):
        ops = _mp_ops()
        # tokens and combine weights are replicated; each rank's gradient covers only its experts: sum them
        x_th = ops._c_identity(x_th, group=self.group)
        weights_tk = ops._c_identity(weights_tk, group=self.group)
        k = experts_tk.shape[1]
        local = experts_tk.reshape([-1]) - self.offset
        slots = paddle.nonzero((local >= 0) & (local < self.num_experts)).reshape(
            [-1]
        )  # my (token, expert) pairs
        tokens = slots // k
        y_slots = Experts.forward(
            self,
            paddle.gather(x_th, tokens),
            paddle.gather(local, slots).unsqueeze(-1),
            paddle.gather(weights_tk.reshape([-1]), slots).unsqueeze(-1),
        )
        y = paddle.index_add(paddle.zeros_like(x_th), tokens, 0, y_slots)
        return ops._mp_allreduce(y, group=self.group, use_calc_stream=True, use_model_parallel=True)


def _shard_experts(experts: Experts, ctx, prefix: str, splits: dict) -> None:
    t, rank = ctx.tp_world, ctx.tp_rank
    if experts.num_experts % t:
        raise ValueError(f"{prefix}: {experts.num_experts} experts are not divisible by ep={t}")
    local = experts.num_experts // t
    for name, tensor in list(experts.named_parameters(include_sublayers=False)):
        full = tensor.numpy()
        new = experts.create_parameter(
            [local, *full.shape[1:]],
            attr=paddle.ParamAttr(learning_rate=tensor.optimize_attr["learning_rate"]),
        )
        _set(new, full, Split(0), rank, t)
        new.stop_gradient = tensor.stop_gradient
        new.is_distributed = True
        setattr(experts, name, new)
        splits[f"{prefix}.{name}"] = Split(0)
    base = LoRAExperts if isinstance(experts, LoRAExperts) else Experts
    experts.__class__ = type(f"TensorParallel{base.__name__}", (_ExpertShard, base), {})
    experts.num_experts, experts.offset, experts.group = local, rank * local, ctx.group("tp")


def _expert_sets(model: CausalLM):
    """(prefix, Experts) of every routed set: each MoE layer's, text and (VL models) vision."""
    for i, layer in enumerate(model.layers):
        if isinstance(layer.mlp, MoE):
            for name in ("experts", "vision_experts"):
                experts = getattr(layer.mlp, name)
                if experts is not None:
                    yield f"layers.{i}.mlp.{name}", experts


def apply_expert_parallel_tp(model: CausalLM, ctx) -> dict[str, Split]:
    splits: dict[str, Split] = {}
    for prefix, experts in _expert_sets(model):
        _shard_experts(experts, ctx, prefix, splits)
    return splits


# --- experts split over data ranks: all-to-all token exchange -------------------------------------------


def _exchange(x: paddle.Tensor, send: list[int], recv: list[int], group) -> paddle.Tensor:
    """Uneven all-to-all along axis 0: ``send[p]`` rows go to group rank p, ``recv[p]`` arrive from it."""
    ranks = group.ranks
    me = group.rank
    if paddle.is_compiled_with_cuda():
        out = paddle.empty([sum(recv), *x.shape[1:]], dtype=x.dtype)
        dist.alltoall_single(out, x, in_split_sizes=send, out_split_sizes=recv, group=group)
        return out
    # gloo has no all-to-all: exchange with each peer in a fixed order (the lower rank sends first)
    chunks = paddle.split(x, send, axis=0) if x.shape[0] else [x[:0]] * len(send)
    out = []
    for p in range(len(ranks)):
        if p == me:
            out.append(chunks[p].clone())
            continue
        buf = paddle.empty([recv[p], *x.shape[1:]], dtype=x.dtype)
        if me < p and send[p]:
            dist.send(chunks[p].contiguous(), dst=ranks[p], group=group)
        if recv[p]:
            dist.recv(buf, src=ranks[p], group=group)
        if me > p and send[p]:
            dist.send(chunks[p].contiguous(), dst=ranks[p], group=group)
        out.append(buf)
    return paddle.concat(out, axis=0)


class _AllToAll(PyLayer):
    @staticmethod
    def forward(ctx, x, send, recv, group):
        ctx.send, ctx.recv, ctx.group = send, recv, group
        return _exchange(x, send, recv, group)

    @staticmethod
    def backward(ctx, dy):
        return _exchange(dy, ctx.recv, ctx.send, ctx.group)


class _ExpertParallelDP:
    """Mixed into Experts / LoRAExperts: experts live on ranks of a data-parallel group."""

    def forward(self, x_th, experts_tk, weights_tk):
        k, group, world = experts_tk.shape[1], self.group, self.group.nranks
        flat = experts_tk.reshape([-1])
        order = paddle.argsort(flat, stable=True)
        token_of_slot = order // k
        expert_sorted = paddle.gather(flat, order)
        owner = expert_sorted // self.num_experts
        send = paddle.bincount(owner, minlength=world)
        counts: list = []
        dist.all_gather(counts, send, group=group)  # row p: what rank p sends to each rank
        send_list = send.tolist()
        recv_list = [int(c[group.rank]) for c in counts]
        x_recv = _AllToAll.apply(paddle.gather(x_th, token_of_slot), send_list, recv_list, group)
        e_recv = (
            _exchange(expert_sorted.unsqueeze(-1), send_list, recv_list, group).reshape([-1]) - self.offset
        )
        y_recv = Experts.forward(
            self, x_recv, e_recv.unsqueeze(-1), paddle.ones([e_recv.shape[0], 1], x_th.dtype)
        )
        y_sorted = _AllToAll.apply(y_recv, recv_list, send_list, group)
        w = paddle.gather(weights_tk.reshape([-1]), order).unsqueeze(-1).astype(x_th.dtype)
        return paddle.index_add(paddle.zeros_like(x_th), token_of_slot, 0, y_sorted * w)


def apply_expert_parallel_dp(model: CausalLM, ctx, ep: int) -> tuple[dict[str, Split], object]:
    """Split experts over consecutive groups of ``ep`` data ranks; returns the splits and the group."""
    groups = [dist.new_group(list(range(g * ep, (g + 1) * ep))) for g in range(ctx.data_world // ep)]
    group = groups[ctx.data_rank // ep]
    rank = ctx.data_rank % ep
    splits: dict[str, Split] = {}
    for prefix, experts in _expert_sets(model):
        if experts.num_experts % ep:
            raise ValueError(f"{prefix}: {experts.num_experts} experts are not divisible by ep={ep}")
        local = experts.num_experts // ep
        for name, tensor in list(experts.named_parameters(include_sublayers=False)):
            new = experts.create_parameter(
                [local, *tensor.shape[1:]],
                attr=paddle.ParamAttr(learning_rate=tensor.optimize_attr["learning_rate"]),
            )
            _set(new, tensor.numpy(), Split(0), rank, ep)
            new.stop_gradient = tensor.stop_gradient
            new.expert_group, new.expert_world = group, ep  # gradients: see sync_expert_grads
            new.no_sync = True
            setattr(experts, name, new)
            splits[f"{prefix}.{name}"] = Split(0, over="ep")
        base = LoRAExperts if isinstance(experts, LoRAExperts) else Experts
        experts.__class__ = type(f"ExpertParallel{base.__name__}", (_ExpertParallelDP, base), {})
        experts.num_experts, experts.offset, experts.group = local, rank * local, group
        experts.collective = True  # every rank of the group joins each exchange, with or without tokens
    return splits, group


# --- sequence parallelism --------------------------------------------------------------------------------
# Between tensor-parallel regions the residual stream is split along the sequence (axis 1 of [B, S, H]):
# norms run on 1/t of the tokens; a column-parallel region starts with an all-gather along S (whose
# backward reduce-scatters), a row-parallel region ends with a reduce-scatter instead of an all-reduce.


def _seq_slice(x, group):
    return paddle.split(x, group.nranks, axis=1)[group.rank].clone()


def _seq_all_gather(x, group):
    parts: list = []
    dist.all_gather(parts, x.contiguous(), group=group)
    return paddle.concat(parts, axis=1)


def _seq_reduce_scatter(x, group):
    if paddle.is_compiled_with_cuda():
        out = paddle.empty([x.shape[0], x.shape[1] // group.nranks, *x.shape[2:]], dtype=x.dtype)
        parts = [p.contiguous() for p in paddle.split(x, group.nranks, axis=1)]
        dist.reduce_scatter(out, parts, group=group)
        return out
    x = x.clone()  # gloo has no reduce_scatter: all-reduce, then keep this rank's slice
    dist.all_reduce(x, group=group)
    return _seq_slice(x, group)


class _ScatterSeq(PyLayer):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _seq_slice(x, group)

    @staticmethod
    def backward(ctx, dy):
        return _seq_all_gather(dy, ctx.group)


class _GatherSeq(PyLayer):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _seq_all_gather(x, group)

    @staticmethod
    def backward(ctx, dy):
        return _seq_reduce_scatter(dy, ctx.group)


class _ReduceScatterSeq(PyLayer):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _seq_reduce_scatter(x, group)

    @staticmethod
    def backward(ctx, dy):
        return _seq_all_gather(dy, ctx.group)


class _SeqColumn:
    """Mixed into a column-parallel layer whose input is already gathered along the sequence: a plain
    matmul (fleet's own forward would also all-reduce the input gradient; the gather's backward does)."""

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        if isinstance(self, LoRALinear) and self.enabled:
            h = self.dropout(x) if self.dropout is not None else x
            y = y + paddle.matmul(paddle.matmul(h, self.lora_A), self.delta_b()) * self.scale
        return y


class _SeqRow:
    """Mixed into a row-parallel layer: partial outputs are reduce-scattered along the sequence."""

    def forward(self, x):
        y = paddle.matmul(x, self.weight)
        if isinstance(self, LoRALinear) and self.enabled:
            h = self.dropout(x) if self.dropout is not None else x
            y = y + paddle.matmul(paddle.matmul(h, self.lora_A), self.delta_b()) * self.scale
        y = _ReduceScatterSeq.apply(y, self.seq_group)
        return y if self.bias is None else y + self.bias


def _mix(layer, mixin, group) -> None:
    layer.__class__ = type(f"Sequence{type(layer).__name__}", (mixin, type(layer)), {})
    layer.seq_group = group
    if isinstance(layer, LoRALinear):  # the replicated factor's gradient is partial: summed over the group
        (layer.lora_A if mixin is _SeqColumn else layer.lora_B).sequence_parallel = True


def apply_sequence_parallel(model: CausalLM, ctx) -> None:
    """Make a tensor-parallel decoder sequence-parallel (after apply_tensor_parallel). Parameter names
    do not change: the first layer's input is scattered (after a VL model splices its images into the
    embeddings) and each norm's output gathered by forward hooks; column/row layers change their
    forward (class mixins)."""
    group = ctx.group("tp")  # (MoE layers are refused earlier: erniekit.parallel.estimate.check_layout)
    model.layers[0].register_forward_pre_hook(
        lambda layer, inputs: (_ScatterSeq.apply(inputs[0], group), *inputs[1:])
    )
    norms = [model.norm] + [
        n for layer in model.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)
    ]
    for norm in norms:
        norm.register_forward_post_hook(lambda layer, inputs, out: _GatherSeq.apply(out, group))
        norm.weight.sequence_parallel = True  # each rank saw 1/t of the tokens: gradients summed over t
    for layer in model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        _mix(attn.qkv_proj, _SeqColumn, group)
        _mix(mlp.up_gate_proj, _SeqColumn, group)
        _mix(attn.o_proj, _SeqRow, group)
        _mix(mlp.down_proj, _SeqRow, group)
    model.sequence_parallel = True


# --- activation recomputation ------------------------------------------------------------------------


def apply_recompute(model: CausalLM, granularity: str) -> None:
    """Keep only each block's input and recompute the rest in the backward pass: every decoder layer
    (full) or its attention (core_attn), and a VL model's vision blocks likewise (their input is up to
    4 patches per image token, so they hold more activations than the decoder when they train)."""
    from paddle.distributed.fleet.utils import recompute

    def wrap(layer) -> None:
        forward = layer.forward
        layer.forward = lambda *args, _f=forward, **kw: recompute(_f, *args, use_reentrant=False, **kw)

    vision = list(model.vision.tower.blocks) if model.args.vision is not None else []
    for layer in [*model.layers, *vision]:
        wrap(layer if granularity == "full" else getattr(layer, "self_attn", None) or layer.attn)


__all__ = [
    "DecoderLayer",
    "apply_expert_parallel_dp",
    "apply_expert_parallel_tp",
    "apply_recompute",
    "apply_tensor_parallel",
]
