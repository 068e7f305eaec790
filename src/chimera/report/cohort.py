"""The cohort report: every patient on one page (``chimera report --cohort``)."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from chimera.report.charts import Chart, swimmer_chart, trend_chart
from chimera.report.data import ReportData, dose_days, headline_points, is_three_genome
from chimera.report.html import Cell, esc, figure, missing, page, table, text
from chimera.report.patient import Report
from chimera.report.sections import (
    alerts_section,
    footer,
    methods_used,
    result_text,
    source_hashes,
)
from chimera.settings import Settings
from chimera.warehouse import file_key
from schemas.vocab import AlertRuleId, AlertState, KineticsScope, ResultStatus

SUMMARY_PARAMETERS = {
    "cmax_pct": "Cmax %",
    "tmax_days": "Tmax (d)",
    "trough_pct": "trough %",
    "auc_pct_days": "AUC (%·d)",
    "half_life_days": "t½ (d)",
}
"""Kinetic parameters shown per dose in the cohort report (``kinetics_cohort``) and headers."""


def _range_text(median: object, low: object, high: object, n: object) -> str:
    if not isinstance(median, float):
        return f"– (n={n})"
    return f"{median:.3g} ({low:.3g}–{high:.3g}), n={n}"


def _per_dose_number(cohort: pl.DataFrame) -> str:
    """Median (range) of each kinetic parameter per dose number (``kinetics_cohort``)."""
    if cohort.height == 0:
        return missing("No cohort kinetics yet.")
    rows = []
    ordered = cohort.filter(pl.col("parameter").is_in(list(SUMMARY_PARAMETERS))).sort(
        "scope", "dose_number", nulls_last=True
    )
    for (scope, dose), group in ordered.group_by(["scope", "dose_number"], maintain_order=True):
        by = {r["parameter"]: r for r in group.iter_rows(named=True)}
        cells = [text("overall" if scope == KineticsScope.OVERALL else dose)]
        for parameter in SUMMARY_PARAMETERS:
            r = by.get(parameter)
            cells.append(
                text(_range_text(r["median"], r["min"], r["max"], r["n_values"]) if r else "–")
            )
        rows.append(cells)
    headers = [f"{label}: median (range), n" for label in SUMMARY_PARAMETERS.values()]
    return table(("dose", *headers), rows)


def _per_dose_level(kinetics: pl.DataFrame, infusions: pl.DataFrame) -> str:
    """Cmax and AUC per dose level (cells infused), median (range) over patient x dose."""
    doses = kinetics.filter(pl.col("scope") == KineticsScope.DOSE).join(
        infusions.select("patient_id", "dose_number", "cells"),
        on=["patient_id", "dose_number"],
        how="left",
    )
    if doses.height == 0:
        return missing("No per-dose kinetics, so no summary per dose level.")
    summary = (
        doses.group_by("cells")
        .agg(
            pl.col("patient_id").n_unique().alias("patients"),
            pl.len().alias("doses"),
            *(
                pl.struct(
                    pl.col(p).median().alias("median"),
                    pl.col(p).min().alias("min"),
                    pl.col(p).max().alias("max"),
                    pl.col(p).count().alias("n"),
                ).alias(p)
                for p in ("cmax_pct", "auc_pct_days")
            ),
        )
        .sort("cells", nulls_last=True)
    )
    rows = [
        [
            text(
                f"{r['cells']:.3g} cells"
                if r["cells"] is not None
                else "dose not in the infusion log"
            ),
            text(r["patients"]),
            text(r["doses"]),
            *(
                text(_range_text(r[p]["median"], r[p]["min"], r[p]["max"], r[p]["n"]))
                for p in ("cmax_pct", "auc_pct_days")
            ),
        ]
        for r in summary.iter_rows(named=True)
    ]
    return table(
        (
            "dose level",
            "patients",
            "dose intervals",
            "Cmax % median (range), n",
            "AUC %·d median (range), n",
        ),
        rows,
    )


def _alert_counts(alerts: pl.DataFrame) -> str:
    """Alerts per rule and state, with the patients concerned."""
    rows = []
    for rule in AlertRuleId:
        mine = alerts.filter(pl.col("rule") == rule) if alerts.height else alerts
        counts = {state: mine.filter(pl.col("state") == state).height for state in AlertState}
        patients = ", ".join(sorted(set(mine["patient_id"].to_list()))) if mine.height else ""
        rows.append(
            [
                text(rule.value),
                *(Cell(str(counts[s]), numeric=True) for s in AlertState),
                text(patients or "–"),
            ]
        )
    return table(("rule", *(s.value for s in AlertState), "patients"), rows)


def _overview(data: ReportData) -> str:
    """One line per patient: doses, samples, latest headline result, detection, open alerts."""
    rows = []
    for patient in data.patients():
        mine = data.for_patient(patient)
        heads = mine.trends.sort("collected_at", nulls_last=False)
        latest = heads.row(-1, named=True) if heads.height else None
        quantified = heads.filter(pl.col("result_status") == ResultStatus.QUANTIFIED)
        open_alerts = mine.alerts.filter(pl.col("state") != AlertState.RESOLVED)
        rows.append(
            [
                Cell(f"<a href='#small-{esc(file_key(patient))}'>{esc(patient)}</a>"),
                Cell(str(mine.infusions.height), numeric=True),
                Cell(str(heads.height), numeric=True),
                text(
                    f"{latest['sample_id']} (day {latest['study_day']}): {result_text(latest)}"
                    if latest
                    else "no headline result"
                ),
                text(quantified["study_day"].max() if quantified.height else "never quantified"),
                text("yes" if is_three_genome(mine.chimerism) else "no"),
                text(", ".join(sorted(set(open_alerts["rule"].to_list()))) or "–"),
            ]
        )
    if not rows:
        return missing("No patients in the warehouse yet.")
    return table(
        (
            "patient",
            "doses",
            "headline samples",
            "latest headline result",
            "last quantified day",
            "three genomes",
            "open alerts",
        ),
        rows,
    )


def _charts(data: ReportData) -> tuple[Chart, list[Chart], Chart]:
    patients = data.patients()
    points = headline_points(data.trends, patients)
    everyone = trend_chart(
        points, [], key="cohort-all", lod_lines=False,
        caption="Every patient's headline % iNK (log scale); not-detected results at their LoD.",
    )  # fmt: skip
    small = [
        trend_chart(
            points.filter(pl.col("patient_id") == p),
            dose_days(data.infusions.filter(pl.col("patient_id") == p)),
            key=f"small-{file_key(p)}",
            caption=f"{p}: headline % iNK with doses",
            compact=True,
            title=p,
        )
        for p in patients
    ]
    doses = pl.DataFrame(
        [
            {"patient_id": p, "study_day": d, "dose_number": n}
            for p in patients
            for d, n in dose_days(data.infusions.filter(pl.col("patient_id") == p))
        ],
        schema={"patient_id": pl.String, "study_day": pl.Float64, "dose_number": pl.Int64},
    )
    swimmer = swimmer_chart(
        points,
        doses,
        key="cohort-swimmer",
        caption="Dosing and detection per patient (headline results).",
    )
    return everyone, small, swimmer


def render_cohort_report(data: ReportData, *, settings: Settings, generated_at: datetime) -> Report:
    """The cohort report as one HTML document."""
    everyone, small, swimmer = _charts(data)
    hashes = source_hashes((data.chimerism, data.infusions, data.samples))
    methods = methods_used(data.chimerism)
    grid = "".join(figure(c, download_name=c.key) for c in small)
    body = (
        f"<h1>iNK chimerism: cohort report</h1><p class='meta'>{len(data.patients())} patients · "
        f"{data.chimerism.height} current results · generated {generated_at:%Y-%m-%d %H:%M} UTC</p>"
        f"<h2>Patients</h2>{_overview(data)}"
        f"<h2>All patients</h2>{figure(everyone, download_name='cohort-all')}"
        f"<h2>Dosing and detection</h2>{figure(swimmer, download_name='cohort-swimmer')}"
        f"<h2>Per patient</h2><div class='grid'>{grid or missing('No patients.')}</div>"
        f"<h2>Kinetics per dose</h2>{_per_dose_number(data.kinetics_cohort)}"
        f"<h2>Kinetics per dose level</h2>{_per_dose_level(data.kinetics, data.infusions)}"
        f"<h2>Alerts per rule</h2>{_alert_counts(data.alerts)}"
        f"<details><summary>Every alert with its evidence</summary>{alerts_section(data.alerts, show_patient=True)}</details>"
        + footer(
            methods=methods,
            settings=settings,
            hashes=hashes,
            ledger=data.ledger,
            generated_at=generated_at,
        )
    )
    return Report(page("iNK chimerism – cohort report", body), (everyone, swimmer, *small))
