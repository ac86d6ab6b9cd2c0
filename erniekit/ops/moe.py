"""Expert MLPs on tokens sorted by expert: one contiguous row segment per expert (a grouped GEMM).

Legend: R routed rows (tokens x k, minus any dropped), H hidden, E experts, I expert intermediate size.
x_sorted [R, H] holds counts[e] consecutive rows for expert e (in expert order); up_gate [E, H, 2I] and
down [E, I, H] are the stacked expert weights. Nothing is padded to a capacity. The reference also takes
frozen quantised stacks (erniekit.quant.linear.QuantizedStack) in their place: indexed per expert, they
dequantise one expert's matrix for one matmul, forward and again backward.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer

from erniekit.ops.registry import Op, rand


def reference(x_sorted, counts: list[int], up_gate, down) -> paddle.Tensor:
    """Grouped SwiGLU MLP: a matmul pair per expert that received rows, forward and backward by hand."""
    if not any(counts):
        return x_sorted * 0
    return _GroupedMLP.apply(x_sorted, up_gate, down, counts)


class _GroupedMLP(PyLayer):
    """Autograd would slice the row segments and the stacked weights per expert and pay, in backward, a
    zero-filled full-size gradient for every slice (E x [R, H] plus E x [E, H, 2I]): on CPU that made
    the backward ten times the forward. Here only the matmuls run per expert (two forward, four
    backward); SwiGLU and its derivative run once over all rows, the segments are split once and the
    weight gradients stacked once."""

    @staticmethod
    def forward(ctx, x, up_gate, down, counts):
        live = [e for e, n in enumerate(counts) if n]
        sizes = [counts[e] for e in live]
        up_gate_e, down_e = _per_expert(up_gate), _per_expert(down)
        pre = paddle.concat([paddle.matmul(seg, up_gate_e[e]) for seg, e in zip(_split(x, sizes), live)])
        act = _swiglu_parts(pre)[2]  # [R, I]
        out = paddle.concat([paddle.matmul(a, down_e[e]) for a, e in zip(_split(act, sizes), live)])
        if isinstance(up_gate, paddle.Tensor):
            ctx.save_for_backward(x, up_gate, down, pre)
        else:  # quantised stacks are not tensors: keep them by reference
            ctx.save_for_backward(x, pre)
            ctx.stacks = (up_gate, down)
        ctx.live, ctx.sizes = live, sizes
        ctx.weight_grads = not (up_gate.stop_gradient and down.stop_gradient)  # frozen experts: skip dW
        return out

    @staticmethod
    def backward(ctx, dy):
        saved = ctx.saved_tensor()
        (x, up_gate, down, pre) = saved if len(saved) == 4 else (saved[0], *ctx.stacks, saved[1])
        live, sizes = ctx.live, ctx.sizes
        up_gate_e, down_e = _per_expert(up_gate), _per_expert(down)
        gate, up, act = _swiglu_parts(pre)
        dy_s = _split(dy, sizes)
        d_act = paddle.concat([paddle.matmul(d, down_e[e], transpose_y=True) for d, e in zip(dy_s, live)])
        sig = F.sigmoid(gate)
        silu = gate * sig
        d_gate = d_act * up * (sig + silu * (1 - sig))  # d silu(g) / dg = s + g s (1 - s)
        d_pre = paddle.concat([d_gate, d_act * silu], axis=-1)  # [R, 2I]
        d_pre_s = _split(d_pre, sizes)
        dx = paddle.concat([paddle.matmul(d, up_gate_e[e], transpose_y=True) for d, e in zip(d_pre_s, live)])
        if not isinstance(up_gate, paddle.Tensor):  # quantised stacks: x is the only tensor input
            return dx
        if not ctx.weight_grads:
            return dx, None, None
        d_up_gate, d_down = [None] * len(up_gate_e), [None] * len(down_e)
        for seg, a, d, dp, e in zip(_split(x, sizes), _split(act, sizes), dy_s, d_pre_s, live):
            d_down[e] = paddle.matmul(a, d, transpose_x=True)
            d_up_gate[e] = paddle.matmul(seg, dp, transpose_x=True)
        for e in set(range(len(d_down))) - set(live):  # experts that received no rows
            d_up_gate[e], d_down[e] = paddle.zeros_like(up_gate_e[e]), paddle.zeros_like(down_e[e])
        return dx, paddle.stack(d_up_gate), paddle.stack(d_down)


def _per_expert(stack):
    return paddle.unbind(stack) if isinstance(stack, paddle.Tensor) else stack


def _split(t: paddle.Tensor, sizes: list[int]) -> list[paddle.Tensor]:
    return paddle.split(t, sizes) if len(sizes) > 1 else [t]


def _swiglu_parts(pre: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
    gate, up = paddle.chunk(pre, 2, axis=-1)
    return gate, up, F.silu(gate) * up


def fused(x_sorted, counts: list[int], up_gate, down) -> paddle.Tensor:
    """Paddle's grouped GEMM (``batched_gemm``: one launch over all segments) and fused SwiGLU."""
    from paddle.incubate.nn.functional import batched_gemm

    def grouped(x, w):
        out = batched_gemm(x, w, counts)
        return out[0] if isinstance(out, (tuple, list)) else out

    return grouped(F.swiglu(grouped(x_sorted, up_gate)), down)


def _cases(dtype: str):
    counts = [3, 0, 5, 1]  # an expert without rows included
    return [((rand([sum(counts), 16], dtype), counts, rand([4, 16, 24], dtype, seed=1),
              rand([4, 12, 16], dtype, seed=2)), {})]  # fmt: skip


OP = Op("grouped_mlp", reference, fused, _cases)
