"""A run -> one GGUF file that llama.cpp (and Ollama, which runs it) loads.

    erniekit export output/run --to gguf --out out/ [--dtype f32|f16|bf16|q8_0]

Llama-family models are written as llama.cpp's ``llama`` architecture (``qwen2`` with q/k/v biases),
ERNIE 4.5 as ``ernie4_5`` (dense) or ``ernie4_5-moe``; a LoRA run is merged first. Tensors take
llama.cpp's names (the ``gguf`` package's map from the Hugging Face names ``to_hf_tensors`` gives); a
MoE layer's experts are stacked into one ``[experts, out, in]`` tensor each for gate, up and down.
llama.cpp's ``llama`` rotates adjacent pairs, so the q and k rows of each head of a half-split Llama
model are permuted to match (its ``qwen2`` rotates halves, as HF does); ERNIE already rotates adjacent
pairs. Vectors (norms, biases, the router's correction bias) stay float32, as llama.cpp's converter
writes them; ``q8_0`` quantises the matrices whose rows are whole 32-value blocks (the rest f16). The
tokenizer goes in as llama.cpp expects: byte-level BPE (``gpt2``: tokens, types, merges, pre-tokenizer)
or SentencePiece (``llama``: tokens, scores, types), with its special ids and the Jinja chat template.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path

import numpy as np

from erniekit.errors import CheckpointError
from erniekit.inference.load import load_for_inference
from erniekit.manifest import sealed
from erniekit.models import to_hf_tensors

log = logging.getLogger(__name__)

DTYPES = ("f32", "f16", "bf16", "q8_0")


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order for a half-split rotary model: per head, the two halves interleaved
    into adjacent pairs (the inverse of convert.gguf.unpermute)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def architecture(args) -> str:
    if args.family == "llama":
        return "qwen2" if args.qkv_bias else "llama"  # llama.cpp's qwen2: q/k/v biases, half-split rotary
    if args.family == "ernie4_5" and args.vision is None:
        if args.linear_bias:
            raise CheckpointError("GGUF export: llama.cpp's ernie4_5 has no projection biases (use_bias)")
        return "ernie4_5-moe" if args.num_experts else "ernie4_5"
    raise CheckpointError(f"GGUF export covers llama and ernie4_5 models, not {args.family}")


def export_gguf(run: str | Path, out: str | Path, dtype: str = "f16", ollama: bool = False) -> Path:
    """Write ``out/<run name>-<dtype>.gguf`` (with ``ollama``, and an Ollama ``Modelfile``; see
    ollama.py) and the directory's manifest; returns the file."""
    if dtype not in DTYPES:
        raise CheckpointError(f"--dtype {dtype}: GGUF export writes {', '.join(DTYPES)}")
    tokenizer, model, _ = load_for_inference(run)  # a run (LoRA merged) or a model directory
    out = Path(out)
    path = out / f"{Path(run).resolve().name}-{dtype}.gguf"
    with sealed(out):
        write_gguf(model, tokenizer, path, dtype)
        if ollama:
            from erniekit.export.ollama import modelfile

            (out / "Modelfile").write_text(
                modelfile(tokenizer, path.name, model.args.max_position_embeddings)
            )
    log.info("wrote %s (%s, %s)", path, architecture(model.args), dtype)
    return path


