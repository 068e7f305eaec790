"""One file into the warehouse: raw rows written and its fate in the ledger.

A file is read and detected once (:func:`read_source`); the :class:`SourceFile` carries its
bytes, SHA-256 and detected format into :func:`ingest_source`: duplicate check -> parse +
validate -> plausibility -> prerequisites (else ``waiting``) -> write raw rows -> rebuild the
touched patients (or mark them dirty for one rebuild at the end of a batch) -> ledger ->
archive (or quarantine with a report). A bad file never raises: it becomes a ``quarantined``
outcome with reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import polars as pl

from chimera.detect import Assay, DecodedExport, Detection, ExportFormat, detect
from chimera.errors import ChimeraError, Problem, RejectReason
from chimera.inbox import archive_file, quarantine_file
from chimera.parsers.common import ParsedExport
from chimera.parsers.dispatch import check_plausible, parse_export
from chimera.prerequisites import assay_sample_ids, missing_prerequisites, resolve_sample_ids
from chimera.rebuild import recompute_or_defer
from chimera.registry import (
    Registry,
    affected_patients,
    first_waiting_time,
    measured_ids,
    read_ledger,
    read_observations,
    read_registry,
    supersession,
)
from chimera.settings import Settings
from chimera.warehouse import (
    INFUSIONS,
    INGEST_LOG,
    OBSERVATIONS,
    PIPELINE_VERSION,
    SAMPLES,
    Warehouse,
    sha256_of,
)
from schemas.base import UTC
from schemas.vocab import PRODUCT_ROLES, FileStatus, Method


@dataclass(frozen=True)
class SourceFile:
    """One input file as read once: its bytes, their SHA-256 and the detected format."""

    path: Path
    data: bytes
    sha256: str
    detection: Detection | None
    """None when the content matches no known format."""
    export: DecodedExport | ChimeraError | None = None
    """The file as :func:`chimera.detect.detect` read it, or why it refused it (None: not read
    yet; :func:`read_source` always fills it)."""

    @property
    def name(self) -> str:
        """The file's name (never used to decide its format)."""
        return self.path.name


def read_source(path: Path) -> SourceFile:
    """Read a file's bytes and detect its format, once (raises ``OSError`` when unreadable)."""
    data = path.read_bytes()
    export = detect_export(data, file_name=path.name)
    detection = export.detection if isinstance(export, DecodedExport) else None
    return SourceFile(path, data, sha256_of(data), detection, export)


def detect_export(data: bytes, *, file_name: str) -> DecodedExport | ChimeraError:
    """:func:`chimera.detect.detect`, with its refusal returned instead of raised."""
    try:
        return detect(data, file_name=file_name)
    except ChimeraError as err:
        return err


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
class _Run:
    """Where and when one file is ingested."""

    warehouse: Warehouse
    settings: Settings
    now: datetime
    flow_run_id: str | None
    recompute: bool


def ingest_source(
    source: SourceFile | Path,
    *,
    settings: Settings,
    now: datetime,
    move: bool,
    flow_run_id: str | None = None,
    recompute: bool = True,
) -> FileOutcome:
    """Ingest one file and put it where it belongs (archive, quarantine, or left waiting).

    A path is read (and detected) first; a :class:`SourceFile` was read already.
    ``move`` = move the file (inbox use); otherwise copy it, leaving the original untouched.
    ``recompute=False`` only marks the touched patients dirty;
    :func:`chimera.rebuild.recover_dirty` then rebuilds each of them once (what a batch does).
    """
    if isinstance(source, Path):
        source = read_source(source)
    run = _Run(Warehouse(settings.warehouse), settings, now, flow_run_id, recompute)
    outcome = _ingest_content(source, run)
    if outcome.status in (FileStatus.ACCEPTED, FileStatus.DUPLICATE):
        target = archive_file(
            source.path, settings.archive, sha256=outcome.sha256, when=now, move=move
        )
    elif outcome.status is FileStatus.QUARANTINED:
        target = quarantine_file(
            source.path,
            settings.quarantine,
            sha256=outcome.sha256,
            headline=outcome.reason or "rejected",
            problems=outcome.problems,
            when=now,
            move=move,
        )
    else:
        return outcome
    return replace(outcome, destination=target)


def _ingest_content(source: SourceFile, run: _Run) -> FileOutcome:
    """Ingest one file's content into the warehouse and record its fate in the ledger.

    The file itself is not moved. The waiting time-out counts from the file's first
    ``waiting`` row in the ledger.
    """
    base = FileOutcome(
        file_name=source.name,
        sha256=source.sha256,
        size_bytes=len(source.data),
        status=FileStatus.WAITING,
    )
    ledger = read_ledger(run.warehouse)
    duplicate = _record_duplicate(run, base, ledger)
    if duplicate is not None:
        return duplicate
    export = source.export or detect_export(source.data, file_name=source.name)
    if isinstance(export, ChimeraError):
        return _reject(run, base, None, export.reason, str(export), tuple(export.problems))
    detection = export.detection
    fmt = detection.format.value
    try:
        parsed = parse_export(export, settings=run.settings, now=run.now)
        check_plausible(parsed.frame, detection.assay, settings=run.settings, file_name=source.name)
    except ChimeraError as err:
        return _reject(run, base, fmt, err.reason, str(err), tuple(err.problems))
    frame = parsed.frame
    base = replace(base, reason="; ".join(parsed.notes) or None)  # e.g. specimens kept as written
    if detection.assay is Assay.REGISTRY:
        return _accept_registry(run, base, detection, frame)
    return _accept_assay(run, base, detection, parsed, ledger)


