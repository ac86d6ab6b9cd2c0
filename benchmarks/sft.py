"""SFT training throughput and peak memory: full fine-tuning vs LoRA, each in its own process.

    python -m benchmarks.sft [--models ernie4_5/0.3b] [--seq 512] [--batch 1] [--steps 4]
    python -m benchmarks.sft --models path/to/SmolLM2-135M-Instruct   # an HF directory works too

Every configuration runs the real trainer (erniekit.trainer.Trainer) for a few optimizer steps in a fresh
child process, so peak RSS is that run's alone; rows are measured one after another in one invocation.
tokens/s is the median over steps after the first (warm-up). Model FLOPs per token are counted as
6 x parameters (full) or 4 x parameters + 6 x adapter parameters (LoRA: no weight gradients for frozen
weights), plus causal attention 6 x layers x seq x heads x head_dim.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import child_command, parse_args_or_run_child, run_child


def child(spec: dict) -> dict:
    from benchmarks.common import peak_rss_mb
    from erniekit.config import load_recipe
    from erniekit.trainer.loop import Trainer
    from erniekit.trainer.metrics import read_metrics

    tmp = Path(spec["tmp"])
    model = spec["model"]
    model_args = (
        [f"model.flavor={model}"]
        if "/" in model and not Path(model).exists()
        else [f"model.path={model}", "model.flavor=null", "model.tokenizer=null"]
    )
    overrides = [
        *model_args,
        f"train.output_dir={tmp / 'out'}",
        f"data.cache_dir={tmp / 'cache'}",
        "logging.progress=none",
        "logging.visualdl=false",
        f"data.max_seq_len={spec['seq']}",
        f"train.micro_batch_size={spec['batch']}",
        "train.grad_accum=1",
        f"train.max_steps={spec['steps']}",
        "train.eval_every=0",
        "data.eval_holdout=0",
        "checkpoint.final=false",
        f"lora.enabled={spec['method'] == 'lora'}",
    ]
    trainer = Trainer(load_recipe("ernie4_5/debug_sft", overrides))
    a = trainer.model.args
    total = sum(int(p.numel()) for p in trainer.model.parameters())
    trainable = sum(int(p.numel()) for p in trainer.params)
    trainer.fit()
    records = [r for r in read_metrics(trainer.output_dir / "metrics.jsonl") if "loss" in r]
    tps = statistics.median(r["tokens_per_sec"] for r in records[1:])
    attention = 6 * a.num_layers * spec["seq"] * a.num_heads * a.head_dim
    dense = 6 * total if spec["method"] == "full" else 4 * total + 6 * trainable
    return {
        "model": model,
        "method": spec["method"],
        "seq": spec["seq"],
        "batch": spec["batch"],
        "params_M": total / 1e6,
        "trainable_M": trainable / 1e6,
        "tokens_per_sec": tps,
        "gflops_per_sec": (dense + attention) * tps / 1e9,
        "peak_rss_MB": peak_rss_mb(),
        "final_loss": records[-1]["loss"],
    }


def run_rows(models: list[str], methods: list[str], seq: int, batch: int, steps: int) -> list[dict]:
    rows = []
    for model in models:
        for method in methods:
            with tempfile.TemporaryDirectory() as tmp:
                spec = {
                    "model": model,
                    "method": method,
                    "seq": seq,
                    "batch": batch,
                    "steps": steps,
                    "tmp": tmp,
                }
                rows.append(run_child(child_command("benchmarks.sft", spec)))
                print(
                    f"  {model} {method}: {rows[-1]['tokens_per_sec']:.0f} tokens/s, "
                    f"{rows[-1]['peak_rss_MB']:.0f} MB",
                    file=sys.stderr,
                )
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], {})[row["method"]] = row
    for row in rows:
        full = by_model[row["model"]].get("full")
        if full:
            row["rss_vs_full"] = row["peak_rss_MB"] / full["peak_rss_MB"]
            row["speed_vs_full"] = row["tokens_per_sec"] / full["tokens_per_sec"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ernie4_5/0.3b"])
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--name", default="sft_full_vs_lora")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return
    from benchmarks.common import report

    rows = run_rows(args.models, args.methods, args.seq, args.batch, args.steps)
    report(
        args.name,
        rows,
        [
            "model",
            "method",
            "seq",
            "batch",
            "params_M",
            "trainable_M",
            "tokens_per_sec",
            "gflops_per_sec",
            "peak_rss_MB",
            "rss_vs_full",
            "speed_vs_full",
        ],
        notes="Each row is a separate process running the real trainer; fp32 AdamW on CPU.",
    )


if __name__ == "__main__":
    main()
