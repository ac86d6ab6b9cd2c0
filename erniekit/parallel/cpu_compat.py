"""Let Paddle 3.3.1's fleet tensor and pipeline parallelism run on CPU processes (gloo).

Fleet's TP layers call collectives with ``use_calc_stream`` flags and C ops (``c_identity``, ``c_split``,
``c_concat``, ``c_softmax_with_cross_entropy``) that exist only for GPU/XPU; its pipeline reads a device id
CPU builds never set, and gloo sub-groups share one key-value store whose unprefixed keys collide. This
module swaps those few internals for the same math on plain synchronous gloo collectives (measured in
shared/notes/paddle-cpu-lab.md §3: TP and PP losses equal one process). Nothing changes semantics, and
nothing of it is used on GPU builds: :func:`install` refuses to run there.

Gloo tags each point-to-point message with a per-group operation counter, so a send between two
ranks of a larger group only matches its receive when both ranks happen to have issued the same number
of operations on that group (measured: in a 4-rank world, 0->1 then 1->2 hangs). :func:`pair_groups`
gives every pair of ranks its own two-rank group and routes send/recv through it, where the counters
advance in step by construction. Pipelines of more than two stages and all-to-all over more than two
ranks rely on it.

It patches private fleet internals, so it is pinned: :func:`install` stops with a clear error on any
other Paddle version, and ``tests/distributed/test_cpu_compat.py`` checks the patched names still exist.
"""

from __future__ import annotations

import os
import socket

import paddle
import paddle.distributed as dist
from paddle.autograd import PyLayer

SUPPORTED_PADDLE = "3.3.1"
_state = {"installed": False}


def _check_version() -> None:
    version = paddle.__version__.split("+")[0]
    if version != SUPPORTED_PADDLE:
        raise RuntimeError(
            f"erniekit.parallel.cpu_compat was written for Paddle {SUPPORTED_PADDLE}, found {version}; "
            f"re-verify fleet's CPU behaviour and update this module before running TP/PP on CPU"
        )


# --- 1. tensor-parallel PyLayers: the same math on synchronous gloo collectives ---------------------


def _identity_fwd(ctx, x, group, skip_c_identity_dynamic=False):
    ctx.group = group
    return x if skip_c_identity_dynamic else x.clone()


def _identity_bwd(ctx, dy):
    dist.all_reduce(dy, group=ctx.group)
    return dy


def _allreduce_fwd(ctx, x, group, use_calc_stream=True, use_model_parallel=True, op=None, skip=False):
    ctx.skip = skip
    dist.all_reduce(x, group=group)
    return x


def _allreduce_bwd(ctx, dy):
    return dy if ctx.skip else dy.clone()


def _split_fwd(ctx, x, group, rank, nranks):
    ctx.group = group
    return paddle.split(x, nranks, axis=-1)[rank].clone()


def _split_bwd(ctx, dy):
    parts = []
    dist.all_gather(parts, dy, group=ctx.group)
    return paddle.concat(parts, axis=-1)


class _Concat(PyLayer):  # ColumnParallelLinear(gather_output=True)
    @staticmethod
    def forward(ctx, x, group):
        ctx.rank, ctx.n = group.rank, group.nranks
        parts = []
        dist.all_gather(parts, x, group=group)
        return paddle.concat(parts, axis=-1)

    @staticmethod
    def backward(ctx, dy):
        return paddle.split(dy, ctx.n, axis=-1)[ctx.rank].clone()


class _VocabParallelCE(PyLayer):  # ParallelCrossEntropy: softmax over vocabulary shards
    @staticmethod
    def forward(ctx, logits, label, group, ignore_index):
        vp = logits.shape[-1]
        x = logits.astype("float32")
        m = x.max(axis=-1, keepdim=True)
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
        e = (x - m).exp()
        s = e.sum(axis=-1, keepdim=True)
        dist.all_reduce(s, group=group)
        local = label.astype("int64") - group.rank * vp
        inside = ((local >= 0) & (local < vp)).astype("float32")
        idx = paddle.clip(local, 0, vp - 1)
        picked = paddle.take_along_axis(x - m, idx, axis=-1) * inside
        dist.all_reduce(picked, group=group)
        valid = (label != ignore_index).astype("float32")
        ctx.save_for_backward(e / s, idx, inside, valid)
        return ((s.log() - picked) * valid).astype(logits.dtype)

    @staticmethod
    def backward(ctx, dloss):
        softmax, idx, inside, valid = ctx.saved_tensor()
        onehot = paddle.nn.functional.one_hot(idx.squeeze(-1), softmax.shape[-1]) * inside
        return ((softmax - onehot) * dloss.astype("float32") * valid).astype(dloss.dtype)


