"""The real CLI on the debug DPO recipes: held-out reward accuracy climbs above 0.9. On pictures the
rejected answer is the next colour round (blue -> green -> red -> blue), so a model that ignores the
image ranks at most 0.69 of the pairs right."""

import pytest

from erniekit.trainer.metrics import read_metrics
from tests.helpers import erniekit


@pytest.mark.parametrize("recipe", ["ernie4_5/debug_dpo", "ernie4_5_vl/debug_dpo"])
def test_debug_dpo_learns_the_preference(recipe, tmp_path):
    out = tmp_path / "run"
    erniekit(
        "train",
        recipe,
        f"train.output_dir={out}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "logging.progress=none",
    )
    records = read_metrics(out / "metrics.jsonl")
    evals = [r for r in records if "eval/rewards/accuracy" in r]
    assert evals[0]["step"] == 0 and evals[0]["eval_loss"] == pytest.approx(0.6931, abs=1e-3)
    assert evals[-1]["eval/rewards/accuracy"] > 0.9, [r["eval/rewards/accuracy"] for r in evals]
    train = [r for r in records if "rewards/accuracy" in r]
    assert train[-1]["rewards/margin"] > 0 and {
        "rewards/chosen",
        "rewards/rejected",
        "logps/chosen",
        "logps/rejected",
    } <= set(train[-1])
