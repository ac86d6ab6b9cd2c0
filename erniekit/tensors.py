"""Tensor -> array helpers every floor may import (checkpoints, parallel layouts, models)."""

from __future__ import annotations

import numpy as np
import paddle


def to_numpy(t: paddle.Tensor) -> np.ndarray:
    """A tensor as a NumPy array; bfloat16/float16 widened to float32 (NumPy has no bfloat16)."""
    return (t.astype("float32") if t.dtype in (paddle.bfloat16, paddle.float16) else t).numpy()
