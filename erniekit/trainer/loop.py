"""The training loop, shared by every method. Read it top to bottom: ``Trainer.fit`` is the whole story.

A method (methods/*.py) supplies micro-batches and a loss; this loop does the rest: accumulation with
step-wide normalisation, clipping, the learning-rate schedule, NaN handling, logging, evaluation and
atomic checkpoints from which a stopped run resumes exactly (same losses from step n+1 on).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paddle

from erniekit import ops
from erniekit.config import Recipe, render_yaml
from erniekit.config.core import ConfigError
from erniekit.errors import ErniekitError, Interrupted
from erniekit.models.common.heads import head_tensors
from erniekit.models.common.moe import expert_usage, update_correction_bias
from erniekit.parallel.clip import GlobalNormClip
from erniekit.parallel.env import init_parallel
from erniekit.parallel.estimate import check_layout
from erniekit.parallel.plan import parallelize, sync_grads
from erniekit.trainer import checkpoint as ckpt
from erniekit.trainer.metrics import MetricsLogger
from erniekit.trainer.optim import LRSchedule, build_optimizer, grads_finite
from erniekit.trainer.restore import (
    load_model_arrays,
    model_from_recipe,
    recipe_args,
    saved_state_names,
    scale_learning_rates,
)

log = logging.getLogger("erniekit.train")


class TrainingStopped(ErniekitError):
    """Training stopped on purpose (non-finite loss with on_nan=stop); the last good state was saved."""


class StopAtStepEnd:
    """Signal handling for ``fit``. The first SIGINT (Ctrl-C) or SIGTERM (a scheduler's preemption, or
    paddle.distributed.launch passing on a Ctrl-C) lets the running step finish; then the loop saves and
    exits. Further SIGTERMs change nothing (the sender's own timeout decides when to kill); a second
    SIGINT quits at once, leaving the checkpoints already on disk as they are.

    Raising KeyboardInterrupt mid-step is not an option: the signal can land inside a PyLayer's backward,
    where Paddle turns it into an opaque C++ error, and ranks would stop at different points.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            if signum == signal.SIGINT:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
            return
        self.signum = signum
        how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        log.warning(
            "%s: stopping after this step and saving it; press Ctrl-C again to quit without saving", how
        )


@dataclass
class TrainState:
    step: int = 0  # optimizer steps completed
    tokens: int = 0  # input tokens trained on (this rank)
    nan_steps: int = 0  # steps whose update was skipped for a non-finite loss or gradient

    def state_dict(self) -> dict:
        return dict(vars(self))


def select_device(train_cfg) -> str:
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if train_cfg.device == "gpu" and not has_gpu:
        raise ConfigError("no CUDA GPU is available to this Paddle build", key="train.device")
    device = "gpu" if train_cfg.device == "gpu" or (train_cfg.device == "auto" and has_gpu) else "cpu"
    paddle.set_device(device)
    return device


def select_precision(train_cfg, device: str) -> str:
    if device == "cpu":
        if train_cfg.precision in ("bf16", "fp16"):
            raise ConfigError(
                "Paddle's CPU kernels compute in fp32 only (bf16/fp16 would silently do nothing); "
                "use auto or fp32 on CPU",
                key="train.precision",
            )
        return "fp32"
    if train_cfg.precision == "auto":
        return "bf16" if paddle.amp.is_bfloat16_supported() else "fp16"
    return train_cfg.precision


def probe_output_dir(path: Path) -> None:
    """Fail before training, not at the first save, when results cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"  # one per process: ranks probe at the same time
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as e:
        raise ErniekitError(f"{path}: output directory is not writable ({e.strerror})") from None


def build_method(recipe: Recipe, tokenizer, model, rank: int, world: int):
    """The method module named by method.name (imported only when used)."""
    import importlib

    classes = {
        "sft": "erniekit.methods.sft:SFT",
        "pt": "erniekit.methods.pt:PT",
        "dpo": "erniekit.methods.dpo:DPO",
        "grpo": "erniekit.methods.grpo:GRPO",
        "ppo": "erniekit.methods.ppo:PPO",
        "rm": "erniekit.methods.rm:RM",
        "kto": "erniekit.methods.kto:KTO",
    }
    module, _, cls = classes[recipe.method.name].partition(":")
    return getattr(importlib.import_module(module), cls)(recipe, tokenizer, model, rank, world)


class Trainer:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        t = recipe.train
        self.output_dir = Path(t.output_dir)
        probe_output_dir(self.output_dir)
        self.device = select_device(t)
        self.precision = select_precision(t, self.device)
        if not recipe.data.train:
            raise ConfigError("training needs at least one file", key="data.train")
        for problem in recipe.unsupported():
            raise problem
        check_layout(recipe_args(recipe), recipe.parallel)  # before minutes of loading weights
        self.dist = init_parallel(recipe.parallel, t.grad_accum, t.micro_batch_size)
        paddle.seed(t.seed)  # the same initial weights on every rank
        self.tokenizer, model = model_from_recipe(recipe)
        self.model, self.layout, self.pipeline = parallelize(model, self.dist, recipe)
        self.method = build_method(
            recipe, self.tokenizer, self.model, self.dist.data_rank, self.dist.data_world
        )
        self.layout.tensors.update(head_tensors(self.model))  # a method's heads (PPO's value, RM's score)
        self.named_params = {
            n: p
            for n, p in self.layout.tensors.items()
            if isinstance(p, paddle.base.framework.EagerParamBase) and not p.stop_gradient
        }
        scale_learning_rates(self.named_params, recipe.optim)
        self.params = list(self.named_params.values())
        self.clip = GlobalNormClip(recipe.optim.grad_clip, self.dist)
        self.optimizer = build_optimizer(self.params, recipe.optim, self.clip)
        if self.dist.world > 1:
            from paddle.distributed import fleet

            self.optimizer = fleet.distributed_optimizer(self.optimizer)
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0**15) if self.precision == "fp16" else None
        steps = t.max_steps if t.max_steps > 0 else t.epochs * self.method.steps_per_epoch(t.grad_accum)
        self.total_steps = steps
        self.schedule = LRSchedule(recipe.optim, steps)
        self.state = TrainState()
        if self.dist.is_main:
            removed = ckpt.remove_partials(self.output_dir)
            if removed:
                log.warning(
                    "removed incomplete checkpoint(s) from an interrupted save: %s", ", ".join(removed)
                )
        self.dist.barrier()
        resume_from = ckpt.resolve_resume(t.resume, self.output_dir)
        if resume_from is not None:
            self.load(resume_from)
        self.config_text = render_yaml(recipe)
        if self.dist.is_main:
            (self.output_dir / "config.yaml").write_text(self.config_text)
        self.logger = MetricsLogger(
            self.output_dir,
            steps,
            self.state.step,
            recipe.logging.visualdl,
            recipe.logging.progress,
            enabled=self.dist.is_main,
        )

    # -------------------------------------------------------------------------------------------
    def fit(self) -> TrainState:
        t, c = self.recipe.train, self.recipe.checkpoint
        log.info(
            "training %d steps on %s (%s), %d micro-batches x %d rows of %d tokens per step%s",
            self.total_steps,
            self.device,
            self.precision,
            t.grad_accum,
            t.micro_batch_size,
            self.recipe.data.max_seq_len,
            f" on each of {self.dist.data_world} data ranks" if self.dist.data_world > 1 else "",
        )
        log.info("kernels (model.fused_ops=%s): %s", self.recipe.model.fused_ops, ops.resolve_all())
        self.model.train()
        if hasattr(self.method, "on_train_start"):
            self.method.on_train_start(self)
        if t.eval_on_start and self.state.step == 0:
            self.logger.log({"step": 0, "epoch": 0.0, **self.evaluate()})
        ctrl_c = StopAtStepEnd()
        try:
            while self.state.step < self.total_steps:
                data_state = self.method.state_dict()  # where this step's data starts (for on_nan=stop)
                try:
                    record = self.train_step()
                except TrainingStopped:
                    self.method.set_state_dict(data_state)  # the unfinished step never happened
                    self.optimizer.clear_grad()
                    raise
                step = self.state.step
                evaluated = t.eval_every and step % t.eval_every == 0 and step < self.total_steps
                if evaluated:
                    record.update(self.evaluate())
                stopping = self.dist.any_rank(ctrl_c.requested)  # every rank stops after the same step
                if evaluated or step % self.recipe.logging.every == 0 or step == self.total_steps or stopping:
                    self.logger.log(record)
                if c.every and step % c.every == 0:
                    self.save()
                if stopping:  # (a rank without a signal of its own was told by another)
                    raise Interrupted(ctrl_c.signum or signal.SIGTERM)
            final = self.evaluate()
            if final:
                self.logger.log({"step": self.state.step, "epoch": self.method.epoch, **final})
        except Interrupted:
            log.warning("interrupted at step %d", self.state.step)
            if c.final and not self._saved(self.state.step):
                self.save()
            raise
        except TrainingStopped:
            self.save()
            raise
        else:
            if c.final and not self._saved(self.state.step):
                self.save()
        finally:
            ctrl_c.restore()
            self.logger.close()
        return self.state

    def _saved(self, step: int) -> bool:
        return (self.output_dir / f"checkpoint-{step}").is_dir()

    def train_step(self) -> dict:
        t = self.recipe.train
        # dropout seeds: a function of the step and the data rank (equal across tensor-parallel ranks)
        paddle.seed(t.seed + 1_000_003 * (self.state.step + 1) + 7919 * self.dist.data_rank)
        start = time.perf_counter()
        batches = self.method.next_micro_batches(t.grad_accum)
        # step-wide totals (e.g. target tokens) over all data ranks; data-parallel averaging divides by W
        totals = self.dist.sum_over_data(self.method.normalizer(batches))
        norm = {k: v / self.dist.data_world for k, v in totals.items()}
        loss_sum, extra = self.forward_backward(batches, norm)
        lr = self.schedule(self.state.step)
        if self.dist.any_rank(not (math.isfinite(loss_sum) and grads_finite(self.params))):
            self.handle_non_finite(loss_sum)
        else:
            sync_grads(self.params, self.dist)
            self.optimizer.set_lr(lr)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()  # clipping runs inside, after fleet synchronised gradients
            if self.recipe.model.moe_bias_update_rate:  # aux-loss-free balancing: global expert usage
                update_correction_bias(
                    self.model, self.recipe.model.moe_bias_update_rate, self.dist.sum_tensor
                )
        self.optimizer.clear_grad()
        seconds = time.perf_counter() - start
        tokens = sum(self.method.input_tokens(b) for b in batches)
        summed = self.dist.sum_over_data({"loss": loss_sum, "tokens": float(tokens), **extra})
        w, step_tokens = self.dist.data_world, int(summed.pop("tokens"))
        self.state.step += 1
        self.state.tokens += step_tokens
        record = {
            "step": self.state.step,
            "epoch": self.method.epoch,
            "loss": summed.pop("loss") / w,
            "lr": lr,
            "grad_norm": self.clip.last_norm if self.clip.last_norm is not None else float("nan"),
            "tokens": self.state.tokens,
            "tokens_per_sec": step_tokens / seconds,
            "nan_steps": self.state.nan_steps,
            **{k: v / w for k, v in summed.items()},
        }
        if hasattr(self.method, "step_metrics"):  # RL: rollout numbers, and training speed without sampling
            rollout = self.method.step_metrics()
            record.update(rollout)
            record["train_tokens_per_sec"] = step_tokens / (seconds - rollout.get("rollout_seconds", 0.0))
        return record

    def forward_backward(self, batches: list[dict], norm: dict[str, float]) -> tuple[float, dict[str, float]]:
        """Run the step's micro-batches (all stages of a pipeline at once when pp > 1)."""
        if self.pipeline is not None:
            return self.pipeline.forward_backward(batches, norm, self.optimizer)
        loss_sum, extra = 0.0, {}
        for batch in batches:
            with self.autocast():
                loss, stats = self.method.loss(self.model, batch, norm)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += float(loss)
            for k, v in stats.items():
                extra[k] = extra.get(k, 0.0) + v
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        return loss_sum, extra

    def handle_non_finite(self, loss: float) -> None:
        self.state.nan_steps += 1
        for usage in expert_usage(self.model):  # the bad step's routing does not steer the balance
            usage.zero_()
        what = f"non-finite loss {loss} or gradient at step {self.state.step + 1}"
        if self.recipe.train.on_nan == "skip":
            log.warning("%s: update skipped (%d so far)", what, self.state.nan_steps)
            return
        self.optimizer.clear_grad()
        raise TrainingStopped(
            f"{what}; stopped (train.on_nan=stop) after saving the last good state "
            f"as checkpoint-{self.state.step}"
        )

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return paddle.amp.auto_cast(level="O1", dtype="bfloat16" if self.precision == "bf16" else "float16")

    def evaluate(self) -> dict:
        metrics = self.method.evaluate(self.model, self.recipe.train.eval_batches)
        return {f"eval_{k}" if "/" not in k else f"eval/{k}": v for k, v in metrics.items()}

    # --- checkpoints: always the single-device model, whatever the layout -------------------------------
    def save(self) -> Path:
        model_state = self.layout.gather(self.layout.local_arrays(saved_state_names(self.layout.tensors)))
        optim_state = self.layout.gather_optimizer(ckpt.optimizer_arrays(self.optimizer, self.named_params))
        path = self.output_dir / f"checkpoint-{self.state.step}"
        if self.dist.is_main:
            state = {
                "step": self.state.step,
                "trainer": self.state.state_dict(),
                "data": self.method.state_dict(),
                "seed": self.recipe.train.seed,
                "model_args": self.model_args().to_dict(),
            }
            path = ckpt.save_checkpoint(
                self.output_dir,
                self.state.step,
                model_state,
                optim_state,
                state,
                self.config_text,
                self.recipe.checkpoint.keep,
            )
            log.info("saved %s", path)
        self.dist.barrier()
        return path

    def load(self, path: Path) -> None:
        arrays, optim_arrays, state = ckpt.read_checkpoint(path)
        load_model_arrays(
            self.layout, self.layout.scatter(arrays), str(path), state.get("model_args"), self.model_args()
        )
        ckpt.load_optimizer_arrays(
            self.optimizer, self.named_params, self.layout.scatter(optim_arrays), str(path)
        )
        self.method.set_state_dict(state["data"])
        self.state = TrainState(**state["trainer"])
        log.info("resumed from %s at step %d", path, self.state.step)

    def model_args(self):
        return self.layout.model_args


def train(recipe: Recipe) -> TrainState:
    return Trainer(recipe).fit()
