"""Continued pre-training data: documents closed with end-of-text, concatenated and cut into rows of
max_seq_len predicted tokens with nothing padded, every token trained; .txt files and records with
other keys; a record without the text field is named."""

import json

import pytest

from erniekit.data.tokenize import IGNORE
from erniekit.errors import DataError
from erniekit.methods.pt import rows_of
from erniekit.tokenizer import load_tokenizer
from tests.helpers import debug_recipe


def test_rows_predict_every_token_of_the_stream_once():
    stream = list(range(10))
    inputs, labels = rows_of(stream, 4)
    assert inputs == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert labels == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert [t for row in labels for t in row] == stream[1:]
    assert rows_of([5], 4) == ([], [])  # one token predicts nothing


def _method(tmp_path, files, *overrides):
    from erniekit.methods.pt import PT

    recipe = debug_recipe(
        tmp_path, "method.name=pt", "data.eval_holdout=0", "data.max_seq_len=16", *overrides,
        *(f"data.train=[{','.join(str(f) for f in files)}]",),
    )  # fmt: skip
    tokenizer = load_tokenizer("samples://ernie_tokenizer")
    return PT(recipe, tokenizer), tokenizer


def test_text_and_jsonl_documents_become_unpadded_rows(tmp_path):
    docs = ["the river is long", "a silver rocket", "winter garden candle"] * 3
    txt = tmp_path / "wiki.txt"
    txt.write_text("\n".join(docs[:4]) + "\n\n" + "\n".join(docs[4:]) + "\n")  # a blank line between
    jsonl = tmp_path / "c4.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    method, tok = _method(tmp_path, [txt, jsonl])
    stream = [t for d in docs for t in [*tok.encode(d), tok.eos_id]]
    for source in method.train_sources:
        assert [t for row in source.labels for t in row] == stream[1:]  # every token, in order, once
        assert all(len(row) == 16 for row in source.input_ids[:-1])  # only the last row is short
        assert all(label != IGNORE for row in source.labels for label in row)


def test_other_keys_and_a_record_without_them(tmp_path):
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": "Add 2 and 3.", "output": "5"}, {"title": "no text"}]))
    with pytest.raises(DataError, match=r"alpaca.json: record 1: no 'instruction' or 'output' field"):
        _method(tmp_path, [data], "method.text_keys=[instruction,output]")
    data.write_text(json.dumps([{"instruction": "Add 2 and 3.", "output": "5"}]))
    method, tok = _method(tmp_path, [data], "method.text_keys=[instruction,output]")
    assert method.train_sources[0].labels[0] == [*tok.encode("Add 2 and 3.\n5"), tok.eos_id][1:]
