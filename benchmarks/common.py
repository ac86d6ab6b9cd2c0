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


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    # read before paddle loads: importing it sets OMP_NUM_THREADS=1 when unset
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE")}
    import paddle

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "paddle": paddle.__version__,
        "cuda": paddle.is_compiled_with_cuda(),
        **threads,
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


def report(name: str, rows: list[dict], columns: list[str], notes: str = "") -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "name": name,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "notes": notes,
        "rows": rows,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"## {name}\n\n{table(rows, columns)}\n")
    if notes:
        print(notes + "\n")
    print(f"(written to {path.relative_to(RESULTS.parent.parent)})")
    return path
