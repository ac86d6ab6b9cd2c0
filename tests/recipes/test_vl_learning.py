"""Learning on real images through the real CLI, scored by ``erniekit eval`` (exact match) before and
after training: the shipped VL recipes in short versions of the README's full runs.

* ERNIE 4.5 VL (debug flavor) on scikit-learn's bundled handwritten digits (the wheel's
  ``digits.csv.gz``, 8x8 scans by 43 writers): which digit is it? Chance is ~0.1. Then GRPO with an
  exact-match reward takes the SFT model further on the same held-out digits.
* PaddleOCR-VL (debug flavor) on three-digit strings Pillow renders, the held-out strings never drawn
  for training: read the picture back. Untrained, it scores 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(cwd: Path, *args: str, timeout: int = 900) -> None:
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def exact_match(cwd: Path, target: str) -> float:
    """The recipe's eval.generation file scored by its scorer (exact), for a recipe or a run."""
    out = cwd / "eval.json"
    run(cwd, "-m", "erniekit", "eval", target, f"data.cache_dir={cwd / 'cache'}", "--out", str(out))
    (result,) = json.loads(out.read_text())["generation"].values()
    return result["score"]


def train(cwd: Path, recipe: str, *overrides: str) -> None:
    run(
        cwd,
        "-m",
        "erniekit",
        "train",
        recipe,
        f"data.cache_dir={cwd / 'cache'}",
        "logging.progress=none",
        "train.eval_every=0",
        "checkpoint.every=0",
        *overrides,
    )


def make_data(cwd: Path, kind: str) -> None:
    run(cwd, str(ROOT / "scripts" / "make_vl_data.py"), kind, "--out", f".cache/vl/{kind}")


def test_vl_sft_then_grpo_learn_handwritten_digits(tmp_path):
    make_data(tmp_path, "digits")
    before = exact_match(tmp_path, "ernie4_5_vl/digits_sft")
    train(tmp_path, "ernie4_5_vl/digits_sft", "train.max_steps=300")  # README: 600 steps, 0.91
    sft = exact_match(tmp_path, "output/vl_digits")
    print(f"digits, held-out exact match: {before:.3f} -> SFT {sft:.3f}")  # shown with pytest -s
    assert before < 0.25 and sft > 0.3, (before, sft)

    # GRPO from the SFT model, rewarded only for the exact digit (README: 400 steps, 0.455 -> 0.714)
    run(tmp_path, "-m", "erniekit", "export", "output/vl_digits", "--out", "output/vl_digits_hf")
    train(tmp_path, "ernie4_5_vl/digits_grpo", "train.max_steps=300")
    grpo = exact_match(tmp_path, "output/vl_digits_grpo")
    print(f"digits, held-out exact match: SFT {sft:.3f} -> GRPO {grpo:.3f}")
    assert grpo > sft + 0.1, (sft, grpo)


def test_paddleocr_vl_learns_to_read_strings_it_never_saw(tmp_path):
    make_data(tmp_path, "ocr")
    before = exact_match(tmp_path, "paddleocr_vl/ocr_sft")
    # a plateau near uniform digits lasts ~450 steps, then reading sets in (README: 2000 steps, 1.0)
    train(tmp_path, "paddleocr_vl/ocr_sft", "train.max_steps=1000")
    after = exact_match(tmp_path, "output/vl_ocr")
    print(f"OCR, held-out exact match: {before:.3f} -> {after:.3f}")
    assert before < 0.02 and after > 0.3, (before, after)
