"""Reading JSON / JSONL record files with errors that name the file and line.

``samples://NAME`` resolves to a file bundled with erniekit (:mod:`erniekit.resources`). A JSONL file
holds one object per line (blank lines allowed); a ``.json`` file holds one array of objects; a ``.txt``
file one document per non-empty line (raw text for continued pre-training).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from erniekit.errors import DataError
from erniekit.resources import resolve_path


def resolve_data_path(path: str) -> Path:
    resolved = resolve_path(path)
    if not resolved.is_file():
        raise DataError(f"{path}: data file not found")
    return resolved


@dataclass
class ReadStats:
    """What was skipped while reading (only with skip_bad_lines)."""

    skipped: list[str] = field(default_factory=list)  # "file:line: reason"

    def __len__(self) -> int:
        return len(self.skipped)


@dataclass(frozen=True)
class Record:
    where: str  # "file:line" (JSONL) or "file:record N" (JSON array), for messages
    data: dict


def read_records(
    path: str, skip_bad: bool = False, stats: ReadStats | None = None, limit: int | None = None
) -> Iterator[Record]:
    """Yield the records of a file; malformed ones raise DataError (or are counted in ``stats``)."""
    file = resolve_data_path(path)
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


def _bad(where: str, reason: str, skip_bad: bool, stats: ReadStats | None) -> None:
    if not skip_bad:
        raise DataError(f"{where}: {reason}")
    if stats is not None:
        stats.skipped.append(f"{where}: {reason}")
