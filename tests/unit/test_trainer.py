"""The loop's invariants on the debug model: accumulation split, exact resume, checkpoints, NaN handling."""

import json
import math

import numpy as np
import pytest

from erniekit.config.core import ConfigError
from erniekit.errors import CheckpointError, ErniekitError
from erniekit.models.common.moe import expert_usage
from erniekit.trainer.loop import Trainer, TrainingStopped
from erniekit.trainer.metrics import read_metrics
from tests.helpers import debug_recipe

FAST = ["data.max_seq_len=128", "optim.warmup_steps=1", "train.eval_every=0"]


def train_records(trainer):
    return [r for r in read_metrics(trainer.output_dir / "metrics.jsonl") if "loss" in r]


def weights(trainer):
    return {k: v.numpy().copy() for k, v in trainer.model.state_dict().items()}


# the text model, and the VL one (images in packed rows, text and vision experts; its load-balancing
# loss is a per-micro-batch statistic, so the split-invariance check runs it aux-loss-free, as ERNIEKit
# trains ERNIE VL, with the correction-bias update instead)
RECIPES = {
    "text": ("ernie4_5/debug_sft", []),
    "vl": ("ernie4_5_vl/debug_sft", ["model.router_aux_loss_coef=0", "model.moe_bias_update_rate=0.001"]),
}


@pytest.mark.parametrize("kind", sorted(RECIPES))
def test_accumulation_split_does_not_change_the_update(tmp_path, kind):
    name, extra = RECIPES[kind]
    runs = {}
    for mbs, accum in ((8, 1), (2, 4)):
        recipe = debug_recipe(
            tmp_path / f"{mbs}x{accum}",
            *FAST,
            *extra,
            "train.max_steps=3",
            f"train.micro_batch_size={mbs}",
            f"train.grad_accum={accum}",
            "checkpoint.final=false",
            recipe=name,
        )
        trainer = Trainer(recipe)
        trainer.fit()
        runs[mbs] = (train_records(trainer), weights(trainer))
    (m8, w8), (m2, w2) = runs[8], runs[2]
    for a, b in zip(m8, m2):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)  # Adam alone would hide scale errors
    # Adam turns a gradient element that is ~0 (all its contributions cancel) into a full step of either
    # sign, so float rounding that depends on how rows are split (per micro-batch sums) can move one such
    # weight by ~1% of a step (3e-5 seen); a wrong split moves weights by whole steps (lr 3e-3).
    for k in w8:
        np.testing.assert_allclose(w8[k], w2[k], atol=1e-4, err_msg=k)


@pytest.mark.parametrize("kind", sorted(RECIPES))
def test_resume_continues_with_identical_losses_and_weights(tmp_path, kind):
    name, extra = RECIPES[kind]
    steps = ["train.max_steps=6", "checkpoint.every=3", "train.grad_accum=2", *extra]
    straight = Trainer(debug_recipe(tmp_path / "straight", *FAST, *steps, recipe=name))
    straight.fit()
    expected = train_records(straight)

    first = Trainer(debug_recipe(tmp_path / "stopped", *FAST, *steps, recipe=name))
    for _ in range(3):
        first.logger.log(first.train_step())
    first.save()
    first.logger.close()
    resumed = Trainer(debug_recipe(tmp_path / "stopped", *FAST, *steps, "train.resume=auto", recipe=name))
    assert resumed.state.step == 3
    resumed.fit()
    got = train_records(resumed)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(expected, got):
        assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"], a["step"]
    for k, v in weights(straight).items():
        np.testing.assert_array_equal(v, weights(resumed)[k])


def test_checkpoint_layout_metrics_and_keep(tmp_path):
    trainer = Trainer(
        debug_recipe(
            tmp_path,
            *FAST,
            "train.max_steps=4",
            "checkpoint.every=1",
            "checkpoint.keep=2",
            "data.eval_holdout=8",
        )
    )
    trainer.fit()
    out = trainer.output_dir
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert sorted(p.name for p in (out / "checkpoint-4").iterdir()) == [
        "config.yaml",
        "manifest.json",
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["data"]["loader"]["position"] == 4 * 2 * 2  # steps x rows x accum
    records = read_metrics(out / "metrics.jsonl")
    for key in ("step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_sec"):
        assert key in records[0]
    assert "eval_loss" in records[-1] and math.isclose(
        records[-1]["eval_ppl"], math.exp(records[-1]["eval_loss"])
    )
    assert (out / "config.yaml").read_text().startswith("model:")


def test_partial_checkpoint_is_ignored_and_removed(tmp_path):
    trainer = Trainer(debug_recipe(tmp_path, *FAST, "train.max_steps=2", "checkpoint.every=1"))
    trainer.fit()
    partial = trainer.output_dir / "checkpoint-3.partial"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"garbage")
    half_pruned = trainer.output_dir / "checkpoint-0.deleting"  # a kill while pruning an old checkpoint
    half_pruned.mkdir()
    (half_pruned / "trainer_state.json").write_text("{}")
    resumed = Trainer(debug_recipe(tmp_path, *FAST, "train.max_steps=3", "train.resume=auto"))
    assert resumed.state.step == 2 and not partial.exists() and not half_pruned.exists()


