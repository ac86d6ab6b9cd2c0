"""The benchmark driver: this machine's limit, our training and generation speed, and the peers', in one run.

    python -m benchmarks.run [--suites gemm settings sft scaling generate] [--model llama/smollm2-135m]

Every row runs in its own child process (so its peak RSS is its own), one after another, and each ratio
compares rows measured in this same invocation. Writes ``benchmarks/results/run.json`` (with the machine
description) and prints a Markdown table.

* gemm: the limit. A 2048^3 fp32 ``paddle.matmul``, median of repeats, in GFLOP/s.
* settings: what the entry point's runtime settings buy (paddle-cpu-lab.md §8, erniekit/runtime.py): full
  SFT of a 20M-parameter Llama at seq 512, batch 4, with Paddle's own default (one thread), two
  threads, plus ``MKL_DEBUG_CPU_TYPE=5``, plus glibc keeping freed blocks (all three: what erniekit sets).
* sft: the real trainer (full and LoRA r8 all-linear) on a 0.1-0.5B model at seq 512, next to Hugging
  Face ``transformers`` + a plain torch AdamW loop (``peft`` for LoRA) on the same shape.
* scaling: the same full SFT with 2 processes (data parallel on gloo, one thread each) vs 1 process with
  two threads; efficiency = tokens/s ratio.
* generate: KV-cache greedy generation, batch 1 and 8, 64 new tokens after a 32-token prompt, next to
  ``transformers.generate``.

FLOPs: training counts 6 x parameters per token for full fine-tuning (tied embeddings once: the LM head
GEMM), 4 x parameters + 6 x adapter parameters for LoRA (frozen weights get no weight gradient), plus
6 x layers x seq x heads x head_dim for causal attention (benchmarks/sft.py); MFU is achieved FLOP/s
over the gemm row. Generation rows count no FLOPs (they are bound by per-token overheads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.common import child_command, parse_args_or_run_child, run_child

SUITES = ("gemm", "settings", "sft", "scaling", "generate")
COLUMNS = ["suite", "row", "seq", "batch", "tokens_per_sec", "gflops_per_sec", "mfu", "peak_rss_MB",
           "vs_torch", "rss_vs_torch", "vs_paddleformers", "rss_vs_paddleformers"]  # fmt: skip


def _ours_sft(model: str, method: str, seq: int, batch: int, steps: int, env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"model": model, "method": method, "seq": seq, "batch": batch, "steps": steps, "tmp": tmp}
        return run_child(child_command("benchmarks.sft", spec), env)


def _peer(spec: dict) -> dict:
    return run_child([sys.executable, "-m", "benchmarks.peer_torch", json.dumps(spec)])


def _paddleformers(spec: dict, python: str | None) -> dict | None:
    """The PaddleFormers peer, in its own virtualenv (None when that interpreter is not there)."""
    if not python or not os.path.exists(python):
        return None
    env = {**os.environ, "PYTHONPATH": ""}
    return run_child(
        [python, os.path.join(os.path.dirname(__file__), "peer_paddleformers.py"), json.dumps(spec)], env
    )


def _ratios(ours: dict, peer: dict | None, name: str) -> dict:
    if peer is None:
        return {}
    return {f"vs_{name}": ours["tokens_per_sec"] / peer["tokens_per_sec"],
            f"rss_vs_{name}": ours["peak_rss_MB"] / peer["peak_rss_MB"]}  # fmt: skip


def _hf_config(model: str) -> dict:
    from erniekit.models import family, flavor_args

    args = flavor_args(model)
    return family(model.split("/", maxsplit=1)[0]).hf.config_from_args(args)


# ---- children run in their own process --------------------------------------------------------------


def gemm_child(spec: dict) -> dict:
    import paddle

    n = spec["n"]
    a, b = paddle.randn([n, n]), paddle.randn([n, n])
    paddle.matmul(a, b)
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        paddle.matmul(a, b)  # CPU kernels run synchronously
        times.append(time.perf_counter() - start)
    return {"gflops_per_sec": 2 * n**3 / statistics.median(times) / 1e9}


def generate_child(spec: dict) -> dict:
    import numpy as np

    from benchmarks.common import peak_rss_mb
    from erniekit.models import build_model

    model = build_model(spec["model"], seed=0)
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, model.args.vocab_size, (spec["batch"], spec["prompt"])).tolist()

    def run():
        return model.generate(prompts, max_new_tokens=spec["new_tokens"])

    run()
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    assert all(len(o) == spec["new_tokens"] for o in out), "a row stopped early"
    return {"tokens_per_sec": spec["batch"] * spec["new_tokens"] / statistics.median(times),
            "peak_rss_MB": peak_rss_mb()}  # fmt: skip


def child(spec: dict) -> dict:
    return {"gemm": gemm_child, "generate": generate_child}[spec["mode"]](spec)


# ---- suites -----------------------------------------------------------------------------------------


def suite_gemm(args) -> list[dict]:
    row = run_child(child_command("benchmarks.run", {"mode": "gemm", "n": 2048, "repeats": 10}))
    return [{"suite": "gemm", "row": "paddle.matmul 2048^3 fp32 (the limit)", **row}]


def suite_settings(args) -> list[dict]:
    rows = []
    system = {"ERNIEKIT_MALLOC": "system"}
    variants = [
        ("Paddle default: 1 thread", {"OMP_NUM_THREADS": "1", "MKL_DEBUG_CPU_TYPE": "", **system}),
        ("2 threads", {"OMP_NUM_THREADS": "2", "MKL_DEBUG_CPU_TYPE": "", **system}),
        ("2 threads + MKL_DEBUG_CPU_TYPE=5", {"OMP_NUM_THREADS": "2", "MKL_DEBUG_CPU_TYPE": "5", **system}),
        (
            "+ malloc reuse (erniekit)",
            {"OMP_NUM_THREADS": "2", "MKL_DEBUG_CPU_TYPE": "5", "ERNIEKIT_MALLOC": "reuse"},
        ),
    ]
    for name, env in variants:
        r = _ours_sft("llama/bench-20m", "full", 512, 4, args.steps, {**os.environ, **env})
        rows.append({"suite": "settings", "row": f"bench-20m full SFT, {name}", "seq": 512, "batch": 4, **r})
    return rows


def suite_sft(args) -> list[dict]:
    config = _hf_config(args.model)
    rows = []
    for method in ("full", "lora"):
        shape = {"seq": args.seq, "batch": args.batch}
        ours = _ours_sft(args.model, method, args.seq, args.batch, args.steps)
        spec = {"mode": "train", "config": config, "method": method, "steps": args.steps, **shape}
        torch_row = _peer(spec)
        pf_row = _paddleformers(spec, args.paddleformers_python)
        label = f"{args.model} {method} SFT"
        ratios = {**_ratios(ours, torch_row, "torch"), **_ratios(ours, pf_row, "paddleformers")}
        rows.append({"suite": "sft", "row": f"{label} (erniekit)", **shape, **ours, **ratios})
        rows.append({"suite": "sft", "row": f"{label} (transformers + torch)", **shape, **torch_row})
        if pf_row is not None:
            rows.append({"suite": "sft", "row": f"{label} (PaddleFormers)", **shape, **pf_row})
    return rows


def suite_scaling(args) -> list[dict]:
    one = _ours_sft(args.model, "full", args.seq, args.batch, args.steps)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the launcher splits the cores
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "erniekit", "train", "--nproc", "2", "--log-dir", f"{tmp}/logs",
               "ernie4_5/debug_sft", f"model.flavor={args.model}", f"train.output_dir={tmp}/out",
               f"data.cache_dir={tmp}/cache", "logging.progress=none", "logging.visualdl=false",
               f"data.max_seq_len={args.seq}", f"train.micro_batch_size={args.batch}", "train.grad_accum=1",
               f"train.max_steps={args.steps}", "train.eval_every=0", "data.eval_holdout=0",
               "checkpoint.final=false", "parallel.dp=2"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if proc.returncode:
            raise SystemExit(f"dp2 run failed:\n{proc.stderr[-3000:]}")
        from erniekit.trainer.metrics import read_metrics

        records = [r for r in read_metrics(f"{tmp}/out/metrics.jsonl") if "loss" in r]
        tps = statistics.median(r["tokens_per_sec"] for r in records[1:])
    return [
        {"suite": "scaling", "row": f"{args.model} full SFT, 1 process x 2 threads", "seq": args.seq,
         "batch": args.batch, **one},
        {"suite": "scaling", "row": f"{args.model} full SFT, dp2: 2 processes x 1 thread (gloo)",
         "seq": args.seq,
         "batch": args.batch * 2, "tokens_per_sec": tps, "efficiency": tps / one["tokens_per_sec"],
         "gflops_per_sec": one["gflops_per_sec"] * tps / one["tokens_per_sec"]},
    ]  # fmt: skip


def suite_generate(args) -> list[dict]:
    config = _hf_config(args.model)
    rows = []
    for batch in (1, 8):
        spec = {"model": args.model, "batch": batch, "prompt": 32, "new_tokens": 64, "repeats": 2}
        ours = run_child(child_command("benchmarks.run", {"mode": "generate", **spec}))
        peer = _peer({"mode": "generate", "config": config, **spec})
        rows.append({"suite": "generate", "row": f"{args.model} greedy, 32 + 64 tokens (erniekit)", "seq": 96,
                     "batch": batch, **ours, **_ratios(ours, peer, "torch")})  # fmt: skip
        rows.append({"suite": "generate", "row": f"{args.model} greedy (transformers.generate)", "seq": 96,
                     "batch": batch, **peer})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--model", default="llama/smollm2-135m", help="a flavor (random weights)")
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--name", default="run")
    parser.add_argument(
        "--paddleformers-python",
        default=os.environ.get("PADDLEFORMERS_PYTHON", "/work/pf-venv/bin/python"),
        help="the PaddleFormers virtualenv's python (scripts/peer_venv.sh); its rows are left out without it",
    )
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return
    from benchmarks.common import report

    rows = []
    for suite in args.suites:
        new = globals()[f"suite_{suite}"](args)
        for r in new:
            print(f"  {r['row']}: {r.get('tokens_per_sec', r.get('gflops_per_sec')):.1f}", file=sys.stderr)
        rows += new
    gemm = next((r["gflops_per_sec"] for r in rows if r["suite"] == "gemm"), None)
    for r in rows:
        if gemm and r["suite"] != "gemm" and r.get("gflops_per_sec"):
            r["mfu"] = r["gflops_per_sec"] / gemm
    report(
        args.name,
        rows,
        COLUMNS + (["efficiency"] if "scaling" in args.suites else []),
        notes=__doc__.split("\n\n")[-1],
    )


if __name__ == "__main__":
    main()
