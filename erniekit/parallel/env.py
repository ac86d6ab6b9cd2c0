"""The process topology of a run: Paddle fleet's hybrid groups built from ``parallel:``.

Axes: dp (replicas), sharding (ZeRO-style, also data-parallel), tp (tensor), pp (pipeline). The data
ranks are dp x sharding: they see different rows; tp and pp ranks of one replica see the same rows.
A one-process run never touches ``paddle.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import paddle

from erniekit.config.core import ConfigError
from erniekit.config.schema import ParallelConfig


@dataclass
class ParallelContext:
    cfg: ParallelConfig
    world: int = 1
    rank: int = 0
    hcg: Any = None  # fleet's HybridCommunicateGroup when world > 1

    # --- coordinates ---------------------------------------------------------------------------------
    def _size(self, axis: str) -> int:
        if self.hcg is None:
            return 1
        return {
            "dp": self.hcg.get_data_parallel_world_size,
            "sharding": self.hcg.get_sharding_parallel_world_size,
            "tp": self.hcg.get_model_parallel_world_size,
            "pp": self.hcg.get_pipe_parallel_world_size,
        }[axis]()

    def _rank(self, axis: str) -> int:
        if self.hcg is None:
            return 0
        return {
            "dp": self.hcg.get_data_parallel_rank,
            "sharding": self.hcg.get_sharding_parallel_rank,
            "tp": self.hcg.get_model_parallel_rank,
            "pp": self.hcg.get_stage_id,
        }[axis]()

    def group(self, axis: str):
        """The process group of an axis, or None when that axis has one rank."""
        if self._size(axis) == 1:
            return None
        return {
            "dp": self.hcg.get_data_parallel_group,
            "sharding": self.hcg.get_sharding_parallel_group,
            "tp": self.hcg.get_model_parallel_group,
            "pp": self.hcg.get_pipe_parallel_group,
        }[axis]()

    @property
    def data_world(self) -> int:
        return self._size("dp") * self._size("sharding")

    @property
    def data_rank(self) -> int:
        return self._rank("dp") * self._size("sharding") + self._rank("sharding")

    @property
    def tp_rank(self) -> int:
        return self._rank("tp")

    @property
    def tp_world(self) -> int:
        return self._size("tp")

    @property
    def pp_rank(self) -> int:
        return self._rank("pp")

    @property
    def pp_world(self) -> int:
        return self._size("pp")

    @property
    def is_main(self) -> bool:
        """The one process that logs and writes shared files."""
        return self.rank == 0

    @property
    def pure_data_parallel(self) -> bool:
        """Only dp replicas (no sharding, tp or pp): gradients are synchronised by the trainer itself."""
        return self.world > 1 and self.data_world == self.world and self._size("sharding") == 1

    # --- collectives on plain numbers ----------------------------------------------------------------
    def sum_over_data(self, values: dict[str, float]) -> dict[str, float]:
        """Sum per-rank counts over the data ranks (every rank gets the totals)."""
        if self.data_world == 1:
            return dict(values)
        import paddle.distributed as dist

        keys = sorted(values)
        t = paddle.to_tensor([float(values[k]) for k in keys], dtype="float64")
        for axis in ("dp", "sharding"):
            if self.group(axis) is not None:
                dist.all_reduce(t, group=self.group(axis))
        return dict(zip(keys, t.tolist()))

    def sum_tensor(self, t) -> None:
        """Sum a tensor over the data ranks, in place (ranks that see different tokens)."""
        import paddle.distributed as dist

        for axis in ("dp", "sharding"):
            if self.group(axis) is not None:
                dist.all_reduce(t, group=self.group(axis))

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank."""
        if self.world == 1:
            return flag
        import paddle.distributed as dist

        t = paddle.to_tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            import paddle.distributed as dist

            dist.barrier()


def launched_world() -> int:
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def init_parallel(cfg: ParallelConfig, grad_accum: int, micro_batch_size: int) -> ParallelContext:
    """Build fleet's hybrid topology for this process (or nothing for one process)."""
    world = launched_world()
    if cfg.world != world:
        raise ConfigError(
            f"dp x sharding.degree x tp x pp = {cfg.dp} x {cfg.sharding.degree} x {cfg.tp} x {cfg.pp} "
            f"= {cfg.world}, but {world} process(es) were launched",
            key="parallel",
        )
    if world == 1:
        return ParallelContext(cfg)
    cpu = not paddle.is_compiled_with_cuda()
    if cpu and cfg.sharding.degree > 1 and cfg.sharding.stage > 1:
        raise ConfigError(
            f"sharding stage {cfg.sharding.stage} needs GPUs: Paddle's stage 2/3 sharding refuses "
            f"CPU devices; use stage 1 on CPU",
            key="parallel.sharding.stage",
        )
    if cfg.sharding.degree > 1 and cfg.sharding.stage > 1:  # GPU
        raise ConfigError(
            f"sharding stage {cfg.sharding.stage} is not wired into erniekit's trainer yet (its gradient "
            f"clipping and checkpoint gathering assume stage 1); use stage 1, with tp/pp/ep for large models",
            key="parallel.sharding.stage",
        )
    if cpu:
        from erniekit.parallel import cpu_compat

        cpu_compat.install()
    from paddle.distributed import fleet

    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {
        "dp_degree": cfg.dp,
        "mp_degree": cfg.tp,
        "pp_degree": cfg.pp,
        "sharding_degree": cfg.sharding.degree,
        # batched p2p needs a calc-stream send/recv that gloo lacks; plain p2p is equivalent
        "pp_configs": {"use_batch_p2p_comm": not cpu},
    }
    strategy.pipeline_configs = {"accumulate_steps": grad_accum, "micro_batch_size": micro_batch_size}
    fleet.init(is_collective=True, strategy=strategy)
    import paddle.distributed as dist

    if cpu:
        cpu_compat.pair_groups()

    return ParallelContext(cfg, world=world, rank=dist.get_rank(), hcg=fleet.get_hybrid_communicate_group())
