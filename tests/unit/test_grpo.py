"""GRPO math against NumPy, reward functions on tricky strings, exact resume in the middle of a rollout."""

import numpy as np
import paddle
import pytest

from erniekit.data.prompts import PromptRecord
from erniekit.methods.grpo import aggregate, clipped_token_loss, group_advantages
from erniekit.rl.rewards import extract_answer, resolve_reward
from erniekit.trainer.loop import Trainer
from erniekit.trainer.metrics import read_metrics
from tests.helpers import debug_recipe

RNG = np.random.RandomState(0)


def test_group_advantages():
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    adv = group_advantages(rewards, 4, scale=True)
    np.testing.assert_allclose(adv[:4], [0.5, -0.5, -0.5, 0.5] / (np.std([1, 0, 0, 1]) + 1e-4))
    assert np.all(adv[4:] == 0)
    np.testing.assert_allclose(group_advantages(rewards, 4, scale=False)[:4], [0.5, -0.5, -0.5, 0.5])


def numpy_token_loss(logp, old, ref, adv, lo, hi, beta):
    ratio = np.exp(logp - old)
    loss = -np.minimum(ratio * adv, np.clip(ratio, 1 - lo, 1 + hi) * adv)
    q = ref - logp
    kl = np.exp(q) - q - 1
    clipped = ((ratio < 1 - lo) & (adv < 0)) | ((ratio > 1 + hi) & (adv > 0))
    return loss + beta * kl, kl, clipped


@pytest.mark.parametrize(("lo", "hi", "beta"), [(0.2, 0.2, 0.0), (0.2, 0.28, 0.04)])
def test_clipped_token_loss_matches_numpy(lo, hi, beta):
    logp, old, ref = RNG.uniform(-3, -0.1, 50), RNG.uniform(-3, -0.1, 50), RNG.uniform(-3, -0.1, 50)
    adv = RNG.normal(size=50)
    t = lambda a: paddle.to_tensor(a.astype("float32"))  # noqa: E731
    loss, kl, clipped = clipped_token_loss(t(logp), t(old), t(ref) if beta else None, t(adv), lo, hi, beta)
    exp_loss, exp_kl, exp_clip = numpy_token_loss(logp, old, ref, adv, lo, hi, beta)
    np.testing.assert_allclose(loss.numpy(), exp_loss, rtol=1e-5, atol=1e-6)
    if beta:
        np.testing.assert_allclose(kl.numpy(), exp_kl, rtol=1e-4, atol=1e-6)
    assert np.array_equal(clipped.numpy().astype(bool), exp_clip)


def test_aggregation_modes():
    loss = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    seq = np.array([0, 0, 0, 1, 1, 2])
    norm = {"tokens": 12.0, "sequences": 6.0}  # the whole step is twice this micro-batch
    t = paddle.to_tensor
    got = {
        m: float(aggregate(t(loss.astype("float32")), t(seq), 3, m, norm, 10))
        for m in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
    }
    assert got["token-mean"] == pytest.approx(21 / 12)
    assert got["seq-mean-token-mean"] == pytest.approx((2.0 + 4.5 + 6.0) / 6)
    assert got["seq-mean-token-sum-norm"] == pytest.approx(21 / (6 * 10))


def record(answer):
    return PromptRecord("x", [{"role": "user", "content": "q"}], answer, {})


@pytest.mark.parametrize(
    ("name", "text", "answer", "expected"),
    [
        ("numeric", "Let me think... 3 + 4 = 7. <answer>7</answer>", "7", 1.0),
        ("numeric", "<answer>1,024</answer>", "1024", 1.0),
        ("numeric", "the result is \\boxed{-2.50}", "-2.5", 1.0),
        ("numeric", "<answer>8</answer> (or maybe 7)", "7", 0.0),
        ("numeric", "no numbers here", "7", 0.0),
        ("format", "<think>7 is prime</think> yes", None, 1.0),
        ("format", "<think>unfinished", None, 0.0),
        ("format", "<think>x</think>", None, 0.0),
        ("answer_tag", "so <answer> 5 </answer>", None, 1.0),
        ("exact", "<answer> Paris </answer>", "paris", 1.0),
        ("digits", "a1b2", None, 0.5),
    ],
)
def test_rewards(name, text, answer, expected):
    assert resolve_reward(name)(text, record(answer)) == pytest.approx(expected)


def test_extract_answer_and_custom_reward():
    assert extract_answer("<answer>1</answer> then <answer>2</answer>") == "2"
    assert resolve_reward("math:isfinite") is not None
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        resolve_reward("nope")


def test_resume_in_the_middle_of_a_rollout_is_exact(tmp_path):
    args = [
        "train.max_steps=5",
        "train.eval_every=0",
        "train.eval_on_start=false",
        "checkpoint.every=3",
        "method.rollout.prompts_per_step=2",
        "method.group_size=4",
        "method.ppo_epochs=2",
        "method.beta=0.1",
    ]
    straight = Trainer(debug_recipe(tmp_path / "a", *args, recipe="ernie4_5/debug_grpo"))
    straight.fit()
    first = Trainer(debug_recipe(tmp_path / "b", *args, recipe="ernie4_5/debug_grpo"))
    first.method.on_train_start(first)
    for _ in range(3):  # step 3 is the first step on the second rollout: resume must reuse it
        first.logger.log(first.train_step())
    first.save()
    first.logger.close()
    resumed = Trainer(debug_recipe(tmp_path / "b", *args, "train.resume=auto", recipe="ernie4_5/debug_grpo"))
    resumed.fit()
    losses = lambda t: [r["loss"] for r in read_metrics(t.output_dir / "metrics.jsonl") if "loss" in r]  # noqa: E731
    assert losses(resumed) == losses(straight)
    assert read_metrics(resumed.output_dir / "metrics.jsonl")[0]["kl"] == 0.0  # policy == reference at step 1
