"""The patient and cohort reports say what issue 14 asks, from the warehouse, and nothing unsafe."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from report_builders import HOSTILE_PATIENT, HOSTILE_PREFIX, HOSTILE_REASON
from typer.testing import CliRunner

from chimera.cli import app
from chimera.report.charts import Chart
from chimera.report.cohort import render_cohort_report
from chimera.report.data import ReportData, load_report_data
from chimera.report.patient import render_patient_report
from chimera.settings import Settings
from schemas.vocab import AlertRuleId, GenomeModel, ResultStatus

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def marker_counts(chart: Chart) -> dict[str, int]:
    """Markers per point group of a chart's SVG, read back from the XML."""
    root = ET.fromstring(chart.svg)
    return {
        g.get("id", ""): len(g.findall(f".//{SVG}use"))
        for g in root.iter(f"{SVG}g")
        if g.get("id", "").startswith(("pts-", "genome-", "swim-"))
        and not g.get("id", "").startswith("swim-dose")
    }


@pytest.fixture(scope="module")
def data(report_settings: Settings) -> ReportData:
    return load_report_data(report_settings.warehouse)


def test_patient_chart_draws_one_marker_per_current_result(
    data: ReportData, report_settings: Settings
) -> None:
    """Each current result with a study day is one marker, in the group of its status."""
    for patient in data.patients():
        mine = data.for_patient(patient)
        report = render_patient_report(mine, patient, settings=report_settings, generated_at=NOW)
        trend = report.charts[0]
        counts = marker_counts(trend)
        dated = mine.chimerism.filter(pl.col("study_day").is_not_null())
        assert trend.points == sum(counts.values()) == dated.height
        for status in ResultStatus:
            drawn = sum(n for gid, n in counts.items() if gid.endswith(f"-{status.value}"))
            assert drawn == dated.filter(pl.col("result_status") == status).height
        assert f"data-points='{dated.height}'" in report.html


def test_not_detected_results_sit_at_their_lod(data: ReportData, report_settings: Settings) -> None:
    """A not-detected marker's tooltip quotes its LoD: it is drawn as an upper bound there."""
    patient = data.patients()[0]
    report = render_patient_report(
        data.for_patient(patient), patient, settings=report_settings, generated_at=NOW
    )
    root = ET.fromstring(report.charts[0].svg)
    titles = [
        t.text or ""
        for g in root.iter(f"{SVG}g")
        if g.get("id", "").endswith("-not_detected")
        for t in g.iter(f"{SVG}title")
    ]
    assert titles
    assert all("not detected (< LoD" in t for t in titles)


def test_patient_report_leads_with_the_latest_result_per_specimen(
    data: ReportData, report_settings: Settings
) -> None:
    """The first table names each specimen's latest headline sample, its LoD and its QC badge."""
    patient = data.patients()[0]
    mine = data.for_patient(patient)
    html = render_patient_report(mine, patient, settings=report_settings, generated_at=NOW).html
    first = html.split("<h2>Latest result per specimen</h2>", 1)[1].split("<h2>", 1)[0]
    heads = mine.chimerism.filter(pl.col("is_headline")).sort("collected_at")
    for _, group in heads.group_by("specimen"):
        latest = group.row(-1, named=True)
        assert latest["sample_id"] in first
        assert f"{latest['lod_pct']:.3g}" in first
    assert "class='badge " in first
    assert "critical difference" in first or "first sample" in first


def test_footer_lists_every_source_file_hash(data: ReportData, report_settings: Settings) -> None:
    """Every file behind the patient's rows is named with its SHA-256."""
    patient = data.patients()[0]
    mine = data.for_patient(patient)
    html = render_patient_report(mine, patient, settings=report_settings, generated_at=NOW).html
    footer = html.split("<footer>", 1)[1]
    for sha in set(mine.chimerism["source_sha256"]) | set(mine.samples["source_sha256"]):
        assert sha in footer
    assert "Chimera " in footer
    assert "min_informative_loci" in footer


def test_missing_data_is_said(data: ReportData, report_settings: Settings) -> None:
    """Registered samples without results, no doses and no kinetics are stated, not hidden."""
    patient = data.patients()[0]
    mine = data.for_patient(patient)
    bare = replace(mine, infusions=mine.infusions.clear(), kinetics=mine.kinetics.clear())
    html = render_patient_report(bare, patient, settings=report_settings, generated_at=NOW).html
    assert "No infusion log rows for this patient" in html
    assert "No kinetics yet" in html
    measured = set(mine.chimerism["sample_id"])
    waiting = mine.samples.filter(
        (pl.col("role") == "post_dose") & ~pl.col("sample_id").is_in(sorted(measured))
    )
    if waiting.height:
        assert f"{waiting.height} registered post-dose sample(s) without any result yet" in html


