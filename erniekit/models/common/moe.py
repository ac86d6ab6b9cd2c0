"""Mixture of experts as ERNIE 4.5 defines it: fp32 softmax router, bias-corrected top-k, shared experts.

Legend: T tokens, H hidden, E experts, k experts per token, I expert intermediate size.

Routing (as the HF reference): ``probs = softmax(x @ W_router)`` in float32; experts are *selected* by
``probs + e_score_correction_bias`` but *weighted* by their plain ``probs``, renormalised over the k
chosen (sum clamped at ``moe_norm_min``).

Experts run dropless: the T*k (token, expert) assignments are sorted by expert, every expert applies its
SwiGLU MLP to its one contiguous segment (:func:`erniekit.ops.grouped_mlp`: a grouped GEMM on GPU), and
results are scattered back weighted. No capacity padding and no Python loop over tokens. Dropping
tokens over a per-expert capacity happens only when configured (``model.moe_capacity_factor``).

Multimodal ERNIE 4.5 (VL) isolates modalities: a second routed set (``vision_gate`` + ``vision_experts``,
narrower experts) serves image and video tokens, chosen by the token types the model derives from the
input ids, never learned; the shared experts see every token.

The auxiliary load-balancing loss (Switch Transformer, https://arxiv.org/abs/2101.03961) is returned
separately so the trainer can weight and log it: ``E * sum_e f_e * P_e`` with f_e the fraction of
assignments routed to e and P_e its mean router probability (1.0 for a perfectly uniform router).
"""

from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn

from erniekit import ops
from erniekit.models.common.args import ModelArgs
from erniekit.models.common.mlp import MLP


