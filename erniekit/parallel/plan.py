"""Applying ``parallel:`` to a built model: tensor / expert / pipeline parallelism and recompute.

    model, layout, pipeline = parallelize(model, ctx, recipe)

The layer swaps live beside the model (models/common/parallel.py). Here they are chosen and combined,
and the :class:`~erniekit.parallel.layout.Layout` is built: every tensor this rank holds, under its
single-device name, with how it is split, so checkpoints are layout-independent.
"""

from __future__ import annotations

import paddle
import paddle.distributed as dist
from paddle import nn
from paddle.autograd import PyLayer

from erniekit.config.core import ConfigError
from erniekit.config.schema import Recipe
from erniekit.models.common import parallel as plans
from erniekit.models.common.decoder import CausalLM
from erniekit.parallel.estimate import check_layout
from erniekit.parallel.layout import Layout


def parallelize(model: CausalLM, ctx, recipe: Recipe):
    p = recipe.parallel
    check_layout(model.args, p)
    splits, ep_group = {}, None
    if p.tp > 1:
        splits.update(plans.apply_tensor_parallel(model, ctx))
    if p.ep > 1 and p.ep_group == "tp":
        splits.update(plans.apply_expert_parallel_tp(model, ctx))
    if p.ep > 1 and p.ep_group == "dp":
        ep_splits, ep_group = plans.apply_expert_parallel_dp(model, ctx, p.ep)
        splits.update(ep_splits)
    if p.sequence_parallel:
        plans.apply_sequence_parallel(model, ctx)
    if p.recompute.enabled:
        plans.apply_recompute(model, p.recompute.granularity)
    pipeline = None
    tensors = dict(model.state_dict())
    if p.pp > 1:
        pipeline = Pipeline(model, ctx, recipe)
        owned = {id(t) for t in pipeline.parallel.state_dict().values()}
        tensors = {name: t for name, t in tensors.items() if id(t) in owned}
    return model, Layout(ctx, tensors, splits, model.args, ep_group), pipeline


@paddle.no_grad()
def sync_grads(params: list, ctx) -> None:
    """Gradient synchronisation the trainer owns (before the optimizer step):
    * sequence-parallel norms saw 1/t of the tokens: sum their gradients over the tensor group;
    * pure data parallelism: average over the replicas (fleet's optimizer does it in hybrid layouts);
    * experts split over data ranks: see sync_expert_grads."""
    if ctx.group("tp") is not None:
        for param in params:
            if getattr(param, "sequence_parallel", False) and param.grad is not None:
                dist.all_reduce(param.grad, group=ctx.group("tp"))
    if ctx.pure_data_parallel:
        from paddle.distributed.fleet.utils.hybrid_parallel_util import fused_allreduce_gradients

        fused_allreduce_gradients([p for p in params if not getattr(p, "no_sync", False)], ctx.hcg)
        sync_expert_grads(params, ctx)


@paddle.no_grad()
def sync_expert_grads(params: list, ctx) -> None:
    """Experts split over data ranks got gradient from every rank's tokens, each rank's loss scaled for
    averaging over W data ranks: divide by W, and sum over the ranks holding the same experts."""
    for p in params:
        group = getattr(p, "expert_group", None)
        if group is None or p.grad is None:
            continue
        replicas = ctx.data_world // p.expert_world
        if replicas > 1:
            dist.all_reduce(p.grad, group=_replica_group(ctx, p.expert_world))
        p.grad.scale_(1.0 / ctx.data_world)


_REPLICA_GROUPS: dict = {}


def _replica_group(ctx, ep: int):
    """Data ranks that hold the same experts (the same position in their expert group)."""
    if ep not in _REPLICA_GROUPS:
        groups = [dist.new_group(list(range(i, ctx.data_world, ep))) for i in range(ep)]
        _REPLICA_GROUPS[ep] = groups[ctx.data_rank % ep]
    return _REPLICA_GROUPS[ep]


# --- pipeline parallelism ------------------------------------------------------------------------------


