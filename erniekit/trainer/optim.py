"""AdamW, the learning-rate schedule and gradient clipping.

The schedule is a pure function of the step (nothing to save or restore); the trainer sets the
optimizer's learning rate from it before every update. ``optim.moment_dtype=bfloat16`` stores AdamW's
two moments in bfloat16 (:class:`LowPrecisionMomentAdamW`).
"""

from __future__ import annotations

import math

import paddle

from erniekit import ops
from erniekit.config.schema import OptimConfig


class LRSchedule:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine/linear decay to ``min_lr_ratio * lr``."""

    def __init__(self, cfg: OptimConfig, total_steps: int):
        self.cfg, self.total = cfg, max(total_steps, 1)

    def __call__(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        c = self.cfg
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        if c.scheduler == "constant":
            return c.lr
        progress = min(1.0, (step - c.warmup_steps) / max(1, self.total - c.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if c.scheduler == "cosine" else 1 - progress
        floor = c.lr * c.min_lr_ratio
        return floor + (c.lr - floor) * shape


class LowPrecisionMomentAdamW(paddle.optimizer.AdamW):
    """AdamW whose first and second moments are stored in bfloat16: 4 bytes of state per fp32
    parameter instead of 8 (ERNIEKit's ``use_lowprecision_moment``).

    Paddle's own ``use_lowprecision_moment`` keeps low-precision moments only for bf16/fp16 parameters;
    an fp32 parameter always gets fp32 moments, and its fused ``adamw_`` kernel refuses bf16 ones
    ("does not match the type of data (bfloat16)"). So each update widens the parameter's two moments
    to fp32, runs Paddle's own AdamW update on those copies (decay selection, per-parameter learning
    rates, ``set_lr`` and the clip in ``step()`` all stay Paddle's), and rounds the results back to
    bfloat16, round-to-nearest-even (Paddle's cast; no stochastic rounding). The fp32 copies live
    for one parameter's update. The beta powers stay fp32 ([1] each).

    Checkpoints widen bf16 state to fp32, which is exact; ``set_state_dict`` rounds the moments back,
    also exact for values that were bf16, so a resumed run continues with the same bits.
    """

    def __init__(self, *args, moment_dtype: str = "bfloat16", **kwargs):
        super().__init__(*args, use_lowprecision_moment=True, **kwargs)
        self._moment_dtype = getattr(paddle, moment_dtype)
        self._moment_slots = (self._moment1_acc_str, self._moment2_acc_str)

    def _low_precision(self, p) -> bool:
        return p.dtype == paddle.float32 and not self._amsgrad

    def _add_moments_pows(self, p):
        if not self._low_precision(p):  # bf16/fp16 parameters: Paddle already keeps their moments low
            return super()._add_moments_pows(p)
        for slot in self._moment_slots:
            self._add_accumulator(slot, p, dtype=self._moment_dtype)
        for slot, beta in ((self._beta1_pow_acc_str, self._beta1), (self._beta2_pow_acc_str, self._beta2)):
            self._add_accumulator(slot, p, dtype=p.dtype, fill_value=beta, shape=[1], device="cpu")
        return None

    def _append_optimize_op(self, block, param_and_grad):
        pair = param_and_grad["params"] if isinstance(param_and_grad, dict) else param_and_grad
        param = pair[0]
        if not self._low_precision(param):
            return super()._append_optimize_op(block, param_and_grad)
        keys = [f"{self._name}_{s}" if self._name is not None else s for s in self._moment_slots]
        stored = [self._accumulators[k][param.name] for k in keys]
        wide = [m.astype("float32") for m in stored]
        try:  # the parent's update reads (and writes) the accumulators by name: lend it the fp32 copies
            for k, w in zip(keys, wide):
                self._accumulators[k][param.name] = w
            super()._append_optimize_op(block, param_and_grad)
        finally:
            for k, m in zip(keys, stored):
                self._accumulators[k][param.name] = m
        for m, w in zip(stored, wide):
            m.copy_(w.astype(m.dtype), False)
        return None

    def set_state_dict(self, state_dict: dict) -> None:
        """Moments may arrive widened (checkpoints hold fp32 arrays): store them in the moment dtype."""
        marks = tuple(f"_{s}_" for s in self._moment_slots)
        state = {
            k: v.astype(self._moment_dtype)
            if isinstance(v, paddle.Tensor) and v.dtype == paddle.float32 and any(m in k for m in marks)
            else v
            for k, v in state_dict.items()
        }
        super().set_state_dict(state)


def build_optimizer(params: list, cfg: OptimConfig, grad_clip=None) -> paddle.optimizer.AdamW:
    """AdamW over the trainable ``params``; weight decay on matrices only (not norms or biases)."""
    decayed = {p.name for p in params if p.ndim >= 2}
    kwargs = dict(
        learning_rate=cfg.lr,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        epsilon=cfg.eps,
        parameters=params,
        weight_decay=cfg.weight_decay,
        apply_decay_param_fun=lambda name: name in decayed,
        grad_clip=grad_clip,
    )
    if cfg.moment_dtype == "float32":
        return paddle.optimizer.AdamW(**kwargs)
    return LowPrecisionMomentAdamW(**kwargs, moment_dtype=cfg.moment_dtype)


@paddle.no_grad()
def grads_finite(params: list) -> bool:
    """False when any gradient holds a NaN or an infinity (this rank only)."""
    grads = [p.grad for p in params if p.grad is not None]
    return bool(paddle.isfinite(ops.sum_of_squares(grads)).all()) if grads else True
