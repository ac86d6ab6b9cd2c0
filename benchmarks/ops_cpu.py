"""Paddle CPU kernels that matter for LM training, timed side by side with the formulation we use.

    python -m benchmarks.ops_cpu

Each row: the naive call, the replacement, both timed in this process (median of repeats), the speedup,
and the maximum difference of the results.
"""

from __future__ import annotations


def main() -> None:
    from erniekit.runtime import setup_runtime

    setup_runtime()
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from benchmarks.common import median_seconds, report
    from erniekit.models.common.attention import attention_mask, sdpa

    rows = []

    def row(name, shape, naive, ours, repeats=3):
        a, b = naive(), ours()
        t_naive = median_seconds(lambda: naive().numpy(), repeats=repeats)
        t_ours = median_seconds(lambda: ours().numpy(), repeats=repeats)
        rows.append(
            {
                "op": name,
                "shape": shape,
                "naive_s": t_naive,
                "ours_s": t_ours,
                "speedup": t_naive / t_ours,
                "max_abs_diff": float(np.abs(a.numpy() - b.numpy()).max()),
            }
        )

    for n, v in ((64, 49152), (64, 103424)):
        x = paddle.randn([n, v])
        row(
            "log_softmax vs x - logsumexp(x)",
            f"[{n}, {v}]",
            lambda x=x: F.log_softmax(x, axis=-1),
            lambda x=x: x - paddle.logsumexp(x, axis=-1, keepdim=True),
            repeats=1,
        )
    b, s, h, kv, d = 2, 512, 8, 8, 64
    q, k, v = (paddle.randn([b, n_, s, d]) for n_ in (h, kv, kv))
    mask = attention_mask(s, s)
    row(
        "F.scaled_dot_product_attention vs ours (causal)",
        f"B{b} S{s} H{h} D{d}",
        lambda: F.scaled_dot_product_attention(
            q.transpose([0, 2, 1, 3]), k.transpose([0, 2, 1, 3]), v.transpose([0, 2, 1, 3]), is_causal=True
        ).reshape([b, s, h * d]),
        lambda: sdpa(q, k, v, mask),
    )
    report(
        "ops_cpu",
        rows,
        ["op", "shape", "naive_s", "ours_s", "speedup", "max_abs_diff"],
        notes="fp32, 2 threads; medians of repeats in one process.",
    )


if __name__ == "__main__":
    main()
