"""A LoRA adapter trained by Hugging Face PEFT (a directory of adapter_config.json +
adapter_model.safetensors) served unmerged on erniekit's fused layers: the same logits and greedy tokens
as PEFT's own model, beside base-model rows in the same batch."""

import numpy as np
import paddle
import pytest
import torch
from peft import LoraConfig, get_peft_model

from erniekit.errors import CheckpointError
from erniekit.inference.adapters import adapter_factors, attach
from erniekit.inference.engine import Engine, Request
from erniekit.models import build_model, load_model
from tests.helpers import tiny_hf_model

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module", params=["llama", "ernie-dense"])
def adapter(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    hf = tiny_hf_model(request.param, tmp / "base")
    torch.manual_seed(1)
    # rsLoRA and a subset of the fused parts (k of q/k/v, gate of gate/up untouched) on Llama
    targets = (
        MODULES
        if request.param == "ernie-dense"
        else [m for m in MODULES if m not in ("k_proj", "gate_proj")]
    )
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_rslora=request.param == "llama")
    peft_model = get_peft_model(hf, config)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # trained-looking adapters: B away from zero
            torch.nn.init.normal_(p, std=0.4)
    peft_model.save_pretrained(tmp / "adapter")
    return peft_model.eval(), tmp


def test_peft_adapter_served_unmerged_equals_peft(adapter):
    peft_model, tmp = adapter
    base = load_model(tmp / "base")
    base.eval()
    selector = attach(base, {"mine": adapter_factors(tmp / "adapter", base)})
    x = np.random.RandomState(0).randint(0, 96, (2, 9))
    selector.select([1, 1])
    ours = base(paddle.to_tensor(x)).logits.numpy()
    with torch.no_grad():
        ref = peft_model(torch.tensor(x)).logits.numpy()
        with peft_model.disable_adapter():
            plain = peft_model(torch.tensor(x)).logits.numpy()
    assert np.abs(ref - plain).max() > 0.1  # the adapter changes the model
    assert np.abs(ours - ref).max() < 1e-4

    prompts = [[3, 17, 42, 8], [9, 33], [5, 5, 60, 2, 71]]
    engine = Engine(base, max_batch=4, max_model_len=32, adapters=selector)
    done = engine.run([Request(p, max_new_tokens=10, adapter=slot) for p in prompts for slot in (0, 1)])
    greedy = dict(max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    for i, p in enumerate(prompts):
        with torch.no_grad():
            want = peft_model.generate(input_ids=torch.tensor([p]), **greedy)[0, len(p) :].tolist()
            with peft_model.disable_adapter():
                want_base = peft_model.generate(input_ids=torch.tensor([p]), **greedy)[0, len(p) :].tolist()
        assert done[2 * i + 1].tokens == want and done[2 * i].tokens == want_base


def test_a_peft_adapter_for_another_model_is_refused(adapter, tmp_path):
    import json
    import shutil

    _, tmp = adapter
    with pytest.raises(CheckpointError, match="does not fit|names no linear"):
        adapter_factors(tmp / "adapter", build_model("ernie4_5/debug", seed=0))  # another width
    shutil.copytree(tmp / "adapter", tmp_path / "ia3")
    config = json.loads((tmp_path / "ia3/adapter_config.json").read_text())
    (tmp_path / "ia3/adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(CheckpointError, match="IA3 adapter; only LoRA"):
        adapter_factors(tmp_path / "ia3", load_model(tmp / "base"))
