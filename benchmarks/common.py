"""Shared benchmark plumbing: machine description, timing, peak RSS, table + JSON output.

Every benchmark measures its rows side by side in one process run (machines are noisy), takes the
median of repeats after warm-up, and records the machine it ran on next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
VERSIONS = {"paddle": "paddlepaddle", "torch": "torch", "transformers": "transformers", "peft": "peft",
            "trl": "trl"}  # fmt: skip


def cpu_info() -> dict:
    """Model name, family/model numbers and the vector flags that decide which kernels can run fast."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not line.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name", platform.processor()),
        "cpu_family": fields.get("cpu family"),
        "cpu_model": fields.get("model"),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "cores": len(os.sched_getaffinity(0)),
    }


def has_bf16_matmul(info: dict) -> bool:
    """Whether the CPU multiplies bf16 in hardware (without it torch's bf16 GEMM runs ~500x slower)."""
    return info["flags"]["avx512_bf16"] or info["flags"]["amx_bf16"]


def machine(gemm: dict | None = None) -> dict:
    """This machine: CPU, thread settings, library versions and (``gemm``) its measured GEMM rates."""
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    # read before paddle loads: importing it sets OMP_NUM_THREADS=1 when unset
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DEBUG_CPU_TYPE")}
    return {
        **cpu_info(),
        "python": platform.python_version(),
        **{name: version(dist) for name, dist in VERSIONS.items()},
        "env": threads,
        "gemm_gflops_per_sec": gemm or {},
    }


def child_command(module: str, spec: dict) -> list[str]:
    """The command that measures ``module`` once in a fresh process (see ``parse_args_or_run_child``)."""
    return [sys.executable, "-m", module, "--child", json.dumps(spec)]


def parse_args_or_run_child(parser: argparse.ArgumentParser, child: Callable[[dict], dict]):
    """Set up the runtime and parse the command line. Started by ``child_command``, run ``child`` on its
    spec, print the JSON result for ``run_child`` and return None; otherwise return the arguments."""
    from erniekit.runtime import setup_runtime

    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_runtime()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return None
    return args


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Run a benchmark child process; its last stdout line is its JSON result (stderr shown on failure)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def trainer_overrides(tmp: str | Path, seq: int, batch: int, steps: int) -> list[str]:
    """What every benchmark run of erniekit's Trainer sets: a private output and cache directory, no
    progress bar, no VisualDL, no evaluation, no checkpoint, ``steps`` optimizer steps of ``batch`` rows."""
    tmp = Path(tmp)
    return [
        f"train.output_dir={tmp / 'out'}",
        f"data.cache_dir={tmp / 'cache'}",
        "logging.progress=none",
        "logging.visualdl=false",
        f"data.max_seq_len={seq}",
        f"train.micro_batch_size={batch}",
        "train.grad_accum=1",
        f"train.max_steps={steps}",
        "train.eval_every=0",
        "data.eval_holdout=0",
        "checkpoint.final=false",
    ]


def trainer_steps(metrics_path: str | Path) -> list[dict]:
    """The step records of a run's metrics.jsonl, each with its wall time ``seconds`` (its tokens over
    its tokens/s; the trainer times a step from fetching its batch to the optimizer update)."""
    from erniekit.trainer.metrics import read_metrics

    steps, seen = [], 0
    for record in read_metrics(metrics_path):
        if "loss" in record:
            tokens = record["tokens"] - seen
            seen = record["tokens"]
            steps.append({**record, "step_tokens": tokens, "seconds": tokens / record["tokens_per_sec"]})
    return steps


def timed_steps(seconds: list[float], tokens: list[float], warmup: int = 1) -> dict:
    """One child's speed: the first ``warmup`` steps apart (``warmup_s``), then tokens/s and steps/s
    over the rest (their total tokens over their total time)."""
    if len(seconds) < warmup + 3:
        raise SystemExit(f"{len(seconds)} steps: need {warmup} warm-up + at least 3 measured steps")
    measured, measured_tokens = seconds[warmup:], tokens[warmup:]
    return {
        "warmup_s": sum(seconds[:warmup]),
        "measured_steps": len(measured),
        "tokens_per_sec": sum(measured_tokens) / sum(measured),
        "steps_per_sec": len(measured) / sum(measured),
        "step_s": sum(measured) / len(measured),
    }


def interleave(sides: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run each side's child ``repeats`` times, round-robin (a, b, a, b, ...): drift hits all sides."""
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(repeats):
        for name, run in sides.items():
            start = time.perf_counter()
            runs[name].append(run())
            print(f"    {name} #{r + 1}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return runs


SUMMARIZED = ("tokens_per_sec", "steps_per_sec", "gflops_per_sec")
MEDIANS = ("warmup_s", "peak_rss_MB", "step_s", "tokens_per_step", "completion_length", "rollout_share")


def summarize(runs: list[dict]) -> dict:
    """A row over repeats: median, min and max of the speeds, medians of warm-up, peak RSS and what varies
    per run, the first run's other fields (shape, parameter counts), and every run under ``runs``."""
    row = {k: v for k, v in runs[0].items() if k not in SUMMARIZED + MEDIANS}
    for key in SUMMARIZED:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            row.update({key: statistics.median(values), f"{key}_min": min(values), f"{key}_max": max(values)})
    for key in MEDIANS:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            row[key] = statistics.median(values)
    return {**row, "repeats": len(runs), "runs": runs}


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def report(
    name: str,
    rows: list[dict],
    columns: list[str] | None,
    notes: str = "",
    machine_info: dict | None = None,
    **extra,
) -> Path:
    """Write ``results/<name>.json`` (rows, notes, the machine and any ``extra`` fields) and print the
    rows as a Markdown table of ``columns`` (None: the caller prints its own)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "name": name,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info or machine(),
        **extra,
        "notes": notes,
        "rows": rows,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    if columns is not None:
        print(f"## {name}\n\n{table(rows, columns)}\n")
        if notes:
            print(notes + "\n")
    print(f"(written to {path.relative_to(RESULTS.parent.parent)})")
    return path
