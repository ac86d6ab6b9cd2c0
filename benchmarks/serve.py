"""Serving throughput and latency: ``erniekit serve`` against ``transformers serve`` on the same model.

    python -m benchmarks.serve [--model .cache/demo/models/SmolLM2-135M-Instruct] [--repeats 2]

Each server runs alone (2 cores: never both at once), one after the other per repeat, each loaded with
the same closed-loop clients: at concurrency c, c threads each send requests back to back (greedy,
``max_tokens`` new tokens, prompts from a fixed list) until ``requests`` are done. Output tokens/s is the
completion tokens the servers report over the wall time; latency is per request, p50 and p95. The
first request to each server is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "What is the capital of France?",
    "Give three tips for staying healthy.",
    "Explain what a neural network is in one paragraph.",
    "Write a haiku about the sea.",
    "How do I boil an egg?",
    "What is 17 times 23?",
    "Name three planets and one fact about each.",
    "Why is the sky blue?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model: str, max_batch: int) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    env = {**os.environ}
    if kind == "erniekit":
        cmd = [
            sys.executable,
            "-m",
            "erniekit",
            "serve",
            model,
            "--port",
            str(port),
            "--max-batch",
            str(max_batch),
        ]
        name = Path(model).resolve().name
    else:
        cli = Path(sys.executable).with_name("transformers")
        cmd = [str(cli), "serve", model, "--port", str(port), "--continuous-batching"]
        name = model
    log = open(ROOT / ".cache" / f"bench-serve-{kind}.log", "w")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    import httpx

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} serve exited; see {log.name}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url, name
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit(f"{kind} serve did not start; see {log.name}")


def load(url: str, name: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)

    def one(i: int) -> tuple[float, int]:
        t = time.perf_counter()
        r = client.chat.completions.create(
            model=name,
            messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            max_tokens=max_tokens,
            temperature=0,
        )
        return time.perf_counter() - t, r.usage.completion_tokens

    one(0)  # warm-up
    latencies, tokens, lock = [], [0], threading.Lock()
    todo = iter(range(requests))

    def worker() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            seconds, n = one(i)
            with lock:
                latencies.append(seconds)
                tokens[0] += n

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "tokens_per_sec": tokens[0] / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "completion_tokens": tokens[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / ".cache/demo/models/SmolLM2-135M-Instruct"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--servers", nargs="+", default=["erniekit", "transformers"])
    args = parser.parse_args()
    if not Path(args.model, "config.json").is_file():
        raise SystemExit(f"{args.model}: no model; make one with scripts/fetch_demo_assets.py")
    from benchmarks.common import report

    (ROOT / ".cache").mkdir(exist_ok=True)
    results: dict[tuple[str, int], list[dict]] = {}
    for repeat in range(args.repeats):
        for kind in args.servers if repeat % 2 == 0 else args.servers[::-1]:
            proc, url, name = start(kind, args.model, max(args.concurrency))
            try:
                for c in args.concurrency:
                    r = load(url, name, c, max(8, 2 * c), args.max_tokens)
                    results.setdefault((kind, c), []).append(r)
                    print(
                        f"  {kind} c={c}: {r['tokens_per_sec']:.1f} tok/s, p50 {r['p50_s']:.2f} s", flush=True
                    )
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(120)
    rows = []
    for c in args.concurrency:
        row = {"concurrency": c}
        for kind in args.servers:
            runs = results[kind, c]
            rates = [r["tokens_per_sec"] for r in runs]
            row[f"{kind}_tokens_per_sec"] = statistics.median(rates)
            row[f"{kind}_spread"] = f"{min(rates):.3g}-{max(rates):.3g}"
            row[f"{kind}_p50_s"] = statistics.median(r["p50_s"] for r in runs)
            row[f"{kind}_p95_s"] = statistics.median(r["p95_s"] for r in runs)
        if len(args.servers) == 2:
            a, b = args.servers
            row["ratio"] = row[f"{a}_tokens_per_sec"] / row[f"{b}_tokens_per_sec"]
        rows.append(row)
    columns = ["concurrency"] + [
        f"{k}_{m}" for k in args.servers for m in ("tokens_per_sec", "spread", "p50_s", "p95_s")
    ]
    report(
        "serve",
        rows,
        columns + (["ratio"] if len(args.servers) == 2 else []),
        notes=f"{Path(args.model).name}, fp32 CPU, greedy, {args.max_tokens} new tokens per request,"
        f" closed-loop clients (max(8, 2c) requests at concurrency c), {args.repeats} alternating repeats"
        " (median, spread min-max); transformers serve with --continuous-batching.",
    )


if __name__ == "__main__":
    main()
