"""KTO (https://arxiv.org/abs/2402.01306): preference optimisation from unpaired completions, each
labelled desirable or undesirable.

Per example (prompt x, completion y), with pi and rho the policy's and reference's summed log-probs of y
given x, the implied reward is r = pi - rho. KTO's reference point z0 is the policy's KL from the
reference, estimated on mismatched pairs: each example's prompt with the next example's completion, over
the whole step (all micro-batches and data ranks),

    z0 = max(0, mean_k [pi(y_{k+1} | x_k) - rho(y_{k+1} | x_k)])          (no gradient)

    loss(x, y) = lambda_D (1 - sigma(beta (r - z0)))    if y is desirable
                 lambda_U (1 - sigma(beta (z0 - r)))    if not

averaged over the step's examples. Reported: ``rewards/chosen`` and ``rewards/rejected`` (the mean
beta r of desirable and undesirable examples), their gap ``rewards/margin``, and ``kl`` (z0); eval
reports the same on held-out examples (z0 from their own mismatched pairs). The reference is the base
with adapters off (LoRA) or a frozen copy.

Data: ``{"messages": [..., assistant completion], "label": bool}`` (LLaMA-Factory's ``kto_en_demo``) or
``{"prompt", "completion", "label"}`` (TRL's); ``method.label_key`` names the label field.
"""

from __future__ import annotations

import logging

import numpy as np
import paddle
import paddle.nn.functional as F

from erniekit.config.core import ConfigError
from erniekit.config.schema import Recipe
from erniekit.data.dataset import cached_dataset
from erniekit.data.files import read_options
from erniekit.data.packing import collate_shared_prefix
from erniekit.data.preference import encode_unpaired, to_unpaired_messages
from erniekit.data.tokenize import TokenStats
from erniekit.methods.base import FileMethod, Reference, evaluating, per_sequence, target_logps, to_tensors
from erniekit.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def kto_loss(reward, desirable, z0, beta: float, w_desirable: float, w_undesirable: float):
    """Per-example losses [N] of the module docstring's formula; ``desirable`` is 1.0 / 0.0 per example."""
    good = w_desirable * (1 - F.sigmoid(beta * (reward - z0)))
    bad = w_undesirable * (1 - F.sigmoid(beta * (z0 - reward)))
    return desirable * good + (1 - desirable) * bad


def completion_logps(model, batch: dict) -> paddle.Tensor:
    """Summed log-probs [n] of a batch's completions (one reply per item of a shared-prefix batch)."""
    return per_sequence(target_logps(model, batch), batch["target_seq"], int(batch["seq_keys"].shape[0]))


class Unpaired:
    """Tokenized (prompt, completion, desirable) examples of one file."""

    def __init__(self, prompt, completion, desirable):
        self.prompt, self.completion, self.desirable = prompt, completion, desirable
        self.lengths = np.array([len(p) + len(c) for p, c in zip(prompt, completion)], np.int64)

    def select(self, indices) -> Unpaired:
        return Unpaired(
            *([col[i] for i in indices] for col in (self.prompt, self.completion, self.desirable))
        )


def load_unpaired(spec, recipe: Recipe, tokenizer: Tokenizer) -> tuple[Unpaired, TokenStats]:
    d, label_key = recipe.data, recipe.method.label_key
    stats = TokenStats()
    settings = {
        "label_key": label_key,
        "max_seq_len": d.max_seq_len,
        "truncation": d.truncation,
        "template": tokenizer.template.name,
    }

    def encode(record):
        messages, completion, desirable = to_unpaired_messages(record.data, label_key)
        ids = encode_unpaired(tokenizer, messages, completion, d.max_seq_len, d.truncation, stats)
        return None if ids is None else {"prompt": ids[0], "completion": ids[1], "desirable": desirable}

    ds = cached_dataset(
        "kto",
        spec.path,
        tokenizer,
        settings,
        encode,
        ["prompt", "completion", "desirable"],
        d.cache_dir,
        d.skip_bad_lines,
        spec.max_samples,
        stats,
        reading=read_options(spec),
    )
    examples = Unpaired(ds["prompt"], ds["completion"], ds["desirable"])
    good = int(sum(examples.desirable))
    log.info("%s: %s, %d desirable / %d undesirable", spec.path, stats.as_dict(), good, len(ds) - good)
    return examples, stats


