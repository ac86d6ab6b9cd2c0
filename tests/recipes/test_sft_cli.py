"""The real CLI on the debug SFT recipe: the loss falls; Ctrl-C or SIGTERM saves the running step."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from erniekit.trainer.metrics import read_metrics
from tests.helpers import wait_for_step


def cli(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "erniekit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_debug_sft_recipe_loss_falls(tmp_path):
    out = tmp_path / "run"
    proc = cli(
        "train",
        "ernie4_5/debug_sft",
        f"train.output_dir={out}",
        "train.max_steps=30",
        f"data.cache_dir={tmp_path / 'cache'}",
        "logging.progress=plain",
    )
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    records = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert len(records) == 30
    first, last = records[0]["loss"], sum(r["loss"] for r in records[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    evals = [r["eval_loss"] for r in read_metrics(out / "metrics.jsonl") if "eval_loss" in r]
    assert evals[-1] < evals[0]
    assert (out / "checkpoint-30" / "trainer_state.json").is_file()
    assert "threads: OMP_NUM_THREADS=" in stderr  # the runtime settings are logged
    assert "Traceback" not in stderr


def start_long_run(tmp_path, *overrides):
    """A run that would go on for ever, returned once it has logged 3 steps."""
    out = tmp_path / "run"
    proc = cli(
        "train",
        "ernie4_5/debug_sft",
        f"train.output_dir={out}",
        "train.max_steps=100000",
        "checkpoint.every=0",
        f"data.cache_dir={tmp_path / 'cache'}",
        "logging.progress=plain",
        *overrides,
    )
    wait_for_step(proc, out, 3)
    return proc, out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_saves_the_running_step_and_exits_cleanly(tmp_path, signum):
    """Ctrl-C, or a scheduler's SIGTERM before it preempts the job."""
    proc, out = start_long_run(tmp_path)
    os.kill(proc.pid, signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr
    saved = sorted(out.glob("checkpoint-*"))
    assert len(saved) == 1 and not saved[0].name.endswith(".partial")
    state = json.loads((saved[0] / "trainer_state.json").read_text())
    logged = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert state["step"] == max(logged) >= 3


def test_second_ctrl_c_quits_at_once_without_a_torn_checkpoint(tmp_path):
    proc, out = start_long_run(tmp_path, "train.grad_accum=32")  # steps of about a second
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.3)  # two signals before Python's handler runs count as one
    os.kill(proc.pid, signal.SIGINT)  # well inside the step the first one lets finish
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGINT, stderr[-3000:]
    assert "press Ctrl-C again to quit without saving" in stderr
    assert not list(out.glob("checkpoint-*"))
