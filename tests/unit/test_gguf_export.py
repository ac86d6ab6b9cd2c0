"""GGUF export: our reader (erniekit convert gguf) reads our writer exactly for the Llama family (f32:
identical logits and tokenizer; f16, bf16 and q8_0 within their rounding), and ERNIE 4.5 dense and MoE
files carry llama.cpp's architecture, tensor names and shapes, hyper-parameters and SentencePiece
vocabulary. llama.cpp itself loading them is tests/parity/test_gguf_llamacpp.py."""

import numpy as np
import paddle
import pytest
from gguf import GGUFReader
from gguf.quants import dequantize

from erniekit.convert.gguf import convert_gguf
from erniekit.errors import CheckpointError
from erniekit.export.gguf import write_gguf
from erniekit.models import build_model, load_model, to_hf_tensors
from erniekit.resources import resolve_path
from erniekit.tokenizer import load_tokenizer
from tests.helpers import erniekit
from tests.unit.test_gguf import write_gguf as write_reference_gguf


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A tiny llama with a byte-level BPE tokenizer and chat template, as an HF directory."""
    tmp = tmp_path_factory.mktemp("llama")
    model = build_model("llama/debug", seed=0)
    write_reference_gguf(tmp / "ref.gguf", model, None)
    return convert_gguf(tmp / "ref.gguf", tmp / "hf")


def fields(path) -> tuple[dict, dict]:
    reader = GGUFReader(str(path))
    meta = {k: f.contents() for k, f in reader.fields.items()}
    tensors = {t.name: t for t in reader.tensors}
    return meta, tensors


@pytest.mark.parametrize("dtype,tolerance", [("f32", 0.0), ("f16", 2e-2), ("bf16", 0.15), ("q8_0", 5e-2)])
def test_llama_export_reads_back(llama_dir, tmp_path, dtype, tolerance):
    model, tokenizer = load_model(llama_dir), load_tokenizer(llama_dir)
    model.eval()
    write_gguf(model, tokenizer, tmp_path / "m.gguf", dtype)
    back = convert_gguf(tmp_path / "m.gguf", tmp_path / "hf")
    again = load_model(back)
    x = paddle.to_tensor(np.random.RandomState(0).randint(0, model.args.vocab_size, (2, 11)))
    ref = model(x).logits.numpy()
    diff = np.abs(again(x).logits.numpy() - ref).max()
    assert diff <= tolerance * max(1.0, np.abs(ref).max()), diff
    ours = load_tokenizer(back)
    for text in ("hello world 4567", "the fox<|im_start|>x"):
        assert ours.encode(text) == tokenizer.encode(text)
    assert ours.template.jinja == tokenizer.template.jinja
    meta, tensors = fields(tmp_path / "m.gguf")
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "smollm"  # digits split one by one, as SmolLM2's
    kinds = {t.tensor_type.name for t in tensors.values() if len(t.shape) == 2}
    assert kinds == {"f32": {"F32"}, "f16": {"F16"}, "bf16": {"BF16"}, "q8_0": {"Q8_0"}}[dtype]
    assert tensors["output_norm.weight"].tensor_type.name == "F32"  # vectors stay float32


def test_qwen2_biases_read_back(llama_dir, tmp_path):
    """q/k/v biases (Qwen2): written as llama.cpp's qwen2 architecture, no permutation."""
    import dataclasses

    from erniekit.models import family

    args = dataclasses.replace(load_model(llama_dir).args, qkv_bias=True)
    model = family("llama").model.build(args)
    for name, p in model.named_parameters():
        if name.endswith("qkv_proj.bias"):
            p.set_value(np.random.default_rng(0).normal(0, 0.5, p.shape).astype("float32"))
    model.eval()
    write_gguf(model, load_tokenizer(llama_dir), tmp_path / "q.gguf", "f32")
    assert fields(tmp_path / "q.gguf")[0]["general.architecture"] == "qwen2"
    again = load_model(convert_gguf(tmp_path / "q.gguf", tmp_path / "hf"))
    x = paddle.to_tensor(np.random.RandomState(1).randint(0, args.vocab_size, (2, 9)))
    assert np.abs(again(x).logits.numpy() - model(x).logits.numpy()).max() == 0.0


