"""Compute kernels behind one switch: Paddle's fused GPU kernels, erniekit's CPU kernels, reference math.

    from erniekit import ops
    ops.configure("auto")                  # model.fused_ops; the trainer, chat and eval call it
    y = ops.rms_norm(x, weight, eps)       # layers call ops.<name>; the selected kernel runs

Every op has a reference implementation (plain Paddle ops, what the parity tests trust) and, where one
exists, a fused kernel: Paddle's (mostly GPU-only) and erniekit's own CPU kernel (:mod:`erniekit.ops.cpu`,
float32, compiled once per machine), since Paddle 3.3's CPU build lacks most fused kernels
(shared/notes/paddle-cpu-lab.md §6). ``model.fused_ops`` chooses:

* ``off``: the reference everywhere;
* ``auto`` (default): Paddle's fused kernels on CUDA devices, erniekit's CPU kernels on CPU;
* ``on``: as ``auto``, and Paddle's fused kernels also where its CPU build has them.

A kernel is admitted only after a probe: on small random inputs it runs forward and backward and must
match the reference (outputs and input gradients, tolerance by dtype). A kernel that is missing, fails
or disagrees is replaced by the reference with one log line saying why, never silently.

The chunked LM-head cross-entropy (:mod:`erniekit.ops.cross_entropy`) has no switch: it is exact and
always cheaper in memory, on every device (Paddle 3.3 has no fused linear + cross-entropy kernel).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import paddle

from erniekit.ops import (
    activation,
    attention,
    cpu,
    moe,
    norm,
    rope,
    segment_attention,
    square_sums,
    weight_only,
)
from erniekit.ops.attention import cpu_softmax, over_cache
from erniekit.ops.attention import softmax as softmax_reference
from erniekit.ops.registry import Op, same_results

log = logging.getLogger(__name__)

OPS: dict[str, Op] = {
    op.name: op
    for op in (
        norm.OP,
        rope.OP,
        activation.OP,
        attention.OP,
        moe.OP,
        segment_attention.OP,
        weight_only.OP,
        square_sums.OP,
    )
}
MODES = ("auto", "on", "off")
_state: dict = {"mode": "auto", "chosen": {}}


def configure(mode: str) -> None:
    """Select kernels for this process (``model.fused_ops``); probes run lazily, once per op."""
    if mode not in MODES:
        raise ValueError(f"fused_ops must be one of {', '.join(MODES)}, not {mode!r}")
    _state["mode"], _state["chosen"] = mode, {}


def resolve_all() -> str:
    """Select every op now (probing fused kernels where the mode asks) -> "name=fused|reference, ..."."""
    for name in OPS:
        kernel(name)
    return ", ".join(f"{name}={impl}" for name, impl in sorted(selected().items()))


def selected() -> dict[str, str]:
    """Which implementation each op resolved to so far: {"rms_norm": "fused" | "cpu" | "reference", ...}."""

    def label(op: Op, fn: Callable) -> str:
        return "fused" if fn is op.fused else "cpu" if fn is op.cpu else "reference"

    return {name: label(OPS[name], fn) for name, fn in _state["chosen"].items()}


@paddle.jit.not_to_static  # plain Python dispatch, also while tracing a static graph (export)
def kernel(name: str) -> Callable:
    fn = _state["chosen"].get(name)
    if fn is None:
        fn = _state["chosen"][name] = _choose(OPS[name], _state["mode"])
    return fn


def _choose(op: Op, mode: str) -> Callable:
    cuda = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if mode == "off":
        return op.reference
    if not cuda and op.cpu is not None:
        reason = cpu.unavailable() or same_results(op, half=False, candidate=op.cpu)
        if reason is None:
            log.info("%s uses erniekit's CPU kernel", op.name)
            return op.cpu
        log.info("%s: erniekit's CPU kernel is not used (%s)", op.name, reason)
    if mode == "auto" and not cuda:
        return op.reference
    if op.fused is None:
        reason = "Paddle has no fused kernel for it"
    elif not cuda and not op.on_cpu:
        reason = "its fused kernel is GPU-only"
    else:
        reason = same_results(op, half=cuda)
        if reason is None:
            log.info("fused %s on", op.name)
            return op.fused
    log.log(logging.WARNING if mode == "on" else logging.INFO, "%s uses the reference (%s)", op.name, reason)
    return op.reference


# --- the ops layers call ----------------------------------------------------------------------------------


def rms_norm(x: paddle.Tensor, weight: paddle.Tensor, eps: float) -> paddle.Tensor:
    return kernel("rms_norm")(x, weight, eps)


def rotary(q, k, cos, sin, interleaved: bool) -> tuple[paddle.Tensor, paddle.Tensor]:
    """q [B, S, N, D], k [B, S, K, D], cos/sin [B, S, 1, D/2] (float32) -> rotated q, k."""
    return kernel("rotary")(q, k, cos, sin, interleaved)


def swiglu(gate_up: paddle.Tensor) -> paddle.Tensor:
    """silu(gate) * up for gate_up = [gate | up] along the last axis."""
    return kernel("swiglu")(gate_up)


def attention(q, k, v, mask) -> paddle.Tensor:
    """q [B, S, N, D], k/v [B, T, K, D], an AttentionMask -> [B, S, N * D]."""
    return kernel("attention")(q, k, v, mask)


def cached_attention(q, keys, values, mask) -> paddle.Tensor:
    """q [B, S, N, D] against a KV cache's head-major keys/values [B, K, C, D] -> [B, S, N * D]."""
    softmax = cpu_softmax if kernel("attention") is OPS["attention"].cpu else softmax_reference
    return over_cache(q, keys, values, mask, softmax)


def segment_attention(q, k, v, lengths: list[int]) -> paddle.Tensor:
    """Bidirectional attention inside each segment (image): q/k/v [T, N, D], lengths sum to T -> [T, N*D]."""
    return kernel("segment_attention")(q, k, v, lengths)


def grouped_mlp(x_sorted, counts: list[int], up_gate, down) -> paddle.Tensor:
    """Expert SwiGLU MLPs on contiguous row segments: rows of expert e are counts[e] consecutive rows of
    x_sorted [R, H]; up_gate [E, H, 2I], down [E, I, H] -> [R, H]. Quantised stacks run the reference."""
    if not isinstance(up_gate, paddle.Tensor):
        return moe.reference(x_sorted, counts, up_gate, down)
    return kernel("grouped_mlp")(x_sorted, counts, up_gate, down)


def sum_of_squares(tensors: list[paddle.Tensor]) -> paddle.Tensor:
    """float64 [len(tensors)]: each tensor's sum of squares (finite exactly when the tensor is)."""
    return kernel("square_sums")(tensors)


def weight_only_kernel() -> bool:
    """Whether quantised linears run Paddle's weight-only GPU kernel (probed; see ops/weight_only.py)."""
    return kernel("weight_only_linear") is weight_only.fused
