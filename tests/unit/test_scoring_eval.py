"""Scorers on tricky strings, and `erniekit eval` (loss/perplexity + generation scores) on a trained run."""

import json
import math
import subprocess
import sys

import pytest

from erniekit.scoring import numeric, parse_number, resolve_scorer
from erniekit.trainer.loop import Trainer
from tests.helpers import debug_recipe


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("The answer is 42.", 42),
        ("so \\boxed{3/4} and later 7", 0.75),
        ("\\boxed{\\frac{1}{2}} is not parsed as 1", 2),
        ("total: 1,234,567 apples", 1234567),
        ("#### -12", -12),
        ("pay $3.50 then 2", 2),
        ("x = .5", 0.5),
        ("Natalia sold 48+24 = 72 clips.\n#### 72", 72),
        ("\\boxed{12} but text says 13", 12),
        ("no number", None),
    ],
)
def test_parse_number(text, value):
    got = parse_number(text)
    assert (got is None) if value is None else math.isclose(float(got), value)


def test_builtin_and_custom_scorers():
    assert numeric("I think it is 72.", "#### 72", {}) == 1.0
    assert numeric("72.0", "72", {}) == 1.0 and numeric("73", "72", {}) == 0.0
    assert resolve_scorer("exact")("  Paris. ", "paris", {}) == 1.0
    assert resolve_scorer("contains")("It is Paris, France", "paris", {}) == 1.0
    assert resolve_scorer("os.path:isabs") is not None
    with pytest.raises(ValueError, match="unknown scorer 'fuzzy'"):
        resolve_scorer("fuzzy")
    with pytest.raises(ValueError, match="cannot import scorer"):
        resolve_scorer("nonexistent_module_x:f")


def test_eval_cli_reports_loss_and_generation_scores(tmp_path):
    recipe = debug_recipe(tmp_path, "train.max_steps=3", "data.max_seq_len=64", "train.eval_every=0")
    Trainer(recipe).fit()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"What is {a} + 1?", "answer": str(a + 1)}) + "\n" for a in range(4))
    )
    out = tmp_path / "eval.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "erniekit",
            "eval",
            str(recipe.train.output_dir),
            "eval.scorer=numeric",
            "eval.max_new_tokens=8",
            f"data.cache_dir={tmp_path / 'c'}",
            "--data",
            "samples://sft_alpaca.json",
            "--generation",
            str(prompts),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["loss"]["loss"] > 0 and math.isclose(
        result["loss"]["ppl"], math.exp(result["loss"]["loss"])
    )
    assert result["generation"][str(prompts)]["n"] == 4 and len(result["samples"]) == 4


def test_an_rl_recipes_eval_prompts_are_generated_for_not_scored_as_loss(tmp_path):
    from erniekit.evaluate import target_recipe

    rl = ["data.eval=[samples://rl_arithmetic.jsonl]"]
    recipe, weights = target_recipe("ernie4_5/debug_grpo", rl, ["samples://sft_alpaca.json"], [])
    assert weights == "recipe"
    assert [s.path for s in recipe.eval.generation] == ["samples://rl_arithmetic.jsonl"]
    assert [s.path for s in recipe.data.eval] == ["samples://sft_alpaca.json"]  # --data still is loss data
    sft, _ = target_recipe("ernie4_5/debug_sft", ["data.eval=[samples://sft_alpaca.json]"], [], [])
    assert [s.path for s in sft.data.eval] == ["samples://sft_alpaca.json"] and not sft.eval.generation
