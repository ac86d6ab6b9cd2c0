"""A changed byte in a checkpoint or export is refused by name, by every command that reads it.

Each checkpoint and export carries manifest.json (sizes and SHA-256, written last). The tests flip one
byte inside a tensor's data (not the header: safetensors would still parse it and load wrong weights,
which is what happened before manifests) and run the real CLI: resume, export, chat and verify fail
with an error naming the file, and leave every file as it was.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from erniekit.errors import CheckpointError
from erniekit.manifest import MANIFEST, sealed, verify, write_manifest
from erniekit.models import load_model
from tests.helpers import erniekit

STEPS = 4


def train_args(out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "ernie4_5/debug_sft",
        f"train.output_dir={out}",
        f"train.max_steps={STEPS}",
        "train.eval_every=0",
        "data.max_seq_len=64",
        "checkpoint.every=2",
        "logging.progress=none",
        "logging.visualdl=false",
        *extra,
    ]


def fails(*args) -> str:
    """Run the CLI expecting a one-line error; return its stderr."""
    return erniekit(*args, fails=True).stderr


def flip_a_tensor_byte(path: Path, seed: int = 0) -> None:
    """Flip one bit of one byte inside some tensor's data (past the safetensors header)."""
    raw = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    rng = np.random.default_rng(seed)
    name = sorted(k for k in header if k != "__metadata__")[int(rng.integers(len(header) - 1))]
    start, end = header[name]["data_offsets"]
    at = 8 + header_len + int(rng.integers(start, end))
    raw[at] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("corruption") / "run"
    erniekit(*train_args(out))
    return out


def copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


def test_checkpoints_carry_manifests_that_verify(run):
    for step in (2, 4):
        manifest = json.loads((run / f"checkpoint-{step}" / MANIFEST).read_text())
        assert {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.yaml"} <= set(
            manifest["files"]
        )
    lines = erniekit("verify", run).stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok"] and "checkpoint-4" in lines[1]


@pytest.mark.parametrize("file", ["model.safetensors", "optimizer.safetensors"])
def test_a_flipped_byte_stops_resume_naming_the_file(run, tmp_path, file):
    out = copy(run, tmp_path)
    target = out / "checkpoint-4" / file
    flip_a_tensor_byte(target)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    err = fails(*train_args(out, "train.max_steps=6", "train.resume=auto"))
    assert str(target) in err and "contents changed" in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing lost or rewritten
    err = fails("verify", out)
    assert str(target) in err, err


def test_a_flipped_byte_stops_export_and_chat(run, tmp_path):
    out = copy(run, tmp_path)
    target = out / "checkpoint-4" / "model.safetensors"
    flip_a_tensor_byte(target, seed=1)
    for args in (("export", out, "--out", tmp_path / "export"), ("chat", out, "--prompt", "hi")):
        err = fails(*args)
        assert str(target) in err and "contents changed" in err, (args, err)
    assert not (tmp_path / "export" / MANIFEST).exists()


def test_an_export_is_verified_when_loaded(run, tmp_path):
    export = tmp_path / "export"
    erniekit("export", run, "--out", export)
    assert "ok" in erniekit("verify", export).stdout
    load_model(export)  # intact: loads
    flip_a_tensor_byte(export / "model.safetensors", seed=2)
    with pytest.raises(CheckpointError, match="model.safetensors: contents changed"):
        load_model(export)
    assert str(export / "model.safetensors") in fails("chat", export, "--prompt", "hi")


def test_truncated_missing_and_stale(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.bin").write_bytes(b"x" * 100)
    (d / "sub").mkdir()
    (d / "sub" / "b.json").write_text("{}")
    write_manifest(d)
    assert verify(d, missing="error") == 102
    (d / "a.bin").write_bytes(b"x" * 99)
    with pytest.raises(CheckpointError, match=r"a.bin: 99 bytes, manifest.json says 100 \(truncated"):
        verify(d)
    (d / "a.bin").write_bytes(b"x" * 100)
    (d / "sub" / "b.json").unlink()
    with pytest.raises(CheckpointError, match="b.json: listed in manifest.json but missing"):
        verify(d)
    # a write that fails half-way leaves no manifest vouching for the old files
    with pytest.raises(RuntimeError), sealed(d):
        raise RuntimeError("disk full")
    assert not (d / MANIFEST).exists()
    assert verify(d, missing="ignore") == 0
    with pytest.raises(CheckpointError, match="no manifest.json"):
        verify(d, missing="error")
