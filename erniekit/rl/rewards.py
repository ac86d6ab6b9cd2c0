"""Reward functions for RL with verifiable rewards.

A reward function is ``f(completion: str, record: PromptRecord) -> float``. Built in:

* ``numeric``: 1 if the completion's final number (``\\boxed{}``, ``#### n`` or the last number, read
  leniently: commas, fractions, ``$``) equals the record's answer's, else 0.
* ``exact`` / ``contains``: the normalised answer equals / appears in the completion.
* ``format``: 1 if the completion is ``<think>...</think>`` followed by a non-empty answer, else 0.
* ``answer_tag``: 1 if the completion puts its answer inside ``<answer>...</answer>``, else 0.
* ``reasoning_gym``: the record's own reasoning-gym scorer on the ``<answer>`` (or the whole completion).
* ``digits``: the fraction of characters that are digits (a dense, trivially learnable signal for smoke
  tests of the RL loop, not a task reward).

``model:PATH`` scores completions with a trained reward model (rl/reward_model.py). Anything else is
imported as ``module:function`` with the same signature.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from erniekit import scoring

RewardFn = Callable[[str, object], float]

_THINK = re.compile(r"^\s*<think>.+?</think>\s*\S", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(completion: str) -> str:
    """The text inside the last ``<answer>...</answer>``, or the completion itself."""
    found = _ANSWER.findall(completion)
    return found[-1].strip() if found else completion.strip()


def numeric(completion: str, record) -> float:
    return scoring.numeric(extract_answer(completion), record.answer, record.data)


def exact(completion: str, record) -> float:
    return scoring.exact(extract_answer(completion), record.answer, record.data)


def contains(completion: str, record) -> float:
    return scoring.contains(completion, record.answer, record.data)


def think_format(completion: str, record) -> float:
    return float(bool(_THINK.match(completion)))


def answer_tag(completion: str, record) -> float:
    return float(bool(_ANSWER.search(completion)))


def reasoning_gym(completion: str, record) -> float:
    scorer = record.data.get("_score")
    if scorer is None:
        raise ValueError(f"{record.where}: the reasoning_gym reward needs prompts from reasoning-gym://...")
    return float(scorer(extract_answer(completion)))


def similarity(completion: str, record) -> float:
    """How close the reply's first line is to the answer (difflib's ratio, 0..1): a dense reward that an
    untrained policy can climb, e.g. naming the colour it sees in a picture."""
    import difflib

    lines = completion.strip().splitlines() or [""]
    reply, answer = lines[0].strip().lower(), str(record.answer).strip().lower()
    return difflib.SequenceMatcher(None, reply, answer).ratio()


def digits(completion: str, record) -> float:
    return sum(ch.isdigit() for ch in completion) / max(len(completion), 1)


BUILTIN: dict[str, RewardFn] = {
    "numeric": numeric,
    "exact": exact,
    "contains": contains,
    "format": think_format,
    "answer_tag": answer_tag,
    "reasoning_gym": reasoning_gym,
    "digits": digits,
    "similarity": similarity,
}


def resolve_reward(name: str) -> RewardFn:
    if name in BUILTIN:
        return BUILTIN[name]
    if name.startswith("model:"):  # a trained reward model (scores whole rollouts at once: .batch)
        from erniekit.rl.reward_model import RewardModel

        return RewardModel.load(name.removeprefix("model:"))
    module, _, attr = name.partition(":")
    if not attr:
        raise ValueError(f"unknown reward {name!r}; use {', '.join(BUILTIN)} or module:function")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import reward {name!r}: {e}") from None
    if not callable(fn):
        raise ValueError(f"reward {name!r} is not callable")
    return fn