def _record_duplicate(run: _Run, base: FileOutcome, ledger: pl.DataFrame) -> FileOutcome | None:
    """The ``duplicate`` outcome when this content was accepted before (None otherwise).

    Logged only when the content arrives under another name than the one it was accepted as.
    """
    accepted = ledger.filter(
        (pl.col("source_sha256") == base.sha256) & (pl.col("status") == FileStatus.ACCEPTED)
    )
    if not accepted.height:
        return None
    first = accepted.row(0, named=True)
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
    row = {
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
    run.warehouse.append_log(pl.DataFrame([row], schema=INGEST_LOG.schema))


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


def _with_lineage(frame: pl.DataFrame, base: FileOutcome, now: datetime) -> pl.DataFrame:
    return frame.with_columns(
        source_sha256=pl.lit(base.sha256),
        source_file=pl.lit(base.file_name),
        pipeline_version=pl.lit(PIPELINE_VERSION),
        ingested_at=pl.lit(now, dtype=UTC),
    )


def _accept(run: _Run, outcome: FileOutcome) -> FileOutcome:
    """Rebuild (or mark dirty) the touched patients, then log the file as accepted."""
    recompute_or_defer(
        run.warehouse,
        set(outcome.patients),
        settings=run.settings,
        now=run.now,
        recompute=run.recompute,
    )
    _log(run, outcome)
    return outcome


def _accept_registry(
    run: _Run, base: FileOutcome, detection: Detection, frame: pl.DataFrame
) -> FileOutcome:
    with run.warehouse.lock():
        rows = _with_lineage(frame, base, run.now).drop("source_file")
        if detection.format is ExportFormat.MANIFEST:
            run.warehouse.write(SAMPLES, base.sha256, rows)
            patients = set(frame.filter(~pl.col("role").is_in(PRODUCT_ROLES))["patient_id"])
        else:
            run.warehouse.write(INFUSIONS, base.sha256, rows)
            patients = set(frame["patient_id"])
        accepted = replace(
            base,
            status=FileStatus.ACCEPTED,
            detected_format=detection.format.value,
            rows=frame.height,
            patients=frozenset(patients),
        )
        return _accept(run, accepted)


def _accept_assay(
    run: _Run, base: FileOutcome, detection: Detection, parsed: ParsedExport, ledger: pl.DataFrame
) -> FileOutcome:
    method = Method(detection.assay.value)
    fmt = detection.format.value
    with run.warehouse.lock():
        registry = read_registry(run.warehouse)
        frame = resolve_sample_ids(parsed.frame, set(registry.samples["sample_id"].to_list()))
        stored = read_observations(run.warehouse, method)
        waits = _waits(run.warehouse, frame, method, registry, stored)
        if waits:
            return _wait_or_time_out(run, replace(base, detected_format=fmt), waits, ledger)
        rows = _with_lineage(frame, base, run.now).with_columns(
            run_id=pl.lit(parsed.run_id, dtype=pl.String)
        )
        supersedes, why = _replaced_files(stored, rows, method, base.sha256)
        table = OBSERVATIONS[method]
        if not run.warehouse.has(table, base.sha256):
            run.warehouse.write(table, base.sha256, rows)
        notes = [f"supersedes {supersedes}: {why}"] if supersedes else []
        accepted = replace(
            base,
            status=FileStatus.ACCEPTED,
            detected_format=fmt,
            rows=frame.height,
            patients=frozenset(affected_patients(frame, registry, method)),
            supersedes=supersedes,
            reason="; ".join([*notes, *([base.reason] if base.reason else [])]) or None,
        )
        return _accept(run, accepted)


def _replaced_files(
    stored: pl.DataFrame, rows: pl.DataFrame, method: Method, sha256: str
) -> tuple[str | None, str | None]:
    """Names of the files this one replaces as a re-export of their run, and why (or None).

    The rule is :func:`chimera.registry.supersession`'s: the files current before this one
    that it replaces now.
    """
    if stored.height == 0:
        return None, None
    before = supersession(stored, method).filter(pl.col("replaced_by").is_null())
    after = supersession(pl.concat([stored, rows], how="diagonal_relaxed"), method)
    mine = after.filter(pl.col("source_sha256") == sha256)
    replaced = after.filter(
        (pl.col("replaced_by") == sha256)
        & pl.col("source_sha256").is_in(before["source_sha256"].implode())
    )
    if replaced.height == 0:
        return None, None
    return ", ".join(sorted(replaced["source_file"].to_list())), mine["link"][0]


def _waits(
    warehouse: Warehouse,
    frame: pl.DataFrame,
    method: Method,
    registry: Registry,
    stored: pl.DataFrame,
) -> list[str]:
    """What this assay frame still waits for, given what is already measured."""
    measured = set(assay_sample_ids(frame)) | measured_ids(stored)
    pool = measured
    if method != Method.STR:
        for other in (Method.QPCR, Method.DDPCR):
            pool = pool | measured_ids(read_observations(warehouse, other))
    return missing_prerequisites(
        frame, method, registry=registry, measured=measured, baselines_measured=pool
    )


def _wait_or_time_out(
    run: _Run, base: FileOutcome, waits: list[str], ledger: pl.DataFrame
) -> FileOutcome:
    """Leave the file waiting (logging a changed reason), or quarantine it after the time-out."""
    first_seen = first_waiting_time(ledger, base.sha256)
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
    previous = ledger.filter(pl.col("source_sha256") == base.sha256)
    if (
        not previous.height
        or previous["status"][-1] != FileStatus.WAITING
        or previous["reason"][-1] != reason
    ):
        _log(run, outcome)
    return outcome
