"""The Parquet warehouse: atomic writes, lineage, and reads for everyone else.

Every table is a folder of plain Parquet files that ``pl.scan_parquet('<table>/**/*.parquet')``
and DuckDB's ``read_parquet('<table>/**/*.parquet', hive_partitioning=true)`` read directly.
Files are written to ``<name>.parquet.tmp`` and renamed into place (``os.replace`` is atomic on
one file system), so a reader or a crash never sees half a file, and the temporary name does not
match ``*.parquet``.

Layout (one file per source for raw tables, one per patient for derived tables):

- ``samples/<sha256>.parquet``, ``infusions/<sha256>.parquet``: registry rows per manifest/log;
- ``observations_str|qpcr|ddpcr/<sha256>.parquet``: parsed assay rows per export;
- ``chimerism/``, ``markers/``, ``genotypes/``, ``trends/``, ``kinetics/``: ``<patient>.parquet``;
- ``ingest_log/<YYYY-MM-DD>/<time>-<sha>-<status>.parquet``: the append-only ledger.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from chimera import __version__
from schemas.vocab import Method

PIPELINE_VERSION = __version__
_SAFE = re.compile(r"[^A-Za-z0-9._-]")

_CACHE_LIMIT = 20_000
_cache: dict[tuple[str, int, int], pl.DataFrame] = {}


def read_parquet_cached(path: Path) -> pl.DataFrame:
    """Read one Parquet file, reusing the frame while the file is unchanged.

    Files are replaced atomically, never edited in place, so (path, mtime, size) identifies
    the content; ingest and refresh re-read the same raw tables many times per batch.
    """
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    frame = _cache.get(key)
    if frame is None:
        frame = pl.read_parquet(path)
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = frame
    return frame


OBSERVATION_TABLES = {
    Method.STR: "observations_str",
    Method.QPCR: "observations_qpcr",
    Method.DDPCR: "observations_ddpcr",
}


def file_key(value: str) -> str:
    """Return a file-system-safe name for a patient or lot id (stable, collision-free).

    Examples
    --------
    >>> file_key("P01")
    'P01'
    >>> file_key("P/01").startswith("P_01-")
    True
    """
    safe = _SAFE.sub("_", value)
    if safe == value and value not in {".", ".."}:
        return value
    return f"{safe}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def sha256_of(data: bytes) -> str:
    """Hex SHA-256 of bytes (the identity of a file's content)."""
    return hashlib.sha256(data).hexdigest()


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` via a temporary file and a rename; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.parquet.tmp")
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class Warehouse:
    """Paths and reads of one warehouse root."""

    root: Path

    def table(self, name: str) -> Path:
        """Folder of table ``name``."""
        return self.root / name

    def files(self, name: str) -> list[Path]:
        """The Parquet files of a table (temporary files excluded), sorted by path."""
        folder = self.table(name)
        if not folder.is_dir():
            return []
        return sorted(folder.rglob("*.parquet"))

    def read(self, name: str, schema: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
        """Read a whole table; an absent or empty table gives an empty frame with ``schema``."""
        paths = self.files(name)
        if not paths:
            return pl.DataFrame(schema=schema or {})
        frame = pl.concat([read_parquet_cached(p) for p in paths], how="diagonal_relaxed")
        if schema is not None:
            for column, dtype in schema.items():
                if column not in frame.columns:
                    frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(column))
        return frame

    def read_file(self, name: str, key: str) -> pl.DataFrame | None:
        """Read ``<table>/<key>.parquet`` when it exists."""
        path = self.table(name) / f"{file_key(key)}.parquet"
        return read_parquet_cached(path) if path.is_file() else None

    def has(self, name: str, key: str) -> bool:
        """Whether ``<table>/<key>.parquet`` exists."""
        return (self.table(name) / f"{file_key(key)}.parquet").is_file()

    def write(self, name: str, key: str, frame: pl.DataFrame) -> Path:
        """Atomically (re)write ``<table>/<key>.parquet``; an empty frame removes the file."""
        path = self.table(name) / f"{file_key(key)}.parquet"
        if frame.height == 0:
            path.unlink(missing_ok=True)
            return path
        return write_parquet_atomic(frame, path)

    def append_log(
        self, frame: pl.DataFrame, *, logged_at: datetime, sha256: str, status: str
    ) -> Path:
        """Append one ledger event as its own file (never rewrites history)."""
        stamp = logged_at.strftime("%Y%m%dT%H%M%S%f")
        path = (
            self.table("ingest_log")
            / logged_at.strftime("%Y-%m-%d")
            / f"{stamp}-{sha256[:16]}-{status}-{uuid.uuid4().hex[:6]}.parquet"
        )
        return write_parquet_atomic(frame, path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the warehouse's writer lock (one writer at a time, across processes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def mark_dirty(self, patients: set[str]) -> None:
        """Record patients whose derived tables are being rebuilt (crash recovery)."""
        folder = self.root / ".dirty"
        folder.mkdir(parents=True, exist_ok=True)
        for patient in patients:
            (folder / file_key(patient)).write_text(patient, encoding="utf-8")

    def clear_dirty(self, patients: set[str]) -> None:
        """Forget patients whose derived tables are complete again."""
        for patient in patients:
            (self.root / ".dirty" / file_key(patient)).unlink(missing_ok=True)

    def dirty_patients(self) -> set[str]:
        """Patients left half-rebuilt by a crash."""
        folder = self.root / ".dirty"
        if not folder.is_dir():
            return set()
        return {p.read_text(encoding="utf-8") for p in folder.iterdir() if p.is_file()}
