"""Supervised fine-tuning: next-token cross-entropy on assistant tokens, packed rows.

    loss = sum over trained tokens of -log p(token | prefix)  /  trained tokens in the whole step

plus, for MoE models, ``router_aux_loss_coef`` x the mean load-balancing loss of the step's micro-batches.
Batches: ``input_ids``, ``labels`` (-100 where not trained), ``position_ids`` and ``segment_ids`` [B, S].
"""

from __future__ import annotations

import logging
import math

import numpy as np
import paddle

from erniekit.config.schema import Recipe
from erniekit.data.dataset import cached_dataset
from erniekit.data.formats import to_messages
from erniekit.data.loader import RowLoader, eval_rows
from erniekit.data.packing import collate
from erniekit.data.tokenize import IGNORE, TokenStats, encode_sft
from erniekit.methods.base import holdout_split, spec_weights, to_tensors
from erniekit.ops.cross_entropy import lm_head_nll
from erniekit.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class Examples:
    """Tokenized examples of one file, held as Python lists (fast random access while packing)."""

    def __init__(self, input_ids: list[list[int]], labels: list[list[int]]):
        self.input_ids, self.labels = input_ids, labels
        self.lengths = np.array([len(x) for x in input_ids], dtype=np.int64)

    def select(self, indices: np.ndarray) -> Examples:
        return Examples([self.input_ids[i] for i in indices], [self.labels[i] for i in indices])

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.input_ids[i], self.labels[i]


def load_sft_examples(spec, recipe: Recipe, tokenizer: Tokenizer) -> tuple[Examples, TokenStats]:
    d = recipe.data
    stats = TokenStats()

    def encode(record):
        pair = encode_sft(
            tokenizer, to_messages(record.data, spec.format), d.max_seq_len, d.truncation, stats
        )
        return None if pair is None else {"input_ids": pair[0], "labels": pair[1]}

    settings = {
        "format": spec.format,
        "max_seq_len": d.max_seq_len,
        "truncation": d.truncation,
        "template": tokenizer.template.name,
    }
    ds = cached_dataset(
        "sft",
        spec.path,
        tokenizer,
        settings,
        encode,
        ("input_ids", "labels"),
        d.cache_dir,
        d.skip_bad_lines,
        spec.max_samples,
        stats,
    )
    log.info("%s: %s", spec.path, stats.as_dict())
    return Examples(ds["input_ids"], ds["labels"]), stats


class SFT:
    name = "sft"

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, model=None, rank: int = 0, world: int = 1):
        d, t = recipe.data, recipe.train
        self.tokenizer, self.micro_batch_size, self.max_len, self.packing = (
            tokenizer,
            t.micro_batch_size,
            d.max_seq_len,
            d.packing,
        )
        self.rank, self.world = rank, world
        self.stats: dict[str, dict] = {}
        self.train_sources, self.eval_sources = [], []
        for spec in d.train:
            examples, stats = load_sft_examples(spec, recipe, tokenizer)
            self.stats[spec.path] = stats.as_dict()
            if d.eval_holdout and not d.eval:
                keep, held = holdout_split(len(examples.lengths), d.eval_holdout, t.seed, spec.path)
                self.eval_sources.append(examples.select(held))
                examples = examples.select(keep)
            self.train_sources.append(examples)
        for spec in d.eval:
            examples, stats = load_sft_examples(spec, recipe, tokenizer)
            self.stats[spec.path] = stats.as_dict()
            self.eval_sources.append(examples)
        self.loader = (
            None
            if not self.train_sources
            else RowLoader(
                [s.lengths for s in self.train_sources],
                spec_weights(d.train),
                d.max_seq_len,
                d.packing,
                t.seed,
                d.shuffle,
                rank,
                world,
            )
        )
        self.eval_row_list = eval_rows([s.lengths for s in self.eval_sources], d.max_seq_len, d.packing)

    # --- batches -------------------------------------------------------------------------------
    def _materialize(self, rows, sources) -> dict:
        examples = [[sources[s][i] for s, i in row] for row in rows]
        arrays = collate(examples, self.tokenizer.pad_id, self.max_len if self.packing else None)
        return to_tensors(arrays)

    def next_micro_batches(self, count: int) -> list[dict]:
        rows = self.loader.next_rows(count * self.micro_batch_size)
        return [
            self._materialize(rows[i : i + self.micro_batch_size], self.train_sources)
            for i in range(0, len(rows), self.micro_batch_size)
        ]

    def normalizer(self, batches: list[dict]) -> dict[str, float]:
        return {
            "tokens": float(sum(int((b["labels"] != IGNORE).sum()) for b in batches)),
            "micro_batches": float(len(batches)),
        }

    @staticmethod
    def input_tokens(batch: dict) -> int:
        return int((batch["segment_ids"] > 0).sum())

    # --- loss ------------------------------------------------------------------------------------
    def token_nll(self, model, batch: dict) -> tuple[paddle.Tensor, paddle.Tensor | None]:
        out = model(
            batch["input_ids"],
            position_ids=batch["position_ids"],
            segment_ids=batch["segment_ids"],
            compute_logits=False,
        )
        return lm_head_nll(out.hidden, model, batch["labels"]), out.aux_loss

    def loss(self, model, batch: dict, norm: dict[str, float]) -> tuple[paddle.Tensor, dict[str, float]]:
        nll, aux = self.token_nll(model, batch)
        loss = nll.sum() / max(norm["tokens"], 1.0)
        stats = {}
        coef = getattr(model.args, "router_aux_loss_coef", 0.0)
        if aux is not None:
            stats["aux_loss"] = float(aux) / norm["micro_batches"]
            if coef:
                loss = loss + coef * aux / norm["micro_batches"]
        return loss, stats

    @paddle.no_grad()
    def evaluate(self, model, max_batches: int = 0) -> dict[str, float]:
        if not self.eval_row_list:
            return {}
        was_training = model.training
        model.eval()
        rows = self.eval_row_list[self.rank :: self.world]
        total, tokens = 0.0, 0
        for n, i in enumerate(range(0, len(rows), self.micro_batch_size)):
            if max_batches and n >= max_batches:
                break
            batch = self._materialize(rows[i : i + self.micro_batch_size], self.eval_sources)
            nll, _ = self.token_nll(model, batch)
            total += float(nll.sum())
            tokens += int((batch["labels"] != IGNORE).sum())
        if was_training:
            model.train()
        loss = total / max(tokens, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": float(tokens)}

    # --- schedule & state -------------------------------------------------------------------------
    def steps_per_epoch(self, grad_accum: int) -> int:
        return max(1, self.loader.rows_per_epoch() // (self.micro_batch_size * grad_accum * self.world))

    @property
    def epoch(self) -> float:
        return self.loader.epoch

    def state_dict(self) -> dict:
        return {"loader": self.loader.state_dict()}

    def set_state_dict(self, state: dict) -> None:
        self.loader.set_state_dict(state["loader"])
