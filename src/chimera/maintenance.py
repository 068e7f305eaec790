"""Nightly housekeeping: check the warehouse against the archive, rebuild every patient.

Used by the ``nightly_rebuild`` flow and ``chimera verify``; plain functions of a
:class:`~chimera.settings.Settings`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table as RichTable

from chimera.detect import ASSAY_OF, ExportFormat
from chimera.filing import TEMPORARY_PREFIX
from chimera.rebuild import recompute_patients
from chimera.registry import read_ledger, read_registry, registry_patients
from chimera.settings import Settings
from chimera.warehouse import (
    ALERTS,
    ASSAY_LIMITS,
    CHIMERISM,
    INFUSIONS,
    MARKERS,
    OBSERVATIONS,
    RAW_TABLES,
    SAMPLES,
    Table,
    Warehouse,
)
from chimera.workers import worker_pool
from schemas.vocab import FileStatus

_CHUNK = 1 << 20
DERIVED_TABLES = (CHIMERISM, MARKERS, ASSAY_LIMITS)
"""Tables whose every row names the accepted source it was computed from."""


class MismatchCode(StrEnum):
    """Why the warehouse and the archive disagree (stable codes for dashboards)."""

    MISSING_FROM_ARCHIVE = "missing_from_archive"
    ARCHIVED_COPY_DIFFERS = "archived_copy_differs"
    MISSING_RAW_ROWS = "missing_raw_rows"
    RAW_ROWS_DIFFER = "raw_rows_differ"
    ACCEPTED_TWICE = "accepted_twice"
    UNKNOWN_ARCHIVE_FILE = "unknown_archive_file"
    RAW_WITHOUT_LEDGER = "raw_without_ledger"
    ROWS_WITHOUT_SOURCE = "rows_without_source"


@dataclass(frozen=True)
class Mismatch:
    """One disagreement between the ledger, the raw tables and the archive."""

    code: MismatchCode
    sha256: str
    file_name: str
    detail: str


@dataclass(frozen=True)
class Verification:
    """The result of :func:`verify_warehouse`."""

    accepted_files: int
    archived_files: int
    mismatches: tuple[Mismatch, ...]

    @property
    def ok(self) -> bool:
        """Whether every accepted file is archived intact with its raw rows."""
        return not self.mismatches


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def raw_table_for(detected_format: str | None) -> Table | None:
    """The raw warehouse table an accepted file of this format writes (None when unknown).

    Examples
    --------
    >>> raw_table_for("manifest").name
    'samples'
    >>> raw_table_for("genemapper_sizing").name
    'observations_str'
    """
    if detected_format is None:
        return None
    try:
        fmt = ExportFormat(detected_format)
    except ValueError:
        return None
    if fmt is ExportFormat.MANIFEST:
        return SAMPLES
    if fmt is ExportFormat.INFUSION_LOG:
        return INFUSIONS
    assay = ASSAY_OF[fmt].value
    return next((table for m, table in OBSERVATIONS.items() if m == assay), None)


def _archive_index(archive: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    if archive.is_dir():
        for path in sorted(archive.rglob("*")):
            if path.is_file() and not path.name.startswith(TEMPORARY_PREFIX):
                index.setdefault(file_sha256(path), []).append(path)
    return index


def _archived_under_name(index: dict[str, list[Path]], name: str, sha: str) -> list[Path]:
    stem, suffix = Path(name).stem, Path(name).suffix
    names = {name, f"{stem}.{sha[:8]}{suffix}"}
    return [p for paths in index.values() for p in paths if p.name in names]


def _archive_problems(
    first: pl.DataFrame, index: dict[str, list[Path]], settings: Settings
) -> list[Mismatch]:
    """Accepted files missing from the archive or archived with other content."""
    found = []
    for sha, name in first.select("source_sha256", "file_name").iter_rows():
        if sha in index:
            continue
        same_name = _archived_under_name(index, name, sha)
        if same_name:
            detail = f"archived copy {same_name[0]} no longer has the SHA-256 recorded at ingest"
            found.append(Mismatch(MismatchCode.ARCHIVED_COPY_DIFFERS, sha, name, detail))
        else:
            detail = f"no file with this SHA-256 under {settings.archive}"
            found.append(Mismatch(MismatchCode.MISSING_FROM_ARCHIVE, sha, name, detail))
    return found


def _raw_problems(first: pl.DataFrame, warehouse: Warehouse) -> list[Mismatch]:
    """Accepted files whose raw rows are missing, fewer or more, or name another source."""
    found = []
    for row in first.iter_rows(named=True):
        sha, name = row["source_sha256"], row["file_name"]
        table = raw_table_for(row["detected_format"])
        if table is None:
            continue
        rows = warehouse.read_part(table, sha)
        if rows is None:
            detail = f"{table.name}/{sha}.parquet is missing"
            found.append(Mismatch(MismatchCode.MISSING_RAW_ROWS, sha, name, detail))
        elif rows.height != row["rows"] or set(rows["source_sha256"].to_list()) != {sha}:
            detail = (
                f"{table.name}/{sha}.parquet holds {rows.height} rows of "
                f"{sorted(s[:12] for s in set(rows['source_sha256'].to_list()))}; the ledger "
                f"recorded {row['rows']} rows of this file"
            )
            found.append(Mismatch(MismatchCode.RAW_ROWS_DIFFER, sha, name, detail))
    return found


def _orphan_problems(
    warehouse: Warehouse, accepted: set[str], known: set[str], index: dict[str, list[Path]]
) -> list[Mismatch]:
    """Archive files, raw files and derived rows that no accepted ledger entry explains."""
    found = []
    for sha, paths in sorted(index.items()):
        if sha not in known:
            detail = f"{paths[0]} matches no accepted or duplicate ledger entry"
            found.append(Mismatch(MismatchCode.UNKNOWN_ARCHIVE_FILE, sha, paths[0].name, detail))
    for table in RAW_TABLES:
        for path in warehouse.files(table):
            if path.stem not in accepted:
                detail = f"{table.name}/{path.name} has no accepted ledger entry (a run stopped before logging?)"
                found.append(
                    Mismatch(MismatchCode.RAW_WITHOUT_LEDGER, path.stem, path.name, detail)
                )
    for table in DERIVED_TABLES:
        rows = warehouse.read(table)
        orphans = rows.filter(~pl.col("source_sha256").is_in(list(accepted)))
        for sha, n in orphans.group_by("source_sha256").len().sort("source_sha256").iter_rows():
            detail = f"{n} {table.name} row(s) name a source no accepted file has"
            found.append(Mismatch(MismatchCode.ROWS_WITHOUT_SOURCE, sha, table.name, detail))
    return found


def verify_warehouse(settings: Settings) -> Verification:
    """Check the ledger against the archive and the raw and derived tables.

    Every accepted file must be in the archive with the same SHA-256 and have its raw table
    file with the number of rows the ledger recorded; no content may be accepted twice; every
    ``chimerism``/``markers``/``assay_limits`` row must name an accepted source; nothing
    unexplained may sit in the archive or the raw tables.
    """
    warehouse = Warehouse(settings.warehouse)
    ledger = read_ledger(warehouse)
    accepted = ledger.filter(pl.col("status") == FileStatus.ACCEPTED.value)
    known = set(
        ledger.filter(
            pl.col("status").is_in([FileStatus.ACCEPTED.value, FileStatus.DUPLICATE.value])
        )["source_sha256"].to_list()
    )
    index = _archive_index(settings.archive)
    mismatches: list[Mismatch] = []
    counts = accepted.group_by("source_sha256").agg(
        pl.len().alias("n"), pl.col("file_name").first()
    )
    for sha, n, name in counts.filter(pl.col("n") > 1).sort("source_sha256").iter_rows():
        mismatches.append(
            Mismatch(MismatchCode.ACCEPTED_TWICE, sha, name, f"accepted {n} times in the ledger")
        )
    first = accepted.unique("source_sha256", keep="first", maintain_order=True)
    mismatches += _archive_problems(first, index, settings)
    mismatches += _raw_problems(first, warehouse)
    accepted_shas = set(first["source_sha256"].to_list())
    mismatches += _orphan_problems(warehouse, accepted_shas, known, index)
    return Verification(
        accepted_files=len(accepted_shas),
        archived_files=sum(len(p) for p in index.values()),
        mismatches=tuple(mismatches),
    )


def print_verification(verification: Verification, console: Console) -> None:
    """Print the verdict and every mismatch (``chimera verify``)."""
    console.print(
        f"{verification.accepted_files} accepted files in the ledger, "
        f"{verification.archived_files} files in the archive"
    )
    if verification.ok:
        console.print(
            "OK: every accepted file is archived intact with its raw rows; every row has its source"
        )
        return
    table = RichTable(title=f"{len(verification.mismatches)} mismatch(es)")
    for column in ("problem", "file", "sha256", "detail"):
        table.add_column(column)
    for m in verification.mismatches:
        table.add_row(m.code.value, m.file_name, m.sha256[:12], m.detail)
    console.print(table)


def rebuild_all_patients(settings: Settings, *, now: datetime) -> list[str]:
    """Rebuild ``chimerism/`` and ``markers/`` of every registry patient from the raw tables.

    Many patients are computed by worker processes (:mod:`chimera.workers`).
    """
    warehouse = Warehouse(settings.warehouse)
    with warehouse.lock(), worker_pool(settings, files=0) as pool:
        patients = registry_patients(read_registry(warehouse))
        recompute_patients(warehouse, patients, settings=settings, now=now, pool=pool)
    return sorted(patients)


def describe_alerts(settings: Settings, alert_ids: Iterable[str]) -> list[dict[str, str]]:
    """Rule, severity, patient and message of the given alerts (for notifications)."""
    ids = list(alert_ids)
    alerts = Warehouse(settings.warehouse).read(ALERTS)
    if not ids:
        return []
    rows = alerts.filter(pl.col("alert_id").is_in(ids)).select(
        "alert_id", "rule", "severity", "patient_id", "state", "message"
    )
    return [{k: str(v) for k, v in row.items()} for row in rows.iter_rows(named=True)]
