"""The Parquet warehouse: the table catalog, atomic validated writes, reads for everyone else.

Every table is named once, in the catalog below (:class:`Table`: folder, Pandera contract, row
key, what one file holds), and code says ``warehouse.read(CHIMERISM)``, never a folder name.
Every table is a folder of plain Parquet files that ``pl.scan_parquet('<table>/**/*.parquet')``
and DuckDB's ``read_parquet('<table>/**/*.parquet', hive_partitioning=true)`` read directly.
Files are written to ``<name>.parquet.tmp`` and renamed into place (``os.replace`` is atomic on
one file system), so a reader or a crash never sees half a file, and the temporary name does not
match ``*.parquet``. Every write validates the frame against the table's contract first.

Layout (one file per source for raw tables, one per patient for derived tables):

- ``samples/<sha256>.parquet``, ``infusions/<sha256>.parquet``: registry rows per manifest/log;
- ``observations_str|qpcr|ddpcr/<sha256>.parquet``: parsed assay rows per export;
- ``chimerism/``, ``markers/``, ``trends/``, ``kinetics/``: ``<patient>.parquet``;
- ``alerts/alerts.parquet``, ``alert_deliveries/deliveries.parquet``,
  ``kinetics_cohort/cohort.parquet``, ``assay_limits/limits.parquet``,
  ``stutter_ratios/ratios.parquet``: one file each;
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
from pathlib import Path

import polars as pl
from pandera.api.polars.model import DataFrameModel

from chimera import __version__
from chimera.validation import validate_frame
from schemas.base import polars_schema
from schemas.stutter import StutterRatios
from schemas.trends import AlertDeliveries, Alerts, CohortKinetics, Kinetics, Trends
from schemas.vocab import Method
from schemas.warehouse import (
    AssayLimits,
    Chimerism,
    DdpcrObservations,
    Infusions,
    IngestLog,
    Markers,
    QpcrObservations,
    Samples,
    StrObservations,
)

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


@dataclass(frozen=True)
class Table:
    """A warehouse table: the one place its folder, contract, row key and files are named."""

    name: str
    """Folder under the warehouse root (also the DuckDB view name)."""
    model: type[DataFrameModel]
    """The Pandera contract every write is validated against."""
    key: tuple[str, ...]
    """Columns that identify a row."""
    partition_by: tuple[str, ...] = ()
    """Column(s) whose value names each file, ``<name>/<value>.parquet``; () = a single file."""
    single_file: str | None = None
    """Stem of the only file of an unpartitioned table."""

    @property
    def schema(self) -> dict[str, pl.DataType]:
        """The contract's columns as a polars schema (for empty frames)."""
        return polars_schema(self.model)


SOURCE = ("source_sha256",)
PATIENT = ("patient_id",)

SAMPLES = Table("samples", Samples, key=("source_sha256", "sample_id"), partition_by=SOURCE)
INFUSIONS = Table(
    "infusions", Infusions, key=("source_sha256", "patient_id", "dose_number"), partition_by=SOURCE
)
OBSERVATIONS_STR = Table(
    "observations_str", StrObservations, key=("source_sha256", "source_row"), partition_by=SOURCE
)
OBSERVATIONS_QPCR = Table(
    "observations_qpcr", QpcrObservations, key=("source_sha256", "source_row"), partition_by=SOURCE
)
OBSERVATIONS_DDPCR = Table(
    "observations_ddpcr",
    DdpcrObservations,
    key=("source_sha256", "source_row"),
    partition_by=SOURCE,
)
CHIMERISM = Table(
    "chimerism", Chimerism, key=("sample_id", "method", "source_sha256"), partition_by=PATIENT
)
MARKERS = Table(
    "markers",
    Markers,
    key=("sample_id", "method", "marker", "replicate", "source_sha256"),
    partition_by=PATIENT,
)
TRENDS = Table(
    "trends", Trends, key=("patient_id", "specimen", "sample_id", "method"), partition_by=PATIENT
)
KINETICS = Table(
    "kinetics",
    Kinetics,
    key=("patient_id", "specimen", "scope", "dose_number"),
    partition_by=PATIENT,
)
KINETICS_COHORT = Table(
    "kinetics_cohort",
    CohortKinetics,
    key=("specimen", "scope", "dose_number", "parameter"),
    single_file="cohort",
)
ALERTS = Table("alerts", Alerts, key=("alert_id",), single_file="alerts")
ALERT_DELIVERIES = Table(
    "alert_deliveries", AlertDeliveries, key=("alert_id", "channel"), single_file="deliveries"
)
INGEST_LOG = Table("ingest_log", IngestLog, key=("source_sha256", "logged_at"))
ASSAY_LIMITS = Table("assay_limits", AssayLimits, key=("method", "series_id"), single_file="limits")
STUTTER_RATIOS = Table(
    "stutter_ratios", StutterRatios, key=("panel", "marker", "direction"), single_file="ratios"
)

