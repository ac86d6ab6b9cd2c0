"""Supervised fine-tuning: next-token cross-entropy on assistant tokens, packed rows.

    loss = sum over trained tokens of -log p(token | prefix)  /  trained tokens in the whole step

plus, for MoE models, ``router_aux_loss_coef`` x the mean load-balancing loss of the step's micro-batches.
Batches: ``input_ids``, ``labels`` (-100 where not trained), ``position_ids`` and ``segment_ids`` [B, S].
A vision-language model's batches have 3D ``position_ids`` [3, B, S] (each packed document counted from
0) and the batch's images (``pixel_values``, ``image_grid_thw``), each encoded once per step; image
tokens are never trained on.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import paddle

from erniekit.config.schema import Recipe
from erniekit.data.dataset import cached_dataset
from erniekit.data.files import read_options, resolve_data_path
from erniekit.data.formats import to_chat
from erniekit.data.multimodal import (
    MEDIA_COLUMNS,
    collate_vl,
    encode_vl_sft,
    image_path,
    media_features,
    media_inputs,
    media_parts,
)
from erniekit.data.packing import collate
from erniekit.data.tokenize import IGNORE, TokenStats, encode_sft
from erniekit.methods.base import FileMethod, evaluating, media_kwargs, to_tensors
from erniekit.ops.cross_entropy import lm_head_nll
from erniekit.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class Examples:
    """Tokenized examples of one file, held as Python lists (fast random access while packing); the
    images of a vision-language model's examples stay in the memory-mapped dataset (``media``)."""

    def __init__(self, input_ids: list[list[int]], labels: list[list[int]], media=None, processor=None):
        self.input_ids, self.labels, self.media, self.processor = input_ids, labels, media, processor
        self.lengths = np.array([len(x) for x in input_ids], dtype=np.int64)

    def select(self, indices: np.ndarray) -> Examples:
        media = None if self.media is None else self.media.select(indices)
        return Examples(
            [self.input_ids[i] for i in indices], [self.labels[i] for i in indices], media, self.processor
        )

    def __getitem__(self, i: int) -> tuple:
        if self.media is None:
            return self.input_ids[i], self.labels[i]
        return self.input_ids[i], self.labels[i], *media_inputs(self.media[i], self.processor)


def load_sft_examples(spec, recipe: Recipe, tokenizer: Tokenizer, args=None) -> tuple[Examples, TokenStats]:
    """The examples of one file; ``args`` (the model's ModelArgs) decides whether images are read."""
    d = recipe.data
    stats = TokenStats()
    settings = {
        "format": spec.format,
        "max_seq_len": d.max_seq_len,
        "truncation": d.truncation,
        "template": tokenizer.template.name,
        "keep_reasoning": d.keep_reasoning,
    }
    columns, dependencies = ["input_ids", "labels"], []
    vision = getattr(args, "vision", None)
    if vision is None:

        def encode(record):
            messages, tools = to_chat(record.data, spec.format)
            pair = encode_sft(
                tokenizer, messages, d.max_seq_len, d.truncation, stats, tools, d.keep_reasoning
            )
            return None if pair is None else {"input_ids": pair[0], "labels": pair[1]}

    else:
        from erniekit.trainer.restore import recipe_processor

        processor = recipe_processor(recipe, args)
        base_dir = resolve_data_path(spec.path).parent  # image paths are relative to the data file
        # the same file in another directory names other images
        settings.update(
            processor=processor.to_config(),
            vision=dataclasses.asdict(vision),
            base_dir=str(base_dir.resolve()),
        )
        columns += list(MEDIA_COLUMNS)

        def encode(record):
            messages, tools = to_chat(record.data, spec.format)
            dependencies.extend(p for _, src in media_parts(messages) if (p := image_path(src, base_dir)))
            return encode_vl_sft(
                tokenizer,
                processor,
                vision,
                messages,
                d.max_seq_len,
                d.truncation,
                stats,
                base_dir,
                tools,
                d.keep_reasoning,
            )

    ds = cached_dataset(
        "sft",
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
        None if vision is None else media_features(),
        read_options(spec),
    )
    log.info("%s: %s", spec.path, stats.as_dict())
    if vision is None:
        return Examples(ds["input_ids"], ds["labels"]), stats
    return Examples(ds["input_ids"], ds["labels"], ds.select_columns(list(MEDIA_COLUMNS)), processor), stats


class SFT(FileMethod):
    name = "sft"

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, model=None, rank: int = 0, world: int = 1):
        d = recipe.data
        self.tokenizer, self.max_len, self.packing = tokenizer, d.max_seq_len, d.packing
        args = getattr(model, "args", None)
        self.vision = getattr(args, "vision", None)
        self.load_sources(recipe, lambda spec: self.load_examples(spec, recipe, tokenizer, args), rank, world)

    def load_examples(self, spec, recipe: Recipe, tokenizer: Tokenizer, args) -> tuple[Examples, TokenStats]:
        return load_sft_examples(spec, recipe, tokenizer, args)

    # --- batches -------------------------------------------------------------------------------
    def _materialize(self, rows, sources) -> dict:
        examples = [[sources[s][i] for s, i in row] for row in rows]
        length = self.max_len if self.packing else None
        if self.vision is not None:
            return to_tensors(collate_vl(examples, self.tokenizer.pad_id, length, self.vision))
        return to_tensors(collate(examples, self.tokenizer.pad_id, length))

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
            **media_kwargs(batch),
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
        with evaluating(model):
            total, tokens = 0.0, 0
            for rows in self.eval_chunks(max_batches):
                batch = self._materialize(rows, self.eval_sources)
                nll, _ = self.token_nll(model, batch)
                total += float(nll.sum())
                tokens += int((batch["labels"] != IGNORE).sum())
        loss = total / max(tokens, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": float(tokens)}
