"""The real CLI on the debug PPO recipe: value head calibrates, reward rises, export drops the value head."""

from erniekit.trainer.metrics import read_metrics
from tests.helpers import erniekit


def test_debug_ppo_learns(tmp_path):
    out = tmp_path / "run"
    erniekit("train", "ernie4_5/debug_ppo", f"train.output_dir={out}", "logging.progress=none")
    records = read_metrics(out / "metrics.jsonl")
    # the value head starts far off (explained variance << 0) and calibrates to the returns
    ev = [r["explained_variance"] for r in records if "explained_variance" in r]
    assert sum(ev[-5:]) / 5 > max(-1.0, sum(ev[:3]) / 3), ev
    rewards = [r["reward_mean"] for r in records if "reward_mean" in r and "loss" in r]
    assert sum(rewards[-5:]) / 5 > 5 * sum(rewards[:5]) / 5, rewards
    evals = [r["eval_reward_mean"] for r in records if "eval_reward_mean" in r]
    assert evals[-1] > evals[0]
    erniekit("export", out, "--out", tmp_path / "hf", timeout=300)
