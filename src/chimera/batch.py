"""One batch of ingested files: the warehouse state read once, the writes flushed together.

A poll opens one batch (:func:`open_batch`) under the warehouse's writer lock. The batch reads
the ledger, the registry and an index of the stored assay files once (kept between runs:
:mod:`chimera.assay_index`) and keeps them current in memory as files are accepted, so the cost
of a file does not grow with the warehouse. What a
file would write is held back: raw rows and ledger events are validated in one pass per table
and written by :meth:`IngestBatch.flush` in the order a crash can survive:

1. raw rows, one atomically written file per source (a re-run finds them and writes nothing);
2. the touched patients marked dirty (:func:`chimera.rebuild.recover_dirty` rebuilds them);
3. the ledger events of the batch, as one new ledger file;
4. the files archived or quarantined.

A write that fails (disk full, read-only file system) stops the flush with a
:class:`StorageFailure` naming the file (or step) it was on; what was placed before it is kept.

Before step 1 nothing is on disk: a crash leaves every file in the inbox and the warehouse as it
was. After step 3 a re-run finds each file's content in the ledger (a duplicate, archived).
"""

from __future__ import annotations

import contextlib
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from chimera.assay_index import stored_files
from chimera.filing import archive_file, quarantine_file
from chimera.parses import Parses
from chimera.plate_targets import PlateTargets
from chimera.prerequisites import missing_prerequisites
from chimera.registry import Registry, registry_from
from chimera.runs import RunBook, RunFile, file_summary, remember
from chimera.settings import Settings
from chimera.validation import validate_frame
from chimera.warehouse import (
    INFUSIONS,
    INGEST_LOG,
    OBSERVATIONS,
    SAMPLES,
    Table,
    Warehouse,
    storage_problem,
)
from schemas.vocab import FileStatus, Method

if TYPE_CHECKING:
    from chimera.ingest import FileOutcome
    from chimera.source_file import SourceFile


class StorageFailure(Exception):
    """A write to the warehouse, archive or quarantine failed; the run stops, the file stays.

    ``outcomes`` holds what the run did before it stopped.
    """

    def __init__(self, file_name: str, error: OSError) -> None:
        super().__init__(f"{file_name}: {storage_problem(error)}")
        self.file_name = file_name
        self.error = error
        self.outcomes: dict[Path, FileOutcome | None] = {}


