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

import dataclasses
import logging
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
from safetensors.numpy import load_file, save_file

from erniekit.config.schema import Recipe
from erniekit.data.dataset import cached_dataset
from erniekit.data.files import read_options, resolve_data_path
from erniekit.data.loader import RowLoader, eval_rows
from erniekit.data.multimodal import (
    MEDIA_COLUMNS,
    encode_conversation,
    image_path,
    media_columns,
    media_features,
    media_inputs,
    media_parts,
)
from erniekit.data.packing import collate_shared_prefix
from erniekit.data.preference import encode_pair, to_pair_messages
from erniekit.data.tokenize import TokenStats
from erniekit.errors import CheckpointError
from erniekit.methods.base import Reference, holdout_split, spec_weights, target_logps, to_tensors
from erniekit.tokenizer import Tokenizer
from erniekit.trainer.restore import recipe_processor

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
    logps = paddle.index_add(paddle.zeros([n_seq], "float32"), seq, 0, token_logp)
    lengths = paddle.index_add(paddle.zeros([n_seq], "float32"), seq, 0, paddle.ones_like(token_logp))
    return logps, lengths


class PairExamples:
    """Tokenized pairs of one file; a VL model's prompt images stay in the dataset (``media``)."""

    def __init__(self, prompt, chosen, rejected, media=None, processor=None):
        self.prompt, self.chosen, self.rejected = prompt, chosen, rejected
        self.media, self.processor = media, processor
        self.lengths = np.array(
            [len(p) + len(c) + len(r) for p, c, r in zip(prompt, chosen, rejected)], np.int64
        )

    def select(self, indices) -> PairExamples:
        media = None if self.media is None else self.media.select(indices)
        columns = ([col[i] for i in indices] for col in (self.prompt, self.chosen, self.rejected))
        return PairExamples(*columns, media, self.processor)

    def __getitem__(self, i: int):
        if self.media is None:
            return self.prompt[i], self.chosen[i], self.rejected[i]
        return self.prompt[i], self.chosen[i], self.rejected[i], media_inputs(self.media[i], self.processor)


def load_pairs(spec, recipe: Recipe, tokenizer: Tokenizer, args=None) -> tuple[PairExamples, TokenStats]:
    d = recipe.data
    stats = TokenStats()
    settings = {
        "format": spec.format,
        "max_seq_len": d.max_seq_len,
        "truncation": d.truncation,
        "template": tokenizer.template.name,
    }
    columns, dependencies, features = ["prompt", "chosen", "rejected"], [], None
    processor = recipe_processor(recipe, args) if args is not None else None
    seen: dict = {}
    encode_chat = None
    if processor is not None:
        base_dir = resolve_data_path(spec.path).parent
        settings.update(processor=processor.to_config(), vision=dataclasses.asdict(args.vision))
        settings["base_dir"] = str(base_dir.resolve())
        columns, features = columns + list(MEDIA_COLUMNS), media_features()

        def encode_chat(messages, add_generation_prompt):
            ids, trainable, images, videos = encode_conversation(
                tokenizer, processor, args.vision, messages, add_generation_prompt, base_dir
            )
            seen["media"] = (images, videos)
            dependencies.extend(p for _, src in media_parts(messages) if (p := image_path(src, base_dir)))
            return ids, trainable

    def encode(record):
        messages, chosen, rejected = to_pair_messages(record.data, spec.format)
        pair = encode_pair(
            tokenizer, messages, chosen, rejected, d.max_seq_len, d.truncation, stats, encode_chat
        )
        if pair is None:
            return None
        row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
        return row if processor is None else {**row, **media_columns(*seen["media"])}

    ds = cached_dataset(
        "dpo",
        spec.path,
        tokenizer,
        settings,
        encode,
        columns,
        d.cache_dir,
        d.skip_bad_lines,
        spec.max_samples,
        stats,
        dependencies,
        features,
        read_options(spec),
    )
    log.info("%s: %s", spec.path, stats.as_dict())
    media = ds.select_columns(list(MEDIA_COLUMNS)) if processor is not None else None
    return PairExamples(ds["prompt"], ds["chosen"], ds["rejected"], media, processor), stats


