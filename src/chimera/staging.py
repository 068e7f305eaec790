"""A file's parse kept as Parquet, so parallel parse tasks return ids and paths, never frames.

A poll run by the Prefect flow parses its files in parallel (threads or Dask workers,
``Settings.scale.task_runner``): each task runs :func:`stage_source` on one file, which parses
and validates it exactly as :func:`chimera.ingest.prepare_source` does in-process, writes the
frame to ``<staging>/<sha256>.parquet`` (a local folder or an fsspec URL every worker reaches)
and returns a :class:`StagedParse`: the file's id, where its frame is, and why it was refused.
:func:`unstage` turns it back into the :class:`~chimera.ingest.Prepared` of the batch; the
writes of the batch then go on in one process, under the warehouse lock. A big in-process
batch (``chimera ingest``) stages its parses the same way in the worker processes of
:mod:`chimera.workers` (:func:`parse_in_pool`).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, overload

import polars as pl

from chimera.detect import Assay, DecodedExport, ExportFormat
from chimera.errors import ChimeraError, Problem
from chimera.heap import set_aside
from chimera.ingest import ParseMany, Prepared, prepare_many, prepare_source
from chimera.parsers.common import ParsedExport
from chimera.settings import Settings
from chimera.source_file import SourceFile
from chimera.storage import Store
from chimera.validation import check_deferred
from chimera.workers import Mapped, WorkerPool, shares


@dataclass(frozen=True)
class StagedParse:
    """One file's parse as a task returns it: ids, the frame's location, or the refusal."""

    sha256: str
    detected_format: str | None
    assay: Assay
    frame_key: str | None = None
    """``<sha256>.parquet`` under the staging location (None: refused)."""
    export_format: ExportFormat | None = None
    run_id: str | None = None
    layout_fingerprint: str | None = None
    notes: tuple[str, ...] = ()
    error_type: type[ChimeraError] | None = None
    """The refusal, as its class, message and problems (exceptions do not pickle whole)."""
    error_message: str = ""
    problems: tuple[Problem, ...] = ()


def staging_location(settings: Settings, run: str) -> str:
    """Where one poll's parses are staged: ``Settings.scale.staging_url`` or the warehouse's."""
    base = settings.scale.staging_url or str(Path(settings.warehouse) / ".staging")
    return f"{base.rstrip('/')}/{run}"


def stage_source(
    source: SourceFile, *, settings: Settings, now: datetime, location: str
) -> StagedParse:
    """Parse and validate one file (:func:`chimera.ingest.prepare_source`), stage its frame."""
    prepared, deferred = prepare_source(source, settings=settings, now=now)
    error = check_deferred([deferred])[0]
    if error is not None:
        prepared = replace(prepared, error=error)
    return stage_prepared(source.sha256, prepared, settings=settings, location=location)


def stage_prepared(
    sha256: str, prepared: Prepared, *, settings: Settings, location: str
) -> StagedParse:
    """A file's parse (or refusal) as a :class:`StagedParse`, its frame written to ``location``."""
    error = prepared.error
    if error is not None:
        return StagedParse(
            sha256,
            prepared.detected_format,
            prepared.assay,
            error_type=type(error),
            error_message=str(error),
            problems=tuple(error.problems),
        )
    parsed = prepared.parsed
    assert parsed is not None
    buffer = io.BytesIO()
    parsed.frame.write_parquet(buffer)
    key = f"{sha256}.parquet"
    Store.from_url(location, settings.scale.storage_options).write_atomic(key, buffer.getvalue())
    return StagedParse(
        sha256,
        prepared.detected_format,
        prepared.assay,
        frame_key=key,
        export_format=parsed.format,
        run_id=parsed.run_id,
        layout_fingerprint=parsed.layout_fingerprint,
        notes=parsed.notes,
    )


def stage_sources(
    sources: Sequence[SourceFile], *, settings: Settings, now: datetime, location: str
) -> list[StagedParse]:
    """:func:`stage_source` for several files (one task's share of a poll)."""
    return [stage_source(s, settings=settings, now=now, location=location) for s in sources]


def stage_each(
    sources: Sequence[SourceFile], *, settings: Settings, now: datetime, location: str
) -> list[StagedParse | None]:
    """A worker's share of a batch (:func:`parse_in_pool`), parsed and staged.

    Parsed as in-process (:func:`chimera.ingest.prepare_many`: frames of one contract checked
    in one pass); None for a file whose parser crashed or whose frame could not be staged:
    the batch then parses it alone, in-process, and a crash is raised for that file only.
    """
    staged: list[StagedParse | None] = []
    found = prepare_many(sources, settings=settings, clock=lambda: now)
    for source, prepared in zip(sources, found, strict=True):
        try:
            staged.append(
                None
                if prepared is None
                else stage_prepared(source.sha256, prepared, settings=settings, location=location)
            )
        except OSError:
            staged.append(None)
    return staged


