"""One file into the warehouse: raw rows written and its fate in the ledger.

A file is read and detected once (:func:`chimera.source_file.read_source`); the
:class:`~chimera.source_file.SourceFile` carries its bytes, SHA-256 and detected format into
:func:`ingest_source`: duplicate check -> parse +
validate -> plausibility -> prerequisites (else ``waiting``) -> write raw rows -> rebuild the
touched patients (or mark them dirty for one rebuild at the end of a batch) -> ledger ->
archive (or quarantine with a report). A bad file never raises: it becomes a ``quarantined``
outcome with reasons.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC as UTC_ZONE
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from chimera.batch import IngestBatch, open_batch
from chimera.consistency import check_infusion_log, check_manifest
from chimera.detect import Assay, ExportFormat
from chimera.errors import (
    ChimeraError,
    Problem,
    RejectReason,
)
from chimera.parsers.common import ParsedExport
from chimera.parsers.dispatch import check_plausible, parse_export
from chimera.prerequisites import assay_sample_ids, resolve_sample_ids
from chimera.rebuild import recompute_patients
from chimera.registry import affected_patients
from chimera.settings import Settings
from chimera.source_file import SourceFile, detect_export, read_source
from chimera.validation import Deferred, check_deferred, deferred_validation
from chimera.warehouse import (
    INFUSIONS,
    OBSERVATIONS,
    PIPELINE_VERSION,
    SAMPLES,
)
from schemas.base import UTC
from schemas.vocab import PRODUCT_ROLES, FileStatus, Method

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file."""

    file_name: str
    sha256: str
    size_bytes: int
    status: FileStatus
    detected_format: str | None = None
    reason: str | None = None
    reason_code: str | None = None
    problems: tuple[Problem, ...] = ()
    rows: int = 0
    patients: frozenset[str] = frozenset()
    supersedes: str | None = None
    destination: Path | None = None


@dataclass(frozen=True)
class Prepared:
    """One file parsed once per batch: its frame (validated) and notes, or why it was refused."""

    detected_format: str | None
    assay: Assay = Assay.NONE
    parsed: ParsedExport | None = None
    error: ChimeraError | None = None


def prepare_source(
    source: SourceFile, *, settings: Settings, now: datetime
) -> tuple[Prepared, list[Deferred]]:
    """Detect (if not done) and parse one file; its contract checks may be deferred.

    Returns the parse and the checks :func:`chimera.validation.deferred_validation` put off:
    the parse only counts once they pass (:func:`prepare_sources` runs them for many files).
    """
    export = source.export or detect_export(source.data, file_name=source.name)
    if isinstance(export, ChimeraError):
        return Prepared(None, error=export), []
    detection = export.detection
    fmt = detection.format.value
    with deferred_validation() as deferred:
        try:
            parsed = parse_export(export, settings=settings, now=now)
            check_plausible(parsed.frame, detection.assay, settings=settings, file_name=source.name)
        except ChimeraError as err:
            # A frame that breaks its contract is reported as such, whatever came after.
            return Prepared(fmt, detection.assay, error=check_deferred([deferred])[0] or err), []
        except Exception:
            invalid = check_deferred([deferred])[0]
            if invalid is None:
                raise
            return Prepared(fmt, detection.assay, error=invalid), []
    return Prepared(fmt, detection.assay, parsed=parsed), deferred


ParseMany = Callable[[Sequence[SourceFile]], Sequence[Prepared | None]]
"""Parse many files elsewhere (the flow's parallel tasks, :mod:`chimera.staging`); None for a
file whose parser crashed."""


