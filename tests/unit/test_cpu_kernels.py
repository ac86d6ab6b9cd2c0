"""erniekit's fused CPU kernels (erniekit/ops/cpu.py) against the reference they replace, beyond the probe:
model shapes, odd widths, strided inputs, GQA and padding masks, saturating and non-finite values, and the
fallbacks (other dtypes, a failed build)."""

from __future__ import annotations

import importlib
import logging

import numpy as np
import paddle
import pytest

from erniekit import ops
from erniekit.ops import activation, cpu, norm, rope
from erniekit.ops.attention import AttentionMask

attn = importlib.import_module("erniekit.ops.attention")  # ops.attention is also the op's function

pytestmark = pytest.mark.skipif(cpu.unavailable() is not None, reason=f"no CPU kernels: {cpu.unavailable()}")


def _tensor(a: np.ndarray, grad: bool = True) -> paddle.Tensor:
    t = paddle.to_tensor(a.astype("float32"))
    t.stop_gradient = not grad
    return t


def _outputs_and_grads(fn, arrays: list, grads: list[bool], extra=(), seed: int = 0) -> list[np.ndarray]:
    """fn(*tensors, *extra)'s outputs and the gradients of the differentiable inputs under a random
    upstream gradient (the same one for every implementation)."""
    inputs = [_tensor(a, g) for a, g in zip(arrays, grads)]
    outs = fn(*inputs, *extra)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    rng = np.random.default_rng(seed)
    total = sum((o * _tensor(rng.standard_normal(o.shape), False)).sum() for o in outs)
    total.backward()
    return [o.numpy() for o in outs] + [t.grad.numpy() for t, g in zip(inputs, grads) if g]


def _assert_same(kernel, reference, arrays, grads, extra=(), rtol=2e-6):
    got = _outputs_and_grads(kernel, arrays, grads, extra)
    want = _outputs_and_grads(reference, arrays, grads, extra)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, i
        err = np.abs(g - w).max() / (np.abs(w).max() + 1e-12)
        assert err <= rtol, f"result {i}: {err:.1e} relative"


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("shape", [[1, 512, 576], [3, 7, 1024], [5, 33]])
def test_rms_norm_matches_the_reference(shape):
    r = _rng()
    x, w = r.standard_normal(shape) * 3, r.standard_normal(shape[-1:]) + 1
    _assert_same(norm.cpu, norm.reference, [x, w], [True, True], (1e-6,))


def test_rms_norm_with_a_frozen_weight_and_a_strided_input():
    r = _rng(1)
    x = _tensor(r.standard_normal([4, 64, 8]))
    w = _tensor(r.standard_normal([4]) + 1, grad=False)
    strided = x.transpose([0, 2, 1])[:, :, :4]  # not contiguous
    assert not strided.is_contiguous()
    np.testing.assert_allclose(
        norm.cpu(strided, w, 1e-5).numpy(), norm.reference(strided, w, 1e-5).numpy(), rtol=2e-6, atol=1e-6
    )


@pytest.mark.parametrize("scale", [1.0, 12.0])  # 12: gates out to exp's far range on both sides
def test_swiglu_matches_the_reference(scale):
    x = _rng(2).standard_normal([2, 9, 2 * 1536]) * scale
    _assert_same(activation.cpu, activation.reference, [x], [True])


