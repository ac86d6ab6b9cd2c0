"""Where training numbers go: ``metrics.jsonl`` (one object per logged step), VisualDL, and the console.
``progress.json`` holds the last logged step and the run's total, for whatever watches the run (the web UI).

The console shows a tqdm bar on a terminal and plain log lines otherwise (or when asked). On resume,
lines of ``metrics.jsonl`` beyond the resumed step are dropped so the file reads as one run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("erniekit.train")

_BAR_KEYS = ("loss", "eval_loss", "rewards/accuracy", "reward_mean", "tokens_per_sec")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class MetricsLogger:
    def __init__(
        self,
        output_dir: Path,
        total_steps: int,
        start_step: int,
        visualdl: bool,
        progress: str,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.writer = self.bar = None
        if not enabled:
            return
        _truncate_after(self.path, start_step)
        self.progress, self.total_steps = output_dir / "progress.json", total_steps
        self._write_progress(start_step)
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if visualdl:
            try:
                from visualdl import LogWriter

                self.writer = LogWriter(logdir=str(output_dir / "vdl"))
            except Exception as e:  # a broken optional dependency must not stop training
                log.warning("VisualDL disabled: %s", e)
        use_bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        if use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self.plain = progress != "none" and not use_bar

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({k: v for k, v in record.items() if _finite(v)}) + "\n")
        self.file.flush()
        step = record["step"]
        self._write_progress(step)
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and _finite(value):
                    self.writer.add_scalar(
                        tag=f"train/{key}" if "/" not in key else key, value=value, step=step
                    )
        shown = {k: record[k] for k in _BAR_KEYS if k in record}
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix({k: _fmt(v) for k, v in shown.items()}, refresh=False)
        elif self.plain:
            extra = " ".join(f"{k}={_fmt(v)}" for k, v in record.items() if k not in ("step", "epoch"))
            log.info("step %d (epoch %.2f) %s", step, record.get("epoch", 0.0), extra)

    def _write_progress(self, step: int) -> None:
        tmp = self.progress.with_name(f".{self.progress.name}.tmp")
        tmp.write_text(json.dumps({"step": step, "total_steps": self.total_steps, "time": time.time()}))
        os.replace(tmp, self.progress)  # a reader never sees half a file

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.file.close()


def _finite(v) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


def _truncate_after(path: Path, step: int) -> None:
    """On resume: drop the records of steps after the checkpoint (they are trained again)."""
    if not path.is_file():
        return
    kept = [json.dumps(r) for r in read_metrics(path) if r.get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a torn last line (the process died mid-write) is left out."""
    lines = [line for line in Path(path).read_text().splitlines() if line]
    records = []
    for n, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if n < len(lines) - 1:
                raise ValueError(f"{path}:{n + 1}: not a JSON line") from None
    return records
