"""Weight-only quantisation of frozen bases: each format's round-trip error stays within its bound, its
storage is the fraction of fp32's it claims, and a quantised linear's forward and input gradient equal
dequantise-then-matmul."""

import numpy as np
import paddle
import pytest

from erniekit.quant.formats import NF4_LEVELS, dequantize, quantize, to_tensors
from erniekit.quant.linear import QuantizedLinear, reference


def weight(k=256, n=48, seed=0):
    return np.random.default_rng(seed).normal(0, 0.05, (k, n)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["int8", "int4", "nf4", "q8_0", "q4_1"])
def test_round_trip_error_is_within_the_formats_bound(fmt):
    w = weight()
    q = quantize(w, fmt)
    back = dequantize(q, to_tensors(q)).numpy()
    groups = w.reshape(-1, q.group, w.shape[1])
    absmax = np.abs(groups).max(axis=1, keepdims=True)
    err = np.abs(back - w).reshape(groups.shape)
    if fmt == "int8":  # half a step of absmax / 127
        assert (err <= absmax / 127 / 2 * 1.0001).all()
    elif fmt == "int4":  # half a step of absmax / 7
        assert (err <= absmax / 7 / 2 * 1.0001).all()
    elif fmt == "nf4":  # half the widest gap between NF4 levels, times the (double-quantised) absmax
        gap = np.diff(NF4_LEVELS).max() / 2
        assert (err <= absmax * gap * 1.01 + 1e-6).all()
    elif fmt == "q8_0":  # half a step of the float16-rounded absmax / 127, which is a little off
        assert (err <= absmax / 127 * (0.5 + 127 * 2**-11) + 1e-7).all()
    else:  # q4_1: half a step of (max - min) / 15 (float16-rounded scale and minimum)
        span = (groups.max(axis=1, keepdims=True) - groups.min(axis=1, keepdims=True)) / 15
        assert (err <= span * (0.5 + 16 * 2**-11) + absmax * 2**-11).all()
    rel = np.abs(back - w).mean() / np.abs(w).mean()
    # measured on N(0, 0.05) weights: int8 0.75%, int4 (groups of 128) 12.8%, nf4 (64) 9.2%
    assert rel < {"int8": 0.01, "int4": 0.14, "nf4": 0.1, "q8_0": 0.01, "q4_1": 0.1}[fmt], rel


def test_storage_is_the_claimed_fraction_of_fp32():
    w = weight(1024, 256)
    fp32 = w.nbytes
    sizes = {fmt: quantize(w, fmt).nbytes / fp32 for fmt in ("int8", "int4", "nf4")}
    assert sizes["int8"] < 0.26 and sizes["int4"] < 1 / 6 and sizes["nf4"] < 1 / 6, sizes


