"""Whole-table reads in one step: a consolidated copy of a table's files plus what changed since.

A warehouse table is a folder of Parquet files, and those files are the truth. Reading a table
file by file costs a few milliseconds per file, which dominates once a table holds hundreds of
files (one per source or per patient). :func:`read_table` therefore keeps, per table folder, a
*snapshot*: the rows of every file it covers, tagged with the file's identity (inode, size and
modification time; files are only ever replaced by a rename, never edited in place). A read
lists the folder, keeps the snapshot rows of every file whose identity is unchanged, drops the
rows of files that changed or vanished, and reads only the new or changed files. Rows written by
this process are handed over by the writer (:func:`note_written`), so they are not read back.

Snapshots live in memory and, after :func:`persist`, in ``<warehouse>/.cache/`` (a hidden folder,
not a table: deleting it only costs speed; the files are Parquet but not named ``*.parquet``, so
no ``**/*.parquet`` pattern over the warehouse counts a row twice). A persisted snapshot is used only when its own file
still has the identity its index recorded, and a read never trusts a snapshot row whose file is
no longer on disk with the same identity, so another process's writes are always seen.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

FILE_COLUMN = "__file"
"""Column of a snapshot holding each row's file (path relative to the table folder)."""
PERSIST_AFTER_FILES = 32
"""A snapshot is written back once this many files are not in its persisted copy yet."""

Identity = tuple[int, int, int]
"""(inode, size in bytes, modification time in ns) of one file."""
ReadFile = Callable[[Path], pl.DataFrame]


@dataclass
class _Snapshot:
    files: dict[str, Identity]
    """Files whose rows ``frame`` holds."""
    frame: pl.DataFrame
    """Rows of ``files`` with :data:`FILE_COLUMN`, grouped by file in path order."""
    written: dict[str, tuple[Identity, pl.DataFrame]] = field(default_factory=dict)
    """Files this process wrote since ``frame`` was built: identity and rows."""
    persisted: frozenset[str] = frozenset()
    """Files covered by the copy in ``.cache/`` (empty when there is none)."""


_memory: dict[Path, _Snapshot] = {}


def identity(path: Path) -> Identity:
    """The identity of one file (changes whenever the file is replaced)."""
    info = path.stat()
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def listing(folder: Path) -> dict[str, Identity]:
    """Every ``*.parquet`` file under ``folder`` (path relative to it) with its identity."""
    found: dict[str, Identity] = {}

    def walk(directory: Path, prefix: str) -> None:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), f"{prefix}{entry.name}/")
            elif entry.name.endswith(".parquet") and entry.is_file():
                try:
                    info = entry.stat()
                except FileNotFoundError:
                    continue  # replaced or removed while listing
                found[prefix + entry.name] = (info.st_ino, info.st_size, info.st_mtime_ns)

    walk(folder, "")
    return found


def read_table(folder: Path, cache: Path, read_file: ReadFile) -> pl.DataFrame:
    """Rows of every Parquet file under ``folder`` in path order (empty frame: no file).

    ``cache`` is the persisted snapshot's path (Parquet; its index is ``.json`` beside it); ``read_file`` reads one file the snapshot does not cover.
    """
    current = listing(folder)
    snapshot = _memory.get(folder) or _load(cache)
    kept = {f: i for f, i in snapshot.files.items() if current.get(f) == i}
    base = snapshot.frame
    if len(kept) != len(snapshot.files):
        base = base.filter(pl.col(FILE_COLUMN).is_in(list(kept)))
    parts = []
    for name in sorted(set(current) - set(kept)):
        written = snapshot.written.get(name)
        rows = written[1] if written and written[0] == current[name] else read_file(folder / name)
        parts.append(rows.with_columns(pl.lit(name, dtype=pl.String).alias(FILE_COLUMN)))
    frame = base
    if parts:
        frame = pl.concat([base, *parts], how="diagonal_relaxed") if base.width else _concat(parts)
        if kept and min(p[FILE_COLUMN][0] for p in parts) < max(kept):
            frame = frame.sort(FILE_COLUMN, maintain_order=True)
    _memory[folder] = _Snapshot(current, frame, persisted=snapshot.persisted)
    return frame.drop(FILE_COLUMN, strict=False)


def _concat(parts: list[pl.DataFrame]) -> pl.DataFrame:
    return parts[0] if len(parts) == 1 else pl.concat(parts, how="diagonal_relaxed")


def note_written(folder: Path, name: str, rows: pl.DataFrame | None) -> None:
    """Tell the snapshot of ``folder`` that this process (re)wrote or removed file ``name``.

    ``rows`` = the rows now in the file (None: the file was removed). Only a table already
    read in this process keeps them; the next read then uses them instead of the file.
    """
    snapshot = _memory.get(folder)
    if snapshot is None:
        return
    if rows is None:
        snapshot.written.pop(name, None)
        return
    snapshot.written[name] = (identity(folder / name), rows)


def forget(folder: Path) -> None:
    """Drop the in-memory snapshot of ``folder`` (the persisted copy stays valid or not)."""
    _memory.pop(folder, None)


def persist(
    folder: Path, cache: Path, read_file: ReadFile, *, min_new_files: int = PERSIST_AFTER_FILES
) -> bool:
    """Write the in-memory snapshot of ``folder`` to ``cache`` when enough has changed.

    Written when at least ``min_new_files`` files (or any removed file) are not in the
    persisted copy; returns whether it wrote. The snapshot is refreshed first, so it never
    records a file it has not read.
    """
    if folder not in _memory:
        return False
    read_table(folder, cache, read_file)
    snapshot = _memory[folder]
    new = set(snapshot.files) - snapshot.persisted
    gone = snapshot.persisted - set(snapshot.files)
    if len(new) < min_new_files and not gone:
        return False
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex}.tmp")
    try:
        snapshot.frame.write_parquet(tmp, compression="lz4", statistics=False)
        tmp.replace(cache)
    finally:
        tmp.unlink(missing_ok=True)
    index = {
        "self": list(identity(cache)),
        "files": {f: list(i) for f, i in snapshot.files.items()},
    }
    _write_json(cache.with_suffix(".json"), index)
    snapshot.persisted = frozenset(snapshot.files)
    return True


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(cache: Path) -> _Snapshot:
    """The persisted snapshot, or an empty one when it is missing, stale or unreadable."""
    empty = _Snapshot({}, pl.DataFrame())
    try:
        index = json.loads(cache.with_suffix(".json").read_text(encoding="utf-8"))
        if tuple(index["self"]) != identity(cache):
            return empty
        frame = pl.read_parquet(cache)
    except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError):
        return empty
    files = {str(f): (int(i[0]), int(i[1]), int(i[2])) for f, i in index["files"].items()}
    return _Snapshot(files, frame, persisted=frozenset(files))