class DPO:
    name = "dpo"

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, model, rank: int = 0, world: int = 1):
        d, t = recipe.data, recipe.train
        self.cfg, self.recipe, self.tokenizer = recipe.method, recipe, tokenizer
        self.micro_batch_size, self.max_len, self.packing = t.micro_batch_size, d.max_seq_len, d.packing
        self.rank, self.world = rank, world
        self.vision = model.args.vision if model is not None else None
        args = model.args if model is not None else None
        self.train_sources, self.eval_sources = [], []
        for spec in d.train:
            pairs, _ = load_pairs(spec, recipe, tokenizer, args)
            if d.eval_holdout and not d.eval:
                keep, held = holdout_split(len(pairs.lengths), d.eval_holdout, t.seed, spec.path)
                self.eval_sources.append(pairs.select(held))
                pairs = pairs.select(keep)
            self.train_sources.append(pairs)
        self.eval_sources += [load_pairs(spec, recipe, tokenizer, args)[0] for spec in d.eval]
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
                d.mix,
            )
        )
        self.eval_row_list = eval_rows([s.lengths for s in self.eval_sources], d.max_seq_len, d.packing)
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
        was_training = model.training
        model.eval()
        sources = [source] * n_sources
        for i in range(0, len(rows), self.micro_batch_size):
            batch = self._materialize(rows[i : i + self.micro_batch_size], sources)
            logps, _ = sequence_logps(model, batch)
            keys = batch["pair_keys"].numpy()
            out[keys[:, 1]] = logps.numpy().reshape(-1, 2)
        if was_training:
            model.train()
        return out

    # --- batches ---------------------------------------------------------------------------------------
    def _materialize(self, rows, sources) -> dict:
        items = []
        for row in rows:
            items.append([])
            for s, i in row:
                prompt, chosen, rejected, *media = sources[s][i]  # media: a VL prompt's (images, videos)
                items[-1].append((prompt, [(chosen, (s, i)), (rejected, (s, i))], *media))
        length = self.max_len if self.packing else None
        batch = to_tensors(collate_shared_prefix(items, self.tokenizer.pad_id, length, self.vision))
        batch["pair_keys"] = batch.pop("seq_keys")[0::2]
        return batch

    def next_micro_batches(self, count: int) -> list[dict]:
        rows = self.loader.next_rows(count * self.micro_batch_size)
        return [
            self._materialize(rows[i : i + self.micro_batch_size], self.train_sources)
            for i in range(0, len(rows), self.micro_batch_size)
        ]

    def normalizer(self, batches: list[dict]) -> dict[str, float]:
        return {"pairs": float(sum(int(b["pair_keys"].shape[0]) for b in batches))}

    @staticmethod
    def input_tokens(batch: dict) -> int:
        return int((batch["segment_ids"] > 0).sum())

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
        was_training = model.training
        model.eval()
        rows = self.eval_row_list[self.rank :: self.world]
        totals = {"loss": 0.0, "rewards/accuracy": 0.0, "rewards/margin": 0.0}
        n = 0
        for k, i in enumerate(range(0, len(rows), self.micro_batch_size)):
            if max_batches and k >= max_batches:
                break
            batch = self._materialize(rows[i : i + self.micro_batch_size], self.eval_sources)
            losses, r_c, r_r, _, _ = self.pair_terms(model, batch, "eval")
            totals["loss"] += float(losses.sum())
            totals["rewards/accuracy"] += float((r_c > r_r).astype("float32").sum())
            totals["rewards/margin"] += float((r_c - r_r).sum())
            n += len(losses)
        if was_training:
            model.train()
        return {**{k: v / max(n, 1) for k, v in totals.items()}, "pairs": float(n)}

    # --- schedule & state ------------------------------------------------------------------------------
    def steps_per_epoch(self, grad_accum: int) -> int:
        return max(1, self.loader.rows_per_epoch() // (self.micro_batch_size * grad_accum * self.world))

    @property
    def epoch(self) -> float:
        return self.loader.epoch

    def state_dict(self) -> dict:
        return {"loader": self.loader.state_dict()}

    def set_state_dict(self, state: dict) -> None:
        self.loader.set_state_dict(state["loader"])
