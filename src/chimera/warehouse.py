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
- ``ingest_log/<YYYY-MM-DD>/<time>-<sha>-<status>.parquet``: the append-only ledger;
- ``parameters/<sha256>.parquet``: each settings snapshot derived rows name by hash;
- ``inbox_state/<inbox>.parquet``: the poller's last look at each inbox file (settling).

Files and folders are created readable by owner and group only (:mod:`chimera.filemodes`). A
write that fails (disk full, read-only file system) leaves no temporary file behind and raises
the ``OSError``; :func:`storage_problem` words it for a lab user.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl
from pandera.api.polars.model import DataFrameModel

from chimera import __version__, table_cache
from chimera.filemodes import private_dirs, private_file
from chimera.filing import TEMPORARY_PREFIX, write_new, write_parquet_synced
from chimera.validation import validate_frame, validate_many
from schemas.base import polars_schema
from schemas.stutter import StutterRatios
from schemas.trends import AlertDeliveries, Alerts, CohortKinetics, Kinetics, Trends
from schemas.vocab import Method
from schemas.warehouse import (
    AssayLimits,
    Chimerism,
    DdpcrObservations,
    InboxState,
    Infusions,
    IngestLog,
    Markers,
    Parameters,
    QpcrObservations,
    Samples,
    StrObservations,
)

PIPELINE_VERSION = __version__
LOGGER = logging.getLogger(__name__)
_SAFE = re.compile(r"[^A-Za-z0-9._-]")

_held_locks = threading.local()
"""Per thread: the warehouse roots whose writer lock this thread holds."""

_CACHE_LIMIT = 20_000
_cache: dict[tuple[str, int, int], pl.DataFrame] = {}


def read_parquet_cached(path: Path) -> pl.DataFrame:
    """Read one Parquet file, reusing the frame while the file is unchanged.

    Files are replaced atomically, never edited in place, so (path, mtime, size) identifies
    the content; ingest and refresh re-read the same raw tables many times per batch.
    """
    key = _cache_key(path)
    frame = _cache.get(key)
    if frame is None:
        frame = pl.read_parquet(path)
        _keep(key, frame)
    return frame


def _cache_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _keep(key: tuple[str, int, int], frame: pl.DataFrame) -> None:
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[key] = frame


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
        return dict(_contract_schema(self.model))


@functools.cache
def _contract_schema(model: type[DataFrameModel]) -> dict[str, pl.DataType]:
    """:func:`~schemas.base.polars_schema` of a contract, worked out once (pandera is slow at it)."""
    return polars_schema(model)


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
PARAMETERS = Table(
    "parameters", Parameters, key=("parameters_sha256",), partition_by=("parameters_sha256",)
)
INBOX_STATE = Table("inbox_state", InboxState, key=("inbox", "path"), partition_by=("inbox",))

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
    PARAMETERS,
    INBOX_STATE,
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
WRITE_ONCE = (*RAW_TABLES, INGEST_LOG)
"""Tables whose files are written once under a name no other content gets (never replaced)."""


def _view(table: Table) -> table_cache.View:
    """How a table's snapshot compares files: raw and ledger files are written once."""
    return table_cache.View(pl.read_parquet, write_once=table in WRITE_ONCE)


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


def write_parquet_atomic(frame: pl.DataFrame, path: Path, *, replace: bool = True) -> Path:
    """Write ``frame`` to ``path`` via a temporary file and a rename; return ``path``.

    ``replace=False`` never replaces an existing ``path`` (``FileExistsError``): the ledger.
    On any failure (``ENOSPC``, ``EROFS`` ...) the temporary file is removed and the error raised.
    """
    private_dirs(path.parent)
    if not replace:
        return write_new(path, lambda tmp: write_parquet_synced(frame, tmp))
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.parquet.tmp")
    try:
        write_parquet_synced(frame, tmp)
        private_file(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_text(path: Path, *, text: str) -> None:
    path.write_text(text, encoding="utf-8")


_STORAGE_WORDS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "Chimera may not write there (permission denied)",
    errno.EPERM: "Chimera may not write there (operation not permitted)",
    errno.EFBIG: "the file would exceed the size limit for one file",
    errno.EIO: "the disk reported an input/output error",
}


