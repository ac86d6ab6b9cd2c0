"""The real CLI on the tool-calling + thinking debug recipe: ERNIE 4.5 Thinking's template over OpenAI,
ERNIEKit chatml and LLaMA-Factory sharegpt tool records; the loss falls, and ``erniekit eval`` scores the
trained run's calls on prompts with tools."""

import json

from erniekit.trainer.metrics import read_metrics
from tests.helpers import erniekit


def test_debug_tools_recipe_trains_and_its_calls_are_scored(tmp_path):
    out = tmp_path / "run"
    erniekit(
        "train",
        "ernie4_5/debug_tools",
        f"train.output_dir={out}",
        "train.max_steps=40",
        f"data.cache_dir={tmp_path / 'cache'}",
        "logging.progress=none",
        "checkpoint.every=40",
    )
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 40 and sum(losses[-5:]) / 5 < 0.6 * losses[0], losses  # measured 6.9 -> ~2.3
    report = tmp_path / "eval.json"
    erniekit(
        "eval",
        out,
        "--generation",
        "samples://sft_tools_prompts.jsonl",
        "eval.scorer=tool_call",
        "eval.max_new_tokens=24",
        "--out",
        report,
    )
    result = json.loads(report.read_text())
    assert result["generation"]["samples://sft_tools_prompts.jsonl"]["n"] == 24
    answers = [s["answer"]["name"] for s in result["samples"]]
    assert set(answers) == {"get_weather", "add", "convert_currency"}
    assert all(0.0 <= s["score"] <= 1.0 for s in result["samples"])
