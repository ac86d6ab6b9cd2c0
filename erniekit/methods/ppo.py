"""PPO (https://arxiv.org/abs/1707.06347) for language models, with a value head on the policy.

A linear value head V reads the policy's final hidden state at the position before each completion token.
Per completion of T tokens, with rollout-time log-probs and values (pi_old, V_old) and the reference
policy's log-probs rho:

    r_t = -beta (log pi_old(y_t) - rho_t)  +  [t = T-1] * score          (KL-shaped reward, score at the end)
    delta_t = r_t + gamma V_old(t+1) - V_old(t),   V_old(T) = 0
    A_t = delta_t + gamma lam A_{t+1}   (GAE, https://arxiv.org/abs/1506.02438);  R_t = A_t + V_old(t)
    A is whitened over the rollout when ``whiten_advantages``.

    loss = mean_t [ -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)
                    + vf_coef * 0.5 * max((V_t - R_t)^2, (V_old(t) + clip(V_t - V_old(t), -c, c) - R_t)^2) ]

with rho_t = pi(y_t) / pi_old(y_t) here, c = ``value_clip``, and the mean over all completion tokens of the
step. One rollout feeds ``ppo_epochs`` optimizer steps. The value head is saved with checkpoints and left
out of exports.
"""

from __future__ import annotations

import logging

import numpy as np
import paddle

from erniekit.config.schema import Recipe
from erniekit.methods.base import target_logps, target_outputs
from erniekit.methods.rollout import Rollout, RolloutMethod
from erniekit.models.common.heads import VALUE as VALUE_HEAD
from erniekit.models.common.heads import attach_head
from erniekit.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def gae(rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns of one completion, from per-token rewards and values [T]."""
    adv = np.zeros_like(values)
    running = 0.0
    for t in range(len(values) - 1, -1, -1):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv, adv + values


def ppo_token_loss(
    logp, old_logp, adv, value, old_value, returns, eps: float, value_clip: float, vf_coef: float
):
    """Per-token loss, and (policy loss, value loss, ratio clipped, value clipped) per token."""
    ratio = paddle.exp(logp - old_logp)
    policy = -paddle.minimum(ratio * adv, paddle.clip(ratio, 1 - eps, 1 + eps) * adv)
    clipped_value = old_value + paddle.clip(value - old_value, -value_clip, value_clip)
    value_loss = 0.5 * paddle.maximum((value - returns) ** 2, (clipped_value - returns) ** 2)
    ratio_clipped = ((ratio - 1).abs() > eps).astype("float32")
    value_clipped = ((value - old_value).abs() > value_clip).astype("float32")
    return policy + vf_coef * value_loss, policy, value_loss, ratio_clipped, value_clipped


class PPO(RolloutMethod):
    name = "ppo"

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, model, rank: int = 0, world: int = 1):
        super().__init__(recipe, tokenizer, model, rank, world)
        attach_head(model, VALUE_HEAD)
        log.info(
            "PPO: %d prompts per rollout, rewards %s, reference: %s",
            self.cfg.rollout.prompts_per_step,
            ", ".join(self.cfg.rewards),
            self.ref.kind,
        )

    def values(self, model, batch: dict) -> tuple[paddle.Tensor, paddle.Tensor]:
        out = target_outputs(model, batch, hidden=True)
        return out.logp, getattr(model, VALUE_HEAD)(out.hidden).squeeze(-1)

    def complete_rollout(self, rollout: Rollout) -> None:
        c = self.cfg

        def old(batch):
            logp, value = self.values(self.model, batch)
            out = {"old_logp": logp, "old_value": value}
            if self.ref.kind != "none":
                out["ref_logp"] = self.ref.run(self.model, lambda m: target_logps(m, batch))
            return out

        per = self.per_token(rollout, old)
        advantages, returns, kls = [], [], []
        for k, score in enumerate(rollout.rewards):
            old_logp, value = np.array(per["old_logp"][k]), np.array(per["old_value"][k])
            kl = old_logp - np.array(per["ref_logp"][k]) if "ref_logp" in per else np.zeros_like(old_logp)
            reward = -c.beta * kl
            reward[-1] += score
            adv, ret = gae(reward, value, c.gamma, c.lam)
            advantages.append(adv)
            returns.append(ret)
            kls.append(kl)
        flat = np.concatenate(advantages)
        if c.whiten_advantages:
            advantages = [(a - flat.mean()) / (flat.std() + 1e-8) for a in advantages]
        all_returns, all_values = (
            np.concatenate(returns),
            np.concatenate([np.array(v) for v in per["old_value"]]),
        )
        rollout.per_token.update(
            old_logp=per["old_logp"],
            old_value=per["old_value"],
            advantage=[a.tolist() for a in advantages],
            returns=[r.tolist() for r in returns],
        )
        rollout.metrics.update(
            kl=float(np.concatenate(kls).mean()),
            value_mean=float(all_values.mean()),
            explained_variance=float(1 - np.var(all_returns - all_values) / max(np.var(all_returns), 1e-12)),
        )

    def loss(self, model, batch: dict, norm: dict[str, float]) -> tuple[paddle.Tensor, dict[str, float]]:
        c = self.cfg
        logp, value = self.values(model, batch)
        loss_t, policy, value_loss, clipped, v_clipped = ppo_token_loss(
            logp,
            batch["old_logp"],
            batch["advantage"],
            value,
            batch["old_value"],
            batch["returns"],
            c.epsilon,
            c.value_clip,
            c.vf_coef,
        )
        share = 1.0 / norm["tokens"]
        approx_kl = (batch["old_logp"] - logp).detach()
        stats = {
            "policy_loss": float(policy.sum()) * share,
            "value_loss": float(value_loss.sum()) * share,
            "clip_fraction": float(clipped.sum()) * share,
            "value_clip_fraction": float(v_clipped.sum()) * share,
            "approx_kl": float(approx_kl.sum()) * share,
        }
        return loss_t.sum() * share, stats
