"""Language-model head + cross-entropy, per token, on one device or with a vocabulary-parallel head.

Legend: B batch, S sequence, N tokens (B x S), H hidden, V vocab (V/t per rank with tensor parallelism).
Labels equal to -100 are ignored (their loss is 0).

On one device the head and the loss run in blocks (:class:`ChunkedHeadNLL`): the [N, V] float32 logits
are never materialised (ERNIE's V is 103,424: 400 KB per token), only one block of at most CHUNK_BYTES at
a time, [chunk, V] in the forward pass and [N, V/k] in the backward pass, which recomputes the logits (one
extra head GEMM) instead of storing them; a batch whose logits fit KEEP_BYTES runs as one block and keeps
its softmax, trading that memory for the recomputation. Loss and gradients equal the plain computation.
Numbers at ERNIE's vocabulary on CPU: benchmarks/lm_head.py.

With tensor parallelism the head weight holds V/t vocabulary rows on each rank: logits stay split and
fleet's parallel cross-entropy reduces over the group. The hidden states enter through fleet's
``c_identity`` (gradients summed over the group), except under sequence parallelism, where the
preceding sequence all-gather already sums them.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer

IGNORE = -100


def head_input(hidden: paddle.Tensor, model) -> paddle.Tensor:
    group = getattr(model, "vocab_group", None)
    if group is None or getattr(model, "sequence_parallel", False):
        return hidden
    from paddle.distributed.fleet.layers.mpu import mp_ops

    return mp_ops._c_identity(hidden, group=group)


CHUNK_BYTES = 2**26  # float32 logits per block: 64 MiB (GEMMs of >= 160 rows at a 103K vocabulary)
KEEP_BYTES = 2**28  # up to 256 MiB of logits (512 tokens at 103K) run as one kept block: no recompute


def chunk_tokens(vocab: int, tokens: int = 0) -> int:
    """Tokens per forward block: all of them while their logits fit KEEP_BYTES, else CHUNK_BYTES' worth."""
    if 0 < tokens * vocab * 4 <= KEEP_BYTES:
        return tokens
    return max(16, CHUNK_BYTES // (4 * vocab))


def _autocast_dtype() -> str | None:
    """The dtype autocast would give a matmul here (None outside autocast)."""
    tracer = paddle.base.framework._dygraph_tracer()
    level = getattr(tracer, "_amp_level", None)
    if tracer is None or level is None or level == paddle.base.core.AmpLevel.O0:
        return None
    return tracer._amp_dtype


class ChunkedHeadNLL(PyLayer):
    """nll [N] = logsumexp(h W) - (h W)[label], chunk by chunk, for hidden [N, H] and W [H, V] ([V, H] when
    ``transposed``, a tied embedding). Each block's matmul runs in ``dtype`` (the autocast dtype, so the
    backward pass recomputes exactly the forward logits), the softmax in float32 through Paddle's fused
    cross-entropy kernel."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, transposed: bool, chunk: int, dtype: str):
        n = hidden.shape[0]
        with paddle.amp.auto_cast(enable=False):
            w = weight.astype(dtype)
            target = paddle.clip(labels, min=0).unsqueeze(-1)  # ignored rows score token 0, then masked
            if n <= chunk:  # one block holds every token: keep its softmax for the backward pass
                logits = _block(hidden, w, transposed, dtype)
                nll, lse = F.cross_entropy(logits, target, reduction="none").squeeze(-1), None
                ctx.probs = F.softmax(logits)
            else:
                ctx.probs = None
                nll, lse = [], []
                for start in range(0, n, chunk):
                    logits = _block(hidden[start : start + chunk], w, transposed, dtype)
                    t = target[start : start + chunk]
                    loss = F.cross_entropy(logits, t, reduction="none").squeeze(-1)
                    picked = paddle.take_along_axis(logits, t, axis=-1).squeeze(-1)
                    nll.append(loss)
                    lse.append(loss + picked)  # the slices of the backward pass need log-sum-exp itself
                nll, lse = paddle.concat(nll), paddle.concat(lse)
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.transposed, ctx.dtype, ctx.block = transposed, dtype, chunk * (weight.shape[0] if transposed else
                                                                         weight.shape[1])  # fmt: skip
        return nll * (labels != IGNORE).astype("float32")

    @staticmethod
    def backward(ctx, dnll):
        """With g the upstream gradient per token (0 where ignored) and p = softmax(h W):
        dlogits = g (p - onehot), so dh = g (p W^T - W[label]) and dW = p^T (g h) - scatter(label, g h).
        The one-hot terms are a gather and an index-add. Unless the forward pass kept p (one block), the
        p terms run over slices of the vocabulary, all tokens at once, so each [N, V/k] block of recomputed
        logits yields its slice of dW directly and no full-size partial weight gradient is ever summed."""
        hidden, weight, labels, lse = ctx.saved_tensor()
        transposed, dtype, kept = ctx.transposed, ctx.dtype, ctx.probs
        ctx.probs = None
        n, vocab = hidden.shape[0], weight.shape[0] if transposed else weight.shape[1]
        need_w = not weight.stop_gradient
        with paddle.amp.auto_cast(enable=False):
            w, h = weight.astype(dtype), hidden.astype(dtype)
            g = (dnll.astype("float32") * (labels != IGNORE).astype("float32")).unsqueeze(-1)  # [N, 1]
            target = paddle.clip(labels, min=0)
            gh = (g * h.astype("float32")).astype(dtype)  # [N, H]
            w_target = paddle.gather(w, target) if transposed else paddle.gather(w, target, axis=1).t()
            step = vocab if kept is not None else max(1, ctx.block // n)  # the forward pass's block size
            p_w, dw = None, None  # p_w: sum over slices of p W^T
            if need_w and step < vocab:
                dw = paddle.empty(weight.shape, "float32")  # every slice is written below
            for v0 in range(0, vocab, step):
                w_v = w[v0 : v0 + step] if transposed else w[:, v0 : v0 + step]
                if kept is None:  # recomputed, then overwritten in place: one block alive
                    probs = _block(h, w_v, transposed, dtype).subtract_(lse.unsqueeze(-1)).exp_()
                else:
                    probs = kept
                probs = probs.astype(dtype)
                part = paddle.matmul(probs, w_v, transpose_y=not transposed).astype("float32")
                p_w = part if p_w is None else p_w.add_(part)
                if need_w:
                    d_v = (paddle.matmul(probs, gh, transpose_x=True) if transposed
                           else paddle.matmul(gh, probs, transpose_x=True)).astype("float32")  # fmt: skip
                    if dw is None:
                        dw = d_v
                    elif transposed:  # rows v0.. of W [V, H]: a contiguous view
                        dw[v0 : v0 + step].copy_(d_v, False)
                    else:
                        dw[:, v0 : v0 + step] = d_v
            dh = (g * (p_w - w_target.astype("float32"))).astype(hidden.dtype)
            if need_w:
                minus_gh = -gh.astype("float32")
                if transposed:
                    paddle.index_add_(dw, target, 0, minus_gh)
                else:
                    paddle.index_add_(dw, target, 1, minus_gh.t())
        if need_w and dw.dtype != weight.dtype:
            dw = dw.astype(weight.dtype)
        return dh, dw, None


def _block(h, w, transposed: bool, dtype: str) -> paddle.Tensor:
    return paddle.matmul(h.astype(dtype), w, transpose_y=transposed).astype("float32")


def chunked_nll(hidden_nh, weight, labels_n, transposed: bool, chunk: int | None = None) -> paddle.Tensor:
    """Per-token NLL [N] (float32) of an LM head without [N, V] logits; see :class:`ChunkedHeadNLL`."""
    vocab = weight.shape[0] if transposed else weight.shape[1]
    dtype = _autocast_dtype() or {paddle.bfloat16: "bfloat16", paddle.float16: "float16"}.get(
        hidden_nh.dtype, "float32"
    )
    return ChunkedHeadNLL.apply(
        hidden_nh,
        weight,
        labels_n.astype("int64"),
        transposed,
        chunk or chunk_tokens(vocab, hidden_nh.shape[0]),
        dtype,
    )


def plain_nll(hidden_nh, weight, labels_n, transposed: bool) -> paddle.Tensor:
    """The same with full logits: the reference the chunked op is tested and benchmarked against."""
    logits = paddle.matmul(hidden_nh, weight, transpose_y=transposed).astype("float32")
    nll = F.cross_entropy(logits, labels_n.unsqueeze(-1), ignore_index=IGNORE, reduction="none")
    return nll.squeeze(-1)


def lm_head_nll(hidden_bsh: paddle.Tensor, model, labels_bs: paddle.Tensor) -> paddle.Tensor:
    """Negative log-likelihood [B, S] (float32) of ``labels`` under ``softmax(hidden @ W)``."""
    weight, transposed = model.output_weight()
    group = getattr(model, "vocab_group", None)
    if group is None:
        b, s, h = hidden_bsh.shape
        return chunked_nll(
            hidden_bsh.reshape([b * s, h]), weight, labels_bs.reshape([-1]), transposed
        ).reshape([b, s])
    from paddle.distributed.fleet.layers.mpu import mp_ops

    logits = paddle.matmul(head_input(hidden_bsh, model), weight, transpose_y=transposed).astype("float32")
    nll = mp_ops._c_softmax_with_cross_entropy(
        logits, labels_bs.unsqueeze(-1), group=group, ignore_index=IGNORE
    )
    return nll.squeeze(-1) * (labels_bs != IGNORE).astype("float32")


def target_logprobs(hidden_nh: paddle.Tensor, model, targets_n: paddle.Tensor, entropy: bool = False):
    """log p(target) [N] at N positions, and optionally the entropy [N] (no gradient).

    ``x - logsumexp(x)`` rather than F.log_softmax: Paddle 3.3's CPU log_softmax kernel is ~270x slower
    at a 49K vocabulary (benchmarks/ops_cpu.py).
    """
    weight, transposed = model.output_weight()
    group = getattr(model, "vocab_group", None)
    if group is None:
        logp = -chunked_nll(hidden_nh, weight, targets_n, transposed)
        return logp, (_entropy(hidden_nh, weight, transposed) if entropy else None)
    logits = paddle.matmul(head_input(hidden_nh, model), weight, transpose_y=transposed).astype("float32")
    return _vocab_parallel_logprobs(logits, targets_n, group, entropy)


@paddle.no_grad()
def _entropy(hidden_nh, weight, transposed: bool) -> paddle.Tensor:
    """Entropy [N] of softmax(h W), chunk by chunk."""
    vocab = weight.shape[0] if transposed else weight.shape[1]
    chunk, out = chunk_tokens(vocab), []
    for start in range(0, hidden_nh.shape[0], chunk):
        logits = paddle.matmul(hidden_nh[start : start + chunk], weight, transpose_y=transposed).astype(
            "float32"
        )
        lse = paddle.logsumexp(logits, axis=-1)
        out.append(lse - (paddle.exp(logits - lse.unsqueeze(-1)) * logits).sum(axis=-1))
    return paddle.concat(out)


def _vocab_parallel_logprobs(logits, targets, group, entropy: bool):
    """The same over vocabulary shards: a global max, summed exponentials and the target's logit."""
    import paddle.distributed as dist
    from paddle.distributed.fleet.layers.mpu import mp_ops

    def allreduce(x):  # forward: sum over ranks; backward: identity (each rank owns its shard's share)
        return mp_ops._mp_allreduce(x, group=group, use_calc_stream=True, use_model_parallel=True)

    with paddle.no_grad():
        m = logits.max(axis=-1, keepdim=True)
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    shifted = logits - m
    sum_exp = allreduce(paddle.exp(shifted).sum(axis=-1))
    v = logits.shape[-1]
    local = targets - group.rank * v
    inside = ((local >= 0) & (local < v)).astype("float32")
    picked = paddle.take_along_axis(shifted, paddle.clip(local, 0, v - 1).unsqueeze(-1), axis=-1).squeeze(-1)
    picked = allreduce(picked * inside)
    logp = picked - paddle.log(sum_exp)
    ent = None
    if entropy:
        with paddle.no_grad():
            p = paddle.exp(shifted) / sum_exp.unsqueeze(-1)
            weighted = (p * shifted).sum(axis=-1)
            dist.all_reduce(weighted, group=group)
            ent = paddle.log(sum_exp) - weighted
    return logp, ent