def install() -> None:
    """Apply the patches (idempotent). Call in every rank before ``fleet.init``."""
    if _state["installed"]:
        return
    if paddle.is_compiled_with_cuda():
        raise RuntimeError("cpu_compat is for CPU builds of Paddle; GPU builds run fleet unpatched")
    _check_version()
    import paddle.distributed.collective as coll
    import paddle.distributed.fleet.meta_parallel.tensor_parallel as tp
    from paddle.base import core
    from paddle.distributed.fleet.layers.mpu import mp_ops

    mp_ops.c_identity_eager.forward = staticmethod(_identity_fwd)
    mp_ops.c_identity_eager.backward = staticmethod(_identity_bwd)
    mp_ops.mp_allreduce_eager.forward = staticmethod(_allreduce_fwd)
    mp_ops.mp_allreduce_eager.backward = staticmethod(_allreduce_bwd)
    mp_ops.c_split_eager.forward = staticmethod(_split_fwd)
    mp_ops.c_split_eager.backward = staticmethod(_split_bwd)

    original_concat = mp_ops._c_concat

    def c_concat(x, group=None):
        if paddle.in_dynamic_mode() and group is not None and group.nranks > 1:
            return _Concat.apply(x, group)
        return original_concat(x, group)

    mp_ops._c_concat = c_concat
    original_ce = mp_ops._c_softmax_with_cross_entropy

    def c_softmax_with_cross_entropy(logits, label, group=None, return_softmax=False, ignore_index=-100):
        if paddle.in_dynamic_mode() and group is not None and not return_softmax:
            if len(label.shape) == len(logits.shape) - 1:
                label = label.unsqueeze(-1)
            return _VocabParallelCE.apply(logits, label, group, ignore_index)
        return original_ce(logits, label, group, return_softmax, ignore_index)

    mp_ops._c_softmax_with_cross_entropy = c_softmax_with_cross_entropy

    # 2. distributed_model(TP model) broadcasts inputs with a GPU-only helper
    def broadcast_input_data(hcg, *inputs, **kwargs):
        group, src = hcg.get_model_parallel_group(), hcg.get_model_parallel_group_src_rank()
        for t in list(inputs) + list(kwargs.values()):
            if isinstance(t, paddle.Tensor):
                dist.broadcast(t, src=src, group=group)
        return inputs, kwargs

    tp.broadcast_input_data = broadcast_input_data

    # 3. PipelineLayer reads ParallelEnv().device_id, which CPU builds never set
    dist.ParallelEnv._device_id = 0

    # 4. one TCPStore per gloo sub-group: the shared store's keys "0", "1", .. collide across groups
    stores = {}
    original_new_group = coll._new_process_group_impl

    def new_process_group(backend, store, rank, world_size, group_name, pg_options, group_id=0, **kw):
        if backend != "gloo" or group_id == 0:
            return original_new_group(
                backend, store, rank, world_size, group_name, pg_options, group_id=group_id, **kw
            )
        host = os.environ["PADDLE_MASTER"].split(":")[0]
        # the group's first rank takes a port the OS says is free and publishes it in the shared store
        # (fixed offsets from the master port fell in the ephemeral range and sometimes were taken)
        key = f"erniekit/gloo-group-port/{group_id}"
        if rank == 0:
            port = _free_port(host)
            store.set(key, str(port))  # before the server: its constructor waits for every member
            stores[group_id] = core.TCPStore(host, port, True, world_size, 120)
        else:
            store.wait(key)
            port = int(store.get(key))
            stores[group_id] = core.TCPStore(host, port, False, world_size, 120)
        return core.ProcessGroupGloo.create(stores[group_id], rank, world_size, group_id)

    coll._new_process_group_impl = new_process_group
    _state["installed"] = True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --- 5. point-to-point through two-rank groups ----------------------------------------------------


def pair_groups() -> None:
    """Create a two-rank group for every pair of ranks and route send/recv/isend/irecv through it.

    Collective: every rank calls it after ``fleet.init``, in the same order. Nothing to do for 2 ranks.
    """
    world, me = dist.get_world_size(), dist.get_rank()
    if world <= 2 or "pairs" in _state:
        return
    pairs = {}
    for a in range(world):
        for b in range(a + 1, world):
            group = dist.new_group([a, b])
            if me in (a, b):
                pairs[b if me == a else a] = group
    _state["pairs"] = pairs

    def routed(fn, peer_arg):
        def call(tensor, peer=0, group=None, *rest, **kwargs):
            peer, group = kwargs.pop(peer_arg, peer), kwargs.pop("group", group)
            if group is None or group.nranks > 2:
                group = pairs[peer]
            return fn(tensor, peer, group, *rest, **kwargs)

        return call

    for name, peer_arg in (("send", "dst"), ("isend", "dst"), ("recv", "src"), ("irecv", "src")):
        setattr(dist, name, routed(getattr(dist, name), peer_arg))
