"""Per-patient trend reports and the terminal summaries read the warehouse correctly."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from chimera.cli import app
from chimera.report.summary import evidence_rows, format_result


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((0.42, "quantified", 0.03, 0.31, 0.55), "0.42 % (0.31–0.55)"),
        ((0.08, "below_loq", 0.03, 0.02, 0.2), "detected, < LoQ (0.08 %)"),
        ((None, "not_detected", 0.03, None, None), "not detected (< LoD 0.03 %)"),
        ((None, "failed", None, None, None), "not reportable"),
    ],
)
def test_results_are_never_printed_as_a_bare_zero(args: tuple[object, ...], expected: str) -> None:
    """Each result state reads the way the lab reports it."""
    assert format_result(*args) == expected  # type: ignore[arg-type]


def test_evidence_rows_finds_every_cited_result() -> None:
    """Results nested anywhere in an alert's evidence are found in order."""
    evidence = {
        "episodes": [{"samples": [{"sample_id": "A"}, {"sample_id": "B"}]}],
        "dose1": {"sample": {"sample_id": "C"}},
    }
    assert [r["sample_id"] for r in evidence_rows(evidence)] == ["A", "B", "C"]


def test_report_writes_a_plot_per_patient_and_an_index(
    sample_data_path: Path, tmp_path: Path
) -> None:
    """`chimera report` draws every patient of the ingested trial and links them from index.html."""
    runner = CliRunner()
    home = tmp_path / "home"
    files = [str(p) for p in (sample_data_path / "str").glob("*2025-0[3-5]*")]
    # Every row names the reference's lot, so this test does not depend on resolving the lots of
    # one cell bank (test_sample_trial covers that).
    manifest = pl.read_csv(sample_data_path / "manifest.csv", infer_schema_length=0)
    manifest = manifest.with_columns(
        product_lot=pl.coalesce("product_lot", pl.lit("INK-MCB01-L01"))
    )
    manifest.write_csv(tmp_path / "manifest.csv")
    files += [str(tmp_path / "manifest.csv"), str(sample_data_path / "infusion_log.xlsx")]
    ingested = runner.invoke(app, ["ingest", *files, "--home", str(home)])
    assert ingested.exit_code == 0, ingested.output
    result = runner.invoke(app, ["report", "--home", str(home), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    index = (tmp_path / "report" / "index.html").read_text()
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs
    for png in pngs:
        assert png in index
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"
    assert "P01" in index


def test_alerts_command_without_alerts(tmp_path: Path) -> None:
    """An empty warehouse says there are no open alerts (exit 0)."""
    result = CliRunner().invoke(app, ["alerts", "--home", str(tmp_path)])
    assert result.exit_code == 0
    assert "No open alerts" in result.output
