"""A GGUF file's vocabulary (GPT-2-style byte-level BPE) as a ``tokenizers`` tokenizer and its config:
control tokens become special tokens, the file's chat template the config's."""

from __future__ import annotations

import json

from erniekit.errors import CheckpointError

CONTROL = 3  # llama.cpp token type of special (control) tokens


def field(reader, key: str, default=None):
    """A metadata value of a GGUF file, ``default`` when absent."""
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def build_tokenizer_json(reader) -> tuple[dict, dict]:
    """(tokenizer.json as a dict, tokenizer_config.json) from the GGUF vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    model_kind = field(reader, "tokenizer.ggml.model")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if model_kind != "gpt2":
        raise CheckpointError(
            f"GGUF tokenizer model {model_kind!r} is not supported (only byte-level BPE, 'gpt2')"
        )
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
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
        i = field(reader, f"tokenizer.ggml.{key}_token_id")
        return None if i is None else tokens[i]

    config = {
        "bos_token": name("bos"),
        "eos_token": name("eos"),
        "pad_token": name("padding"),
        "unk_token": name("unknown"),
        "add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token")),
        "chat_template": field(reader, "tokenizer.chat_template"),
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1_000_000,
    }
    return json.loads(tok.to_str()), config


def gguf_tokenizer(path):
    """(a ``tokenizers`` Tokenizer, tokenizer_config) of the GGUF file at ``path``."""
    from gguf import GGUFReader
    from tokenizers import Tokenizer

    tokenizer_json, config = build_tokenizer_json(GGUFReader(str(path)))
    return Tokenizer.from_str(json.dumps(tokenizer_json)), config