@contextlib.contextmanager
def writing(what: str) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``what`` (a file's name, a step) into a failure."""
    try:
        yield
    except OSError as err:
        raise StorageFailure(what, err) from err


class Ledger:
    """The ledger's events per source file (oldest first), kept current as events are added."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self._frame: pl.DataFrame | None = frame.sort("logged_at")
        self._events: dict[str, list[dict[str, Any]]] = {}
        for event in self._frame.iter_rows(named=True):
            self._events.setdefault(event["source_sha256"], []).append(event)

    def events(self, sha256: str) -> list[dict[str, Any]]:
        """Every event of one content, oldest first."""
        return self._events.get(sha256, [])

    def first_accepted(self, sha256: str) -> dict[str, Any] | None:
        """The event that first accepted this content (None: never accepted)."""
        return next((e for e in self.events(sha256) if e["status"] == FileStatus.ACCEPTED), None)

    def first_waiting_time(self, sha256: str) -> datetime | None:
        """When this content was first recorded as waiting (None if never)."""
        times = [e["logged_at"] for e in self.events(sha256) if e["status"] == FileStatus.WAITING]
        return min(times) if times else None

    def accepted_names(self, sha256s: Sequence[str]) -> list[str]:
        """Names under which these contents were accepted."""
        return [
            e["file_name"]
            for sha in sha256s
            for e in self.events(sha)
            if e["status"] == FileStatus.ACCEPTED
        ]

    def add(self, event: dict[str, Any]) -> None:
        """Record one new event."""
        self._events.setdefault(event["source_sha256"], []).append(event)
        self._frame = None

    def frame(self) -> pl.DataFrame:
        """The whole ledger as a frame, oldest event first."""
        if self._frame is None:
            rows = sorted(
                (e for events in self._events.values() for e in events),
                key=lambda e: e["logged_at"],
            )
            self._frame = pl.DataFrame(rows, schema=INGEST_LOG.schema)
        return self._frame


class Observed:
    """Which sample ids one assay method measured, and the PCR targets of each sample per file.

    Frames are indexed when first asked about (a batch of qPCR plates never asks about the
    stored STR files), each frame once.
    """

    def __init__(self) -> None:
        self._sample_ids: set[str] = set()
        self._targets = PlateTargets()
        self._for_ids: list[pl.DataFrame] = []
        self._for_targets: list[pl.DataFrame] = []

    def add(self, frame: pl.DataFrame) -> None:
        """Index one stored or accepted assay frame (or its :func:`~chimera.assay_index.wells`)."""
        self._for_ids.append(frame)
        self._for_targets.append(frame)

    @property
    def sources(self) -> set[str]:
        """Sample ids measured by this method (on a stored or accepted file)."""
        for frame in self._for_ids:
            ids = frame["sample_id"].to_list()
            if frame["source_sha256"].null_count():
                pairs = zip(ids, frame["source_sha256"].to_list(), strict=True)
                ids = [sid for sid, sha in pairs if sha is not None]
            self._sample_ids.update(ids)
        self._sample_ids.discard(None)
        self._for_ids.clear()
        return self._sample_ids

    @property
    def targets(self) -> PlateTargets:
        """PCR: the targets of each sample on each file (which patients a plate touches)."""
        for frame in self._for_targets:
            self._targets.add(frame)
        self._for_targets.clear()
        return self._targets


class Measured:
    """Sample ids measured in any of several indexes (membership only; nothing is copied)."""

    def __init__(self, *indexes: Container[str]) -> None:
        self._indexes = indexes

    def __contains__(self, sample_id: object) -> bool:
        return any(sample_id in index for index in self._indexes)


@dataclass(frozen=True)
class Placement:
    """Where a file goes once its batch is flushed (archive, or quarantine with a report)."""

    source: SourceFile
    outcome: FileOutcome
    move: bool
    when: datetime


@dataclass
class IngestBatch:
    """The warehouse state of one batch and the writes it holds back (module docstring)."""

    warehouse: Warehouse
    settings: Settings
    ledger: Ledger
    observed: dict[Method, Observed]
    stored_runs: dict[Method, list[RunFile]]
    """Each method's stored raw files, in ingest order (:meth:`runs` groups them once asked)."""
    sample_rows: list[pl.DataFrame]
    infusion_rows: list[pl.DataFrame]
    prepared: Parses = field(default_factory=Parses)
    """Each file's parse (or refusal), by content SHA-256, so a retried file is not re-parsed;
    some may still be under way in a worker pool (:mod:`chimera.parses`)."""
    raw: dict[str, dict[str, pl.DataFrame]] = field(default_factory=dict)
    """Raw rows to write: table name -> source SHA-256 -> rows."""
    events: list[dict[str, Any]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    placements: dict[Path, Placement] = field(default_factory=dict)
    _registry: Registry | None = None
    _known: set[str] | None = None
    _books: dict[Method, RunBook] = field(default_factory=dict)

    def runs(self, method: Method) -> RunBook:
        """The method's raw files grouped into runs (which file a re-export replaces)."""
        if method not in self._books:
            self._books[method] = RunBook(method, self.stored_runs[method])
        return self._books[method]

    @property
    def known_sample_ids(self) -> set[str]:
        """Every sample id in the registry (for resolving run-file names)."""
        if self._known is None:
            self._known = set(self.registry.samples["sample_id"].to_list())
        return self._known

    @property
    def registry(self) -> Registry:
        """Current samples, doses and lots, including registry files accepted in this batch."""
        if self._registry is None:
            self._registry = registry_from(
                pl.concat(self.sample_rows, how="diagonal_relaxed"),
                pl.concat(self.infusion_rows, how="diagonal_relaxed"),
            )
        return self._registry

    def has(self, table: Table, sha256: str) -> bool:
        """Whether rows of this source are stored in ``table`` or held to be written."""
        return sha256 in self.raw.get(table.name, {}) or self.warehouse.has(table, sha256)

    def add_rows(self, table: Table, sha256: str, rows: pl.DataFrame) -> None:
        """Hold one source's raw rows for ``table`` (registry and assay tables)."""
        self.raw.setdefault(table.name, {})[sha256] = rows
        if table is SAMPLES:
            self.sample_rows.append(rows)
            self._registry, self._known = None, None
        elif table is INFUSIONS:
            self.infusion_rows.append(rows)
            self._registry = None
        else:
            method = next(m for m, t in OBSERVATIONS.items() if t is table)
            self.observed[method].add(rows)

    def replaced_files(
        self, rows: pl.DataFrame, method: Method, sha256: str
    ) -> tuple[str | None, str | None]:
        """Names of the files an accepted assay file replaces as a re-export, and why (or None).

        The file joins its method's :class:`~chimera.runs.RunBook`. The rule is :func:`chimera.runs.supersession`'s: the files current before this one
        that it replaces now.
        """
        book = self.runs(method)
        if sha256 in book:
            return None, None
        before = set(book.current)
        file = remember(file_summary(rows, method), method)[0]
        members = book.add(file)
        if members[-1] is not file:
            return None, None
        replaced = sorted(m.name for m in members[:-1] if m.sha256 in before)
        if not replaced:
            return None, None
        return ", ".join(replaced), file.link

    def waits(self, frame: pl.DataFrame, ids: list[str], method: Method) -> list[str]:
        """What an assay frame still waits for, given what the batch knows is measured.

        ``ids`` = the frame's :func:`~chimera.prerequisites.assay_sample_ids`; they count as
        measured by this method.
        """
        here = set(ids)
        measured = Measured(here, self.observed[method].sources)
        pool = measured
        if method != Method.STR:
            pool = Measured(here, *(self.observed[m].sources for m in (Method.QPCR, Method.DDPCR)))
        return missing_prerequisites(
            frame,
            method,
            registry=self.registry,
            measured=measured,
            baselines_measured=pool,
            sample_ids=ids,
        )

    def log(self, event: dict[str, Any]) -> None:
        """Record one ledger event (written at :meth:`flush`)."""
        self.events.append(event)
        self.ledger.add(event)

    def place(
        self, source: SourceFile, outcome: FileOutcome, *, move: bool, when: datetime
    ) -> None:
        """Archive or quarantine the file at :meth:`flush` (a waiting file stays where it is)."""
        if outcome.status is FileStatus.WAITING:
            self.placements.pop(source.path, None)
            return
        self.placements[source.path] = Placement(source, outcome, move, when)

    def flush(self) -> dict[Path, FileOutcome]:
        """Write what the batch holds (module docstring order); the placed files' outcomes.

        Raises
        ------
        ValidationFailedError
            When held rows break their table's contract (a bug: nothing is written then).
        StorageFailure
            When a write failed; ``outcomes`` holds the files placed before it.
        """
        tables = {t.name: t for t in (SAMPLES, INFUSIONS, *OBSERVATIONS.values())}
        valid = {
            name: self.warehouse.validate_parts(tables[name], parts)
            for name, parts in self.raw.items()
        }
        events = None
        if self.events:
            frame = pl.DataFrame(self.events, schema=INGEST_LOG.schema)
            events = validate_frame(frame, INGEST_LOG.model, file_name=INGEST_LOG.name)
        placements, self.placements = self.placements, {}
        placed: dict[Path, FileOutcome] = {}
        try:
            self._write(tables, valid, events)
            for path, placement in placements.items():
                with writing(placement.source.name):
                    placed[path] = _place(placement, self.settings)
        except StorageFailure as failure:
            failure.outcomes = {path: placed.get(path) for path in placements}
            raise
        return placed

    def _write(
        self,
        tables: dict[str, Table],
        valid: dict[str, dict[str, pl.DataFrame]],
        events: pl.DataFrame | None,
    ) -> None:
        """Write validated raw rows (one file per source), the dirty marks and the ledger."""
        names = {e["source_sha256"]: e["file_name"] for e in self.events}
        self.raw, self.events = {}, []
        parts = [
            (tables[name], sha, rows, names.get(sha, name))
            for name, table_parts in valid.items()
            for sha, rows in table_parts.items()
        ]
        self._store(parts)
        with writing("marking the touched patients for rebuilding"):
            self.warehouse.mark_dirty(self.touched)
        if events is not None:
            with writing("recording the files' fates in the ledger"):
                self.warehouse.append_log(events)

    def _store(self, parts: list[tuple[Table, str, pl.DataFrame, str]]) -> None:
        """Write raw-row files (table, source, rows, the name a failure gives), each atomically.

        The files are independent (one per source): a big batch (``scale.pool_min_files``
        files) writes them in threads (:meth:`chimera.warehouse.Warehouse.store_each`).
        """
        threads = self.settings.scale.write_threads(len(parts), self.settings.scale.pool_min_files)
        written = self.warehouse.store_each([part[:3] for part in parts], threads=threads)
        for *_, name in parts:
            with writing(name):
                next(written)
        next(written, None)  # the writer threads end here


def _place(placement: Placement, settings: Settings) -> FileOutcome:
    outcome, source = placement.outcome, placement.source
    if outcome.status is FileStatus.QUARANTINED:
        target = quarantine_file(
            source.path,
            settings.quarantine,
            sha256=outcome.sha256,
            headline=outcome.reason or "rejected",
            problems=outcome.problems,
            when=placement.when,
            move=placement.move,
        )
    else:
        target = archive_file(
            source.path,
            settings.archive,
            sha256=outcome.sha256,
            when=placement.when,
            move=placement.move,
        )
    return replace(outcome, destination=target)


@contextlib.contextmanager
def open_batch(settings: Settings) -> Iterator[IngestBatch]:
    """Hold the warehouse's writer lock and read its state once for a batch of files.

    The caller flushes (:meth:`IngestBatch.flush`); leaving the block without a flush discards
    what the batch held (nothing was written).
    """
    warehouse = Warehouse(settings.warehouse)
    with warehouse.lock():
        observed: dict[Method, Observed] = {}
        runs: dict[Method, list[RunFile]] = {}
        for method in OBSERVATIONS:
            stored = stored_files(warehouse, method)
            observed[method] = Observed()
            runs[method] = []
            if stored.wells.width:
                observed[method].add(stored.wells)
                runs[method] = remember(stored.summaries, method)
        yield IngestBatch(
            warehouse=warehouse,
            settings=settings,
            ledger=Ledger(warehouse.read(INGEST_LOG)),
            observed=observed,
            stored_runs=runs,
            sample_rows=[warehouse.read(SAMPLES)],
            infusion_rows=[warehouse.read(INFUSIONS)],
        )