def test_resume_from_other_model_shape_is_refused(tmp_path):
    Trainer(debug_recipe(tmp_path, *FAST, "train.max_steps=1")).fit()
    with pytest.raises(CheckpointError, match="different model shape"):
        Trainer(
            debug_recipe(
                tmp_path, *FAST, "train.max_steps=2", "train.resume=auto", "model.flavor=ernie4_5/debug-moe"
            )
        )


def test_non_finite_loss_stop_saves_last_good_state(tmp_path, monkeypatch):
    trainer = Trainer(debug_recipe(tmp_path, *FAST, "train.max_steps=4", "train.grad_accum=1"))
    real = trainer.method.loss
    calls = {"n": 0}

    def poisoned(model, batch, norm):
        calls["n"] += 1
        loss, stats = real(model, batch, norm)
        return (loss * float("nan"), stats) if calls["n"] == 3 else (loss, stats)

    monkeypatch.setattr(trainer.method, "loss", poisoned)
    with pytest.raises(TrainingStopped, match="non-finite loss nan .* at step 3; stopped"):
        trainer.fit()
    assert (trainer.output_dir / "checkpoint-2").is_dir()
    state = json.loads((trainer.output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["data"]["loader"]["position"] == 2 * 2  # the failed step's data is not consumed


def test_non_finite_loss_skip_counts(tmp_path, monkeypatch):
    trainer = Trainer(debug_recipe(tmp_path, *FAST, "train.max_steps=3", "train.on_nan=skip"))
    before = weights(trainer)
    real = trainer.method.loss
    monkeypatch.setattr(trainer.method, "loss", lambda m, b, n: (real(m, b, n)[0] * float("inf"), {}))
    trainer.fit()
    assert trainer.state.nan_steps == 3
    assert all(np.array_equal(v, weights(trainer)[k]) for k, v in before.items())
    assert [
        r["nan_steps"] for r in read_metrics(trainer.output_dir / "metrics.jsonl") if "nan_steps" in r
    ] == [1, 2, 3]


def test_a_nan_image_skips_its_step_and_leaves_weights_and_expert_biases_alone(tmp_path, monkeypatch):
    """VL: non-finite pixels poison the loss through the vision tower; on_nan=skip keeps every weight
    and the aux-loss-free correction biases (state_dict) as they were, and the next step trains."""
    recipe, extra = RECIPES["vl"]
    trainer = Trainer(
        debug_recipe(tmp_path, *FAST, *extra, "train.max_steps=2", "train.on_nan=skip", recipe=recipe)
    )
    real = trainer.method.next_micro_batches
    calls = {"n": 0}

    def poisoned(count):
        batches = real(count)
        calls["n"] += 1
        if calls["n"] == 1:
            assert all("pixel_values" in b for b in batches)
            for b in batches:
                b["pixel_values"] = b["pixel_values"] * float("nan")
        return batches

    monkeypatch.setattr(trainer.method, "next_micro_batches", poisoned)
    trainer.model.train()
    before = weights(trainer)
    assert any("e_score_correction_bias" in k for k in before)
    trainer.train_step()
    assert trainer.state.nan_steps == 1
    assert all(np.array_equal(v, weights(trainer)[k]) for k, v in before.items())
    assert all(float(u.abs().sum()) == 0 for u in expert_usage(trainer.model))  # its routing forgotten
    record = trainer.train_step()
    assert math.isfinite(record["loss"]) and trainer.state.nan_steps == 1
    assert any(not np.array_equal(v, weights(trainer)[k]) for k, v in before.items() if "correction" in k)


def test_setup_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="train.precision: Paddle's CPU kernels compute in fp32 only"):
        Trainer(debug_recipe(tmp_path, "train.precision=bf16"))
    with pytest.raises(ConfigError, match="data.train: training needs at least one file"):
        Trainer(debug_recipe(tmp_path, "data.train=[]"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ErniekitError, match="output directory is not writable"):
        Trainer(debug_recipe(tmp_path, f"train.output_dir={blocker / 'out'}"))
