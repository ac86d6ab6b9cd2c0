"""Forward (inference, no cache) tokens/s of ERNIE 4.5 shapes with random weights on this machine.

    python -m benchmarks.forward [--flavors ernie4_5/0.3b] [--seq 512] [--batch 1]

FLOPs per token counted as 2 * (non-embedding parameters) + 4 * layers * seq * heads * head_dim / 2
(causal attention scores and weighted sum); achieved GFLOP/s is that times tokens/s.
"""

from __future__ import annotations

import argparse

from erniekit.runtime import setup_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavors", nargs="+", default=["ernie4_5/0.3b"])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup_runtime()

    import numpy as np
    import paddle

    from benchmarks.common import median_seconds, peak_rss_mb, report
    from erniekit.models import build_model

    rows = []
    for flavor in args.flavors:
        model = build_model(flavor, seed=0)
        model.eval()
        a = model.args
        ids = paddle.to_tensor(np.random.RandomState(0).randint(0, a.vocab_size, (args.batch, args.seq)))
        n_params = sum(int(np.prod(p.shape)) for p in model.parameters())
        dense = n_params - a.vocab_size * a.hidden_size * (1 if a.tie_word_embeddings else 2)
        if a.num_experts:
            raise SystemExit("forward.py counts dense FLOPs; use benchmarks/moe.py for MoE shapes")
        head = 2 * a.vocab_size * a.hidden_size
        attn = 2 * a.num_layers * args.seq * a.num_heads * a.head_dim  # 4 * L * S/2 * N * D
        flops_per_token = 2 * dense + head + attn

        def step(model=model, ids=ids):
            with paddle.no_grad():
                model(ids).logits.numpy()

        seconds = median_seconds(step, repeats=args.repeats)
        tokens = args.batch * args.seq
        rows.append(
            {
                "model": flavor,
                "params_M": n_params / 1e6,
                "seq": args.seq,
                "batch": args.batch,
                "seconds": seconds,
                "tokens_per_sec": tokens / seconds,
                "gflops_per_sec": flops_per_token * tokens / seconds / 1e9,
                "peak_rss_MB": peak_rss_mb(),
            }
        )
        del model
    report(
        "forward",
        rows,
        ["model", "params_M", "seq", "batch", "seconds", "tokens_per_sec", "gflops_per_sec", "peak_rss_MB"],
        notes="fp32, random weights, full-sequence forward incl. LM head.",
    )


if __name__ == "__main__":
    main()
