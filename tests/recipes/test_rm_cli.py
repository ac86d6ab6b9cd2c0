"""Reward models through the real CLI: the debug recipe ranks held-out pairs, resumes exactly, and the
classic pipeline runs end to end: SFT -> export -> reward model on the SFT model -> export -> PPO (and
GRPO) on the SFT model with ``rewards: [model:PATH]``, whose rollouts are scored as the reward model
scores them."""

import json

import numpy as np

from erniekit.data.prompts import to_prompt_messages
from erniekit.rl.reward_model import RewardModel
from erniekit.trainer.metrics import read_metrics
from tests.helpers import erniekit


def train(recipe, out, *extra):
    erniekit("train", recipe, f"train.output_dir={out}", "logging.progress=none", *extra)
    return read_metrics(out / "metrics.jsonl")


def test_debug_rm_ranks_held_out_pairs_and_resumes_exactly(tmp_path):
    rows = train("ernie4_5/debug_rm", tmp_path / "rm", "checkpoint.every=20")
    evals = [r for r in rows if "eval_accuracy" in r]
    assert evals[-1]["eval_accuracy"] == 1.0  # measured 0.775 -> 1.0 over 40 held-out pairs
    assert evals[-1]["eval_loss"] < 0.1 * evals[0]["eval_loss"]
    assert evals[-1]["eval_margin"] > 1.0 and evals[-1]["eval_pairs"] == 40
    resumed = train(
        "ernie4_5/debug_rm", tmp_path / "again", f"train.resume={tmp_path / 'rm' / 'checkpoint-20'}"
    )
    first = {r["step"]: r["loss"] for r in rows if "loss" in r and r["step"] > 20}
    second = {r["step"]: r["loss"] for r in resumed if "loss" in r and r["step"] > 20}
    assert first and first == second


def test_sft_then_reward_model_then_ppo_and_grpo(tmp_path):
    sft = tmp_path / "sft"
    train("ernie4_5/debug_sft", sft, "train.max_steps=30", "train.eval_every=0")
    erniekit("export", sft, "--out", tmp_path / "sft_hf")
    on_sft = [f"model.path={tmp_path / 'sft_hf'}", "model.flavor=null", "model.tokenizer=null"]
    rm_rows = train("ernie4_5/debug_rm", tmp_path / "rm", *on_sft, "train.eval_every=0")
    assert rm_rows[-1]["eval_accuracy"] >= 0.95
    erniekit("export", tmp_path / "rm", "--out", tmp_path / "rm_hf")
    reward = f"method.rewards=[model:{tmp_path / 'rm_hf'}]"
    ppo = tmp_path / "ppo"
    rows = train(
        "ernie4_5/debug_ppo", ppo, *on_sft, reward, "train.max_steps=16", "method.log_completions_every=1"
    )
    rewards = [r["reward_mean"] for r in rows if "reward_mean" in r and "loss" in r]
    assert np.mean(rewards[-4:]) > np.mean(rewards[:2]) + 0.5, rewards  # measured -0.4 -> 3.6
    # the logged rewards are the reward model's scores of the logged completions
    rm = RewardModel.load(tmp_path / "rm_hf")
    logged = [json.loads(line) for line in (ppo / "completions.jsonl").read_text().splitlines()][:8]
    convs = [
        [*to_prompt_messages({"prompt": s["prompt"]}), {"role": "assistant", "content": s["completion"]}]
        for s in logged
    ]
    np.testing.assert_allclose(rm.scores(convs), [s["reward"] for s in logged], rtol=1e-4, atol=1e-4)
    grpo = train("ernie4_5/debug_grpo", tmp_path / "grpo", *on_sft, reward, "train.max_steps=2")
    assert all(np.isfinite(r["reward_mean"]) for r in grpo if "reward_mean" in r)
