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
no ``**/*.parquet`` pattern over the warehouse counts a row twice). A persisted snapshot is used
only when its own file still has the size and modification time its index recorded, and a read
never trusts a snapshot row whose file is no longer on disk with the same identity, so another
process's writes are always seen.

A snapshot may hold what each file's rows *derive* to instead of the rows (``derive``: e.g. the
per-file facts :mod:`chimera.assay_index` keeps), under its own cache path. Tables whose files
are written once under a name that never holds other content (raw tables: one file per source
SHA-256; ledger files) compare files by size and modification time only (``write_once``), so a
copied warehouse (new inodes, same times) keeps its snapshots.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

FILE_COLUMN = "__file"
"""Column of a snapshot holding each row's file (path relative to the table folder)."""
PERSIST_AFTER_FILES = 32
"""A snapshot is written back once this many files are not in its persisted copy yet."""

Identity = tuple[int, int, int]
"""(inode, size in bytes, modification time in ns) of one file."""
_REWRITTEN: Identity = (-1, -1, -1)
"""What a snapshot records for a file this process rewrote (no file has it)."""
ReadFile = Callable[[Path], pl.DataFrame]
Derive = Callable[[pl.DataFrame], pl.DataFrame]


@dataclass(frozen=True)
class View:
    """How a snapshot sees its folder: how a file is read, what is kept of it, how files compare."""

    read_file: ReadFile
    derive: Derive | None = None
    """What the snapshot keeps of files' rows (None: the rows). It is given the rows of many
    files at once, each row's file in :data:`FILE_COLUMN`, and keeps that column: what it makes
    of one file's rows must depend on that file's rows only."""
    write_once: bool = False
    """Files are never replaced under their name: compare size and modification time only."""

    def key(self, found: Identity) -> Identity:
        """The part of a file's identity this view compares."""
        return (0, found[1], found[2]) if self.write_once else found

    def of(self, rows: pl.DataFrame) -> pl.DataFrame:
        """What the snapshot keeps of these files' rows (:attr:`derive`)."""
        return rows if self.derive is None else self.derive(rows)


@dataclass
class _Snapshot:
    folder: Path
    view: View
    files: dict[str, Identity]
    """Files whose rows ``frame`` holds."""
    frame: pl.DataFrame
    """Rows of ``files`` with :data:`FILE_COLUMN`, grouped by file in path order."""
    persisted: frozenset[str] = frozenset()
    """Files covered by the copy in ``.cache/`` (empty when there is none)."""


_memory: dict[Path, _Snapshot] = {}
"""In-memory snapshots by cache path (one folder may have several views)."""
_written: dict[Path, dict[str, tuple[Identity, pl.DataFrame]]] = {}
"""Per table folder: the files this process wrote (identity and rows), until
:func:`release_written`: every view of the folder reads them from here, not from disk."""


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


def read_table(
    folder: Path, cache: Path, read_file: ReadFile, view: View | None = None
) -> pl.DataFrame:
    """Rows of every Parquet file under ``folder`` in path order (empty frame: no file).

    ``cache`` is the persisted snapshot's path (Parquet; its index is ``<name>.json`` beside it);
    ``read_file`` reads one file the snapshot does not cover; ``view`` says what is kept of a
    file and how files compare (default: the rows, full identity).
    """
    view = view or View(read_file)
    current = {name: view.key(found) for name, found in listing(folder).items()}
    snapshot = _memory.get(cache)
    if snapshot is None or snapshot.view != view or snapshot.folder != folder:
        snapshot = _load(folder, cache, view)
    kept = {f: i for f, i in snapshot.files.items() if current.get(f) == i}
    base = snapshot.frame
    if len(kept) != len(snapshot.files):
        base = base.filter(pl.col(FILE_COLUMN).is_in(list(kept)))
    names = sorted(set(current) - set(kept))
    held = _written.get(folder, {})
    parts = []
    for name in names:
        written = held.get(name)
        fresh = written is not None and view.key(written[0]) == current[name]
        parts.append(written[1] if written and fresh else read_file(folder / name))
    if parts:
        parts = [_tagged(parts, names)]
    if parts and view.derive is not None:
        parts = [view.of(parts[0]).sort(FILE_COLUMN, maintain_order=True)]
    frame = base
    if parts:
        frame = pl.concat([base, *parts], how="diagonal_relaxed") if base.width else _concat(parts)
        if kept and min(names) < max(kept):
            frame = frame.sort(FILE_COLUMN, maintain_order=True)
    _memory[cache] = _Snapshot(folder, view, current, frame, persisted=snapshot.persisted)
    return frame.drop(FILE_COLUMN, strict=False)


def _concat(parts: list[pl.DataFrame]) -> pl.DataFrame:
    return parts[0] if len(parts) == 1 else pl.concat(parts, how="diagonal_relaxed")


def _tagged(parts: list[pl.DataFrame], names: list[str]) -> pl.DataFrame:
    """The rows of many files in one frame, each row's file (``names``) in :data:`FILE_COLUMN`."""
    rows = _concat(parts)
    which = np.repeat(np.arange(len(names)), [part.height for part in parts])
    files = pl.Series(FILE_COLUMN, names, dtype=pl.String).gather(which)
    return rows.with_columns(files)


def note_written(folder: Path, name: str, rows: pl.DataFrame | None) -> None:
    """Tell the snapshots of ``folder`` that this process (re)wrote or removed file ``name``.

    ``rows`` = the rows now in the file (None: the file was removed). Every read of the folder
    uses them instead of the file (while the file is the one written) until
    :func:`release_written`.
    """
    for snapshot in _memory.values():
        if snapshot.folder == folder and name in snapshot.files:
            snapshot.files[name] = _REWRITTEN  # never kept, whatever its time stamps say
    held = _written.setdefault(folder, {})
    if rows is None:
        held.pop(name, None)
    else:
        held[name] = (identity(folder / name), rows)


def release_written(root: Path) -> None:
    """Drop the written rows :func:`note_written` holds for the folders under ``root``.

    Called once a batch's snapshots are written back. Kept are only the rows of a folder that
    has a snapshot in memory not covering them yet (its next read takes them), so a
    long-running service holds no more than those snapshots will.
    """
    for folder, held in _written.items():
        if not folder.is_relative_to(root):
            continue
        views = [snapshot for snapshot in _memory.values() if snapshot.folder == folder]
        for name in [n for n, (found, _) in held.items() if not _pending(views, n, found)]:
            del held[name]


def _pending(views: list[_Snapshot], name: str, found: Identity) -> bool:
    """Whether some snapshot of ``views`` has yet to read the file ``name`` written as ``found``."""
    return any(view.files.get(name) != view.view.key(found) for view in views)


def forget(folder: Path) -> None:
    """Drop the in-memory snapshots of ``folder`` (the persisted copies stay valid or not)."""
    for cache in [c for c, snapshot in _memory.items() if snapshot.folder == folder]:
        del _memory[cache]
    _written.pop(folder, None)


def persist(cache: Path, *, min_new_files: int = PERSIST_AFTER_FILES) -> bool:
    """Write the in-memory snapshot kept under ``cache`` to disk when enough has changed.

    Written when at least ``min_new_files`` files (or any removed file) are not in the
    persisted copy; returns whether it wrote. The snapshot is refreshed first, so it never
    records a file it has not read. The snapshot is written (temporary file + rename) before
    its index, and an index is trusted only with the snapshot file it was written with.
    """
    if cache not in _memory:
        return False
    held = _memory[cache]
    read_table(held.folder, cache, held.view.read_file, held.view)
    snapshot = _memory[cache]
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
        "self": list(_self_identity(cache)),
        "files": {f: list(i) for f, i in snapshot.files.items()},
    }
    _write_json(_index_path(cache), index)
    snapshot.persisted = frozenset(snapshot.files)
    return True


def persist_under(folder: Path, *, min_new_files: int = PERSIST_AFTER_FILES) -> list[Path]:
    """:func:`persist` every in-memory snapshot kept under ``folder``; the caches written."""
    caches = sorted(c for c in _memory if c.is_relative_to(folder))
    return [c for c in caches if persist(c, min_new_files=min_new_files)]


def _index_path(cache: Path) -> Path:
    """Where the index of a persisted snapshot is (its name + ``.json``)."""
    return cache.with_name(f"{cache.name}.json")


def _self_identity(cache: Path) -> tuple[int, int]:
    """(size, modification time in ns) of a persisted snapshot: kept when the cache is copied."""
    info = cache.stat()
    return (info.st_size, info.st_mtime_ns)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(folder: Path, cache: Path, view: View) -> _Snapshot:
    """The persisted snapshot, or an empty one when it is missing, stale or unreadable."""
    empty = _Snapshot(folder, view, {}, pl.DataFrame())
    try:
        index = json.loads(_index_path(cache).read_text(encoding="utf-8"))
        if tuple(index["self"]) != _self_identity(cache):
            return empty
        frame = pl.read_parquet(cache)
        files = {
            str(f): view.key((int(i[0]), int(i[1]), int(i[2]))) for f, i in index["files"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, IndexError, pl.exceptions.PolarsError):
        return empty
    if FILE_COLUMN not in frame.columns and files:
        return empty
    return _Snapshot(folder, view, files, frame, persisted=frozenset(files))
