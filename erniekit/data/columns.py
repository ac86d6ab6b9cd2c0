"""Reading files whose keys differ from ours: ``columns`` renames record keys, ``tags`` message keys.

``columns: {our_key: their_key}`` (LLaMA-Factory's dataset_info ``columns``) reads the value of
``their_key`` as ``our_key``, e.g. ``{instruction: question, output: answer}`` for an Alpaca file whose
fields are called question/answer; keys not named stay as they are. ``tags`` does the same inside the
messages of a conversation (``messages``, ``conversations``, and a pair's ``prompt``/``chosen``/
``rejected`` when they hold messages): ``role``/``content`` name the message keys, ``user``/``assistant``/
``system`` the role values, e.g. ``{role: speaker, content: text, user: customer, assistant: agent}``.

This module imports nothing heavy: the recipe schema checks keys with it.
"""

from __future__ import annotations

# every record key a format, the preference pairs, the prompt files or pre-training reads
RECORD_KEYS = (
    "src", "tgt", "label", "system",  # erniekit
    "instruction", "input", "output", "history",  # alpaca
    "messages", "conversations", "images", "videos", "tools",  # messages (tools: their schemas)
    "text_info", "image_info", "video_info", "is_system",  # erniekit_vl
    "query", "response",  # query_response
    "prompt", "chosen", "rejected", "sort", "margin",  # preference pairs (margin: reward models)
    "completion",  # unpaired preference examples (KTO, with "label")
    "question", "answer",  # prompt/answer files (RL, eval.generation)
    "text",  # continued pre-training (method.text_keys)
)  # fmt: skip
TAG_KEYS = ("role", "content", "user", "assistant", "system")
_MESSAGE_FIELDS = ("messages", "conversations", "prompt", "chosen", "rejected", "completion")


def unknown_key(mapping: dict, allowed: tuple[str, ...] | list[str]) -> str | None:
    """The problem with a columns/tags mapping, or None: a key we do not read, or an empty name."""
    for ours, theirs in mapping.items():
        if ours not in allowed:
            return f"unknown key {ours!r}; the keys erniekit reads are {', '.join(allowed)}"
        if not theirs:
            return f"{ours!r} maps to an empty name"
    return None


def rename(data: dict, columns: dict, tags: dict) -> dict:
    """The record with ``columns`` applied (all at once, so two keys may swap), then ``tags``."""
    if columns:
        theirs = set(columns.values())
        moved = {ours: data[their] for ours, their in columns.items() if their in data}
        data = {**{k: v for k, v in data.items() if k not in theirs}, **moved}
    if tags:
        data = dict(data)
        for key in _MESSAGE_FIELDS:
            value = data.get(key)
            if isinstance(value, list):
                data[key] = [_retag(m, tags) if isinstance(m, dict) else m for m in value]
            elif isinstance(value, dict):
                data[key] = _retag(value, tags)
    return data


def _retag(message: dict, tags: dict) -> dict:
    out = dict(message)
    for ours in ("role", "content"):
        theirs = tags.get(ours)
        if theirs and theirs in message:
            out.pop(theirs)
            out[ours] = message[theirs]
    roles = {tags[r]: r for r in ("user", "assistant", "system") if r in tags}
    if out.get("role") in roles:
        out["role"] = roles[out["role"]]
    return out
