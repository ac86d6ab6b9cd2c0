"""A reward model as the programs that consume it see it: transformers loads the export as a sequence
classifier and scores padded batches as erniekit does (Llama family, full and LoRA-merged); for ERNIE 4.5,
which transformers has no sequence classifier for, its decoder's hidden state times the exported score
weight gives the same scores."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoModel, AutoModelForSequenceClassification

from erniekit.export.hf import export_hf
from erniekit.rl.reward_model import RewardModel
from erniekit.trainer.loop import Trainer
from tests.helpers import debug_recipe

QUESTIONS = ["What is 7 times 6?", "把这个词翻译成英文：山", "Name a primary colour."]
REPLIES = ["42.", "I don't know.", "Ask someone else, I am busy today.", "“山”的英文是 mountain。"]


def train_rm(tmp, *overrides):
    recipe = debug_recipe(
        tmp, "train.max_steps=12", "train.eval_every=0", *overrides, recipe="ernie4_5/debug_rm"
    )
    Trainer(recipe).fit()
    export_hf(recipe.train.output_dir, tmp / "hf")
    return recipe.train.output_dir, tmp / "hf"


def conversations():
    return [
        [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
        for q in QUESTIONS
        for r in REPLIES
    ]


def padded(rm: RewardModel, seqs):
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), rm.tokenizer.pad_id)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, (ids != rm.tokenizer.pad_id).long()


@pytest.mark.parametrize("lora", [False, True])
def test_llama_export_scores_equal_in_transformers(tmp_path, lora):
    extra = ["model.flavor=llama/debug"] + (["lora.enabled=true", "optim.lr=1e-2"] if lora else [])
    run, export = train_rm(tmp_path, *extra)
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["num_labels"] == 1
    assert not (export / "adapter_config.json").exists()  # a LoRA reward model is exported merged
    ours = RewardModel.load(export)
    seqs = [ours.encode(c) for c in conversations()]
    scores = ours.score_ids(seqs)
    np.testing.assert_allclose(RewardModel.load(run).score_ids(seqs), scores, rtol=1e-5, atol=1e-6)
    hf = AutoModelForSequenceClassification.from_pretrained(export).eval()
    with torch.no_grad():
        reference = hf(*padded(ours, seqs)).logits[:, 0].numpy()
    np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-5)
    assert np.ptp(scores) > 0.05  # the replies are told apart


def test_ernie_export_scores_equal_its_decoder_times_the_score_weight(tmp_path):
    _, export = train_rm(tmp_path)
    ours = RewardModel.load(export)
    seqs = [ours.encode(c) for c in conversations()]
    scores = ours.score_ids(seqs)
    weight = load_file(str(export / "model.safetensors"))["score.weight"]  # [1, hidden], HF's layout
    decoder = AutoModel.from_pretrained(export).eval()
    ids, mask = padded(ours, seqs)
    with torch.no_grad():
        hidden = decoder(ids, attention_mask=mask).last_hidden_state.numpy()
    last = mask.numpy().cumsum(1).argmax(1)  # the last real token of each row
    reference = hidden[np.arange(len(seqs)), last] @ weight[0]
    np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-5)
