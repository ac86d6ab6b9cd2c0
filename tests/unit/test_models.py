"""Model loading/saving rules, KV-cache consistency, generation and the MoE layer, on tiny models."""

import json

import numpy as np
import paddle
import pytest
from safetensors.numpy import load_file, save_file

from erniekit.errors import CheckpointError
from erniekit.models import build_model, load_model, save_pretrained, state_dict_numpy
from erniekit.models.common.moe import MoE, update_correction_bias
from erniekit.models.common.weights import to_external
from erniekit.models.ernie4_5.flavors import FLAVORS
from erniekit.models.ernie4_5.hf import config_from_args, weight_rules


@pytest.fixture(scope="module", params=["ernie4_5/debug", "ernie4_5/debug-moe"])
def model(request):
    m = build_model(request.param, seed=0)
    m.eval()
    return m


def tokens(b, s, seed=0, vocab=1024):
    return paddle.to_tensor(np.random.RandomState(seed).randint(0, vocab, (b, s)))


def logits(m, x, **kw):
    return m(x, **kw).logits.numpy()


def test_save_load_round_trip_sharded(model, tmp_path):
    save_pretrained(model, tmp_path, max_shard_size="60KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    x = tokens(2, 9)
    assert np.array_equal(logits(load_model(tmp_path), x), logits(model, x))


def test_paddle_format_checkpoint_loads(model, tmp_path):
    arrays = state_dict_numpy(model)
    tensors = to_external(weight_rules(model.args, "paddle"), arrays, transpose=False)
    assert all(k.startswith(("ernie.", "lm_head")) for k in tensors)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config_from_args(model.args)))
    x = tokens(1, 7)
    assert np.array_equal(logits(load_model(tmp_path), x), logits(model, x))


def _saved(model, tmp_path):
    save_pretrained(model, tmp_path)
    return load_file(str(tmp_path / "model.safetensors"))


def test_wrong_shape_names_the_tensor(model, tmp_path):
    tensors = _saved(model, tmp_path)
    name = "model.layers.1.self_attn.k_proj.weight"
    tensors[name] = tensors[name][:-1]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"tensor {name} has shape \\[31, 64\\], expected \\[32, 64\\]"):
        load_model(tmp_path)


