"""What the methods trained on preference pairs share (DPO and its losses, reward models): loading the
pairs, holding some out, batching each pair as [prompt | chosen | rejected] with one shared prompt, the
epoch schedule and the loader's resumable state.

A subclass provides ``loss`` and ``evaluate``; a batch carries ``pair_keys`` [M, 2] (file, record) in the
order chosen_0, rejected_0, chosen_1, ... of its replies, and ``margin`` [M] when the pairs have one.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import paddle

from erniekit.config.schema import Recipe
from erniekit.data.dataset import cached_dataset
from erniekit.data.files import read_options, resolve_data_path
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
from erniekit.methods.base import FileMethod, to_tensors
from erniekit.tokenizer import Tokenizer
from erniekit.trainer.restore import recipe_processor

log = logging.getLogger(__name__)


class PairExamples:
    """Tokenized pairs of one file; a VL model's prompt images stay in the dataset (``media``);
    ``margin`` is each pair's required score gap (reward models), when the file gives one."""

    def __init__(self, prompt, chosen, rejected, media=None, processor=None, margin=None):
        self.prompt, self.chosen, self.rejected = prompt, chosen, rejected
        self.media, self.processor, self.margin = media, processor, margin
        self.lengths = np.array(
            [len(p) + len(c) + len(r) for p, c, r in zip(prompt, chosen, rejected)], np.int64
        )

    def select(self, indices) -> PairExamples:
        media = None if self.media is None else self.media.select(indices)
        columns = ([col[i] for i in indices] for col in (self.prompt, self.chosen, self.rejected))
        margin = None if self.margin is None else [self.margin[i] for i in indices]
        return PairExamples(*columns, media, self.processor, margin)

    def __getitem__(self, i: int):
        if self.media is None:
            return self.prompt[i], self.chosen[i], self.rejected[i]
        return self.prompt[i], self.chosen[i], self.rejected[i], media_inputs(self.media[i], self.processor)


def read_margin(record: dict, key: str) -> float:
    value = record.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"field {key!r} must be a number, got {type(value).__name__}")
    return float(value)


def load_pairs(
    spec, recipe: Recipe, tokenizer: Tokenizer, args=None, margin_key: str | None = None
) -> tuple[PairExamples, TokenStats]:
    """The tokenized pairs of one file (cached); ``margin_key`` also reads each record's margin."""
    d = recipe.data
    stats = TokenStats()
    settings = {
        "format": spec.format,
        "max_seq_len": d.max_seq_len,
        "truncation": d.truncation,
        "template": tokenizer.template.name,
    }
    columns, dependencies, features = ["prompt", "chosen", "rejected"], [], None
    if margin_key:
        settings["margin_key"], columns = margin_key, [*columns, "margin"]
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
        margin = read_margin(record.data, margin_key) if margin_key else None
        pair = encode_pair(
            tokenizer, messages, chosen, rejected, d.max_seq_len, d.truncation, stats, encode_chat
        )
        if pair is None:
            return None
        row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
        if margin_key:
            row["margin"] = margin
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
    margin = ds["margin"] if margin_key else None
    return PairExamples(ds["prompt"], ds["chosen"], ds["rejected"], media, processor, margin), stats


class PairMethod(FileMethod):
    """Loading, batching and scheduling of pairs; subclasses define the loss."""

    margin_key: str | None = None  # a record field read as each pair's margin

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, model, rank: int = 0, world: int = 1):
        d = recipe.data
        self.cfg, self.recipe, self.tokenizer = recipe.method, recipe, tokenizer
        self.max_len, self.packing = d.max_seq_len, d.packing
        self.vision = model.args.vision if model is not None else None
        args = model.args if model is not None else None
        self.load_sources(
            recipe, lambda spec: load_pairs(spec, recipe, tokenizer, args, self.margin_key), rank, world
        )

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
        if self.margin_key:
            keys = batch["pair_keys"].numpy()
            batch["margin"] = paddle.to_tensor([float(sources[s].margin[i]) for s, i in keys], "float32")
        return batch

    def next_micro_batches(self, count: int) -> list[dict]:
        rows = self.loader.next_rows(count * self.micro_batch_size)
        return [
            self._materialize(rows[i : i + self.micro_batch_size], self.train_sources)
            for i in range(0, len(rows), self.micro_batch_size)
        ]

    def eval_batches(self, max_batches: int = 0):
        """This rank's share of the held-out pairs, batch by batch."""
        for rows in self.eval_chunks(max_batches):
            yield self._materialize(rows, self.eval_sources)

    def normalizer(self, batches: list[dict]) -> dict[str, float]:
        return {"pairs": float(sum(int(b["pair_keys"].shape[0]) for b in batches))}

    @staticmethod
    def input_tokens(batch: dict) -> int:
        return int((batch["segment_ids"] > 0).sum())
