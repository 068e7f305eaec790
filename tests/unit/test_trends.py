"""Trend table: dose context, specimens apart, critical differences with between-run variation."""

from __future__ import annotations

import math

import polars as pl
import pytest
from chimerism_builders import (
    chimerism_frame,
    infusions_frame,
    result,
    typical_patient,
)

from chimera.alerts.config import packaged_alert_settings
from chimera.trends import build_trend_table
from schemas.trends import Trends

CD = packaged_alert_settings().critical_difference
STR_SD = 2.0  # methods.md 9.1 between-run SD, the packaged default
DDPCR_CV, QPCR_CV = 0.10, 0.25


def _trend(
    rows: list[dict[str, object]], doses: dict[str, list[float]] | None = None
) -> pl.DataFrame:
    chim = chimerism_frame(rows)
    inf = infusions_frame(doses if doses is not None else {"P1": [0.0, 3.0]})
    out = build_trend_table(chim.lazy(), inf.lazy(), cd=CD).collect()
    return Trends.validate(out, lazy=True)


def _row(frame: pl.DataFrame, sample_id: str) -> dict[str, object]:
    return frame.filter(pl.col("sample_id") == sample_id).row(0, named=True)


def test_dose_context_is_the_last_dose_at_or_before_the_sample() -> None:
    """It places each sample after the last dose given at or before it (null before dose 1)."""
    rows = [
        result("P1", "base", -1.0, "not_detected"),
        result("P1", "d1", 1.0, "quantified", 2.0),
        result("P1", "pre2", 3.0 - 1 / 24, "quantified", 1.0),
        result("P1", "at2", 3.0, "quantified", 1.0),
        result("P1", "d2", 5.5, "quantified", 2.0),
    ]
    t = _trend(rows)
    assert t["sample_id"].to_list() == ["base", "d1", "pre2", "at2", "d2"]
    assert t["dose_number"].to_list() == [None, 1, 1, 2, 2]
    since = t["days_since_last_infusion"].to_list()
    assert since[0] is None
    assert since[1:] == pytest.approx([1.0, 3.0 - 1 / 24, 0.0, 2.5])
    assert t["days_since_dose1"].to_list() == pytest.approx([-1.0, 1.0, 3.0 - 1 / 24, 3.0, 5.5])


def test_only_current_headline_rows_are_used() -> None:
    """It drops non-headline and superseded rows."""
    rows = [
        result("P1", "a", 1.0, "quantified", 2.0),
        result("P1", "a", 1.0, "quantified", 20.0, method="STR", headline=False),
        result("P1", "b", 2.0, "quantified", 9.0, superseded=True),
        result("P1", "b", 2.0, "quantified", 1.0),
    ]
    t = _trend(rows)
    assert t["pct_ink"].to_list() == [2.0, 1.0]
    assert t["method"].to_list() == ["ddPCR", "ddPCR"]


def test_packaged_between_run_variation_is_the_methods_md_default() -> None:
    """The packaged critical-difference settings carry the SD/CVs the tests below assume."""
    runs = {m.value: v for m, v in CD.between_run.items()}
    assert (runs["STR"].sd_pct, runs["STR"].cv) == (STR_SD, 0.0)
    assert (runs["ddPCR"].cv, runs["qPCR"].cv) == (DDPCR_CV, QPCR_CV)
    assert CD.z == 1.96


@pytest.mark.parametrize(("second", "significant"), [(17.0, True), (15.5, False), (3.0, True)])
def test_additive_critical_difference_for_str(second: float, significant: bool) -> None:
    """CD = 1.96*sqrt(u1^2 + u2^2), u^2 = (CI half-width/1.96)^2 + SD_between^2 (6.22 points here)."""
    rows = [
        result("P1", "a", 1.0, "quantified", 10.0, method="STR"),
        result("P1", "b", 2.0, "quantified", second, method="STR"),
    ]
    b = _row(_trend(rows), "b")
    u = math.hypot(2.0 / 1.96, STR_SD)
    assert b["cd_scale"] == "additive"
    assert b["critical_difference_pct"] == pytest.approx(1.96 * math.sqrt(2) * u)
    assert b["critical_difference_pct"] == pytest.approx(6.224, abs=1e-3)
    assert b["change_pct"] == pytest.approx(second - 10.0)
    assert b["significant_change"] is significant
    assert b["change_direction"] == ("rise" if second > 10 else "fall")


def test_str_ten_to_eleven_pct_is_not_significant() -> None:
    """Regression (issue 11): 10 % -> 11 % by STR was significant on the CI alone; not any more."""
    rows = [
        result("P1", "a", 1.0, "quantified", 10.0, method="STR", ci=(9.5, 10.5)),
        result("P1", "b", 2.0, "quantified", 11.0, method="STR", ci=(10.5, 11.5)),
    ]
    b = _row(_trend(rows), "b")
    assert b["significant_change"] is False
    assert b["critical_difference_pct"] > 5.5  # at least the between-run CD of methods.md 9.1


