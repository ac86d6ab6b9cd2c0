"""LoRA: exact no-op at init, fused-part masks, merge equivalence, frozen base, adapter-only checkpoints."""

import numpy as np
import paddle
import pytest

from erniekit.config.core import ConfigError
from erniekit.models import build_model
from erniekit.peft.lora import LoRALinear, adapters_disabled, apply_lora, lora_layers, merged_state
from erniekit.trainer.checkpoint import optimizer_arrays
from erniekit.trainer.loop import Trainer
from tests.helpers import debug_recipe


def tokens(seed=0):
    return paddle.to_tensor(np.random.RandomState(seed).randint(0, 1024, (2, 11)))


def randomize_adapters(model, seed=0):
    rng = np.random.RandomState(seed)
    for name, p in model.named_parameters():
        if ".lora_" in name:
            p.set_value(rng.normal(0, 0.1, p.shape).astype("float32"))


def logits(m, x):
    return m(x).logits.numpy()


@pytest.mark.parametrize("flavor", ["ernie4_5/debug", "ernie4_5/debug-moe"])
def test_fresh_adapters_change_nothing_and_merge_exactly(flavor):
    model = build_model(flavor, seed=0)
    model.eval()
    base = logits(model, tokens())
    targets = ["all-linear", "experts"] if "moe" in flavor else ["all-linear"]
    adapted = apply_lora(model, targets, rank=4, alpha=8)
    assert adapted and np.array_equal(logits(model, tokens()), base)
    randomize_adapters(model)
    tuned = logits(model, tokens())
    assert np.abs(tuned - base).max() > 1e-2
    merged = build_model(flavor, seed=0)
    merged.eval()
    for name, value in merged_state(model).items():
        merged.state_dict()[name].set_value(value)
    np.testing.assert_allclose(logits(merged, tokens()), tuned, atol=1e-4)
    with adapters_disabled(model):
        assert np.array_equal(logits(model, tokens()), base)


def test_subset_targets_mask_the_other_parts():
    model = build_model("ernie4_5/debug", seed=0)
    apply_lora(model, ["q_proj", "v_proj"], rank=2, alpha=2)
    randomize_adapters(model)
    layer = model.layers[0].self_attn.qkv_proj
    assert isinstance(layer, LoRALinear) and [p.active for p in layer.parts] == [True, False, True]
    delta = layer.delta_weight().numpy()
    q, kv = 64, 32  # 4 heads x 16, 2 kv heads x 16
    assert np.abs(delta[:, q : q + kv]).max() == 0 and np.abs(delta[:, :q]).max() > 0
    assert not isinstance(model.layers[0].mlp.up_gate_proj, LoRALinear)


def test_scaling_rslora_and_lora_plus():
    model = build_model("ernie4_5/debug", seed=0)
    apply_lora(model, ["o_proj"], rank=4, alpha=8, rslora=True, lora_plus_ratio=16)
    layer = model.layers[0].self_attn.o_proj
    assert layer.scale == 8 / 2 and layer.lora_B.optimize_attr["learning_rate"] == 16


def test_unknown_target_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown LoRA target 'qkv'"):
        apply_lora(build_model("ernie4_5/debug", seed=0), ["qkv"], rank=2, alpha=2)
    with pytest.raises(ValueError, match="match no layer"):
        apply_lora(build_model("ernie4_5/debug", seed=0), ["experts"], rank=2, alpha=2)
    with pytest.raises(ConfigError, match="lora.targets: unknown target 'qproj'"):
        debug_recipe(tmp_path, "lora.targets=[qproj]")


def test_lora_training_touches_only_adapters(tmp_path):
    trainer = Trainer(
        debug_recipe(
            tmp_path,
            "lora.enabled=true",
            "train.max_steps=3",
            "optim.lr=1e-2",
            "data.max_seq_len=128",
            "train.eval_every=0",
        )
    )
    frozen = {n: p.numpy().copy() for n, p in trainer.model.named_parameters() if ".lora_" not in n}
    trainer.fit()
    for n, p in trainer.model.named_parameters():
        if ".lora_" not in n:
            assert np.array_equal(frozen[n], p.numpy()), n
            assert p.grad is None
    assert all(".lora_" in k for k in optimizer_arrays(trainer.optimizer, trainer.named_params))
    from safetensors.numpy import load_file

    saved = load_file(str(trainer.output_dir / "checkpoint-3" / "model.safetensors"))
    assert saved and all(".lora_" in k for k in saved)
    assert len(lora_layers(trainer.model)) == 2 * 4  # 2 layers x (qkv, o, up_gate, down)


def test_lora_resume_is_exact(tmp_path):
    args = [
        "lora.enabled=true",
        "train.max_steps=4",
        "checkpoint.every=2",
        "optim.lr=1e-2",
        "data.max_seq_len=128",
        "train.eval_every=0",
        "data.eval_holdout=0",
    ]
    straight = Trainer(debug_recipe(tmp_path / "a", *args))
    straight.fit()
    first = Trainer(debug_recipe(tmp_path / "b", *args))
    for _ in range(2):
        first.logger.log(first.train_step())
    first.save()
    first.logger.close()
    resumed = Trainer(debug_recipe(tmp_path / "b", *args, "train.resume=auto"))
    resumed.fit()
    for n, p in straight.model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), dict(resumed.model.named_parameters())[n].numpy())
