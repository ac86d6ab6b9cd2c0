"""Prompt/answer records for generation-based evaluation and RL.

A record is ``{"prompt": str | [messages], "answer": str}``; ``question`` is accepted for ``prompt``
(GSM8K style). Answers may be any JSON value a scorer understands; they are kept as given.
"""

from __future__ import annotations

from dataclasses import dataclass

from erniekit.data.files import read_records
from erniekit.errors import DataError
from erniekit.tokenizer.templates import check_messages


@dataclass(frozen=True)
class PromptRecord:
    where: str
    messages: list[dict]  # the conversation so far, ending with a user turn
    answer: object
    data: dict


def to_prompt_messages(data: dict) -> list[dict]:
    prompt = data.get("prompt", data.get("question"))
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list):
        messages = prompt
    else:
        raise ValueError("needs a 'prompt' (string or message list) or a 'question'")
    if data.get("system") and messages[0].get("role") != "system":
        messages = [{"role": "system", "content": data["system"]}, *messages]
    check_messages(messages, allow_open=True)
    if messages[-1]["role"] != "user":
        raise ValueError("the prompt must end with a user message")
    return messages


def read_prompts(path: str, skip_bad: bool = False, limit: int | None = None) -> list[PromptRecord]:
    out = []
    for record in read_records(path, skip_bad, limit=limit):
        try:
            messages = to_prompt_messages(record.data)
        except ValueError as e:
            if skip_bad:
                continue
            raise DataError(f"{record.where}: {e}") from None
        out.append(PromptRecord(record.where, messages, record.data.get("answer"), record.data))
    if not out:
        raise DataError(f"{path}: no prompts")
    return out
