"""The real CLI on the debug PPO recipe: value head calibrates, reward rises, export drops the value head."""

from safetensors.numpy import load_file

from erniekit.trainer import checkpoint as ckpt
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
    # the value head is trained with the policy and saved with its checkpoints (it was once neither)
    arrays, _, _ = ckpt.read_checkpoint(ckpt.checkpoints(out)[-1])
    assert arrays["value_head.weight"].shape[1] == 1 and abs(arrays["value_head.bias"][0]) > 1e-4
    erniekit("export", out, "--out", tmp_path / "hf", timeout=300)
    assert not any(k.startswith("value_head") for k in load_file(str(tmp_path / "hf" / "model.safetensors")))
