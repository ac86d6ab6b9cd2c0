"""KTO: the loss against NumPy, records read in both layouts, the KL reference point taken over the
whole step (so splitting a step into micro-batches changes nothing), and mismatched pairs built right."""

import json

import numpy as np
import paddle
import pytest

from erniekit.config.core import ConfigError
from erniekit.data.preference import to_unpaired_messages
from erniekit.methods.kto import kto_loss
from erniekit.trainer.loop import Trainer
from tests.helpers import debug_recipe

RNG = np.random.RandomState(0)
REWARD, GOOD = RNG.normal(0, 3, 10), (RNG.uniform(size=10) > 0.5).astype(float)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("z0,beta,wd,wu", [(0.0, 0.1, 1.0, 1.0), (1.5, 0.5, 1.0, 1.33), (0.3, 2.0, 0.7, 1.0)])
def test_loss_and_gradient_match_numpy(z0, beta, wd, wu):
    r = paddle.to_tensor(REWARD, "float64", stop_gradient=False)
    loss = kto_loss(r, paddle.to_tensor(GOOD), z0, beta, wd, wu)
    good, bad = sigmoid(beta * (REWARD - z0)), sigmoid(beta * (z0 - REWARD))
    expected = GOOD * wd * (1 - good) + (1 - GOOD) * wu * (1 - bad)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-12)
    loss.sum().backward()
    grad = -GOOD * wd * beta * good * (1 - good) + (1 - GOOD) * wu * beta * bad * (1 - bad)
    np.testing.assert_allclose(r.grad.numpy(), grad, rtol=1e-10)


def test_records_in_both_layouts():
    msgs = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "label": True,
    }
    assert to_unpaired_messages(msgs) == ([{"role": "user", "content": "q"}], "a", True)
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "ok": 0}
    assert to_unpaired_messages(sharegpt, "ok") == ([{"role": "user", "content": "q"}], "a", False)
    trl = {
        "prompt": "q",
        "completion": [{"role": "assistant", "content": "a"}],
        "label": False,
        "system": "s",
    }
    assert to_unpaired_messages(trl) == (
        [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "a",
        False,
    )
    for bad, message in (
        ({"prompt": "q", "completion": "a"}, "missing field 'label'"),
        ({"prompt": "q", "completion": "a", "label": "yes"}, "'label' must be true or false"),
        ({"messages": [{"role": "user", "content": "q"}], "label": True}, "must end with the assistant"),
        ({"completion": "a", "label": True}, "missing field 'prompt'"),
    ):
        with pytest.raises(ValueError, match=message):
            to_unpaired_messages(bad)


def losses(tmp_path, *overrides):
    recipe = debug_recipe(
        tmp_path,
        "train.max_steps=3",
        "train.eval_on_start=false",
        "train.eval_every=0",
        "data.packing=false",
        *overrides,
        recipe="ernie4_5/debug_kto",
    )
    trainer = Trainer(recipe)
    trainer.fit()
    from erniekit.trainer.metrics import read_metrics

    rows = [r for r in read_metrics(f"{recipe.train.output_dir}/metrics.jsonl") if "loss" in r]
    return [(r["loss"], r["grad_norm"], r["kl"]) for r in rows]


def test_the_kl_point_is_the_whole_steps_so_micro_batching_changes_nothing(tmp_path):
    whole = losses(tmp_path / "a", "train.micro_batch_size=4", "train.grad_accum=1")
    split = losses(tmp_path / "b", "train.micro_batch_size=1", "train.grad_accum=4")
    assert len(whole) == 3 and whole[0][2] >= 0
    np.testing.assert_allclose(np.array(split), np.array(whole), rtol=2e-5, atol=1e-6)


def test_each_prompt_is_paired_with_the_next_examples_completion(tmp_path):
    recipe = debug_recipe(tmp_path, "data.packing=false", "data.shuffle=false", recipe="ernie4_5/debug_kto")
    kto = Trainer(recipe).method
    (batch,) = kto.next_micro_batches(1)
    src = kto.train_sources[0]
    keys = [tuple(k) for k in batch["seq_keys"].numpy()]
    ids, kl_ids = batch["input_ids"].numpy(), batch["kl"]["input_ids"].numpy()
    for row, (_, i) in enumerate(keys):
        j = keys[(row + 1) % len(keys)][1]
        assert (
            ids[row, : len(src.prompt[i]) + len(src.completion[i])].tolist()
            == src.prompt[i] + src.completion[i]
        )
        kl = src.prompt[i] + src.completion[j]
        assert kl_ids[row, : len(kl)].tolist() == kl
    assert batch["desirable"].numpy().tolist() == [float(src.desirable[i]) for _, i in keys]


def test_one_example_per_step_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 2 examples per step"):
        debug_recipe(tmp_path, "train.micro_batch_size=1", "train.grad_accum=1", recipe="ernie4_5/debug_kto")


def test_kto_file_with_a_bad_label_names_the_line(tmp_path):
    path = tmp_path / "kto.jsonl"
    path.write_text(
        "\n".join(json.dumps({"prompt": "q", "completion": "a", "label": v}) for v in (True, False, "maybe"))
    )
    recipe = debug_recipe(
        tmp_path, f"data.train=[{path}]", "data.eval_holdout=0", recipe="ernie4_5/debug_kto"
    )
    with pytest.raises(Exception, match=r"kto.jsonl:3: field 'label' must be true or false"):
        Trainer(recipe)