def prepare_sources(
    sources: Sequence[SourceFile],
    batch: IngestBatch,
    *,
    clock: Callable[[], datetime],
    parse_many: ParseMany | None = None,
) -> None:
    """Parse every file of a batch that is not known yet, checking all frames in one pass.

    Content already accepted (a duplicate) is not parsed. Frames of one contract are validated
    together; a file whose frame breaks its contract gets that file's own report. A file whose
    parser crashes is left unprepared: ingesting it alone re-raises the crash for that file.
    ``parse_many`` parses the files instead (each one validated on its own); its parses may
    arrive as each file is looked up in ``batch.prepared`` (:mod:`chimera.parses`).
    """
    todo: dict[str, SourceFile] = {}
    for source in sources:
        sha = source.sha256
        if sha not in batch.prepared and batch.ledger.first_accepted(sha) is None:
            todo.setdefault(sha, source)
    files = list(todo.values())
    found: Sequence[Prepared | None]
    if parse_many is None:
        found = prepare_many(files, settings=batch.settings, clock=clock, reraise=len(sources) == 1)
    else:
        found = parse_many(files)
    for index, sha in enumerate(todo):
        batch.prepared.expect(sha, found, index)


def prepare_many(
    sources: Sequence[SourceFile],
    *,
    settings: Settings,
    clock: Callable[[], datetime],
    reraise: bool = False,
) -> list[Prepared | None]:
    """:func:`prepare_source` of each file, the frames of one contract checked in one pass.

    A file whose frame breaks its contract gets that file's own report. None for a file
    whose parser crashed (``reraise``: the crash is raised instead): ingesting it alone raises
    the crash again, for this file only.
    """
    results: list[tuple[Prepared, list[Deferred]] | None] = []
    for source in sources:
        try:
            results.append(prepare_source(source, settings=settings, now=clock()))
        except Exception:
            if reraise:
                raise
            results.append(None)
    errors = iter(check_deferred([found[1] for found in results if found is not None]))
    prepared: list[Prepared | None] = []
    for found in results:
        error = None if found is None else next(errors)
        if found is None or error is None:
            prepared.append(None if found is None else found[0])
        else:
            prepared.append(replace(found[0], error=error))
    return prepared


@dataclass(frozen=True)
class _Run:
    """Where and when one file is ingested."""

    batch: IngestBatch
    settings: Settings
    now: datetime
    flow_run_id: str | None


def ingest_source(
    source: SourceFile | Path,
    *,
    settings: Settings,
    now: datetime,
    move: bool,
    flow_run_id: str | None = None,
    recompute: bool = True,
    batch: IngestBatch | None = None,
) -> FileOutcome:
    """Ingest one file and put it where it belongs (archive, quarantine, or left waiting).

    A path is read (and detected) first; a :class:`SourceFile` was read already.
    ``move`` = move the file (inbox use); otherwise copy it, leaving the original untouched.
    With a ``batch`` (a poll) the file's rows, ledger events and placement wait for the batch's
    flush and its touched patients are rebuilt by the caller. Alone, the file is its own batch:
    flushed at once, then ``recompute=True`` rebuilds the touched patients and
    ``recompute=False`` only leaves them dirty for :func:`chimera.rebuild.recover_dirty`.
    """
    if isinstance(source, Path):
        source = read_source(source)
    if batch is not None:
        return _ingest_into(batch, source, now=now, move=move, flow_run_id=flow_run_id)
    with open_batch(settings) as own:
        outcome = _ingest_into(own, source, now=now, move=move, flow_run_id=flow_run_id)
        placed = own.flush()
        if recompute and own.touched:
            recompute_patients(own.warehouse, own.touched, settings=settings, now=now)
    return placed.get(source.path, outcome)


def _ingest_into(
    batch: IngestBatch, source: SourceFile, *, now: datetime, move: bool, flow_run_id: str | None
) -> FileOutcome:
    run = _Run(batch, batch.settings, now, flow_run_id)
    outcome = _ingest_content(source, run)
    batch.place(source, outcome, move=move, when=now)
    return outcome


