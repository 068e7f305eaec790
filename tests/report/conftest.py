"""A small warehouse built from the first months of the sample trial, shared by the report tests.

The warehouse is built through the ingest entry point (``ingest_paths`` + the refresh that
``chimera ingest`` runs), so reports, queries and README examples read what the pipeline wrote.
A second warehouse adds a patient whose ids and texts are hostile HTML and spreadsheet formulas.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from report_builders import HOSTILE_PATIENT, HOSTILE_PREFIX, HOSTILE_REASON, copy_home

from chimera.poll import ingest_paths, refresh_after_ingest
from chimera.settings import Settings, load_settings
from chimera.warehouse import ALERTS, CHIMERISM, INFUSIONS, KINETICS, MARKERS, TRENDS, Warehouse

MONTHS = ("2025-02", "2025-03", "2025-04", "2025-05")
REFERENCE_LOT = "INK-MCB01-L01"


def _now() -> datetime:
    return datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def small_trial_files(sample_data: Path) -> list[Path]:
    """The manifest, the infusion log and every export of the first trial months."""
    exports = [
        p
        for folder in ("str", "qpcr", "ddpcr")
        for p in sorted((sample_data / folder).glob("*"))
        if p.name.startswith(MONTHS)
    ]
    return [sample_data / "manifest.csv", sample_data / "infusion_log.xlsx", *exports]


def _single_lot_manifest(manifest: Path, target: Path) -> Path:
    """The manifest with every row naming the reference's lot, so the report tests do not depend
    on resolving the lots of one cell bank (tests/test_sample_trial.py covers that)."""
    frame = pl.read_csv(manifest, infer_schema_length=0)
    frame.with_columns(product_lot=pl.coalesce("product_lot", pl.lit(REFERENCE_LOT))).write_csv(
        target
    )
    return target


@pytest.fixture(scope="session")
def report_settings(sample_data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of a home whose warehouse holds the first months of the trial."""
    home = tmp_path_factory.mktemp("report-home")
    settings = load_settings(env={}, home=home)
    files = small_trial_files(sample_data_path)
    files[0] = _single_lot_manifest(files[0], tmp_path_factory.mktemp("manifest") / files[0].name)
    outcomes = ingest_paths(files, settings=settings, clock=_now, move=False)
    refresh_after_ingest(outcomes, settings=settings, now=_now())
    assert Warehouse(settings.warehouse).read(CHIMERISM).height > 0
    return settings


def _hostile(frame: pl.DataFrame, patient: str) -> pl.DataFrame:
    """One patient's rows under a hostile patient id, sample ids, specimen and reasons."""
    rows = frame.filter(pl.col("patient_id") == patient).with_columns(
        patient_id=pl.lit(HOSTILE_PATIENT)
    )
    for column in ("sample_id", "previous_sample_id", "cmax_sample_id"):
        if column in rows.columns:
            rows = rows.with_columns((pl.lit(HOSTILE_PREFIX) + pl.col(column)).alias(column))
    if "specimen" in rows.columns:
        # Hostile but still distinct per specimen (a patient may have PB and sorted fractions).
        hostile = pl.lit("-cmd|' /C calc'!A0 <b>") + pl.col("specimen") + pl.lit("</b>")
        rows = rows.with_columns(specimen=hostile)
    if "qc_reasons" in rows.columns:
        rows = rows.with_columns(qc_reasons=pl.lit(HOSTILE_REASON))
    if "message" in rows.columns:
        rows = rows.with_columns(message=pl.lit(HOSTILE_REASON))
    return rows


@pytest.fixture(scope="session")
def hostile_settings(
    report_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """The small warehouse plus a copy of a patient (one with an alert) under hostile ids and texts."""
    settings = copy_home(report_settings, tmp_path_factory.mktemp("hostile-home"))
    warehouse = Warehouse(settings.warehouse)
    alerted = warehouse.read(ALERTS)
    candidates = alerted if alerted.height else warehouse.read(CHIMERISM)
    patient = min(candidates["patient_id"].unique().to_list())
    for table in (CHIMERISM, MARKERS, TRENDS, KINETICS, INFUSIONS, ALERTS):
        rows = _hostile(warehouse.read(table), patient)
        if rows.height:
            warehouse.write(table, f"hostile-{table.name}", rows)
    return settings
