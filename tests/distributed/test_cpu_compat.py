"""The CPU/gloo compatibility layer patches private fleet internals of one Paddle version: this test fails
loudly when Paddle changes under it (a different version, or a patched name that moved)."""

import paddle
import pytest

from erniekit.parallel import cpu_compat


def test_pinned_paddle_version():
    assert paddle.__version__.split("+")[0] == cpu_compat.SUPPORTED_PADDLE, (
        "Paddle changed: re-verify fleet's CPU behaviour (shared/notes/paddle-cpu-lab.md), update cpu_compat"
    )


def test_patched_internals_still_exist():
    import paddle.distributed as dist
    import paddle.distributed.collective as coll
    import paddle.distributed.fleet.meta_parallel.tensor_parallel as tp
    from paddle.base import core
    from paddle.distributed.fleet.layers.mpu import mp_ops

    for name in (
        "c_identity_eager",
        "mp_allreduce_eager",
        "c_split_eager",
        "_c_concat",
        "_c_softmax_with_cross_entropy",
        "_c_identity",
        "_mp_allreduce",
    ):
        assert hasattr(mp_ops, name), name
    for cls in (mp_ops.c_identity_eager, mp_ops.mp_allreduce_eager, mp_ops.c_split_eager):
        assert hasattr(cls, "forward") and hasattr(cls, "backward")
    assert hasattr(tp, "broadcast_input_data")
    assert hasattr(coll, "_new_process_group_impl")
    assert hasattr(core, "TCPStore") and hasattr(core.ProcessGroupGloo, "create")
    assert hasattr(dist, "ParallelEnv")
    import inspect

    for name, peer in (("send", "dst"), ("isend", "dst"), ("recv", "src"), ("irecv", "src")):  # pair_groups
        assert list(inspect.signature(getattr(dist, name)).parameters)[:3] == ["tensor", peer, "group"], name


def test_refuses_other_versions(monkeypatch):
    monkeypatch.setattr(paddle, "__version__", "3.4.0")
    with pytest.raises(RuntimeError, match="written for Paddle 3.3.1, found 3.4.0"):
        cpu_compat._check_version()
