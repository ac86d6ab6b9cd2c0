"""Reading data records (JSON, JSONL, text, Parquet, CSV, Arrow, saved datasets) with errors that name
the file and the line or row.

``samples://NAME`` resolves to a file bundled with erniekit (:mod:`erniekit.resources`). A JSONL file
holds one object per line (blank lines allowed); a ``.json`` file holds one array of objects; a ``.txt``
file one document per non-empty line (raw text for continued pre-training).

Tables are read a batch of rows at a time, each row one record: ``.parquet`` and ``.arrow`` (Arrow IPC,
file or stream format, as ``datasets`` writes) through ``pyarrow``, ``.csv`` (a header line, then one
record per row, every cell kept as the text it is) with Python's ``csv`` module, and a directory written
by ``datasets``' ``save_to_disk`` through ``datasets.load_from_disk`` (a DatasetDict's split is chosen by
``split``). These libraries are imported only when such a file is read, and nothing is copied or
converted on disk. A table's nulls (also the keys Arrow adds to nested objects that lack them) read as
absent keys, so a row behaves as the JSON object it was made from. Errors name ``FILE row N``, N counting
data rows from 0 (``ds[N]``, ``df.iloc[N]``).

``columns`` and ``tags`` (:mod:`erniekit.data.columns`) rename keys as records are read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from erniekit.data.columns import rename
from erniekit.errors import DataError
from erniekit.resources import resolve_path

TABLE_SUFFIXES = (".parquet", ".csv", ".arrow")
BATCH_ROWS = 1024  # rows converted to Python objects at a time


def resolve_data_path(path: str) -> Path:
    """The file (or ``save_to_disk`` directory) a data path names; DataError when there is none."""
    resolved = resolve_path(path)
    if resolved.is_dir():
        if not (resolved / "dataset_dict.json").is_file() and not (resolved / "state.json").is_file():
            raise DataError(
                f"{path}: a directory, but not one written by datasets' save_to_disk "
                "(it has no dataset_dict.json or state.json)"
            )
        return resolved
    if not resolved.is_file():
        raise DataError(f"{path}: data file not found")
    return resolved


def read_options(spec) -> dict:
    """The keyword arguments of :func:`read_records` a DatasetSpec sets."""
    return {"split": spec.split, "columns": spec.columns, "tags": spec.tags}


def fingerprint(file: Path) -> bytes:
    """What a cache of ``file``'s records depends on: its bytes, or a directory's files' names and bytes
    (hashed a block at a time: a saved dataset may be larger than memory)."""
    if file.is_file():
        return file.read_bytes()
    digest = hashlib.sha256()
    for item in sorted(p for p in file.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(file)).encode() + b"\0")
        with item.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return digest.digest()


@dataclass
class ReadStats:
    """What was skipped while reading (only with skip_bad_lines)."""

    skipped: list[str] = field(default_factory=list)  # "file:line: reason"

    def __len__(self) -> int:
        return len(self.skipped)


@dataclass(frozen=True)
class Record:
    where: str  # "file:line" (JSONL), "file: record N" (JSON array), "file row N" (tables), for messages
    data: dict


def read_records(
    path: str,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
    limit: int | None = None,
    *,
    split: str | None = None,
    columns: dict | None = None,
    tags: dict | None = None,
) -> Iterator[Record]:
    """Yield the records of a file, keys renamed by ``columns``/``tags``; malformed ones raise DataError
    (or are counted in ``stats``). ``split`` picks a saved DatasetDict's split."""
    file = resolve_data_path(path)
    if split is not None and not (file / "dataset_dict.json").is_file():
        raise DataError(f"{path}: split {split!r} given, but only a saved DatasetDict directory has splits")
    columns, tags = columns or {}, tags or {}
    for record in _read(path, file, skip_bad, stats, limit, split, columns):
        yield Record(record.where, rename(record.data, columns, tags)) if columns or tags else record


