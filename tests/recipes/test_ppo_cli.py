"""The real CLI on the debug PPO recipe: value loss falls, reward rises; exports drop the value head."""

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
    value = [r["value_loss"] for r in records if "value_loss" in r]
    assert sum(value[-10:]) / 10 < 0.5 * sum(value[:5]) / 5, value
    rewards = [r["reward_mean"] for r in records if "reward_mean" in r and "loss" in r]
    assert sum(rewards[-5:]) / 5 > 1.5 * sum(rewards[:5]) / 5, rewards
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
