"""The real CLI on the debug PPO recipe: value head calibrates, reward rises, export drops the value head."""

import subprocess
import sys

from erniekit.trainer.metrics import read_metrics


def test_debug_ppo_learns(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "erniekit",
            "train",
            "ernie4_5/debug_ppo",
            f"train.output_dir={out}",
            "logging.progress=none",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_metrics(out / "metrics.jsonl")
    # the value head starts far off (explained variance << 0) and calibrates to the returns
    ev = [r["explained_variance"] for r in records if "explained_variance" in r]
    assert sum(ev[-5:]) / 5 > max(-1.0, sum(ev[:3]) / 3), ev
    rewards = [r["reward_mean"] for r in records if "reward_mean" in r and "loss" in r]
    assert sum(rewards[-5:]) / 5 > 5 * sum(rewards[:5]) / 5, rewards
    evals = [r["eval_reward_mean"] for r in records if "eval_reward_mean" in r]
    assert evals[-1] > evals[0]
    export = subprocess.run(
        [sys.executable, "-m", "erniekit", "export", str(out), "--out", str(tmp_path / "hf")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert export.returncode == 0, export.stderr[-2000:]