class Router(nn.Layer):
    def __init__(self, hidden_size: int, num_experts: int, top_k: int, norm_min: float, std: float):
        super().__init__()
        self.top_k, self.norm_min = top_k, norm_min
        self.weight = self.create_parameter(
            [hidden_size, num_experts], dtype="float32", default_initializer=nn.initializer.Normal(0.0, std)
        )
        self.register_buffer("e_score_correction_bias", paddle.zeros([num_experts], "float32"))

    def forward(self, x_th: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        """-> probs [T, E] (fp32), chosen experts [T, k] (int64), their weights [T, k] (fp32)."""
        probs = F.softmax(paddle.matmul(x_th.astype("float32"), self.weight), axis=-1)
        _, experts = paddle.topk(probs + self.e_score_correction_bias, self.top_k, axis=-1)
        weights = paddle.take_along_axis(probs, experts, axis=-1)
        weights = weights / paddle.clip(weights.sum(axis=-1, keepdim=True), min=self.norm_min)
        return probs, experts, weights


class Experts(nn.Layer):
    """E SwiGLU MLPs stored stacked: up_gate_proj [E, H, 2I], down_proj [E, I, H]."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, std: float):
        super().__init__()
        init = nn.initializer.Normal(0.0, std)
        self.num_experts = num_experts
        self.capacity_factor: float | None = None  # None: dropless (see set_capacity)
        self.up_gate_proj = self.create_parameter(
            [num_experts, hidden_size, 2 * intermediate_size], default_initializer=init
        )
        self.down_proj = self.create_parameter(
            [num_experts, intermediate_size, hidden_size], default_initializer=init
        )

    def stacked_weights(self) -> tuple[paddle.Tensor, paddle.Tensor]:
        """up_gate [E, H, 2I] and down [E, I, H] as the experts apply them (LoRA adds its deltas)."""
        return self.up_gate_proj, self.down_proj

    def forward(
        self, x_th: paddle.Tensor, experts_tk: paddle.Tensor, weights_tk: paddle.Tensor
    ) -> paddle.Tensor:
        if not paddle.in_dynamic_mode():
            return self._forward_traced(x_th, experts_tk, weights_tk)
        if x_th.shape[0] == 0:  # an expert-parallel rank that received no tokens
            return x_th * 0
        k = experts_tk.shape[1]
        flat = experts_tk.reshape([-1])
        order = paddle.argsort(flat, stable=True)  # assignment slots grouped by expert, tokens in order
        counts = paddle.bincount(flat, minlength=self.num_experts).tolist()
        if self.capacity_factor is not None:
            order, counts = self._drop_over_capacity(order, counts, x_th.shape[0] * k)
        token_of_slot = order // k
        y_sorted = ops.grouped_mlp(paddle.gather(x_th, token_of_slot), counts, *self.stacked_weights())
        w = paddle.gather(weights_tk.reshape([-1]), order).unsqueeze(-1).astype(x_th.dtype)
        return paddle.index_add(paddle.zeros_like(x_th), token_of_slot, 0, y_sorted * w)

    def _drop_over_capacity(self, order, counts: list[int], slots: int):
        """Token dropping (GShard/Switch): each expert keeps its first ``ceil(factor * T * k / E)``
        assignments in token order; the rest contribute nothing (the residual carries those tokens)."""
        capacity = math.ceil(self.capacity_factor * slots / self.num_experts)
        kept, starts = [], 0
        for n in counts:
            kept.append(paddle.arange(starts, starts + min(n, capacity)))
            starts += n
        return paddle.gather(order, paddle.concat(kept)), [min(n, capacity) for n in counts]

    def _forward_traced(self, x_th, experts_tk, weights_tk) -> paddle.Tensor:
        """The same computation without reading counts back to Python, for static graphs (export):
        each expert gathers its tokens with a data-dependent index instead of a known segment."""
        k = experts_tk.shape[1]
        flat, weights = experts_tk.reshape([-1]), weights_tk.reshape([-1]).astype(x_th.dtype)
        up_gate, down = (paddle.split(w, self.num_experts) for w in self.stacked_weights())
        y = paddle.zeros_like(x_th)
        for e in range(self.num_experts):
            slots = paddle.nonzero(flat == e).reshape([-1])
            tokens = slots // k
            h = ops.swiglu(paddle.matmul(paddle.gather(x_th, tokens), up_gate[e].squeeze(0)))
            out = paddle.matmul(h, down[e].squeeze(0))
            y = paddle.index_add(y, tokens, 0, out * paddle.gather(weights, slots).unsqueeze(-1))
        return y


def set_capacity(model: nn.Layer, factor: float | None) -> None:
    """Token dropping at ``factor`` x the even share of assignments per expert (None: dropless)."""
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, Experts):
            layer.capacity_factor = factor


class MoE(nn.Layer):
    def __init__(self, args: ModelArgs):
        super().__init__()
        std = args.initializer_range
        self.num_experts = args.num_experts
        self.gate = Router(args.hidden_size, args.num_experts, args.experts_per_token, args.moe_norm_min, std)
        self.experts = Experts(args.num_experts, args.hidden_size, args.moe_intermediate_size, std)
        self.vision_gate = self.vision_experts = None
        if args.vision_moe_intermediate_size:
            k, norm_min = args.experts_per_token, args.moe_norm_min
            self.vision_gate = Router(args.hidden_size, args.num_experts, k, norm_min, std)
            self.vision_experts = Experts(
                args.num_experts, args.hidden_size, args.vision_moe_intermediate_size, std
            )
        self.shared_experts = None
        if args.num_shared_experts:
            inter = args.moe_intermediate_size * args.num_shared_experts
            self.shared_experts = MLP(args.hidden_size, inter, args.linear_bias, std)
        # assignments per expert since the last correction-bias update (see update_correction_bias)
        self.register_buffer("expert_usage", paddle.zeros([args.num_experts], "float32"), persistable=False)
        if self.vision_experts is not None:
            self.register_buffer(
                "vision_usage", paddle.zeros([args.num_experts], "float32"), persistable=False
            )

    def routed_sets(self) -> list[tuple[Router, Experts, paddle.Tensor]]:
        """(router, experts, usage counter) of each routed set: text first, then vision if present."""
        sets = [(self.gate, self.experts, self.expert_usage)]
        if self.vision_experts is not None:
            sets.append((self.vision_gate, self.vision_experts, self.vision_usage))
        return sets

    def forward(
        self, x: paddle.Tensor, token_types: paddle.Tensor | None = None
    ) -> tuple[paddle.Tensor, paddle.Tensor]:
        """x [B, S, H]; token_types [B, S] (> 0: image/video) picks the routed set of each token."""
        shape = x.shape
        x_th = x.reshape([-1, shape[-1]])
        if self.vision_experts is None or token_types is None:
            y, probs, counts = self._route(self.gate, self.experts, self.expert_usage, x_th)
        else:
            y, probs, counts = self._route_by_modality(x_th, token_types.reshape([-1]) > 0)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x_th)
        fraction = counts / counts.sum()  # counts sum to tokens x k
        aux = self.num_experts * (fraction * probs.mean(axis=0)).sum()
        return y.reshape(shape), aux

    def _route(self, gate: Router, experts: Experts, usage: paddle.Tensor, x_th: paddle.Tensor):
        """-> output [T, H], router probabilities [T, E], assignments per expert [E]."""
        probs, chosen, weights = gate(x_th)
        counts = F.one_hot(chosen.reshape([-1]), self.num_experts).sum(axis=0)
        if self.training:
            with paddle.no_grad():
                usage.add_(counts.astype(usage.dtype))  # in place: ``+=`` would rebind a new tensor
        return experts(x_th, chosen, weights), probs, counts

    def _route_by_modality(self, x_th: paddle.Tensor, vision: paddle.Tensor):
        """Text rows through the text set, image/video rows through the vision set; one aux loss over
        all rows, each counted by the router that chose its experts (as transformers does)."""
        y, probs, counts = paddle.zeros_like(x_th), [], []
        for (gate, experts, usage), mask in zip(self.routed_sets(), (~vision, vision)):
            rows = paddle.nonzero(mask).reshape([-1])
            if rows.shape[0] == 0:
                if getattr(
                    experts, "collective", False
                ):  # experts over ranks: join the exchange empty-handed
                    k = gate.top_k
                    experts(x_th[:0], paddle.zeros([0, k], "int64"), paddle.zeros([0, k], "float32"))
                continue
            out, p, c = self._route(gate, experts, usage, paddle.gather(x_th, rows))
            y = paddle.index_add(y, rows, 0, out)
            probs.append(p)
            counts.append(c)
        return y, paddle.concat(probs), paddle.add_n(counts)


@paddle.no_grad()
def expert_usage(model: nn.Layer) -> list[paddle.Tensor]:
    """Every routed set's assignment counter (since the last correction-bias update)."""
    return [usage for layer in model.sublayers(include_self=True) if isinstance(layer, MoE)
            for _, _, usage in layer.routed_sets()]  # fmt: skip


def update_correction_bias(model: nn.Layer, rate: float, reduce_usage=None) -> None:
    """Auxiliary-loss-free balancing (ERNIE 4.5): nudge each expert's selection bias toward even load.

    ``bias += rate * sign(mean_usage - usage)`` per MoE layer, using the assignments counted since the
    previous call; ``reduce_usage`` (e.g. an all-reduce over data-parallel ranks) sees global counts.
    """
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, MoE):
            for gate, _, usage in layer.routed_sets():
                if reduce_usage is not None:
                    reduce_usage(usage)
                gate.e_score_correction_bias.add_(rate * paddle.sign(usage.mean() - usage))
                usage.zero_()
