"""Conversations -> training examples: token ids with next-token labels on assistant tokens only.

An example of n tokens becomes n-1 (input, label) positions: ``labels[t]`` is the token at t+1 when
that token is trained (an assistant reply or its end-of-turn marker, which plays the role of EOS so
the model learns to stop), else -100. Shifting per example, before packing, means a packed row never
asks one document to predict the first token of the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from erniekit.tokenizer import Tokenizer

IGNORE = -100


@dataclass
class TokenStats:
    """Counts of what tokenization did to the examples of one file."""

    examples: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    dropped_no_target: int = 0
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "examples": self.examples,
            "truncated": self.truncated,
            "dropped_overlong": self.dropped_overlong,
            "dropped_no_target": self.dropped_no_target,
            "skipped_bad_records": len(self.skipped),
        }


def shift(ids: list[int], trainable: list[bool]) -> tuple[list[int], list[int]]:
    return ids[:-1], [t if keep else IGNORE for t, keep in zip(ids[1:], trainable[1:])]


def _drop_first_turn(messages: list[dict]) -> list[dict] | None:
    """Without the first turn: its user message and all that answers it (replies, calls, results)."""
    start = 1 if messages[0]["role"] == "system" else 0
    following = [i for i in range(start + 1, len(messages)) if messages[i]["role"] == "user"]
    if not following:
        return None
    return messages[:start] + messages[following[0] :]


def encode_sft(
    tokenizer: Tokenizer,
    messages: list[dict],
    max_len: int,
    truncation: str,
    stats: TokenStats,
    tools: list[dict] | None = None,
    keep_reasoning: str = "last",
) -> tuple[list[int], list[int]] | None:
    """(input_ids, labels) of at most ``max_len`` positions, or None when the example is dropped.

    truncation: ``drop`` over-long examples; ``right``: keep the first max_len positions; ``turns``:
    drop the earliest turns (the system prompt and the tools stay) until it fits, then cut right.
    ``tools`` and ``keep_reasoning`` are handed to the chat template.
    """

    def encode(msgs):
        return tokenizer.encode_chat(msgs, tools=tools, keep_reasoning=keep_reasoning)

    ids, trainable = encode(messages)
    if len(ids) - 1 > max_len:
        if truncation == "drop":
            stats.dropped_overlong += 1
            return None
        if truncation == "turns":
            shorter = messages
            while len(ids) - 1 > max_len and (shorter := _drop_first_turn(shorter)) is not None:
                ids, trainable = encode(shorter)
        stats.truncated += 1
        ids, trainable = ids[: max_len + 1], trainable[: max_len + 1]
    inputs, labels = shift(ids, trainable)
    if all(label == IGNORE for label in labels):
        stats.dropped_no_target += 1
        return None
    stats.examples += 1
    return inputs, labels
