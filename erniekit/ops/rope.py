"""Rotary position embeddings on q and k, in both pairings our families use.

Legend: B batch, S sequence, N/K query/kv heads, D head_dim. q [B, S, N, D], k [B, S, K, D];
cos/sin [B, S, 1, D/2] in float32 (one angle per rotated pair).

* interleaved (ERNIE 4.5, GPT-J style): dims (0,1), (2,3), ... rotate together, pair i at frequency i;
* half (Llama / NeoX style): dims (i, i + D/2) rotate together.
The reference rotates in float32 and casts back, like the HF reference.
"""

from __future__ import annotations

import paddle
from paddle.autograd import PyLayer

from erniekit.ops import cpu as kernels
from erniekit.ops.registry import Op, rand


def _rotate(x: paddle.Tensor, cos: paddle.Tensor, sin: paddle.Tensor, interleaved: bool) -> paddle.Tensor:
    x32 = x.astype("float32")
    if paddle.in_dynamic_mode():  # Paddle's CPU kernels broadcast ~25x slower than they multiply
        cos, sin = (t.expand([*x.shape[:-1], x.shape[-1] // 2]) for t in (cos, sin))
    if interleaved:
        pairs = x32.reshape([0] * (x32.ndim - 1) + [-1, 2])  # 0 keeps a dim (also when dynamic)
        x0, x1 = pairs[..., 0], pairs[..., 1]
        out = paddle.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1).flatten(start_axis=-2)
    else:
        x0, x1 = paddle.chunk(x32, 2, axis=-1)
        out = paddle.concat([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1)
    return out.astype(x.dtype)


class _Rotary(PyLayer):
    """A rotation's gradient is the inverse rotation (angle -theta): one rotation in backward instead of
    autograd's graph of broadcast multiplies (on CPU that was 21 ms per layer at SmolLM2's shape)."""

    @staticmethod
    def forward(ctx, x, cos, sin, interleaved: bool):
        ctx.save_for_backward(cos, sin)
        ctx.interleaved = interleaved
        return _rotate(x, cos, sin, interleaved)

    @staticmethod
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensor()
        return _rotate(dy, cos, -sin, ctx.interleaved), None, None


def reference(q, k, cos, sin, interleaved: bool):
    if not paddle.in_dynamic_mode():  # static graphs (export) trace the plain rotation
        return _rotate(q, cos, sin, interleaved), _rotate(k, cos, sin, interleaved)
    return _Rotary.apply(q, cos, sin, interleaved), _Rotary.apply(k, cos, sin, interleaved)


def fused(q, k, cos, sin, interleaved: bool):
    from paddle.incubate.nn.functional import fused_rotary_position_embedding

    if interleaved:  # the kernel wants one angle per dimension, laid out like the pairs
        cos, sin = (paddle.repeat_interleave(t, 2, axis=-1) for t in (cos, sin))
    else:
        cos, sin = (paddle.concat([t, t], axis=-1) for t in (cos, sin))
    q_out, k_out, _ = fused_rotary_position_embedding(
        q, k, None, sin=sin.astype(q.dtype), cos=cos.astype(q.dtype), use_neox_rotary_style=not interleaved
    )
    return q_out, k_out


def cpu(q, k, cos, sin, interleaved: bool):
    b, seq, _, d = q.shape
    if not (kernels.usable(q, k, cos, sin) and cos.shape[0] in (1, b) and cos.shape[1:] == [seq, 1, d // 2]):
        return reference(q, k, cos, sin, interleaved)
    lib, cos, sin = kernels.module(), kernels.contiguous(cos), kernels.contiguous(sin)
    return tuple(lib.ek_rotary(kernels.contiguous(t), cos, sin, interleaved) for t in (q, k))


def _cases(dtype: str):
    angles = rand([2, 6, 1, 8], "float32", grad=False, seed=3)
    cos, sin = angles.cos(), angles.sin()
    q, k = rand([2, 6, 4, 16], dtype), rand([2, 6, 2, 16], dtype, seed=1)
    cases = [((q, k, cos, sin, interleaved), {}) for interleaved in (True, False)]
    one = rand([1, 6, 1, 8], "float32", grad=False, seed=4)  # one set of angles for the whole batch
    return [*cases, ((q, k, one.cos(), one.sin(), False), {})]


OP = Op("rotary", reference, fused, _cases, cpu=cpu)
