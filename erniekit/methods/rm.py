"""Reward models (https://arxiv.org/abs/2203.02155 §3.5): a scalar head on the decoder, trained on
preference pairs.

The score of a conversation is r(x, y) = w . h, with h the decoder's final hidden state at the reply's
last token that is not the pad token (where Hugging Face's ``*ForSequenceClassification`` reads it) and
w the ``score`` head [hidden] (models/common/heads.py). Per pair, with chosen and rejected scores r_c, r_r
and the record's margin m (``method.margin_key``, 0 when absent; Llama 2's margin loss), the
Bradley-Terry loss, plus c (``center_rewards``) times a centring penalty:

    loss = -log sigma(r_c - r_r - m) + c (r_c + r_r)^2

Evaluation reports held-out pair accuracy (r_c > r_r), the mean score gap and the mean scores. The run
exports as a sequence classifier with one label that ``transformers`` scores the same way, and serves
as a reward function for GRPO and PPO (``rewards: [model:PATH]``, rl/reward_model.py).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import paddle
import paddle.nn.functional as F

from erniekit.config.schema import Recipe
from erniekit.methods.base import evaluating, final_hidden
from erniekit.methods.pairs import PairMethod
from erniekit.models.common.heads import SCORE, attach_head, score_position
from erniekit.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def reward_loss(r_c, r_r, margin=None, center: float = 0.0):
    """Per-pair losses [M] of the module docstring's formula."""
    gap = r_c - r_r if margin is None else r_c - r_r - margin
    loss = -F.log_sigmoid(gap)
    return loss + center * (r_c + r_r) ** 2 if center else loss


def sequence_scores(model, batch: dict) -> paddle.Tensor:
    """Scores [n_seq] of a batch's replies, read at ``batch["score_index"]`` (flat positions)."""
    h = final_hidden(model, batch, batch["score_index"])
    return getattr(model, SCORE)(h.astype("float32")).squeeze(-1)


class RM(PairMethod):
    name = "rm"

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, model, rank: int = 0, world: int = 1):
        self.margin_key = recipe.method.margin_key
        super().__init__(recipe, tokenizer, model, rank, world)
        attach_head(model, SCORE)
        log.info("reward model: score head on the final hidden state, margin field %r", self.margin_key)

    def _materialize(self, rows, sources) -> dict:
        batch = super()._materialize(rows, sources)
        seq, token, where = (batch[k].numpy() for k in ("target_seq", "target_token", "target_position"))
        bounds = np.searchsorted(seq, np.arange(2 * batch["pair_keys"].shape[0] + 1))
        pad = self.tokenizer.pad_id
        index = [score_position(token[a:b], where[a:b], pad) for a, b in itertools.pairwise(bounds)]
        batch["score_index"] = paddle.to_tensor(np.array(index, np.int64))
        return batch

    def pair_scores(self, model, batch: dict):
        scores = sequence_scores(model, batch)
        r_c, r_r = scores[0::2], scores[1::2]
        losses = reward_loss(r_c, r_r, batch.get("margin"), self.cfg.center_rewards)
        return losses, r_c, r_r

    def loss(self, model, batch: dict, norm: dict[str, float]) -> tuple[paddle.Tensor, dict[str, float]]:
        losses, r_c, r_r = self.pair_scores(model, batch)
        share = 1.0 / norm["pairs"]
        stats = {
            "scores/chosen": float(r_c.sum()) * share,
            "scores/rejected": float(r_r.sum()) * share,
            "scores/margin": float((r_c - r_r).sum()) * share,
            "scores/accuracy": float((r_c > r_r).astype("float32").sum()) * share,
        }
        return losses.sum() * share, stats

    @paddle.no_grad()
    def evaluate(self, model, max_batches: int = 0) -> dict[str, float]:
        if not self.eval_row_list:
            return {}
        with evaluating(model):
            totals = dict.fromkeys(("loss", "accuracy", "margin", "chosen", "rejected"), 0.0)
            n = 0
            for batch in self.eval_batches(max_batches):
                losses, r_c, r_r = self.pair_scores(model, batch)
                totals["loss"] += float(losses.sum())
                totals["accuracy"] += float((r_c > r_r).astype("float32").sum())
                totals["margin"] += float((r_c - r_r).sum())
                totals["chosen"] += float(r_c.sum())
                totals["rejected"] += float(r_r.sum())
                n += len(losses)
        return {**{k: v / max(n, 1) for k, v in totals.items()}, "pairs": float(n)}
