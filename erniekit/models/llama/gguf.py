"""llama.cpp's GGUF layout of ``llama`` / ``qwen2`` models: names, shapes and the q/k row permutation.

``read_args`` builds our ModelArgs from the file's metadata; ``GGUFSource`` reads its tensors one at a
time, dequantised to float32 by the ``gguf`` package, under their Hugging Face names and layouts (the
same interface as a model directory's TensorSource), so ``load_model`` can take a ``.gguf`` file
directly. llama.cpp stores the q and k projections of ``llama``-architecture models with the rows of each
head permuted for its interleaved RoPE; we undo that so the weights use HF's half-split layout.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from erniekit.errors import CheckpointError
from erniekit.models.llama.model import llama_args
from erniekit.tokenizer.gguf import field

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
    arch = field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"GGUF architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}"
        )
    g = lambda key, default=None: field(reader, f"{arch}.{key}", default)  # noqa: E731
    heads, hidden = g("attention.head_count"), g("embedding_length")
    tokens = field(reader, "tokenizer.ggml.tokens")
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
        bos_token_id=field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=field(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=field(reader, "tokenizer.ggml.padding_token_id"),
    )


def is_gguf(path) -> bool:
    return str(path).endswith(".gguf")


def open_gguf(path: str | Path):
    from gguf import GGUFReader

    if not Path(path).is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable GGUF file ({e})") from None


class GGUFSource:
    """A GGUF file's tensors by Hugging Face name, each dequantised to float32 only when read."""

    def __init__(self, path: str | Path, reader=None):
        self.directory = Path(path)
        self.reader = reader or open_gguf(path)
        self.arch, self.args = read_args(self.reader)
        self._tensors = {hf_name(t.name): t for t in self.reader.tensors}
        self.location = dict.fromkeys(self._tensors, self.directory.name)

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(x) for x in reversed(self._tensors[key].shape.tolist()))

    def get(self, key: str) -> np.ndarray:
        from gguf.quants import dequantize

        if key not in self._tensors:
            raise CheckpointError(f"{self.directory}: missing tensor {key}")
        t = self._tensors[key]
        value = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(self.shape(key))
        if self.arch == "llama" and key.endswith(("q_proj.weight", "k_proj.weight")):
            a = self.args
            value = unpermute(value, a.num_heads if "q_proj" in key else a.num_kv_heads)
        return value
