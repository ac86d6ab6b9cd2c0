"""Direct preference optimisation and its family of losses.

Notation, per pair: pi_c, pi_r are the policy's summed log-probabilities of the chosen and rejected
replies, rho_c, rho_r the reference model's, L_c, L_r the replies' token counts, beta the temperature,
sigma the logistic function, and h = (pi_c - rho_c) - (pi_r - rho_r).

* ``sigmoid`` DPO (https://arxiv.org/abs/2305.18290), with label smoothing eps (conservative DPO):
  loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)
* ``ipo`` (https://arxiv.org/abs/2310.12036): loss = (h - 1 / (2 beta))^2
* ``hinge`` (SLiC, https://arxiv.org/abs/2305.10425): loss = max(0, 1 - beta h)
* ``simpo`` (https://arxiv.org/abs/2405.14734), reference-free and length-normalised with margin gamma:
  loss = -log sigma(beta (pi_c / L_c - pi_r / L_r) - gamma)
* ``orpo`` (https://arxiv.org/abs/2403.07691), reference-free: with per-token averages a = pi / L and
  log-odds o = a - log(1 - exp(a)): loss = -pi_c / L_c + beta * (-log sigma(o_c - o_r))
* ``kto_pair`` (KTO, https://arxiv.org/abs/2402.01306, on paired data): with z_c, z_r the micro-batch means
  of (pi - rho) clipped at 0 and not differentiated (KTO's reference point),
  loss = [(1 - sigma(beta ((pi_c - rho_c) - z_r))) + (1 - sigma(beta (z_c - (pi_r - rho_r))))] / 2

``sft_loss_weight`` adds w * (-pi_c / L_c), the chosen reply's mean token NLL. Rewards reported: beta
(pi - rho) with a reference, beta * pi / L without one (simpo, orpo).

The reference is the base model without adapters (LoRA: no second copy), a frozen copy (full fine-tuning),
or log-probs computed once before training (``precompute_ref``), so training holds one model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
from safetensors.numpy import load_file, save_file

from erniekit.config.schema import Recipe
from erniekit.data.loader import eval_rows
from erniekit.errors import CheckpointError
from erniekit.methods.base import Reference, evaluating, per_sequence, target_logps
from erniekit.methods.pairs import PairExamples, PairMethod
from erniekit.tokenizer import Tokenizer

log = logging.getLogger(__name__)
REFERENCE_FREE = ("simpo", "orpo")
REF_FILE = "ref_logps.safetensors"


def preference_loss(
    kind: str,
    pi_c,
    pi_r,
    rho_c,
    rho_r,
    len_c,
    len_r,
    beta: float,
    label_smoothing: float = 0.0,
    gamma: float = 0.0,
):
    """Per-pair losses [M] and rewards (chosen, rejected) [M] for the formulas in the module docstring."""
    if kind in REFERENCE_FREE:
        avg_c, avg_r = pi_c / len_c, pi_r / len_r
        rewards = (beta * avg_c, beta * avg_r)
        if kind == "simpo":
            z = beta * (avg_c - avg_r) - gamma
            return -(1 - label_smoothing) * F.log_sigmoid(z) - label_smoothing * F.log_sigmoid(-z), rewards
        odds_c = avg_c - paddle.log1p(-paddle.exp(avg_c))
        odds_r = avg_r - paddle.log1p(-paddle.exp(avg_r))
        return -avg_c - beta * F.log_sigmoid(odds_c - odds_r), rewards
    ratio_c, ratio_r = pi_c - rho_c, pi_r - rho_r
    rewards = (beta * ratio_c, beta * ratio_r)
    h = ratio_c - ratio_r
    if kind == "sigmoid":
        return -(1 - label_smoothing) * F.log_sigmoid(beta * h) - label_smoothing * F.log_sigmoid(
            -beta * h
        ), rewards
    if kind == "ipo":
        return (h - 1 / (2 * beta)) ** 2, rewards
    if kind == "hinge":
        return F.relu(1 - beta * h), rewards
    if kind == "kto_pair":
        z_c = paddle.clip(ratio_c.mean(), min=0).detach()
        z_r = paddle.clip(ratio_r.mean(), min=0).detach()
        return (
            (1 - F.sigmoid(beta * (ratio_c - z_r))) + (1 - F.sigmoid(beta * (z_c - ratio_r)))
        ) / 2, rewards
    raise ValueError(f"unknown preference loss {kind!r}")


def sequence_logps(model, batch: dict) -> tuple[paddle.Tensor, paddle.Tensor]:
    """Summed log-probs [2M] (chosen, rejected of each pair interleaved) and reply lengths [2M]."""
    token_logp = target_logps(model, batch)
    n_seq, seq = 2 * batch["pair_keys"].shape[0], batch["target_seq"]
    return per_sequence(token_logp, seq, n_seq), per_sequence(paddle.ones_like(token_logp), seq, n_seq)


class DPO(PairMethod):
    name = "dpo"

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, model, rank: int = 0, world: int = 1):
        super().__init__(recipe, tokenizer, model, rank, world)
        needs_model = self.cfg.loss not in REFERENCE_FREE and not self.cfg.precompute_ref
        self.ref = Reference(recipe, model, needs_model)
        self.reference = "precomputed" if self.cfg.precompute_ref else self.ref.kind
        self.ref_cache = None
        log.info("DPO loss %s, reference: %s", self.cfg.loss, self.reference)

    # --- reference log-probs computed once ---------------------------------------------------------
    def on_train_start(self, trainer) -> None:
        if self.reference != "precomputed" or self.cfg.loss in REFERENCE_FREE:
            return
        path = Path(trainer.output_dir) / REF_FILE
        if path.is_file():
            arrays = load_file(str(path))
            self.ref_cache = {k: arrays[k] for k in arrays}
            if any(
                self.ref_cache.get(f"{kind}.{i}") is None
                or len(self.ref_cache[f"{kind}.{i}"]) != len(s.lengths)
                for kind, sources in (("train", self.train_sources), ("eval", self.eval_sources))
                for i, s in enumerate(sources)
            ):
                raise CheckpointError(
                    f"{path}: reference log-probs do not match this run's data; delete the file "
                    f"to recompute them (only valid before training starts)"
                )
            return
        if trainer.state.step > 0:
            raise CheckpointError(
                f"{path} is missing: precomputed reference log-probs cannot be recomputed "
                f"after training started"
            )
        self.ref_cache = {}
        for kind, sources in (("train", self.train_sources), ("eval", self.eval_sources)):
            for i, source in enumerate(sources):
                self.ref_cache[f"{kind}.{i}"] = self._compute_ref(trainer.model, source, i, len(sources))
        save_file(self.ref_cache, str(path))
        log.info("precomputed reference log-probs for %d pairs", sum(len(v) for v in self.ref_cache.values()))

    @paddle.no_grad()
    def _compute_ref(self, model, source: PairExamples, index: int, n_sources: int) -> np.ndarray:
        out = np.zeros((len(source.lengths), 2), np.float32)
        lengths = [np.zeros(0, np.int64)] * n_sources
        lengths[index] = source.lengths
        rows = eval_rows(lengths, self.max_len, self.packing)
        with evaluating(model):
            sources = [source] * n_sources
            for i in range(0, len(rows), self.micro_batch_size):
                batch = self._materialize(rows[i : i + self.micro_batch_size], sources)
                logps, _ = sequence_logps(model, batch)
                keys = batch["pair_keys"].numpy()
                out[keys[:, 1]] = logps.numpy().reshape(-1, 2)
        return out

    # --- log-probs and loss --------------------------------------------------------------------------
    @paddle.no_grad()
    def reference_logps(self, model, batch: dict, source: str) -> paddle.Tensor | None:
        if self.reference == "precomputed":
            keys = batch["pair_keys"].numpy()
            return paddle.to_tensor(
                np.stack([self.ref_cache[f"{source}.{s}"][i] for s, i in keys]).reshape(-1)
            )
        return self.ref.run(model, lambda m: sequence_logps(m, batch)[0])

    def pair_terms(self, model, batch: dict, source: str = "train"):
        logps, lengths = sequence_logps(model, batch)
        ref = self.reference_logps(model, batch, source)
        pi_c, pi_r, len_c, len_r = logps[0::2], logps[1::2], lengths[0::2], lengths[1::2]
        rho_c, rho_r = (None, None) if ref is None else (ref[0::2], ref[1::2])
        c = self.cfg
        losses, (r_c, r_r) = preference_loss(
            c.loss, pi_c, pi_r, rho_c, rho_r, len_c, len_r, c.beta, c.label_smoothing, c.gamma
        )
        if c.sft_loss_weight:
            losses = losses + c.sft_loss_weight * (-pi_c / len_c)
        return losses, r_c, r_r, pi_c, pi_r

    def loss(self, model, batch: dict, norm: dict[str, float]) -> tuple[paddle.Tensor, dict[str, float]]:
        losses, r_c, r_r, pi_c, pi_r = self.pair_terms(model, batch)
        share = 1.0 / norm["pairs"]
        stats = {
            "rewards/chosen": float(r_c.sum()) * share,
            "rewards/rejected": float(r_r.sum()) * share,
            "rewards/margin": float((r_c - r_r).sum()) * share,
            "rewards/accuracy": float((r_c > r_r).astype("float32").sum()) * share,
            "logps/chosen": float(pi_c.sum()) * share,
            "logps/rejected": float(pi_r.sum()) * share,
        }
        return losses.sum() * share, stats

    @paddle.no_grad()
    def evaluate(self, model, max_batches: int = 0) -> dict[str, float]:
        if not self.eval_row_list:
            return {}
        with evaluating(model):
            totals = {"loss": 0.0, "rewards/accuracy": 0.0, "rewards/margin": 0.0}
            n = 0
            for batch in self.eval_batches(max_batches):
                losses, r_c, r_r, _, _ = self.pair_terms(model, batch, "eval")
                totals["loss"] += float(losses.sum())
                totals["rewards/accuracy"] += float((r_c > r_r).astype("float32").sum())
                totals["rewards/margin"] += float((r_c - r_r).sum())
                n += len(losses)
        return {**{k: v / max(n, 1) for k, v in totals.items()}, "pairs": float(n)}