def test_three_genome_shares_are_drawn_beside_ink(
    data: ReportData, report_settings: Settings
) -> None:
    """With three-genome columns a second chart shows recipient and HSCT-donor shares; without, none."""
    patient = data.patients()[0]
    mine = data.for_patient(patient)
    plain = render_patient_report(mine, patient, settings=report_settings, generated_at=NOW)
    assert not any(c.key.startswith("genomes-") for c in plain.charts)
    shares = mine.chimerism.with_columns(
        genome_model=pl.lit(GenomeModel.THREE_GENOME.value),
        pct_hsct_donor=pl.when(pl.col("pct_ink").is_not_null()).then(pl.lit(20.0)),
        pct_hsct_donor_ci_low=pl.lit(18.0),
        pct_hsct_donor_ci_high=pl.lit(22.0),
    ).with_columns(pct_recipient=100 - pl.col("pct_ink") - pl.col("pct_hsct_donor"))
    three = render_patient_report(
        replace(mine, chimerism=shares), patient, settings=report_settings, generated_at=NOW
    )
    genomes = next(c for c in three.charts if c.key.startswith("genomes-"))
    counts = marker_counts(genomes)
    with_share = shares.filter(pl.col("pct_hsct_donor").is_not_null()).height
    assert counts["genome-hsct_donor"] == counts["genome-recipient"] == with_share


def test_cohort_report_draws_every_patient(data: ReportData, report_settings: Settings) -> None:
    """One chart with every headline result, a small chart per patient, a swimmer plot, alert counts."""
    report = render_cohort_report(data, settings=report_settings, generated_at=NOW)
    charts = {c.key: c for c in report.charts}
    dated = data.trends.filter(pl.col("study_day").is_not_null())
    assert sum(marker_counts(charts["cohort-all"]).values()) == dated.height
    assert sum(marker_counts(charts["cohort-swimmer"]).values()) == dated.height
    for patient in data.patients():
        small = charts[f"small-{patient}"]
        assert small.points == dated.filter(pl.col("patient_id") == patient).height
    counts = report.html.split("<h2>Alerts per rule</h2>", 1)[1].split("</table>", 1)[0]
    for rule in AlertRuleId:
        assert f"<td>{rule.value}</td>" in counts
    assert "Kinetics per dose level" in report.html


def _assert_offline_and_escaped(html: str) -> None:
    assert html.count("<script>") == 1, "only the report's own script"
    assert HOSTILE_PATIENT not in html
    assert HOSTILE_REASON not in html
    assert '"onload=' not in html
    assert "&lt;script&gt;alert(" in html
    for ref in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html):
        assert ref.startswith(("#", "data:")), ref
    assert "@import" not in html
    assert "url(http" not in html


def test_hostile_ids_and_texts_are_escaped(hostile_settings: Settings) -> None:
    """A patient id, sample ids and reasons made of HTML reach both reports only escaped."""
    data = load_report_data(hostile_settings.warehouse)
    assert HOSTILE_PATIENT in data.patients()
    patient = render_patient_report(
        data.for_patient(HOSTILE_PATIENT),
        HOSTILE_PATIENT,
        settings=hostile_settings,
        generated_at=NOW,
    )
    cohort = render_cohort_report(data, settings=hostile_settings, generated_at=NOW)
    for html in (patient.html, cohort.html):
        _assert_offline_and_escaped(html)
    assert "&lt;img src=x onerror=alert(1)&gt;" in patient.html
    assert HOSTILE_PREFIX not in patient.html
    assert "=HYPERLINK(&quot;x&quot;)&lt;script&gt;" in patient.html


def test_report_command_writes_one_file_per_patient_and_the_cohort(
    report_settings: Settings, tmp_path: Path
) -> None:
    """`chimera report` writes cohort.html and a file per patient; --patient and --cohort one each."""
    home = ["--home", str(report_settings.home)]
    runner = CliRunner()
    everything = runner.invoke(app, ["report", *home, "--out", str(tmp_path / "all")])
    assert everything.exit_code == 0, everything.output
    patients = load_report_data(report_settings.warehouse).patients()
    written = sorted(p.stem for p in (tmp_path / "all").glob("*.html"))
    assert written == sorted(["cohort", *patients])
    one = runner.invoke(
        app, ["report", *home, "--patient", patients[0], "--out", str(tmp_path / "p.html")]
    )
    assert one.exit_code == 0, one.output
    assert (tmp_path / "p.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    cohort = runner.invoke(app, ["report", *home, "--cohort", "--out", str(tmp_path / "c.html")])
    assert cohort.exit_code == 0, cohort.output
    assert "cohort report" in (tmp_path / "c.html").read_text(encoding="utf-8")


def test_report_command_refuses_an_unknown_patient(report_settings: Settings) -> None:
    """An unknown patient is a usage error (exit 2) listing the known patients."""
    result = CliRunner().invoke(
        app, ["report", "--home", str(report_settings.home), "--patient", "P99"]
    )
    assert result.exit_code == 2
    assert "known:" in result.output
