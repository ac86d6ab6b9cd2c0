"""Data sources beyond JSON: Parquet, CSV, Arrow and datasets' save_to_disk directories read the same
records as the JSON they were made from (for SFT, PT, DPO pairs and prompt files); errors name the file
and the row; ``columns``/``tags`` read files whose keys differ from ours."""

import csv
import json
import shutil

import pytest

from erniekit.config import ConfigError
from erniekit.data.dataset import cached_dataset
from erniekit.data.files import ReadStats, read_records
from erniekit.data.formats import to_messages
from erniekit.data.prompts import read_prompts
from erniekit.errors import DataError
from erniekit.resources import resolve_path
from erniekit.tokenizer import load_tokenizer
from tests.helpers import debug_recipe

KINDS = ("parquet", "csv", "arrow-file", "arrow-stream", "saved", "saved-split")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("samples://ernie_tokenizer")


def sample(name: str) -> list[dict]:
    text = resolve_path(f"samples://{name}").read_text(encoding="utf-8")
    return json.loads(text) if name.endswith(".json") else [json.loads(line) for line in text.splitlines()]


def write(records: list[dict], path, kind: str) -> str:
    """``records`` as a file (or directory) of ``kind``; returns its path."""
    import pyarrow as pa

    table = pa.Table.from_struct_array(pa.array(records))  # keys of every record (from_pylist: the first's)
    if kind == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path, row_group_size=7)  # several row groups
    elif kind == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    elif kind.startswith("arrow"):
        with pa.OSFile(str(path), "wb") as sink:
            new = pa.ipc.new_file if kind == "arrow-file" else pa.ipc.new_stream
            with new(sink, table.schema) as writer:
                for batch in table.to_batches(max_chunksize=5):
                    writer.write_batch(batch)
    else:
        import datasets

        ds = datasets.Dataset.from_list(records)
        if kind == "saved-split":
            ds = datasets.DatasetDict({"train": ds})
        datasets.disable_progress_bars()
        ds.save_to_disk(str(path))
    return str(path)


def suffix(kind: str) -> str:
    return {"parquet": ".parquet", "csv": ".csv"}.get(kind, ".arrow" if kind.startswith("arrow") else "")


@pytest.mark.parametrize("kind", KINDS)
def test_every_table_kind_reads_the_records_it_was_made_from(tmp_path, kind):
    records = sample("sft_alpaca.json")  # flat, all strings: also CSV
    path = write(records, tmp_path / f"alpaca{suffix(kind)}", kind)
    read = list(read_records(path))
    assert [r.data for r in read] == records
    assert read[17].where == f"{path}{'[train]' if kind == 'saved-split' else ''} row 17"
    assert [r.data for r in read_records(path, limit=9)] == records[:9]  # data.train[i].max_samples


def test_rows_are_converted_a_batch_at_a_time_and_limit_crosses_batches(tmp_path):
    records = [{"text": f"document {i}"} for i in range(2500)]
    path = write(records, tmp_path / "big.parquet", "parquet")
    read = list(read_records(path, limit=1100))
    assert len(read) == 1100 and read[-1].data == {"text": "document 1099"}
    assert read[-1].where == f"{path} row 1099"


def test_nested_messages_and_nulls_read_as_the_json_they_came_from(tmp_path, tok):
    from erniekit.data.tokenize import TokenStats, encode_sft

    records = sample("sft_messages.jsonl")[:12]
    records[3]["messages"][1]["loss"] = False  # Arrow adds "loss": null to every other message
    records[5]["system"] = "Be brief."  # and "system": null to every other record
    path = write(records, tmp_path / "chat.parquet", "parquet")
    read = [r.data for r in read_records(path)]
    assert read == records
    for mine, theirs in zip(read, records):  # so the same turns are trained
        assert encode_sft(tok, to_messages(mine), 256, "drop", TokenStats()) == encode_sft(
            tok, to_messages(theirs), 256, "drop", TokenStats()
        )


