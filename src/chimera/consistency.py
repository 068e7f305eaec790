"""A new manifest or infusion log checked against the registry and the clock (issue 13).

A registry file that parses is still checked against what the warehouse already holds:

- **Impossible dates** quarantine the file (:class:`~chimera.errors.ImpossibleDateError`): a
  sample or dose dated more than ``future_tolerance_hours`` after the ingest clock, or a
  post-dose sample collected before its patient's baseline (either date in this file).
- **Disagreement with an earlier file** is accepted, the later file wins (the registry keeps
  the latest row per sample and per dose), and the ledger reason lists every changed value
  with the file it replaces. A sample moved to another patient also rebuilds the patient it
  left.
- **Sample ids already registered** unchanged, and **doses for patients without manifest rows**,
  are accepted with a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from chimera.errors import ImpossibleDateError, Problem
from chimera.registry import Registry
from schemas.vocab import PRODUCT_ROLES, FileStatus, Role

LINEAGE = ("source_sha256", "pipeline_version", "ingested_at", "source_file")
_SHOWN = 5


@dataclass(frozen=True)
class RegistryCheck:
    """What accepting a registry file changes beyond its own rows."""

    notes: tuple[str, ...] = ()
    """Plain-language notes for the ledger reason (conflicts, re-listed ids, unknown patients)."""
    also_touches: frozenset[str] = field(default_factory=frozenset)
    """Patients whose samples this file moves away (they are rebuilt too)."""

    @property
    def reason(self) -> str | None:
        """The notes as one ledger reason (None when there is nothing to say)."""
        return "; ".join(self.notes) or None


def _shown(items: Sequence[str]) -> str:
    extra = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + extra


def _future(frame: pl.DataFrame, column: str, key: str, limit: datetime) -> list[Problem]:
    late = frame.filter(pl.col(column) > limit)
    return [
        Problem(
            rule="date_in_future",
            column=column,
            value=f"{row[key]}: {row[column]:%Y-%m-%d %H:%M} UTC",
            message=f"{column} lies after the time of ingest ({limit:%Y-%m-%d %H:%M} UTC + tolerance)",
            fix="correct the date (a typo in the year?) and drop the file again",
        )
        for row in late.iter_rows(named=True)
    ]


def _before_baseline(frame: pl.DataFrame, registry: Registry) -> list[Problem]:
    """Post-dose samples collected before their patient's baseline, one date in ``frame``."""
    ours = set(frame["sample_id"].to_list())
    columns = ["sample_id", "patient_id", "role", "collected_at"]
    merged = pl.concat(
        [
            registry.samples.select(columns).filter(~pl.col("sample_id").is_in(list(ours))),
            frame.select(columns),
        ],
        how="vertical_relaxed",
    ).filter(pl.col("collected_at").is_not_null())
    baselines = merged.filter(pl.col("role") == Role.RECIPIENT_BASELINE).select(
        "patient_id",
        pl.col("sample_id").alias("baseline_id"),
        pl.col("collected_at").alias("baseline_at"),
    )
    pairs = (
        merged.filter(pl.col("role") == Role.POST_DOSE)
        .join(baselines, on="patient_id")
        .filter(pl.col("collected_at") < pl.col("baseline_at"))
        .filter(pl.col("sample_id").is_in(list(ours)) | pl.col("baseline_id").is_in(list(ours)))
        .sort("patient_id", "sample_id")
    )
    return [
        Problem(
            rule="sample_before_baseline",
            column="collected_at",
            value=f"{row['sample_id']}: {row['collected_at']:%Y-%m-%d %H:%M} UTC",
            message=(
                f"post-dose sample of {row['patient_id']} collected before its baseline "
                f"{row['baseline_id']} ({row['baseline_at']:%Y-%m-%d %H:%M} UTC)"
            ),
            fix="correct the collection date or the role, then drop the file again",
        )
        for row in pairs.iter_rows(named=True)
    ]


def _text(value: object) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return "" if value is None else str(value)