def test_methods_md_str_example_cd_is_5_5_points() -> None:
    """methods.md 9.1: STR between-run SD 2 points, negligible own error -> CD = 2.77 x 2 = 5.54."""
    rows = [
        result("P1", "a", 1.0, "quantified", 10.0, method="STR", ci=(10.0, 10.0)),
        result("P1", "b", 2.0, "quantified", 15.6, method="STR", ci=(15.6, 15.6)),
    ]
    b = _row(_trend(rows), "b")
    assert b["critical_difference_pct"] == pytest.approx(1.96 * math.sqrt(2) * 2.0)
    assert b["critical_difference_pct"] == pytest.approx(5.54, abs=0.01)
    assert b["significant_change"] is True


def test_ci_quantile_turns_the_ci_into_an_se() -> None:
    """A 3-locus STR CI built with t(0.975, 2) = 4.303 is a smaller SE than the same CI with 1.96."""
    t2 = 4.302652729911275
    rows = [
        result("P1", "a", 1.0, "quantified", 10.0, method="STR", ci=(4.0, 16.0), ci_quantile=t2),
        result("P1", "b", 2.0, "quantified", 20.0, method="STR", ci=(14.0, 26.0), ci_quantile=t2),
    ]
    b = _row(_trend(rows), "b")
    u = math.hypot(6.0 / t2, STR_SD)
    assert b["critical_difference_pct"] == pytest.approx(1.96 * math.sqrt(2) * u)
    assert b["significant_change"] is True  # 10 points > 6.77; with z = 1.96 it would be 9.75
    z_rows = [{**r, "ci_quantile": None} for r in rows]
    assert _row(_trend(z_rows), "b")["significant_change"] is False


@pytest.mark.parametrize(
    ("second", "significant"), [(1.7, False), (1.9, True), (0.5, True), (0.6, False)]
)
def test_multiplicative_critical_difference_for_pcr(second: float, significant: bool) -> None:
    """|ln(x2/x1)| vs 1.96*sqrt(se1^2 + se2^2), se^2 = (ln CI half-width/1.96)^2 + ln(1 + CV^2)."""
    rows = [
        result("P1", "a", 1.0, "quantified", 1.0, method="ddPCR"),
        result("P1", "b", 2.0, "quantified", second, method="qPCR"),
    ]
    b = _row(_trend(rows), "b")
    w = math.log(1.25) / 1.96
    se1 = math.sqrt(w**2 + math.log(1 + DDPCR_CV**2))
    se2 = math.sqrt(w**2 + math.log(1 + QPCR_CV**2))
    cd_ln = 1.96 * math.hypot(se1, se2)
    assert b["cd_scale"] == "multiplicative"
    assert b["critical_difference_ln"] == pytest.approx(cd_ln)
    assert b["change_ln"] == pytest.approx(math.log(second))
    expected_pct = math.exp(cd_ln) - 1 if second > 1 else 1 - math.exp(-cd_ln)
    assert b["critical_difference_pct"] == pytest.approx(expected_pct)
    assert b["significant_change"] is significant


def test_mixed_methods_use_the_additive_rule() -> None:
    """A pair with STR on one side is judged additively; the ddPCR side adds CV x value."""
    rows = [
        result("P1", "a", 1.0, "quantified", 4.0, method="ddPCR", ci=(3.0, 5.0)),
        result("P1", "b", 2.0, "quantified", 12.0, method="STR", ci=(10.0, 14.0)),
    ]
    b = _row(_trend(rows), "b")
    assert b["cd_scale"] == "additive"
    u1 = math.hypot(1.0 / 1.96, DDPCR_CV * 4.0)
    u2 = math.hypot(2.0 / 1.96, STR_SD)
    assert b["critical_difference_pct"] == pytest.approx(1.96 * math.hypot(u1, u2))
    assert b["significant_change"] is True


def _lower_bound(x: float, low: float, cv: float) -> float:
    """x minus the margin of its CI's lower side and the between-run CV (detection rule)."""
    return x - math.sqrt((x - low) ** 2 + (1.96 * cv * x) ** 2)


