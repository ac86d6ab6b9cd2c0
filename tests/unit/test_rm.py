"""Reward models: the loss against NumPy, where a sequence is scored, shared-prefix scores equal separate
sequences, margins read from records, and the trainer optimising and saving the head."""

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from erniekit.data.packing import collate_shared_prefix
from erniekit.methods.rm import reward_loss, sequence_scores
from erniekit.models import build_model
from erniekit.models.common.heads import SCORE, attach_head, score_position
from erniekit.rl.reward_model import RewardModel
from erniekit.tokenizer import load_tokenizer
from erniekit.trainer import checkpoint as ckpt
from erniekit.trainer.loop import Trainer
from tests.helpers import debug_recipe

RNG = np.random.RandomState(0)
R_C, R_R, MARGIN = RNG.normal(0, 2, 8), RNG.normal(0, 2, 8), RNG.uniform(0, 1, 8)


def log_sigmoid(x):
    return -np.logaddexp(0, -x)


@pytest.mark.parametrize("margin,center", [(False, 0.0), (True, 0.0), (True, 0.05)])
def test_loss_and_gradient_match_numpy(margin, center):
    r_c = paddle.to_tensor(R_C, "float64", stop_gradient=False)
    r_r = paddle.to_tensor(R_R, "float64", stop_gradient=False)
    m = MARGIN if margin else np.zeros(8)
    loss = reward_loss(r_c, r_r, paddle.to_tensor(m) if margin else None, center)
    gap = R_C - R_R - m
    np.testing.assert_allclose(loss.numpy(), -log_sigmoid(gap) + center * (R_C + R_R) ** 2, rtol=1e-12)
    loss.sum().backward()
    sig = 1 / (1 + np.exp(gap))  # d(-log sigma(g))/dg = -(1 - sigma(g)) = -sigma(-g)
    np.testing.assert_allclose(r_c.grad.numpy(), -sig + 2 * center * (R_C + R_R), rtol=1e-10)
    np.testing.assert_allclose(r_r.grad.numpy(), sig + 2 * center * (R_C + R_R), rtol=1e-10)


def test_score_position_is_the_last_token_that_is_not_padding():
    tokens, where = np.array([7, 8, 0, 0]), np.array([10, 11, 12, 13])
    assert score_position(tokens, where, pad_id=0) == 11
    assert score_position(tokens, where, pad_id=9) == 13
    assert score_position(np.array([0, 0]), np.array([3, 4]), pad_id=0) == 4


def test_shared_prefix_scores_equal_separate_sequences():
    """[prompt | chosen | rejected] scores each reply as if it followed the prompt alone."""
    model = build_model("ernie4_5/debug", seed=0)
    attach_head(model, SCORE)
    model.eval()
    pairs = [([5, 6, 7], [8, 9, 10, 11], [12, 13], (0, 0)), ([20, 21], [22], [23, 24, 25], (0, 1))]
    items = [(p, [(c, k), (r, k)]) for p, c, r, k in pairs]
    arrays = collate_shared_prefix([items], pad_id=0, length=24)
    seq, where = arrays["target_seq"], arrays["target_position"]
    arrays["score_index"] = np.array([where[seq == k][-1] for k in range(4)])
    batch = {k: paddle.to_tensor(v) for k, v in arrays.items()}
    scores = sequence_scores(model, batch).numpy()
    tokenizer = load_tokenizer("samples://ernie_tokenizer")
    separate = RewardModel(model, tokenizer).score_ids([p + r for p, c, rr, _ in pairs for r in (c, rr)])
    np.testing.assert_allclose(scores, separate, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(scores, 4))) == 4  # four different replies, four different scores


def write_pairs(path, margins):
    with open(path, "w") as f:
        for i, m in enumerate(margins):
            record = {"prompt": f"q{i}", "chosen": f"good {i}", "rejected": "no"}
            if m is not None:
                record["margin"] = m
            f.write(json.dumps(record) + "\n")
    return path


def test_margins_come_from_the_records(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", [0.5, None, 2.0, 1.0])
    recipe = debug_recipe(
        tmp_path,
        f"data.train=[{data}]",
        "data.eval_holdout=0",
        "data.packing=false",
        "train.micro_batch_size=4",
        "data.shuffle=false",
        recipe="ernie4_5/debug_rm",
    )
    trainer = Trainer(recipe)
    (batch,) = trainer.method.next_micro_batches(1)
    keys = batch["pair_keys"].numpy()[:, 1]
    expected = np.array([0.5, 0.0, 2.0, 1.0])[keys]
    np.testing.assert_array_equal(batch["margin"].numpy(), expected)


def test_a_margin_that_is_not_a_number_names_the_field_and_line(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", [0.5, "big"])
    recipe = debug_recipe(tmp_path, f"data.train=[{data}]", "data.eval_holdout=0", recipe="ernie4_5/debug_rm")
    with pytest.raises(Exception, match=r"pairs.jsonl:2: field 'margin' must be a number"):
        Trainer(recipe)


def test_the_score_head_is_optimised_and_saved(tmp_path):
    recipe = debug_recipe(
        tmp_path, "train.max_steps=3", "train.eval_on_start=false", recipe="ernie4_5/debug_rm"
    )
    trainer = Trainer(recipe)
    assert f"{SCORE}.weight" in trainer.named_params
    before = getattr(trainer.model, SCORE).weight.numpy().copy()
    trainer.fit()
    after = getattr(trainer.model, SCORE).weight.numpy()
    assert np.abs(after - before).max() > 1e-4
    arrays, _, _ = ckpt.read_checkpoint(ckpt.checkpoints(Path(recipe.train.output_dir))[-1])
    np.testing.assert_array_equal(arrays[f"{SCORE}.weight"], after)
