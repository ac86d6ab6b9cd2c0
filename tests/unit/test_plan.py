"""``erniekit plan``: parameter counts are exact, memory follows the documented formulas."""

from __future__ import annotations

import numpy as np
import pytest

from erniekit.cli import main
from erniekit.config import load_recipe
from erniekit.models import build_model, flavor_args
from erniekit.parallel.estimate import GiB, count, plan, total_params


@pytest.mark.parametrize(
    "flavor",
    ["ernie4_5/debug", "ernie4_5/debug-moe", "llama/debug", "ernie4_5_vl/debug", "paddleocr_vl/debug"],
)
def test_parameter_count_is_exact(flavor):
    model = build_model(flavor, seed=0)
    real = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert total_params(flavor_args(flavor)) == real


def test_active_parameters_count_k_experts():
    a = flavor_args("ernie4_5/debug-moe")
    c = count(a)
    dense = a.num_layers - a.num_moe_layers
    expert = 3 * a.hidden_size * a.moe_intermediate_size
    moe = c.shared + a.experts_per_token * expert
    assert c.active_per_token == a.num_layers * c.attention + dense * c.dense_mlp + a.num_moe_layers * moe


def test_memory_follows_degrees():
    a = flavor_args("ernie4_5/0.3b")
    one = plan(a, load_recipe("ernie4_5/debug_sft", ["data.max_seq_len=512"]))
    assert one["weights_GiB"] == pytest.approx(total_params(a) * 4 / GiB)
    assert one["optimizer_GiB"] == pytest.approx(2 * one["weights_GiB"])
    sharded = plan(
        a, load_recipe("ernie4_5/debug_sft", ["data.max_seq_len=512", "parallel.sharding.degree=4"])
    )
    assert sharded["optimizer_GiB"] == pytest.approx(one["optimizer_GiB"] / 4)
    assert sharded["weights_GiB"] == one["weights_GiB"]  # stage 1 keeps whole weights
    tp = plan(a, load_recipe("ernie4_5/debug_sft", ["data.max_seq_len=512", "parallel.tp=2"]))
    assert tp["params_per_device_B"] == pytest.approx(one["params_per_device_B"] / 2, rel=1e-3)
    recompute = plan(
        a, load_recipe("ernie4_5/debug_sft", ["data.max_seq_len=512", "parallel.recompute.enabled=true"])
    )
    assert recompute["activations_GiB"] < one["activations_GiB"] / 4
    lora = plan(a, load_recipe("ernie4_5/debug_sft", ["data.max_seq_len=512", "lora.enabled=true"]))
    assert lora["optimizer_GiB"] == pytest.approx(one["optimizer_GiB"] / 100)


def test_moe_experts_split_by_ep():
    a = flavor_args("ernie4_5/21b-a3b")
    base = ["data.max_seq_len=512", "model.flavor=ernie4_5/21b-a3b"]
    one = plan(a, load_recipe("ernie4_5/debug_sft", base))
    ep = plan(a, load_recipe("ernie4_5/debug_sft", [*base, "parallel.dp=4", "parallel.ep=4"]))
    c = count(a)
    saved = a.num_moe_layers * c.experts * 3 / 4
    assert one["params_per_device_B"] - ep["params_per_device_B"] == pytest.approx(saved / 1e9)
    assert one["total_params_B"] == pytest.approx(21.8, abs=0.1)  # "21B-A3B"
    assert one["active_params_B"] + c.embedding / 1e9 == pytest.approx(3.3, abs=0.3)


def test_cli_plan(capsys):
    assert main(["plan", "ernie4_5/debug_sft", "--flavor", "ernie4_5/300b-a47b", "parallel.tp=8"]) == 0
    out = capsys.readouterr().out
    assert "plan for ernie4_5/debug_sft" in out and "total per device" in out
    assert "299.484 B" in out  # the published 300B-A47B shape


def test_cli_plan_without_weights_names_the_flavors(capsys):
    assert main(["plan", "ernie4_5/0p3b_sft"]) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "pass --flavor" in err and "ernie4_5/0.3b" in err


@pytest.mark.parametrize("flavor", ["ernie4_5_vl/debug", "paddleocr_vl/debug"])
def test_vl_parts_count_exactly_and_frozen_parts_carry_no_gradients(flavor):
    from erniekit.trainer.restore import vl_part

    a = flavor_args(flavor)
    parts: dict[str, int] = {}
    for name, p in build_model(flavor, seed=0).named_parameters():
        parts[vl_part(name)] = parts.get(vl_part(name), 0) + int(np.prod(p.shape))
    c = count(a)
    assert (c.vision_tower, c.resampler) == (parts["vision_tower"], parts["resampler"])
    assert a.num_moe_layers * c.vision_experts == parts.get("vision_experts", 0)
    base = [f"model.flavor={flavor}", "data.max_seq_len=256"]
    whole = plan(a, load_recipe("ernie4_5_vl/debug_sft", base))
    for frozen in (["vision_tower"], ["vision_tower", "resampler", "vision_experts"], ["language_model"]):
        part = plan(a, load_recipe("ernie4_5_vl/debug_sft", [*base, f"model.freeze={frozen}"]))
        saved = sum(parts.get(name, 0) for name in frozen) * 4 / GiB
        assert whole["grads_GiB"] - part["grads_GiB"] == pytest.approx(saved), frozen
        assert part["weights_GiB"] == whole["weights_GiB"]


def test_sequence_parallel_with_moe_is_refused_before_any_weight_is_read(tmp_path):
    """plan and the trainer both stop on it, the trainer before building the model."""
    from erniekit.config import ConfigError
    from erniekit.trainer.loop import Trainer
    from tests.helpers import debug_recipe

    sp = ["parallel.tp=2", "parallel.sequence_parallel=true"]
    with pytest.raises(
        ConfigError, match="parallel.sequence_parallel: sequence parallelism does not combine"
    ):
        plan(flavor_args("ernie4_5/debug-moe"), load_recipe("ernie4_5/debug_sft", sp))
    from erniekit.models import save_pretrained

    missing = tmp_path / "no-weights"  # config.json only: reading weights would fail differently
    save_pretrained(build_model("ernie4_5/debug-moe", seed=0), missing)
    for weights in missing.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ConfigError, match="sequence parallelism does not combine with MoE"):
        Trainer(debug_recipe(tmp_path, *sp, f"model.path={missing}", "model.flavor=null"))
    plan(flavor_args("ernie4_5/debug"), load_recipe("ernie4_5/debug_sft", sp))  # dense: fine
