"""Preference pairs: (conversation so far, chosen reply, rejected reply), tokenized with a shared prompt.

Record layouts:
* ERNIEKit: ``{"src": [user turns], "tgt": [assistant turns, one fewer], "response": [[a], [b]],
  "sort": [score_a, score_b], "system"?}``: the higher ``sort`` is chosen.
* pairs: ``{"prompt": str | [messages], "chosen": str | [messages] | {"content"|"value"},
  "rejected": ...}``; when chosen/rejected are message lists, the last message is the reply and the ones
  before it extend the prompt.
* ShareGPT (LLaMA-Factory's ``dpo_*_demo``): ``{"conversations": [{"from", "value"}], "chosen":
  {"from", "value"}, "rejected": {...}}``.

A pair is tokenized as prompt P (the chat template up to the assistant turn, untrained), chosen C and
rejected R (reply + end-of-turn token): the packed row is [P | C | R], with R attending to P but not to C.
"""

from __future__ import annotations

from dataclasses import dataclass

from erniekit.data.formats import chat_messages
from erniekit.data.tokenize import TokenStats
from erniekit.tokenizer import Tokenizer
from erniekit.tokenizer.templates import check_messages

PAIR_FORMATS = ("erniekit", "pairs", "messages")


@dataclass(frozen=True)
class Pair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def _reply_text(value, key: str) -> tuple[list[dict], str]:
    """(extra context messages, reply text) of a chosen/rejected field."""
    if isinstance(value, str):
        return [], value
    if isinstance(value, dict):
        text = value.get("content", value.get("value"))
        if isinstance(text, str):
            return [], text
    if isinstance(value, list) and value:
        msgs = chat_messages({"messages": value})
        if msgs[-1]["role"] != "assistant":
            raise ValueError(f"field {key!r}: the last message must be the assistant's reply")
        return msgs[:-1], msgs[-1]["content"]
    raise ValueError(f"field {key!r} must be a string, a message, or a list of messages")


def to_pair_messages(record: dict, fmt: str = "auto") -> tuple[list[dict], str, str]:
    """(prompt conversation ending with a user turn, chosen text, rejected text)."""
    if fmt == "auto":
        fmt = "erniekit" if "response" in record else "pairs"
    if fmt == "erniekit":
        for key in ("src", "response", "sort"):
            if key not in record:
                raise ValueError(f"missing field {key!r} (ERNIEKit DPO format)")
        src, tgt = record["src"], record.get("tgt", [])
        src, tgt = ([src] if isinstance(src, str) else src), ([tgt] if isinstance(tgt, str) else tgt)
        if len(tgt) != len(src) - 1:
            raise ValueError(f"src has {len(src)} turns, so tgt needs {len(src) - 1}, got {len(tgt)}")
        responses, sort = record["response"], record["sort"]
        if not (
            isinstance(responses, list) and len(responses) == 2 and isinstance(sort, list) and len(sort) == 2
        ):
            raise ValueError("fields 'response' and 'sort' must each hold two entries")
        if sort[0] == sort[1]:
            raise ValueError("field 'sort' must rank the two responses differently")
        texts = ["".join(r) if isinstance(r, list) else r for r in responses]
        best = 0 if sort[0] > sort[1] else 1
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        for i, q in enumerate(src):
            messages.append({"role": "user", "content": q})
            if i < len(tgt):
                messages.append({"role": "assistant", "content": tgt[i]})
        chosen, rejected = texts[best], texts[1 - best]
    else:
        if "chosen" not in record or "rejected" not in record:
            raise ValueError("missing field 'chosen' or 'rejected'")
        if "prompt" in record:  # its <image> tags are filled from the record's images, as in SFT data
            p = record["prompt"]
            media = {k: record[k] for k in ("images", "videos") if k in record}
            messages = chat_messages(
                {"messages": [{"role": "user", "content": p}] if isinstance(p, str) else p, **media}
            )
        else:
            messages = chat_messages(record)
        if record.get("system") and messages and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": record["system"]}, *messages]
        extra_c, chosen = _reply_text(record["chosen"], "chosen")
        extra_r, rejected = _reply_text(record["rejected"], "rejected")
        if extra_c != extra_r:
            raise ValueError("chosen and rejected continue different conversations")
        messages = messages + extra_c
    if not all(isinstance(t, str) for t in (chosen, rejected)):
        raise ValueError("chosen and rejected replies must be strings")
    check_messages(messages, allow_open=True, media=True)
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("the prompt must end with a user message")
    return messages, chosen, rejected


def _drop_first_turn(messages: list[dict]) -> list[dict] | None:
    start = 1 if messages[0]["role"] == "system" else 0
    return None if len(messages) - start <= 1 else messages[:start] + messages[start + 2 :]


