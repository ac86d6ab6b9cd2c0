"""Scoring completions against reference answers; shared by ``erniekit eval`` and RL rewards.

A scorer is ``f(completion: str, answer, record: dict) -> float`` in [0, 1]. Built in: ``exact``
(equality after normalising case and whitespace), ``contains`` (the answer appears in the completion),
``numeric`` (the completion's final number equals the answer's, read leniently). Any other name is
imported as ``module:function``.
"""

from __future__ import annotations

import importlib
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


BUILTIN: dict[str, Scorer] = {"exact": exact, "contains": contains, "numeric": numeric}


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
