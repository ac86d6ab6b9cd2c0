"""Grouped-query self-attention with a fused qkv projection, packed-sequence masks and a KV cache.

Legend: B batch, S query length, T key length (cache included), H hidden, N query heads, K kv heads,
G = N / K query heads per kv head, D head_dim.

``qkv_proj`` is [H, (N + 2K) * D] laid out [q heads | k heads | v heads] (ERNIE's Paddle layout).

Masks. Every row may attend to keys that are (a) not in its future, (b) in the same packed document
(``segment_ids``), (c) on its own branch or the shared trunk (``branch_ids``: 0 for a shared prefix,
k > 0 for continuation k; preference pairs pack [prompt | chosen | rejected] once, the rejected reply
seeing the prompt but not the chosen one), and (d) not padding (``key_padding``: True for real tokens,
used by batched generation with left padding). A query always sees itself, so no row is empty.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from erniekit.models.common.args import ModelArgs
from erniekit.models.common.mlp import linear
from erniekit.models.common.rope import apply_rotary


def attention_mask(
    query_len: int,
    key_len: int,
    segment_ids: paddle.Tensor | None = None,
    key_padding: paddle.Tensor | None = None,
    branch_ids: paddle.Tensor | None = None,
) -> paddle.Tensor:
    """Boolean mask [B or 1, 1, S, T]; queries are the last ``query_len`` of the ``key_len`` positions."""
    offset = key_len - query_len
    q_pos = paddle.arange(query_len).unsqueeze(-1) + offset
    k_pos = paddle.arange(key_len).unsqueeze(0)
    allowed = (k_pos <= q_pos).unsqueeze(0)  # [1, S, T]
    if segment_ids is not None:  # packing: same document only (queries and keys share positions here)
        allowed = allowed & (segment_ids.unsqueeze(-1) == segment_ids.unsqueeze(1))
    if branch_ids is not None:  # shared prefixes: a key on another branch is invisible
        key_branch = branch_ids.unsqueeze(1)
        allowed = allowed & ((key_branch == 0) | (key_branch == branch_ids.unsqueeze(-1)))
    if key_padding is not None:
        allowed = allowed & key_padding.astype("bool").unsqueeze(1)
        allowed = allowed | (k_pos == q_pos).unsqueeze(0)
    return allowed.unsqueeze(1)


def sdpa(q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
    """Reference attention. q [B, N, S, D], k/v [B, K, T, D], mask bool [B|1, 1, S, T] -> [B, S, N*D].

    GQA without repeating K/V: the G query heads of one kv head are folded into the query length.
    """
    b, n, s, d = q.shape
    kv = k.shape[1]
    g = n // kv
    qg = q.reshape([b, kv, g * s, d])
    scores = paddle.matmul(qg, k, transpose_y=True).astype("float32") * (d**-0.5)  # [B, K, G*S, T]
    scores = scores.reshape([b, kv, g, s, -1])
    bias = paddle.where(mask, paddle.zeros([], "float32"), paddle.full([], float("-inf"), "float32"))
    probs = F.softmax(scores + bias.unsqueeze(2), axis=-1).astype(q.dtype)
    out = paddle.matmul(probs.reshape([b, kv, g * s, -1]), v)  # [B, K, G*S, D]
    return out.reshape([b, n, s, d]).transpose([0, 2, 1, 3]).reshape([b, s, n * d])


class KVCache:
    """Preallocated keys/values for every layer: [B, K, max_len, D] each, filled left to right."""

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, max_len: int, head_dim: int, dtype):
        shape = [batch, num_kv_heads, max_len, head_dim]
        self.keys = [paddle.zeros(shape, dtype) for _ in range(num_layers)]
        self.values = [paddle.zeros(shape, dtype) for _ in range(num_layers)]
        self.length = 0  # positions filled (same for every layer once a forward pass completes)

    def update(self, layer: int, k: paddle.Tensor, v: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        start, end = self.length, self.length + k.shape[2]
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Attention(nn.Layer):
    def __init__(self, args: ModelArgs, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = args.num_heads, args.num_kv_heads, args.head_dim
        self.rope_interleaved = args.rope_interleaved
        if args.num_heads % args.num_kv_heads:
            raise ValueError(
                f"num_heads {args.num_heads} is not a multiple of num_kv_heads {args.num_kv_heads}"
            )
        qkv_out = (args.num_heads + 2 * args.num_kv_heads) * args.head_dim
        std = args.initializer_range
        self.qkv_proj = linear(args.hidden_size, qkv_out, args.qkv_bias or args.linear_bias, std)
        self.o_proj = linear(args.num_heads * args.head_dim, args.hidden_size, args.linear_bias, std)

    def forward(
        self,
        x: paddle.Tensor,
        cos_sin: tuple[paddle.Tensor, paddle.Tensor],
        mask: paddle.Tensor,
        cache: KVCache | None = None,
    ) -> paddle.Tensor:
        b, s, _ = x.shape
        n, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv_proj(x).reshape([b, s, n + 2 * kv, d]).transpose([0, 2, 1, 3])  # [B, N+2K, S, D]
        q, k, v = paddle.split(qkv, [n, kv, kv], axis=1)
        q = apply_rotary(q, *cos_sin, self.rope_interleaved)
        k = apply_rotary(k, *cos_sin, self.rope_interleaved)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        return self.o_proj(sdpa(q, k, v, mask))
