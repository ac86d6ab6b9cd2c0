"""Runs as the page shows them, read from the files training writes (so a run started from the CLI shows
too): ``metrics.jsonl``, ``progress.json``, ``config.yaml`` and the ``checkpoint-N`` directories, plus
the exports and model directories under a run that chat, eval and export can use."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from erniekit.trainer.rundir import CHECKPOINT_DIR, checkpoint_step

SKIP = {".git", ".venv", "node_modules", "__pycache__", "site-packages", ".erniekit"}


def find_runs(root: Path, depth: int = 4) -> list[Path]:
    """Directories under ``root`` that training wrote (a metrics.jsonl or a checkpoint in them)."""
    runs: list[Path] = []

    def visit(d: Path, left: int) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        names = {e.name for e in entries}
        if "metrics.jsonl" in names or any(CHECKPOINT_DIR.match(n) for n in names):
            runs.append(d)
            return
        for e in entries:
            if (
                left > 0
                and e.is_dir(follow_symlinks=False)
                and e.name not in SKIP
                and not e.name.startswith(".")
            ):
                visit(Path(e.path), left - 1)

    visit(root, depth)
    return sorted(runs, key=updated, reverse=True)


def updated(run: Path) -> float:
    """When training last wrote to the run (0 before it has made the directory)."""
    times = [0.0]
    for p in (run, run / "metrics.jsonl", run / "progress.json"):
        with contextlib.suppress(OSError):
            times.append(p.stat().st_mtime)
    return max(times)


def model_dirs(run: Path) -> list[Path]:
    """Exports and other model directories inside a run (anything with a config.json or a GGUF)."""
    out = []
    for p in sorted(run.iterdir()) if run.is_dir() else []:
        if (
            p.is_dir()
            and checkpoint_step(p) is None
            and ((p / "config.json").is_file() or any(p.glob("*.gguf")))
        ):
            out.append(p)
    return out


def progress(run: Path) -> dict | None:
    try:
        return json.loads((run / "progress.json").read_text())
    except (OSError, ValueError):
        return None


def metrics_since(run: Path, offset: int) -> dict:
    """The records metrics.jsonl holds after byte ``offset``, and the offset to ask from next: a page
    polling a long run reads only what is new. ``reset`` when the file is shorter than ``offset`` (a
    resumed run drops the steps after its checkpoint), and then all of it. A line still being written
    waits for the next call."""
    try:
        with open(run / "metrics.jsonl", "rb") as f:
            reset = offset > f.seek(0, os.SEEK_END)
            start = f.seek(0 if reset else offset)
            data = f.read()
    except OSError:
        return {"records": [], "next": 0, "reset": offset > 0}
    whole = data[: data.rfind(b"\n") + 1]
    records = []
    for line in whole.splitlines():
        with contextlib.suppress(ValueError):  # (the trainer writes whole JSON lines; skip anything else)
            records.append(json.loads(line))
    return {"records": records, "next": start + len(whole), "reset": reset}


def files(directory: Path, limit: int = 200) -> list[dict]:
    """What a directory holds (an export's files), with sizes."""
    out = []
    for p in sorted(directory.rglob("*")) if directory.is_dir() else []:
        if p.is_file():
            out.append({"path": p.relative_to(directory).as_posix(), "bytes": p.stat().st_size})
        if len(out) >= limit:
            break
    return out
