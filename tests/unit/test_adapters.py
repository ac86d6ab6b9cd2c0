"""LoRA adapters served unmerged: in one continuous batch, rows for the base model and for two
different adapters (different ranks and targets) each get the tokens their own model gives alone."""

import numpy as np
import pytest

from erniekit.errors import CheckpointError
from erniekit.inference.adapters import attach, lora_factors
from erniekit.inference.engine import Engine, Request
from erniekit.models import build_model
from erniekit.peft.lora import apply_lora, lora_layers


def lora_model(targets, rank, seed):
    model = build_model("ernie4_5/debug", seed=0)
    apply_lora(model, targets, rank=rank, alpha=2 * rank)
    rng = np.random.default_rng(seed)
    for _, layer in lora_layers(model):  # trained-looking adapters: B away from zero
        layer.lora_B.set_value(rng.normal(0, 0.5, layer.lora_B.shape).astype("float32"))
    model.eval()
    return model


def test_mixed_batch_of_base_and_two_adapters():
    base = build_model("ernie4_5/debug", seed=0)
    a = lora_model(["all-linear"], 4, seed=1)
    b = lora_model(["o_proj", "down_proj"], 8, seed=2)
    selector = attach(base, {"a": lora_factors(a, base), "b": lora_factors(b, base)})
    assert selector.names == ["a", "b"]
    prompts = [[5, 9, 13, 2], [7, 7, 1], [40, 41], [3, 4, 5, 6, 7, 8]]
    jobs = [(p, slot) for p in prompts for slot in (0, 1, 2)]
    engine = Engine(base, max_batch=5, max_model_len=64, adapters=selector)
    done = engine.run([Request(p, max_new_tokens=8, adapter=slot) for p, slot in jobs])
    plain = build_model("ernie4_5/debug", seed=0)
    models = {0: plain, 1: a, 2: b}
    for req, (p, slot) in zip(done, jobs):
        assert req.tokens == models[slot].generate([p], max_new_tokens=8)[0], (p, slot)
    assert len({tuple(r.tokens) for r in done[:3]}) == 3  # the adapters change the answer


def test_an_adapter_that_does_not_fit_is_refused():
    other = build_model("ernie4_5/debug-moe", seed=0)
    apply_lora(other, ["experts"], rank=4, alpha=8)
    with pytest.raises(CheckpointError, match="served merged"):
        lora_factors(other, build_model("ernie4_5/debug-moe", seed=0), "run/")
