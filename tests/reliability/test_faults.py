"""Faults on real processes: kill -9 mid-training and mid-save, a dead rank, a full disk.

Each run is the real CLI in a child process (``faulty.py`` injects only the trigger of a fault; the
external kill needs nothing injected). The reference is an uninterrupted run with the same seed: after
the fault and ``train.resume=auto``, the final weights are bitwise equal and the logged losses are the
same, each step exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from erniekit.trainer.metrics import read_metrics
from tests.helpers import wait_for_step

FAULTY = str(Path(__file__).with_name("faulty.py"))
STEPS = 6


def overrides(out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "ernie4_5/debug_sft",
        f"train.output_dir={out}",
        f"data.cache_dir={cache}",
        f"train.max_steps={STEPS}",
        "train.grad_accum=1",
        "train.eval_every=0",
        "data.max_seq_len=128",
        "checkpoint.every=2",
        "checkpoint.keep=0",
        "logging.progress=plain",
        "logging.visualdl=false",
        *extra,
    ]


def train(out: Path, cache: Path, *extra: str, fault: str | None = None, timeout: float = 300):
    cmd = [FAULTY, fault] if fault else ["-m", "erniekit"]
    proc = subprocess.run(
        [sys.executable, *cmd, "train", *overrides(out, cache, *extra)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


def final_weights(out: Path) -> dict[str, np.ndarray]:
    return load_file(str(out / f"checkpoint-{STEPS}" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: its losses and final weights, and where it wrote files."""
    root = tmp_path_factory.mktemp("reference")
    out, cache = root / "out", root / "cache"
    proc = train(out, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [p for p in root.rglob("*") if p.is_file()]
    return {"losses": losses(out), "weights": final_weights(out), "root": root, "written": written}


def assert_same_as_reference(out: Path, reference: dict) -> None:
    got = losses(out)
    assert [s for s, _ in got] == list(range(1, STEPS + 1)), got  # no step twice, none skipped
    assert got == reference["losses"]
    weights = final_weights(out)
    assert weights.keys() == reference["weights"].keys()
    assert all(np.array_equal(weights[k], reference["weights"][k]) for k in weights)


def test_reference_writes_only_inside_its_output_and_cache_dirs(reference):
    root = reference["root"]
    outside = [p for p in reference["written"] if not p.is_relative_to(root / "out") and
               not p.is_relative_to(root / "cache")]  # fmt: skip
    assert not outside
    suffixes = {p.suffix for p in (root / "out").rglob("*") if p.is_file()}
    assert suffixes <= {".safetensors", ".json", ".jsonl", ".yaml"}, suffixes  # nothing pickled


def test_kill_9_at_a_random_step_then_resume_equals_an_uninterrupted_run(tmp_path, reference):
    out, cache = tmp_path / "out", tmp_path / "cache"
    kill_at = random.Random(os.getpid()).randint(3, STEPS - 1)  # after checkpoint-2
    cmd = [sys.executable, "-m", "erniekit", "train", *overrides(out, cache)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, out, kill_at)
    assert proc.poll() is None, f"finished before the kill at step {kill_at}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    resumed = train(out, cache, "train.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resum" in resumed.stderr.lower()
    assert_same_as_reference(out, reference)


def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, reference):
    out, cache = tmp_path / "out", tmp_path / "cache"
    proc = train(out, cache, fault="kill-in-save:4")
    assert proc.returncode == -signal.SIGKILL
    assert (out / "checkpoint-4.partial").is_dir() and not (out / "checkpoint-4").exists()
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    resumed = train(out, cache, "train.resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-2" in resumed.stderr  # what resume picked
    assert not (out / "checkpoint-4.partial").exists()  # the partial one is cleaned up
    assert_same_as_reference(out, reference)


def test_disk_full_before_training_is_a_clear_error(tmp_path):
    proc = train(tmp_path / "out", tmp_path / "cache", fault="disk-full")
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "not writable (File too large)" in last, last
    assert "Traceback" not in proc.stderr


def test_disk_full_during_a_save_keeps_the_last_good_checkpoint(tmp_path, reference):
    out, cache = tmp_path / "out", tmp_path / "cache"
    proc = train(out, cache, fault="disk-full-after:2")
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"saving {out / 'checkpoint-4'} failed" in last and "checkpoint-2, is intact" in last, last
    assert "Traceback" not in proc.stderr
    assert not list(out.glob("*.partial"))
    resumed = train(out, cache, "train.resume=auto")  # space is back
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_as_reference(out, reference)


def test_a_dead_rank_ends_the_job_in_bounded_time_and_resume_works(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(*extra: str, fault: str | None = None):
        script = [FAULTY, fault] if fault else [str(Path(__file__).parents[2] / "erniekit" / "__main__.py")]
        cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
               "--log_dir", str(tmp_path / f"logs-{fault or 'resume'}"), *script, "train",
               *overrides(out, cache, "parallel.dp=2", *extra)]  # fmt: skip
        start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
        return proc, time.time() - start

    proc, seconds = launch(fault="kill-after-step:3@1")
    assert proc.returncode != 0
    assert seconds < 180, f"the surviving rank took {seconds:.0f} s to go"
    # (missing once in a full CI run: the job's output and the surviving rank 0's log say why next time)
    rank_log = tmp_path / "logs-kill-after-step:3@1" / "workerlog.0"
    said = (
        proc.stdout[-3000:]
        + proc.stderr[-3000:]
        + (rank_log.read_text()[-3000:] if rank_log.is_file() else "")
    )
    assert (out / "checkpoint-2" / "trainer_state.json").is_file(), said
    resumed, _ = launch("train.resume=auto")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert [s for s, _ in losses(out)] == list(range(1, STEPS + 1))
    assert (out / f"checkpoint-{STEPS}" / "trainer_state.json").is_file()
