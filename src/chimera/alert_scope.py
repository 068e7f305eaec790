"""Which patients' alert conditions a refresh must evaluate again, and which it may keep.

Every alert rule judges one patient's curves alone (:mod:`chimera.alerts.detect`), from that
patient's ``chimerism``, ``trends`` and ``kinetics`` files, the infusion log and the alert
settings. After each evaluation the identity of every file of those three tables (inode, size,
modification time: files are only ever replaced whole) is kept in ``.cache/`` with a hash of
the alert settings and the pipeline version. The next refresh evaluates again only the patients
it rebuilt and those whose files changed since; every other patient's conditions are the ones
the last evaluation found, so the alert table comes out exactly as a full evaluation would
write it, while the cost of a refresh follows the patients it touches, not the warehouse.

Anything unexpected (no record, other settings, a file that no known patient owns) means a
full evaluation, so deleting ``.cache/`` only costs speed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from chimera import table_cache
from chimera.alerts.detect import CONDITION_COLUMNS
from chimera.settings import Settings
from chimera.warehouse import (
    CHIMERISM,
    KINETICS,
    PIPELINE_VERSION,
    TRENDS,
    Table,
    Warehouse,
    file_key,
    sha256_of,
)
from schemas.vocab import AlertState

SCOPED_TABLES = (CHIMERISM, TRENDS, KINETICS)
"""The per-patient tables the alert rules read."""


@dataclass(frozen=True)
class AlertScope:
    """The patients to evaluate again (None: everyone) and the conditions kept for the others."""

    evaluate: frozenset[str] | None
    kept: pl.DataFrame
    """``CONDITION_COLUMNS`` rows of the patients not evaluated again (open or ongoing)."""

    def keeps(self, patient: str) -> bool:
        """Whether ``patient``'s last conditions are kept instead of evaluated again."""
        return self.evaluate is not None and patient not in self.evaluate


def _record_path(warehouse: Warehouse) -> Path:
    return warehouse.root / ".cache" / "alerts-evaluated.json"


def _settings_hash(settings: Settings) -> str:
    return sha256_of(f"{PIPELINE_VERSION}\n{settings.alerts!r}".encode())


def _files(warehouse: Warehouse) -> dict[str, dict[str, list[int]]]:
    return {
        table.name: {f: list(i) for f, i in table_cache.listing(warehouse.folder(table)).items()}
        for table in SCOPED_TABLES
    }


def _changed_stems(
    before: dict[str, dict[str, list[int]]], now: dict[str, dict[str, list[int]]]
) -> set[str]:
    """File stems (patients' file keys) added, removed or replaced between two listings."""
    stems: set[str] = set()
    for table in SCOPED_TABLES:
        old, new = before.get(table.name, {}), now.get(table.name, {})
        for name in set(old) | set(new):
            if old.get(name) != new.get(name):
                stems.add(name.removesuffix(".parquet"))
    return stems


def alert_scope(
    warehouse: Warehouse,
    settings: Settings,
    *,
    rebuilt: Iterable[str] | None,
    previous: pl.DataFrame,
    known: Iterable[str],
) -> AlertScope:
    """The patients whose alert conditions must be evaluated again (module docstring).

    ``rebuilt`` = the patients this refresh rebuilt (None: everyone); ``previous`` = the alert
    table before it; ``known`` = every patient id the warehouse may hold files of.
    """
    everyone = AlertScope(None, pl.DataFrame(schema=CONDITION_COLUMNS))
    if rebuilt is None or not set(CONDITION_COLUMNS) <= set(previous.columns):
        return everyone
    try:
        record = json.loads(_record_path(warehouse).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return everyone
    if not isinstance(record, dict) or record.get("settings") != _settings_hash(settings):
        return everyone
    owners = {file_key(p): p for p in {*known, *previous["patient_id"].to_list()}}
    stems = _changed_stems(record.get("files", {}), _files(warehouse))
    if not stems <= set(owners):
        return everyone
    evaluate = frozenset({*rebuilt, *(owners[s] for s in stems)})
    kept = previous.filter(
        ~pl.col("patient_id").is_in(list(evaluate)) & (pl.col("state") != AlertState.RESOLVED)
    ).select(list(CONDITION_COLUMNS))
    return AlertScope(evaluate, kept)


def read_scoped(warehouse: Warehouse, table: Table, scope: AlertScope) -> pl.DataFrame:
    """The rows of ``table`` the patients to evaluate own (all rows when everyone is)."""
    if scope.evaluate is None:
        return warehouse.read(table)
    # Files in path order, as a whole-table read gives them.
    return stacked(
        table, [warehouse.read_part(table, p) for p in sorted(scope.evaluate, key=file_key)]
    )


def stacked(table: Table, parts: Iterable[pl.DataFrame | None]) -> pl.DataFrame:
    """The rows of ``parts`` (files of ``table``) in one frame with every column of its contract."""
    found = [p for p in parts if p is not None and p.height]
    schema = table.schema
    if not found:
        return pl.DataFrame(schema=schema)
    frame = pl.concat(found, how="diagonal_relaxed")
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in frame]
    return frame.with_columns(missing) if missing else frame


def record_evaluation(warehouse: Warehouse, settings: Settings) -> None:
    """Remember the files and settings the alert table was just evaluated from."""
    path = _record_path(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    record = {"settings": _settings_hash(settings), "files": _files(warehouse)}
    try:
        tmp.write_text(json.dumps(record), encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
