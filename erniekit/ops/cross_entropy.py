"""Language-model head + cross-entropy, per token, on one device or with a vocabulary-parallel head.

Legend: B batch, S sequence, H hidden, V vocab (V/t per rank with tensor parallelism). Labels equal to
-100 are ignored (their loss is 0).

With tensor parallelism the head weight holds V/t vocabulary rows on each rank: logits stay split and
fleet's parallel cross-entropy reduces over the group. The hidden states enter through fleet's
``c_identity`` (gradients summed over the group), except under sequence parallelism, where the
preceding sequence all-gather already sums them.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F

IGNORE = -100


def head_input(hidden: paddle.Tensor, model) -> paddle.Tensor:
    group = getattr(model, "vocab_group", None)
    if group is None or getattr(model, "sequence_parallel", False):
        return hidden
    from paddle.distributed.fleet.layers.mpu import mp_ops

    return mp_ops._c_identity(hidden, group=group)


def lm_head_nll(hidden_bsh: paddle.Tensor, model, labels_bs: paddle.Tensor) -> paddle.Tensor:
    """Negative log-likelihood [B, S] (float32) of ``labels`` under ``softmax(hidden @ W)``."""
    weight, transposed = model.output_weight()
    logits = paddle.matmul(head_input(hidden_bsh, model), weight, transpose_y=transposed).astype("float32")
    group = getattr(model, "vocab_group", None)
    if group is not None:
        from paddle.distributed.fleet.layers.mpu import mp_ops

        nll = mp_ops._c_softmax_with_cross_entropy(
            logits, labels_bs.unsqueeze(-1), group=group, ignore_index=IGNORE
        )
        return nll.squeeze(-1) * (labels_bs != IGNORE).astype("float32")
    nll = F.cross_entropy(logits, labels_bs.unsqueeze(-1), ignore_index=IGNORE, reduction="none")
    return nll.squeeze(-1)


def target_logprobs(hidden_nh: paddle.Tensor, model, targets_n: paddle.Tensor, entropy: bool = False):
    """log p(target) [N] at N positions, and optionally the entropy [N] (no gradient).

    ``x - logsumexp(x)`` rather than F.log_softmax: Paddle 3.3's CPU log_softmax kernel is ~270x slower
    at a 49K vocabulary (benchmarks/ops_cpu.py).
    """
    weight, transposed = model.output_weight()
    logits = paddle.matmul(head_input(hidden_nh, model), weight, transpose_y=transposed).astype("float32")
    group = getattr(model, "vocab_group", None)
    if group is None:
        lse = paddle.logsumexp(logits, axis=-1)
        picked = paddle.take_along_axis(logits, targets_n.unsqueeze(-1), axis=-1).squeeze(-1)
        ent = None
        if entropy:
            with paddle.no_grad():
                ent = lse - (paddle.exp(logits - lse.unsqueeze(-1)) * logits).sum(axis=-1)
        return picked - lse, ent
    return _vocab_parallel_logprobs(logits, targets_n, group, entropy)


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
