"""GGUF conversion: a tiny llama GGUF written here (permuted q/k, F32 and Q8_0 tensors, a byte-level BPE
vocabulary) converts back to an HF directory with the original weights, tokenizer and chat template."""

import json

import numpy as np
import paddle
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

from erniekit.convert.gguf import convert_gguf
from erniekit.errors import CheckpointError
from erniekit.models import build_model, load_model, to_hf_tensors
from erniekit.models.llama.gguf import unpermute
from erniekit.tokenizer import load_tokenizer
from erniekit.tokenizer.templates import chatml

CORPUS = ["hello world 123", "the quick brown fox", "numbers 4567 and more text", "<|im_start|>"] * 30


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's converter does to HF q/k rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return tok, specials


def write_gguf(path, model, quant: GGMLQuantizationType | None):
    a = model.args
    tok, specials = tiny_tokenizer()
    state = json.loads(tok.to_str())["model"]
    vocab = sorted(state["vocab"].items(), key=lambda kv: kv[1])
    merges = [" ".join(m) if isinstance(m, list) else m for m in state["merges"]]
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(a.num_layers)
    w.add_context_length(a.max_position_embeddings)
    w.add_embedding_length(a.hidden_size)
    w.add_feed_forward_length(a.intermediate_size)
    w.add_head_count(a.num_heads)
    w.add_head_count_kv(a.num_kv_heads)
    w.add_rope_freq_base(a.rope_theta)
    w.add_layer_norm_rms_eps(a.rms_norm_eps)
    w.add_vocab_size(a.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list([t for t, _ in vocab] + [f"<pad{i}>" for i in range(a.vocab_size - len(vocab))])
    w.add_token_types([3 if t in specials else 1 for t, _ in vocab] + [1] * (a.vocab_size - len(vocab)))
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_chat_template(chatml("You are helpful.").jinja)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    layer = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for name, value in to_hf_tensors(model).items():
        if name not in names:
            i, rest = name.split(".", 3)[2], name.split(".", 3)[3].rsplit(".", 1)[0]
            names[name] = f"blk.{i}.{layer[rest]}.weight"
        if name.endswith("q_proj.weight"):
            value = permute(value, a.num_heads)
        elif name.endswith("k_proj.weight"):
            value = permute(value, a.num_kv_heads)
        if quant is not None and value.ndim == 2:
            w.add_tensor(names[name], quantize(value, quant), raw_dtype=quant)
        else:
            w.add_tensor(names[name], value.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tok


def test_unpermute_inverts_llama_cpp():
    w = np.arange(8 * 4 * 3, dtype=np.float32).reshape(32, 3)
    assert np.array_equal(unpermute(permute(w, 4), 4), w)


@pytest.mark.parametrize("quant", [None, GGMLQuantizationType.Q8_0], ids=["f32", "q8_0"])
def test_round_trip(tmp_path, quant):
    model = build_model("llama/debug", seed=0)
    model.eval()
    tok = write_gguf(tmp_path / "tiny.gguf", model, quant)
    out = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "hf")
    converted = load_model(out)
    x = paddle.to_tensor(np.random.RandomState(0).randint(0, 1024, (2, 9)))
    diff = np.abs(converted(x).logits.numpy() - model(x).logits.numpy()).max()
    assert diff == 0.0 if quant is None else diff < 5e-2
    ours = load_tokenizer(out)
    for text in ("hello world 4567", "the fox<|im_start|>x"):
        assert ours.encode(text) == tok.encode(text).ids
        assert ours.decode(ours.encode(text), skip_special=False) == text
    assert ours.template.name == "chatml" and ours.template.default_system == "You are helpful."
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"


def test_unsupported_architecture(tmp_path):
    w = GGUFWriter(str(tmp_path / "x.gguf"), "gpt2")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CheckpointError, match="GGUF architecture 'gpt2' is not supported"):
        convert_gguf(tmp_path / "x.gguf", tmp_path / "out")


def test_a_gguf_file_is_a_model_path(tmp_path):
    """model.path may name the .gguf itself: the same model and tokenizer as its conversion, read one
    tensor at a time; a QLoRA base in the file's own block format computes with the file's values."""
    from functools import partial

    from erniekit.peft import qlora
    from erniekit.peft.lora import base_state

    model = build_model("llama/debug", seed=0)
    write_gguf(tmp_path / "tiny.gguf", model, GGMLQuantizationType.Q8_0)
    converted = load_model(convert_gguf(tmp_path / "tiny.gguf", tmp_path / "hf"))
    direct = load_model(tmp_path / "tiny.gguf")
    x = paddle.to_tensor(np.random.RandomState(1).randint(0, 1024, (2, 9)))
    np.testing.assert_array_equal(direct(x).logits.numpy(), converted(x).logits.numpy())
    ours, theirs = load_tokenizer(tmp_path / "tiny.gguf"), load_tokenizer(tmp_path / "hf")
    for text in ("hello world 4567", "the fox<|im_start|>x"):
        assert ours.encode(text) == theirs.encode(text)
    assert ours.template.name == "chatml"
    kept = load_model(tmp_path / "tiny.gguf", store=partial(qlora.quantized_layers, fmt="q8_0"))
    assert qlora.storage(kept)["weights"] == 4 * model.args.num_layers  # qkv, o, gate|up, down (fused)
    plain = converted.state_dict()
    for name, value in base_state(kept).items():  # every weight exactly as the file holds it
        np.testing.assert_array_equal(value.numpy(), plain[name].numpy(), err_msg=name)


def test_an_unreadable_gguf_is_named(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(CheckpointError, match="broken.gguf"):
        load_model(bad)
