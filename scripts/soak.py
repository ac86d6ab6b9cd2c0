"""Soak test: train the debug recipe for a long time while killing it (SIGKILL) at random moments and
resuming, checking after every kill that nothing saved was lost or corrupted. Each kill lands at a
random step still ahead plus a random fraction of a second (so sometimes inside a checkpoint write).

    python scripts/soak.py --hours 8                 # on demand (scripts/soak.sh)
    python scripts/soak.py --cycles 3 --steps 16     # the short form CI runs (tests/reliability/test_soak.py)

After each kill: every complete checkpoint loads (model and optimizer safetensors, trainer state naming
its own step), the newest checkpoint never goes backwards, and metrics.jsonl holds each step at most once
in increasing order. At the end one last resume runs to ``--steps`` and, with ``--reference``, its logged
losses and final weights must equal an uninterrupted run's. Exits non-zero with the first violation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]


class SoakFailure(AssertionError):
    pass


def command(out: Path, cache: Path, steps: int, every: int) -> list[str]:
    return [sys.executable, "-m", "erniekit", "train", "ernie4_5/debug_sft", f"train.output_dir={out}",
            f"data.cache_dir={cache}", f"train.max_steps={steps}", f"checkpoint.every={every}",
            "checkpoint.keep=3", "train.eval_every=0", "train.grad_accum=1", "data.max_seq_len=128",
            "logging.progress=plain", "logging.visualdl=false", "train.resume=auto"]  # fmt: skip


def read_steps(out: Path) -> list[int]:
    from erniekit.trainer.metrics import read_metrics

    path = out / "metrics.jsonl"
    return [r["step"] for r in read_metrics(path) if "loss" in r] if path.is_file() else []


def check(out: Path, newest_before: int) -> int:
    """The invariants after a kill; returns the newest complete checkpoint's step."""
    steps = read_steps(out)
    if steps != sorted(set(steps)) or (steps and steps != list(range(steps[0], steps[-1] + 1))):
        raise SoakFailure(f"metrics.jsonl steps not each once and in order: {steps}")
    newest = 0
    for ckpt in sorted(out.glob("checkpoint-*")):
        if not ckpt.name.split("-")[1].isdigit():
            continue  # .partial/.deleting: a save or prune the kill interrupted; the next resume removes it
        step = int(ckpt.name.split("-")[1])
        state = json.loads((ckpt / "trainer_state.json").read_text())
        if state["step"] != step:
            raise SoakFailure(f"{ckpt}: trainer state says step {state['step']}")
        for name in ("model.safetensors", "optimizer.safetensors"):
            arrays = load_file(str(ckpt / name))
            if not all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"):
                raise SoakFailure(f"{ckpt / name}: non-finite values")
        newest = max(newest, step)
    if newest < newest_before:
        raise SoakFailure(f"newest checkpoint went back from {newest_before} to {newest}")
    return newest


def soak(work: Path, steps: int, every: int, cycles: int | None, hours: float | None, seed: int) -> dict:
    rng = random.Random(seed)
    out, cache = work / "out", work / "cache"
    deadline = time.time() + hours * 3600 if hours else None
    newest, kills, cycle = 0, 0, 0
    while (cycles is None or cycle < cycles) and (deadline is None or time.time() < deadline):
        cycle += 1
        work.mkdir(parents=True, exist_ok=True)
        log = open(work / "cycle.log", "w")  # noqa: SIM115 (a file, not a pipe: a long run cannot block on it)
        proc = subprocess.Popen(command(out, cache, steps, every), cwd=ROOT, stdout=log, stderr=log)
        done = read_steps(out)
        target = rng.randint(min(done[-1] + 1 if done else 1, steps - 1), steps - 1)  # a step still ahead
        delay = rng.uniform(0.0, 0.1)  # then a random moment of the next steps (maybe inside a save)
        while proc.poll() is None and not any(s >= target for s in read_steps(out)):
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            log.close()
            if proc.returncode != 0:
                tail = (work / "cycle.log").read_text()[-3000:]
                raise SoakFailure(f"cycle {cycle}: train exited {proc.returncode}:\n{tail}")
            if steps in read_steps(out):  # finished: start a fresh run for the next cycles
                check(out, newest)
                shutil.rmtree(out)
                newest = 0
                continue
        log.close()
        newest = check(out, newest)
        if steps in read_steps(out):  # it had finished training when killed: a fresh run comes next
            shutil.rmtree(out)
            newest = 0
        print(
            f"cycle {cycle}: killed {delay:.2f} s after step {target}, newest checkpoint {newest}", flush=True
        )
    final = subprocess.run(
        command(out, cache, steps, every), cwd=ROOT, capture_output=True, text=True, check=False
    )
    if final.returncode != 0:
        raise SoakFailure(f"final resume exited {final.returncode}:\n{final.stderr[-3000:]}")
    check(out, newest)
    if read_steps(out) != list(range(1, steps + 1)):
        raise SoakFailure(f"final metrics steps {read_steps(out)}")
    return {"cycles": cycle, "kills": kills, "out": out}


def compare_with_reference(work: Path, out: Path, steps: int, every: int) -> None:
    from erniekit.trainer.metrics import read_metrics

    ref = work / "reference"
    subprocess.run(command(ref, work / "cache", steps, every), cwd=ROOT, capture_output=True, check=True)
    losses = [
        [(r["step"], r["loss"]) for r in read_metrics(d / "metrics.jsonl") if "loss" in r] for d in (out, ref)
    ]
    if losses[0] != losses[1]:
        raise SoakFailure(f"losses differ from an uninterrupted run:\n{losses[0]}\n{losses[1]}")
    got, want = (load_file(str(d / f"checkpoint-{steps}" / "model.safetensors")) for d in (out, ref))
    if any(not np.array_equal(got[k], want[k]) for k in want):
        raise SoakFailure("final weights differ from an uninterrupted run")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("output/soak"))
    parser.add_argument("--hours", type=float, default=None, help="run this long (default: --cycles)")
    parser.add_argument(
        "--cycles", type=int, default=None, help="kill/resume cycles (default 5 without --hours)"
    )
    parser.add_argument("--steps", type=int, default=200, help="train.max_steps of a run (then a fresh one)")
    parser.add_argument("--every", type=int, default=4, help="checkpoint.every")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference", action="store_true", help="compare with an uninterrupted run at the end"
    )
    args = parser.parse_args()
    if args.hours is None and args.cycles is None:
        args.cycles = 5
    from erniekit.runtime import setup_runtime

    setup_runtime()
    work = args.work.resolve()
    try:
        result = soak(work, args.steps, args.every, args.cycles, args.hours, args.seed)
        if args.reference:
            compare_with_reference(work, result["out"], args.steps, args.every)
    except SoakFailure as e:
        print(f"soak FAILED: {e}", file=sys.stderr)
        return 1
    print(f"soak passed: {result['cycles']} cycles, {result['kills']} kills, every check held")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
