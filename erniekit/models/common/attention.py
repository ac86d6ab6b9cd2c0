"""Grouped-query self-attention with a fused qkv projection, packed-sequence masks and a KV cache.

Legend: B batch, S query length, T key length (cache included), H hidden, N query heads, K kv heads,
D head_dim. Activations stay [B, S, heads, D] (the flash-attention layout) from the projection on.

``qkv_proj`` is [H, (N + 2K) * D] laid out [q heads | k heads | v heads] (ERNIE's Paddle layout). The
masks (packed documents, shared prefixes, padding) and both attention kernels live in
:mod:`erniekit.ops.attention`; rotary embeddings in :mod:`erniekit.ops.rope`.
"""

from __future__ import annotations

import paddle
from paddle import nn

from erniekit import ops
from erniekit.models.common.args import ModelArgs
from erniekit.models.common.mlp import linear
from erniekit.ops.attention import AttentionMask

__all__ = ["Attention", "AttentionMask", "KVCache"]


class KVCache:
    """Preallocated keys/values for every layer, filled left to right: [B, K, max_len, D] each, head-major,
    the layout the attention matmul reads, so a decode step attends to the cache in place.

    ``update`` returns every column; the step's mask says how many are read (see ``Decoder.decode``)."""

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, max_len: int, head_dim: int, dtype):
        shape = [batch, num_kv_heads, max_len, head_dim]
        self.keys = [paddle.zeros(shape, dtype) for _ in range(num_layers)]
        self.values = [paddle.zeros(shape, dtype) for _ in range(num_layers)]
        self.length = 0  # positions filled (same for every layer once a forward pass completes)

    def update(self, layer: int, k: paddle.Tensor, v: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        start, end = self.length, self.length + k.shape[1]
        self.keys[layer][:, :, start:end] = k.transpose([0, 2, 1, 3])
        self.values[layer][:, :, start:end] = v.transpose([0, 2, 1, 3])
        return self.keys[layer], self.values[layer]


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
        mask: AttentionMask,
        cache: KVCache | None = None,
    ) -> paddle.Tensor:
        n, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv_proj(x).reshape([0, 0, n + 2 * kv, d])
        q, k, v = paddle.split(qkv, [n, kv, kv], axis=2)  # [B, S, N|K, D]
        q, k = ops.rotary(q, k, *cos_sin, self.rope_interleaved)
        if cache is None:
            return self.o_proj(ops.attention(q, k, v, mask))
        keys, values = cache.update(self.layer_idx, k, v)
        return self.o_proj(ops.cached_attention(q, keys, values, mask))
