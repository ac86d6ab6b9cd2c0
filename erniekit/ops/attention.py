"""Grouped-query attention over packed sequences: a reference with a dense mask, and flash kernels.

Legend: B batch, S query length, T key length (cache included), N query heads, K kv heads,
G = N / K query heads per kv head, D head_dim.

Masks. Every query may attend to keys that are (a) not in its future, (b) in the same packed document
(``segment_ids``), (c) on its own branch or the shared trunk (``branch_ids``: 0 for a shared prefix, k > 0
for continuation k; preference pairs pack [prompt | chosen | rejected] once, the rejected reply seeing the
prompt but not the chosen one), and (d) not padding (``key_padding``: True for real tokens, used by
batched generation with left padding). A query always sees itself, so no row is empty.

Without padding and cache, the queries that see key j are one contiguous run of rows, j up to the end of
j's branch (or of its document on the trunk). That is FlashMask's column-wise form
(https://arxiv.org/abs/2410.01359): one "first masked row" per key, so packed documents and shared
prefixes run in the flash kernel without a dense S x S mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import paddle
import paddle.nn.functional as F

from erniekit.ops import cpu as kernels
from erniekit.ops.registry import Op, rand


@dataclass
class AttentionMask:
    """What each query may attend to; built once per forward pass and shared by every layer."""

    query_len: int
    key_len: int
    segment_ids: paddle.Tensor | None = None  # [B, S] packed documents
    branch_ids: paddle.Tensor | None = None  # [B, S] continuations of a shared prefix
    key_padding: paddle.Tensor | None = None  # [B, T] True for real tokens
    # the key column of the first query; None: the queries are the last query_len of key_len columns
    # (a decode step that reads a whole cache has keys after its query: unwritten, hidden by padding)
    query_start: int | None = None
    _dense: paddle.Tensor | None = field(default=None, repr=False)
    _key_ends: paddle.Tensor | None = field(default=None, repr=False)
    _additive: dict = field(default_factory=dict, repr=False)

    @property
    def plain_causal(self) -> bool:
        return self.segment_ids is None and self.branch_ids is None and self.key_padding is None

    def dense(self) -> paddle.Tensor:
        """Boolean [B or 1, 1, S, T]: True where a query may attend to a key."""
        if self._dense is None:
            offset = self.key_len - self.query_len if self.query_start is None else self.query_start
            q_pos = paddle.arange(self.query_len).unsqueeze(-1) + offset
            k_pos = paddle.arange(self.key_len).unsqueeze(0)
            allowed = (k_pos <= q_pos).unsqueeze(0)  # [1, S, T]
            if self.segment_ids is not None:  # queries and keys share positions when packing
                seg = self.segment_ids
                allowed = allowed & (seg.unsqueeze(-1) == seg.unsqueeze(1))
            if self.branch_ids is not None:  # a key on another branch is invisible
                key_branch = self.branch_ids.unsqueeze(1)
                allowed = allowed & ((key_branch == 0) | (key_branch == self.branch_ids.unsqueeze(-1)))
            if self.key_padding is not None:
                allowed = allowed & self.key_padding.astype("bool").unsqueeze(1)
                allowed = allowed | (k_pos == q_pos).unsqueeze(0)
            self._dense = allowed.unsqueeze(1)
        return self._dense

    def additive(self, groups: int) -> paddle.Tensor:
        """float32 [B or 1, 1, groups * S, T]: 0 where allowed, -inf elsewhere, repeated for the query
        heads that share a kv head (the reference folds them into the query length)."""
        if groups not in self._additive:
            neg = paddle.full([], float("-inf"), "float32")
            bias = paddle.where(self.dense(), paddle.zeros([], "float32"), neg)
            self._additive[groups] = bias.tile([1, 1, groups, 1])
        return self._additive[groups]

    def key_ends(self) -> paddle.Tensor:
        """int32 [B, 1, S, 1]: the first query row that may not see key j (FlashMask, causal).

        A key is visible up to the end of its run: its document on the trunk, its branch otherwise.
        """
        if self._key_ends is None:
            seg = self.segment_ids
            b, s = (seg.shape if seg is not None else self.branch_ids.shape)[:2]
            run = paddle.zeros([b, s], "int64") if seg is None else seg.astype("int64")
            doc_end = _run_ends(run)
            end = doc_end
            if self.branch_ids is not None:
                br = self.branch_ids.astype("int64")
                branch_end = _run_ends(run * 1_000_003 + br)  # runs of (document, branch)
                end = paddle.where(br > 0, branch_end, doc_end)
            self._key_ends = end.astype("int32").reshape([b, 1, s, 1])
        return self._key_ends


def _run_ends(ids: paddle.Tensor) -> paddle.Tensor:
    """For [B, S] ids, the exclusive end index of the run of equal values each position belongs to."""
    b, s = ids.shape
    pos = paddle.arange(s, dtype="int64").unsqueeze(0).expand([b, s])
    last = paddle.concat([ids[:, 1:] != ids[:, :-1], paddle.ones([b, 1], "bool")], axis=1)  # run ends here
    candidate = paddle.where(last, pos + 1, paddle.full_like(pos, s))
    return paddle.flip(paddle.cummin(paddle.flip(candidate, [1]), axis=1)[0], [1])


def softmax(scores: paddle.Tensor, bias: paddle.Tensor, scale: float) -> paddle.Tensor:
    """float32 softmax(scores * scale + bias) over the last axis; bias [B or 1, 1, M, T] is the mask."""
    scores = scores.astype("float32") * scale
    if paddle.in_dynamic_mode():  # Paddle's CPU kernels broadcast ~25x slower than they add
        bias = bias.expand(scores.shape)
    return F.softmax(scores + bias, axis=-1)


def cpu_softmax(scores: paddle.Tensor, bias: paddle.Tensor, scale: float) -> paddle.Tensor:
    """:func:`softmax` in one pass forward and one backward (erniekit's CPU kernel)."""
    if not kernels.usable(scores, bias) or scores.ndim != 4:
        return softmax(scores, bias, scale)
    return kernels.module().ek_masked_softmax(kernels.contiguous(scores), kernels.contiguous(bias), scale)


def reference(q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, mask: AttentionMask) -> paddle.Tensor:
    """q [B, S, N, D], k/v [B, T, K, D] -> [B, S, N*D], softmax in float32."""
    return _head_major(q, k.transpose([0, 2, 1, 3]), v.transpose([0, 2, 1, 3]), mask, softmax)


def cpu(q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, mask: AttentionMask) -> paddle.Tensor:
    """The reference with its mask, scale and softmax in one CPU kernel."""
    return _head_major(q, k.transpose([0, 2, 1, 3]), v.transpose([0, 2, 1, 3]), mask, cpu_softmax)


def over_cache(
    q: paddle.Tensor, keys: paddle.Tensor, values: paddle.Tensor, mask: AttentionMask, probs=softmax
) -> paddle.Tensor:
    """q [B, S, N, D] against a KV cache's head-major keys/values [B, K, C, D] -> [B, S, N*D]; only the
    first ``mask.key_len`` columns are read. A decode step whose mask spans the whole cache reads it in
    place; narrower, the columns are copied out first (Paddle's strided copies are slow on CPU)."""
    t = mask.key_len
    if keys.shape[2] != t:
        keys, values = keys[:, :, :t], values[:, :, :t]
    return _head_major(q, keys, values, mask, probs)


def _head_major(q: paddle.Tensor, kt: paddle.Tensor, vt: paddle.Tensor, mask: AttentionMask, probs):
    """q [B, S, N, D], kt/vt [B, K, T, D] -> [B, S, N*D]; ``probs`` is :func:`softmax` or a kernel of it.

    GQA without repeating K/V: the G query heads of one kv head are folded into the query length.
    """
    n, d, kv = q.shape[2], q.shape[3], kt.shape[1]
    g = n // kv
    # reshape with 0 (keep that dim) and one -1: batch and lengths may be dynamic in an exported graph
    qg = q.transpose([0, 2, 1, 3]).reshape([0, kv, -1, d])  # [B, K, G*S, D], rows ordered (g, s)
    scores = paddle.matmul(qg, kt, transpose_y=True)  # [B, K, G*S, T]
    out = paddle.matmul(probs(scores, mask.additive(g), d**-0.5).astype(q.dtype), vt)  # [B, K, G*S, D]
    return out.reshape([0, n, -1, d]).transpose([0, 2, 1, 3]).reshape([0, 0, n * d])


def fused(q: paddle.Tensor, k: paddle.Tensor, v: paddle.Tensor, mask: AttentionMask) -> paddle.Tensor:
    """Flash attention (plain causal) or FlashMask (packed documents, shared prefixes); with a cache or
    padding (generation) the reference runs."""
    n, d = q.shape[2], q.shape[3]
    if mask.key_padding is not None or mask.query_len != mask.key_len:
        return reference(q, k, v, mask)
    if mask.plain_causal:
        from paddle.nn.functional.flash_attention import flash_attention

        out = flash_attention(q, k, v, causal=True)[0]
    else:
        out = F.flashmask_attention(q, k, v, startend_row_indices=mask.key_ends(), causal=True)
    return out.reshape([0, 0, n * d])


def _cases(dtype: str):
    b, s, n, kv, d = 2, 24, 4, 2, 32
    seg = paddle.to_tensor([[0] * 10 + [1] * 14, [0] * 24], dtype="int64")
    branch = paddle.to_tensor([[0] * 24, [0] * 8 + [1] * 7 + [2] * 9], dtype="int64")
    cases = []
    for m in (AttentionMask(s, s), AttentionMask(s, s, seg), AttentionMask(s, s, seg, branch)):
        cases.append(((rand([b, s, n, d], dtype), rand([b, s, kv, d], dtype, seed=1),
                       rand([b, s, kv, d], dtype, seed=2), m), {}))  # fmt: skip
    return cases


OP = Op("attention", reference, fused, _cases, half_only=True, cpu=cpu)
