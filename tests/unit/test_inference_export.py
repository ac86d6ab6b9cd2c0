"""Paddle Inference export: the static program's logits equal the trained model's (LoRA merged)."""

import json

import numpy as np
import paddle
import pytest

from erniekit.export.paddle_inference import export_paddle_inference, load_predictor
from erniekit.trainer.loop import Trainer
from erniekit.trainer.restore import restore
from tests.helpers import debug_recipe


@pytest.mark.parametrize(
    "extra",
    [["model.flavor=ernie4_5/debug-moe"], ["lora.enabled=true", "optim.lr=1e-2"]],
    ids=["moe-full", "dense-lora"],
)
def test_static_program_matches(tmp_path, extra):
    recipe = debug_recipe(tmp_path, "train.max_steps=2", "data.max_seq_len=64", "train.eval_every=0", *extra)
    Trainer(recipe).fit()
    out = export_paddle_inference(recipe.train.output_dir, tmp_path / "static")
    assert {"model.json", "model.pdiparams", "erniekit_inference.json", "tokenizer.model"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "erniekit_inference.json").read_text())["vocab_size"] == 1024
    _, _, model = restore(recipe.train.output_dir)
    ids = np.random.RandomState(0).randint(0, 1000, (2, 7)).astype(np.int64)
    np.testing.assert_allclose(
        load_predictor(out)(ids), model(paddle.to_tensor(ids)).logits.numpy(), atol=1e-5
    )