class PipeEmbedding(nn.Layer):
    """First stage: token ids -> hidden states; ids ride along for the masks and rotary positions.
    With tied embeddings the last stage holds it too (fleet shares ``weight`` between the two)."""

    def __init__(self, model: CausalLM, vision: bool = True):
        super().__init__()
        self.embed_tokens = model.embed_tokens
        self.weight = model.embed_tokens.weight
        self.model_ref = [model]  # a list: not registered as a sub-layer
        if vision and model.args.vision is not None:  # the first stage also runs the vision encoder
            self.vision = model.vision

    def forward(self, inputs):
        """(ids, positions, segments[, pixel_values, image_grid_thw]) -> (hidden, positions, segments[,
        token types]): a VL model's micro-batch carries its images, and its MoE layers the token types."""
        input_ids, position_ids, segment_ids, *media = inputs
        if self.model_ref[0].args.vision is None:
            return self.embed_tokens(input_ids), position_ids, segment_ids
        hidden, token_types = self.model_ref[0].embed(input_ids, *media)
        return hidden, position_ids, segment_ids, token_types.astype("int64")


class _AuxLossGrad(PyLayer):
    """Identity on the hidden states whose backward also feeds ``scale`` as the gradient of a MoE layer's
    load-balancing loss: the loss joins the backward pass where it was computed, without travelling
    down the pipeline to the last stage."""

    @staticmethod
    def forward(ctx, hidden, aux, scale):
        ctx.scale = scale
        return hidden.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, paddle.full([], ctx.scale, "float32")


class PipeDecoderLayer(nn.Layer):
    def __init__(self, model: CausalLM, index: int):
        super().__init__()
        self.layer, self.rotary = model.layers[index], model.rotary
        self.aux_scale = 0.0  # d(step loss) / d(this layer's aux loss), set each step
        self.aux_sum = None  # this step's aux losses, for the logged loss

    def forward(self, inputs):
        from erniekit.models.common.attention import AttentionMask

        hidden, position_ids, segment_ids, *types = inputs
        s = position_ids.shape[-1]  # the whole sequence: with sequence parallelism hidden holds a slice
        mask = AttentionMask(s, s, segment_ids)
        out, aux = self.layer(hidden, self.rotary(position_ids), mask, None, types[0] if types else None)
        if aux is not None and self.training:
            self.aux_sum = aux.detach() if self.aux_sum is None else self.aux_sum + aux.detach()
            if self.aux_scale:
                out = _AuxLossGrad.apply(out, aux, self.aux_scale)
        return out, position_ids, segment_ids, *types


class PipeHead(nn.Layer):
    """Last stage: final norm and the LM head (the tied embedding is fleet-shared with the first stage)."""

    def __init__(self, model: CausalLM):
        super().__init__()
        self.norm, self.model_ref = model.norm, [model]  # a list: not registered as a sub-layer
        self.lm_head = model.lm_head

    def forward(self, inputs):
        return self.norm(inputs[0])


class PipeLoss(nn.Layer):
    """Per micro-batch: summed token NLL / the step's tokens, times the micro-batch count (the schedule
    divides each micro-batch loss by it again), so the step loss equals the one-process loss."""

    def __init__(self, model: CausalLM):
        super().__init__()
        self.model_ref = [model]
        self.norm_tokens = 1.0
        self.micro_batches = 1

    def forward(self, hidden, labels):
        from erniekit.ops.cross_entropy import lm_head_nll

        nll = lm_head_nll(hidden, self.model_ref[0], labels)
        return nll.sum() / self.norm_tokens * self.micro_batches


def _pass_through(layer, inputs):
    """The tied embedding's second use: its weight is the LM head (applied in the loss)."""
    return inputs


