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


def collate_shared_prefix(
    rows: Sequence[Sequence[tuple]], pad_id: int, length: int | None = None, vision=None
) -> dict:
    """Rows of items ``(prompt, [(reply, key), ...])`` -> arrays, each item packed once as
    [prompt | reply 1 | reply 2 | ...] with branch ids 0, 1, 2, ... and every reply positioned right after
    the prompt (a DPO pair has two replies, a GRPO group one per sampled completion).

    With ``vision`` (a VL model's VisionArgs) items are ``(prompt, replies, (images, videos))``:
    position_ids are 3D [3, B, S], the prompt's from the multimodal counter and each reply continuing
    on all axes after the prompt's largest position; the prompts' images (each once) are added as
    pixel_values / image_grid_thw (and videos), in the order of the rows and items.

    Targets are listed sparsely, since the prompt's last token predicts the first token of every reply:
    ``target_index`` (flat position in [B*S]), ``target_token``, ``target_position`` (where the token
    itself sits, flat) and ``target_seq`` (the reply's number in the batch, in order); ``seq_keys``
    [n_replies, len(key)] carries each reply's key.
    """
    longest = max(sum(len(p) + sum(len(r) for r, _ in replies) for p, replies, *_ in row) for row in rows)
    length = length or longest
    b = len(rows)
    out = {name: np.zeros((b, length), np.int64) for name in ("input_ids", "segment_ids", "branch_ids")}
    positions = np.zeros((3, b, length) if vision is not None else (1, b, length), np.int64)
    out["input_ids"][:] = pad_id
    index, where, token, seq, keys, media = [], [], [], [], [], []
    for row_i, row in enumerate(rows):
        start, base = 0, row_i * length
        for seg, (prompt, replies, *extra) in enumerate(row, start=1):
            n_p = len(prompt)
            end = start + n_p + sum(len(r) for r, _ in replies)
            out["input_ids"][row_i, start:end] = [*prompt, *(t for r, _ in replies for t in r)]
            first = n_p  # where replies start counting
            if vision is None:
                positions[0, row_i, start : start + n_p] = np.arange(n_p)
            else:
                from erniekit.data.positions import multimodal_positions

                images, videos = extra[0] if extra else (None, None)
                grids = [x.grid_thw if x is not None else [] for x in (images, videos)]
                doc, delta = multimodal_positions(np.asarray([prompt]), None, *grids, vision)
                positions[:, row_i, start : start + n_p] = doc[:, 0]
                first = n_p + int(delta[0])
                media.append((images, videos))
            out["segment_ids"][row_i, start:end] = seg
            offset = start + n_p
            for branch, (reply, key) in enumerate(replies, start=1):
                span = slice(offset, offset + len(reply))
                positions[:, row_i, span] = np.arange(first, first + len(reply))
                out["branch_ids"][row_i, span] = branch
                # token j of a reply is predicted at the previous position: the prompt's last token for j=0
                index += [base + start + n_p - 1] + [base + offset + j - 1 for j in range(1, len(reply))]
                where += range(base + offset, base + offset + len(reply))
                token += list(reply)
                seq += [len(keys)] * len(reply)
                keys.append(key)
                offset += len(reply)
            start = end
    out["position_ids"] = positions if vision is not None else positions[0]
    if vision is not None:
        from erniekit.data.images import ImageInputs

        for (name, grid), items in zip(
            (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw")), zip(*media)
        ):
            joined = ImageInputs.concat(list(items))
            if joined is not None:
                out[name], out[grid] = joined.pixel_values, joined.grid_thw
    out.update(
        target_index=np.array(index, np.int64),
        target_position=np.array(where, np.int64),
        target_token=np.array(token, np.int64),
        target_seq=np.array(seq, np.int64),
        seq_keys=np.array(keys, np.int64).reshape(len(keys), -1),
    )
    return out
