"""The benchmark driver: this machine's limit, our training and generation speed, and the peers', in one run.

    python -m benchmarks.run [--suites gemm settings sft scaling generate dpo grpo] [--repeats 3]
                             [--model llama/smollm2-135m] [--seq 512] [--batch 1] [--steps 4]
    python -m benchmarks.table --readme     # the README's table from the results

Writes ``benchmarks/results/<name>.json``: every row with its repeats, the machine (CPU model and flags,
thread settings, library versions, measured GEMM rates) and the wall time of each suite.

* gemm: the limit. 2048^3 fp32 ``paddle.matmul`` (the MFU reference) and ``torch.matmul`` fp32 and bf16;
  the bf16 probe is 512^3 on CPUs without AVX-512-BF16 or AMX, where torch's bf16 GEMM crawls.
* settings: what the entry point's runtime settings buy (paddle-cpu-lab.md §8, erniekit/runtime.py): full
  SFT of a 20M-parameter Llama at seq 512, batch 2, with Paddle's own default (one thread), two
  threads, plus ``MKL_DEBUG_CPU_TYPE=5``, plus glibc keeping freed blocks (all three: what erniekit sets);
  each row is compared with the one before it.
* sft: the real trainer (full and LoRA r8 all-linear) on the model at seq 512, next to Hugging Face
  ``transformers`` + a plain torch AdamW loop (``peft`` for LoRA) on the same shape, and PaddleFormers when
  its virtualenv exists. A torch bf16-autocast row is run only on CPUs with AVX-512-BF16 or AMX.
* scaling: the same full SFT with 2 processes (data parallel on gloo, one thread each) vs 1 process with
  two threads; the ratio is the scaling efficiency.
* generate: KV-cache greedy generation, batch 1 and 8, 64 new tokens after a 32-token prompt, next to
  ``transformers.generate``.
* dpo / grpo: erniekit's Trainer (benchmarks/rl.py) next to TRL's DPOTrainer / GRPOTrainer on torch CPU
  (benchmarks/peer_trl.py): same model, synthetic data of fixed lengths read through one shared
  word-level tokenizer (benchmarks/synthetic.py), same batch and settings.

How rows are measured: every repeat of every row is a fresh child process (its peak RSS is its own); the
repeats of the rows that are compared run alternately (ours, peer, ours, peer, ...) so drift on this
shared machine hits both. A training child runs ``--steps`` optimizer steps: the first is the warm-up
(reported as warm-up s, not in the speed), tokens/s is the other steps' tokens over their time. A
generation child times one short generate (8 new tokens) as its warm-up, then one full generate. Rows
give the median over repeats with the min-max range; a ratio is median over median, and it is a win only
when the ranges do not overlap (benchmarks/table.py).

Tokens: SFT rows count the row's input tokens (erniekit: the non-padding tokens of its packed rows; the
torch peers: the full random rows, batch x seq). DPO and GRPO rows count, on both sides, prompt +
completion tokens of every sequence, as TRL's ``num_input_tokens_seen`` does: a DPO pair is two sequences
(prompt + chosen + EOS, prompt + rejected + EOS), a GRPO step prompts x group sequences of prompt +
sampled completion. erniekit packs each prompt once in front of its replies (``positions_per_step`` is
what it actually runs) where TRL repeats it per sequence; the sequences, their lengths and the loss per
optimizer step are the same. GRPO steps include generating and scoring their completions.

FLOPs: training counts 6 x parameters per token for full fine-tuning (tied embeddings once: the LM head
GEMM), 4 x parameters + 6 x adapter parameters for LoRA (frozen weights get no weight gradient), plus
6 x layers x seq x heads x head_dim for causal attention (benchmarks/sft.py); MFU is achieved FLOP/s
over the paddle fp32 GEMM rate. Generation, DPO and GRPO rows count no FLOPs.
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

from benchmarks.common import (
    child_command,
    cpu_info,
    has_bf16_matmul,
    interleave,
    parse_args_or_run_child,
    run_child,
    summarize,
    timed_steps,
)
from benchmarks.table import compare, render

SUITES = ("gemm", "settings", "sft", "scaling", "generate", "dpo", "grpo")
# wall seconds of one repeat of each suite at the default shapes on the 2-core EPYC (for the estimate)
ESTIMATE_S = {"gemm": 20, "settings": 70, "sft": 280, "scaling": 90, "generate": 80, "dpo": 110, "grpo": 210}
NO_BF16 = "no AVX-512-BF16 on this CPU"


def _ours_sft(model: str, method: str, seq: int, batch: int, steps: int, env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"model": model, "method": method, "seq": seq, "batch": batch, "steps": steps, "tmp": tmp}
        return run_child(child_command("benchmarks.sft", spec), env)


def _ours_rl(spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return run_child(child_command("benchmarks.rl", {**spec, "tmp": tmp}))


def _peer(module: str, spec: dict) -> dict:
    return run_child([sys.executable, "-m", module, json.dumps(spec)])


def _paddleformers(spec: dict, python: str) -> dict:
    """The PaddleFormers peer, in its own virtualenv."""
    env = {**os.environ, "PYTHONPATH": ""}
    script = os.path.join(os.path.dirname(__file__), "peer_paddleformers.py")
    return run_child([python, script, json.dumps(spec)], env)


def _hf_config(model: str) -> dict:
    from erniekit.models import family, flavor_args

    args = flavor_args(model)
    return family(model.split("/", maxsplit=1)[0]).hf.config_from_args(args)


def measured_rows(
    suite: str, sides: dict, names: dict[str, str], repeats: int, shape: dict, pairs: list[tuple[str, str]]
) -> list[dict]:
    """Run ``sides`` (name -> child) alternately ``repeats`` times; one summarized row per side, named by
    ``names``, with the ``pairs`` (ours, peer) compared on our row."""
    runs = interleave(sides, repeats)
    rows = {s: {"suite": suite, "row": names[s], "side": s, **shape, **summarize(runs[s])} for s in sides}
    for ours, peer in pairs:
        rows[ours].setdefault("vs", []).append(compare(rows[ours], rows[peer]))
    return list(rows.values())


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
    start = time.perf_counter()
    model.generate(prompts, max_new_tokens=spec["warmup_tokens"])
    warmup = time.perf_counter() - start
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        out = model.generate(prompts, max_new_tokens=spec["new_tokens"])
        times.append(time.perf_counter() - start)
    assert all(len(o) == spec["new_tokens"] for o in out), "a row stopped early"
    tokens_per_sec = spec["batch"] * spec["new_tokens"] / statistics.median(times)
    return {"warmup_s": warmup, "tokens_per_sec": tokens_per_sec, "peak_rss_MB": peak_rss_mb()}


def child(spec: dict) -> dict:
    return {"gemm": gemm_child, "generate": generate_child}[spec["mode"]](spec)


# ---- suites -----------------------------------------------------------------------------------------


def suite_gemm(args) -> list[dict]:
    bf16_n = 2048 if has_bf16_matmul(args.cpu) else 512
    ours = {"mode": "gemm", "n": 2048, "repeats": 10}
    torch32 = {"mode": "gemm", "n": 2048, "dtype": "float32", "repeats": 10}
    torch16 = {"mode": "gemm", "n": bf16_n, "dtype": "bfloat16", "repeats": 10 if bf16_n == 2048 else 3}
    sides = {
        "paddle fp32": lambda: run_child(child_command("benchmarks.run", ours)),
        "torch fp32": lambda: _peer("benchmarks.peer_torch", torch32),
        "torch bf16": lambda: _peer("benchmarks.peer_torch", torch16),
    }
    names = {
        "paddle fp32": "paddle.matmul 2048^3 fp32 (the limit)",
        "torch fp32": "torch.matmul 2048^3 fp32",
        "torch bf16": f"torch.matmul {bf16_n}^3 bf16",
    }
    rows = measured_rows("gemm", sides, names, args.repeats, {}, [])
    for row, n in zip(rows, (2048, 2048, bf16_n)):
        row["n"] = n
    args.gemm = {r["side"]: {"gflops_per_sec": r["gflops_per_sec"], "n": r["n"]} for r in rows}
    return rows


def suite_settings(args) -> list[dict]:
    def env(threads: str, mkl: str, malloc: str) -> dict:
        return {"OMP_NUM_THREADS": threads, "MKL_DEBUG_CPU_TYPE": mkl, "ERNIEKIT_MALLOC": malloc}

    variants = {
        "Paddle default: 1 thread": env("1", "", "system"),
        "2 threads": env("2", "", "system"),
        "2 threads + MKL_DEBUG_CPU_TYPE=5": env("2", "5", "system"),
        "+ malloc reuse (erniekit)": env("2", "5", "reuse"),
    }
    seq, batch = 512, 2

    def run(settings: dict):
        return lambda: _ours_sft(
            "llama/bench-20m", "full", seq, batch, args.steps, {**os.environ, **settings}
        )

    sides = {name: run(settings) for name, settings in variants.items()}
    names = {name: f"bench-20m full SFT, {name}" for name in variants}
    order = list(variants)
    return measured_rows(
        "settings", sides, names, args.repeats, {"seq": seq, "batch": batch}, list(zip(order[1:], order))
    )


def suite_sft(args) -> list[dict]:
    config = _hf_config(args.model)
    shape = {"seq": args.seq, "batch": args.batch}
    pf = (
        args.paddleformers_python
        if args.paddleformers_python and os.path.exists(args.paddleformers_python)
        else None
    )
    rows = []
    for method in ("full", "lora"):
        spec = {"mode": "train", "config": config, "method": method, "steps": args.steps, **shape}
        label = f"{args.model} {method} SFT"
        sides = {
            "erniekit": lambda m=method: _ours_sft(args.model, m, args.seq, args.batch, args.steps),
            "torch": lambda s=spec: _peer("benchmarks.peer_torch", s),
        }
        names = {"erniekit": f"{label} (erniekit)", "torch": f"{label} (transformers + torch)"}
        if has_bf16_matmul(args.cpu):
            sides["torch bf16"] = lambda s=spec: _peer("benchmarks.peer_torch", {**s, "precision": "bf16"})
            names["torch bf16"] = f"{label} (transformers + torch, bf16 autocast)"
        if pf:
            sides["PaddleFormers"] = lambda s=spec: _paddleformers(s, pf)
            names["PaddleFormers"] = f"{label} (PaddleFormers)"
        pairs = [("erniekit", peer) for peer in sides if peer != "erniekit"]
        rows += measured_rows("sft", sides, names, args.repeats, shape, pairs)
        if not has_bf16_matmul(args.cpu):
            rows.append({"suite": "sft", "row": f"{label} (transformers + torch, bf16 autocast)",
                         "side": "torch bf16", **shape, "skipped": NO_BF16})  # fmt: skip
    if args.long_seq:  # the MFU target holds at long rows too, where attention's share grows
        long = {"seq": args.long_seq, "batch": 1}
        ours = {"erniekit": lambda: _ours_sft(args.model, "full", args.long_seq, 1, args.steps)}
        rows += measured_rows(
            "sft",
            ours,
            {"erniekit": f"{args.model} full SFT, seq {args.long_seq} (erniekit)"},
            args.repeats,
            long,
            [],
        )
    return rows


def _dp2(args) -> dict:
    """Full SFT on 2 data-parallel processes (gloo), each one thread, through ``erniekit train --nproc 2``."""
    from benchmarks.common import trainer_overrides, trainer_steps

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the launcher splits the cores
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "erniekit", "train", "--nproc", "2", "--log-dir", f"{tmp}/logs",
               "ernie4_5/debug_sft", f"model.flavor={args.model}", "parallel.dp=2",
               *trainer_overrides(tmp, args.seq, args.batch, args.steps)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if proc.returncode:
            raise SystemExit(f"dp2 run failed:\n{proc.stderr[-3000:]}")
        records = trainer_steps(f"{tmp}/out/metrics.jsonl")
    return timed_steps([r["seconds"] for r in records], [r["step_tokens"] for r in records])


def suite_scaling(args) -> list[dict]:
    sides = {
        "1 process": lambda: _ours_sft(args.model, "full", args.seq, args.batch, args.steps),
        "dp2": lambda: _dp2(args),
    }
    names = {
        "1 process": f"{args.model} full SFT, 1 process x 2 threads",
        "dp2": f"{args.model} full SFT, dp2: 2 processes x 1 thread (gloo), batch {args.batch} each",
    }
    shape = {"seq": args.seq, "batch": args.batch}
    one, dp2 = measured_rows("scaling", sides, names, args.repeats, shape, [("dp2", "1 process")])
    dp2["batch"] = 2 * args.batch
    dp2["gflops_per_sec"] = one["gflops_per_sec"] * dp2["vs"][0]["ratio"]  # the same FLOPs per token
    return [one, dp2]


def suite_generate(args) -> list[dict]:
    config = _hf_config(args.model)
    rows = []
    for batch in (1, 8):
        spec = {"batch": batch, "prompt": 32, "new_tokens": 64, "warmup_tokens": 8, "repeats": 1}
        ours = {"mode": "generate", "model": args.model, **spec}
        peer = {"mode": "generate", "config": config, **spec}
        sides = {
            "erniekit": lambda s=ours: run_child(child_command("benchmarks.run", s)),
            "transformers": lambda s=peer: _peer("benchmarks.peer_torch", s),
        }
        names = {
            "erniekit": f"{args.model} greedy, 32 + 64 tokens, batch {batch} (erniekit)",
            "transformers": f"{args.model} greedy, 32 + 64 tokens, batch {batch} (transformers.generate)",
        }
        shape = {"seq": 96, "batch": batch}
        rows += measured_rows("generate", sides, names, args.repeats, shape, [("erniekit", "transformers")])
    return rows


def _rl_rows(args, method: str, spec: dict, label: str, shape: dict) -> list[dict]:
    config = _hf_config(args.model)
    common = {"method": method, "steps": args.steps, "lr": 1e-6, **spec}
    sides = {
        "erniekit": lambda: _ours_rl({**common, "model": args.model}),
        "TRL": lambda: _peer("benchmarks.peer_trl", {**common, "config": config}),
    }
    names = {"erniekit": f"{label} (erniekit)", "TRL": f"{label} (TRL {method.upper()}Trainer)"}
    rows = measured_rows(method, sides, names, args.repeats, shape, [("erniekit", "TRL")])
    ours, peer = rows
    if ours["tokens_per_step"] != peer["tokens_per_step"] and method == "dpo":
        raise SystemExit(
            f"DPO rows count different tokens: {ours['tokens_per_step']} vs {peer['tokens_per_step']}"
        )
    return rows


def suite_dpo(args) -> list[dict]:
    p, r, b = args.dpo_prompt, args.dpo_reply, args.dpo_batch
    spec = {"batch": b, "prompt": p, "reply": r, "beta": 0.1, "seq": p + 2 * (r + 1)}
    label = f"{args.model} DPO (sigmoid, beta 0.1, reference copy), {b} pairs of {p} + 2 x {r} tokens"
    return _rl_rows(args, "dpo", spec, label, {"seq": p + r + 1, "batch": 2 * b})


def suite_grpo(args) -> list[dict]:
    n, g, p, c = args.grpo_prompts, args.grpo_group, args.grpo_prompt, args.grpo_completion
    spec = {"prompts": n, "group": g, "prompt": p, "completion": c, "temperature": 1.0, "seq": p + g * c}
    label = f"{args.model} GRPO, {n} prompts x {g} completions, {p} + up to {c} tokens, incl. rollout"
    return _rl_rows(args, "grpo", spec, label, {"seq": p + c, "batch": n * g})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--model", default="llama/smollm2-135m", help="a flavor (random weights)")
    parser.add_argument("--seq", type=int, default=512, help="SFT and scaling row length")
    parser.add_argument("--batch", type=int, default=1, help="SFT and scaling rows per step")
    parser.add_argument("--long-seq", type=int, default=2048, help="an erniekit-only full SFT row (0: none)")
    parser.add_argument(
        "--steps", type=int, default=4, help="optimizer steps per child: 1 warm-up + the rest"
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh child processes per row")
    parser.add_argument("--dpo-batch", type=int, default=2, help="DPO pairs per step")
    parser.add_argument("--dpo-prompt", type=int, default=64, help="DPO prompt tokens")
    parser.add_argument("--dpo-reply", type=int, default=64, help="DPO chosen / rejected tokens (+ EOS)")
    parser.add_argument("--grpo-prompts", type=int, default=4, help="GRPO prompts per step")
    parser.add_argument("--grpo-group", type=int, default=4, help="GRPO completions per prompt")
    parser.add_argument("--grpo-prompt", type=int, default=16, help="GRPO prompt tokens")
    parser.add_argument("--grpo-completion", type=int, default=32, help="GRPO longest completion")
    parser.add_argument("--name", default="run")
    parser.add_argument(
        "--paddleformers-python",
        default=os.environ.get("PADDLEFORMERS_PYTHON", "/work/pf-venv/bin/python"),
        help="the PaddleFormers virtualenv's python (scripts/peer_venv.sh); its rows are left out without it",
    )
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return
    if args.steps < 4 or args.repeats < 1:
        parser.error("--steps must be >= 4 (1 warm-up + 3 measured) and --repeats >= 1")
    from benchmarks.common import machine, report

    args.cpu, args.gemm = cpu_info(), None
    estimate = sum(ESTIMATE_S[s] for s in args.suites) * args.repeats * (args.steps + 2) / 6
    print(f"estimated ~{estimate / 60:.0f} min at the default shapes on a 2-core EPYC", file=sys.stderr)
    rows, seconds, begin = [], {}, time.perf_counter()
    for suite in args.suites:
        start = time.perf_counter()
        print(f"{suite}:", file=sys.stderr)
        rows += globals()[f"suite_{suite}"](args)
        seconds[suite] = time.perf_counter() - start
    if args.gemm is None:  # the machine block always carries the GEMM rates
        args.gemm = {
            r["side"]: {"gflops_per_sec": r["gflops_per_sec"], "n": r["n"]} for r in suite_gemm(args)
        }
    limit = args.gemm["paddle fp32"]["gflops_per_sec"]
    for r in rows:
        if r["suite"] != "gemm" and r.get("gflops_per_sec"):
            r["mfu"] = r["gflops_per_sec"] / limit
    total = time.perf_counter() - begin
    path = report(
        args.name,
        rows,
        None,
        notes=__doc__[__doc__.index("How rows are measured") :],
        machine_info=machine(args.gemm),
        repeats=args.repeats,
        steps=args.steps,
        seconds={**seconds, "total": total},
    )
    print(render(json.loads(path.read_text())))
    print(f"total {total / 60:.1f} min (estimated {estimate / 60:.0f})", file=sys.stderr)


if __name__ == "__main__":
    main()
