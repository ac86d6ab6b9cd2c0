"""LM head + cross-entropy forward and backward: chunked (erniekit) vs plain full logits, peak memory, time.

    python -m benchmarks.lm_head [--tokens 4096] [--hidden 1024] [--vocab 103424]

Shapes default to ERNIE-4.5-0.3B's head (hidden 1024, vocabulary 103,424, tied embedding so the weight is
[V, H]) on 4,096 tokens (batch 8 x seq 512). Each variant runs in a fresh child process on the same seeded
inputs, so its peak RSS is its own: ``loss_peak_MB`` is the child's peak resident memory during the loss
(forward and backward, the weight gradient included) minus its resident memory just before it (inputs,
weight and Paddle loaded; the peak counter is reset there through /proc/self/clear_refs). The children
also save the loss and the gradients (hidden, and the weight's gradient projected on a fixed random
vector) and the parent compares them with the plain path's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import child_command, parse_args_or_run_child, run_child

COLUMNS = ["variant", "tokens", "vocab", "chunk_tokens", "seconds", "tokens_per_sec", "loss_peak_MB",
           "peak_reduction", "time_vs_plain", "max_rel_diff"]  # fmt: skip


def _memory_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident since start or the last reset) of this process."""
    with open("/proc/self/status", encoding="utf-8") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field + ":"))


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS, so setup's peaks do not count."""
    with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
        f.write("5")


def child(spec: dict) -> dict:
    import numpy as np
    import paddle

    from benchmarks.common import median_seconds
    from erniekit.ops.cross_entropy import chunk_tokens, chunked_nll, plain_nll

    n, h, v = spec["tokens"], spec["hidden"], spec["vocab"]
    paddle.seed(0)
    hidden = paddle.randn([n, h])
    weight = paddle.randn([v, h]) * 0.02
    labels = paddle.randint(0, v, [n])
    labels[: n // 8] = -100  # prompt tokens carry no loss
    weight.stop_gradient = False
    fn = chunked_nll if spec["variant"] == "chunked" else plain_nll

    def step():
        h_in = hidden.detach()
        h_in.stop_gradient = False
        weight.clear_gradient(set_to_zero=False)
        loss = fn(h_in, weight, labels, True).sum() / float((labels != -100).sum())
        loss.backward()
        return loss, h_in.grad, weight.grad

    _reset_peak()
    before = _memory_mb("VmRSS")
    loss, d_hidden, d_weight = step()
    peak = _memory_mb("VmHWM")
    seconds = median_seconds(step, repeats=spec["repeats"], warmup=0)
    probe = paddle.to_tensor(np.random.default_rng(1).standard_normal([h, 1]).astype("float32"))
    out = Path(spec["tmp"]) / spec["variant"]
    np.savez(
        out, loss=loss.numpy(), d_hidden=d_hidden.numpy(), d_weight=paddle.matmul(d_weight, probe).numpy()
    )
    return {
        "variant": spec["variant"],
        "tokens": n,
        "vocab": v,
        "chunk_tokens": chunk_tokens(v) if spec["variant"] == "chunked" else n,
        "seconds": seconds,
        "tokens_per_sec": n / seconds,
        "loss_peak_MB": peak - before,
        "full_logits_MB": n * v * 4 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=103424)
    parser.add_argument("--repeats", type=int, default=2)
    args = parse_args_or_run_child(parser, child)
    if args is None:
        return
    import numpy as np

    from benchmarks.common import report

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("plain", "chunked"):
            spec = {**vars(args), "variant": variant, "tmp": tmp}
            spec.pop("child")
            rows.append(run_child(child_command("benchmarks.lm_head", spec)))
        plain, chunked = (np.load(Path(tmp) / f"{v}.npz") for v in ("plain", "chunked"))
        for row, got in zip(rows, (plain, chunked)):
            row["max_rel_diff"] = max(
                float(np.abs(got[k] - plain[k]).max() / (np.abs(plain[k]).max() + 1e-12)) for k in plain.files
            )
    for row in rows:
        row["peak_reduction"] = rows[0]["loss_peak_MB"] / row["loss_peak_MB"]
        row["time_vs_plain"] = row["seconds"] / rows[0]["seconds"]
    report(
        "lm_head",
        rows,
        COLUMNS,
        notes=(
            f"hidden {args.hidden}, tied [V, H] weight with gradient, fp32, forward + backward of the mean "
            f"NLL; loss_peak_MB = peak RSS during the loss minus RSS before it (full [N, V] fp32 logits "
            f"would be {rows[0]['full_logits_MB']:,.0f} MB); max_rel_diff of loss, hidden gradient and "
            f"projected weight gradient vs plain."
        ),
    )


if __name__ == "__main__":
    main()
