"""Tokenizers: a SentencePiece ``tokenizer.model`` (ERNIE) or an HF ``tokenizer.json``, plus a chat template.

Both backends see the same rules: special tokens (from ``tokenizer_config.json``'s
``added_tokens_decoder`` and its bos/eos/pad/unk entries) are matched literally in the text and never
split; everything between them goes through the model. The chat template comes from our own key
``erniekit_chat_template`` when present, otherwise it is recognised from the Jinja ``chat_template``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from erniekit.errors import CheckpointError
from erniekit.resources import resolve_path
from erniekit.tokenizer.templates import ChatTemplate, Segment, template_by_name

CONFIG_NAME = "tokenizer_config.json"
END_OF_TURN = {
    "ernie4_5": "<|end_of_sentence|>",
    "ernie4_5_thinking": "<|im_end|>",
    "ernie4_5_vl": "<|end_of_sentence|>",
    "paddleocr_vl": "<|end_of_sentence|>",
    "chatml": "<|im_end|>",
}
_ERNIE = ("<|begin_of_sentence|>", "<|end_of_sentence|>")
_IMAGE = ("<|IMAGE_START|>", "<|IMAGE_PLACEHOLDER|>", "<|IMAGE_END|>")
REQUIRED = {
    "ernie4_5": _ERNIE,
    "ernie4_5_thinking": ("<|im_start|>", "<|im_end|>"),
    "ernie4_5_vl": _ERNIE + _IMAGE,
    "paddleocr_vl": _ERNIE + _IMAGE,
    "chatml": ("<|im_start|>", "<|im_end|>"),
}


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


class _SentencePiece:
    def __init__(self, path: Path):
        import sentencepiece as spm

        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=str(path))

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def token_to_id(self, token: str) -> int | None:
        i = self.sp.piece_to_id(token)
        return None if i == self.sp.unk_id() and token != self.sp.id_to_piece(i) else i

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def special_tokens(self) -> dict[str, int]:
        return {}  # SentencePiece control pieces are declared in tokenizer_config.json

    def save(self, out: Path) -> None:
        shutil.copyfile(self.path, out / "tokenizer.model")


class _HFTokenizers:
    def __init__(self, path: Path, tok=None):
        from tokenizers import Tokenizer as HFTokenizer

        self.path = path  # tokenizer.json, or the GGUF file whose vocabulary ``tok`` was built from
        self.tok = tok if tok is not None else HFTokenizer.from_file(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def special_tokens(self) -> dict[str, int]:
        return {t.content: i for i, t in self.tok.get_added_tokens_decoder().items() if t.special}

    def save(self, out: Path) -> None:
        if self.path.name == "tokenizer.json":
            shutil.copyfile(self.path, out / "tokenizer.json")
        else:
            self.tok.save(str(out / "tokenizer.json"))


class Tokenizer:
    """Text <-> token ids, special tokens, and the chat template that formats conversations."""

    def __init__(self, backend, config: dict, template_name: str | None = None):
        self.backend, self.config = backend, dict(config)
        names = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        self.special_tokens: dict[str, int] = backend.special_tokens()
        for key, entry in (config.get("added_tokens_decoder") or {}).items():
            self.special_tokens[_token_text(entry)] = int(key)
        for text in names.values():
            if text and text not in self.special_tokens and backend.token_to_id(text) is not None:
                self.special_tokens[text] = backend.token_to_id(text)
        self.bos_token, self.eos_token, self.pad_token = (
            names["bos_token"],
            names["eos_token"],
            names["pad_token"],
        )
        if self.eos_token is None or self.eos_token not in self.special_tokens:
            raise CheckpointError(f"{backend.path.parent}: tokenizer has no usable eos_token")
        self._special_re = re.compile(
            "(" + "|".join(re.escape(t) for t in sorted(self.special_tokens, key=len, reverse=True)) + ")"
        )
        name = (
            template_name or config.get("erniekit_chat_template") or _recognise(config.get("chat_template"))
        )
        self.set_template(name)

    def set_template(self, name: str) -> None:
        """Format conversations with the named template (refused if a token it needs is missing)."""
        template = template_by_name(name, self.eos_token, _default_system(self.config))
        missing = [t for t in REQUIRED.get(template.name, ()) if t not in self.special_tokens]
        if missing:
            raise CheckpointError(
                f"{self.backend.path.parent}: chat template {template.name!r} needs special "
                f"token {missing[0]}, which this tokenizer does not have"
            )
        self.template: ChatTemplate = template

    # ids of the tokens that end generation: EOS and the template's end-of-turn marker
    @property
    def stop_ids(self) -> list[int]:
        ids = [self.special_tokens[self.eos_token]]
        end = END_OF_TURN.get(self.template.name)
        if end and self.special_tokens.get(end) not in (None, *ids):
            ids.append(self.special_tokens[end])
        return ids

    @property
    def eos_id(self) -> int:
        return self.special_tokens[self.eos_token]

    @property
    def pad_id(self) -> int:
        if self.pad_token in self.special_tokens:
            return self.special_tokens[self.pad_token]
        return self.eos_id

    @property
    def vocab_size(self) -> int:
        return max(self.backend.vocab_size, max(self.special_tokens.values()) + 1)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings inside it map to their ids (no BOS added)."""
        ids: list[int] = []
        for piece in self._special_re.split(text):
            if piece in self.special_tokens:
                ids.append(self.special_tokens[piece])
            elif piece:
                ids.extend(self.backend.encode(piece))
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        """Text of ``ids``; ids past the tokenizer's vocabulary (padded embedding rows) are dropped."""
        by_id = {i: t for t, i in self.special_tokens.items()}
        known = self.backend.vocab_size
        out, run = [], []
        for i in ids:
            if i >= known and i not in by_id:
                continue
            if i in by_id:
                out.append(self.backend.decode(run))
                run = []
                if not skip_special:
                    out.append(by_id[i])
            else:
                run.append(i)
        out.append(self.backend.decode(run))
        return "".join(out)

    def encode_segments(self, segments: list[Segment]) -> tuple[list[int], list[bool]]:
        """Token ids of rendered segments, and for each token whether it is trained on."""
        ids: list[int] = []
        trainable: list[bool] = []
        for seg in segments:
            piece = self.encode(seg.text)
            ids += piece
            trainable += [seg.trainable] * len(piece)
        return ids, trainable

    def encode_chat(
        self,
        messages: list[dict],
        add_generation_prompt: bool = False,
        tools: list[dict] | None = None,
        keep_reasoning: str = "last",
    ) -> tuple[list[int], list[bool]]:
        """Token ids of a conversation (with the ``tools`` it offers) and which of them are trained."""
        return self.encode_segments(
            self.template.render(messages, add_generation_prompt, tools, keep_reasoning)
        )

    def save(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.backend.save(out)
        config = dict(self.config)
        config["chat_template"] = self.template.jinja
        config["erniekit_chat_template"] = self.template.name
        if self.template.default_system:
            config["erniekit_default_system"] = self.template.default_system
        (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def _recognise(jinja: str | None) -> str:
    if jinja and "think_mode=True" in jinja:  # ERNIE 4.5 Thinking's system setting
        return "ernie4_5_thinking"
    if jinja and "<|im_start|>" in jinja:
        return "chatml"
    if jinja and "<|IMAGE_START|>" in jinja:
        return "ernie4_5_vl" if "Picture" in jinja else "paddleocr_vl"
    if jinja and "<|begin_of_sentence|>" in jinja:
        return "ernie4_5"
    return "plain"


def _default_system(config: dict) -> str | None:
    if config.get("erniekit_default_system"):
        return config["erniekit_default_system"]
    jinja = config.get("chat_template") or ""
    m = re.search(r"<\|im_start\|>system(?:\n|\\n)(.+?)<\|im_end\|>", jinja)
    return m.group(1) if m and "messages[0]['role'] != 'system'" in jinja.replace('"', "'") else None


def load_tokenizer(path: str | Path, template: str | None = None) -> Tokenizer:
    """Load ``tokenizer.json`` (preferred) or ``tokenizer.model``, with ``tokenizer_config.json``.

    ``path`` is a directory, ``samples://NAME`` for a tokenizer bundled with erniekit, or a ``.gguf``
    file (its vocabulary).
    """
    if str(path).endswith(".gguf"):
        from erniekit.tokenizer.gguf import gguf_tokenizer

        backend, config = gguf_tokenizer(Path(path))
        return Tokenizer(_HFTokenizers(Path(path), backend), config, template)
    path = resolve_path(path)
    config_path = path / CONFIG_NAME
    try:
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if (path / "tokenizer.json").is_file():
        backend = _HFTokenizers(path / "tokenizer.json")
    elif (path / "tokenizer.model").is_file():
        backend = _SentencePiece(path / "tokenizer.model")
    else:
        raise CheckpointError(f"{path}: no tokenizer.json or tokenizer.model")
    return Tokenizer(backend, config, template)
