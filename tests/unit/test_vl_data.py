"""VL training data: record layouts with images, file:line errors, packing with images, the image cache."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from PIL import Image

from erniekit.data.formats import to_messages
from erniekit.data.tokenize import IGNORE
from erniekit.errors import DataError
from erniekit.methods.base import media_kwargs
from erniekit.methods.sft import SFT
from erniekit.models import flavor_args
from erniekit.trainer.restore import model_from_recipe
from tests.helpers import debug_recipe

V = flavor_args("ernie4_5_vl/debug").vision


def image(kind: str, name: str) -> dict:
    return {"type": kind, kind: name}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def test_erniekit_vl_records():
    record = {
        "is_system": 1,
        "image_info": [
            {"matched_text_index": 1, "image_url": "a.png"},
            {"matched_text_index": 1, "image_url": "b.png"},
        ],
        "video_info": [{"matched_text_index": 3, "image_url": ["f0.png", "f1.png"]}],
        "text_info": [
            {"text": "Be exact.", "tag": "mask"},
            {"text": "Compare them.", "tag": "mask"},
            {"text": "The first is red.", "tag": "no_mask"},
            {"text": "And this clip?", "tag": "mask"},
            {"text": "A ball rolls.", "tag": "no_mask"},
        ],
    }
    assert to_messages(record) == [
        {"role": "system", "content": "Be exact."},
        {
            "role": "user",
            "content": [image("image", "a.png"), image("image", "b.png"), text("Compare them.")],
        },
        {"role": "assistant", "content": "The first is red."},
        {"role": "user", "content": [image("video", ["f0.png", "f1.png"]), text("And this clip?")]},
        {"role": "assistant", "content": "A ball rolls."},
    ]
    for broken, error in (
        ({**record, "image_info": [{"matched_text_index": 2, "image_url": "a.png"}]}, "belong to prompts"),
        (
            {**record, "image_info": [{"matched_text_index": 9, "image_url": "a.png"}]},
            "not an index of text_info",
        ),
        (
            {**record, "video_info": [{"matched_text_index": 3, "image_url": "clip.mp4"}]},
            "files are not decoded",
        ),
    ):
        with pytest.raises(ValueError, match=error):
            to_messages(broken)


def test_query_response_and_llamafactory_tags():
    qr = {"query": "<image>What is it?", "response": "A cat.", "history": [["Hi <image>", "Hello."]]}
    qr["images"] = ["h.png", "q.png"]
    assert to_messages(qr) == [
        {"role": "user", "content": [text("Hi "), image("image", "h.png")]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [image("image", "q.png"), text("What is it?")]},
        {"role": "assistant", "content": "A cat."},
    ]
    turns = [{"role": "user", "content": "<image><image>Same?"}, {"role": "assistant", "content": "No."}]
    lf = {"messages": turns, "images": ["a.png", "b.png"]}
    assert to_messages(lf)[0]["content"] == [image("image", "a.png"), image("image", "b.png"), text("Same?")]
    with pytest.raises(ValueError, match=r"more <image> tags than entries in 'images' \(1\)"):
        to_messages({**lf, "images": ["a.png"]})
    with pytest.raises(ValueError, match="'images' lists 3 but the text has 2 <image> tags"):
        to_messages({**lf, "images": ["a.png", "b.png", "c.png"]})


def test_preference_pairs_and_rl_prompts_take_images_in_the_same_shapes():
    from erniekit.data.preference import to_pair_messages
    from erniekit.data.prompts import to_prompt_messages

    parts = [{"role": "user", "content": [image("image", "a.png"), text("Colour?")]}]
    want = parts
    tagged = {"prompt": "<image>Colour?", "images": ["a.png"]}
    lf_turns = {"messages": [{"role": "user", "content": "<image>Colour?"}], "images": ["a.png"]}
    for record in ({"prompt": parts}, tagged, {"prompt": lf_turns["messages"], "images": ["a.png"]}):
        assert to_pair_messages({**record, "chosen": "blue", "rejected": "red"}) == (want, "blue", "red")
        assert to_prompt_messages({**record, "answer": "blue"}) == want
    lf = {
        **lf_turns,
        "chosen": {"role": "assistant", "content": "blue"},
        "rejected": {"role": "assistant", "content": "red"},
    }
    assert to_pair_messages(lf) == (want, "blue", "red")  # LLaMA-Factory's DPO layout
    for broken in ({**tagged, "images": []}, {**tagged, "images": ["a.png", "b.png"]}):
        with pytest.raises(ValueError, match="<image>"):
            to_pair_messages({**broken, "chosen": "blue", "rejected": "red"})
        with pytest.raises(ValueError, match="<image>"):
            to_prompt_messages(broken)


def _pictures(tmp_path, n=4):
    rs = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray((rs.rand(56, 56 + 28 * (i % 2), 3) * 255).astype("uint8")).save(
            tmp_path / f"p{i}.png"
        )


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _vl_rows(n=4):
    def turns(i):
        return [
            {"role": "user", "content": f"<image>Picture {i}?"},
            {"role": "assistant", "content": f"Number {i}."},
        ]

    return [{"messages": turns(i), "images": [f"p{i}.png"]} for i in range(n)]


def _method(tmp_path, data, *overrides):
    recipe = debug_recipe(
        tmp_path,
        f"data.train=[{data}]",
        "data.eval_holdout=0",
        "data.max_seq_len=128",
        *overrides,
        recipe="ernie4_5_vl/debug_sft",
    )
    tokenizer, model = model_from_recipe(recipe)
    return SFT(recipe, tokenizer, model), model


def test_a_missing_image_is_a_file_line_error(tmp_path):
    _pictures(tmp_path)
    rows = _vl_rows()
    rows[2]["images"] = ["nope.png"]
    data = _write(tmp_path / "vl.jsonl", rows)
    with pytest.raises(DataError, match=r"vl\.jsonl:3: .*nope\.png: image file not found"):
        _method(tmp_path, data)


def test_packed_images_train_like_each_document_alone(tmp_path):
    """Two documents with images packed in one row: each keeps its 3D positions from 0 and sees only
    itself, so its token losses equal those of the document alone; image tokens are never targets."""
    _pictures(tmp_path)
    data = _write(tmp_path / "vl.jsonl", _vl_rows(2))
    method, model = _method(tmp_path, data, "data.shuffle=false")
    model.eval()
    row = [(0, 0), (0, 1)]
    packed = method._materialize([row], method.train_sources)
    assert packed["position_ids"].shape[0] == 3 and packed["image_grid_thw"].shape == [2, 3]
    ids, labels = packed["input_ids"].numpy()[0], packed["labels"].numpy()[0]
    targets = labels[labels != IGNORE]
    assert not np.isin(targets, [V.image_token_id, V.image_start_token_id]).any()
    assert (labels[np.isin(ids, [V.image_token_id, V.image_start_token_id])] == IGNORE).all()
    nll, _ = method.token_nll(model, packed)
    together = nll.numpy()[0][labels != IGNORE]
    alone = []
    for item in row:
        batch = method._materialize([[item]], method.train_sources)
        n, _ = method.token_nll(model, batch)
        alone.append(n.numpy()[0][batch["labels"].numpy()[0] != IGNORE])
    np.testing.assert_allclose(together, np.concatenate(alone), rtol=1e-5, atol=1e-5)
    assert set(media_kwargs(packed)) == {"pixel_values", "image_grid_thw"}


def test_the_cache_rebuilds_when_an_image_changes(tmp_path, caplog):
    _pictures(tmp_path, 2)
    data = _write(tmp_path / "vl.jsonl", _vl_rows(2))
    before = _method(tmp_path, data)[0].train_sources[0][0][2].pixel_values.copy()
    Image.fromarray(np.zeros((56, 56, 3), "uint8")).save(tmp_path / "p0.png")
    with caplog.at_level("INFO"):
        after = _method(tmp_path, data)[0].train_sources[0][0][2].pixel_values
    assert "files its records point to changed" in caplog.text
    assert not np.array_equal(before, after)


def test_text_files_mix_into_a_vl_run(tmp_path):
    _pictures(tmp_path, 2)
    data = _write(tmp_path / "vl.jsonl", _vl_rows(2))
    method, model = _method(tmp_path, f"{data}, samples://sft_alpaca.json")
    text_example = method.train_sources[1][0]
    assert text_example[2] is None and text_example[3] is None
    batch = method._materialize([[(1, 0)], [(0, 0)]], method.train_sources)
    assert batch["image_grid_thw"].shape == [1, 3]
    nll, _ = method.token_nll(model, batch)
    assert paddle.isfinite(nll).all()