class Pipeline:
    """The model as a fleet PipelineLayer, trained with fleet's 1F1B (interleaved) schedule."""

    def __init__(self, model: CausalLM, ctx, recipe: Recipe):
        from paddle.distributed import fleet
        from paddle.distributed.fleet.meta_parallel import LayerDesc, PipelineLayer, SharedLayerDesc

        p = recipe.parallel
        self.loss = PipeLoss(model)
        a = model.args
        descs = [LayerDesc(PipeEmbedding, model=model)]
        descs += [LayerDesc(PipeDecoderLayer, model=model, index=i) for i in range(a.num_layers)]
        descs.append(LayerDesc(PipeHead, model=model))
        if a.tie_word_embeddings:  # embedding weight shared by the first and the last stage
            descs[0] = SharedLayerDesc("embed", PipeEmbedding, shared_weight_attr="weight", model=model)
            descs.append(
                SharedLayerDesc(
                    "embed",
                    PipeEmbedding,
                    forward_func=_pass_through,
                    shared_weight_attr="weight",
                    model=model,
                    vision=False,
                )
            )
        chunks = p.pp * p.virtual_pp
        if p.pp_segment == "layer" and a.num_layers % chunks:
            raise ConfigError(
                f"{a.num_layers} decoder layers do not split evenly into pp x virtual_pp = {chunks} "
                f"pipeline chunks; choose degrees that divide it, or pp_segment: uniform",
                key="parallel.pp_segment",
            )
        seg = "layer:PipeDecoderLayer" if p.pp_segment == "layer" else "uniform"
        self.layer = PipelineLayer(
            layers=descs,
            num_stages=p.pp,
            topology=ctx.hcg.topology(),
            loss_fn=self.loss,
            seg_method=seg,
            num_virtual_pipeline_stages=p.virtual_pp if p.virtual_pp > 1 else None,
        )
        self.parallel = fleet.distributed_model(self.layer)
        self.ctx = ctx
        self.decoder_layers = [m for m in self.layer.sublayers() if isinstance(m, PipeDecoderLayer)]
        if a.tie_word_embeddings and ctx.pp_rank > 0:  # count the shared weight once in the gradient norm
            model.embed_tokens.weight.is_firstly_shared = False

    def forward_backward(
        self, batches: list[dict], norm: dict[str, float], optimizer
    ) -> tuple[float, dict[str, float]]:
        """The step's loss (NLL plus the weighted MoE load-balancing loss, as one process logs it)."""
        cat = {k: paddle.concat([b[k] for b in batches]) for k in ("input_ids", "segment_ids", "labels")}
        if self.loss.model_ref[0].args.vision is None:
            inputs = (
                cat["input_ids"],
                paddle.concat([b["position_ids"] for b in batches]),
                cat["segment_ids"],
            )
        else:  # fleet hands list entries out one per micro-batch: [3, B, S] positions, images of any count
            keys = ("position_ids", "pixel_values", "image_grid_thw")
            per_batch = [[b.get(k) for b in batches] for k in keys]
            inputs = (cat["input_ids"], per_batch[0], cat["segment_ids"], *per_batch[1:])
        data = [inputs, cat["labels"]]
        self.loss.norm_tokens, self.loss.micro_batches = norm["tokens"], len(batches)
        a = self.loss.model_ref[0].args
        # one process: loss += coef * mean over MoE layers (of each micro-batch) / micro-batches
        coef = a.router_aux_loss_coef if a.num_moe_layers else 0.0
        for layer in self.decoder_layers:
            layer.aux_sum = None
            layer.aux_scale = coef / (a.num_moe_layers * len(batches)) if a.num_moe_layers else 0.0
        self.parallel.accumulate_steps = len(batches)
        data = self.parallel._prepare_training(data, optimizer, None)
        loss = float(self.parallel.forward_backward_pipeline(data, None).numpy().reshape(-1)[0])  # no scaler
        if not a.num_moe_layers:
            return loss, {}
        sums = [layer.aux_sum for layer in self.decoder_layers if layer.aux_sum is not None]
        aux = paddle.to_tensor(float(paddle.add_n(sums)) if sums else 0.0, dtype="float32")
        dist.all_reduce(aux, group=self.ctx.group("pp"))  # every stage's MoE layers
        aux_mean = float(aux) / (a.num_moe_layers * len(batches))
        return loss + coef * aux_mean, {"aux_loss": aux_mean}