def _ingest_content(source: SourceFile, run: _Run) -> FileOutcome:
    """Ingest one file's content into the batch and record its fate in the ledger.

    The file itself is not moved. The waiting time-out counts from the file's first
    ``waiting`` row in the ledger.
    """
    base = FileOutcome(
        file_name=source.name,
        sha256=source.sha256,
        size_bytes=source.size_bytes,
        status=FileStatus.WAITING,
    )
    duplicate = _record_duplicate(run, base)
    if duplicate is not None:
        return duplicate
    prepared = run.batch.prepared.get(source.sha256)
    if prepared is None:
        prepare_sources([source], run.batch, clock=lambda: run.now)
        prepared = run.batch.prepared[source.sha256]
    fmt = prepared.detected_format
    if prepared.error is not None:
        err = prepared.error
        return _reject(run, base, fmt, err.reason, str(err), tuple(err.problems))
    assert prepared.parsed is not None
    parsed = prepared.parsed
    base = replace(base, reason="; ".join(parsed.notes) or None)  # e.g. specimens kept as written
    if prepared.assay is Assay.REGISTRY:
        return _accept_registry(run, base, fmt, parsed)
    return _accept_assay(run, base, Method(prepared.assay.value), fmt, parsed)


def _record_duplicate(run: _Run, base: FileOutcome) -> FileOutcome | None:
    """The ``duplicate`` outcome when this content was accepted before (None otherwise).

    Logged only when the content arrives under another name than the one it was accepted as.
    """
    first = run.batch.ledger.first_accepted(base.sha256)
    if first is None:
        return None
    when = f"{first['logged_at']:%Y-%m-%d %H:%M} UTC"
    outcome = replace(
        base,
        status=FileStatus.DUPLICATE,
        detected_format=first["detected_format"],
        reason=f"same content as {first['file_name']} accepted {when}",
    )
    if first["file_name"] != base.file_name:
        _log(run, outcome)
    return outcome


def _log(run: _Run, outcome: FileOutcome) -> None:
    run.batch.log(
        {
            "source_sha256": outcome.sha256,
            "file_name": outcome.file_name,
            "size_bytes": outcome.size_bytes,
            "detected_format": outcome.detected_format,
            "status": outcome.status.value,
            "reason": outcome.reason,
            "rows": outcome.rows,
            "supersedes": outcome.supersedes,
            "flow_run_id": run.flow_run_id,
            "pipeline_version": PIPELINE_VERSION,
            "logged_at": run.now,
        }
    )


def _reject(
    run: _Run,
    base: FileOutcome,
    fmt: str | None,
    code: RejectReason,
    message: str,
    problems: tuple[Problem, ...] = (),
) -> FileOutcome:
    outcome = replace(
        base,
        status=FileStatus.QUARANTINED,
        detected_format=fmt,
        reason=f"{code.value}: {message}",
        reason_code=code.value,
        problems=problems,
    )
    _log(run, outcome)
    return outcome


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC_ZONE)


