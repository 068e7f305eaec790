"""The per-patient report: one self-contained HTML file (``chimera report --patient ID``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from chimera.report.charts import Chart, genome_chart, trend_chart
from chimera.report.data import (
    ReportData,
    dose_days,
    is_three_genome,
    method_points,
    specimen_label,
)
from chimera.report.html import Cell, esc, figure, missing, number, page, table, text
from chimera.report.sections import (
    alerts_section,
    change_text,
    footer,
    kinetics_table,
    methods_used,
    qc_badge,
    result_text,
    source_hashes,
)
from chimera.settings import Settings
from chimera.warehouse import file_key
from schemas.vocab import Method, ResultStatus, Role


@dataclass(frozen=True)
class Report:
    """A rendered report and the charts in it (``Chart.points`` = results drawn)."""

    html: str
    charts: tuple[Chart, ...]


def _latest_section(data: ReportData) -> str:
    """The latest headline result per specimen: value, CI, LoD, QC badge, change."""
    heads = data.chimerism.filter(pl.col("is_headline")).sort("collected_at", nulls_last=False)
    if heads.height == 0:
        return missing("No results yet for this patient.")
    trends = {r["sample_id"]: r for r in data.trends.iter_rows(named=True)}
    rows = []
    for (specimen,), group in heads.group_by(["specimen"], maintain_order=True):
        r = group.row(-1, named=True)
        rows.append(
            [
                text(specimen_label(specimen)),
                text(r["sample_id"]),
                text(r["study_day"]),
                text(f"{r['collected_at']:%Y-%m-%d}" if r["collected_at"] else None),
                text(r["method"]),
                Cell(f"<b>{esc(result_text(r))}</b>"),
                number(r["lod_pct"]),
                number(r["loq_pct"]),
                Cell(qc_badge(r["qc_verdict"], r["qc_reasons"])),
                Cell(change_text(trends.get(r["sample_id"]))),
            ]
        )
    headers = (
        "specimen", "sample", "day", "collected", "method (headline)", "% iNK (95 % CI)",
        "LoD %", "LoQ %", "QC", "change since previous sample",
    )  # fmt: skip
    return table(headers, rows)


def _charts(data: ReportData, patient: str) -> list[Chart]:
    key = file_key(patient)
    doses = dose_days(data.infusions)
    points = method_points(data.chimerism)
    charts = [
        trend_chart(
            points,
            doses,
            key=f"trend-{key}",
            caption="% iNK per method and specimen (log scale). One marker per result; "
            "not-detected results at the sample's LoD (an upper bound); failed results at the "
            "axis floor; QC review/fail ringed red.",
        )
    ]
    if is_three_genome(data.chimerism):
        shares = data.chimerism.filter(pl.col("pct_hsct_donor").is_not_null())
        charts.append(
            genome_chart(
                shares if shares.height else data.chimerism.filter(pl.col("is_headline")),
                doses,
                key=f"genomes-{key}",
                caption="Three-genome patient: iNK, recipient and HSCT-donor shares of the "
                "results that model three genomes (linear scale, 95 % CI bands).",
            )
        )
    return charts


def _not_drawn_note(data: ReportData) -> str:
    """Say which results the trend chart cannot place (no collection date)."""
    undated = data.chimerism.filter(pl.col("study_day").is_null())
    if undated.height == 0:
        return ""
    ids = ", ".join(sorted(set(undated["sample_id"].to_list())))
    return missing(
        f"{undated.height} result(s) not drawn: no study day (collection time or first dose missing): {ids}"
    )


def _side_by_side(data: ReportData) -> str:
    """Every sample with the result of each method beside the others (headline marked ★)."""
    if data.chimerism.height == 0:
        return missing("No results.")
    methods = [m.value for m in Method]
    rows = []
    ordered = data.chimerism.sort("collected_at", "sample_id", nulls_last=True)
    for (sample, specimen), group in ordered.group_by(
        ["sample_id", "specimen"], maintain_order=True
    ):
        by_method = {r["method"]: r for r in group.iter_rows(named=True)}
        first = group.row(0, named=True)
        cells = [text(sample), text(specimen_label(specimen)), text(first["study_day"])]
        for method in methods:
            r = by_method.get(method)
            if r is None:
                cells.append(Cell("<span class='note'>not measured</span>"))
                continue
            star = "★ " if r["is_headline"] else ""
            qc = "" if r["qc_verdict"] == "pass" else f" [{r['qc_verdict']}]"
            cells.append(Cell(esc(star + result_text(r) + qc)))
        rows.append(cells)
    return table(("sample", "specimen", "day", *methods), rows)


def _missing_section(data: ReportData) -> str:
    """Post-dose samples registered in a manifest that have no result yet."""
    registered = data.samples.filter(pl.col("role") == Role.POST_DOSE)
    measured = set(data.chimerism["sample_id"].to_list())
    absent = registered.filter(~pl.col("sample_id").is_in(sorted(measured))).sort("collected_at")
    parts = []
    if absent.height:
        ids = ", ".join(esc(s) for s in absent["sample_id"].to_list())
        parts.append(
            missing(f"{absent.height} registered post-dose sample(s) without any result yet:")
            + f"<p>{ids}</p>"
        )
    failed = data.chimerism.filter(pl.col("result_status") == ResultStatus.FAILED)
    if failed.height:
        rows = [
            [text(r["sample_id"]), text(r["method"]), text(r["qc_reasons"])]
            for r in failed.iter_rows(named=True)
        ]
        parts.append(
            f"<p>{failed.height} failed (not reportable) result(s):</p>"
            + table(("sample", "method", "reason"), rows)
        )
    if data.infusions.height == 0:
        parts.append(
            missing(
                "No infusion log rows for this patient: doses are not marked and kinetics are not computed."
            )
        )
    return "".join(parts) or "<p class='note'>Every registered post-dose sample has a result.</p>"


def _appendix(data: ReportData) -> str:
    """Per-locus / per-replicate detail behind every result, one block per sample x method."""
    if data.markers.height == 0:
        return missing("No per-locus or per-replicate detail stored.")
    blocks = []
    ordered = data.markers.sort("sample_id", "method", "marker", "replicate", nulls_last=True)
    for (sample, method), group in ordered.group_by(["sample_id", "method"], maintain_order=True):
        rows = [
            [
                text(r["marker"]), text(r["replicate"]), text(r["sharing"]), text(r["donor_alleles"]),
                text(r["recipient_alleles"]), number(r["signal_ink"]), number(r["signal_total"]),
                number(r["ct"]), text(r["positives"]), text(r["accepted_droplets"]),
                number(r["copies_per_ul"]), number(r["pct_ink"]),
                text("yes" if r["included"] else "no"), text(r["exclusion_reason"]),
            ]
            for r in group.iter_rows(named=True)
        ]  # fmt: skip
        headers = (
            "marker", "replicate", "sharing", "iNK alleles", "recipient alleles", "iNK signal",
            "total signal", "Ct", "positives", "droplets", "copies/µL", "% iNK", "used",
            "excluded because",
        )  # fmt: skip
        blocks.append(
            f"<details><summary>{esc(sample)} · {esc(method)} ({group.height} rows)</summary>{table(headers, rows)}</details>"
        )
    return "".join(blocks)


def render_patient_report(
    data: ReportData, patient: str, *, settings: Settings, generated_at: datetime
) -> Report:
    """The patient's report as one HTML document (``data`` already restricted to the patient)."""
    charts = _charts(data, patient)
    methods = methods_used(data.chimerism)
    hashes = source_hashes((data.chimerism, data.markers, data.infusions, data.samples))
    figures = "".join(figure(c, download_name=c.key) for c in charts)
    body = (
        f"<h1>Patient {esc(patient)}: iNK chimerism</h1>"
        f"<p class='meta'>{data.chimerism.height} current results · {data.infusions.height} doses · "
        f"generated {generated_at:%Y-%m-%d %H:%M} UTC</p>"
        f"<h2>Latest result per specimen</h2>{_latest_section(data)}"
        f"<h2>Trend</h2>{figures}{_not_drawn_note(data)}"
        f"<h2>Alerts</h2>{alerts_section(data.alerts, show_patient=False)}"
        f"<h2>Missing and failed data</h2>{_missing_section(data)}"
        f"<h2>Results per method, side by side</h2>{_side_by_side(data)}"
        f"<h2>Kinetics per dose</h2>{kinetics_table(data.kinetics)}"
        f"<h2>Appendix: per-locus and per-replicate detail</h2>{_appendix(data)}"
        + footer(
            methods=methods,
            settings=settings,
            hashes=hashes,
            ledger=data.ledger,
            generated_at=generated_at,
        )
    )
    return Report(page(f"{patient} – iNK chimerism report", body), tuple(charts))
