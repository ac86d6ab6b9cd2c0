"""Global gradient-norm clipping that is right under every parallel layout, and reports the norm.

The optimizer calls it inside ``step()``, after fleet has synchronised gradients (data-parallel
all-reduce, sharding reduce-to-owner), so it sees final gradients. The squared norm is summed:
* over the tensor-parallel group for split (``is_distributed``) parameters; replicated ones count once;
* over pipeline stages (each holds different layers; a weight shared by two stages counts once);
* over sharding ranks (each clips only the parameters it owns);
* over the expert group for experts split across data ranks (each rank holds different experts).
It is deliberately not a ``ClipGradByGlobalNorm`` subclass: fleet replaces those with its own clip,
whose norm we could not log.
"""

from __future__ import annotations

import paddle
import paddle.distributed as dist
from paddle.nn.clip import ClipGradBase

from erniekit import ops


class GlobalNormClip(ClipGradBase):
    def __init__(self, max_norm: float, ctx=None):
        super().__init__()
        self.max_norm, self.ctx = max_norm, ctx
        self.last_norm: float | None = None

    def __str__(self) -> str:
        return f"GlobalNormClip(max_norm={self.max_norm})"

    @paddle.no_grad()
    def _dygraph_clip(self, params_grads):
        # a shared weight's second copy counts once
        kept = [
            (p, g)
            for p, g in params_grads
            if g is not None and getattr(p, "is_firstly_shared", True) is not False
        ]
        sums = ops.sum_of_squares([g for _, g in kept]) if kept else paddle.zeros([0], "float64")
        kinds = [_kind(p) for p, _ in kept]
        split, replicated, experts = (
            sums[[i for i, k in enumerate(kinds) if k == kind]].sum().astype("float32")
            if kind in kinds
            else paddle.zeros([], "float32")
            for kind in ("split", "replicated", "experts")
        )
        expert_group = next((p.expert_group for (p, _), k in zip(kept, kinds) if k == "experts"), None)
        ctx = self.ctx
        if ctx is not None and ctx.group("tp") is not None:
            dist.all_reduce(split, group=ctx.group("tp"))
        if expert_group is not None:
            dist.all_reduce(experts, group=expert_group)
        total = split + replicated + experts
        for axis in ("pp", "sharding"):
            if ctx is not None and ctx.group(axis) is not None:
                dist.all_reduce(total, group=ctx.group(axis))
        norm = float(total.sqrt())
        self.last_norm = norm
        if self.max_norm > 0 and norm > self.max_norm:
            scale = self.max_norm / (norm + 1e-6)
            for _, g in params_grads:
                if g is not None:
                    g.scale_(scale)
        return params_grads


def _kind(p) -> str:
    """How a parameter's squared norm is summed across ranks (see the module docstring)."""
    if getattr(p, "expert_group", None) is not None:
        return "experts"
    return "split" if getattr(p, "is_distributed", False) else "replicated"
