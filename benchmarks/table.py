"""The verdict rule and the README's benchmark table, rendered from ``benchmarks/results/run.json``.

    python -m benchmarks.table                  # print the table
    python -m benchmarks.table --readme         # and replace README.md's <!-- bench:run --> block

A ratio is ours over the peer's median tokens/s. It is called a *win* only when our slowest repeat beat
the peer's fastest (the min-max ranges over repeats do not overlap), a *loss* when our fastest is slower
than the peer's slowest, and a *tie* otherwise: with a handful of repeats on a shared machine, a ratio
inside overlapping ranges says nothing about who is faster.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

WIN, LOSS, TIE = "win", "loss", "tie (ranges overlap)"
START, END = "<!-- bench:run -->", "<!-- /bench:run -->"
RESULTS = Path(__file__).resolve().parent / "results" / "run.json"
README = Path(__file__).resolve().parent.parent / "README.md"


def verdict(ours: tuple[float, float], peer: tuple[float, float]) -> str:
    """``ours`` and ``peer`` are (min, max) of a speed over repeats; higher is better."""
    if ours[0] > peer[1]:
        return WIN
    if ours[1] < peer[0]:
        return LOSS
    return TIE


def compare(ours: dict, peer: dict, key: str = "tokens_per_sec") -> dict:
    """Row ``ours`` against row ``peer`` (summarized rows: ``key``, ``key_min``, ``key_max``)."""
    out = {
        "peer": peer["side"],
        "ratio": ours[key] / peer[key],
        "verdict": verdict(
            (ours[f"{key}_min"], ours[f"{key}_max"]), (peer[f"{key}_min"], peer[f"{key}_max"])
        ),
    }
    if ours.get("peak_rss_MB") and peer.get("peak_rss_MB"):
        out["rss_ratio"] = ours["peak_rss_MB"] / peer["peak_rss_MB"]
    return out


def _num(v: float) -> str:
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _spread(row: dict, key: str) -> str:
    if row.get(key) is None:
        return ""
    if row.get(f"{key}_min") is None or row[f"{key}_min"] == row[f"{key}_max"]:
        return _num(row[key])
    return f"{_num(row[key])} ({_num(row[f'{key}_min'])}-{_num(row[f'{key}_max'])})"


def machine_line(payload: dict) -> str:
    m = payload["machine"]
    flags = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in m.get("flags", {}).items())
    env = ", ".join(f"{k}={v}" for k, v in m.get("env", {}).items() if v)
    gemm = ", ".join(
        f"{name} {_num(g['gflops_per_sec'])}" + (f" (n={g['n']})" if g.get("n", 2048) != 2048 else "")
        for name, g in m.get("gemm_gflops_per_sec", {}).items()
    )
    versions = ", ".join(
        f"{k} {m[k]}" for k in ("paddle", "torch", "transformers", "peft", "trl") if m.get(k) is not None
    )
    return (
        f"Machine: {m['cpu']} (family {m.get('cpu_family')}, model {m.get('cpu_model')}), "
        f"{m['cores']} cores; {flags}; {env}. GEMM 2048^3 GFLOP/s: {gemm}. {versions}. "
        f"{payload['date']}, {payload.get('repeats', '?')} repeat(s) per row (fresh processes, ours and the "
        "peer's alternating): median (min-max)."
    )


COLUMNS = ("suite", "row", "tokens/s", "steps/s", "warm-up s", "GFLOP/s", "MFU", "peak RSS MB", "ratio",
           "verdict", "RSS ratio")  # fmt: skip


def render(payload: dict) -> str:
    """The Markdown table of a run.json payload, preceded by its machine line."""
    lines = [machine_line(payload), "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in payload["rows"]:
        vs = r.get("vs", [])
        cells = [
            r["suite"],
            r["row"],
            f"skipped: {r['skipped']}" if r.get("skipped") else _spread(r, "tokens_per_sec"),
            _num(r["steps_per_sec"]) if r.get("steps_per_sec") is not None else "",
            _num(r["warmup_s"]) if r.get("warmup_s") is not None else "",
            _spread(r, "gflops_per_sec"),
            f"{r['mfu']:.0%}" if r.get("mfu") is not None else "",
            f"{r['peak_rss_MB']:,.0f}" if r.get("peak_rss_MB") else "",
            "; ".join(f"{c['ratio']:.2f} vs {c['peer']}" for c in vs),
            "; ".join(c["verdict"] for c in vs),
            "; ".join(f"{c['rss_ratio']:.2f}" for c in vs if "rss_ratio" in c),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """``text`` with what lies between the bench:run markers replaced by ``block``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"no {START} ... {END} block to replace")
    return text[: start + len(START)] + "\n" + block + "\n" + text[end:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", nargs="?", type=Path, const=README, help="update this README's block")
    args = parser.parse_args()
    block = render(json.loads(args.results.read_text()))
    print(block)
    if args.readme:
        args.readme.write_text(replace_block(args.readme.read_text(), block))
        print(f"(updated {args.readme})")


if __name__ == "__main__":
    main()
