"""An op is a (reference, fused) pair plus the small random cases its fused kernel is probed on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import paddle


@dataclass(frozen=True)
class Op:
    name: str
    reference: Callable
    fused: Callable | None
    # dtype -> list of (args, kwargs) cases; tensors that need gradients have stop_gradient=False
    cases: Callable[[str], list[tuple[tuple, dict]]]
    half_only: bool = False  # the fused kernel only takes bf16/fp16 (flash attention)
    # the fused kernel exists in CPU builds too; others are not even probed there: some crash the
    # process (fused_rms_norm on CPU dies of an illegal instruction) instead of raising
    on_cpu: bool = False
    # erniekit's own fused CPU kernel (ops/cpu.py), float32 and eager; falls back to the reference itself
    cpu: Callable | None = None


def _tensors(out) -> list[paddle.Tensor]:
    items = out if isinstance(out, (tuple, list)) else [out]
    return [t for t in items if isinstance(t, paddle.Tensor)]


def _run(fn: Callable, args: tuple, kwargs: dict, seed: int) -> list[np.ndarray]:
    """Outputs, then the gradients of every differentiable input under a fixed random upstream gradient."""
    fresh = [a.detach().clone() if isinstance(a, paddle.Tensor) else a for a in args]
    for a, orig in zip(fresh, args):
        if isinstance(a, paddle.Tensor):
            a.stop_gradient = orig.stop_gradient
    outs = _tensors(fn(*fresh, **kwargs))
    rng = np.random.default_rng(seed)
    total = None
    for o in outs:
        if o.stop_gradient:
            continue
        up = paddle.to_tensor(rng.standard_normal(o.shape).astype("float32")).astype(o.dtype)
        term = (o * up).astype("float32").sum()
        total = term if total is None else total + term
    if total is not None:
        total.backward()
    grads = [a.grad for a in fresh if isinstance(a, paddle.Tensor) and not a.stop_gradient]
    return [t.astype("float32").numpy() for t in outs + [g for g in grads if g is not None]]


def same_results(op: Op, half: bool, candidate: Callable | None = None) -> str | None:
    """None when ``candidate`` (default: the fused kernel) matches the reference on every probe case, else
    the reason it does not."""
    candidate = candidate or op.fused
    half_only = op.half_only and candidate is op.fused
    dtype = "bfloat16" if half and paddle.amp.is_bfloat16_supported() else ("float16" if half else "float32")
    if half_only and dtype == "float32":
        return "its fused kernel needs bf16/fp16, which this device does not compute"
    if not half_only:
        dtype = "float32"
    tol = 1e-4 if dtype == "float32" else 3e-2
    try:
        for n, (args, kwargs) in enumerate(op.cases(dtype)):
            want = _run(op.reference, args, kwargs, seed=n)
            got = _run(candidate, args, kwargs, seed=n)
            if len(want) != len(got):
                return f"case {n}: {len(got)} outputs/gradients, the reference has {len(want)}"
            for i, (a, b) in enumerate(zip(got, want)):
                if a.shape != b.shape:
                    return f"case {n}, result {i}: shape {list(a.shape)} vs {list(b.shape)}"
                err = float(np.abs(a - b).max() / (np.abs(b).max() + 1e-6)) if a.size else 0.0
                if not err <= tol:
                    return f"case {n}, result {i}: differs from the reference by {err:.1e} (relative)"
    except Exception as e:  # a missing kernel raises NotFound/RuntimeError/...: report its first line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"{type(e).__name__}: {first[:160]}"
    return None


def rand(shape: list[int], dtype: str = "float32", grad: bool = True, seed: int = 0) -> paddle.Tensor:
    """A random probe input (normal, fixed seed)."""
    rng = np.random.default_rng(seed)
    t = paddle.to_tensor(rng.standard_normal(shape).astype("float32")).astype(dtype)
    t.stop_gradient = not grad
    return t