class KTO(FileMethod):
    name = "kto"

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, model, rank: int = 0, world: int = 1):
        d = recipe.data
        if model is not None and model.args.vision is not None:
            raise ConfigError("KTO trains text models; images are not read yet", key="method.name")
        self.cfg, self.tokenizer, self.model = recipe.method, tokenizer, model
        self.max_len, self.packing = d.max_seq_len, d.packing
        self.load_sources(recipe, lambda spec: load_unpaired(spec, recipe, tokenizer), rank, world)
        self.ref = Reference(recipe, model, needed=True)
        log.info("KTO: beta %g, weights %g / %g, reference: %s", self.cfg.beta,
                 self.cfg.desirable_weight, self.cfg.undesirable_weight, self.ref.kind)  # fmt: skip

    # --- batches ---------------------------------------------------------------------------------------
    def _collate(self, items, length) -> dict:
        return to_tensors(collate_shared_prefix(items, self.tokenizer.pad_id, length))

    def _materialize(self, rows: list, sources: list, partners: dict) -> dict:
        """The rows' examples as a batch, and (``kl``) each prompt with its partner's completion."""
        items, kl_items, desirable = [], [], []
        for row in rows:
            items.append([])
            for s, i in row:
                src = sources[s]
                items[-1].append((src.prompt[i], [(src.completion[i], (s, i))]))
                ps, pi = partners[(s, i)]
                kl_items.append([(src.prompt[i], [(sources[ps].completion[pi], (s, i))])])
                desirable.append(float(src.desirable[i]))
        batch = self._collate(items, self.max_len if self.packing else None)
        batch["kl"] = self._collate(kl_items, None)  # one per row: a partner may not fit the packed row
        batch["desirable"] = paddle.to_tensor(desirable, "float32")
        return batch

    @staticmethod
    def _partners(rows: list) -> dict:
        """Each example's partner: the next example of the same step, over all data ranks (the last one's
        is the first)."""
        order = [item for row in rows for item in row]
        return {item: order[(k + 1) % len(order)] for k, item in enumerate(order)}

    def next_micro_batches(self, count: int) -> list[dict]:
        n = count * self.micro_batch_size
        step = self.loader.next_rows(n, every_rank=True)  # partners come from the whole step
        partners = self._partners(step)
        rows = step[self.rank * n : (self.rank + 1) * n]
        return [
            self._materialize(rows[i : i + self.micro_batch_size], self.train_sources, partners)
            for i in range(0, len(rows), self.micro_batch_size)
        ]

    @paddle.no_grad()
    def kl_terms(self, model, batch: dict) -> paddle.Tensor:
        """pi - rho [n] of the batch's mismatched pairs."""
        kl = batch["kl"]
        return completion_logps(model, kl) - self.ref.run(model, lambda m: completion_logps(m, kl))

    def normalizer(self, batches: list[dict]) -> dict[str, float]:
        """Examples of the step, and the sums z0 is the mean of (all-reduced over data ranks)."""
        kl = [self.kl_terms(self.model, b) for b in batches]
        desirable = sum(float(b["desirable"].sum()) for b in batches)
        n = float(sum(int(b["desirable"].shape[0]) for b in batches))
        return {
            "examples": n,
            "desirable": desirable,
            "undesirable": n - desirable,
            "kl_sum": float(sum(float(k.sum()) for k in kl)),
        }

    @staticmethod
    def input_tokens(batch: dict) -> int:
        return int((batch["segment_ids"] > 0).sum())

    # --- loss ------------------------------------------------------------------------------------------
    def terms(self, model, batch: dict, z0: float):
        pi = completion_logps(model, batch)
        rho = self.ref.run(model, lambda m: completion_logps(m, batch))
        reward = pi - rho
        c = self.cfg
        losses = kto_loss(reward, batch["desirable"], z0, c.beta, c.desirable_weight, c.undesirable_weight)
        return losses, c.beta * reward.detach()

    def loss(self, model, batch: dict, norm: dict[str, float]) -> tuple[paddle.Tensor, dict[str, float]]:
        z0 = max(0.0, norm["kl_sum"] / norm["examples"])
        losses, rewards = self.terms(model, batch, z0)
        good = batch["desirable"]
        r_good = float((rewards * good).sum()) / max(norm["desirable"], 1e-9)
        r_bad = float((rewards * (1 - good)).sum()) / max(norm["undesirable"], 1e-9)
        share = 1.0 / norm["examples"]
        # the loop sums a step's micro-batch stats: each contributes its share of the step's means
        stats = {
            "rewards/chosen": r_good,
            "rewards/rejected": r_bad,
            "rewards/margin": r_good - r_bad,
            "kl": z0 * float(good.shape[0]) * share,
        }
        return losses.sum() * share, stats

    @paddle.no_grad()
    def evaluate(self, model, max_batches: int = 0) -> dict[str, float]:
        if not self.eval_row_list:
            return {}
        with evaluating(model):
            chunks = self.eval_chunks(max_batches)
            partners = self._partners([row for rows in chunks for row in rows])
            batches = [self._materialize(rows, self.eval_sources, partners) for rows in chunks]
            kl = np.concatenate([self.kl_terms(model, b).numpy() for b in batches])
            z0 = max(0.0, float(kl.mean()))
            losses, rewards, good = [], [], []
            for b in batches:
                loss, reward = self.terms(model, b, z0)
                losses.append(loss.numpy())
                rewards.append(reward.numpy())
                good.append(b["desirable"].numpy() > 0.5)
            losses, rewards, good = map(np.concatenate, (losses, rewards, good))
        chosen = float(rewards[good].mean()) if good.any() else 0.0
        rejected = float(rewards[~good].mean()) if (~good).any() else 0.0
        return {
            "loss": float(losses.mean()),
            "rewards/chosen": chosen,
            "rewards/rejected": rejected,
            "rewards/margin": chosen - rejected,
            "kl": z0,
            "examples": float(len(losses)),
        }
