"""Bidirectional attention within segments: vision encoders attend inside each image (or video frame).

Legend: T tokens of all segments concatenated, N heads, D head_dim. q/k/v [T, N, D]; ``lengths`` are
the segments' token counts (summing to T); every token sees every token of its own segment, none else.
The reference loops over segments (a handful of images per batch) with the softmax in float32; the
fused kernel is Paddle's variable-length flash attention (``cu_seqlens``), GPU and bf16/fp16 only.
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from erniekit.ops.registry import Op, rand


def reference(q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, lengths: list[int]) -> paddle.Tensor:
    """-> [T, N * D]."""
    t, n, d = q.shape
    q = q * (d**-0.5)  # scaling the queries costs T*N*D multiplies, the scores N*L*L
    outs = []
    for qs, ks, vs in zip(*(paddle.split(x, lengths, axis=0) for x in (q, k, v))):
        scores = paddle.matmul(qs.transpose([1, 0, 2]), ks.transpose([1, 2, 0])).astype("float32")
        probs = F.softmax(scores, axis=-1).astype(q.dtype)  # [N, L, L]
        outs.append(paddle.matmul(probs, vs.transpose([1, 0, 2])).transpose([1, 0, 2]))  # [L, N, D]
    return paddle.concat(outs).reshape([t, n * d])


def fused(q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, lengths: list[int]) -> paddle.Tensor:
    from paddle.nn.functional.flash_attention import flash_attn_unpadded

    t, n, d = q.shape
    cu = paddle.to_tensor(np.concatenate([[0], np.cumsum(lengths)]).astype("int32"))
    longest = max(lengths)
    out = flash_attn_unpadded(q, k, v, cu, cu, longest, longest, scale=d**-0.5, causal=False)[0]
    return out.reshape([t, n * d])


def _cases(dtype: str):
    lengths = [16, 8, 24]
    q, k, v = (rand([48, 2, 32], dtype, seed=s) for s in range(3))
    return [((q, k, v, lengths), {})]


OP = Op("segment_attention", reference, fused, _cases, half_only=True)
