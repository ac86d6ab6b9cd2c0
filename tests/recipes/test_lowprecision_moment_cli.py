"""optim.moment_dtype=bfloat16 through the real CLI: a full-SFT run stopped and resumed from its checkpoint
continues with the same losses, weights and bf16 moment bits; sharding stage 1 keeps each rank's share
in bf16 and computes what one process does."""

import numpy as np
import pytest
from safetensors.numpy import load_file

from erniekit.trainer.metrics import read_metrics
from tests.distributed.test_parallel import assert_same, launch, single
from tests.helpers import erniekit

BF16 = "optim.moment_dtype=bfloat16"


def is_bf16(a: np.ndarray) -> bool:
    """Checkpoints widen bf16 to fp32 exactly: the low 16 bits of every value are zero."""
    return not (np.ascontiguousarray(a, np.float32).view(np.uint32) & 0xFFFF).any()


def train(out, cache, *extra):
    return erniekit(
        "train",
        "ernie4_5/debug_sft",
        f"train.output_dir={out}",
        f"data.cache_dir={cache}",
        BF16,
        "train.max_steps=6",
        "train.eval_every=0",
        "checkpoint.every=3",
        "checkpoint.keep=0",
        "logging.progress=none",
        "logging.visualdl=false",
        *extra,
    )


def losses(out):
    return [
        (r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(out / "metrics.jsonl") if "loss" in r
    ]


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_one(tmp_path):
    straight, resumed, cache = tmp_path / "straight", tmp_path / "resumed", tmp_path / "cache"
    train(straight, cache)
    optim = load_file(str(straight / "checkpoint-3" / "optimizer.safetensors"))
    moments = {k: a for k, a in optim.items() if "::moment" in k}
    assert moments and all(is_bf16(a) for a in moments.values())
    assert not all(
        is_bf16(a) for k, a in load_file(str(straight / "checkpoint-3" / "model.safetensors")).items()
    )

    train(resumed, cache, f"train.resume={straight / 'checkpoint-3'}")
    assert losses(resumed) == losses(straight)[3:]  # steps 4-6, exactly
    for name in ("model.safetensors", "optimizer.safetensors"):
        want = load_file(str(straight / "checkpoint-6" / name))
        got = load_file(str(resumed / "checkpoint-6" / name))
        assert want.keys() == got.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name}: {k}")


@pytest.mark.slow
def test_sharding_stage1_keeps_bf16_moments_and_matches_one_process(tmp_path):
    distributed = launch(
        tmp_path,
        2,
        "parallel.sharding.degree=2",
        "train.micro_batch_size=2",
        "train.grad_accum=2",
        BF16,
        "checkpoint.final=true",
    )
    assert_same(distributed, single(tmp_path, "train.micro_batch_size=4", "train.grad_accum=2", BF16))
    saved = load_file(str(tmp_path / "dist" / "run" / "checkpoint-5" / "optimizer.safetensors"))
    moments = {k: a for k, a in saved.items() if "::moment" in k}
    assert len(moments) == 2 * len({k.partition("::")[0] for k in saved})  # both ranks' shares
    assert all(is_bf16(a) for a in moments.values())
