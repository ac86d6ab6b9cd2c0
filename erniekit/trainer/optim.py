"""AdamW, the learning-rate schedule and gradient clipping.

The schedule is a pure function of the step (nothing to save or restore); the trainer sets the
optimizer's learning rate from it before every update.
"""

from __future__ import annotations

import math

import paddle

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


def build_optimizer(params: list, cfg: OptimConfig, grad_clip=None) -> paddle.optimizer.AdamW:
    """AdamW over the trainable ``params``; weight decay on matrices only (not norms or biases)."""
    decayed = {p.name for p in params if p.ndim >= 2}
    return paddle.optimizer.AdamW(
        learning_rate=cfg.lr,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        epsilon=cfg.eps,
        parameters=params,
        weight_decay=cfg.weight_decay,
        apply_decay_param_fun=lambda name: name in decayed,
        grad_clip=grad_clip,
    )


@paddle.no_grad()
def grads_finite(params: list) -> bool:
    """False when any gradient holds a NaN or an infinity (this rank only)."""
    checks = [paddle.isfinite(p.grad).all() for p in params if p.grad is not None]
    return bool(paddle.stack(checks).all()) if checks else True