def is_storage_error(err: OSError) -> bool:
    """Whether a failed write means the disk or file system is at fault (stop the run)."""
    return err.errno in _STORAGE_WORDS


def storage_problem(err: OSError) -> str:
    """A failed write in plain words: what happened, where, and what to do.

    Examples
    --------
    >>> storage_problem(OSError(errno.ENOSPC, "No space left on device", "/data/w/x.parquet"))
    'the disk is full (writing /data/w/x.parquet); free space (or fix the disk) and run again'
    """
    what = _STORAGE_WORDS.get(err.errno or 0, err.strerror or str(err))
    where = f" (writing {err.filename})" if err.filename else ""
    return f"{what}{where}; free space (or fix the disk) and run again"


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
        """Read a whole table; absent columns (and an absent table) follow its contract.

        Rows come in file path order; the files unchanged since the last read come from the
        table's consolidated snapshot (:mod:`chimera.table_cache`), only new files are read.
        """
        schema = table.schema
        frame = table_cache.read_table(
            self.folder(table), self._cache_path(table), pl.read_parquet, _view(table)
        )
        if frame.width == 0:
            return pl.DataFrame(schema=schema)
        missing = [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in frame]
        return frame.with_columns(missing) if missing else frame

    def read_derived(self, table: Table, name: str, derive: table_cache.Derive) -> pl.DataFrame:
        """What ``derive`` makes of each file of a raw table, one frame (``.cache/<table>.<name>``).

        Kept like a snapshot (:mod:`chimera.table_cache`): only new files are read and derived.
        """
        view = table_cache.View(pl.read_parquet, derive, write_once=True)
        return table_cache.read_table(
            self.folder(table), self._cache_path(table, name), pl.read_parquet, view
        )

    def _cache_path(self, table: Table, name: str = "snapshot") -> Path:
        return self.root / ".cache" / f"{table.name}.{name}"

    def persist_snapshots(self) -> list[str]:
        """Write back the snapshots read in this process that changed much; return their names.

        Every view of a table read in this process (:meth:`read`, :meth:`read_derived`) is
        written back. A speed-up only: the table files stay the truth (:mod:`chimera.table_cache`).
        """
        written = [path.name for path in table_cache.persist_under(self.root / ".cache")]
        table_cache.release_written(self.root)
        return written

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
        if frame.height == 0:
            self.store(table, key, frame)
            return frame
        valid = validate_frame(frame, table.model, file_name=f"{table.name}/{key}")
        self.store(table, key, valid)
        return valid

    def write_parts(
        self, table: Table, parts: Mapping[str, pl.DataFrame], *, threads: int = 1
    ) -> dict[str, pl.DataFrame]:
        """:meth:`write` many files of one table, validating all their rows in one pass.

        ``parts`` maps each key (patient, source) to its rows; an empty frame removes the file.
        Nothing is written unless every part meets the contract. Returns the rows as stored.
        ``threads``: see :meth:`store_each`.

        Raises
        ------
        ValidationFailedError
            When a part breaks the contract (naming that part; nothing is written).
        """
        valid = self.validate_parts(table, parts)
        self.store_parts(table, valid, threads=threads)
        return valid

    def validate_parts(
        self, table: Table, parts: Mapping[str, pl.DataFrame]
    ) -> dict[str, pl.DataFrame]:
        """Validate the rows of many files of ``table`` in one pass (empty parts pass as they are).

        Raises
        ------
        ValidationFailedError
            When a part breaks the contract (naming that part).
        """
        filled = [key for key, frame in parts.items() if frame.height]
        valid = validate_many(
            [parts[k] for k in filled],
            table.model,
            file_names=[f"{table.name}/{k}" for k in filled],
        )
        checked = dict(zip(filled, valid, strict=True))
        return {key: checked.get(key, frame) for key, frame in parts.items()}

    def store_parts(
        self, table: Table, parts: Mapping[str, pl.DataFrame], *, threads: int = 1
    ) -> None:
        """Write parts :meth:`validate_parts` returned, one atomic file each."""
        items = [(table, key, frame) for key, frame in parts.items()]
        for _ in self.store_each(items, threads=threads):
            pass

    def store_each(
        self, items: Sequence[tuple[Table, str, pl.DataFrame]], *, threads: int = 1
    ) -> Iterator[None]:
        """:meth:`store` each (table, key, rows); yields once per item, in order, once it is written.

        The files are independent, so with ``threads`` > 1 they are written in that many threads
        (a Parquet write and its fsync release the GIL). An item's error is raised where it is
        yielded: the first failure in order stops the rest; writes not yet started are dropped
        (each file is atomic, so a re-run finds the written ones).
        """
        if threads <= 1 or len(items) <= 1:
            for table, key, frame in items:
                self.store(table, key, frame)
                yield
            return
        with ThreadPoolExecutor(
            min(threads, len(items)), thread_name_prefix="chimera-write"
        ) as pool:
            futures = [pool.submit(self.store, *item) for item in items]
            try:
                for future in futures:
                    future.result()
                    yield
            finally:
                pool.shutdown(cancel_futures=True)

    def store(self, table: Table, key: str, frame: pl.DataFrame) -> None:
        """Atomically (re)write ``<table>/<key>.parquet`` with validated rows (none: remove it)."""
        path = self._path(table, key)
        if frame.height == 0:
            path.unlink(missing_ok=True)
            table_cache.note_written(self.folder(table), path.name, None)
            return
        write_parquet_atomic(frame, path)
        table_cache.note_written(self.folder(table), path.name, frame)
        if table.partition_by == PATIENT:
            # The refresh and the alert scope read a patient's derived files one by one in
            # the run that wrote them: the rows written are what a read would return.
            _keep(_cache_key(path), frame)

    def write_single(self, table: Table, frame: pl.DataFrame) -> pl.DataFrame:
        """:meth:`write` the only file of an unpartitioned table (alerts, cohort kinetics ...)."""
        return self.write(table, self._single(table), frame)

    def read_single(self, table: Table) -> pl.DataFrame | None:
        """The only file of an unpartitioned table, when it exists."""
        return self.read_part(table, self._single(table))

    def append_log(self, rows: pl.DataFrame) -> Path:
        """Validate ledger events and append them as one new file (never rewrites history).

        One event (a single file's fate) or every event of one batch, in the order given; the
        file is named after the first event.
        """
        valid = validate_frame(rows, INGEST_LOG.model, file_name=INGEST_LOG.name)
        logged_at, sha256, status = valid.select("logged_at", "source_sha256", "status").row(0)
        stamp = logged_at.strftime("%Y%m%dT%H%M%S%f")
        events = f"{status}" if valid.height == 1 else f"{status}-and-{valid.height - 1}-more"
        relative = (
            f"{logged_at:%Y-%m-%d}/{stamp}-{sha256[:16]}-{events}-{uuid.uuid4().hex[:6]}.parquet"
        )
        path = write_parquet_atomic(valid, self.folder(INGEST_LOG) / relative, replace=False)
        table_cache.note_written(self.folder(INGEST_LOG), relative, valid)
        return path

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the warehouse's writer lock (one writer at a time, across processes).

        Re-entrant within one thread: a batch holding the lock can call code that takes it.
        Waiting for another writer is logged (``chimera.warehouse``), never silent.
        """
        held: set[Path] = getattr(_held_locks, "roots", set())
        _held_locks.roots = held
        if self.root in held:
            yield
            return
        private_dirs(self.root)
        with (self.root / ".lock").open("a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                LOGGER.info("waiting for another writer of %s to finish", self.root)
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            held.add(self.root)
            try:
                yield
            finally:
                held.discard(self.root)
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def mark_dirty(self, patients: set[str]) -> None:
        """Record patients whose derived tables are being rebuilt (crash recovery)."""
        folder = private_dirs(self.root / ".dirty")
        for patient in patients:
            path = folder / file_key(patient)
            if not path.is_file():
                write_new(path, partial(_write_text, text=patient))

    def clear_dirty(self, patients: set[str]) -> None:
        """Forget patients whose derived tables are complete again."""
        for patient in patients:
            (self.root / ".dirty" / file_key(patient)).unlink(missing_ok=True)

    def dirty_patients(self) -> set[str]:
        """Patients left half-rebuilt by a crash."""
        folder = self.root / ".dirty"
        if not folder.is_dir():
            return set()
        names = (
            p.read_text(encoding="utf-8")
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(TEMPORARY_PREFIX)
        )
        return {name for name in names if name}
