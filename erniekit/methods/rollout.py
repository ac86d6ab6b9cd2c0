"""What RL methods share: prompts, sampling completions, scoring them, batching and state.

A method built on :class:`RolloutMethod` defines how many completions it samples per prompt, what it
adds to a fresh rollout (advantages, old log-probs, values...) in ``complete_rollout``, and its
``loss``. One rollout feeds ``ppo_epochs`` optimizer steps; it is saved with checkpoints, so a run
resumed in the middle of a rollout continues exactly.

Per-sequence (``per_seq``) and per-token (``per_token``) values computed at rollout time are attached to
each micro-batch in the order of its targets (``batch[name]``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle

from erniekit.config.schema import Recipe
from erniekit.data.files import read_options
from erniekit.data.loader import RowLoader
from erniekit.data.multimodal import PromptEncoder
from erniekit.data.packing import collate_shared_prefix, pack
from erniekit.data.prompts import PromptRecord, read_prompts
from erniekit.errors import DataError
from erniekit.inference.engine import Engine, Request
from erniekit.methods.base import Reference, evaluating, holdout_split, spec_weights, to_tensors
from erniekit.rl.rewards import resolve_reward
from erniekit.tokenizer import Tokenizer
from erniekit.trainer.restore import recipe_processor

log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """One sampled batch: completions of P prompts (``per_prompt`` each, prompt after prompt)."""

    prompts: list[list[int]]  # [P] prompt token ids
    completions: list[list[int]]  # [P * per_prompt] completion token ids
    rewards: list[float]  # [P * per_prompt]
    per_seq: dict[str, list[float]] = field(default_factory=dict)
    per_token: dict[str, list[list[float]]] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    uses: int = 0
    sources: list[list[int]] = field(default_factory=list)  # [P] (file, record) of each prompt: its images


@dataclass
class EncodedPrompt:
    ids: list[int]
    record: PromptRecord
    images: object = None  # ImageInputs of a VL prompt
    videos: object = None


class RolloutMethod:
    samples_per_prompt = 1

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, model, rank: int = 0, world: int = 1):
        d, t, c = recipe.data, recipe.train, recipe.method
        self.recipe, self.cfg, self.tokenizer, self.model = recipe, c, tokenizer, model
        self.micro_batch_size, self.max_len, self.seed = t.micro_batch_size, d.max_seq_len, t.seed
        self.vision = model.args.vision
        self.encode_prompt = PromptEncoder(tokenizer, recipe_processor(recipe, model.args), self.vision)
        self.rank, self.world = rank, world
        self.train_prompts, self.eval_prompts = [], []
        for spec in d.train:
            records = self._encode(self._read(spec, d), spec.path)
            if d.eval_holdout and not d.eval:
                keep, held = holdout_split(len(records), d.eval_holdout, t.seed, spec.path)
                self.eval_prompts += [records[i] for i in held]
                records = [records[i] for i in keep]
            self.train_prompts.append(records)
        for spec in d.eval:
            self.eval_prompts += self._encode(self._read(spec, d), spec.path)
        self.loader = (
            None
            if not self.train_prompts
            else RowLoader(
                [np.array([len(p.ids) for p in records]) for records in self.train_prompts],
                spec_weights(d.train),
                d.max_seq_len,
                False,
                t.seed,
                d.shuffle,
                rank,
                world,
                d.mix,
            )
        )
        self.reward_fns = {name: resolve_reward(name) for name in c.rewards}
        self.reward_weights = c.reward_weights or [1.0] * len(c.rewards)
        self.ref = Reference(recipe, model, needed=c.beta > 0)
        self.rollout: Rollout | None = None
        self.rollouts = 0
        self.step = 0
        self.output_dir: Path | None = None

    @staticmethod
    def _read(spec, data) -> list[PromptRecord]:
        return read_prompts(spec.path, data.skip_bad_lines, spec.max_samples, **read_options(spec))

    def _encode(self, records: list[PromptRecord], path: str) -> list[EncodedPrompt]:
        out, limit = [], self.max_len - self.cfg.rollout.max_new_tokens
        system = self.cfg.rollout.system_prompt
        for r in records:
            msgs = (
                r.messages
                if not system or r.messages[0]["role"] == "system"
                else [{"role": "system", "content": system}, *r.messages]
            )
            try:
                ids, images, videos = self.encode_prompt(msgs, r.base_dir, tools=r.tools)
            except DataError as e:
                raise DataError(f"{r.where}: {e}") from None
            if len(ids) <= limit:
                out.append(EncodedPrompt(ids, r, images, videos))
        if not out:
            raise DataError(
                f"{path}: no prompt fits data.max_seq_len - method.rollout.max_new_tokens = {limit}"
            )
        if len(out) < len(records):
            log.warning("%s: %d prompts longer than %d tokens dropped", path, len(records) - len(out), limit)
        return out

    def on_train_start(self, trainer) -> None:
        self.output_dir = Path(trainer.output_dir)

    # --- sampling and scoring ---------------------------------------------------------------------------
    def generate(
        self, prompts: list[EncodedPrompt], per_prompt: int, temperature: float, seed: int
    ) -> list[list[int]]:
        """``per_prompt`` completions of each prompt, prompt after prompt, from the continuous-batching
        engine (a row that ends early stops costing a decode step); completion i samples from
        ``(seed, i)``, so a rollout is the same whatever else runs beside it."""
        r = self.cfg.rollout
        stop = None
        if r.stop:

            def stop(tokens):
                return any(s in self.tokenizer.decode(tokens) for s in r.stop)

        common = dict(
            max_new_tokens=r.max_new_tokens,
            temperature=temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            eos_token_ids=frozenset(self.tokenizer.stop_ids),
            stop=stop,
        )
        requests = [
            Request(p.ids, images=p.images, videos=p.videos, seed=(seed, i), **common)
            for i, p in enumerate(p for p in prompts for _ in range(per_prompt))
        ]
        rows = len(requests)
        engine = Engine(self.model, max_batch=rows, max_model_len=self.max_len, max_queue=rows)
        for done in engine.run(requests):
            if done.error is not None:
                raise done.error
        return [done.tokens for done in requests]

    def score(
        self, completions: list[str], records: list[PromptRecord]
    ) -> tuple[np.ndarray, dict[str, float]]:
        def run(fn):
            if hasattr(fn, "batch"):  # e.g. a reward model, one batched forward for the rollout
                return np.asarray(fn.batch(completions, records), np.float64)
            return np.array([fn(text, rec) for text, rec in zip(completions, records)], np.float64)

        per_fn = {name: run(fn) for name, fn in self.reward_fns.items()}
        total = sum(w * per_fn[name] for name, w in zip(self.reward_fns, self.reward_weights))
        return total, {f"reward/{name}": float(v.mean()) for name, v in per_fn.items()}

    def make_rollout(self) -> Rollout:
        n = self.samples_per_prompt
        rows = self.loader.next_rows(self.cfg.rollout.prompts_per_step)
        sources = [[s, i] for row in rows for s, i in row]
        picked = [self.train_prompts[s][i] for s, i in sources]
        start = time.perf_counter()
        completions = self.generate(
            picked,
            n,
            self.cfg.rollout.temperature,
            seed=self.seed * 7919 + self.rollouts * 104729 + self.rank,
        )
        seconds = time.perf_counter() - start
        texts = [self.tokenizer.decode(tokens) for tokens in completions]
        records = [p.record for p in picked for _ in range(n)]
        rewards, per_fn = self.score(texts, records)
        generated = sum(len(x) for x in completions)
        rollout = Rollout(
            [p.ids for p in picked],
            completions,
            rewards.tolist(),
            sources=sources,
            metrics={
                "reward_mean": float(rewards.mean()),
                "reward_std": float(rewards.std()),
                **per_fn,
                "completion_length": generated / len(completions),
                "rollout_seconds": seconds,
                "rollout_tokens_per_sec": generated / max(seconds, 1e-9),
            },
        )
        self.complete_rollout(rollout)
        self.rollouts += 1
        self._log_samples(texts, records, rewards)
        return rollout

    def complete_rollout(self, rollout: Rollout) -> None:
        """Fill ``rollout.per_seq`` / ``per_token`` with what the loss needs (advantages, log-probs...)."""
        raise NotImplementedError

    @paddle.no_grad()
    def per_token(self, rollout: Rollout, fn) -> dict[str, list[list[float]]]:
        """``fn(batch) -> {name: [N] tensor}`` over a rollout (eval mode), regrouped per completion."""
        with evaluating(self.model):
            out: dict[str, list[list[float]]] = {}
            for batch in self.batches(rollout, attach=False):
                seq, keys = batch["target_seq"].numpy(), batch["seq_keys"].numpy()[:, 0]
                for name, tensor in fn(batch).items():
                    lists = out.setdefault(name, [[] for _ in rollout.completions])
                    for j, v in zip(seq, tensor.numpy()):
                        lists[keys[j]].append(float(v))
        return out

    def batches(self, rollout: Rollout, attach: bool = True) -> list[dict]:
        """Micro-batches of a rollout: each prompt once, its completions behind it (split to fit)."""
        n = self.samples_per_prompt
        items = []
        for p, prompt in enumerate(rollout.prompts):
            # a VL prompt's images come with it (a prompt split over several items repeats them)
            extra = ()
            if self.vision is not None:
                source = self.train_prompts[rollout.sources[p][0]][rollout.sources[p][1]]
                extra = ((source.images, source.videos),)
            chunk, used = [], len(prompt)
            for k in range(p * n, (p + 1) * n):
                size = len(rollout.completions[k])
                if chunk and used + size > self.max_len:
                    items.append((prompt, chunk, *extra))
                    chunk, used = [], len(prompt)
                chunk.append((rollout.completions[k], (k,)))
                used += size
            items.append((prompt, chunk, *extra))
        lengths = [len(p) + sum(len(r) for r, _ in replies) for p, replies, *_ in items]
        rows = [[items[i] for i in group] for group in pack(lengths, self.max_len)]
        out = []
        for i in range(0, len(rows), self.micro_batch_size):
            batch = to_tensors(
                collate_shared_prefix(
                    rows[i : i + self.micro_batch_size], self.tokenizer.pad_id, self.max_len, self.vision
                )
            )
            if attach:
                keys = batch["seq_keys"].numpy()[:, 0]
                for name, values in rollout.per_seq.items():
                    batch[name] = paddle.to_tensor(np.array([values[k] for k in keys], np.float32))
                for name, values in rollout.per_token.items():
                    batch[name] = paddle.to_tensor(
                        np.concatenate([values[k] for k in keys]).astype(np.float32)
                    )
            out.append(batch)
        return out

    def _log_samples(self, texts, records, rewards) -> None:
        every = self.cfg.log_completions_every
        if not every or self.output_dir is None or self.step % every:
            return
        with open(self.output_dir / "completions.jsonl", "a", encoding="utf-8") as f:
            for text, rec, reward in list(zip(texts, records, rewards))[: max(self.samples_per_prompt, 4)]:
                answer = rec.answer if isinstance(rec.answer, (str, int, float)) else None
                f.write(
                    json.dumps(
                        {
                            "step": self.step + 1,
                            "prompt": rec.messages[-1]["content"],
                            "completion": text,
                            "answer": answer,
                            "reward": float(reward),
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )

    # --- the loop's interface --------------------------------------------------------------------------
    def next_micro_batches(self, count: int) -> list[dict]:
        if self.rollout is None or self.rollout.uses >= self.cfg.ppo_epochs:
            self.rollout = self.make_rollout()
        self.rollout.uses += 1
        self.step += 1
        return self.batches(self.rollout)

    def step_metrics(self) -> dict[str, float]:
        """Rollout metrics for the step just taken (reported once per rollout)."""
        return dict(self.rollout.metrics) if self.rollout is not None and self.rollout.uses == 1 else {}

    def normalizer(self, batches: list[dict]) -> dict[str, float]:
        return {
            "tokens": float(sum(int(b["target_token"].shape[0]) for b in batches)),
            "sequences": float(sum(int(b["seq_keys"].shape[0]) for b in batches)),
        }

    @staticmethod
    def input_tokens(batch: dict) -> int:
        return int((batch["segment_ids"] > 0).sum())

    @paddle.no_grad()
    def evaluate(self, model, max_batches: int = 0) -> dict[str, float]:
        """Greedy completions for the held-out prompts, scored by the reward functions."""
        if not self.eval_prompts:
            return {}
        prompts = self.eval_prompts[self.rank :: self.world]
        size = self.cfg.rollout.prompts_per_step * self.samples_per_prompt
        texts, records = [], []
        for n, i in enumerate(range(0, len(prompts), size)):
            if max_batches and n >= max_batches:
                break
            chunk = prompts[i : i + size]
            out = self.generate(chunk, 1, temperature=0.0, seed=self.seed)
            texts += [self.tokenizer.decode(tokens) for tokens in out]
            records += [p.record for p in chunk]
        rewards, per_fn = self.score(texts, records)
        return {"reward_mean": float(rewards.mean()), **per_fn, "prompts": float(len(texts))}

    # --- schedule & state ------------------------------------------------------------------------------
    def steps_per_epoch(self, grad_accum: int) -> int:
        rollouts = max(1, self.loader.rows_per_epoch() // (self.cfg.rollout.prompts_per_step * self.world))
        return rollouts * self.cfg.ppo_epochs

    @property
    def epoch(self) -> float:
        return self.loader.epoch

    def state_dict(self) -> dict:
        rollout = None if self.rollout is None else dict(vars(self.rollout))
        return {
            "loader": self.loader.state_dict(),
            "rollouts": self.rollouts,
            "step": self.step,
            "rollout": rollout,
        }

    def set_state_dict(self, state: dict) -> None:
        self.loader.set_state_dict(state["loader"])
        self.rollouts, self.step = state["rollouts"], state["step"]
        self.rollout = None if state["rollout"] is None else Rollout(**state["rollout"])
