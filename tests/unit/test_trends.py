"""Trend table: dose context, critical differences and the declared rules for non-quantified results."""

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

from chimera.trends import build_trend_table
from schemas.trends import Trends


def _trend(
    rows: list[dict[str, object]], doses: dict[str, list[float]] | None = None
) -> pl.DataFrame:
    chim = chimerism_frame(rows)
    inf = infusions_frame(doses if doses is not None else {"P1": [0.0, 3.0]})
    out = build_trend_table(chim.lazy(), inf.lazy()).collect()
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


@pytest.mark.parametrize(("second", "significant"), [(13.0, True), (12.5, False), (7.0, True)])
def test_additive_critical_difference_for_str(second: float, significant: bool) -> None:
    """It uses CD = 1.96*sqrt(u1^2 + u2^2) with u = CI half-width / 1.96 for STR (2.83 points here)."""
    rows = [
        result("P1", "a", 1.0, "quantified", 10.0, method="STR"),
        result("P1", "b", 2.0, "quantified", second, method="STR"),
    ]
    b = _row(_trend(rows), "b")
    assert b["cd_scale"] == "additive"
    assert b["critical_difference_pct"] == pytest.approx(2 * math.sqrt(2))
    assert b["change_pct"] == pytest.approx(second - 10.0)
    assert b["significant_change"] is significant
    assert b["change_direction"] == ("rise" if second > 10 else "fall")


@pytest.mark.parametrize(
    ("second", "significant"), [(1.3, False), (1.5, True), (0.7, True), (0.8, False)]
)
def test_multiplicative_critical_difference_for_pcr(second: float, significant: bool) -> None:
    """It compares |ln(x2/x1)| with 1.96*sqrt(se1^2 + se2^2), se from the CI on the ln scale."""
    rows = [
        result("P1", "a", 1.0, "quantified", 1.0, method="ddPCR"),
        result("P1", "b", 2.0, "quantified", second, method="qPCR"),
    ]
    b = _row(_trend(rows), "b")
    cd_ln = math.sqrt(2) * math.log(1.25)  # se = ln(1.25)/1.96 on both sides
    assert b["cd_scale"] == "multiplicative"
    assert b["critical_difference_ln"] == pytest.approx(cd_ln)
    assert b["change_ln"] == pytest.approx(math.log(second))
    expected_pct = math.exp(cd_ln) - 1 if second > 1 else 1 - math.exp(-cd_ln)
    assert b["critical_difference_pct"] == pytest.approx(expected_pct)
    assert b["significant_change"] is significant


def test_mixed_methods_use_the_additive_rule() -> None:
    """A pair with STR on one side is judged additively."""
    rows = [
        result("P1", "a", 1.0, "quantified", 4.0, method="ddPCR", ci=(3.0, 5.0)),
        result("P1", "b", 2.0, "quantified", 12.0, method="STR", ci=(10.0, 14.0)),
    ]
    b = _row(_trend(rows), "b")
    assert b["cd_scale"] == "additive"
    u1, u2 = 1.0 / 1.96, 2.0 / 1.96
    assert b["critical_difference_pct"] == pytest.approx(1.96 * math.hypot(u1, u2))
    assert b["significant_change"] is True


@pytest.mark.parametrize(("ci_low", "significant"), [(0.04, False), (0.06, True)])
def test_rise_from_not_detected_needs_ci_low_above_the_previous_lod(
    ci_low: float, significant: bool
) -> None:
    """A change from not_detected is significant only when the new ci_low exceeds the old LoD."""
    rows = [
        result("P1", "a", 1.0, "not_detected", lod=0.05),
        result("P1", "b", 2.0, "below_loq", 0.1, ci=(ci_low, 0.2)),
    ]
    b = _row(_trend(rows), "b")
    assert b["cd_scale"] == "detection"
    assert b["critical_difference_pct"] == pytest.approx(0.05)
    assert b["change_pct"] is None
    assert b["change_direction"] == "rise"
    assert b["significant_change"] is significant


@pytest.mark.parametrize(("lod", "significant"), [(0.05, True), (0.6, False)])
def test_fall_to_not_detected_needs_previous_ci_low_above_the_new_lod(
    lod: float, significant: bool
) -> None:
    """A fall to not_detected is significant only when the previous ci_low exceeds the new LoD."""
    rows = [
        result("P1", "a", 1.0, "quantified", 0.625),  # CI 0.5 .. 0.78
        result("P1", "b", 2.0, "not_detected", lod=lod),
    ]
    b = _row(_trend(rows), "b")
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


def test_row_order_does_not_change_the_table() -> None:
    """The table is the same whatever order the warehouse rows come in."""
    rows = typical_patient("P1") + typical_patient("P2", peak_pct=5.0)
    doses = {"P1": [0, 3, 7, 10, 14, 17, 21, 24, 52, 80, 108, 136, 164]}
    doses["P2"] = doses["P1"]
    a = _trend(rows, doses)
    b = _trend(list(reversed(rows)), doses)
    assert a.equals(b)
    assert a.height == len(rows)
