"""Data pipeline: file errors, formats, tokenization/truncation, packing, the resumable loader, caching."""

import json

import numpy as np
import pytest

from erniekit.data.dataset import cached_dataset
from erniekit.data.files import ReadStats, read_records
from erniekit.data.formats import to_messages
from erniekit.data.loader import RowLoader
from erniekit.data.packing import collate, pack
from erniekit.data.tokenize import IGNORE, TokenStats, encode_sft
from erniekit.errors import DataError
from erniekit.tokenizer import load_tokenizer

TOKENIZER = "samples://ernie_tokenizer"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(TOKENIZER)


def write_lines(path, lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return str(path)


def test_malformed_line_names_file_and_line(tmp_path):
    good = json.dumps({"src": "a", "tgt": "b"})
    path = write_lines(tmp_path / "d.jsonl", [good, "", good, '{"src": "a", "tgt": ', good])
    with pytest.raises(DataError, match=r"d.jsonl:4: malformed JSON"):
        list(read_records(path))
    stats = ReadStats()
    assert len(list(read_records(path, skip_bad=True, stats=stats))) == 3
    assert len(stats) == 1 and "d.jsonl:4" in stats.skipped[0]


def test_non_utf8_and_non_object_lines(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [b'{"src": "\xff\xfe"}'])
    with pytest.raises(DataError, match=r"d.jsonl:1: not valid UTF-8"):
        list(read_records(path))
    path = write_lines(tmp_path / "e.jsonl", ["[1, 2]"])
    with pytest.raises(DataError, match=r"e.jsonl:1: malformed JSON: expected a JSON object, got list"):
        list(read_records(path))
    with pytest.raises(DataError, match="nope.jsonl: data file not found"):
        list(read_records(str(tmp_path / "nope.jsonl")))


def test_formats():
    assert to_messages({"src": ["q1", "q2"], "tgt": ["a1", "a2"], "system": "s", "label": [0, 1]}) == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "loss": False},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2", "loss": True},
    ]
    assert to_messages({"instruction": "do", "input": "x", "output": "y"}) == [
        {"role": "user", "content": "do\nx"},
        {"role": "assistant", "content": "y"},
    ]
    assert to_messages(
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    ) == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"src": ["a", "b"], "tgt": ["x"]}, "src has 2 turns but tgt has 1"),
        ({"instruction": "a"}, "cannot tell the format"),
        ({"instruction": "a", "output": 3}, "field 'output' must be a string"),
        ({"messages": []}, "empty conversation"),
        ({"messages": [{"role": "user", "content": "q"}]}, "does not end with an assistant reply"),
        (
            {"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "message 0 has role 'robot'",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]},
            "message 1 has role 'user' where 'assistant' belongs",
        ),
    ],
)
def test_format_errors(record, error):
    with pytest.raises(ValueError, match=error):
        to_messages(record)


def test_labels_are_shifted_and_only_on_replies(tok):
    msgs = to_messages({"src": ["What is 2 + 3?"], "tgt": ["2 + 3 = 5."]})
    inputs, labels = encode_sft(tok, msgs, 512, "drop", TokenStats())
    ids, _ = tok.encode_chat(msgs)
    assert inputs == ids[:-1] and len(labels) == len(inputs)
    target = [t for t in labels if t != IGNORE]
    assert tok.decode(target, skip_special=False) == "2 + 3 = 5.<|end_of_sentence|>"
    assert target[-1] in tok.stop_ids  # the model learns to stop


def test_truncation_policies(tok):
    turns = [f"question number {i} is long enough" for i in range(6)]
    msgs = to_messages({"src": turns, "tgt": [f"answer {i}" for i in range(6)], "system": "sys"})
    full = len(tok.encode_chat(msgs)[0]) - 1
    stats = TokenStats()
    assert encode_sft(tok, msgs, full - 5, "drop", stats) is None and stats.dropped_overlong == 1
    inputs, labels = encode_sft(tok, msgs, full - 5, "right", stats)
    assert len(inputs) == full - 5 and stats.truncated == 1
    inputs, labels = encode_sft(tok, msgs, full - 5, "turns", stats)
    text = tok.decode(inputs)
    assert len(inputs) <= full - 5 and text.startswith("sys\n") and "question number 0" not in text
    assert "answer 5" in tok.decode([t for t in labels if t != IGNORE])


def test_pack_and_collate():
    lengths = [5, 3, 8, 2, 7, 1, 4]
    rows = pack(lengths, 10)
    assert sorted(i for r in rows for i in r) == list(range(7))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
    assert rows == pack(lengths, 10)
    batch = collate([[([1, 2, 3], [2, 3, -100]), ([4, 5], [5, -100])], [([6], [-100])]], pad_id=0, length=6)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 0, 0, 0, 0, 0]]
    assert batch["segment_ids"].tolist() == [[1, 1, 1, 2, 2, 0], [1, 0, 0, 0, 0, 0]]
    assert batch["labels"][1].tolist() == [-100] * 6


def _loader(**kw):
    lengths = [np.array([3, 5, 2, 7, 4, 6, 1, 8]), np.array([2, 2, 9, 3])]
    args = dict(lengths=lengths, weights=[1.0, 3.0], max_len=10, packing=True, seed=5)
    return RowLoader(**{**args, **kw})


def test_loader_is_deterministic_and_resumes_exactly():
    a = _loader()
    first = [a.next_rows(3) for _ in range(4)]
    again = _loader()
    assert [again.next_rows(3) for _ in range(4)] == first
    b = _loader()
    b.next_rows(3), b.next_rows(3)
    state = b.state_dict()
    c = _loader()
    c.set_state_dict(state)
    assert [c.next_rows(3) for _ in range(2)] == first[2:]
    assert a.epoch > 1.0  # 12 rows cross the epoch boundary and keep going


def test_loader_ranks_split_the_global_sequence():
    single = _loader().next_rows(4)
    r0, r1 = _loader(rank=0, world=2).next_rows(2), _loader(rank=1, world=2).next_rows(2)
    assert r0 + r1 == single


def test_loader_mixes_by_weight():
    lengths = [np.ones(1000, int), np.ones(1000, int)]
    loader = RowLoader(lengths, [1.0, 3.0], max_len=1, packing=False, seed=0)
    sources = [row[0][0] for row in loader.next_rows(2000)]
    assert 0.22 < sources.count(0) / 2000 < 0.28


def test_dataset_cache_is_reused_and_invalidated(tmp_path, tok):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({"src": "q", "tgt": f"a{i}"}) for i in range(5)])
    calls = []

    def encode(record):
        calls.append(record.where)
        return {"n": [len(record.data["tgt"])]}

    class Stats:
        skipped = ()

        def as_dict(self):
            return {}

    args = ("sft-test", path, tok, {"x": 1}, encode, ("n",), str(tmp_path / "cache"), False, None, Stats())
    assert len(cached_dataset(*args)) == 5 and len(calls) == 5
    assert len(cached_dataset(*args)) == 5 and len(calls) == 5  # from cache
    write_lines(tmp_path / "d.jsonl", [json.dumps({"src": "q", "tgt": "b"})])
    assert len(cached_dataset(*args)) == 1 and len(calls) == 6