def write_gguf(model, tokenizer, path: Path, dtype: str = "f16", name: str | None = None) -> None:
    import gguf

    args = model.args
    arch = architecture(args)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name or path.stem)
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        }[dtype]
    )
    _hparams(writer, args, arch)
    _tokenizer(writer, tokenizer, args.vocab_size)
    for gguf_name, array in _tensors(model, arch):
        _add_tensor(writer, gguf_name, array, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _hparams(writer, args, arch: str) -> None:
    writer.add_context_length(args.max_position_embeddings)
    writer.add_embedding_length(args.hidden_size)
    writer.add_block_count(args.num_layers)
    writer.add_feed_forward_length(args.intermediate_size)
    writer.add_head_count(args.num_heads)
    writer.add_head_count_kv(args.num_kv_heads)
    writer.add_key_length(args.head_dim)
    writer.add_value_length(args.head_dim)
    writer.add_rope_dimension_count(args.head_dim)
    writer.add_rope_freq_base(float(args.rope_theta))
    writer.add_layer_norm_rms_eps(float(args.rms_norm_eps))
    writer.add_vocab_size(args.vocab_size)
    scaling = args.rope_scaling or {}
    if scaling.get("rope_type") == "llama3":
        raise CheckpointError("GGUF export of Llama-3 rope scaling is not supported yet")
    if arch == "ernie4_5-moe":
        # llama.cpp builds experts on every layer from leading_dense_block_count on
        last = args.moe_layer_end in (-1, args.num_layers - 1)
        if args.moe_layer_interval != 1 or not last or args.mlp_layer_types is not None:
            raise CheckpointError(
                "GGUF export: llama.cpp's ernie4_5-moe needs MoE on every layer after the first dense ones"
            )
        writer.add_expert_shared_feed_forward_length(args.num_shared_experts * args.moe_intermediate_size)
        writer.add_expert_count(args.num_experts)
        writer.add_expert_used_count(args.experts_per_token)
        writer.add_expert_feed_forward_length(args.moe_intermediate_size)
        writer.add_expert_shared_count(args.num_shared_experts)
        writer.add_leading_dense_block_count(args.moe_layer_start)
        writer.add_interleave_moe_layer_step(args.moe_layer_interval)


def _tensors(model, arch: str):
    """(GGUF name, float32 array [out, in]) pairs, experts stacked."""
    import gguf

    args = model.args
    kind = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(kind, args.num_layers)
    hf = to_hf_tensors(model)
    experts: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    for key, array in hf.items():
        m = re.fullmatch(r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight", key)
        if m:
            experts.setdefault((m.group(1), m.group(3)), {})[int(m.group(2))] = array
            continue
        base, _, suffix = key.rpartition(".")
        if key.endswith("moe_statics.e_score_correction_bias"):
            layer = key.split(".")[2]
            yield f"blk.{layer}.exp_probs_b.bias", array.reshape(-1)
            continue
        name = names.get_name(base)
        if name is None:
            raise CheckpointError(f"{key}: no llama.cpp tensor name for it ({arch})")
        if arch == "llama" and base.endswith(("q_proj", "k_proj")):  # weights and biases alike
            array = permute(array, args.num_heads if base.endswith("q_proj") else args.num_kv_heads)
        yield f"{name}.{suffix}", array
    for (layer, kind), by_index in sorted(experts.items()):
        yield f"blk.{layer}.ffn_{kind}_exps.weight", np.stack([by_index[i] for i in sorted(by_index)])


def _add_tensor(writer, name: str, array: np.ndarray, dtype: str) -> None:
    import gguf
    from gguf.quants import quantize

    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim == 1 or dtype == "f32" or ".ffn_gate_inp." in name:  # as llama.cpp's converter: router f32
        writer.add_tensor(name, array)
        return
    if dtype == "q8_0" and array.shape[-1] % 32 == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
    elif dtype == "bf16":
        qtype = gguf.GGMLQuantizationType.BF16
    else:
        writer.add_tensor(name, array.astype(np.float16))
        return
    writer.add_tensor(name, quantize(array, qtype), raw_dtype=qtype)


def _tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """The tokenizer as llama.cpp reads it; ids past the tokenizer's vocabulary (embedding rows the
    model pads) are unused tokens."""
    import gguf

    scores = None
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        files = Path(tmp)
        if (files / "tokenizer.json").is_file():
            tokens, types, extra = _bpe_vocab(json.loads((files / "tokenizer.json").read_text()))
            writer.add_tokenizer_model("gpt2")
            writer.add_tokenizer_pre(extra.pop("pre"))
            writer.add_token_merges(extra.pop("merges"))
        else:
            tokens, types, scores, prefix = _sentencepiece_vocab(files / "tokenizer.model")
            writer.add_tokenizer_model("llama")
            writer.add_tokenizer_pre("default")
            writer.add_add_space_prefix(prefix)
    if len(tokens) > vocab_size:
        raise CheckpointError(f"the tokenizer has {len(tokens)} tokens; the model only {vocab_size} rows")
    pad = vocab_size - len(tokens)
    tokens = tokens + [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
    types = types + [gguf.TokenType.UNUSED] * pad
    specials = tokenizer.special_tokens
    for text, i in specials.items():  # ours are special whatever the vocabulary called them
        if i < len(tokens) and tokens[i] == text:
            types[i] = gguf.TokenType.CONTROL
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if scores is not None:
        writer.add_token_scores(scores + [-1e9] * pad)
    ids = {
        "bos": tokenizer.config.get("bos_token"),
        "eos": tokenizer.config.get("eos_token"),
        "pad": tokenizer.config.get("pad_token"),
        "unk": tokenizer.config.get("unk_token"),
    }
    adders = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "pad": writer.add_pad_token_id,
        "unk": writer.add_unk_token_id,
    }
    for kind, text in ids.items():
        text = text.get("content") if isinstance(text, dict) else text
        if text in specials:
            adders[kind](specials[text])
    writer.add_add_bos_token(False)  # the chat template writes the BOS it wants
    writer.add_chat_template(tokenizer.template.jinja)


def _bpe_vocab(spec: dict) -> tuple[list[str], list[int], dict]:
    import gguf

    model = spec["model"]
    if model.get("type") != "BPE":
        raise CheckpointError(f"GGUF export: a {model.get('type')} tokenizer.json is not supported (BPE is)")
    by_id = {i: t for t, i in model["vocab"].items()}
    kinds = {}
    for added in spec.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        kinds[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    size = max(by_id) + 1
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    types = [
        kinds.get(i, gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED) for i in range(size)
    ]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre = "smollm" if "Digits" in json.dumps(spec.get("pre_tokenizer")) else "gpt2"
    return tokens, types, {"merges": merges, "pre": pre}


def _sentencepiece_vocab(path: Path) -> tuple[list[str], list[int], list[float], bool]:
    """Tokens, types, scores, and whether the model prefixes a space (SentencePiece's dummy prefix)."""
    import gguf
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    tokens, types, scores = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    prefix = sp.id_to_piece(sp.encode("a")[0]).startswith("\u2581")
    return tokens, types, scores, prefix
