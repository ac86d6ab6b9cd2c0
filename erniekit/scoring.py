"""Scoring completions against reference answers; shared by ``erniekit eval`` and RL rewards.

A scorer is ``f(completion: str, answer, record: dict) -> float`` in [0, 1]. Built in: ``exact``
(equality after normalising case and whitespace), ``contains`` (the answer appears in the completion),
``numeric`` (the completion's final number equals the answer's, read leniently), ``tool_call`` (the
completion calls the answer's functions with equal arguments). Any other name is imported as
``module:function``.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from fractions import Fraction

Scorer = Callable[[str, object, dict], float]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def normalize(text: str) -> str:
    return " ".join(str(text).strip().lower().split()).rstrip(".")


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def parse_number(text: str) -> Fraction | None:
    """The number a text answers with: in \\boxed{}, after '####' (GSM8K), or else the last one."""
    text = str(text)
    for candidate in (_boxed(text), text.rsplit("####", 1)[1] if "####" in text else None):
        if candidate is not None:
            found = _NUMBER.findall(candidate.replace("$", ""))
            if found:
                return _to_fraction(found[-1])
    found = _NUMBER.findall(text.replace("$", ""))
    return _to_fraction(found[-1]) if found else None


def _to_fraction(token: str) -> Fraction | None:
    token = token.replace(",", "")
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def exact(completion: str, answer, record: dict) -> float:
    return float(normalize(completion) == normalize(answer))


def contains(completion: str, answer, record: dict) -> float:
    return float(normalize(answer) in normalize(completion))


def numeric(completion: str, answer, record: dict) -> float:
    got, want = parse_number(completion), parse_number(str(answer))
    return float(got is not None and want is not None and got == want)


def _call(value) -> tuple[str, object] | None:
    """(name, arguments) of a call given as {"name", "arguments"} or OpenAI's {"function": {...}}."""
    if not isinstance(value, dict):
        return None
    fn = value.get("function", value)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        return None
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None  # unparseable arguments match nothing
    return fn["name"], args


def parse_calls(completion: str) -> list[tuple[str, object] | None]:
    """The calls a completion makes: its <tool_call> JSON blocks, or else the whole completion when it is
    one JSON call object (or a list of them); an unparseable call is None."""
    from erniekit.tokenizer.tools import split_reply

    calls = split_reply(completion, tools=True)[2]
    if calls:
        return [_call(c) for c in calls]
    try:
        value = json.loads(completion.strip())
    except json.JSONDecodeError:
        return []
    values = value if isinstance(value, list) else [value]
    return [_call(v) for v in values] if all(isinstance(v, dict) for v in values) else []


def tool_call(completion: str, answer, record: dict) -> float:
    """1 when the completion calls the answer's functions, in order, with arguments equal as parsed JSON.

    The answer is a call ({"name", "arguments"} or {"type": "function", "function": {...}}), a list of
    calls, their JSON text, or nothing (null / []: the reply must call no function)."""
    if isinstance(answer, str):
        answer = json.loads(answer) if answer.strip() else None
    want = [_call(a) for a in (answer if isinstance(answer, list) else [answer] if answer else [])]
    if None in want:
        raise ValueError(f"answer {answer!r} is not a tool call (name and arguments)")
    got = parse_calls(completion)
    return float(None not in got and got == want)


BUILTIN: dict[str, Scorer] = {
    "exact": exact,
    "contains": contains,
    "numeric": numeric,
    "tool_call": tool_call,
}


def resolve_scorer(name: str) -> Scorer:
    if name in BUILTIN:
        return BUILTIN[name]
    module, _, attr = name.partition(":")
    if not attr:
        raise ValueError(f"unknown scorer {name!r}; use {', '.join(BUILTIN)} or module:function")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import scorer {name!r}: {e}") from None
    if not callable(fn):
        raise ValueError(f"scorer {name!r} is not callable")
    return fn