def _changes(
    frame: pl.DataFrame, earlier: pl.DataFrame, key: Sequence[str], names: dict[str, str]
) -> tuple[list[str], list[str], set[str]]:
    """Changed values (``id column a → b (was file)``), unchanged ids, patients left behind."""
    columns = [c for c in frame.columns if c in earlier.columns and c not in (*key, *LINEAGE)]
    joined = frame.join(earlier, on=list(key), how="inner", suffix="__earlier")
    changed: list[str] = []
    unchanged: list[str] = []
    left: set[str] = set()
    for row in joined.iter_rows(named=True):
        label = "/".join(str(row[k]) for k in key)
        diffs = [
            f"{c} {_text(row[c + '__earlier']) or '(empty)'} → {_text(row[c]) or '(empty)'}"
            for c in columns
            if _text(row[c]) != _text(row[c + "__earlier"])
        ]
        source = names.get(str(row["source_sha256"]), str(row["source_sha256"])[:12])
        if diffs:
            changed.append(f"{label} {', '.join(diffs)} (was {source})")
            before = row.get("patient_id__earlier")
            if before is not None and before != row.get("patient_id"):
                left.add(str(before))
        else:
            unchanged.append(f"{label} ({source})")
    return changed, unchanged, left


def accepted_names(ledger: pl.DataFrame) -> dict[str, str]:
    """File name of every accepted source, by SHA-256."""
    accepted = ledger.filter(pl.col("status") == FileStatus.ACCEPTED)
    return dict(accepted.select("source_sha256", "file_name").unique("source_sha256").iter_rows())


def check_manifest(
    frame: pl.DataFrame,
    registry: Registry,
    ledger: pl.DataFrame,
    *,
    now: datetime,
    tolerance_hours: float,
) -> RegistryCheck:
    """Check a parsed manifest against the registry and the clock.

    Raises
    ------
    ImpossibleDateError
        A sample dated in the future, or a post-dose sample before its baseline.
    """
    limit = now + timedelta(hours=tolerance_hours)
    problems = _future(frame, "collected_at", "sample_id", limit)
    problems += _before_baseline(frame, registry)
    if problems:
        msg = f"{len(problems)} impossible date(s): " + _shown([p.value or "" for p in problems])
        raise ImpossibleDateError(msg, problems)
    changed, unchanged, left = _changes(
        frame, registry.samples, ("sample_id",), accepted_names(ledger)
    )
    notes = []
    if changed:
        notes.append(f"replaces earlier manifest rows (the later file wins): {_shown(changed)}")
    if unchanged:
        notes.append(f"{len(unchanged)} sample id(s) already registered, unchanged")
    return RegistryCheck(tuple(notes), frozenset(left))


def check_infusion_log(
    frame: pl.DataFrame,
    registry: Registry,
    ledger: pl.DataFrame,
    *,
    now: datetime,
    tolerance_hours: float,
) -> RegistryCheck:
    """Check a parsed infusion log against the registry and the clock.

    Raises
    ------
    ImpossibleDateError
        A dose dated in the future.
    """
    limit = now + timedelta(hours=tolerance_hours)
    problems = _future(frame, "infused_at", "patient_id", limit)
    if problems:
        msg = f"{len(problems)} infusion(s) dated in the future: " + _shown(
            [p.value or "" for p in problems]
        )
        raise ImpossibleDateError(msg, problems)
    changed, _, _ = _changes(
        frame, registry.infusions, ("patient_id", "dose_number"), accepted_names(ledger)
    )
    notes = []
    if changed:
        notes.append(f"replaces earlier doses (the later file wins): {_shown(changed)}")
    patients = registry.samples.filter(~pl.col("role").is_in(PRODUCT_ROLES))["patient_id"]
    unknown = sorted(set(frame["patient_id"].to_list()) - set(patients.to_list()))
    if unknown:
        notes.append(f"no manifest rows yet for patient(s) {_shown(unknown)}")
    return RegistryCheck(tuple(notes))
