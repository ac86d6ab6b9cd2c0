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

import contextlib
from dataclasses import dataclass
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


@contextlib.contextmanager
def evaluating(model):
    """The model in eval mode inside the block, back in the mode it was in after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


class Reference:
    """The frozen starting policy for KL terms and DPO: the base with adapters off (LoRA runs, no second
    copy in memory), a frozen copy (full fine-tuning), or nothing when no loss needs it."""

    def __init__(self, recipe, model, needed: bool):
        from erniekit.peft.lora import lora_layers

        self.kind = "none" if not needed else ("adapters" if lora_layers(model) else "copy")
        self.model = None
        if self.kind == "copy":
            from erniekit.trainer.restore import model_from_recipe

            _, self.model = model_from_recipe(recipe)
            self.model.eval()
            for p in self.model.parameters():
                p.stop_gradient = True

    @paddle.no_grad()
    def run(self, policy, fn):
        """``fn(reference_model)``, e.g. ``fn = lambda m: target_logps(m, batch)[0]``."""
        if self.kind == "none":
            return None
        if self.kind == "adapters":
            from erniekit.peft.lora import adapters_disabled

            with adapters_disabled(policy):
                return fn(policy)
        return fn(self.model)


@dataclass
class TargetOutputs:
    logp: paddle.Tensor  # [N] log-probability of each target token
    entropy: paddle.Tensor | None  # [N] policy entropy at the target positions (no gradient)
    hidden: paddle.Tensor | None  # [N, H] final hidden states at the target positions (value heads)


def final_hidden(model, batch: dict, index: paddle.Tensor) -> paddle.Tensor:
    """The decoder's final hidden states [N, H] of a shared-prefix batch at flat positions ``index``."""
    out = model(
        batch["input_ids"],
        position_ids=batch["position_ids"],
        segment_ids=batch["segment_ids"],
        branch_ids=batch["branch_ids"],
        compute_logits=False,
        **media_kwargs(batch),
    )
    return paddle.gather(out.hidden.reshape([-1, out.hidden.shape[-1]]), index)


def target_outputs(model, batch: dict, entropy: bool = False, hidden: bool = False) -> TargetOutputs:
    """Outputs at the sparse targets of a shared-prefix batch (collate_shared_prefix); the LM head runs
    only at target positions."""

    h = final_hidden(model, batch, batch["target_index"])
    from erniekit.ops.cross_entropy import target_logprobs

    logp, ent = target_logprobs(h, model, batch["target_token"], entropy)
    return TargetOutputs(logp, ent, h if hidden else None)


def per_sequence(values: paddle.Tensor, seq: paddle.Tensor, n_seq: int) -> paddle.Tensor:
    """Sums [n_seq] of per-token ``values`` [T] over each sequence; ``seq`` [T] numbers each token's
    sequence (a shared-prefix batch's ``target_seq``)."""
    return paddle.index_add(paddle.zeros([n_seq], "float32"), seq, 0, values)


def target_logps(model, batch: dict) -> paddle.Tensor:
    return target_outputs(model, batch).logp


MEDIA_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")


def media_kwargs(batch: dict) -> dict:
    """The images (and videos) of a vision-language batch, as the model's forward takes them."""
    return {k: batch[k] for k in MEDIA_KEYS if k in batch}


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


class FileMethod:
    """What the methods trained on files share: each ``data.train`` file loaded, ``data.eval_holdout``
    examples of each held out (unless ``data.eval`` files are given), the row loader over the rest, the
    eval rows, and the loader's epoch schedule and resumable state. ``load(spec)`` returns (examples,
    TokenStats); examples have ``lengths`` and ``select(indices)``."""

    micro_batch_size: int
    rank: int
    world: int

    def load_sources(self, recipe, load, rank: int, world: int) -> None:
        from erniekit.data.loader import RowLoader, eval_rows

        d, t = recipe.data, recipe.train
        self.rank, self.world, self.micro_batch_size = rank, world, t.micro_batch_size
        self.stats: dict[str, dict] = {}
        self.train_sources, self.eval_sources = [], []
        for spec in d.train:
            examples, stats = load(spec)
            self.stats[spec.path] = stats.as_dict()
            if d.eval_holdout and not d.eval:
                keep, held = holdout_split(len(examples.lengths), d.eval_holdout, t.seed, spec.path)
                self.eval_sources.append(examples.select(held))
                examples = examples.select(keep)
            self.train_sources.append(examples)
        for spec in d.eval:
            examples, stats = load(spec)
            self.stats[spec.path] = stats.as_dict()
            self.eval_sources.append(examples)
        lengths = [s.lengths for s in self.train_sources]
        self.loader = None
        if self.train_sources:
            self.loader = RowLoader(
                lengths,
                spec_weights(d.train),
                d.max_seq_len,
                d.packing,
                t.seed,
                d.shuffle,
                rank,
                world,
                d.mix,
            )
        self.eval_row_list = eval_rows([s.lengths for s in self.eval_sources], d.max_seq_len, d.packing)

    def eval_chunks(self, max_batches: int = 0) -> list[list]:
        """This rank's share of the eval rows, a micro-batch's rows at a time (the first ``max_batches``)."""
        rows = self.eval_row_list[self.rank :: self.world]
        chunks = [rows[i : i + self.micro_batch_size] for i in range(0, len(rows), self.micro_batch_size)]
        return chunks[:max_batches] if max_batches else chunks

    # --- schedule & state ------------------------------------------------------------------------------
    def steps_per_epoch(self, grad_accum: int) -> int:
        return max(1, self.loader.rows_per_epoch() // (self.micro_batch_size * grad_accum * self.world))

    @property
    def epoch(self) -> float:
        return self.loader.epoch

    def state_dict(self) -> dict:
        return {"loader": self.loader.state_dict()}

    def set_state_dict(self, state: dict) -> None:
        self.loader.set_state_dict(state["loader"])
