"""A run's checkpoints by name, without Paddle: ``checkpoint-N`` directories, complete once the trainer
state is in them (it is written last, see checkpoint.py). The trainer and whatever watches a run (the
web UI) read them through here."""

from __future__ import annotations

import re
from pathlib import Path

STATE_NAME = "trainer_state.json"
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """N for a ``checkpoint-N`` directory name, else None."""
    m = CHECKPOINT_DIR.match(path.name)
    return int(m.group(1)) if m else None


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(step, p) for p in output_dir.iterdir() if (step := checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found) if (p / STATE_NAME).is_file()]
