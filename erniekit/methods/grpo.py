"""GRPO: group relative policy optimisation with verifiable rewards (https://arxiv.org/abs/2402.03300).

For each prompt, G completions are sampled (KV-cache generation) and scored by reward functions
(erniekit/rl/rewards.py): r_i = sum_f w_f r_f(completion_i). Advantages are group-relative,
A_i = (r_i - mean(r)) / (std(r) + 1e-4), or r_i - mean(r) without the std (Dr. GRPO,
https://arxiv.org/abs/2503.20783). For every completion token t, with probability ratio
rho_t = exp(log pi(y_t) - log pi_old(y_t)):

    loss_t = -min(rho_t A, clip(rho_t, 1 - eps, 1 + eps_high) A) + beta * KL_t
    KL_t   = exp(q_t) - q_t - 1,  q_t = log pi_ref(y_t) - log pi(y_t)   (the k3 estimator, >= 0)

``policy_loss`` swaps the surrogate (same clipping ranges, KL term and aggregation):

* ``gspo`` (GSPO, https://arxiv.org/abs/2507.18071): one importance ratio per completion,
  s_i = exp(mean_t (log pi(y_t) - log pi_old(y_t))), in loss_i = -min(s_i A, clip(s_i, 1 - eps,
  1 + eps_high) A). It is applied token by token in GSPO-token form, rho_t = sg(s_i) pi(y_t) / sg(pi(y_t)):
  the value of every rho_t is s_i and, with the default per-sequence token mean, the gradient is s_i's
  (the paper uses far smaller ranges than GRPO's, e.g. eps 3e-4, eps_high 4e-4);
* ``cispo`` (CISPO, MiniMax-M1, https://arxiv.org/abs/2506.13585): the clipped ratio becomes a constant
  weight on a REINFORCE term, loss_t = -sg(clip(rho_t, 1 - eps, 1 + eps_high)) A log pi(y_t), so clipped
  tokens still pass a gradient (the paper pairs it with ``token-mean`` and a large eps_high).

Token losses become the step loss by ``loss_aggregation``: ``seq-mean-token-mean`` (mean over tokens of
each completion, then over completions: GRPO), ``token-mean`` (over all tokens of the step: DAPO,
https://arxiv.org/abs/2503.14476) or ``seq-mean-token-sum-norm`` (token sums divided by
max_new_tokens, then the mean over completions: Dr. GRPO). One rollout batch feeds ``ppo_epochs``
optimizer steps; pi_old is the policy that sampled it (its log-probs computed once per rollout). The
completions of one prompt are packed behind a single copy of the prompt (branch masks, as in DPO).
"""

from __future__ import annotations

import logging

import numpy as np
import paddle

from erniekit.config.schema import Recipe
from erniekit.methods.base import per_sequence, target_logps, target_outputs
from erniekit.methods.rollout import Rollout, RolloutMethod
from erniekit.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def group_advantages(rewards: np.ndarray, group_size: int, scale: bool) -> np.ndarray:
    """Group-relative advantages of rewards [N] laid out group after group."""
    r = rewards.reshape(-1, group_size)
    centred = r - r.mean(axis=1, keepdims=True)
    if scale:
        centred = centred / (r.std(axis=1, keepdims=True) + 1e-4)
    return centred.reshape(-1)


def sequence_ratio(logp, old_logp, seq, n_seq: int) -> paddle.Tensor:
    """GSPO's ratio in token form: sg(s_i) * pi / sg(pi), s_i = exp(mean over the completion's tokens
    of log pi - log pi_old); ``seq`` [T] numbers each token's completion (0..n_seq-1)."""
    diff = (logp - old_logp).detach()
    sums, counts = per_sequence(diff, seq, n_seq), per_sequence(paddle.ones_like(diff), seq, n_seq)
    s = paddle.exp(paddle.gather(sums / counts, seq))
    return s * paddle.exp(logp - logp.detach())


