"""Language-model head + cross-entropy, per token.

Legend: B batch, S sequence, H hidden, V vocab. Labels equal to -100 are ignored (their loss is 0).
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

IGNORE = -100


def lm_head_nll(
    hidden_bsh: paddle.Tensor, weight: paddle.Tensor, transposed: bool, labels_bs: paddle.Tensor
) -> paddle.Tensor:
    """Negative log-likelihood [B, S] (float32) of ``labels`` under ``softmax(hidden @ W)``."""
    logits = paddle.matmul(hidden_bsh, weight, transpose_y=transposed).astype("float32")
    nll = F.cross_entropy(logits, labels_bs.unsqueeze(-1), ignore_index=IGNORE, reduction="none")
    return nll.squeeze(-1)
