"""Record layouts -> conversations (lists of ``{"role", "content"}`` messages).

* ``erniekit``: ``{"src": [q1, q2..], "tgt": [a1, a2..], "system"?: str}`` (strings also accepted for one
  turn; ``label`` [0/1 per turn] marks which replies are trained, as in ERNIEKit)
* ``alpaca``: ``{"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ..]}``
* ``messages``: ``{"messages": [{"role", "content", "loss"?: bool}, ..]}`` (``conversations`` with
  ShareGPT ``from``/``value`` keys is read too)

Problems raise ValueError; callers add the file and line.
"""

from __future__ import annotations

from erniekit.tokenizer.templates import check_messages

SFT_FORMATS = ("erniekit", "alpaca", "messages")
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


def detect_format(record: dict) -> str:
    if "src" in record and "tgt" in record:
        return "erniekit"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "messages" in record or "conversations" in record:
        return "messages"
    raise ValueError(
        f"cannot tell the format from keys {sorted(record)}; set the file's format "
        f"(erniekit: src/tgt, alpaca: instruction/output, messages)"
    )


def _text(record: dict, key: str, fmt: str) -> str:
    if key not in record:
        raise ValueError(f"missing field {key!r} ({fmt} format)")
    value = record[key]
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def _as_list(record: dict, key: str) -> list[str]:
    value = record.get(key)
    if value is None:
        raise ValueError(f"missing field {key!r} (erniekit format)")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ValueError(f"field {key!r} must be a string or a list of strings")
    return items


def to_messages(record: dict, fmt: str = "auto") -> list[dict]:
    """The conversation a record describes, validated (alternating turns, ends with a reply)."""
    fmt = detect_format(record) if fmt == "auto" else fmt
    if fmt == "erniekit":
        src, tgt = _as_list(record, "src"), _as_list(record, "tgt")
        if len(src) != len(tgt):
            raise ValueError(f"src has {len(src)} turns but tgt has {len(tgt)}")
        labels = record.get("label", [1] * len(tgt))
        if not isinstance(labels, list) or len(labels) != len(tgt):
            raise ValueError("field 'label' must list one 0/1 per tgt turn")
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        for q, a, keep in zip(src, tgt, labels):
            messages += [
                {"role": "user", "content": q},
                {"role": "assistant", "content": a, "loss": bool(keep)},
            ]
    elif fmt == "alpaca":
        prompt = _text(record, "instruction", fmt)
        if record.get("input"):
            prompt = f"{prompt}\n{_text(record, 'input', fmt)}"
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        for pair in record.get("history") or []:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ValueError("field 'history' must be a list of [question, answer] pairs")
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        messages += [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": _text(record, "output", fmt)},
        ]
    elif fmt == "messages":
        messages = chat_messages(record)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    check_messages(messages)
    return messages


def chat_messages(record: dict) -> list[dict]:
    raw = record.get("messages", record.get("conversations"))
    if not isinstance(raw, list):
        raise ValueError("field 'messages' must be a list of {role, content} objects")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ValueError(f"message {i} is not an object")
        if "from" in m and "role" not in m:  # ShareGPT
            role = _SHAREGPT_ROLES.get(m["from"])
            if role is None:
                raise ValueError(
                    f"message {i} has role {m['from']!r}; expected one of {', '.join(_SHAREGPT_ROLES)}"
                )
            msg = {"role": role, "content": m.get("value")}
        else:
            msg = {"role": m.get("role"), "content": m.get("content")}
        if "loss" in m:
            msg["loss"] = bool(m["loss"])
        out.append(msg)
    return out
