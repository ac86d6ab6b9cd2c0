"""MoE expert layer forward+backward tokens/s: our sorted dropless layout vs a naive per-expert loop vs the
capacity-padded layout, side by side in one process.

    python -m benchmarks.moe [--tokens 1024] [--experts 64] [--top-k 6] [--hidden 512] [--inter 320]

Shapes: ERNIE-4.5-21B-A3B's routing (64 experts, top-6) with the hidden size scaled to this CPU
(2560 -> 512, expert intermediate 1536 -> 320, the same ratio). The router, its top-k and the weights
are computed once and shared, so the rows time only dispatch, expert MLPs and combine.

* sorted: erniekit's ``Experts`` (argsort by expert, one contiguous segment per expert, scatter-add back);
* naive loop: for each expert, find its tokens with a mask, gather, MLP, scatter-add (plain autograd,
  one weight tensor per expert as a list of Linear layers would have);
* capacity-padded: every expert gets a [capacity, H] buffer (capacity = the token count, as ERNIEKit's
  21B configs set it, so nothing is dropped), tokens are scattered into it, one batched matmul runs all
  experts on all their rows, padding included, and results are gathered back.
"""

from __future__ import annotations

import argparse

from erniekit.runtime import setup_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--inter", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup_runtime()

    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from benchmarks.common import median_seconds, report
    from erniekit.models.common.moe import Experts, Router

    t, e, k, h, i = args.tokens, args.experts, args.top_k, args.hidden, args.inter
    paddle.seed(0)
    experts = Experts(e, h, i, std=0.02)
    router = Router(h, e, k, 1e-12, std=0.02)
    x = paddle.randn([t, h])
    with paddle.no_grad():
        _, chosen, weights = router(x)

    def swiglu(gate_up):
        gate, up = paddle.chunk(gate_up, 2, axis=-1)
        return F.silu(gate) * up

    def sorted_layout(x_in):
        return experts(x_in, chosen, weights)

    def naive_loop(x_in):
        flat, w_flat = chosen.reshape([-1]), weights.reshape([-1])
        # one weight tensor per expert, as a list of per-expert Linear layers holds them
        up_gate, down = paddle.split(experts.up_gate_proj, e), paddle.split(experts.down_proj, e)
        y = paddle.zeros_like(x_in)
        for j in range(e):
            slots = paddle.nonzero(flat == j).reshape([-1])
            if slots.shape[0] == 0:
                continue
            tokens = slots // k
            hidden = swiglu(paddle.matmul(paddle.gather(x_in, tokens), up_gate[j].squeeze(0)))
            out = paddle.matmul(hidden, down[j].squeeze(0))
            y = paddle.index_add(y, tokens, 0, out * paddle.gather(w_flat, slots).unsqueeze(-1))
        return y

    capacity = t
    flat = chosen.reshape([-1])
    order = paddle.argsort(flat, stable=True)
    expert_sorted = paddle.gather(flat, order)
    counts = paddle.bincount(flat, minlength=e)
    starts = paddle.cumsum(counts) - counts
    position = paddle.arange(t * k) - paddle.gather(starts, expert_sorted)  # place in its expert's queue
    slot_in_buffer = expert_sorted * capacity + position  # all < capacity: nothing dropped
    token_of_slot = order // k
    w_sorted = paddle.gather(weights.reshape([-1]), order).unsqueeze(-1)

    def capacity_padded(x_in):
        buffer = paddle.zeros([e * capacity, h], x_in.dtype)
        buffer = paddle.scatter(buffer, slot_in_buffer, paddle.gather(x_in, token_of_slot), overwrite=True)
        hidden = swiglu(paddle.bmm(buffer.reshape([e, capacity, h]), experts.up_gate_proj))
        out = paddle.bmm(hidden, experts.down_proj).reshape([e * capacity, h])
        y_slots = paddle.gather(out, slot_in_buffer) * w_sorted
        return paddle.index_add(paddle.zeros_like(x_in), token_of_slot, 0, y_slots)

    upstream = paddle.randn([t, h])
    layouts = {
        "sorted (erniekit)": sorted_layout,
        "naive loop": naive_loop,
        "capacity-padded": capacity_padded,
    }
    results, reference = {}, None
    for name, fn in layouts.items():

        def step(fn=fn):
            x_in = x.detach().clone()
            x_in.stop_gradient = False
            y = fn(x_in)
            grads = paddle.grad((y * upstream).sum(), [x_in, experts.up_gate_proj, experts.down_proj])
            return [y, *grads]

        outs = [o.numpy() for o in step()]
        if reference is None:
            reference = outs
        diff = max(float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12)) for a, b in zip(outs, reference))
        seconds = median_seconds(step, repeats=args.repeats)  # CPU kernels run synchronously
        results[name] = {
            "layout": name,
            "seconds": seconds,
            "tokens_per_sec": t / seconds,
            "max_rel_diff": diff,
        }
    base = results["sorted (erniekit)"]["seconds"]
    for row in results.values():
        row["sorted_speedup"] = row["seconds"] / base
    report(
        "moe",
        list(results.values()),
        ["layout", "seconds", "tokens_per_sec", "sorted_speedup", "max_rel_diff"],
        notes=(
            f"{t} tokens, {e} experts, top-{k}, hidden {h}, expert intermediate {i}; forward + backward "
            f"(input and expert-weight gradients), fp32; capacity-padded runs {e} x {capacity} rows, "
            f"sorted {t * k}. sorted_speedup = that layout's time / sorted's; max_rel_diff vs sorted."
        ),
    )


if __name__ == "__main__":
    main()
