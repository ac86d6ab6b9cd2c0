"""A LoRA SFT run exported for other tools: transformers loads the merged model and generates what
`erniekit chat --prompt` does; peft loads the adapter onto the base; merged equals unmerged."""

import subprocess
import sys

import numpy as np
import paddle
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from erniekit.chat import reply
from erniekit.export.hf import export_hf
from erniekit.trainer.loop import Trainer
from erniekit.trainer.restore import restore
from tests.helpers import debug_recipe

PROMPT = "Reverse the letters of the word 'paddle'."


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """LoRA on a base that learned something first (a random tiny base's tied embeddings cap what
    adapters alone can express), as a user would fine-tune a pretrained model."""
    tmp = tmp_path_factory.mktemp("lora")
    base = debug_recipe(tmp / "base", "train.max_steps=60", "train.eval_every=0")
    Trainer(base).fit()
    export_hf(base.train.output_dir, tmp / "base_hf")
    recipe = debug_recipe(
        tmp,
        f"model.path={tmp / 'base_hf'}",
        "model.flavor=null",
        "model.tokenizer=null",
        "lora.enabled=true",
        "lora.targets=[q_proj, v_proj, o_proj, up_gate_proj, down_proj]",
        "optim.lr=3e-3",
        "train.max_steps=10",
        "data.max_seq_len=128",
        "train.eval_every=0",
    )
    Trainer(recipe).fit()
    return recipe.train.output_dir, tmp


def ids(vocab=1000):
    return np.random.RandomState(0).randint(0, vocab, (2, 10))


def test_merged_export_loads_in_transformers_and_generates_like_chat(run):
    out_dir, tmp = run
    merged = tmp / "merged"
    export_hf(out_dir, merged, merge_lora=True)
    _, tokenizer, ours = restore(out_dir)
    hf = AutoModelForCausalLM.from_pretrained(merged).eval()
    with torch.no_grad():
        ref = hf(torch.tensor(ids())).logits.numpy()
    np.testing.assert_allclose(ours(paddle.to_tensor(ids())).logits.numpy(), ref, atol=1e-4)

    prompt_ids, _ = tokenizer.encode_chat([{"role": "user", "content": PROMPT}], add_generation_prompt=True)
    hf_tokens = hf.generate(
        torch.tensor([prompt_ids]),
        max_new_tokens=24,
        do_sample=False,
        eos_token_id=tokenizer.stop_ids,
        pad_token_id=tokenizer.pad_id,
    )[0, len(prompt_ids) :]
    hf_text = tokenizer.decode([t for t in hf_tokens.tolist() if t not in tokenizer.stop_ids])
    cli = subprocess.run(
        [sys.executable, "-m", "erniekit", "chat", str(merged), "--prompt", PROMPT, "--max-new-tokens", "24"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert cli.stdout.rstrip("\n") == hf_text
    assert reply(tokenizer, ours, [{"role": "user", "content": PROMPT}], max_new_tokens=24) == hf_text
    assert "reversed" in hf_text  # the tiny model learned the reply's shape: the text is not noise


def test_adapter_export_loads_with_peft(run):
    out_dir, tmp = run
    adapter, merged = tmp / "adapter", tmp / "merged2"
    export_hf(out_dir, adapter, merge_lora=False)
    export_hf(out_dir, merged, merge_lora=True)
    base = AutoModelForCausalLM.from_pretrained(tmp / "base_hf").eval()
    with torch.no_grad():
        base_logits = base(torch.tensor(ids())).logits.numpy()
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        adapted = peft_model(torch.tensor(ids())).logits.numpy()
        ref = AutoModelForCausalLM.from_pretrained(merged).eval()(torch.tensor(ids())).logits.numpy()
    assert np.abs(adapted - base_logits).max() > 1e-3  # the adapter does something
    np.testing.assert_allclose(adapted, ref, atol=1e-4)


def test_sharded_bf16_export(run):
    out_dir, tmp = run
    out = export_hf(out_dir, tmp / "bf16", merge_lora=True, dtype="bfloat16", max_shard_size="100KB")
    assert (out / "model.safetensors.index.json").is_file() and len(list(out.glob("model-*.safetensors"))) > 2
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    _, _, ours = restore(out_dir)
    with torch.no_grad():
        ref = hf(torch.tensor(ids())).logits.numpy()
    assert np.abs(ours(paddle.to_tensor(ids())).logits.numpy() - ref).max() < 0.1  # bf16 rounding only
