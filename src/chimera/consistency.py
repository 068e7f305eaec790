"""A new manifest or infusion log checked against what the registry already holds (issue 13).

A registry file that parses is still checked against what the warehouse already holds:

- **Impossible dates across files** quarantine the file
  (:class:`~chimera.errors.ImpossibleDateError`): a post-dose sample collected before its
  patient's baseline when one of the two dates is already registered. (Within one file, and
  dates after the ingest clock, the manifest contract refuses them, ``schemas.inputs``.)
- **Disagreement with an earlier file** is accepted, the later file wins (the registry keeps
  the latest row per sample and per dose), and the ledger reason lists every changed value
  with the file it replaces. A sample moved to another patient also rebuilds the patient it
  left.
- **Sample ids already registered** unchanged, and **doses for patients without manifest rows**,
  are accepted with a note.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import pandera.polars as pa
import polars as pl

from chimera.errors import ImpossibleDateError, Problem
from chimera.registry import Registry
from schemas.inputs import Manifest
from schemas.vocab import PRODUCT_ROLES, FileStatus, Role

_CONTRACT_RULE = cast(
    "Callable[[pa.PolarsData], pl.LazyFrame]", Manifest.post_dose_samples_not_before_baseline
)
"""The manifest contract's "post-dose not before the earliest baseline" check."""
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


def _before_baseline(frame: pl.DataFrame, registry: Registry) -> list[Problem]:
    """Post-dose samples before their patient's earliest baseline once this file is registered.

    The rule is the manifest contract's own check, applied to the registry as it would be;
    a problem is this file's when its post-dose row or the patient's earliest baseline is.
    """
    ours = frame["sample_id"].to_list()
    columns = ["sample_id", "patient_id", "role", "collected_at"]
    merged = pl.concat(
        [
            registry.samples.select(columns).filter(~pl.col("sample_id").is_in(ours)),
            frame.select(columns),
        ],
        how="vertical_relaxed",
    )
    valid = _CONTRACT_RULE(pa.PolarsData(merged.lazy()))
    baselines = (
        merged.filter(pl.col("role") == Role.RECIPIENT_BASELINE)
        .sort("collected_at")
        .group_by("patient_id", maintain_order=True)
        .first()
        .select(
            "patient_id",
            pl.col("sample_id").alias("baseline_id"),
            pl.col("collected_at").alias("baseline_at"),
        )
    )
    wrong = (
        merged.with_columns(valid.collect().to_series().alias("_valid"))
        .filter(~pl.col("_valid"))
        .join(baselines, on="patient_id")
        .filter(pl.col("sample_id").is_in(ours) | pl.col("baseline_id").is_in(ours))
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
        for row in wrong.iter_rows(named=True)
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


def check_manifest(frame: pl.DataFrame, registry: Registry, ledger: pl.DataFrame) -> RegistryCheck:
    """Check a parsed manifest against the registry.

    Raises
    ------
    ImpossibleDateError
        A post-dose sample before its patient's baseline (one of the dates registered).
    """
    problems = _before_baseline(frame, registry)
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
    frame: pl.DataFrame, registry: Registry, ledger: pl.DataFrame
) -> RegistryCheck:
    """Check a parsed infusion log against the registry (conflicting doses, unknown patients)."""
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