TABLES = (
    SAMPLES,
    INFUSIONS,
    OBSERVATIONS_STR,
    OBSERVATIONS_QPCR,
    OBSERVATIONS_DDPCR,
    CHIMERISM,
    MARKERS,
    TRENDS,
    KINETICS,
    KINETICS_COHORT,
    ALERTS,
    ALERT_DELIVERIES,
    INGEST_LOG,
    ASSAY_LIMITS,
    STUTTER_RATIOS,
)
"""Every warehouse table."""
OBSERVATIONS: dict[Method, Table] = {
    Method.STR: OBSERVATIONS_STR,
    Method.QPCR: OBSERVATIONS_QPCR,
    Method.DDPCR: OBSERVATIONS_DDPCR,
}
"""The raw table of each assay method."""
RAW_TABLES = (SAMPLES, INFUSIONS, *OBSERVATIONS.values())
"""Tables holding one file per accepted source file (``<sha256>.parquet``)."""


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
    """Paths, reads and validated writes of one warehouse root."""

    root: Path

    def folder(self, table: Table) -> Path:
        """Folder of ``table``."""
        return self.root / table.name

    def files(self, table: Table) -> list[Path]:
        """The Parquet files of a table (temporary files excluded), sorted by path."""
        folder = self.folder(table)
        if not folder.is_dir():
            return []
        return sorted(folder.rglob("*.parquet"))

    def read(self, table: Table) -> pl.DataFrame:
        """Read a whole table; absent columns (and an absent table) follow its contract."""
        schema = table.schema
        paths = self.files(table)
        if not paths:
            return pl.DataFrame(schema=schema)
        frame = pl.concat([read_parquet_cached(p) for p in paths], how="diagonal_relaxed")
        missing = [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in frame]
        return frame.with_columns(missing) if missing else frame

    def _path(self, table: Table, key: str) -> Path:
        return self.folder(table) / f"{file_key(key)}.parquet"

    def _single(self, table: Table) -> str:
        if table.single_file is None:
            msg = f"table {table.name!r} is partitioned by {table.partition_by}; give a key"
            raise ValueError(msg)
        return table.single_file

    def read_part(self, table: Table, key: str) -> pl.DataFrame | None:
        """Read the file ``<table>/<key>.parquet`` (one patient or one source) when it exists."""
        path = self._path(table, key)
        return read_parquet_cached(path) if path.is_file() else None

    def has(self, table: Table, key: str) -> bool:
        """Whether ``<table>/<key>.parquet`` exists."""
        return self._path(table, key).is_file()

    def write(self, table: Table, key: str, frame: pl.DataFrame) -> pl.DataFrame:
        """Validate ``frame`` against the table's contract, then atomically (re)write one file.

        The file is ``<table>/<key>.parquet``; an empty frame removes it. Returns the rows as
        stored (validated, coerced to the contract's dtypes).

        Raises
        ------
        ValidationFailedError
            When the frame breaks the contract (nothing is written).
        """
        path = self._path(table, key)
        if frame.height == 0:
            path.unlink(missing_ok=True)
            return frame
        valid = validate_frame(frame, table.model, file_name=f"{table.name}/{key}")
        write_parquet_atomic(valid, path)
        return valid

    def write_single(self, table: Table, frame: pl.DataFrame) -> pl.DataFrame:
        """:meth:`write` the only file of an unpartitioned table (alerts, cohort kinetics ...)."""
        return self.write(table, self._single(table), frame)

    def read_single(self, table: Table) -> pl.DataFrame | None:
        """The only file of an unpartitioned table, when it exists."""
        return self.read_part(table, self._single(table))

    def append_log(self, row: pl.DataFrame) -> Path:
        """Validate one ledger event and append it as its own file (never rewrites history)."""
        valid = validate_frame(row, INGEST_LOG.model, file_name=INGEST_LOG.name)
        logged_at, sha256, status = valid.select("logged_at", "source_sha256", "status").row(0)
        stamp = logged_at.strftime("%Y%m%dT%H%M%S%f")
        path = (
            self.folder(INGEST_LOG)
            / logged_at.strftime("%Y-%m-%d")
            / f"{stamp}-{sha256[:16]}-{status}-{uuid.uuid4().hex[:6]}.parquet"
        )
        return write_parquet_atomic(valid, path)

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
