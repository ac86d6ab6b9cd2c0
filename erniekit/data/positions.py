"""3D rotary positions of token sequences that hold images: the reference's counter, in NumPy.

Legend: B batch, S sequence, m spatial merge size; a grid (t, h, w) counts patches. ``v`` is any object
with a model's VisionArgs fields (token ids and merge sizes).

Per row, over its real tokens (transformers' ``get_rope_index``): a text run of n tokens takes
``cur .. cur+n-1`` on all three axes (t, h, w); an image takes ``t = cur``, ``h = cur + row``,
``w = cur + column`` of its merged grid (video: ``t = cur + frame``), then ``cur += max(h, w) / m``.
The rotary type of a token is 1 on image placeholders, 2 on video placeholders, 0 elsewhere (start/end
tokens are text); the tokens routed to vision experts are the placeholders and their start/end markers.
"""

from __future__ import annotations

import numpy as np

from erniekit.errors import DataError


def grid_list(grid_thw) -> list[tuple[int, int, int]]:
    """Grids as plain ints, from an [n, 3] array, tensor (anything with .numpy()) or list."""
    if hasattr(grid_thw, "numpy"):
        grid_thw = grid_thw.numpy()
    return [(int(t), int(h), int(w)) for t, h, w in np.asarray(grid_thw).reshape(-1, 3)]


def rope_types(ids: np.ndarray, v) -> np.ndarray:
    return np.where(ids == v.image_token_id, 1, np.where(ids == v.video_token_id, 2, 0))


def vision_tokens(v) -> list[int]:
    """The ids that go to the vision experts: placeholders and their start/end markers."""
    ids = (
        v.image_token_id,
        v.image_start_token_id,
        v.image_end_token_id,
        v.video_token_id,
        v.video_start_token_id,
        v.video_end_token_id,
    )
    return sorted({i for i in ids if i})


def multimodal_positions(
    ids: np.ndarray, real: np.ndarray | None, image_grids, video_grids, v
) -> tuple[np.ndarray, np.ndarray]:
    """positions [3, B, S] (t, h, w; 0 on padding) and deltas [B] for ids [B, S] (real: [B, S] bool)."""
    b, s = ids.shape
    real = np.ones((b, s), bool) if real is None else real.astype(bool)
    m = v.spatial_merge_size
    grids = {1: iter(grid_list(image_grids)), 2: iter(grid_list(video_grids))}
    positions = np.zeros((3, b, s), np.int64)
    deltas = np.zeros(b, np.int64)
    types_all = rope_types(ids, v)
    for row in range(b):
        types = types_all[row][real[row]]
        pieces, cur, i = [], 0, 0
        while i < len(types):
            kind, j = types[i], i
            if kind == 0:
                while j < len(types) and types[j] == 0:
                    j += 1
                pieces.append(np.broadcast_to(cur + np.arange(j - i), (3, j - i)))
                cur += j - i
            else:  # one image (or video) at a time, also when two follow each other directly
                try:
                    t, h, w = next(grids[kind])
                except StopIteration:
                    raise DataError(f"row {row}: more image placeholders than images") from None
                tm = 1 if kind == 1 else v.temporal_merge_size
                gt, gh, gw = max(t // tm, 1), h // m, w // m
                j = i + gt * gh * gw
                if j > len(types) or (types[i:j] != kind).any():
                    raise DataError(
                        f"row {row}: an image of grid {[t, h, w]} needs {gt * gh * gw} placeholders"
                    )
                tt, hh, ww = np.meshgrid(np.arange(gt), np.arange(gh), np.arange(gw), indexing="ij")
                pieces.append(np.stack([tt.ravel(), hh.ravel(), ww.ravel()]) + cur)
                cur += max(h, w) // m
            i = j
        flat = np.concatenate(pieces, axis=1) if pieces else np.zeros((3, 0), np.int64)
        positions[:, row, real[row]] = flat
        deltas[row] = (flat.max() + 1 - flat.shape[1]) if flat.size else 0
    for kind, left in grids.items():
        if next(left, None) is not None:
            raise DataError(f"more {'images' if kind == 1 else 'videos'} than placeholders in the prompts")
    return positions, deltas
