"""QLoRA through the real CLI: one line (lora.quantize) stores the frozen base quantised; the run trains,
resumes exactly, and exports a merged model that computes what the run does."""

import numpy as np
import paddle
import pytest
from safetensors.numpy import load_file

from erniekit.models import load_model
from erniekit.trainer.metrics import read_metrics
from erniekit.trainer.restore import restore
from tests.helpers import erniekit


def train(out, *extra):
    args = [
        "train",
        "ernie4_5/debug_sft",
        f"train.output_dir={out}",
        "lora.enabled=true",
        "optim.lr=2e-3",
        "train.max_steps=20",
        "train.eval_every=0",
        "checkpoint.every=10",
        "logging.progress=none",
        *extra,
    ]
    return erniekit(*args)


def losses(out):
    return [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


def test_quantised_base_trains_resumes_and_exports(tmp_path):
    plain, nf4 = tmp_path / "plain", tmp_path / "nf4"
    train(plain)
    proc = train(nf4, "lora.quantize=nf4")
    assert "frozen base stored as nf4" in proc.stderr
    a, b = losses(plain), losses(nf4)
    assert b[-1][1] < b[0][1]  # it learns
    assert abs(b[-1][1] - a[-1][1]) < 0.01 * a[-1][1]  # measured 0.05% from the float base's run
    saved = load_file(str(nf4 / "checkpoint-20" / "model.safetensors"))
    assert saved and all(".lora_" in k for k in saved)  # adapters only: the base is re-read and re-quantised

    resumed = tmp_path / "resumed"  # from its checkpoint at step 10: the same adapters, bit for bit
    train(resumed, "lora.quantize=nf4", f"train.resume={nf4 / 'checkpoint-10'}")
    again = load_file(str(resumed / "checkpoint-20" / "model.safetensors"))
    assert all(np.array_equal(again[k], saved[k]) for k in saved)

    erniekit("export", nf4, "--merge-lora", "--out", tmp_path / "merged")
    _, _, model = restore(nf4)
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(0).integers(0, model.args.vocab_size, (2, 9)))
    merged = load_model(tmp_path / "merged")
    np.testing.assert_allclose(merged(x).logits.numpy(), model(x).logits.numpy(), atol=1e-5)
    assert erniekit("chat", nf4, "--prompt", "hi", "--max-new-tokens", "4").returncode == 0


def test_quantise_needs_lora(tmp_path):
    err = erniekit(
        "train", "ernie4_5/debug_sft", f"train.output_dir={tmp_path}", "lora.quantize=int8", fails=True
    ).stderr
    assert "lora.quantize" in err and "lora.enabled=true" in err


def test_wint4_8_dpo_reads_a_model_directory_into_int4_experts(tmp_path):
    """ERNIEKit's wint4/8 on an MoE model loaded from disk (quantised as each tensor is read), with DPO:
    the reference is the same quantised base with the adapters off, and the preference margin grows."""
    from erniekit.models import build_model, save_pretrained

    base = tmp_path / "base"
    save_pretrained(build_model("ernie4_5/debug-moe", seed=0), base)
    out = tmp_path / "dpo"
    proc = erniekit(
        "train",
        "ernie4_5/debug_dpo",
        "model.flavor=null",
        f"model.path={base}",
        f"train.output_dir={out}",
        "lora.enabled=true",
        "lora.quantize=wint4/8",
        "train.max_steps=12",
        "train.eval_every=0",
        "train.eval_on_start=false",
        "logging.progress=none",
    )
    assert "frozen base stored as wint4/8" in proc.stderr
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert rows[-1]["loss"] < rows[0]["loss"]
    margins = [r["rewards/margin"] for r in rows if "rewards/margin" in r]
    assert margins and np.mean(margins[-3:]) > np.mean(margins[:3])


@pytest.mark.parametrize("method", ["grpo", "ppo"])
def test_quantised_base_rl_rolls_out_and_trains(tmp_path, method):
    """GRPO and PPO sample their rollouts on the serving engine: a quantised base must run there too
    (PPO's value head trains beside the adapters)."""
    out = tmp_path / method
    erniekit(
        "train",
        f"ernie4_5/debug_{method}",
        f"train.output_dir={out}",
        "lora.enabled=true",
        "lora.rank=8",
        "lora.quantize=int4",
        "method.rollout.prompts_per_step=4",
        "train.max_steps=4",
        "train.eval_every=0",
        "logging.progress=none",
    )
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "reward_mean" in r]
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)  # ppo_epochs 2: a rollout per 2 steps


def test_wint4_8_trains_a_vision_language_model_on_images(tmp_path):
    """ERNIE 4.5 VL: text and vision experts in int4, the decoder's other linears in int8, the vision
    tower in float; the run trains on the bundled pictures."""
    from erniekit.peft.qlora import QuantizedExperts

    out = tmp_path / "vl"
    proc = erniekit(
        "train",
        "ernie4_5_vl/debug_sft",
        f"train.output_dir={out}",
        "lora.enabled=true",
        "lora.quantize=wint4/8",
        "optim.lr=1e-2",
        "train.max_steps=6",
        "train.eval_every=0",
        "logging.progress=none",
    )
    assert "frozen base stored as wint4/8" in proc.stderr
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert rows[-1]["loss"] < rows[0]["loss"]
    _, _, model = restore(out)
    experts = {n.rsplit(".", 1)[-1] for n, m in model.named_sublayers() if isinstance(m, QuantizedExperts)}
    assert experts == {"experts", "vision_experts"}
    vision = [type(m).__name__ for n, m in model.named_sublayers() if n.startswith("vision.")]
    assert vision and not any("Quantized" in kind for kind in vision)


def test_a_quantised_base_under_tensor_parallelism_is_refused_before_loading(tmp_path):
    err = erniekit(
        "train",
        "ernie4_5/debug_sft",
        f"train.output_dir={tmp_path / 'run'}",
        "lora.enabled=true",
        "lora.quantize=int8",
        "parallel.tp=2",
        fails=True,
    ).stderr
    assert "lora.quantize" in err and "not split by tensor parallelism" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_train_on_the_gguf_you_have(tmp_path):
    """model.path names a Q8_0 GGUF file; lora.quantize=q8_0 keeps its blocks as the frozen base; the
    run trains, chats and exports a merged model, all re-reading the file."""
    from gguf import GGMLQuantizationType

    from erniekit.models import build_model
    from tests.unit.test_gguf import write_gguf

    gguf = tmp_path / "tiny.gguf"
    write_gguf(gguf, build_model("llama/debug", seed=0), GGMLQuantizationType.Q8_0)
    out = tmp_path / "run"
    proc = train(out, "model.flavor=null", f"model.path={gguf}", "model.tokenizer=null", "lora.quantize=q8_0")
    assert "frozen base stored as q8_0" in proc.stderr
    rows = losses(out)
    assert rows[-1][1] < rows[0][1]
    assert erniekit("chat", out, "--prompt", "hello", "--max-new-tokens", "4").returncode == 0
    erniekit("export", out, "--merge-lora", "--out", tmp_path / "merged")
    _, _, model = restore(out)
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(0).integers(0, model.args.vocab_size, (2, 9)))
    np.testing.assert_allclose(
        load_model(tmp_path / "merged")(x).logits.numpy(), model(x).logits.numpy(), atol=1e-5
    )