def _read(path, file: Path, skip_bad, stats, limit, split, columns) -> Iterator[Record]:
    if file.is_dir():
        yield from _read_saved(path, file, split, limit, columns)
        return
    if file.suffix in TABLE_SUFFIXES:
        reader = _read_csv if file.suffix == ".csv" else _read_arrow
        yield from reader(path, file, skip_bad, stats, limit, columns)
        return
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    if file.suffix == ".json":
        yield from _read_json_array(path, raw, skip_bad, stats, limit)
        return
    if file.suffix == ".txt":
        yield from _read_text_lines(path, raw, limit)
        return
    count = 0
    for line_no, line in enumerate(raw.split(b"\n"), start=1):
        if limit is not None and count >= limit:
            return
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            data = json.loads(line.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        except UnicodeDecodeError as e:
            _bad(where, f"not valid UTF-8 (byte {e.start})", skip_bad, stats)
            continue
        except ValueError as e:
            _bad(where, f"malformed JSON: {e}", skip_bad, stats)
            continue
        count += 1
        yield Record(where, data)


def _read_json_array(path, raw, skip_bad, stats, limit) -> Iterator[Record]:
    try:
        items = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: a .json data file must hold an array of records")
    for i, data in enumerate(items[:limit] if limit is not None else items):
        where = f"{path}: record {i}"
        if not isinstance(data, dict):
            _bad(where, f"expected a JSON object, got {type(data).__name__}", skip_bad, stats)
            continue
        yield Record(where, data)


def _read_text_lines(path, raw: bytes, limit) -> Iterator[Record]:
    """A plain text file: one document per non-empty line, as a ``{"text": line}`` record."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    count = 0
    for line_no, line in enumerate(text.split("\n"), start=1):
        if limit is not None and count >= limit:
            return
        if line.strip():
            count += 1
            yield Record(f"{path}:{line_no}", {"text": line.rstrip("\r")})


def _read_csv(path, file: Path, skip_bad, stats, limit, columns) -> Iterator[Record]:
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    csv.field_size_limit(2**31 - 1)  # documents longer than the module's default 128 KiB cell limit
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise DataError(f"{path}: header line: {e}") from None
    if not header:
        raise DataError(f"{path}: empty CSV file (no header line)")
    _check_columns(path, header, columns)
    count, row = 0, -1
    while limit is None or count < limit:
        where = f"{path} row {row + 1}"
        try:
            cells = next(reader, None)
        except csv.Error as e:
            raise DataError(f"{where}: malformed CSV: {e}") from None
        if cells is None:
            return
        if not cells:
            continue  # a blank line is no row (as pandas and datasets read CSV)
        row += 1
        if len(cells) != len(header):
            _bad(where, f"has {len(cells)} cells, the header {len(header)}", skip_bad, stats)
            continue
        count += 1
        yield Record(where, dict(zip(header, cells)))


def _read_arrow(path, file: Path, skip_bad, stats, limit, columns) -> Iterator[Record]:
    """Parquet and Arrow IPC files, a batch of rows at a time (nothing but the batch in memory)."""
    import pyarrow as pa

    try:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(str(file))
            names, batches = parquet.schema_arrow.names, parquet.iter_batches(batch_size=BATCH_ROWS)
        else:
            source = pa.memory_map(str(file))
            try:
                reader = pa.ipc.open_file(source)
                names = reader.schema.names
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            except pa.ArrowInvalid:  # not the file format: the stream format datasets writes
                source.seek(0)
                reader = pa.ipc.open_stream(source)
                names, batches = reader.schema.names, iter(reader)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read as {file.suffix[1:]}: {_first_line(e)}") from None
    _check_columns(path, names, columns)
    yield from _table_rows(path, batches, limit, lambda b: b.to_pylist())


def _read_saved(path, file: Path, split, limit, columns) -> Iterator[Record]:
    """A ``datasets`` save_to_disk directory: one Dataset, or a DatasetDict's split."""
    where = path
    if (file / "dataset_dict.json").is_file():
        try:
            splits = json.loads((file / "dataset_dict.json").read_text())["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            splits = None
        if not isinstance(splits, list) or not splits:
            raise DataError(f"{path}: dataset_dict.json does not list the splits")
        if split is None and len(splits) != 1:
            raise DataError(
                f"{path}: a DatasetDict with splits {', '.join(splits)}; choose one with the file's "
                f"split option (split: {splits[0]})"
            )
        split = splits[0] if split is None else split
        if split not in splits:
            raise DataError(f"{path}: no split {split!r}; it has {', '.join(splits)}")
        file, where = file / split, f"{path}[{split}]"
    import datasets

    try:
        ds = datasets.load_from_disk(str(file)).with_format("arrow")
    except (OSError, ValueError) as e:
        raise DataError(f"{where}: cannot load the saved dataset: {_first_line(e)}") from None
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"{where}: expected one dataset, found a DatasetDict")
    _check_columns(where, ds.column_names, columns)
    n = len(ds) if limit is None else min(limit, len(ds))
    batches = (ds[start : min(start + BATCH_ROWS, n)] for start in range(0, n, BATCH_ROWS))
    yield from _table_rows(where, batches, None, lambda b: b.to_pylist())


def _table_rows(where, batches, limit, to_rows) -> Iterator[Record]:
    import pyarrow as pa

    row = 0
    try:
        for batch in batches:
            for data in to_rows(batch):
                if limit is not None and row >= limit:
                    return
                yield Record(f"{where} row {row}", _without_nulls(data))
                row += 1
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{where} row {row}: cannot read: {_first_line(e)}") from None


def _without_nulls(value):
    """Drop null-valued keys of (nested) objects: the table's form of an absent key."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _check_columns(where: str, names: list[str], columns: dict) -> None:
    missing = [(ours, theirs) for ours, theirs in columns.items() if theirs not in names]
    if missing:
        ours, theirs = missing[0]
        raise DataError(
            f"{where}: no column {theirs!r} to read as {ours!r} (its columns: {', '.join(names)})"
        )


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _bad(where: str, reason: str, skip_bad: bool, stats: ReadStats | None) -> None:
    if not skip_bad:
        raise DataError(f"{where}: {reason}")
    if stats is not None:
        stats.skipped.append(f"{where}: {reason}")
