"""Packing examples into fixed-length rows, and rows into padded batch arrays.

A packed row concatenates several examples. Each example keeps its own positions (0, 1, ...) and a
segment id (1, 2, ...; padding is 0); the model's attention mask allows a token to see only earlier
tokens of its own segment, so packed documents never attend to each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from erniekit.data.tokenize import IGNORE


def pack(lengths: Sequence[int], max_len: int, open_rows: int = 16) -> list[list[int]]:
    """Group example indices (in the given order) into rows of total length <= max_len.

    First fit over a window of ``open_rows`` rows: an example goes into the first open row with room;
    when none has room and the window is full, the fullest open row is closed. Deterministic.
    """
    rows: list[list[int]] = []
    window: list[tuple[int, list[int]]] = []  # (used, indices)
    for i, n in enumerate(lengths):
        if n > max_len:
            raise ValueError(f"example {i} has {n} tokens, more than max_len {max_len}")
        for j, (used, members) in enumerate(window):
            if used + n <= max_len:
                window[j] = (used + n, [*members, i])
                break
        else:
            if len(window) == open_rows:
                fullest = max(range(len(window)), key=lambda j: window[j][0])
                rows.append(window.pop(fullest)[1])
            window.append((n, [i]))
    rows += [members for _, members in window]
    return rows


def collate(
    rows: Sequence[Sequence[tuple[list[int], list[int]]]], pad_id: int, length: int | None = None
) -> dict:
    """Rows of (input_ids, labels) examples -> int64 arrays [B, S] padded to ``length`` (or the longest).

    Returns input_ids, labels, position_ids and segment_ids.
    """
    longest = max(sum(len(ids) for ids, _ in row) for row in rows)
    length = length or longest
    b = len(rows)
    out = {
        "input_ids": np.full((b, length), pad_id, np.int64),
        "labels": np.full((b, length), IGNORE, np.int64),
        "position_ids": np.zeros((b, length), np.int64),
        "segment_ids": np.zeros((b, length), np.int64),
    }
    for r, row in enumerate(rows):
        start = 0
        for seg, (ids, labels) in enumerate(row, start=1):
            end = start + len(ids)
            out["input_ids"][r, start:end] = ids
            out["labels"][r, start:end] = labels
            out["position_ids"][r, start:end] = np.arange(len(ids))
            out["segment_ids"][r, start:end] = seg
            start = end
    return out
