"""KTO through the real CLI: the held-out reward gap between desirable and undesirable completions opens,
and a run resumed from its checkpoint continues exactly as the uninterrupted one."""

from erniekit.trainer.metrics import read_metrics
from tests.helpers import erniekit


def run(out, *extra):
    erniekit("train", "ernie4_5/debug_kto", f"train.output_dir={out}", "logging.progress=none", *extra)
    return read_metrics(out / "metrics.jsonl")


def test_kto_opens_the_held_out_reward_gap_and_resumes_exactly(tmp_path):
    rows = run(tmp_path / "kto", "checkpoint.every=10")
    evals = [r for r in rows if "eval/rewards/margin" in r]
    assert evals[0]["eval/rewards/margin"] == 0.0  # the policy starts as its reference
    assert evals[-1]["eval/rewards/margin"] > 1.0, evals  # measured 0 -> 2.5 in 20 steps
    assert evals[-1]["eval/rewards/chosen"] > 0 > evals[-1]["eval/rewards/rejected"]
    assert evals[-1]["eval_loss"] < 0.8 * evals[0]["eval_loss"]
    resumed = run(tmp_path / "again", f"train.resume={tmp_path / 'kto' / 'checkpoint-10'}")
    first = {r["step"]: (r["loss"], r["kl"]) for r in rows if "loss" in r and r["step"] > 10}
    second = {r["step"]: (r["loss"], r["kl"]) for r in resumed if "loss" in r and r["step"] > 10}
    assert first and first == second
