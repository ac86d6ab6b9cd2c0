"""What a training method provides to the shared loop, and helpers methods share.

A method turns data into micro-batches and micro-batches into a loss. The trainer (trainer/loop.py)
owns everything else: stepping, accumulation, clipping, logging, evaluation calls and checkpoints.

    batches = method.next_micro_batches(grad_accum)           # this rank's micro-batches of one step
    norm = all_reduce(method.normalizer(batches)) / dp_world  # e.g. target tokens of the whole step
    for b in batches: loss, stats = method.loss(model, b, norm); loss.backward()

Normalising by the whole step's count (not per micro-batch) makes the update independent of how the
step is split into micro-batches and ranks. Data-parallel averaging divides gradients by the world
size, hence the division above.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import paddle

from erniekit.config.schema import DatasetSpec


class Method(Protocol):
    name: str

    def next_micro_batches(self, count: int) -> list[dict]: ...

    def normalizer(self, batches: list[dict]) -> dict[str, float]: ...

    def input_tokens(self, batch: dict) -> int: ...

    def loss(self, model, batch: dict, norm: dict[str, float]) -> tuple[paddle.Tensor, dict[str, float]]: ...

    def evaluate(self, model, max_batches: int = 0) -> dict[str, float]: ...

    def steps_per_epoch(self, grad_accum: int) -> int: ...

    @property
    def epoch(self) -> float: ...

    def state_dict(self) -> dict: ...

    def set_state_dict(self, state: dict) -> None: ...


def to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, paddle.Tensor]:
    return {k: paddle.to_tensor(v) for k, v in arrays.items()}


def holdout_split(size: int, holdout: int, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held out): ``holdout`` examples chosen with ``seed``, the rest for training."""
    if holdout >= size:
        raise ValueError(
            f"{where}: data.eval_holdout={holdout} leaves no training examples (file has {size})"
        )
    perm = np.random.default_rng([seed, size]).permutation(size)
    return np.sort(perm[holdout:]), np.sort(perm[:holdout])


def spec_weights(specs: list[DatasetSpec]) -> list[float]:
    return [s.weight for s in specs]
