"""erniekit.ops: each fused/reference pair, the kernel switch, MoE and chunked cross-entropy references."""

from __future__ import annotations

import logging
import math

import numpy as np
import paddle
import pytest

from erniekit import ops
from erniekit.models.common.args import ModelArgs
from erniekit.models.common.moe import MoE, set_capacity
from erniekit.ops.attention import AttentionMask
from erniekit.ops.cross_entropy import chunked_nll, plain_nll
from erniekit.ops.registry import Op, same_results

CUDA = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


@pytest.fixture(autouse=True)
def _default_switch():
    yield
    ops.configure("auto")


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_fused_kernel_matches_reference_or_falls_back_in_one_line(name, caplog):
    """Under ``on`` each op runs its fused kernel only if that kernel matched the reference (forward and
    gradients) on the probe cases; otherwise exactly one warning names the op and the reason."""
    op = ops.OPS[name]
    ops.configure("on")
    with caplog.at_level(logging.INFO, logger="erniekit.ops"):
        chosen = ops.kernel(name)
        ops.kernel(name)  # resolved once
    lines = [r for r in caplog.records if name in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    if chosen is op.fused:
        assert same_results(op, half=CUDA) is None
        assert lines[0].levelno == logging.INFO and "fused" in lines[0].getMessage()
    elif chosen is op.cpu:
        assert same_results(op, half=False, candidate=op.cpu) is None
        assert lines[0].levelno == logging.INFO and "erniekit's CPU kernel" in lines[0].getMessage()
    else:
        assert chosen is op.reference
        assert lines[0].levelno == logging.WARNING and "uses the reference (" in lines[0].getMessage()


def test_cpu_build_outcomes_are_the_documented_ones(monkeypatch):
    """Paddle 3.3.1 CPU (shared/notes/paddle-cpu-lab.md section 6): only fused SwiGLU runs here."""
    if CUDA:
        pytest.skip("documents the CPU build")
    monkeypatch.setenv("ERNIEKIT_CPU_KERNELS", "0")  # Paddle's own kernels only
    ops.configure("on")
    for name in ops.OPS:
        ops.kernel(name)
    assert ops.selected() == {
        "attention": "reference",  # flash kernels: bf16/fp16 on GPUs
        "grouped_mlp": "reference",  # batched_gemm is not registered on CPU
        "rms_norm": "reference",  # fused_rms_norm: no CPU backward (and its forward can crash)
        "rotary": "reference",  # fused_rotary_position_embedding is not registered on CPU
        "segment_attention": "reference",  # variable-length flash attention: bf16/fp16 on GPUs
        "square_sums": "reference",  # no fused kernel in Paddle
        "swiglu": "fused",
        "weight_only_linear": "reference",  # weight_quantize exists on CPU, weight_only_linear does not
    }


def test_auto_on_cpu_is_erniekits_cpu_kernels_and_otherwise_the_reference(caplog):
    """On CPU ``auto`` never probes Paddle's fused kernels: each op with a CPU kernel of ours runs it (after
    its probe, one line each), every other op the reference."""
    if CUDA:
        pytest.skip("auto probes fused kernels on GPUs")
    ops.configure("auto")
    with caplog.at_level(logging.INFO, logger="erniekit.ops"):
        chosen = {name: ops.kernel(name) for name in ops.OPS}
    ours = ["attention", "rms_norm", "rotary", "square_sums", "swiglu"]
    assert sorted(n for n, fn in chosen.items() if fn is ops.OPS[n].cpu) == ours
    assert all(fn is ops.OPS[n].reference for n, fn in chosen.items() if ops.OPS[n].cpu is None)
    assert sorted(r.getMessage() for r in caplog.records) == [f"{n} uses erniekit's CPU kernel" for n in ours]


def test_cpu_kernels_switched_off_leave_the_reference(monkeypatch):
    if CUDA:
        pytest.skip("CPU only")
    monkeypatch.setenv("ERNIEKIT_CPU_KERNELS", "0")
    ops.configure("auto")
    assert all(ops.kernel(name) is op.reference for name, op in ops.OPS.items())


def test_a_wrong_fused_kernel_is_refused():
    ref = ops.OPS["swiglu"]
    wrong = Op("swiglu", ref.reference, lambda x: ref.reference(x) * 1.01, ref.cases)
    assert "differs from the reference by 1.0e-02" in same_results(wrong, half=False)


def test_bad_mode():
    with pytest.raises(ValueError, match="fused_ops must be one of auto, on, off"):
        ops.configure("fast")


# --- attention masks ---------------------------------------------------------------------------------------


def _dense_from_key_ends(ends: np.ndarray, s: int) -> np.ndarray:
    rows, cols = np.arange(s)[:, None], np.arange(s)[None, :]
    return (rows >= cols) & (rows < ends[:, None, :])  # [B, S, S]


def test_flashmask_rows_describe_the_same_mask():
    """The column-wise form FlashMask takes (first masked row per key) equals the dense mask, for packed
    documents and shared-prefix branches."""
    rng = np.random.default_rng(0)
    s = 40
    for _ in range(20):
        segs, branches = [], []
        for _ in range(3):
            cuts = np.sort(rng.choice(np.arange(1, s), size=rng.integers(0, 5), replace=False))
            seg = np.searchsorted(cuts, np.arange(s), side="right")
            branch = np.zeros(s, dtype=np.int64)
            for doc in np.unique(seg):  # some documents: [prompt | reply 1 | reply 2]
                where = np.flatnonzero(seg == doc)
                if len(where) >= 3 and rng.random() < 0.5:
                    a, b = sorted(rng.choice(np.arange(1, len(where)), size=2, replace=False))
                    branch[where[a:b]], branch[where[b:]] = 1, 2
            segs.append(seg)
            branches.append(branch)
        mask = AttentionMask(s, s, paddle.to_tensor(np.array(segs)), paddle.to_tensor(np.array(branches)))
        ends = mask.key_ends().numpy()[:, 0, :, 0]
        np.testing.assert_array_equal(_dense_from_key_ends(ends, s), mask.dense().numpy()[:, 0])


def test_reference_attention_matches_a_per_head_loop():
    rng = np.random.default_rng(1)
    b, s, n, kv, d = 2, 9, 6, 2, 8
    q, k, v = (
        rng.standard_normal(shape).astype("float32") for shape in ([b, s, n, d], [b, s, kv, d], [b, s, kv, d])
    )
    seg = np.array([[0] * 4 + [1] * 5, [0] * 9])
    mask = AttentionMask(s, s, paddle.to_tensor(seg))
    out = ops.attention(*(paddle.to_tensor(t) for t in (q, k, v)), mask).numpy().reshape([b, s, n, d])
    allowed = mask.dense().numpy()[:, 0]
    for bi in range(b):
        for h in range(n):
            scores = q[bi, :, h] @ k[bi, :, h // (n // kv)].T / math.sqrt(d)
            scores = np.where(allowed[bi], scores, -np.inf)
            p = np.exp(scores - scores.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            np.testing.assert_allclose(out[bi, :, h], p @ v[bi, :, h // (n // kv)], rtol=1e-5, atol=1e-6)


# --- MoE: sorted dropless vs a naive per-expert loop -------------------------------------------------------


def _moe(capacity=None) -> MoE:
    args = ModelArgs(
        family="ernie4_5", vocab_size=8, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2,
        head_dim=8, intermediate_size=32, num_experts=6, experts_per_token=2, moe_intermediate_size=12,
    )  # fmt: skip
    paddle.seed(3)
    layer = MoE(args)
    set_capacity(layer, capacity)
    return layer


def _naive_experts(layer: MoE, x: paddle.Tensor, capacity: float | None = None) -> paddle.Tensor:
    """For each expert, its tokens found by a mask (token order), the MLP, the weighted sum."""
    _, experts, weights = layer.gate(x)
    e_np, t, k = experts.numpy(), x.shape[0], experts.shape[1]
    cap = math.ceil(capacity * t * k / layer.num_experts) if capacity else t * k
    y = paddle.zeros_like(x)
    for e in range(layer.num_experts):
        slots = [i for i in range(t * k) if e_np.reshape(-1)[i] == e][:cap]
        if not slots:
            continue
        idx = paddle.to_tensor(slots)
        tokens = idx // k
        h = paddle.matmul(paddle.gather(x, tokens), layer.experts.up_gate_proj[e])
        gate, up = paddle.chunk(h, 2, axis=-1)
        out = paddle.matmul(paddle.nn.functional.silu(gate) * up, layer.experts.down_proj[e])
        y = paddle.index_add(y, tokens, 0, out * paddle.gather(weights.reshape([-1]), idx).unsqueeze(-1))
    return y


@pytest.mark.parametrize("capacity", [None, 100.0, 0.6])
def test_sorted_experts_match_the_naive_loop(capacity):
    layer = _moe(capacity)
    x = paddle.randn([37, 16])
    x.stop_gradient = False
    _, experts, weights = layer.gate(x)
    got = layer.experts(x, experts, weights)
    want = _naive_experts(layer, x, capacity)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    up = paddle.randn(got.shape)
    grads = []
    for y in (got, want):
        params = [x, layer.experts.up_gate_proj, layer.experts.down_proj]
        grads.append([g.numpy() for g in paddle.grad((y * up).sum(), params)])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_capacity_drops_tokens_only_when_configured():
    x = paddle.randn([37, 16])
    dropless = _moe(None)(x)[0].numpy()
    np.testing.assert_allclose(_moe(100.0)(x)[0].numpy(), dropless, rtol=1e-6)
    assert np.abs(_moe(0.6)(x)[0].numpy() - dropless).max() > 0.1 * np.abs(dropless).max()


# --- chunked LM head + cross-entropy ---------------------------------------------------------------------


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("chunk", [8, None])  # 6 token chunks and 6 vocabulary slices; one kept block
def test_chunked_cross_entropy_equals_plain(transposed, frozen, chunk):
    rng = np.random.default_rng(2)
    n, h, v = 45, 16, 300
    hidden = paddle.to_tensor(rng.standard_normal([n, h]).astype("float32"))
    weight = paddle.to_tensor(rng.standard_normal([v, h] if transposed else [h, v]).astype("float32"))
    labels = paddle.to_tensor(rng.integers(0, v, n))
    labels[[0, 7, 44]] = -100
    up = paddle.to_tensor(rng.standard_normal(n).astype("float32"))
    results = []
    for fn in (
        lambda a, b: chunked_nll(a, b, labels, transposed, chunk=chunk),
        lambda a, b: plain_nll(a, b, labels, transposed),
    ):
        a, b = hidden.detach().clone(), weight.detach().clone()
        a.stop_gradient, b.stop_gradient = False, frozen
        nll = fn(a, b)
        (nll * up).sum().backward()
        results.append([nll.numpy(), a.grad.numpy()] + ([] if frozen else [b.grad.numpy()]))
        if frozen:
            assert b.grad is None
    for x, y in zip(*results):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=2e-6)
    assert results[0][0][[0, 7, 44]].tolist() == [0.0, 0.0, 0.0]