def _utc_literal(when: datetime) -> pl.Expr:
    """``pl.lit(when, dtype=UTC)`` (a naive time counts as UTC), 5x cheaper: from microseconds."""
    if when.tzinfo is not None and str(when.tzinfo) != "UTC":
        return pl.lit(when, dtype=UTC)
    aware = when.replace(tzinfo=UTC_ZONE)
    return pl.lit((aware - _EPOCH) // timedelta(microseconds=1), dtype=pl.Int64).cast(UTC)


def _with_lineage(
    frame: pl.DataFrame, base: FileOutcome, now: datetime, **more: pl.Expr
) -> pl.DataFrame:
    """``frame`` with the lineage columns, then ``more`` columns (one pass)."""
    return frame.with_columns(
        source_sha256=pl.lit(base.sha256),
        source_file=pl.lit(base.file_name),
        pipeline_version=pl.lit(PIPELINE_VERSION),
        ingested_at=_utc_literal(now),
        **more,
    )


def _accept(run: _Run, outcome: FileOutcome) -> FileOutcome:
    """Mark the touched patients for the batch's rebuild, then log the file as accepted."""
    run.batch.touched |= outcome.patients
    _log(run, outcome)
    return outcome


def _accept_registry(
    run: _Run, base: FileOutcome, fmt: str | None, parsed: ParsedExport
) -> FileOutcome:
    """Accept a manifest or infusion log, checked against the registry as the batch holds it.

    An impossible date across files quarantines it; changed values are accepted with a note
    (:mod:`chimera.consistency`), and a sample moved away also rebuilds the patient it left.
    """
    frame = parsed.frame
    manifest = parsed.format is ExportFormat.MANIFEST
    check = check_manifest if manifest else check_infusion_log
    try:
        verdict = check(frame, run.batch.registry, run.batch.ledger.frame())
    except ChimeraError as err:
        return _reject(run, base, fmt, err.reason, str(err), tuple(err.problems))
    rows = _with_lineage(frame, base, run.now).drop("source_file")
    if manifest:
        run.batch.add_rows(SAMPLES, base.sha256, rows)
        patients = set(frame.filter(~pl.col("role").is_in(PRODUCT_ROLES))["patient_id"])
    else:
        run.batch.add_rows(INFUSIONS, base.sha256, rows)
        patients = set(frame["patient_id"])
    accepted = replace(
        base,
        status=FileStatus.ACCEPTED,
        detected_format=fmt,
        rows=frame.height,
        patients=frozenset(patients | verdict.also_touches),
        reason="; ".join(r for r in (base.reason, verdict.reason) if r) or None,
    )
    return _accept(run, accepted)


def _accept_assay(
    run: _Run, base: FileOutcome, method: Method, fmt: str | None, parsed: ParsedExport
) -> FileOutcome:
    batch = run.batch
    registry = batch.registry
    frame = resolve_sample_ids(parsed.frame, batch.known_sample_ids)
    ids = assay_sample_ids(frame)
    waits = batch.waits(frame, ids, method)
    if waits:
        return _wait_or_time_out(run, replace(base, detected_format=fmt), waits)
    rows = _with_lineage(frame, base, run.now, run_id=pl.lit(parsed.run_id, dtype=pl.String))
    supersedes, why = batch.replaced_files(rows, method, base.sha256)
    table = OBSERVATIONS[method]
    if not batch.has(table, base.sha256):
        batch.add_rows(table, base.sha256, rows)
    notes = [f"supersedes {supersedes}: {why}"] if supersedes else []
    accepted = replace(
        base,
        status=FileStatus.ACCEPTED,
        detected_format=fmt,
        rows=frame.height,
        patients=frozenset(
            affected_patients(frame, registry, method, batch.observed[method].targets)
        ),
        supersedes=supersedes,
        reason="; ".join([*notes, *([base.reason] if base.reason else [])]) or None,
    )
    return _accept(run, accepted)


def _wait_or_time_out(run: _Run, base: FileOutcome, waits: list[str]) -> FileOutcome:
    """Leave the file waiting (logging a changed reason), or quarantine it after the time-out."""
    first_seen = run.batch.ledger.first_waiting_time(base.sha256)
    waited_hours = (run.now - first_seen).total_seconds() / 3600 if first_seen else 0.0
    limit = run.settings.inbox_rules.waiting_timeout_hours
    if waited_hours >= limit:
        problems = tuple(Problem(rule="prerequisite", message=w) for w in waits)
        msg = (
            f"waited {waited_hours:.0f} h (limit {limit:g} h) for {'; '.join(waits)}; "
            "drop the missing manifest/baseline file, then this file again"
        )
        return _reject(run, base, base.detected_format, RejectReason.WAITED_TOO_LONG, msg, problems)
    reason = "waiting for " + "; ".join(waits)
    outcome = replace(base, status=FileStatus.WAITING, reason=reason)
    previous = run.batch.ledger.events(base.sha256)
    if (
        not previous
        or previous[-1]["status"] != FileStatus.WAITING
        or previous[-1]["reason"] != reason
    ):
        _log(run, outcome)
    return outcome
