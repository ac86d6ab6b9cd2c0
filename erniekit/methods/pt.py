"""Continued pre-training (ERNIEKit's PT stage): next-token cross-entropy on every token of raw text.

    loss = sum over all positions of -log p(token | prefix)  /  positions in the whole step

Documents are ``method.text_keys`` of JSON/JSONL records (``{"text": ...}`` by default) or the lines of
plain ``.txt`` files. Each is tokenized and closed with the end-of-text token; a file's documents are
concatenated in order and cut into rows of ``data.max_seq_len`` predicted tokens, consecutive rows
sharing the one token where they meet (a row's inputs are ``stream[i : i + L]``, its labels
``stream[i + 1 : i + L + 1]``). So nothing is padded but a file's last row, and a document may continue
in the next row, as pre-training data is read. The loop, accumulation, evaluation (held-out loss and
perplexity over whole rows), resume and parallel layouts are SFT's.
"""

from __future__ import annotations

import logging

from erniekit.config.core import ConfigError
from erniekit.config.schema import Recipe
from erniekit.data.dataset import cached_dataset
from erniekit.data.files import read_options
from erniekit.data.tokenize import TokenStats
from erniekit.errors import DataError
from erniekit.methods.sft import SFT, Examples
from erniekit.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def document_ids(record, keys: list[str], tokenizer: Tokenizer) -> list[int] | None:
    """A record's document as token ids ending in end-of-text; None for an empty one."""
    present = [k for k in keys if k in record.data]
    if not present:
        raise DataError(f"{record.where}: no {' or '.join(repr(k) for k in keys)} field (method.text_keys)")
    parts = [record.data[k] for k in present]
    bad = [k for k, v in zip(present, parts) if not isinstance(v, str)]
    if bad:
        raise DataError(f"{record.where}: field {bad[0]!r} is not a string")
    text = "\n".join(p for p in parts if p.strip())
    return [*tokenizer.encode(text), tokenizer.eos_id] if text.strip() else None


def rows_of(stream: list[int], length: int) -> tuple[list[list[int]], list[list[int]]]:
    """(inputs, labels) rows of ``length`` positions cut from one token stream (the last may be shorter)."""
    inputs, labels = [], []
    for start in range(0, max(len(stream) - 1, 0), length):
        piece = stream[start : start + length + 1]
        inputs.append(piece[:-1])
        labels.append(piece[1:])
    return inputs, labels


def load_pt_examples(spec, recipe: Recipe, tokenizer: Tokenizer) -> tuple[Examples, TokenStats]:
    d, keys = recipe.data, recipe.method.text_keys
    stats = TokenStats()

    def encode(record):
        ids = document_ids(record, keys, tokenizer)
        if ids is not None:
            stats.examples += 1
        return None if ids is None else {"input_ids": ids}

    settings = {"text_keys": keys, "eos": tokenizer.eos_id}
    ds = cached_dataset(
        "pt", spec.path, tokenizer, settings, encode, ["input_ids"], d.cache_dir, d.skip_bad_lines,
        spec.max_samples, stats, reading=read_options(spec),
    )  # fmt: skip
    stream = [t for doc in ds["input_ids"] for t in doc]
    inputs, labels = rows_of(stream, d.max_seq_len)
    log.info("%s: %d documents, %d tokens, %d rows of %d", spec.path, stats.examples, len(stream),
             len(inputs), d.max_seq_len)  # fmt: skip
    return Examples(inputs, labels), stats


class PT(SFT):
    name = "pt"

    def load_examples(self, spec, recipe: Recipe, tokenizer: Tokenizer, args) -> tuple[Examples, TokenStats]:
        if getattr(args, "vision", None) is not None:
            raise ConfigError("continued pre-training reads text only; use a text model", key="method.name")
        return load_pt_examples(spec, recipe, tokenizer)
