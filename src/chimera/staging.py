"""A file's parse kept as Parquet, so parallel parse tasks return ids and paths, never frames.

A poll run by the Prefect flow parses its files in parallel (threads or Dask workers,
``Settings.scale.task_runner``): each task runs :func:`stage_source` on one file, which parses
and validates it exactly as :func:`chimera.ingest.prepare_source` does in-process, writes the
frame to ``<staging>/<sha256>.parquet`` (a local folder or an fsspec URL every worker reaches)
and returns a :class:`StagedParse`: the file's id, where its frame is, and why it was refused.
:func:`unstage` turns it back into the :class:`~chimera.ingest.Prepared` of the batch; the
writes of the batch then go on in one process, under the warehouse lock.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from chimera.detect import Assay, ExportFormat
from chimera.errors import ChimeraError, Problem
from chimera.ingest import Prepared, SourceFile, prepare_source
from chimera.parsers.common import ParsedExport
from chimera.settings import Settings
from chimera.storage import Store
from chimera.validation import check_deferred

T = TypeVar("T")


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
    error = check_deferred([deferred])[0] or prepared.error
    if error is not None:
        return StagedParse(
            source.sha256,
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
    key = f"{source.sha256}.parquet"
    Store.from_url(location, settings.scale.storage_options).write_atomic(key, buffer.getvalue())
    return StagedParse(
        source.sha256,
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


def shares(items: Sequence[T], parts: int) -> list[list[T]]:
    """Split ``items`` into at most ``parts`` runs of near-equal length, order kept.

    Examples
    --------
    >>> shares([1, 2, 3, 4, 5], 2)
    [[1, 2, 3], [4, 5]]
    >>> shares([1, 2], 4)
    [[1], [2]]
    """
    count = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        out.append(list(items[start:end]))
        start = end
    return [share for share in out if share]


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


def clear_staging(location: str, options: Mapping[str, Any]) -> None:
    """Remove one poll's staging location and whatever is left in it."""
    store = Store.from_url(location, options)
    if store.fs.exists(store.root):
        store.fs.rm(store.root, recursive=True)