def _share(c: list[int], r: list[int], room: int) -> tuple[list[int], list[int]]:
    """Cut the replies to ``room`` tokens in total: half each, a short reply leaving its rest to the other."""
    half = room // 2
    if len(c) <= half:
        return c, r[: room - len(c)]
    if len(r) <= room - half:
        return c[: room - len(r)], r
    return c[:half], r[: room - half]


def reply_ids(encode_chat, messages: list[dict], prompt: list[int], text: str) -> list[int]:
    """The tokens an assistant reply ``text`` adds after ``prompt`` (the template's rendering of
    ``messages`` up to the assistant turn): the trained ones, ending with the end-of-turn token."""
    ids, trainable = encode_chat([*messages, {"role": "assistant", "content": text}], False)
    if ids[: len(prompt)] != prompt:
        raise ValueError("the chat template does not render the prompt as a prefix of the reply")
    return [t for t, keep in zip(ids[len(prompt) :], trainable[len(prompt) :]) if keep]


def encode_pair(
    tokenizer: Tokenizer,
    messages: list[dict],
    chosen: str,
    rejected: str,
    max_len: int,
    truncation: str,
    stats: TokenStats,
    encode_chat=None,
) -> Pair | None:
    """Token ids of the shared prompt and both replies (each ending with the end-of-turn token).
    ``encode_chat(messages, add_generation_prompt)`` replaces the tokenizer's (a VL model's expands
    image placeholders)."""
    encode_chat = encode_chat or tokenizer.encode_chat

    def encode(msgs):
        prompt, _ = encode_chat(msgs, add_generation_prompt=True)
        c, r = (reply_ids(encode_chat, msgs, prompt, text) for text in (chosen, rejected))
        return prompt, c, r

    prompt, c, r = encode(messages)
    if len(prompt) + len(c) + len(r) > max_len:
        if truncation == "drop":
            stats.dropped_overlong += 1
            return None
        while truncation == "turns" and len(prompt) + len(c) + len(r) > max_len:
            shorter = _drop_first_turn(messages)
            if shorter is None:
                break
            messages = shorter
            prompt, c, r = encode(messages)
        room = max_len - len(prompt)
        if room < 2:
            stats.dropped_overlong += 1
            return None
        c, r = _share(c, r, room)
        stats.truncated += 1
    if not c or not r:
        stats.dropped_no_target += 1
        return None
    stats.examples += 1
    return Pair(prompt, c, r)


# --- unpaired examples (KTO) ------------------------------------------------------------------------
def to_unpaired_messages(record: dict, label_key: str = "label") -> tuple[list[dict], str, bool]:
    """(prompt conversation ending with a user turn, completion text, desirable?) of an unpaired record:
    ``{"messages": [.., assistant reply], "label": bool}`` (LLaMA-Factory's KTO data, ShareGPT keys read
    too) or ``{"prompt": str | [messages], "completion": str | message | [messages], "label": bool}``
    (TRL's)."""
    if label_key not in record:
        raise ValueError(f"missing field {label_key!r} (true: a desirable completion, false: undesirable)")
    label = record[label_key]
    if not isinstance(label, bool) and label not in (0, 1):
        raise ValueError(f"field {label_key!r} must be true or false, got {label!r}")
    if "completion" in record:
        if "prompt" not in record:
            raise ValueError("missing field 'prompt' (the conversation the completion answers)")
        p = record["prompt"]
        messages = chat_messages({"messages": [{"role": "user", "content": p}] if isinstance(p, str) else p})
        extra, completion = _reply_text(record["completion"], "completion")
        messages = messages + extra
    else:
        messages = chat_messages(record)
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("field 'messages' must end with the assistant's completion")
        messages, completion = messages[:-1], messages[-1]["content"]
    if record.get("system") and messages and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": record["system"]}, *messages]
    if not isinstance(completion, str):
        raise ValueError("the completion must be a string")
    check_messages(messages, allow_open=True)
    if not messages or messages[-1]["role"] != "user":
        raise ValueError("the prompt must end with a user message")
    return messages, completion, bool(label)


def encode_unpaired(
    tokenizer: Tokenizer, messages: list[dict], completion: str, max_len: int, truncation: str, stats
) -> tuple[list[int], list[int]] | None:
    """(prompt ids, completion ids ending with the end-of-turn token), cut or dropped to fit ``max_len``."""
    prompt, _ = tokenizer.encode_chat(messages, add_generation_prompt=True)
    reply = reply_ids(tokenizer.encode_chat, messages, prompt, completion)
    if len(prompt) + len(reply) > max_len:
        room = max_len - len(prompt)
        if truncation == "drop" or room < 1:
            stats.dropped_overlong += 1
            return None
        reply = reply[:room]
        stats.truncated += 1
    if not reply:
        stats.dropped_no_target += 1
        return None
    stats.examples += 1
    return prompt, reply