def _examples(tmp_path, method: str, path: str, *overrides):
    """What ``method`` loads from ``path``: token ids of SFT/PT/DPO examples, or prompt records."""
    tokenizer = load_tokenizer("samples://ernie_tokenizer")
    recipe = debug_recipe(tmp_path, f"method.name={method}", "data.eval_holdout=0", f"data.train=[{path}]",
                          *overrides)  # fmt: skip
    spec = recipe.data.train[0]
    if method == "sft":
        from erniekit.methods.sft import load_sft_examples

        ex, _ = load_sft_examples(spec, recipe, tokenizer)
        return ex.input_ids, ex.labels
    if method == "pt":
        from erniekit.methods.pt import load_pt_examples

        ex, _ = load_pt_examples(spec, recipe, tokenizer)
        return ex.input_ids, ex.labels
    if method == "dpo":
        from erniekit.methods.pairs import load_pairs

        pairs, _ = load_pairs(spec, recipe, tokenizer)
        return pairs.prompt, pairs.chosen, pairs.rejected
    from erniekit.data.files import read_options

    prompts = read_prompts(spec.path, limit=spec.max_samples, **read_options(spec))
    return ([(r.messages, r.answer) for r in prompts],)


@pytest.mark.parametrize(
    ("method", "name", "kind"),
    [
        ("sft", "sft_alpaca.json", "csv"),
        ("sft", "sft_messages.jsonl", "parquet"),
        ("sft", "sft_erniekit.jsonl", "saved"),
        ("pt", "sft_alpaca.json", "arrow-stream"),
        ("dpo", "dpo_pairs.jsonl", "csv"),
        ("dpo", "dpo_erniekit.jsonl", "arrow-file"),
        ("grpo", "rl_arithmetic.jsonl", "parquet"),
    ],
)
def test_each_method_loads_the_same_examples_from_a_table_as_from_json(tmp_path, method, name, kind):
    table = write(sample(name), tmp_path / f"data{suffix(kind)}", kind)
    extra = {"pt": ["method.text_keys=[instruction,output]"], "grpo": ["train.grad_accum=1"]}.get(method, [])
    mine = _examples(tmp_path, method, table, *extra)
    assert mine == _examples(tmp_path, method, f"samples://{name}", *extra)
    assert all(len(column) >= 9 for column in mine)  # PT: 9 rows of 16 tokens


def test_a_missing_field_names_the_file_and_row(tmp_path, tok):
    records = sample("sft_alpaca.json")[:20]
    del records[17]["output"]
    path = write(records, tmp_path / "data.parquet", "parquet")

    def encode(record):
        return {"n": [len(to_messages(record.data, "alpaca"))]}

    args = ("sft", path, tok, {}, encode, ["n"], str(tmp_path / "cache"), False, None, ReadStats())
    with pytest.raises(
        DataError, match=r"^\S*data.parquet row 17: missing field 'output' \(alpaca format\)$"
    ):
        cached_dataset(*args)


def test_unreadable_tables_and_directories_are_one_line_errors(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"not a parquet file" * 4)
    (tmp_path / "junk.arrow").write_bytes(b"not arrow either" * 4)
    (tmp_path / "plain").mkdir()
    cases = {
        "junk.parquet": r"junk.parquet: cannot read as parquet: .*magic bytes",
        "junk.arrow": r"junk.arrow: cannot read as arrow: ",
        "plain": r"plain: a directory, but not one written by datasets' save_to_disk",
        "gone.parquet": r"gone.parquet: data file not found",
        "gone": r"gone: data file not found",
    }
    for name, message in cases.items():
        with pytest.raises(DataError, match=message) as info:
            list(read_records(str(tmp_path / name)))
        assert "\n" not in str(info.value)


