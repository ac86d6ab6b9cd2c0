"""PPO: GAE and the clipped policy/value loss against independent NumPy code."""

import numpy as np
import paddle
import pytest

from erniekit.methods.ppo import gae, ppo_token_loss


def gae_by_definition(rewards, values, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, written as the sum (not the recursion)."""
    values_next = np.append(values[1:], 0.0)
    delta = rewards + gamma * values_next - values
    n = len(rewards)
    adv = np.array([sum((gamma * lam) ** (k - t) * delta[k] for k in range(t, n)) for t in range(n)])
    return adv, adv + values


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 1.0), (0.99, 0.0)])
def test_gae(gamma, lam):
    rng = np.random.RandomState(0)
    rewards, values = rng.normal(size=9), rng.normal(size=9)
    for got, expected in zip(
        gae(rewards, values, gamma, lam), gae_by_definition(rewards, values, gamma, lam)
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_ppo_token_loss():
    rng = np.random.RandomState(1)
    logp, old = rng.uniform(-3, -0.1, 40), rng.uniform(-3, -0.1, 40)
    adv, value, old_value, ret = (
        rng.normal(size=40),
        rng.normal(size=40),
        rng.normal(size=40),
        rng.normal(size=40),
    )
    eps, vclip, coef = 0.2, 0.3, 0.5
    ratio = np.exp(logp - old)
    policy = -np.minimum(ratio * adv, np.clip(ratio, 1 - eps, 1 + eps) * adv)
    v_clipped = old_value + np.clip(value - old_value, -vclip, vclip)
    value_loss = 0.5 * np.maximum((value - ret) ** 2, (v_clipped - ret) ** 2)
    t = lambda a: paddle.to_tensor(a.astype("float32"))  # noqa: E731
    loss, _, vl, clipped, v_clip = ppo_token_loss(
        t(logp), t(old), t(adv), t(value), t(old_value), t(ret), eps, vclip, coef
    )
    np.testing.assert_allclose(loss.numpy(), policy + coef * value_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vl.numpy(), value_loss, rtol=1e-5, atol=1e-6)
    assert np.array_equal(clipped.numpy().astype(bool), np.abs(ratio - 1) > eps)
    assert np.array_equal(v_clip.numpy().astype(bool), np.abs(value - old_value) > vclip)
