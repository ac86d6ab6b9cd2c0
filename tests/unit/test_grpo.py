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


def _grad(policy_loss, logp, old, adv, seq, lo, hi, mode):
    t = lambda a, dtype="float32": paddle.to_tensor(a.astype(dtype))  # noqa: E731
    x = t(logp)
    x.stop_gradient = False
    n_seq = int(seq.max()) + 1
    loss_t, _, clipped = clipped_token_loss(
        x, t(old), None, t(adv[seq]), lo, hi, 0.0, policy_loss, t(seq, "int64"), n_seq
    )
    norm = {"tokens": float(len(logp)), "sequences": float(n_seq)}
    total = aggregate(loss_t, t(seq, "int64"), n_seq, mode, norm, 8)
    total.backward()
    return float(total), x.grad.numpy(), clipped.numpy().astype(bool)


def test_gspo_is_the_sequence_ratio_objective():
    """GSPO in token form: the step loss is -mean_i min(s_i A_i, clip(s_i) A_i) with s_i the geometric
    mean ratio of completion i, and its gradient that objective's, computed here by hand."""
    seq = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    logp = RNG.uniform(-3, -0.1, 9)
    old = logp + RNG.normal(0, 0.05, 9)
    old[5:] = logp[5:] + 0.2  # completion 2 far off: s_2 = exp(-0.2) < 1 - eps, clipped if A_2 < 0
    adv = np.array([1.0, 0.5, -1.0])
    lo, hi = 0.1, 0.1
    value, grad, _ = _grad("gspo", logp, old, adv, seq, lo, hi, "seq-mean-token-mean")
    lengths = np.bincount(seq)
    s = np.exp(np.bincount(seq, logp - old) / lengths)
    per_seq = np.minimum(s * adv, np.clip(s, 1 - lo, 1 + hi) * adv)
    assert value == pytest.approx(-per_seq.mean(), rel=1e-5)
    active = ~(((s < 1 - lo) & (adv < 0)) | ((s > 1 + hi) & (adv > 0)))
    want = -(active * adv * s / lengths)[seq] / 3  # d s_i / d logp_t = s_i / |y_i|
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)
    assert not active[2] and active[:2].all()


def test_cispo_weights_log_probs_by_the_clipped_ratio():
    """CISPO: loss = -sum_t sg(clip(r_t)) A log pi_t / T, so every token, clipped or not, gets the
    gradient -clip(r_t) A / T."""
    seq = np.array([0, 0, 1, 1, 1])
    logp = RNG.uniform(-3, -0.1, 5)
    old = logp - np.array([0.0, 0.5, -0.5, 0.01, 0.0])  # ratios e^0, e^0.5, e^-0.5, ...
    adv = np.array([1.0, -2.0])
    lo, hi = 0.2, 0.3
    value, grad, clipped = _grad("cispo", logp, old, adv, seq, lo, hi, "token-mean")
    weight = np.clip(np.exp(logp - old), 1 - lo, 1 + hi)
    assert value == pytest.approx(-(weight * adv[seq] * logp).sum() / 5, rel=1e-5)
    np.testing.assert_allclose(grad, -weight * adv[seq] / 5, rtol=1e-5, atol=1e-7)
    assert clipped.tolist() == [False, True, True, False, False]


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
