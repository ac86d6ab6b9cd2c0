"""Prompt/answer records for generation-based evaluation and RL.

A record is ``{"prompt": str | [messages], "answer": str, "tools"?: [schemas]}``; ``question`` is
accepted for ``prompt`` (GSM8K style). A message-list prompt may hold tool calls and results (then it
may end with a tool result), and ``tools`` are offered to the model as in training data. Answers may be
any JSON value a scorer understands (a tool call for the ``tool_call`` scorer); they are kept as given.

``reasoning-gym://TASK?size=N&seed=S`` generates N prompts of a reasoning-gym task (when the
``reasoning-gym`` package is installed); each record carries the task's own scorer (the
``reasoning_gym`` reward uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erniekit.data.files import read_records, resolve_data_path
from erniekit.data.formats import Media, chat_tools
from erniekit.errors import DataError
from erniekit.tokenizer.templates import check_messages


@dataclass(frozen=True)
class PromptRecord:
    where: str
    messages: list[dict]  # the conversation so far, ending with a user turn
    answer: object
    data: dict
    base_dir: Path | None = None  # where the record's image paths start (its file's directory)
    tools: list[dict] | None = None  # function tools offered to the model


def to_prompt_messages(data: dict) -> list[dict]:
    """The prompt conversation; for VL models its contents may hold image parts, or ``<image>`` tags
    filled from the record's ``images`` list (as in training data)."""
    prompt = data.get("prompt", data.get("question"))
    media = Media(data)
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": media.fill(prompt)}]
    elif isinstance(prompt, list):
        messages = [
            {**m, "content": media.fill(m.get("content"))} if isinstance(m, dict) else m for m in prompt
        ]
    else:
        raise ValueError("needs a 'prompt' (string or message list) or a 'question'")
    media.check_all_used()
    if data.get("system") and messages[0].get("role") != "system":
        messages = [{"role": "system", "content": data["system"]}, *messages]
    check_messages(messages, allow_open=True, media=True)
    if messages[-1]["role"] not in ("user", "tool"):
        raise ValueError("the prompt must end with a user message (or a tool result)")
    return messages


RG_SCHEME = "reasoning-gym://"


def reasoning_gym_prompts(spec: str, limit: int | None = None) -> list[PromptRecord]:
    from urllib.parse import parse_qs, urlparse

    try:
        import reasoning_gym
    except ImportError:
        raise DataError(
            f"{spec}: needs the reasoning-gym package (pip install reasoning-gym==0.1.25)"
        ) from None
    url = urlparse(spec)
    import yaml

    params = {k: yaml.safe_load(v[0]) for k, v in parse_qs(url.query).items()}  # typed: "2" -> 2
    size, seed = int(params.pop("size", 256)), int(params.pop("seed", 0))
    try:
        dataset = reasoning_gym.create_dataset(url.netloc, size=size, seed=seed, **params)
    except Exception as e:  # the package raises assorted errors for unknown tasks or options
        raise DataError(f"{spec}: reasoning-gym cannot create this dataset ({e})") from None
    out = []
    for i, entry in enumerate(dataset):
        if limit is not None and i >= limit:
            break
        score = lambda answer, entry=entry: dataset.score_answer(answer, entry)  # noqa: E731
        out.append(
            PromptRecord(
                f"{spec}#{i}",
                [{"role": "user", "content": entry["question"]}],
                entry["answer"],
                {"_score": score, "metadata": entry.get("metadata", {})},
            )
        )
    return out


def read_prompts(
    path: str, skip_bad: bool = False, limit: int | None = None, **reading
) -> list[PromptRecord]:
    """The prompts of a file (``reading``: read_records' split/columns/tags) or a reasoning-gym task."""
    if path.startswith(RG_SCHEME):
        return reasoning_gym_prompts(path, limit)
    out, base_dir = [], resolve_data_path(path).parent
    for record in read_records(path, skip_bad, limit=limit, **reading):
        try:
            messages, tools = to_prompt_messages(record.data), chat_tools(record.data)
        except ValueError as e:
            if skip_bad:
                continue
            raise DataError(f"{record.where}: {e}") from None
        out.append(
            PromptRecord(record.where, messages, record.data.get("answer"), record.data, base_dir, tools)
        )
    if not out:
        raise DataError(f"{path}: no prompts")
    return out
