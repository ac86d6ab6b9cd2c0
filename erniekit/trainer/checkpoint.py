"""Checkpoints that collect ``state_dict`` s and are written atomically.

    output_dir/checkpoint-<step>/
        model.safetensors        trainable state (our parameter names; LoRA runs: adapters only)
        optimizer.safetensors    AdamW moments etc., keyed "<parameter name>::<slot>"
        trainer_state.json       step, data position, counters, model shape
        config.yaml              the resolved recipe of the run
        manifest.json            each file's size and SHA-256 (written last; erniekit/manifest.py)

A checkpoint is first written to ``checkpoint-<step>.partial``, flushed to disk, then renamed, so a
crash mid-save leaves the previous checkpoints untouched; partial directories are ignored and removed.
Only files this module wrote are read back: safetensors and JSON, never pickles, each verified against
the manifest first, so a changed byte is an error naming its file rather than wrong weights.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import paddle
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from erniekit.errors import CheckpointError
from erniekit.manifest import sealed, verify
from erniekit.tensors import to_numpy
from erniekit.trainer.rundir import STATE_NAME, checkpoints


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tensors(arrays: dict[str, np.ndarray], path: Path) -> None:
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# --- optimizer state under stable names ------------------------------------------------------------


def optimizer_arrays(optimizer, named_params: dict[str, paddle.Tensor]) -> dict[str, np.ndarray]:
    """Paddle keys accumulators by auto-generated parameter names ("linear_3.w_0_moment1_0"), which
    depend on construction order; store them as "<our parameter name>::<slot>" instead."""
    by_pname = {p.name: n for n, p in named_params.items()}
    names = sorted(by_pname, key=len, reverse=True)
    out = {}
    for key, value in optimizer.state_dict().items():
        if key == "master_weights":
            out.update({f"{by_pname[k]}::master_weight": to_numpy(v) for k, v in value.items()})
        elif isinstance(value, paddle.Tensor):
            pname = next((n for n in names if key.startswith(n + "_")), None)
            if pname is None:
                raise CheckpointError(f"optimizer state {key} belongs to no trainable parameter")
            out[f"{by_pname[pname]}::{key[len(pname) + 1 :]}"] = to_numpy(value)
    return out


def load_optimizer_arrays(
    optimizer, named_params: dict[str, paddle.Tensor], arrays: dict[str, np.ndarray], origin: str
) -> None:
    state, masters = {}, {}
    for key, value in arrays.items():
        name, _, slot = key.partition("::")
        if name not in named_params:
            raise CheckpointError(f"{origin}: optimizer state for {name}, which this model does not train")
        param = named_params[name]
        if slot == "master_weight":
            masters[param.name] = paddle.to_tensor(value)
        else:
            state[f"{param.name}_{slot}"] = paddle.to_tensor(value)
    if masters:
        state["master_weights"] = masters
    optimizer.set_state_dict(state)


# --- save / find / load ------------------------------------------------------------------------------


def save_checkpoint(
    output_dir: Path,
    step: int,
    model_arrays: dict[str, np.ndarray],
    optim_arrays: dict[str, np.ndarray],
    state: dict,
    config_text: str,
    keep: int,
) -> Path:
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f"checkpoint-{step}.partial"
    try:
        _write(tmp, model_arrays, optim_arrays, state, config_text)
    except (OSError, SafetensorError) as e:  # disk full, quota, permissions: drop the half-written one
        shutil.rmtree(tmp, ignore_errors=True)
        good = checkpoints(output_dir)
        kept = (
            f"the last good checkpoint, {good[-1].name}, is intact"
            if good
            else "no earlier checkpoint exists"
        )
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CheckpointError(f"saving {final} failed ({reason}); {kept}") from e
    if final.exists():  # re-saving the same step (e.g. after resume): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(output_dir)
    prune(output_dir, keep)
    return final


def _write(tmp: Path, model_arrays, optim_arrays, state: dict, config_text: str) -> None:
    """Every file of a checkpoint into ``tmp``, flushed to disk."""
    if tmp.exists():
        shutil.rmtree(tmp)
    with sealed(tmp):
        _write_tensors(model_arrays, tmp / "model.safetensors")
        _write_tensors(optim_arrays, tmp / "optimizer.safetensors")
        (tmp / "config.yaml").write_text(config_text)
        with open(tmp / STATE_NAME, "w") as f:
            json.dump(state, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(tmp)


def remove_partials(output_dir: Path) -> list[str]:
    """Remove what an interrupted save (``.partial``) or prune (``.deleting``) left behind."""
    removed = []
    if output_dir.is_dir():
        for p in [*output_dir.glob("checkpoint-*.partial"), *output_dir.glob("checkpoint-*.deleting")]:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def prune(output_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints. Each is renamed first, so a crash in the middle
    of deleting never leaves a half-deleted directory under a checkpoint's name."""
    if keep > 0:
        for old in checkpoints(output_dir)[:-keep]:
            doomed = old.with_name(old.name + ".deleting")
            os.rename(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """``auto``: the newest complete checkpoint in output_dir (None if there is none); else a path."""
    if resume is None:
        return None
    if resume == "auto":
        found = checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_NAME).is_file():
        raise CheckpointError(f"{resume}: not a complete checkpoint (no {STATE_NAME})")
    return path


def read_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    verify(path)
    try:
        state = json.loads((path / STATE_NAME).read_text())
        model = load_file(str(path / "model.safetensors"))
        optim = load_file(str(path / "optimizer.safetensors"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from None
    return model, optim, state
