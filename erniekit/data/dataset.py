"""Tokenized datasets, built once per (file, tokenizer, settings) and cached with the ``datasets`` library.

The cache key hashes the data file's bytes (every file of a save_to_disk directory), how it is read
(split, columns, tags), the tokenizer's files, the chat template and every setting that changes the
result, so editing any of them re-tokenizes; otherwise a later run memory-maps the arrow files
``datasets`` wrote. Files the records point to (images) are recorded with their size and
modification time when the cache is built: a cache whose images changed since is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from erniekit.data.files import ReadStats, Record, fingerprint, read_records, resolve_data_path
from erniekit.errors import DataError
from erniekit.tokenizer import Tokenizer

log = logging.getLogger(__name__)
FORMAT_VERSION = "2"  # bump when tokenization code changes what it produces (2: tools, replies apart)


def default_cache_dir() -> Path:
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "erniekit"


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    h = hashlib.sha256()
    h.update(tokenizer.backend.path.read_bytes())
    h.update(json.dumps(tokenizer.config, sort_keys=True).encode())
    h.update(tokenizer.template.jinja.encode())
    return h.hexdigest()[:16]


def cached_dataset(
    kind: str,
    path: str,
    tokenizer: Tokenizer,
    settings: dict,
    encode: Callable[[Record], dict | None],
    columns: Iterable[str],
    cache_dir: str | None,
    skip_bad: bool,
    limit: int | None,
    stats,
    dependencies: list[Path] | None = None,
    features: dict | None = None,
    reading: dict | None = None,
):
    """A ``datasets.Dataset`` of ``encode(record)`` rows (None rows are dropped), from cache when valid.

    ``stats`` (a TokenStats-like object with ``as_dict``) is filled on a fresh build and restored from
    the cache's sidecar file otherwise, so counts are reported either way. ``dependencies`` is a list
    ``encode`` appends the files it read to (images); the cache is valid while they are unchanged.
    ``features`` gives some columns' ``datasets`` types (e.g. large binary image bytes). ``reading`` holds
    :func:`read_records`' split/columns/tags (:func:`erniekit.data.files.read_options` of a DatasetSpec).
    """
    import datasets

    file = resolve_data_path(path)
    reading = {k: v for k, v in (reading or {}).items() if v}  # unset options leave older keys valid
    key = hashlib.sha256()
    for part in (
        kind,
        FORMAT_VERSION,
        fingerprint(file),
        tokenizer_fingerprint(tokenizer),
        json.dumps(settings, sort_keys=True),
        str(skip_bad),
        str(limit),
        json.dumps(reading, sort_keys=True) if reading else "",
    ):
        key.update(part if isinstance(part, bytes) else part.encode())
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / f"{kind}-{file.stem}-{key.hexdigest()[:20]}"
    sidecar, files = target / "erniekit_stats.json", target / "erniekit_files.json"
    if sidecar.is_file() and _files_unchanged(files):
        for name, value in json.loads(sidecar.read_text()).items():
            setattr(stats, name, value)
        return datasets.load_from_disk(str(target))
    if target.exists():
        log.info("%s: files its records point to changed; rebuilding %s", path, target.name)
        shutil.rmtree(target, ignore_errors=True)

    read_stats = ReadStats()
    rows: dict[str, list] = {c: [] for c in columns}
    for record in read_records(path, skip_bad, read_stats, limit, **reading):
        try:
            row = encode(record)
        except ValueError as e:
            if not skip_bad:
                raise DataError(f"{record.where}: {e}") from None
            read_stats.skipped.append(f"{record.where}: {e}")
            continue
        if row is not None:
            for column, values in rows.items():
                values.append(row[column])
    stats.skipped = read_stats.skipped
    for line in read_stats.skipped[:5]:
        log.warning("skipped %s", line)
    if not rows[next(iter(rows))]:
        raise DataError(f"{path}: no usable examples ({json.dumps(stats.as_dict())})")
    types = None
    if features:  # the declared columns' types; the rest inferred as before
        inferred = datasets.Dataset.from_dict(
            {c: v[:1] for c, v in rows.items() if c not in features}
        ).features
        types = datasets.Features({**inferred, **{c: features[c] for c in rows if c in features}})
    ds = datasets.Dataset.from_dict(rows, features=types)
    # several processes (data-parallel ranks) may build the same cache at once: each writes its own
    # temporary directory and renames it into place; a loser of that race drops its copy (identical)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    with _no_progress_bars():
        ds.save_to_disk(str(tmp))
    (tmp / "erniekit_stats.json").write_text(json.dumps(vars(stats)))
    (tmp / "erniekit_files.json").write_text(json.dumps([_stamp(p) for p in sorted(set(dependencies or []))]))
    try:
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(target))


@contextmanager
def _no_progress_bars():
    """``datasets`` draws a bar for every cache it saves, even of 100 rows: noise in a run's output."""
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def _stamp(path: Path) -> list:
    st = Path(path).stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _files_unchanged(listing: Path) -> bool:
    if not listing.is_file():
        return True  # a cache from before files were recorded: its records point to none
    try:
        return all(_stamp(Path(p)) == [p, size, mtime] for p, size, mtime in json.loads(listing.read_text()))
    except OSError:  # a file is gone
        return False
