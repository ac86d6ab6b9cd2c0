"""A LoRA VL-SFT run exported for other tools: transformers loads the merged model and peft the adapter
(decoder and vision-tower/resampler adapters), both giving our logits on an image prompt."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch
from peft import PeftModel
from PIL import Image
from transformers import AutoModelForImageTextToText

from erniekit.export.hf import export_hf
from erniekit.trainer.loop import Trainer
from erniekit.trainer.restore import recipe_processor, restore
from tests.helpers import debug_recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vl_lora")
    base = debug_recipe(
        tmp / "base", "train.max_steps=20", "train.eval_every=0", recipe="ernie4_5_vl/debug_sft"
    )
    Trainer(base).fit()
    export_hf(base.train.output_dir, tmp / "base_hf")
    recipe = debug_recipe(
        tmp,
        f"model.path={tmp / 'base_hf'}",
        "model.flavor=null",
        "model.tokenizer=null",
        "lora.enabled=true",
        "lora.targets=[q_proj, v_proj, o_proj, up_gate_proj, down_proj, vision_tower, resampler]",
        "optim.lr=3e-3",
        "train.max_steps=6",
        "train.eval_every=0",
        recipe="ernie4_5_vl/debug_sft",
    )
    Trainer(recipe).fit()
    return recipe.train.output_dir, tmp


def image_prompt(out_dir):
    recipe, _, model = restore(out_dir)
    processor = recipe_processor(recipe, model.args)
    picture = Image.fromarray((np.random.RandomState(0).rand(60, 90, 3) * 255).astype("uint8"))
    pics = processor([picture])
    v = model.args.vision
    ids = [5, 6, v.image_start_token_id, *[v.image_token_id] * pics.tokens(2)[0], v.image_end_token_id, 7, 8]
    return model, ids, pics


def reference_logits(hf, ids, pics, v):
    t = torch.tensor([ids])
    vision = sum(t == i for i in (v.image_token_id, v.image_start_token_id, v.image_end_token_id)).bool()
    with torch.no_grad():
        return hf(
            input_ids=t,
            pixel_values=torch.tensor(pics.pixel_values),
            image_grid_thw=torch.tensor(pics.grid_thw),
            mm_token_type_ids=(t == v.image_token_id).long(),
            moe_mm_token_type_ids=vision.long(),
        ).logits.numpy()


def our_logits(model, ids, pics):
    return model(
        paddle.to_tensor([ids]),
        pixel_values=paddle.to_tensor(pics.pixel_values),
        image_grid_thw=pics.grid_thw,
    ).logits.numpy()


def test_merged_export_loads_in_transformers(run):
    out_dir, tmp = run
    export_hf(out_dir, tmp / "merged", merge_lora=True)
    assert (tmp / "merged" / "preprocessor_config.json").is_file()
    model, ids, pics = image_prompt(out_dir)
    hf = AutoModelForImageTextToText.from_pretrained(tmp / "merged").eval()
    ref = reference_logits(hf, ids, pics, model.args.vision)
    base = AutoModelForImageTextToText.from_pretrained(tmp / "base_hf").eval()
    assert (
        np.abs(reference_logits(base, ids, pics, model.args.vision) - ref).max() > 1e-3
    )  # adapters did learn
    assert np.abs(our_logits(model, ids, pics) - ref).max() <= 1e-4


def test_adapter_export_loads_with_peft(run):
    out_dir, tmp = run
    export_hf(out_dir, tmp / "adapter")
    model, ids, pics = image_prompt(out_dir)
    base = AutoModelForImageTextToText.from_pretrained(tmp / "base_hf").eval()
    peft_model = PeftModel.from_pretrained(base, tmp / "adapter").eval()
    adapted = {n for n, _ in peft_model.named_modules() if n.endswith(".lora_A")}
    for where in (
        "vision_tower.blocks.0.attn.qkv",
        "resampler_model.spatial_linear.fc1",
        "layers.0.self_attn.q_proj",
    ):
        assert any(where in n for n in adapted), where  # vision tower, resampler and decoder adapters
    ref = reference_logits(peft_model, ids, pics, model.args.vision)
    assert np.abs(our_logits(model, ids, pics) - ref).max() <= 1e-4