def test_csv_rows_with_the_wrong_cell_count_stop_or_are_skipped(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,answer\nWhat is 1 + 1?,2\n"one, two",3,extra\n\nlast,4\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d.csv row 1: has 3 cells, the header 2"):
        list(read_records(str(path)))
    stats = ReadStats()
    read = list(read_records(str(path), skip_bad=True, stats=stats))
    assert [r.data for r in read] == [
        {"prompt": "What is 1 + 1?", "answer": "2"},
        {"prompt": "last", "answer": "4"},
    ]
    assert stats.skipped == [f"{path} row 1: has 3 cells, the header 2"]
    assert [r.where for r in read] == [f"{path} row 0", f"{path} row 2"]  # a blank line is no row


def test_a_dataset_dict_is_read_by_split_and_ambiguity_lists_the_splits(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    splits = {"train": [{"text": "a"}, {"text": "b"}], "test": [{"text": "c"}]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(
        str(tmp_path / "dd")
    )
    path = str(tmp_path / "dd")
    assert [r.data for r in read_records(path, split="test")] == [{"text": "c"}]
    assert [r.where for r in read_records(path, split="train")] == [
        f"{path}[train] row 0",
        f"{path}[train] row 1",
    ]
    with pytest.raises(
        DataError, match=r"dd: a DatasetDict with splits train, test; choose one .*split: train"
    ):
        list(read_records(path))
    with pytest.raises(DataError, match=r"dd: no split 'validation'; it has train, test"):
        list(read_records(path, split="validation"))
    single = write([{"text": "a"}], tmp_path / "single", "saved")
    with pytest.raises(DataError, match=r"single: split 'train' given, but only a saved DatasetDict"):
        list(read_records(single, split="train"))


def test_columns_and_tags_read_files_with_other_keys(tmp_path, tok):
    theirs = [{"question": r["instruction"], "context": r["input"], "answer": r["output"]}
              for r in sample("sft_alpaca.json")]  # fmt: skip
    path = write(theirs, tmp_path / "qa.csv", "csv")
    columns = {"instruction": "question", "input": "context", "output": "answer"}
    read = [r.data for r in read_records(path, columns=columns)]
    assert read == sample("sft_alpaca.json")
    with pytest.raises(
        DataError, match=r"qa.csv: no column 'reply' to read as 'output' \(its columns: question"
    ):
        list(read_records(path, columns={"output": "reply"}))
    # a swap happens at once, and keys nobody named stay
    swapped = next(read_records(path, columns={"question": "answer", "answer": "question"})).data
    assert swapped == {"question": theirs[0]["answer"], "answer": theirs[0]["question"], "context": ""}

    chat = [{"dialog": [{"speaker": "customer", "text": "Hi?"}, {"speaker": "agent", "text": "Hello."}]}]
    path = write(chat, tmp_path / "chat.jsonl.parquet", "parquet")
    tags = {"role": "speaker", "content": "text", "user": "customer", "assistant": "agent"}
    record = next(read_records(path, columns={"messages": "dialog"}, tags=tags))
    assert to_messages(record.data) == [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]


def test_the_cache_follows_the_table_and_how_it_is_read(tmp_path, tok):
    calls = []

    def encode(record):
        calls.append(record.where)
        return {"n": [len(record.data["output"])]}

    records = sample("sft_alpaca.json")[:5]
    theirs = [{"instruction": r["instruction"], "reply": r["output"]} for r in records]
    path = write(theirs, tmp_path / "d.parquet", "parquet")

    def build(columns):
        args = ("sft", path, tok, {}, encode, ["n"], str(tmp_path / "cache"), False, None, ReadStats())
        return cached_dataset(*args, reading={"split": None, "columns": columns, "tags": {}})

    assert build({"output": "reply"})["n"] == [[len(r["output"])] for r in records] and len(calls) == 5
    assert len(build({"output": "reply"})) == 5 and len(calls) == 5  # from cache
    # another mapping is another cache: the file is read again
    assert build({"output": "instruction"})["n"] == [[len(r["instruction"])] for r in records]
    assert len(calls) == 10
    write(theirs[:2], tmp_path / "d.parquet", "parquet")
    assert len(build({"output": "reply"})) == 2 and len(calls) == 12
    path = write(theirs, tmp_path / "saved", "saved")  # a directory: its files' bytes are the key
    assert len(build({"output": "reply"})) == 5 and len(calls) == 17
    shutil.rmtree(path)
    write(theirs[:3], tmp_path / "saved", "saved")
    assert len(build({"output": "reply"})) == 3 and len(calls) == 20


def test_recipes_check_column_and_tag_keys(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"data.train\[0\].columns: unknown key 'outptu'; the keys erniekit reads are src, tgt",
    ):
        debug_recipe(tmp_path, "data.train=[{path: a.parquet, columns: {outptu: answer}}]")
    with pytest.raises(
        ConfigError, match=r"eval.generation\[0\].tags: unknown key 'speaker'; .* role, content, user"
    ):
        debug_recipe(tmp_path, "eval.generation=[{path: a.parquet, tags: {speaker: who}}]")
    with pytest.raises(ConfigError, match=r"data.train\[0\].columns.output: expected a string, got int 3"):
        debug_recipe(tmp_path, "data.train=[{path: a.parquet, columns: {output: 3}}]")
    # pre-training reads the fields method.text_keys names, so they may be mapped too
    recipe = debug_recipe(tmp_path, "method.name=pt", "method.text_keys=[body]",
                          "data.train=[{path: a.parquet, columns: {body: content}}]")  # fmt: skip
    assert recipe.data.train[0].columns == {"body": "content"}
