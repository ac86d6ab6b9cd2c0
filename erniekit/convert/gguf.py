"""GGUF (llama.cpp) -> a Hugging Face model directory: config.json, safetensors, tokenizer.json.

    erniekit convert gguf SmolLM2-135M-Instruct.Q4_1.gguf --out models/SmolLM2-135M-Instruct

Tensors are dequantised to float32 with the ``gguf`` package. llama.cpp stores the q and k projections
of ``llama``-architecture models with the rows of each head permuted for its interleaved RoPE; we undo
that so the weights use HF's half-split layout. The tokenizer (GPT-2-style byte-level BPE) is rebuilt
from the file's vocabulary and merges, with control tokens as special tokens and the file's chat template.
Note: a quantised file's weights are its dequantised values, not the original checkpoint's.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from erniekit.errors import CheckpointError
from erniekit.manifest import sealed
from erniekit.models.common.weights import save_safetensors_dir
from erniekit.models.llama.hf import config_from_args
from erniekit.models.llama.model import llama_args

log = logging.getLogger(__name__)

ARCHITECTURES = ("llama", "qwen2")
_LAYER = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
CONTROL = 3  # llama.cpp token type of special (control) tokens


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def hf_name(gguf_name: str) -> str:
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if m and m.group(2) in _LAYER:
        return f"model.layers.{m.group(1)}.{_LAYER[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"(\w+)\.(weight|bias)", gguf_name)
    if m and m.group(1) in _GLOBAL:
        return f"{_GLOBAL[m.group(1)]}.{m.group(2)}"
    raise CheckpointError(f"GGUF tensor {gguf_name} has no Hugging Face counterpart we know")


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Invert llama.cpp's q/k row permutation (per head: interleaved pairs back to two halves)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_args(reader):
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"GGUF architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}"
        )
    g = lambda key, default=None: _field(reader, f"{arch}.{key}", default)  # noqa: E731
    heads, hidden = g("attention.head_count"), g("embedding_length")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    names = {t.name for t in reader.tensors}
    return arch, llama_args(
        vocab_size=g("vocab_size", len(tokens)),
        hidden_size=hidden,
        num_layers=g("block_count"),
        num_heads=heads,
        num_kv_heads=g("attention.head_count_kv", heads),
        head_dim=g("attention.key_length", hidden // heads),
        intermediate_size=g("feed_forward_length"),
        rope_theta=float(g("rope.freq_base", 10000.0)),
        rms_norm_eps=float(g("attention.layer_norm_rms_epsilon")),
        tie_word_embeddings="output.weight" not in names,
        qkv_bias=arch == "qwen2",
        max_position_embeddings=g("context_length", 4096),
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=_field(reader, "tokenizer.ggml.padding_token_id"),
    )


def read_tensors(reader, arch: str, args) -> dict[str, np.ndarray]:
    from gguf.quants import dequantize

    out = {}
    for t in reader.tensors:
        shape = [int(x) for x in reversed(t.shape.tolist())]
        value = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        name = hf_name(t.name)
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            value = unpermute(value, args.num_heads if "q_proj" in name else args.num_kv_heads)
        out[name] = value
    return out


def build_tokenizer_json(reader) -> tuple[dict, dict]:
    """(tokenizer.json as a dict, tokenizer_config.json) from the GGUF vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    model_kind = _field(reader, "tokenizer.ggml.model")
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    if model_kind != "gpt2":
        raise CheckpointError(
            f"GGUF tokenizer model {model_kind!r} is not supported (only byte-level BPE, 'gpt2')"
        )
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, ignore_merges=False)
    )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder"):
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    elif pre in ("default", "gpt2"):
        tok.pre_tokenizer = byte_level
    else:
        raise CheckpointError(f"GGUF pre-tokenizer {pre!r} is not supported (smollm, gpt2, default are)")
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t, kind in zip(tokens, types) if kind == CONTROL]
    )

    def name(key):
        i = _field(reader, f"tokenizer.ggml.{key}_token_id")
        return None if i is None else tokens[i]

    config = {
        "bos_token": name("bos"),
        "eos_token": name("eos"),
        "pad_token": name("padding"),
        "unk_token": name("unknown"),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token")),
        "chat_template": _field(reader, "tokenizer.chat_template"),
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1_000_000,
    }
    return json.loads(tok.to_str()), config


def convert_gguf(path: str | Path, out: str | Path) -> Path:
    from gguf import GGUFReader

    path, out = Path(path), Path(out)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    reader = GGUFReader(str(path))
    arch, args = read_args(reader)
    tensors = read_tensors(reader, arch, args)
    with sealed(out):
        _write_hf(out, tensors, args, reader)
    log.info("converted %s (%s, %d tensors) to %s", path.name, arch, len(tensors), out)
    return out


def _write_hf(out: Path, tensors: dict[str, np.ndarray], args, reader) -> None:
    save_safetensors_dir(tensors, out)
    config = config_from_args(args)
    config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {
        k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config[k] is not None
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tokenizer_json, tokenizer_config = build_tokenizer_json(reader)
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json, ensure_ascii=False) + "\n")
    (out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n"
    )