@pytest.mark.parametrize("flavor", ["ernie4_5/debug", "ernie4_5/debug-moe"])
def test_ernie_files_carry_llama_cpp_names_shapes_and_vocabulary(tmp_path, flavor):
    import sentencepiece as spm

    model = build_model(flavor, seed=0)
    tokenizer = load_tokenizer(resolve_path("samples://ernie_tokenizer"))
    write_gguf(model, tokenizer, tmp_path / "e.gguf", "f32")
    meta, tensors = fields(tmp_path / "e.gguf")
    a = model.args
    arch = "ernie4_5-moe" if a.num_experts else "ernie4_5"
    assert meta["general.architecture"] == arch
    assert (
        meta[f"{arch}.block_count"] == a.num_layers
        and meta[f"{arch}.attention.head_count_kv"] == a.num_kv_heads
    )
    assert meta[f"{arch}.rope.freq_base"] == pytest.approx(a.rope_theta)
    hf = to_hf_tensors(model)
    for i in range(a.num_layers):  # ERNIE rotates adjacent pairs, like llama.cpp: q/k are not permuted
        want = hf[f"model.layers.{i}.self_attn.q_proj.weight"]
        assert np.array_equal(np.asarray(tensors[f"blk.{i}.attn_q.weight"].data).reshape(want.shape), want)
    if a.num_experts:
        assert meta[f"{arch}.expert_count"] == a.num_experts
        assert meta[f"{arch}.expert_used_count"] == a.experts_per_token
        assert meta[f"{arch}.leading_dense_block_count"] == a.moe_layer_start
        assert (
            meta[f"{arch}.expert_shared_feed_forward_length"]
            == a.num_shared_experts * a.moe_intermediate_size
        )
        layer = a.moe_layer_start
        gate = tensors[f"blk.{layer}.ffn_gate_exps.weight"]
        stacked = np.stack(
            [hf[f"model.layers.{layer}.mlp.experts.{e}.gate_proj.weight"] for e in range(a.num_experts)]
        )
        assert np.array_equal(dequantize(gate.data, gate.tensor_type).reshape(stacked.shape), stacked)
        assert f"blk.{layer}.ffn_gate_inp.weight" in tensors and f"blk.{layer}.exp_probs_b.bias" in tensors
        assert f"blk.{layer}.ffn_up_shexp.weight" in tensors and "blk.0.ffn_up.weight" in tensors
    sp = spm.SentencePieceProcessor(
        model_file=str(resolve_path("samples://ernie_tokenizer") / "tokenizer.model")
    )
    tokens = meta["tokenizer.ggml.tokens"]
    assert meta["tokenizer.ggml.model"] == "llama" and len(tokens) == a.vocab_size
    assert tokens[: sp.get_piece_size()] == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    eos = tokenizer.special_tokens[tokenizer.config["eos_token"]]
    assert meta["tokenizer.ggml.eos_token_id"] == eos and meta["tokenizer.ggml.token_type"][eos] == 3
    assert meta["tokenizer.chat_template"] == tokenizer.template.jinja


def test_export_cli_writes_a_verified_gguf_and_refuses_what_it_cannot(tmp_path):
    run = tmp_path / "run"
    erniekit(
        "train", "ernie4_5/debug_sft", f"train.output_dir={run}", "train.max_steps=1", "train.eval_every=0"
    )
    erniekit("export", run, "--to", "gguf", "--dtype", "q8_0", "--out", tmp_path / "gguf")
    (file,) = (tmp_path / "gguf").glob("*.gguf")
    assert file.name.endswith("-q8_0.gguf") and "ok" in erniekit("verify", tmp_path / "gguf").stdout
    erniekit("export", run, "--to", "gguf", "--dtype", "f32", "--out", tmp_path / "f32")  # llama.cpp's names
    assert [p.name for p in (tmp_path / "f32").glob("*.gguf")] == ["run-f32.gguf"]
    err = erniekit("export", run, "--dtype", "q8_0", "--out", tmp_path / "hf", fails=True).stderr
    assert "q8_0 is a GGUF quantisation" in err
    vl = build_model("ernie4_5_vl/debug", seed=0)
    with pytest.raises(CheckpointError, match="covers llama and ernie4_5"):
        write_gguf(vl, load_tokenizer(resolve_path("samples://ernie_tokenizer")), tmp_path / "vl.gguf")
