"""Which part of the single-device model this rank holds, and moving whole tensors in and out of it.

Every parallel plan keeps our parameter names (``layers.3.self_attn.qkv_proj.weight``) and only changes
shapes: a tensor-parallel weight is a slice along one axis, a pipeline stage holds some layers, a
sharding rank holds some optimizer states. A :class:`Layout` records this, so checkpoints always store
the single-device model (and its optimizer state) whatever layout wrote them, and load into any other:
tp=2, pp=2 writes what tp=1 reads, and the reverse.

Fused parameters are split per part: rank r of ``qkv_proj`` holds [q_r | k_r | v_r], not a contiguous
third of [q | k | v]; ``blocks`` lists the parts' full widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import paddle
import paddle.distributed as dist

from erniekit.tensors import to_numpy


@dataclass(frozen=True)
class Split:
    axis: int
    blocks: tuple[int, ...] = ()  # full widths of fused parts along ``axis``; () = one part
    over: str = "tp"  # the group the pieces are spread over: "tp", or "ep" (experts over data ranks)


def take_shard(full: np.ndarray, split: Split | None, rank: int, world: int) -> np.ndarray:
    if split is None or world == 1:
        return full
    blocks = split.blocks or (full.shape[split.axis],)
    parts = np.split(full, np.cumsum(blocks)[:-1], axis=split.axis)
    return np.concatenate([np.array_split(p, world, axis=split.axis)[rank] for p in parts], axis=split.axis)


def join_shards(shards: list[np.ndarray], split: Split | None) -> np.ndarray:
    if split is None or len(shards) == 1:
        return shards[0]
    world = len(shards)
    blocks = split.blocks or (sum(s.shape[split.axis] for s in shards),)
    local = [b // world for b in blocks]
    cut = np.cumsum(local)[:-1]
    per_rank = [np.split(s, cut, axis=split.axis) for s in shards]
    return np.concatenate(
        [np.concatenate([per_rank[r][b] for r in range(world)], axis=split.axis) for b in range(len(blocks))],
        axis=split.axis,
    )


class Layout:
    """This rank's tensors under single-device names, with how tensor parallelism splits them."""

    def __init__(
        self,
        ctx,
        tensors: dict[str, paddle.Tensor],
        splits: dict[str, Split] | None = None,
        model_args=None,
        ep_group=None,
    ):
        self.ctx, self.tensors, self.splits, self.model_args = ctx, tensors, dict(splits or {}), model_args
        self.groups = {"tp": ctx.group("tp"), "ep": ep_group}

    def _coords(self, over: str) -> tuple[int, int]:
        group = self.groups[over]
        return (0, 1) if group is None else (group.rank, group.nranks)

    # --- model state ---------------------------------------------------------------------------------
    def local_arrays(self, names) -> dict[str, np.ndarray]:
        return {n: to_numpy(self.tensors[n]) for n in names if n in self.tensors}

    def gather(self, local: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """Whole tensors from every rank's pieces: the full dict on the main rank, None elsewhere."""
        ctx = self.ctx
        full = dict(local)
        for over in ("tp", "ep"):
            group = self.groups[over]
            if group is None:
                continue
            for name in sorted(full):
                split = self._split(name, full[name], whole=False)
                if split is not None and split.over == over:
                    shards: list = []
                    dist.all_gather_object(shards, full[name], group=group)
                    full[name] = join_shards(shards, split)
        if ctx.group("pp") is not None:  # stages hold different tensors: take the union
            stages: list = []
            dist.all_gather_object(stages, full if ctx.tp_rank == 0 else {}, group=ctx.group("pp"))
            full = {k: v for stage in stages for k, v in stage.items()}
        return full if ctx.is_main else None

    def scatter(self, full: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This rank's pieces of whole tensors (for the tensors this rank holds)."""
        out = {}
        for name, array in full.items():
            if _param_name(name) not in self.tensors:
                continue
            split = self._split(name, array, whole=True)
            rank, world = self._coords(split.over) if split is not None else (0, 1)
            out[name] = take_shard(array, split, rank, world)
        return out

    def _split(self, name: str, array: np.ndarray, whole: bool) -> Split | None:
        """How ``array`` (a parameter, or an optimizer slot of one) is split; None if replicated. Slots
        shaped like their parameter (moments, master weights) split with it; others (beta powers) do not."""
        split = self.splits.get(_param_name(name))
        if split is None:
            return None
        local = list(self.tensors[_param_name(name)].shape)
        if whole:
            local[split.axis] *= self._coords(split.over)[1]
        return split if list(array.shape) == local else None

    # --- optimizer state ("<name>::<slot>" keys, see trainer/checkpoint.py) --------------------------
    def gather_optimizer(self, local: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        ctx = self.ctx
        if ctx.group("sharding") is not None:  # each sharding rank holds the state of its own parameters
            parts: list = []
            dist.all_gather_object(parts, local, group=ctx.group("sharding"))
            local = {k: v for part in parts for k, v in part.items()}
        return self.gather(local)


def _param_name(key: str) -> str:
    """``qkv_proj.weight::moment1_0`` -> ``qkv_proj.weight`` (slots shaped like it split like it)."""
    return key.partition("::")[0]
