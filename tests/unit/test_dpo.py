"""DPO: every loss against NumPy, prefix-shared batches against separate sequences, formats, references."""

import numpy as np
import paddle
import pytest

from erniekit.data.packing import collate_shared_prefix
from erniekit.data.preference import to_pair_messages
from erniekit.methods.dpo import preference_loss
from erniekit.models import build_model
from erniekit.trainer.loop import Trainer
from tests.helpers import debug_recipe

RNG = np.random.RandomState(0)
PI_C, PI_R, RHO_C, RHO_R = (RNG.uniform(-40, -5, 6) for _ in range(4))
LEN_C, LEN_R = RNG.randint(3, 30, 6).astype(float), RNG.randint(3, 30, 6).astype(float)


def log_sigmoid(x):
    return -np.logaddexp(0, -x)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_loss(kind, beta, eps=0.0, gamma=0.0):
    h = (PI_C - RHO_C) - (PI_R - RHO_R)
    if kind == "sigmoid":
        return -(1 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h)
    if kind == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    if kind == "hinge":
        return np.maximum(0, 1 - beta * h)
    if kind == "simpo":
        z = beta * (PI_C / LEN_C - PI_R / LEN_R) - gamma
        return -(1 - eps) * log_sigmoid(z) - eps * log_sigmoid(-z)
    if kind == "orpo":
        a_c, a_r = PI_C / LEN_C, PI_R / LEN_R
        odds = lambda a: a - np.log(1 - np.exp(a))  # noqa: E731
        return -a_c - beta * log_sigmoid(odds(a_c) - odds(a_r))
    if kind == "kto_pair":
        rc, rr = PI_C - RHO_C, PI_R - RHO_R
        zc, zr = max(rc.mean(), 0), max(rr.mean(), 0)
        return ((1 - sigmoid(beta * (rc - zr))) + (1 - sigmoid(beta * (zc - rr)))) / 2
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "beta", "eps", "gamma"),
    [
        ("sigmoid", 0.1, 0.0, 0.0),
        ("sigmoid", 0.5, 0.2, 0.0),
        ("ipo", 0.1, 0.0, 0.0),
        ("hinge", 0.3, 0.0, 0.0),
        ("simpo", 2.0, 0.0, 0.5),
        ("simpo", 2.0, 0.1, 1.0),
        ("orpo", 0.1, 0.0, 0.0),
        ("kto_pair", 0.1, 0.0, 0.0),
    ],
)
def test_losses_match_numpy(kind, beta, eps, gamma):
    t = lambda a: paddle.to_tensor(a.astype("float32"))  # noqa: E731
    losses, (r_c, _) = preference_loss(
        kind, t(PI_C), t(PI_R), t(RHO_C), t(RHO_R), t(LEN_C), t(LEN_R), beta, eps, gamma
    )
    np.testing.assert_allclose(losses.numpy(), numpy_loss(kind, beta, eps, gamma), rtol=1e-5, atol=1e-6)
    if kind not in ("simpo", "orpo"):
        np.testing.assert_allclose(r_c.numpy(), beta * (PI_C - RHO_C), rtol=1e-5)


def test_prefix_shared_pairs_equal_separate_sequences():
    """[prompt | chosen | rejected] in one row, two pairs packed, gives each reply the log-probs of
    running prompt+reply alone."""
    model = build_model("ernie4_5/debug", seed=0)
    model.eval()
    pairs = [([5, 6, 7], [8, 9, 10, 11], [12, 13], (0, 0)), ([20, 21], [22], [23, 24, 25], (0, 1))]
    items = [(p, [(c, k), (r, k)]) for p, c, r, k in pairs]
    batch = {k: paddle.to_tensor(v) for k, v in collate_shared_prefix([items], pad_id=0, length=24).items()}
    batch["pair_keys"] = batch.pop("seq_keys")[0::2]
    from erniekit.methods.dpo import sequence_logps

    logps, lengths = sequence_logps(model, batch)
    expected = []
    for prompt, chosen, rejected, _ in pairs:
        for reply in (chosen, rejected):
            seq = prompt + reply
            logp = paddle.nn.functional.log_softmax(model(paddle.to_tensor([seq])).logits[0], axis=-1).numpy()
            expected.append(sum(logp[len(prompt) - 1 + j, tok] for j, tok in enumerate(reply)))
    np.testing.assert_allclose(logps.numpy(), expected, rtol=1e-5)
    assert lengths.numpy().tolist() == [4, 2, 1, 3]


def test_pair_formats():
    ernie = {
        "src": ["q1", "q2"],
        "tgt": ["a1"],
        "response": [["bad"], ["good"]],
        "sort": [0, 1],
        "system": "s",
    }
    msgs, chosen, rejected = to_pair_messages(ernie)
    assert (chosen, rejected) == ("good", "bad") and [m["role"] for m in msgs] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    sharegpt = {
        "conversations": [{"from": "human", "value": "q"}],
        "chosen": {"from": "gpt", "value": "c"},
        "rejected": {"from": "gpt", "value": "r"},
    }
    assert to_pair_messages(sharegpt) == ([{"role": "user", "content": "q"}], "c", "r")
    listed = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "c"}],
        "rejected": [{"role": "assistant", "content": "r"}],
    }
    assert to_pair_messages(listed) == ([{"role": "user", "content": "q"}], "c", "r")
    with pytest.raises(ValueError, match="must rank the two responses differently"):
        to_pair_messages({**ernie, "sort": [1, 1]})
    with pytest.raises(ValueError, match="src has 2 turns, so tgt needs 1, got 0"):
        to_pair_messages({**ernie, "tgt": []})
    with pytest.raises(ValueError, match="missing field 'chosen' or 'rejected'"):
        to_pair_messages({"prompt": "q", "chosen": "c"})


DPO_FAST = [
    "train.max_steps=3",
    "data.max_seq_len=128",
    "train.eval_every=0",
    "data.eval_holdout=4",
    "checkpoint.final=false",
]


def losses_of(tmp_path, *extra):
    trainer = Trainer(debug_recipe(tmp_path, *DPO_FAST, *extra, recipe="ernie4_5/debug_dpo"))
    trainer.method.on_train_start(trainer)
    batch = trainer.method.next_micro_batches(1)[0]
    ref = trainer.method.reference_logps(trainer.model, batch, "train").numpy()
    trainer.method.set_state_dict({"loader": {"position": 0}})
    trainer.fit()
    from erniekit.trainer.metrics import read_metrics

    return ref, [r["loss"] for r in read_metrics(trainer.output_dir / "metrics.jsonl") if "loss" in r]


def test_reference_strategies_agree(tmp_path):
    ref_copy, losses_copy = losses_of(tmp_path / "copy")
    ref_pre, losses_pre = losses_of(tmp_path / "pre", "method.precompute_ref=true")
    ref_lora, losses_lora = losses_of(tmp_path / "lora", "lora.enabled=true")
    np.testing.assert_allclose(ref_pre, ref_copy, rtol=1e-5)
    np.testing.assert_allclose(ref_lora, ref_copy, rtol=1e-5)
    assert losses_copy[0] == pytest.approx(np.log(2), abs=1e-6)  # policy == reference at step 0
    assert losses_pre[0] == pytest.approx(losses_copy[0], abs=1e-6) and losses_lora[0] == pytest.approx(
        losses_copy[0]
    )
    np.testing.assert_allclose(losses_pre, losses_copy, rtol=1e-5)  # same policy, same reference values
    assert (tmp_path / "pre" / "out" / "ref_logps.safetensors").is_file()