@pytest.mark.parametrize("fmt", ["q8_0", "q4_1"])
def test_a_base_converted_from_a_gguf_keeps_the_files_blocks(fmt):
    """llama.cpp's blocks, dequantised by the gguf package (what ``erniekit convert`` writes) and
    quantised again in the same format, come back exactly: training on a Q4_1 GGUF's base with
    lora.quantize=q4_1 computes with the file's own values, not a second rounding of them."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize
    from gguf.quants import quantize as gguf_quantize

    kind = getattr(GGMLQuantizationType, fmt.upper())
    hf = weight(256, 64).T.copy()  # [out, in]: GGUF's blocks run along the input dimension
    in_file = gguf_dequantize(gguf_quantize(hf, kind), kind).reshape(hf.shape).astype(np.float32)
    q = quantize(in_file.T, fmt)
    np.testing.assert_array_equal(dequantize(q, to_tensors(q)).numpy(), in_file.T)
    assert q.nbytes / in_file.nbytes == {"q8_0": (1 + 2 / 32) / 4, "q4_1": (0.5 + 4 / 32) / 4}[fmt]


def test_zero_and_odd_groups():
    w = weight(128, 8)
    w[:, 3] = 0.0  # an all-zero column: no division by zero, zeros come back
    for fmt in ("int8", "int4", "nf4", "q8_0", "q4_1"):
        q = quantize(w, fmt)
        assert np.all(dequantize(q, to_tensors(q)).numpy()[:, 3] == 0.0)
    with pytest.raises(ValueError, match="not a multiple of the group size"):
        quantize(weight(100, 8), "int4", 64)


@pytest.mark.parametrize("fmt", ["int8", "int4", "nf4"])
def test_quantized_linear_forward_and_input_gradient_equal_dequantise_then_matmul(fmt):
    linear = paddle.nn.Linear(256, 48)
    layer = QuantizedLinear.from_linear(linear, fmt, 64 if fmt != "int8" else 0)
    x = paddle.to_tensor(
        np.random.default_rng(1).normal(size=(3, 5, 256)).astype("float32"), stop_gradient=False
    )
    y = layer(x)
    (y * y).sum().backward()
    grad = x.grad.numpy()
    x2 = paddle.to_tensor(x.numpy(), stop_gradient=False)
    y2 = reference(x2, layer)
    (y2 * y2).sum().backward()
    np.testing.assert_allclose(y.numpy(), y2.numpy(), atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(grad, x2.grad.numpy(), atol=1e-6, rtol=1e-5)
    assert not [p for p in layer.parameters() if not p.stop_gradient and p is not layer.bias]  # frozen
    assert layer.weight_bytes < linear.weight.numpy().nbytes / 3


def test_a_quantised_lora_model_trains_only_its_adapters_and_merges():
    from erniekit.models import build_model
    from erniekit.peft.lora import apply_lora, lora_layers, merged_model
    from erniekit.peft.qlora import quantize_base, storage

    model = build_model("ernie4_5/debug-moe", seed=0)
    x = paddle.to_tensor(np.random.default_rng(0).integers(0, 1000, (2, 12)))
    before = model(x).logits.numpy()
    quantize_base(model, "int8")
    apply_lora(model, ["q_proj", "v_proj", "down_proj"], rank=4, alpha=8)  # o_proj and others: plain Linears
    stats = storage(model)
    assert stats["bytes"] < stats["bytes_float"] / 3.5  # 1/4 plus a scale per column of 64 rows
    after = model(x).logits.numpy()
    assert np.abs(after - before).mean() < 0.02 * np.abs(before).mean()  # int8 keeps it (measured 1.2%)
    trainable = [n for n, p in model.named_parameters() if not p.stop_gradient]
    assert trainable and all(".lora_" in n for n in trainable)
    assert not [n for n in model.state_dict() if ".quantized." in n]  # names as without quantisation
    loss = model(x).logits.mean()
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not p.stop_gradient)
    for _, layer in lora_layers(model):  # trained-looking adapters
        layer.lora_B.set_value(np.full(layer.lora_B.shape, 0.05, "float32"))
    merged = merged_model(model)  # a plain model: dequantised base + adapters, as the run computes
    model.eval()
    np.testing.assert_allclose(merged(x).logits.numpy(), model(x).logits.numpy(), atol=1e-4)


def _dequantised_copy(model, flavor):
    """A float model holding exactly the weights a quantised ``model`` computes with."""
    from erniekit.models import build_model
    from erniekit.models.common.weights import check_and_assign
    from erniekit.peft.lora import base_state

    plain = build_model(flavor)
    check_and_assign(plain, {k: v.numpy() for k, v in base_state(model).items()}, "dequantised")
    return plain


def test_wint4_8_keeps_experts_in_int4_and_computes_with_what_it_stores():
    from erniekit.models import build_model
    from erniekit.peft.qlora import QuantizedExperts, quantize_base, storage
    from erniekit.quant.linear import QuantizedLinear

    flavor = "ernie4_5/debug-moe"
    model = build_model(flavor, seed=0)
    float_experts = sum(4 * int(np.prod(p.shape)) for n, p in model.named_parameters() if ".experts." in n)
    quantize_base(model, "wint4/8")
    experts = [m for _, m in model.named_sublayers() if isinstance(m, QuantizedExperts)]
    linears = [m for _, m in model.named_sublayers() if isinstance(m, QuantizedLinear)]
    assert experts and linears
    assert {m.fmt for m in linears} == {"int8"}
    assert all(m.up_gate_stack.fmt == "int4" and m.down_stack.fmt == "int4" for m in experts)
    expert_bytes = sum(m.weight_bytes for m in experts)
    assert expert_bytes < float_experts / 6  # 0.5 byte + a scale per column of each (small) expert
    assert storage(model)["bytes"] < storage(model)["bytes_float"] / 4
    plain = _dequantised_copy(model, flavor)
    x = paddle.to_tensor(np.random.default_rng(1).integers(0, 1000, (2, 10)))
    np.testing.assert_allclose(model(x).logits.numpy(), plain(x).logits.numpy(), atol=1e-5, rtol=1e-5)
    # one experts layer alone: its input gradient equals the float experts' (and no weight gradient)
    name = next(n for n, m in model.named_sublayers() if isinstance(m, QuantizedExperts))
    rng = np.random.default_rng(2)
    tokens = rng.normal(size=(7, model.args.hidden_size)).astype("float32")
    chosen = paddle.to_tensor(rng.integers(0, model.args.num_experts, (7, 2)))
    weights = paddle.to_tensor(rng.random((7, 2)).astype("float32"))
    grads = []
    for m in (model, plain):
        t = paddle.to_tensor(tokens, stop_gradient=False)
        out = m.get_sublayer(name)(t, chosen, weights)
        out.square().sum().backward()
        grads.append((out.numpy(), t.grad.numpy()))
    np.testing.assert_allclose(grads[0][0], grads[1][0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(grads[0][1], grads[1][1], atol=1e-5, rtol=1e-4)


def test_loading_quantises_each_tensor_as_it_is_read(tmp_path):
    """load_model(store=...) builds the model without memory and quantises every linear from the
    file: the same codes as quantising the float model in memory, and the same logits."""
    from erniekit.models import build_model, load_model, save_pretrained
    from erniekit.peft import qlora

    flavor = "ernie4_5/debug-moe"
    model = build_model(flavor, seed=3)
    save_pretrained(model, tmp_path)
    loaded = load_model(tmp_path, store=lambda m: qlora.quantized_layers(m, "nf4"))
    qlora.quantize_base(model, "nf4")
    x = paddle.to_tensor(np.random.default_rng(2).integers(0, 1000, (1, 9)))
    np.testing.assert_array_equal(loaded(x).logits.numpy(), model(x).logits.numpy())
    assert qlora.storage(loaded) == qlora.storage(model)


def test_weight_only_kernel_is_probed_and_the_reference_runs_where_it_fails(caplog):
    """Paddle's weight-only GPU kernel is admitted only by the start-up probe. This CPU build has
    weight_quantize but no weight_only_linear: forced through the probe, it is refused with the reason
    logged and the reference runs; a kernel that runs but disagrees is refused too; one computing
    what erniekit.quant stores is admitted."""
    import dataclasses
    import logging

    from erniekit import ops
    from erniekit.ops import weight_only
    from erniekit.ops.registry import same_results

    ops.configure("auto")
    assert not ops.weight_only_kernel()  # a CPU: never probed, the reference
    assert QuantizedLinear.from_linear(paddle.nn.Linear(64, 8), "int8").kernel_bits == 0
    probe = dataclasses.replace(weight_only.OP, half_only=False, on_cpu=True)  # force it on this CPU
    reason = same_results(probe, half=False)
    assert reason and ("weight_quantize" in reason or "weight_only_linear" in reason), reason
    with caplog.at_level(logging.INFO, logger="erniekit.ops"):
        assert ops._choose(probe, "on") is weight_only.reference
    assert "weight_only_linear uses the reference" in caplog.text

    def wrong(x, w, bits):
        return weight_only.reference(x, w, bits) * 1.01

    assert "differs from the reference" in same_results(dataclasses.replace(probe, fused=wrong), half=False)

    def ours(x, w, bits):  # erniekit.quant's per-channel codes: what the kernel must reproduce
        q = quantize(w.numpy(), "int8" if bits == 8 else "int4", w.shape[0])
        return paddle.matmul(x, dequantize(q, to_tensors(q)))

    assert same_results(dataclasses.replace(probe, fused=ours), half=False) is None
