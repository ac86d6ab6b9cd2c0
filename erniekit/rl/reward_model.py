"""A trained reward model as a reward function: ``rewards: [model:PATH]`` in GRPO and PPO recipes.

PATH is a reward model exported by ``erniekit export`` (a sequence classifier with one label), or a
reward-model run or checkpoint (``method.name: rm``). A completion is scored as the assistant's reply to
the record's prompt, rendered by the reward model's own chat template and tokenizer (which need not be
the policy's), exactly as the reward model saw its training pairs. Text conversations only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import paddle

from erniekit.data.preference import reply_ids
from erniekit.errors import CheckpointError
from erniekit.models.common.heads import SCORE, score_position

log = logging.getLogger(__name__)
PREFIX = "model:"


class RewardModel:
    """``rm.scores(conversations)`` -> [N] scores of conversations ending with the assistant's reply."""

    def __init__(self, model, tokenizer, batch_size: int = 8):
        if getattr(model, SCORE, None) is None:
            raise CheckpointError("not a reward model (no score head; train one with method.name rm)")
        if model.args.vision is not None:
            raise CheckpointError("vision-language reward models are not supported as rewards yet")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @classmethod
    def load(cls, path: str | Path) -> RewardModel:
        from erniekit.inference.load import load_for_inference

        if not Path(path).exists():
            raise CheckpointError(f"{path}: no such reward model (an export, run or checkpoint directory)")
        tokenizer, model, _ = load_for_inference(path)
        try:
            return cls(model, tokenizer)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None

    def encode(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation whose last message is the assistant's reply."""
        *context, reply = messages
        if reply.get("role") != "assistant":
            raise ValueError("a scored conversation ends with the assistant's reply")
        encode_chat = self.tokenizer.encode_chat
        prompt, _ = encode_chat(context, add_generation_prompt=True)
        return prompt + reply_ids(encode_chat, context, prompt, reply.get("content") or "")

    @paddle.no_grad()
    def score_ids(self, sequences: list[list[int]]) -> np.ndarray:
        """Scores of token sequences, in batches right-padded to their longest."""
        pad = self.tokenizer.pad_id
        out = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            width = max(len(s) for s in chunk)
            ids = np.full((len(chunk), width), pad, np.int64)
            segments = np.zeros((len(chunk), width), np.int64)
            for i, s in enumerate(chunk):
                ids[i, : len(s)], segments[i, : len(s)] = s, 1
            where = [
                i * width + score_position(np.array(s), np.arange(len(s)), pad) for i, s in enumerate(chunk)
            ]
            hidden = self.model(
                paddle.to_tensor(ids),
                position_ids=paddle.to_tensor(np.broadcast_to(np.arange(width), ids.shape).copy()),
                segment_ids=paddle.to_tensor(segments),
                compute_logits=False,
            ).hidden
            h = paddle.gather(hidden.reshape([-1, hidden.shape[-1]]), paddle.to_tensor(where))
            out.append(getattr(self.model, SCORE)(h.astype("float32")).squeeze(-1).numpy())
        return np.concatenate(out).astype(np.float64)

    def scores(self, conversations: list[list[dict]]) -> np.ndarray:
        return self.score_ids([self.encode(m) for m in conversations])

    def batch(self, completions: list[str], records: list) -> np.ndarray:
        """The reward of each completion to its record's prompt (a reward function over a rollout)."""
        return self.scores(
            [[*r.messages, {"role": "assistant", "content": c}] for c, r in zip(completions, records)]
        )

    def __call__(self, completion: str, record) -> float:
        return float(self.batch([completion], [record])[0])