def clipped_token_loss(
    logp,
    old_logp,
    ref_logp,
    adv,
    eps_low: float,
    eps_high: float,
    beta: float,
    policy_loss: str = "grpo",
    seq=None,
    n_seq: int = 0,
):
    """Per-token loss, KL and whether the ratio was clipped (formulas in the module docstring)."""
    if policy_loss == "gspo":
        ratio = sequence_ratio(logp, old_logp, seq, n_seq)
    else:
        ratio = paddle.exp(logp - old_logp)
    clipped_ratio = paddle.clip(ratio, 1 - eps_low, 1 + eps_high)
    if policy_loss == "cispo":
        loss = -(clipped_ratio.detach() * adv) * logp
        clipped = (ratio < 1 - eps_low) | (ratio > 1 + eps_high)
    else:
        loss = -paddle.minimum(ratio * adv, clipped_ratio * adv)
        clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    kl = paddle.zeros_like(logp)
    if ref_logp is not None:
        q = ref_logp - logp
        kl = paddle.exp(q) - q - 1
        loss = loss + beta * kl
    return loss, kl, clipped.astype("float32")


def aggregate(loss_t, seq_t, n_seq: int, mode: str, norm: dict[str, float], max_new_tokens: int):
    """This micro-batch's share of the step loss (see ``loss_aggregation``)."""
    if mode == "token-mean":
        return loss_t.sum() / norm["tokens"]
    if mode == "seq-mean-token-sum-norm":
        return loss_t.sum() / (norm["sequences"] * max_new_tokens)
    sums, counts = per_sequence(loss_t, seq_t, n_seq), per_sequence(paddle.ones_like(loss_t), seq_t, n_seq)
    return (sums / counts).sum() / norm["sequences"]


class GRPO(RolloutMethod):
    name = "grpo"

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, model, rank: int = 0, world: int = 1):
        super().__init__(recipe, tokenizer, model, rank, world)
        self.samples_per_prompt = self.cfg.group_size
        log.info(
            "GRPO: %d prompts x %d completions per rollout, rewards %s, reference: %s",
            self.cfg.rollout.prompts_per_step,
            self.cfg.group_size,
            ", ".join(self.cfg.rewards),
            self.ref.kind,
        )

    def complete_rollout(self, rollout: Rollout) -> None:
        c = self.cfg
        rollout.per_seq["advantage"] = group_advantages(
            np.array(rollout.rewards), c.group_size, c.scale_rewards
        ).tolist()

        def logps(batch):
            out = {"old_logp": target_logps(self.model, batch)} if c.ppo_epochs > 1 else {}
            if self.ref.kind != "none":
                out["ref_logp"] = self.ref.run(self.model, lambda m: target_logps(m, batch))
            return out

        # with one epoch, pi_old is the current policy (detached in the loss): nothing to precompute
        if c.ppo_epochs > 1 or self.ref.kind != "none":
            rollout.per_token.update(self.per_token(rollout, logps))

    def loss(self, model, batch: dict, norm: dict[str, float]) -> tuple[paddle.Tensor, dict[str, float]]:
        c = self.cfg
        out = target_outputs(model, batch, entropy=True)
        seq = batch["target_seq"]
        old = batch["old_logp"] if "old_logp" in batch else out.logp.detach()
        loss_t, kl_t, clipped_t = clipped_token_loss(
            out.logp,
            old,
            batch.get("ref_logp"),
            paddle.gather(batch["advantage"], seq),
            c.epsilon,
            c.epsilon_high or c.epsilon,
            c.beta,
            c.policy_loss,
            seq,
            int(batch["seq_keys"].shape[0]),
        )
        loss = aggregate(
            loss_t, seq, int(batch["seq_keys"].shape[0]), c.loss_aggregation, norm, c.rollout.max_new_tokens
        )
        share = 1.0 / norm["tokens"]
        return loss, {
            "kl": float(kl_t.sum()) * share,
            "clip_fraction": float(clipped_t.sum()) * share,
            "entropy": float(out.entropy.sum()) * share,
        }
