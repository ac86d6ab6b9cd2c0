"""SFT training throughput and peak memory: full fine-tuning vs LoRA vs QLoRA, each in its own process.

    python -m benchmarks.sft [--models ernie4_5/0.3b] [--seq 512] [--batch 1] [--steps 4]
    python -m benchmarks.sft --models path/to/SmolLM2-135M-Instruct   # an HF directory works too
    python -m benchmarks.sft --name qlora --methods lora qlora-int8 qlora-int4 qlora-nf4 --from-disk \
        --models ernie4_5/0.3b .cache/demo/models/SmolLM2-135M-Instruct

Methods: ``full``, ``lora`` (fp32 frozen base) and ``qlora-<format>`` (LoRA with ``lora.quantize``).
With ``--from-disk`` a flavor is first written to a model directory (random weights) and every row
loads it from there, as a user's run loads a checkpoint: a quantised base is then quantised tensor by
tensor as it is read, which is what decides its peak memory. ``weights_MB`` is what the model holds
(parameters plus quantised codes and scales).

Every configuration runs the real trainer (erniekit.trainer.Trainer) for a few optimizer steps in a fresh
child process, so peak RSS is that run's alone; rows are measured one after another in one invocation.
tokens/s is over the steps after the first (warm-up, reported as ``warmup_s``): their input tokens over
their time. Model FLOPs per token are counted as
6 x parameters (full) or 4 x parameters + 6 x adapter parameters (LoRA: no weight gradients for frozen
weights), plus causal attention 6 x layers x seq x heads x head_dim.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.common import child_command, parse_args_or_run_child, run_child


def child(spec: dict) -> dict:
    from benchmarks.common import peak_rss_mb, timed_steps, trainer_overrides, trainer_steps
    from erniekit.config import load_recipe
    from erniekit.trainer.loop import Trainer

    tmp = Path(spec["tmp"])
    model = spec.get("path") or spec["model"]
    if not Path(model).exists():
        model_args = [f"model.flavor={model}"]
    else:  # a directory without its own tokenizer (a saved flavor) keeps the recipe's
        tokenizer = [] if spec.get("path") else ["model.tokenizer=null"]
        model_args = [f"model.path={model}", "model.flavor=null", *tokenizer]
    method = spec["method"]
    quantize = method.removeprefix("qlora-") if method.startswith("qlora-") else "none"
    overrides = [
        *model_args,
        *trainer_overrides(tmp, spec["seq"], spec["batch"], spec["steps"]),
        f"lora.enabled={method != 'full'}",
        f"lora.quantize={quantize}",
        f"parallel.recompute.enabled={bool(spec.get('recompute'))}",
    ]
    trainer = Trainer(load_recipe("ernie4_5/debug_sft", overrides))
    a = trainer.model.args
    total = sum(int(p.numel()) for p in trainer.model.parameters())
    trainable = sum(int(p.numel()) for p in trainer.params)
    held = sum(int(p.numel()) * p.element_size() for p in trainer.model.parameters())
    if quantize != "none":
        from erniekit.peft.qlora import storage

        q = storage(trainer.model)
        total += q["bytes_float"] // 4  # the quantised weights are parameters of the model too
        held += q["bytes"]
    trainer.fit()
    records = trainer_steps(trainer.output_dir / "metrics.jsonl")
    speed = timed_steps([r["seconds"] for r in records], [r["step_tokens"] for r in records])
    tps = speed["tokens_per_sec"]
    attention = 6 * a.num_layers * spec["seq"] * a.num_heads * a.head_dim
    dense = 6 * total if method == "full" else 4 * total + 6 * trainable
    return {
        "model": spec["model"],
        "method": method,
        "recompute": bool(spec.get("recompute")),
        "seq": spec["seq"],
        "batch": spec["batch"],
        "params_M": total / 1e6,
        "trainable_M": trainable / 1e6,
        **speed,
        "gflops_per_sec": (dense + attention) * tps / 1e9,
        "weights_MB": held / 1e6,
        "peak_rss_MB": peak_rss_mb(),
        "final_loss": records[-1]["loss"],
    }


def run_rows(
    models: list[str],
    methods: list[str],
    seq: int,
    batch: int,
    steps: int,
    from_disk: bool = False,
    recompute: bool = False,
) -> list[dict]:
    rows = []
    for model in models:
        with tempfile.TemporaryDirectory() as saved:
            path = _saved_flavor(model, Path(saved)) if from_disk and not Path(model).exists() else None
            for method in methods:
                rows.append(_run_row(model, path, method, seq, batch, steps, recompute))
    by_model = {}
    for row in rows:
        by_model.setdefault((row["model"], row.get("recompute")), {})[row["method"]] = row
    for row in rows:
        for base in ("full", "lora"):
            ref = by_model[(row["model"], row.get("recompute"))].get(base)
            if ref and (base == "full" or row["method"].startswith("qlora-")):
                row[f"rss_vs_{base}"] = row["peak_rss_MB"] / ref["peak_rss_MB"]
                row[f"speed_vs_{base}"] = row["tokens_per_sec"] / ref["tokens_per_sec"]
                row[f"weights_vs_{base}"] = row["weights_MB"] / ref["weights_MB"]
    return rows


def _saved_flavor(flavor: str, out: Path) -> str:
    """A flavor's random weights written as a model directory, in a child (this process stays small)."""
    code = (
        "import sys; from erniekit.models import build_model, save_pretrained; "
        "save_pretrained(build_model(sys.argv[1], seed=0), sys.argv[2])"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code, flavor, str(out)], check=True)
    return str(out)


def _run_row(
    model: str, path: str | None, method: str, seq: int, batch: int, steps: int, recompute: bool
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"model": model, "path": path, "method": method, "seq": seq, "batch": batch, "steps": steps}
        spec["recompute"] = recompute
        row = run_child(child_command("benchmarks.sft", {**spec, "tmp": tmp}))
    print(
        f"  {model} {method}: {row['tokens_per_sec']:.0f} tokens/s, {row['peak_rss_MB']:.0f} MB",
        file=sys.stderr,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ernie4_5/0.3b"])
    parser.add_argument("--methods", nargs="+", default=["full", "lora"])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--name", default="sft_full_vs_lora")
    parser.add_argument("--from-disk", action="store_true", help="load flavors from a saved directory")
    parser.add_argument("--recompute", action="store_true", help="recompute every layer in backward")
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return
    from benchmarks.common import report

    rows = run_rows(
        args.models, args.methods, args.seq, args.batch, args.steps, args.from_disk, args.recompute
    )
    report(
        args.name,
        rows,
        [
            "model",
            "method",
            "recompute",
            "seq",
            "batch",
            "params_M",
            "trainable_M",
            "tokens_per_sec",
            "gflops_per_sec",
            "weights_MB",
            "step_s",
            "peak_rss_MB",
            *(["rss_vs_full", "speed_vs_full"] if "full" in args.methods else []),
            *(["weights_vs_lora", "rss_vs_lora", "speed_vs_lora"] if "lora" in args.methods else []),
        ],
        notes="Each row is a separate process running the real trainer; fp32 AdamW on CPU"
        + (", flavors loaded from a saved model directory." if args.from_disk else "."),
    )


if __name__ == "__main__":
    main()