def test_swiglu_saturates_where_the_reference_overflows():
    """Gates beyond +-88: silu and its gradient in float64 are ~0 / ~gate / ~1. Paddle's silu gradient
    overflows to NaN/-inf below -88; the kernel's stays finite and right. NaN stays NaN."""
    gate = np.array([-160.0, -100.0, -88.5, -30.0, 0.5, 30.0, 90.0, 160.0, np.nan], "float32")
    x = _tensor(np.concatenate([gate, np.ones_like(gate)])[None])
    y = activation.cpu(x)
    y.sum().backward()
    g64 = gate.astype("float64")
    sig = 1 / (1 + np.exp(-g64))
    want_y, want_dg = g64 * sig, sig * (1 + g64 * (1 - sig))
    np.testing.assert_allclose(y.numpy()[0, :-1], want_y[:-1], rtol=2e-6, atol=1e-30)
    np.testing.assert_allclose(x.grad.numpy()[0, :8], want_dg[:-1], rtol=2e-6, atol=1e-30)
    assert np.isnan(y.numpy()[0, -1]) and np.isnan(x.grad.numpy()[0, 8])


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("angles_batch", [1, 2])
def test_rotary_matches_the_reference(interleaved, angles_batch):
    r = _rng(3)
    b, s, n, k, d = 2, 17, 6, 2, 64
    q, kk = r.standard_normal([b, s, n, d]), r.standard_normal([b, s, k, d])
    theta = r.uniform(-50, 50, [angles_batch, s, 1, d // 2])
    cos, sin = np.cos(theta), np.sin(theta)

    def run(fn):
        return lambda q, k, c, s_: fn(q, k, c, s_, interleaved)

    _assert_same(run(rope.cpu), run(rope.reference), [q, kk, cos, sin], [True, True, False, False])


def test_rotary_with_angles_of_another_layout_runs_the_reference():
    """mRoPE-style angles that are not [B or 1, S, 1, D/2] never reach the kernel (it would refuse them)."""
    r = _rng(4)
    q, k = _tensor(r.standard_normal([1, 5, 2, 8])), _tensor(r.standard_normal([1, 5, 2, 8]))
    cos, sin = (
        _tensor(r.standard_normal([1, 5, 2, 4]), False),
        _tensor(r.standard_normal([1, 5, 2, 4]), False),
    )
    got = rope.cpu(q, k, cos, sin, False)
    want = rope.reference(q, k, cos, sin, False)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6)


def _masks(s: int):
    seg = paddle.to_tensor([[0] * 7 + [1] * (s - 7), [0] * s], dtype="int64")
    branch = paddle.to_tensor([[0] * s, [0] * 5 + [1] * 6 + [2] * (s - 11)], dtype="int64")
    padding = paddle.to_tensor([[0] * 4 + [1] * (s - 4), [1] * s], dtype="int64")
    return {
        "causal": AttentionMask(s, s),
        "packed": AttentionMask(s, s, seg),
        "shared prefix": AttentionMask(s, s, seg, branch),
        "left padding": AttentionMask(s, s, key_padding=padding),
    }


@pytest.mark.parametrize("mask_name", ["causal", "packed", "shared prefix", "left padding"])
def test_attention_matches_the_reference(mask_name):
    r = _rng(5)
    b, s, n, k, d = 2, 19, 6, 2, 32  # GQA: 3 query heads per kv head
    q, kk, v = (
        r.standard_normal([b, s, n, d]),
        r.standard_normal([b, s, k, d]),
        r.standard_normal([b, s, k, d]),
    )
    mask = _masks(s)[mask_name]
    _assert_same(attn.cpu, attn.reference, [q, kk, v], [True, True, True], (mask,))


def test_cached_attention_uses_the_kernel_and_agrees():
    """A decode step against a head-major cache: ops.cached_attention picks the softmax kernel with the
    attention op's choice, and reads the same answer as the reference softmax."""
    r = _rng(6)
    q = _tensor(r.standard_normal([3, 1, 4, 16]), False)
    keys, values = (_tensor(r.standard_normal([3, 2, 10, 16]), False) for _ in range(2))
    padding = paddle.to_tensor([[1] * 10, [0] * 3 + [1] * 7, [0] * 6 + [1] * 4], dtype="int64")
    mask = AttentionMask(1, 10, key_padding=padding)
    ops.configure("auto")
    assert ops.kernel("attention") is attn.cpu
    got = ops.cached_attention(q, keys, values, mask)
    want = attn.over_cache(q, keys, values, mask, attn.softmax)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-6, atol=1e-7)


def test_square_sums_are_exact_and_keep_non_finite_values():
    """float64 sums: one NaN or inf in a tensor shows in its sum only; huge finite values stay finite."""
    from erniekit.ops import square_sums

    r = _rng(7)
    arrays = [r.standard_normal(s) for s in ([5], [70000], [3, 300])]  # 70000: the multi-threaded path
    tensors = [_tensor(a, False) for a in arrays]
    want = [float((a.astype("float32").astype("float64") ** 2).sum()) for a in arrays]
    np.testing.assert_allclose(square_sums.cpu(tensors).numpy(), want, rtol=1e-12)
    odd = [
        _tensor(np.array([1.0, np.nan]), False),
        _tensor(np.array([np.inf]), False),
        _tensor(np.full([4], 3e38), False),
    ]
    got = square_sums.cpu(odd).numpy()
    assert np.isnan(got[0]) and np.isinf(got[1]) and np.isfinite(got[2]) and got[2] > 3e77
    from erniekit.trainer.optim import grads_finite

    class P:  # what grads_finite reads of a parameter
        def __init__(self, g):
            self.grad = g

    assert grads_finite([P(t) for t in tensors]) and not grads_finite([P(t) for t in tensors + odd[1:2]])


def test_other_dtypes_run_the_reference():
    x = paddle.randn([2, 3, 8]).astype("bfloat16")
    w = paddle.ones([8], "float32")
    np.testing.assert_array_equal(
        norm.cpu(x, w, 1e-6).astype("float32").numpy(), norm.reference(x, w, 1e-6).astype("float32").numpy()
    )


def test_a_failed_build_is_reported_and_the_reference_runs(monkeypatch, tmp_path, caplog):
    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpu, "SOURCE", broken)
    monkeypatch.setattr(cpu, "_state", {})
    monkeypatch.setenv("ERNIEKIT_KERNEL_CACHE", str(tmp_path / "cache"))
    reason = cpu.unavailable()
    assert reason and "build.log" in reason, reason
    ops.configure("auto")
    with caplog.at_level(logging.INFO, logger="erniekit.ops"):
        assert ops.kernel("rms_norm") is norm.reference
    assert any("rms_norm: erniekit's CPU kernel is not used" in r.getMessage() for r in caplog.records)
    ops.configure("auto")