@pytest.mark.parametrize(("ci_low", "significant"), [(0.04, False), (0.075, True)])
def test_rise_from_not_detected_needs_the_lower_bound_above_the_previous_lod(
    ci_low: float, significant: bool
) -> None:
    """From not_detected, significant only when the value's lower bound exceeds the old LoD."""
    rows = [
        result("P1", "a", 1.0, "not_detected", lod=0.05),
        result("P1", "b", 2.0, "below_loq", 0.1, ci=(ci_low, 0.2)),
    ]
    b = _row(_trend(rows), "b")
    assert b["cd_scale"] == "detection"
    margin = 0.1 - _lower_bound(0.1, ci_low, DDPCR_CV)
    assert b["critical_difference_pct"] == pytest.approx(0.05 + margin)
    assert b["change_pct"] is None
    assert b["change_direction"] == "rise"
    assert b["significant_change"] is significant
    assert (_lower_bound(0.1, ci_low, DDPCR_CV) > 0.05) is significant


@pytest.mark.parametrize(("lod", "significant"), [(0.05, True), (0.46, False)])
def test_fall_to_not_detected_needs_the_previous_lower_bound_above_the_new_lod(
    lod: float, significant: bool
) -> None:
    """A fall to not_detected is significant only when the previous lower bound exceeds the new LoD."""
    rows = [
        result("P1", "a", 1.0, "quantified", 0.625),  # CI 0.5 .. 0.78, lower bound 0.45
        result("P1", "b", 2.0, "not_detected", lod=lod),
    ]
    b = _row(_trend(rows), "b")
    assert _lower_bound(0.625, 0.5, DDPCR_CV) == pytest.approx(0.45, abs=1e-4)
    assert b["change_direction"] == "fall"
    assert b["significant_change"] is significant


def test_not_detected_twice_is_no_change_and_failed_rows_are_skipped() -> None:
    """ND -> ND is not significant; a failed row is listed, not compared, and bridged over."""
    rows = [
        result("P1", "a", 1.0, "not_detected"),
        result("P1", "b", 2.0, "failed", lod=0.05),
        result("P1", "c", 3.0, "not_detected"),
    ]
    t = _trend(rows)
    b, c = _row(t, "b"), _row(t, "c")
    assert b["significant_change"] is None
    assert b["previous_sample_id"] is None
    assert c["previous_sample_id"] == "a"
    assert c["significant_change"] is False
    assert c["change_direction"] == "none"


def test_first_sample_has_no_comparison_and_patients_are_separate() -> None:
    """Each patient's first sample has no previous sample, whatever the other patients hold."""
    rows = [
        result("P1", "a", 1.0, "quantified", 1.0),
        result("P2", "b", 0.5, "quantified", 5.0),
        result("P2", "c", 2.0, "quantified", 1.0),
    ]
    t = _trend(rows, {"P1": [0.0], "P2": [0.0]})
    assert _row(t, "a")["previous_sample_id"] is None
    assert _row(t, "a")["significant_change"] is None
    assert _row(t, "c")["previous_sample_id"] == "b"


def test_specimens_are_separate_curves() -> None:
    """A CD56+ value is never the previous sample of a whole-blood one; a null specimen is PB."""
    rows = [
        result("P1", "pb1", 1.0, "quantified", 2.0),
        result("P1", "nk1", 1.0, "quantified", 40.0, specimen="PB CD56+"),
        result("P1", "pb2", 2.0, "quantified", 1.0, specimen=None),
        result("P1", "nk2", 2.0, "quantified", 20.0, specimen="PB CD56+"),
    ]
    t = _trend(rows)
    assert _row(t, "pb2")["specimen"] == "PB"
    assert _row(t, "pb2")["previous_sample_id"] == "pb1"
    assert _row(t, "nk2")["previous_sample_id"] == "nk1"
    assert _row(t, "nk1")["previous_sample_id"] is None
    assert t.filter(pl.col("specimen") == "PB CD56+")["sample_id"].to_list() == ["nk1", "nk2"]


def test_three_genome_columns_are_carried_when_present() -> None:
    """genome_model and the recipient share reach the trend table; absent they are null."""
    rows = [result("P1", "a", 1.0, "quantified", 2.0, recipient=(30.0, 26.0, 34.0))]
    row = _row(_trend(rows), "a")
    assert (row["genome_model"], row["pct_recipient"], row["pct_hsct_donor"]) == (
        "three_genome",
        30.0,
        68.0,
    )
    plain = _row(_trend([result("P1", "a", 1.0, "quantified", 2.0)]), "a")
    assert plain["genome_model"] is None and plain["pct_recipient"] is None


def test_row_order_does_not_change_the_table() -> None:
    """The table is the same whatever order the warehouse rows come in."""
    rows = typical_patient("P1") + typical_patient("P2", peak_pct=5.0)
    doses = {"P1": [0, 3, 7, 10, 14, 17, 21, 24, 52, 80, 108, 136, 164]}
    doses["P2"] = doses["P1"]
    a = _trend(rows, doses)
    b = _trend(list(reversed(rows)), doses)
    assert a.equals(b)
    assert a.height == len(rows)
