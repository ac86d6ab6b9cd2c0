"""The real CLI on the debug DPO recipe: held-out reward accuracy climbs above 0.9."""

import subprocess
import sys

from erniekit.trainer.metrics import read_metrics


def test_debug_dpo_learns_the_preference(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "erniekit",
            "train",
            "ernie4_5/debug_dpo",
            f"train.output_dir={out}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "logging.progress=none",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_metrics(out / "metrics.jsonl")
    evals = [r for r in records if "eval/rewards/accuracy" in r]
    assert evals[0]["step"] == 0 and evals[0]["eval_loss"] == __import__("pytest").approx(0.6931, abs=1e-3)
    assert evals[-1]["eval/rewards/accuracy"] > 0.9
    train = [r for r in records if "rewards/accuracy" in r]
    assert train[-1]["rewards/margin"] > 0 and {
        "rewards/chosen",
        "rewards/rejected",
        "logps/chosen",
        "logps/rejected",
    } <= set(train[-1])
