"""The real CLI on data beyond JSONL: the debug SFT recipe trains from a Parquet file whose columns have
other names (read through data.train[i].columns), interleaved with a JSONL file (data.mix), and a run
resumed mid-way, across an epoch boundary, logs the uninterrupted run's losses."""

import json

from erniekit.config import load_recipe
from erniekit.resources import resolve_path
from erniekit.tokenizer import load_tokenizer
from erniekit.trainer.metrics import read_metrics
from tests.helpers import erniekit

COLUMNS = "{instruction: question, input: context, output: answer}"


def write_parquet(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = json.loads(resolve_path("samples://sft_alpaca.json").read_text(encoding="utf-8"))
    theirs = [{"question": r["instruction"], "context": r["input"], "answer": r["output"]} for r in records]
    pq.write_table(pa.Table.from_pylist(theirs), path)


def overrides(tmp_path, columns=COLUMNS, mix="interleave_under"):
    return [
        f"data.train=[{{path: {tmp_path / 'alpaca.parquet'}, columns: {columns}}}, samples://sft_messages.jsonl]",
        f"data.mix={mix}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "logging.progress=none",
        "logging.visualdl=false",
    ]


def train(tmp_path, out, *extra):
    erniekit("train", "ernie4_5/debug_sft", f"train.output_dir={out}", *overrides(tmp_path), *extra)
    return read_metrics(out / "metrics.jsonl")


def rows_per_epoch(tmp_path, mix):
    from erniekit.methods.sft import SFT

    recipe = load_recipe("ernie4_5/debug_sft", overrides(tmp_path, mix=mix))
    return SFT(recipe, load_tokenizer(recipe.model.tokenizer)).loader.rows_per_epoch()


def test_parquet_with_columns_interleaved_trains_and_resumes_exactly(tmp_path):
    write_parquet(tmp_path / "alpaca.parquet")
    steps = ["train.max_steps=10", "train.eval_every=5"]
    rows = train(tmp_path, tmp_path / "run", *steps, "checkpoint.every=5")
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert len(losses) == 10 and losses[10] < 0.9 * losses[1]
    # the epoch the trainer logs is the interleaved one (the parquet file was read: 96 of its 120
    # records train, 24 are held out), not the random mix's
    under, random = rows_per_epoch(tmp_path, "interleave_under"), rows_per_epoch(tmp_path, "random")
    assert under != random
    first = next(r for r in rows if r["step"] == 1 and "loss" in r)
    assert first["epoch"] == 4 / under  # 2 micro-batches x 2 rows per step
    assert 5 * 4 < under < 10 * 4  # so the resumed steps 6..10 cross into the second epoch

    resumed = train(tmp_path, tmp_path / "again", *steps, f"train.resume={tmp_path / 'run' / 'checkpoint-5'}")
    again = {r["step"]: r["loss"] for r in resumed if "loss" in r}
    assert sorted(again) == [6, 7, 8, 9, 10] and all(again[s] == losses[s] for s in again)
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r and r["step"] == 10]
    assert evals == [(r["step"], r["eval_loss"]) for r in resumed if "eval_loss" in r and r["step"] == 10]


def test_a_column_the_table_lacks_is_a_one_line_error(tmp_path):
    write_parquet(tmp_path / "alpaca.parquet")
    proc = erniekit(
        "train", "ernie4_5/debug_sft", f"train.output_dir={tmp_path / 'run'}",
        *overrides(tmp_path, columns="{output: reply}"), fails=True,
    )  # fmt: skip
    assert (
        "alpaca.parquet: no column 'reply' to read as 'output' (its columns: question, context, answer)"
        in (proc.stderr)
    )
