"""Record layouts -> conversations (lists of ``{"role", "content"}`` messages).

* ``erniekit``: ``{"src": [q1, q2..], "tgt": [a1, a2..], "system"?: str}`` (strings also accepted for one
  turn; ``label`` [0/1 per turn] marks which replies are trained, as in ERNIEKit)
* ``alpaca``: ``{"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ..]}``
* ``messages``: ``{"messages": [{"role", "content", "loss"?: bool}, ..], "tools"?: [..]}`` in OpenAI's
  chat format: assistant turns may carry ``tool_calls`` and ``reasoning_content`` (or open with
  ``<think>...</think>``), ``tool`` turns carry results, ``tools`` lists the function schemas offered.
  ``conversations`` with ShareGPT ``from``/``value`` keys is read too, with LLaMA-Factory's tool roles:
  ``function_call`` (the call as JSON text, or a list of calls) and ``observation`` (the result), and
  ``tools`` as JSON text. For vision-language models a content may be a list of parts (``{"type":
  "text"|"image"|"image_url"|"video", ...}``), or, LLaMA-Factory's layout, a string with ``<image>``
  tags filled in order from the record's ``"images"`` list (``<video>``/``"videos"``)
* ``chatml`` (ERNIEKit's name for its function-call and thinking data): the same layout as
  ``messages``, ``{"messages": [..], "tools": [..]}``
* ``erniekit_vl`` (ERNIEKit's VL SFT): ``{"text_info": [{"text", "tag": "mask"|"no_mask"}, ..],
  "image_info": [{"matched_text_index": i, "image_url": PATH}, ..], "video_info"?: [{"matched_text_index",
  "image_url": [frame paths]}], "is_system"?: 0|1}``: ``mask`` items are prompts, ``no_mask`` items
  replies, each image comes right before the text item it is matched to
* ``query_response`` (ERNIEKit's other VL layout): ``{"query", "response", "history"?: [[q, a], ..],
  "images"?, "videos"?}`` with ``<image>``/``<video>`` tags in the text

Image paths are relative to the data file (or absolute). Problems raise ValueError; callers add the file
and line.
"""

from __future__ import annotations

import json
import re

from erniekit.tokenizer.templates import check_messages

SFT_FORMATS = ("erniekit", "alpaca", "messages", "chatml", "erniekit_vl", "query_response")
MEDIA_TAGS = {"<image>": "image", "<video>": "video"}
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",  # LLaMA-Factory's tool layout: the assistant's call(s) as JSON text
    "observation": "tool",  # and the tool's result
    "tool": "tool",
}


def detect_format(record: dict) -> str:
    if "text_info" in record:
        return "erniekit_vl"
    if "query" in record and "response" in record:
        return "query_response"
    if "src" in record and "tgt" in record:
        return "erniekit"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "messages" in record or "conversations" in record:
        return "messages"
    raise ValueError(
        f"cannot tell the format from keys {sorted(record)}; set the file's format "
        f"(erniekit: src/tgt, alpaca: instruction/output, messages, erniekit_vl: text_info/image_info, "
        f"query_response: query/response)"
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
    return to_chat(record, fmt)[0]


def to_chat(record: dict, fmt: str = "auto") -> tuple[list[dict], list[dict] | None]:
    """(messages, tools): the conversation a record describes, validated, and the function tools it
    offers (None without)."""
    fmt = detect_format(record) if fmt == "auto" else fmt
    tools = None
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
    elif fmt in ("messages", "chatml"):
        messages, tools = chat_messages(record), chat_tools(record)
    elif fmt == "erniekit_vl":
        messages = _erniekit_vl(record)
    elif fmt == "query_response":
        media = Media(record)
        history = record.get("history") or []
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in history):
            raise ValueError("field 'history' must be a list of [query, response] pairs")
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        for q, a in [*history, (_text(record, "query", fmt), _text(record, "response", fmt))]:
            messages += [{"role": "user", "content": media.fill(q)}, {"role": "assistant", "content": a}]
        media.check_all_used()
    else:
        raise ValueError(f"unknown format {fmt!r}")
    check_messages(messages, media=True)
    return messages, tools


def chat_tools(record: dict) -> list[dict] | None:
    """The record's ``tools``: OpenAI function schemas (``{"type": "function", "function": {..}}`` or
    the function objects alone), as a list or its JSON text."""
    tools = record.get("tools")
    if tools in (None, "", []):
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as e:
            raise ValueError(f"field 'tools' is not valid JSON ({e.msg})") from None
    if not isinstance(tools, list):
        raise ValueError("field 'tools' must be a list of function schemas (or its JSON text)")
    for i, tool in enumerate(tools):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ValueError(f"tools[{i}] must be a function schema with a 'name'")
    return tools or None