def test_missing_and_unexpected_tensors_are_named(model, tmp_path):
    tensors = _saved(model, tmp_path)
    del tensors["model.norm.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing tensor model.norm.weight"):
        load_model(tmp_path)
    tensors["model.norm.weight"] = np.ones(64, np.float32)
    tensors["model.layers.7.mlp.up_proj.weight"] = np.ones((2, 2), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected tensor model.layers.7.mlp.up_proj.weight"):
        load_model(tmp_path)


def test_not_a_model_dir(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(CheckpointError, match="model_type 'gpt2' is not supported"):
        load_model(tmp_path)


def test_bfloat16_save_keeps_router_fp32(tmp_path):
    m = build_model("ernie4_5/debug-moe", seed=0)
    save_pretrained(m, tmp_path, dtype="bfloat16")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert dtypes["model.layers.1.mlp.gate.weight"] == "F32"
    assert dtypes["model.layers.1.mlp.moe_statics.e_score_correction_bias"] == "F32"
    assert dtypes["model.embed_tokens.weight"] == "BF16"
    # bf16 on disk, fp32 in memory: within bf16 rounding of the original
    x = tokens(1, 6)
    assert np.abs(logits(load_model(tmp_path), x) - logits(m, x)).max() < 0.05


def test_kv_cache_matches_full_forward(model):
    x = tokens(2, 10, seed=5)
    full = logits(model, x)
    cache = model.new_cache(2, 10)
    first = model(x[:, :6], cache=cache).logits.numpy()
    rest = [model(x[:, i : i + 1], cache=cache).logits.numpy() for i in range(6, 10)]
    np.testing.assert_allclose(np.concatenate([first, *rest], axis=1), full, atol=1e-5)
    # decode steps whose key_padding spans the whole cache (read in place, as generation does)
    cache, real = model.new_cache(2, 12), paddle.to_tensor(np.zeros((2, 12), bool))
    real[:, :6] = True
    first = model(x[:, :6], key_padding=real[:, :6], cache=cache).logits.numpy()
    rest = []
    for i in range(6, 10):
        real[:, i] = True
        rest.append(model(x[:, i : i + 1], key_padding=real, cache=cache).logits.numpy())
    np.testing.assert_allclose(np.concatenate([first, *rest], axis=1), full, atol=1e-5)


def test_generation_stops_at_eos_and_streams(model):
    prompt = [5, 9, 13]
    free = model.generate([prompt], max_new_tokens=8)[0]
    eos = free[3]
    streamed = []
    stopped = model.generate(
        [prompt], max_new_tokens=8, eos_token_ids=[eos], on_token=lambda r, t: streamed.append(t)
    )
    assert stopped[0] == free[: free.index(eos) + 1]
    assert streamed == stopped[0]


def test_left_padded_batch_equals_single(model):
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    batched = model.generate(prompts, max_new_tokens=6)
    assert batched == [model.generate([p], max_new_tokens=6)[0] for p in prompts]
    s1 = model.generate(prompts, max_new_tokens=6, temperature=1.0, top_p=0.9, top_k=50, seed=7)
    assert s1 == model.generate(prompts, max_new_tokens=6, temperature=1.0, top_p=0.9, top_k=50, seed=7)


def test_packed_segments_do_not_attend_across(model):
    """Two documents packed in one row give the same logits as each run alone."""
    a, b = tokens(1, 5, seed=1), tokens(1, 7, seed=2)
    row = paddle.concat([a, b], axis=1)
    seg = paddle.to_tensor([[1] * 5 + [2] * 7])
    pos = paddle.to_tensor([list(range(5)) + list(range(7))])
    packed = logits(model, row, segment_ids=seg, position_ids=pos)
    np.testing.assert_allclose(packed[:, :5], logits(model, a), atol=1e-5)
    np.testing.assert_allclose(packed[:, 5:], logits(model, b), atol=1e-5)


def naive_moe(layer: MoE, x: np.ndarray) -> np.ndarray:
    """Token by token, expert by expert, in NumPy float64: the definition the layer must match."""
    w_r = layer.gate.weight.numpy().astype(np.float64)
    bias = layer.gate.e_score_correction_bias.numpy()
    up_gate, down = layer.experts.up_gate_proj.numpy(), layer.experts.down_proj.numpy()
    out = np.zeros_like(x, dtype=np.float64)
    k = layer.gate.top_k

    def mlp(v, ug, d):
        h = v @ ug
        g, u = np.split(h, 2)
        return (g / (1 + np.exp(-g)) * u) @ d

    for t, v in enumerate(x.astype(np.float64)):
        logit = v @ w_r
        p = np.exp(logit - logit.max())
        p /= p.sum()
        chosen = np.argsort(-(p + bias), kind="stable")[:k]
        weights = p[chosen] / p[chosen].sum()
        out[t] = sum(w * mlp(v, up_gate[e], down[e]) for e, w in zip(chosen, weights))
    sh = layer.shared_experts
    out += np.stack([mlp(v, sh.up_gate_proj.weight.numpy(), sh.down_proj.weight.numpy()) for v in x])
    return out


def test_moe_layer_matches_naive_definition():
    paddle.seed(3)
    layer = MoE(FLAVORS["debug-moe"])
    layer.gate.e_score_correction_bias.set_value(paddle.randn([8]) * 0.01)
    x = np.random.RandomState(0).randn(23, 64).astype(np.float32)
    y, aux = layer(paddle.to_tensor(x))
    np.testing.assert_allclose(y.numpy(), naive_moe(layer, x), rtol=1e-4, atol=1e-5)
    assert 0.9 < float(aux) < 3.0


def test_correction_bias_moves_toward_balance():
    paddle.seed(0)
    layer = MoE(FLAVORS["debug-moe"])
    layer.train()
    layer(paddle.randn([40, 64]))
    usage = layer.expert_usage.numpy().copy()
    assert usage.sum() == 40 * layer.gate.top_k and usage.max() > usage.min()  # every assignment counted
    update_correction_bias(layer, rate=0.01)
    bias = layer.gate.e_score_correction_bias.numpy()
    assert np.all(bias[usage > usage.mean()] == -0.01) and np.all(bias[usage < usage.mean()] == 0.01)
    assert layer.expert_usage.numpy().sum() == 0
    assert "gate.e_score_correction_bias" in dict(layer.named_buffers())  # updated in place


@pytest.mark.parametrize("flavor", ["ernie4_5/debug-moe", "ernie4_5_vl/debug", "paddleocr_vl/debug"])
@pytest.mark.parametrize("granularity", ["full", "core_attn"])
def test_recompute_changes_no_gradient(flavor, granularity):
    """parallel.recompute: the same loss and gradients, decoder and vision blocks recomputed."""
    from erniekit.models import image_processor
    from erniekit.models.common.parallel import apply_recompute

    def grads(recompute: bool):
        model = build_model(flavor, seed=3)
        if recompute:
            apply_recompute(model, granularity)
        blocks = [model.layers[0], *(model.vision.tower.blocks[:1] if model.args.vision else [])]
        calls = []  # each recomputed block runs again in the backward pass: count its first projection
        for block in blocks:
            attn = getattr(block, "self_attn", None) or block.attn
            (getattr(attn, "qkv_proj", None) or attn.qkv).register_forward_pre_hook(
                lambda *_: calls.append(1)
            )
        ids = np.random.RandomState(0).randint(3, 900, (1, 40))
        kwargs = {}
        v = model.args.vision
        if v is not None:
            processor = image_processor(model.args, None, 3136, 3136)  # one 56 x 56 image: 4 tokens
            pixels = processor([np.random.RandomState(1).randint(0, 255, (56, 56, 3)).astype("uint8")])
            tokens = int(np.prod(pixels.grid_thw[0])) // v.spatial_merge_size**2
            ids[0, 5 : 5 + tokens] = v.image_token_id
            kwargs = dict(pixel_values=paddle.to_tensor(pixels.pixel_values), image_grid_thw=pixels.grid_thw)
        out = model(paddle.to_tensor(ids), **kwargs)
        loss = (out.logits.astype("float32") ** 2).mean()
        loss.backward()
        assert len(calls) == len(blocks) * (2 if recompute else 1)
        return float(loss), {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}

    (loss, plain), (loss_r, recomputed) = grads(False), grads(True)
    assert loss_r == loss
    assert plain.keys() == recomputed.keys() and any(n.startswith("vision.") for n in plain) == (
        "vl" in flavor
    )
    for name, g in plain.items():
        np.testing.assert_allclose(recomputed[name], g, rtol=0, atol=1e-7, err_msg=name)
