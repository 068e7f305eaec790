"""Headline choice per sample, method discordance with the critical difference, and QC interplay."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from chimera.alerts.config import packaged_alert_settings
from chimera.calculate.reconcile import choose_headline
from chimera.settings import ReconcileSettings

CD = packaged_alert_settings().critical_difference
SCHEMA = {
    "sample_id": pl.String,
    "method": pl.String,
    "pct_ink": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "ci_quantile": pl.Float64,
    "lod_pct": pl.Float64,
    "result_status": pl.String,
    "qc_verdict": pl.String,
    "qc_reasons": pl.String,
}


def row(method: str, status: str, pct: float | None = None, **kw: Any) -> dict[str, Any]:
    """One result of sample S1; STR CI +-2 points, PCR CI x/1.2..x*1.2 by default."""
    ci: tuple[float | None, float | None] = (None, None)
    if pct is not None:
        ci = (max(pct - 2, 0.0), pct + 2) if method == "STR" else (pct / 1.2, pct * 1.2)
    lod = {"STR": 1.0, "qPCR": 0.1, "ddPCR": 0.05}[method]
    if status == "not_detected":
        ci = (0.0, lod)
    base = {
        "sample_id": "S1",
        "method": method,
        "pct_ink": pct,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "ci_quantile": None,
        "lod_pct": lod,
        "result_status": status,
        "qc_verdict": "pass" if status != "failed" else "fail",
        "qc_reasons": None,
    }
    return {**base, **kw}


def headline(*rows: dict[str, Any]) -> dict[str, Any]:
    """The headline row chosen for sample S1."""
    out = choose_headline(
        pl.DataFrame(list(rows), schema=SCHEMA), settings=ReconcileSettings(), cd=CD
    )
    heads = out.filter(pl.col("is_headline"))
    assert heads.height == 1
    assert out.height == len(rows)
    return heads.row(0, named=True)


def test_str_above_its_loq_is_the_headline() -> None:
    """STR quantified at >= 5 % heads the sample; ddPCR within the critical difference agrees."""
    head = headline(row("STR", "quantified", 10.0), row("ddPCR", "quantified", 11.0))
    assert head["method"] == "STR"
    assert head["headline_rule"] == "STR above its LoQ (5 %)"
    assert head["qc_verdict"] == "pass"


def test_pcr_heads_below_the_str_loq_and_str_not_detected_is_concordant() -> None:
    """STR not detected (LoD 1 %) with ddPCR at 0.4 %: concordant, ddPCR is the headline."""
    head = headline(
        row("STR", "not_detected"), row("ddPCR", "quantified", 0.4), row("qPCR", "quantified", 0.5)
    )
    assert head["method"] == "ddPCR"
    assert head["headline_rule"] == "preference ddPCR > qPCR > STR below STR LoQ"
    assert head["qc_verdict"] == "pass"
    assert head["qc_reasons"] is None


def test_only_method_and_all_failed() -> None:
    """A lone method says so; when every method failed the first failed row is kept."""
    assert headline(row("qPCR", "quantified", 0.5))["headline_rule"] == "only method measured"
    head = headline(row("STR", "failed"), row("ddPCR", "failed"))
    assert head["headline_rule"] == "all methods failed"


def test_quantified_against_a_not_detected_that_should_have_seen_it_is_review() -> None:
    """STR 12 % but ddPCR not detected (LoD 0.05 %): review on the headline, both values named."""
    head = headline(row("STR", "quantified", 12.0), row("ddPCR", "not_detected"))
    assert head["method"] == "STR"
    assert head["qc_verdict"] == "review"
    assert (
        "METHOD_DISCORDANCE: STR 12 % (95 % CI 10-14) vs ddPCR not detected (< LoD 0.05 %)"
        in head["qc_reasons"]
    )
    assert "METHOD_DISCORDANCE" in head["headline_rule"]


def test_pcr_value_above_the_str_lod_with_str_not_detected_is_review() -> None:
    """ddPCR 3 % (lower bound above the STR LoD of 1 %) against STR not detected: review."""
    head = headline(row("STR", "not_detected"), row("ddPCR", "quantified", 3.0))
    assert head["method"] == "ddPCR"
    assert head["qc_verdict"] == "review"
    assert "ddPCR 3 %" in head["qc_reasons"]
    assert "STR not detected (< LoD 1 %)" in head["qc_reasons"]


def test_two_quantified_results_beyond_the_cd_head_with_the_smaller_uncertainty() -> None:
    """STR 20 % +-2 vs ddPCR 10 % (9-11): discordant; ddPCR has the smaller u (methods.md 7)."""
    head = headline(
        row("STR", "quantified", 20.0), row("ddPCR", "quantified", 10.0, ci_low=9.0, ci_high=11.0)
    )
    assert head["method"] == "ddPCR"
    assert head["qc_verdict"] == "review"
    assert "smaller uncertainty" in head["headline_rule"]
    assert "STR 20 %" in head["qc_reasons"] and "ddPCR 10 %" in head["qc_reasons"]


def test_between_run_variation_keeps_close_results_concordant() -> None:
    """STR 8 % vs ddPCR 6.5 % (tight CIs): within the CD once the STR 2-point SD is counted."""
    head = headline(
        row("STR", "quantified", 8.0, ci_low=7.5, ci_high=8.5),
        row("ddPCR", "quantified", 6.5, ci_low=6.3, ci_high=6.7),
    )
    assert head["qc_verdict"] == "pass"
    assert head["method"] == "STR"


def test_a_failing_headline_stays_fail_and_keeps_its_reasons() -> None:
    """Discordance never softens a fail; the reason is appended to the existing ones."""
    head = headline(
        row("STR", "quantified", 12.0, qc_verdict="fail", qc_reasons="low signal"),
        row("ddPCR", "not_detected"),
    )
    assert head["qc_verdict"] == "fail"
    assert head["qc_reasons"].startswith("low signal; METHOD_DISCORDANCE")


@pytest.mark.parametrize("q", [None, 4.303])
def test_the_ci_quantile_enters_the_discordance(q: float | None) -> None:
    """A 3-locus STR CI (t = 4.30) is a smaller SE than the same CI read with 1.96."""
    head = headline(
        row("STR", "quantified", 12.0, ci_low=6.0, ci_high=18.0, ci_quantile=q),
        row("ddPCR", "quantified", 6.0, ci_low=5.8, ci_high=6.2),
    )
    assert (head["qc_verdict"] == "review") is (q is not None)


def test_many_patients_at_once_equal_each_patient_alone() -> None:
    """One pass over several patients (``within``) gives each what a pass over its own gives.

    The same sample id under two patients is two samples; single-method samples (one
    expression) and multi-method ones (row by row) are mixed.
    """
    a = [
        row("STR", "quantified", 10.0),
        row("ddPCR", "quantified", 30.0),
        {**row("qPCR", "failed"), "sample_id": "S2"},
        {**row("STR", "quantified", 7.0), "sample_id": "S3"},
        {**row("STR", "quantified", 3.0), "sample_id": "S4"},
    ]
    b = [row("qPCR", "quantified", 0.5), {**row("ddPCR", "not_detected"), "sample_id": "S5"}]
    parts = {p: pl.DataFrame(rows, schema=SCHEMA) for p, rows in (("P1", a), ("P2", b))}
    settings = ReconcileSettings()
    alone = pl.concat(
        [choose_headline(f, settings=settings, cd=CD).with_columns(patient=pl.lit(p))
         for p, f in parts.items()]
    )  # fmt: skip
    together = choose_headline(
        pl.concat([f.with_columns(patient=pl.lit(p)) for p, f in parts.items()]),
        settings=settings,
        cd=CD,
        within=["patient"],
    ).select(alone.columns)
    assert together.equals(alone)
    rules = dict(
        zip(together["sample_id"] + together["patient"], together["headline_rule"], strict=True)
    )
    assert rules["S2P1"] == "all methods failed"
    assert rules["S3P1"] == "STR above its LoQ (5 %)"
    assert rules["S4P1"] == "only method measured"
    assert rules["S5P2"] == "only method measured"
    assert together.filter(pl.col("is_headline")).height == 6