def _function_calls(i: int, value) -> list[dict]:
    """LLaMA-Factory's ``function_call`` value: one call ``{"name", "arguments"}`` or a list, as JSON."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"message {i} (function_call) is not valid JSON ({e.msg})") from None
    calls = value if isinstance(value, list) else [value]
    if not calls or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        raise ValueError(f'message {i} (function_call) must be {{"name", "arguments"}} or a list of them')
    return [{"type": "function", "function": c} for c in calls]


class Media:
    """The ``images`` / ``videos`` lists of a record, handed out in order to ``<image>``/``<video>`` tags."""

    def __init__(self, record: dict):
        self.items = {}
        for kind in ("image", "video"):
            items = record.get(f"{kind}s") or []
            if not isinstance(items, list):
                raise ValueError(f"field '{kind}s' must be a list")
            self.items[kind] = list(items)
        self.used = {"image": 0, "video": 0}

    def fill(self, text: str):
        """The text, or (when it has tags) content parts with each tag replaced by the next item."""
        if not isinstance(text, str) or not any(tag in text for tag in MEDIA_TAGS):
            return text
        parts = []
        for piece in re.split("(<image>|<video>)", text):
            kind = MEDIA_TAGS.get(piece)
            if kind is None:
                if piece:
                    parts.append({"type": "text", "text": piece})
                continue
            if self.used[kind] == len(self.items[kind]):
                raise ValueError(f"more <{kind}> tags than entries in '{kind}s' ({len(self.items[kind])})")
            parts.append({"type": kind, kind: self.items[kind][self.used[kind]]})
            self.used[kind] += 1
        return parts

    def check_all_used(self) -> None:
        for kind, items in self.items.items():
            if self.used[kind] != len(items):
                raise ValueError(
                    f"'{kind}s' lists {len(items)} but the text has {self.used[kind]} <{kind}> tags"
                )


def _erniekit_vl(record: dict) -> list[dict]:
    texts = record.get("text_info")
    if not isinstance(texts, list) or not texts:
        raise ValueError("field 'text_info' must be a non-empty list of {text, tag} items")
    anchored: dict[int, list[dict]] = {}
    for kind, key in (("image", "image_info"), ("video", "video_info")):
        for n, item in enumerate(record.get(key) or []):
            if not isinstance(item, dict) or "matched_text_index" not in item or "image_url" not in item:
                raise ValueError(f"{key}[{n}] needs matched_text_index and image_url")
            source = item["image_url"]
            if kind == "video" and not isinstance(source, list):
                raise ValueError(
                    f"{key}[{n}]: give a video as its list of frame images (files are not decoded)"
                )
            index = item["matched_text_index"]
            if not isinstance(index, int) or not 0 <= index < len(texts):
                raise ValueError(f"{key}[{n}]: matched_text_index {index!r} is not an index of text_info")
            anchored.setdefault(index, []).append({"type": kind, kind: source})
    messages: list[dict] = []
    for i, item in enumerate(texts):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ValueError(f"text_info[{i}] needs a 'text' string")
        tag = item.get("tag", "mask")
        if tag not in ("mask", "no_mask"):
            raise ValueError(f"text_info[{i}]: tag {tag!r} is neither 'mask' nor 'no_mask'")
        role = "system" if i == 0 and record.get("is_system") else ("user" if tag == "mask" else "assistant")
        media = anchored.get(i, [])
        if media and role != "user":
            raise ValueError(f"text_info[{i}]: images belong to prompts (mask items), not to {role} text")
        parts = [*media, {"type": "text", "text": item["text"]}]
        if messages and messages[-1]["role"] == role:  # consecutive items of one turn
            messages[-1]["content"] += parts
        else:
            messages.append({"role": role, "content": parts})
    for m in messages:  # text-only turns stay strings
        if all(p["type"] == "text" for p in m["content"]):
            m["content"] = "".join(p["text"] for p in m["content"])
    return messages


def chat_messages(record: dict) -> list[dict]:
    raw = record.get("messages", record.get("conversations"))
    if not isinstance(raw, list):
        raise ValueError("field 'messages' must be a list of {role, content} objects")
    media = Media(record)
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
            if m["from"] == "function_call":
                calls = _function_calls(i, m.get("value"))
                if out and out[-1]["role"] == "assistant" and not out[-1].get("tool_calls"):
                    out[-1]["tool_calls"] = calls  # the reply's text, then its calls
                    continue
                msg = {"role": "assistant", "content": "", "tool_calls": calls}
            else:
                msg = {"role": role, "content": m.get("value")}
        else:
            msg = {"role": m.get("role"), "content": m.get("content")}
            for key in ("tool_calls", "reasoning_content"):
                if m.get(key) is not None and msg["role"] == "assistant":
                    msg[key] = m[key]
        if "loss" in m:
            msg["loss"] = bool(m["loss"])
        msg["content"] = media.fill(msg["content"])
        out.append(msg)
    media.check_all_used()
    return out