@contextmanager
def parse_in_pool(
    pool: WorkerPool, settings: Settings, *, clock: Callable[[], datetime]
) -> Iterator[ParseMany]:
    """A batch's ``parse_many`` (:func:`chimera.ingest.prepare_sources`) run by ``pool``.

    Each spawned worker parses its share of the files (:func:`stage_each`) and stages the
    frames under ``<warehouse>/.staging``; this process reads a share back when the batch
    first looks up one of its files (:class:`PoolParses`), so it books the first files while
    the workers parse later ones. When the share asked for is not ready, this process parses
    the last share no worker has started itself (:func:`chimera.ingest.prepare_many`, nothing
    staged). A file already decoded travels as its decoded text, not its bytes too (the
    worker need not detect it again). Leaving the block drops the shares not started, waits
    for those under way and clears the staging.
    """
    made: list[PoolParses] = []

    def parse_many(sources: Sequence[SourceFile]) -> PoolParses:
        now = clock()
        location = staging_location(settings, uuid.uuid4().hex)
        work = partial(stage_each, settings=settings, now=now, location=location)

        def here(share: list[SourceFile]) -> Sequence[StagedParse | Prepared | None]:
            return prepare_many(share, settings=settings, clock=lambda: now)

        shipped = [
            replace(s, data=b"") if isinstance(s.export, DecodedExport) else s for s in sources
        ]
        pieces = shares(shipped, pool.pieces)
        mapped = pool.map_lazily(work, pieces, here=here)
        made.append(PoolParses(mapped, [len(p) for p in pieces], location, settings))
        return made[-1]

    try:
        yield parse_many
    finally:
        for parses in made:
            parses.close()


class PoolParses(Sequence[Prepared | None]):
    """The parses of a batch's files by a pool (:func:`parse_in_pool`), taken in on demand.

    A share is read back (:func:`unstage_all`) when one of its files is first asked for.
    """

    def __init__(
        self,
        mapped: Mapped[list[SourceFile], Sequence[StagedParse | Prepared | None]],
        sizes: Sequence[int],
        location: str,
        settings: Settings,
    ) -> None:
        self._mapped, self._location = mapped, location
        self._options = settings.scale.storage_options
        self._starts = list(itertools.accumulate(sizes, initial=0))
        self._shares: dict[int, list[Prepared | None]] = {}

    def __len__(self) -> int:
        return self._starts[-1]

    @overload
    def __getitem__(self, index: int) -> Prepared | None: ...

    @overload
    def __getitem__(self, index: slice) -> list[Prepared | None]: ...

    def __getitem__(self, index: int | slice) -> Prepared | list[Prepared | None] | None:
        if isinstance(index, slice):
            return [self[one] for one in range(len(self))[index]]
        if not 0 <= index < len(self):
            raise IndexError(index)
        share = bisect.bisect_right(self._starts, index) - 1
        if share not in self._shares:
            self._shares[share] = unstage_all(
                self._mapped[share], location=self._location, options=self._options
            )
            set_aside()  # the parsed files live through the batch (chimera.heap)
        return self._shares[share][index - self._starts[share]]

    def close(self) -> None:
        """Drop the shares no worker started, wait for those under way, clear the staging."""
        self._mapped.settle()
        with contextlib.suppress(OSError):  # only disk space: a later batch stages elsewhere
            clear_staging(self._location, self._options)


def unstage(staged: StagedParse, *, location: str, options: Mapping[str, Any]) -> Prepared:
    """The :class:`~chimera.ingest.Prepared` a staged parse stands for (its frame read back)."""
    if staged.error_type is not None:
        error = staged.error_type(staged.error_message, list(staged.problems))
        return Prepared(staged.detected_format, staged.assay, error=error)
    assert staged.frame_key is not None
    assert staged.export_format is not None
    store = Store.from_url(location, options)
    frame = pl.read_parquet(io.BytesIO(store.read_bytes(staged.frame_key)))
    store.remove(staged.frame_key)
    parsed = ParsedExport(
        frame,
        staged.export_format,
        run_id=staged.run_id,
        layout_fingerprint=staged.layout_fingerprint,
        notes=staged.notes,
    )
    return Prepared(staged.detected_format, staged.assay, parsed=parsed)


def unstage_all(
    staged: Sequence[StagedParse | Prepared | None], *, location: str, options: Mapping[str, Any]
) -> list[Prepared | None]:
    """:func:`unstage` each staged parse; a parse made here and None pass through.

    None leaves a file unprepared, and so does a frame that cannot be read back: the batch
    then parses the file alone, in-process.
    """
    prepared: list[Prepared | None] = []
    for one in staged:
        try:
            prepared.append(
                one
                if one is None or isinstance(one, Prepared)
                else unstage(one, location=location, options=options)
            )
        except OSError:
            prepared.append(None)
    return prepared


def clear_staging(location: str, options: Mapping[str, Any]) -> None:
    """Remove one poll's staging location and whatever is left in it."""
    store = Store.from_url(location, options)
    if store.fs.exists(store.root):
        store.fs.rm(store.root, recursive=True)
