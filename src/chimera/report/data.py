"""What the reports read: the current warehouse rows, through the same views as ``chimera query``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from chimera.report.charts import METHOD_COLOURS, palette
from chimera.sql import connect, read_current
from chimera.warehouse import (
    ALERTS,
    CHIMERISM,
    INFUSIONS,
    INGEST_LOG,
    KINETICS,
    KINETICS_COHORT,
    MARKERS,
    SAMPLES,
    TRENDS,
    Table,
)
from schemas.vocab import GenomeModel


@dataclass(frozen=True)
class ReportData:
    """Current rows of every table a report shows (superseded rows hidden)."""

    chimerism: pl.DataFrame
    markers: pl.DataFrame
    trends: pl.DataFrame
    kinetics: pl.DataFrame
    alerts: pl.DataFrame
    infusions: pl.DataFrame
    samples: pl.DataFrame
    ledger: pl.DataFrame
    kinetics_cohort: pl.DataFrame

    def patients(self) -> list[str]:
        """Every patient with a result, a dose or a post-dose sample, sorted."""
        found = set(self.chimerism["patient_id"].to_list()) | set(
            self.infusions["patient_id"].to_list()
        )
        return sorted(str(p) for p in found if p is not None)

    def for_patient(self, patient: str) -> ReportData:
        """The same tables restricted to one patient (the ledger stays whole)."""

        def mine(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.filter(pl.col("patient_id") == patient)

        return ReportData(
            chimerism=mine(self.chimerism),
            markers=mine(self.markers),
            trends=mine(self.trends),
            kinetics=mine(self.kinetics),
            alerts=mine(self.alerts),
            infusions=mine(self.infusions),
            samples=mine(self.samples),
            ledger=self.ledger,
            kinetics_cohort=self.kinetics_cohort,
        )


def load_report_data(warehouse: Path) -> ReportData:
    """Read the current rows of the tables the reports use (absent tables are empty)."""
    con = connect(warehouse)

    def read(table: Table, view: str | None = None) -> pl.DataFrame:
        return read_current(con, view or table.name, table.schema)

    return ReportData(
        chimerism=read(CHIMERISM),
        markers=read(MARKERS),
        trends=read(TRENDS),
        kinetics=read(KINETICS),
        alerts=read(ALERTS),
        infusions=read(INFUSIONS),
        samples=read(SAMPLES),
        ledger=read(INGEST_LOG, "file_status"),
        kinetics_cohort=read(KINETICS_COHORT),
    )


def dose_days(infusions: pl.DataFrame) -> list[tuple[float, int]]:
    """(study day, dose number) of each dose: calendar days from the first infusion's date."""
    if infusions.height == 0:
        return []
    first = infusions["infused_at"].min()
    rows = infusions.sort("dose_number").with_columns(
        day=(pl.col("infused_at").dt.date() - pl.lit(first).dt.date()).dt.total_days()
    )
    return [(float(d), int(n)) for d, n in zip(rows["day"], rows["dose_number"], strict=True)]


def specimen_label(specimen: object) -> str:
    """The specimen as shown; a missing one says so."""
    return str(specimen) if specimen is not None else "specimen not given"


def method_points(chimerism: pl.DataFrame) -> pl.DataFrame:
    """Chart points of one patient: one series per method x specimen, coloured by method."""
    return chimerism.with_columns(
        series=pl.col("method")
        + pl.lit(" · ")
        + pl.col("specimen").fill_null(specimen_label(None)),
        colour=pl.col("method").replace_strict(METHOD_COLOURS, default="#7f7f7f"),
    ).sort("method", "specimen", "study_day", nulls_last=True)


def headline_points(trends: pl.DataFrame, patients: list[str]) -> pl.DataFrame:
    """Chart points of the cohort: each patient's headline results, one colour per patient."""
    colours = {p: palette(i) for i, p in enumerate(patients)}
    return trends.with_columns(
        series=pl.col("patient_id"),
        colour=pl.col("patient_id").replace_strict(colours, default="#7f7f7f"),
    ).sort("patient_id", "study_day", nulls_last=True)


def is_three_genome(chimerism: pl.DataFrame) -> bool:
    """Whether any result of the frame was modelled with three genomes (column may be absent)."""
    return (
        "genome_model" in chimerism.columns
        and chimerism.filter(pl.col("genome_model") == GenomeModel.THREE_GENOME).height > 0
    )
