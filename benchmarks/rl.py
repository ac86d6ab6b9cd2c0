"""erniekit's side of the DPO and GRPO rows of ``benchmarks.run``: its real Trainer on synthetic data of
fixed lengths (benchmarks/synthetic.py), in a child process. TRL's side is benchmarks/peer_trl.py.

    python -m benchmarks.rl --child '{"method": "dpo", "model": "llama/debug", "batch": 2, ...}'

Tokens are counted as TRL counts them, per sequence (prompt + completion): a DPO pair is 2 sequences
(prompt + chosen, prompt + rejected, EOS included), a GRPO step is prompts x group sequences of the prompt
and its sampled completion. erniekit packs each prompt once in front of its replies, so it runs fewer
positions than it counts; the work per optimizer step (sequences, their lengths, the loss) is the same.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import parse_args_or_run_child


def dpo(spec: dict, tmp: Path, vocab: int) -> tuple[list[str], Callable]:
    from benchmarks.synthetic import write_pairs

    pairs = tmp / "pairs.jsonl"
    write_pairs(pairs, spec["batch"] * spec["steps"], spec["prompt"], spec["reply"], vocab)
    overrides = [
        "method.name=dpo",
        "method.loss=sigmoid",
        f"method.beta={spec['beta']}",
        f"data.train=[{pairs}]",
        "data.packing=false",  # one pair per row: batch = pairs per step, as TRL's
        "train.eval_on_start=false",
    ]

    def tokens_per_step(trainer, record) -> float:
        prompt, chosen, rejected = trainer.method.train_sources[0][0]
        return spec["batch"] * (2 * len(prompt) + len(chosen) + len(rejected))

    return overrides, tokens_per_step


def grpo(spec: dict, tmp: Path, vocab: int) -> tuple[list[str], Callable]:
    from benchmarks.synthetic import write_prompts

    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, spec["prompts"] * spec["steps"], spec["prompt"], vocab)
    overrides = [
        "method.name=grpo",
        f"method.group_size={spec['group']}",
        "method.rewards=[benchmarks.synthetic:erniekit_reward]",
        "method.ppo_epochs=1",  # one optimizer step per rollout
        "method.beta=0.0",  # no reference model (TRL's default too)
        "method.log_completions_every=0",
        f"method.rollout.prompts_per_step={spec['prompts']}",
        f"method.rollout.max_new_tokens={spec['completion']}",
        f"method.rollout.temperature={spec['temperature']}",
        f"data.train=[{prompts}]",
        "train.eval_on_start=false",
    ]

    def tokens_per_step(trainer, record) -> float:
        n = spec["prompts"] * spec["group"]
        prompt = len(trainer.method.train_prompts[0][0].ids)
        return n * (prompt + record["completion_length"])

    return overrides, tokens_per_step


def child(spec: dict) -> dict:
    from benchmarks.common import peak_rss_mb, timed_steps, trainer_overrides, trainer_steps
    from benchmarks.synthetic import write_tokenizer
    from erniekit.config import load_recipe
    from erniekit.models import flavor_args
    from erniekit.trainer.loop import Trainer

    tmp = Path(spec["tmp"])
    vocab = flavor_args(spec["model"]).vocab_size
    tokenizer = write_tokenizer(tmp / "tokenizer", vocab)
    method, rows = spec["method"], spec["batch"] if spec["method"] == "dpo" else spec["prompts"]
    extra, tokens_per_step = {"dpo": dpo, "grpo": grpo}[method](spec, tmp, vocab)
    overrides = [
        f"model.flavor={spec['model']}",
        f"model.tokenizer={tokenizer}",
        "data.template=plain",
        "data.shuffle=false",
        *trainer_overrides(tmp, spec["seq"], rows, spec["steps"]),
        *extra,
        f"optim.lr={spec['lr']}",
        "optim.scheduler=constant",
        "optim.warmup_steps=0",
        "optim.weight_decay=0.0",
        "optim.grad_clip=1.0",
    ]
    trainer = Trainer(load_recipe(f"ernie4_5/debug_{method}", overrides))
    trainer.fit()
    records = trainer_steps(trainer.output_dir / "metrics.jsonl")
    tokens = [tokens_per_step(trainer, r) for r in records]
    out = {
        "model": spec["model"],
        "method": method,
        **timed_steps([r["seconds"] for r in records], tokens),
        "tokens_per_step": tokens[-1],
        "positions_per_step": records[-1]["step_tokens"],  # what erniekit actually ran (shared prompts)
        "peak_rss_MB": peak_rss_mb(),
        "final_loss": records[-1]["loss"],
    }
    if method == "grpo":
        measured = records[1:]
        out["rollout_share"] = sum(r["rollout_seconds"] for r in measured) / sum(
            r["seconds"] for r in measured
        )
        out["completion_length"] = sum(r["completion_length"] for r in measured) / len(measured)
        out["prompt_tokens"] = len(trainer.method.train_prompts[0][0].ids)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if parse_args_or_run_child(parser, child) is not None:
        parser.error("run by benchmarks.run (--child SPEC)")


if __name__ == "__main__":
    main()
