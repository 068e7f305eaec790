"""Cellular kinetics: AUC lin-up/log-down, BLQ rules, half-life, Cmax/Tmax, troughs, accumulation."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import pytest
from chimerism_builders import (
    PROTOCOL_DOSE_DAYS,
    T0,
    chimerism_frame,
    infusions_frame,
    result,
    typical_patient,
)
from hypothesis import given
from hypothesis import strategies as st

from chimera.alerts.config import packaged_alert_settings
from chimera.kinetics import compute_kinetics, summarise_cohort
from chimera.nca import auc_lin_up_log_down, estimate_half_life
from chimera.trends import build_trend_table
from schemas.trends import CohortKinetics, Kinetics

CD = packaged_alert_settings().critical_difference

LN2 = math.log(2)


def _kinetics(
    rows: list[dict[str, object]],
    doses: dict[str, list[float]],
    cells: dict[str, list[float]] | None = None,
) -> pl.DataFrame:
    chim = chimerism_frame(rows).lazy()
    inf = infusions_frame(doses, cells).lazy()
    trends = build_trend_table(chim, inf, cd=CD)
    out = compute_kinetics(trends, inf).collect()
    return Kinetics.validate(out, lazy=True)


def _dose(k: pl.DataFrame, n: int, patient: str = "P1", specimen: str = "PB") -> dict[str, Any]:
    return k.filter(
        (pl.col("patient_id") == patient)
        & (pl.col("specimen") == specimen)
        & (pl.col("dose_number") == n)
    ).row(0, named=True)


def _overall(k: pl.DataFrame, patient: str = "P1", specimen: str = "PB") -> dict[str, Any]:
    return k.filter(
        (pl.col("patient_id") == patient)
        & (pl.col("specimen") == specimen)
        & (pl.col("scope") == "overall")
    ).row(0, named=True)


def test_auc_hand_computed_lin_up_log_down() -> None:
    """AUC = 0->4 linear (2.0) + 4->2 log (2/ln2) + 2->1 over 2 days log (2/ln2) = 7.7708."""
    rows = [
        result("P1", "b", -1.0, "not_detected"),
        result("P1", "s1", 1.0, "quantified", 4.0),
        result("P1", "s2", 2.0, "quantified", 2.0),
        result("P1", "s3", 4.0, "quantified", 1.0),
    ]
    k = _kinetics(rows, {"P1": [0.0]})
    d1 = _dose(k, 1)
    expected = 2.0 + 2 / LN2 + 2 / LN2
    assert d1["auc_pct_days"] == pytest.approx(expected)
    assert expected == pytest.approx(7.770780, abs=1e-6)
    assert _overall(k)["auc_pct_days"] == pytest.approx(expected)
    assert d1["cmax_pct"] == 4.0
    assert d1["tmax_days"] == pytest.approx(1.0)
    assert d1["tlast_days"] == pytest.approx(4.0)
    assert d1["predose_status"] == "not_detected"


def test_auc_function_matches_the_formulas() -> None:
    """Linear when rising or reaching 0, logarithmic when falling between positive values."""
    assert auc_lin_up_log_down([0.0, 2.0], [1.0, 3.0]) == pytest.approx(4.0)
    assert auc_lin_up_log_down([0.0, 2.0], [3.0, 0.0]) == pytest.approx(3.0)
    assert auc_lin_up_log_down([0.0, 2.0], [4.0, 1.0]) == pytest.approx(2 * 3 / math.log(4))
    assert auc_lin_up_log_down([0.0], [1.0]) == 0.0
    with pytest.raises(ValueError, match="increasing"):
        auc_lin_up_log_down([1.0, 0.0], [1.0, 1.0])


def test_blq_first_kept_as_zero_middle_dropped_last_kept_as_zero() -> None:
    """PKNCA defaults: BLQ before the first quantified -> 0, between -> dropped, after -> 0."""
    rows = [
        result("P1", "nd_first", 0.5, "not_detected"),
        result("P1", "q1", 1.0, "quantified", 4.0),
        result("P1", "blq_mid", 2.0, "below_loq", 0.1),
        result("P1", "q2", 3.0, "quantified", 1.0),
        result("P1", "nd_last", 5.0, "not_detected"),
    ]
    d1 = _dose(_kinetics(rows, {"P1": [0.0]}), 1)
    # points (0,0) (0.5,0) (1,4) (3,1) (5,0): 0 + 1.0 + 2*3/ln4 + 1.0
    assert d1["auc_pct_days"] == pytest.approx(2.0 + 6 / math.log(4))
    notes = d1["blq_imputations"]
    assert "nd_first) not_detected: 0 (BLQ before the first quantified value)" in notes
    assert "blq_mid) below_loq: dropped (BLQ between quantified values)" in notes
    assert "nd_last) not_detected: 0 (BLQ after the last quantified value)" in notes
    assert d1["tlast_days"] == pytest.approx(3.0)
    assert d1["n_samples"] == 5
    assert d1["n_quantified"] == 2


def test_interval_without_quantified_value_has_zero_auc_and_no_cmax() -> None:
    """All-BLQ interval: AUC 0, Cmax/Tmax/Tlast null, half-life reason given."""
    rows = [
        result("P1", "a", 1.0, "below_loq", 0.1),
        result("P1", "b", 2.0, "not_detected"),
    ]
    d1 = _dose(_kinetics(rows, {"P1": [0.0]}), 1)
    assert d1["auc_pct_days"] == 0.0
    assert d1["cmax_pct"] is None
    assert d1["tmax_days"] is None
    assert d1["tlast_days"] is None
    assert d1["half_life_days"] is None
    assert d1["half_life_reason"] == "no quantified value"


def test_half_life_recovered_from_an_exact_exponential() -> None:
    """t½ = 5 days is recovered with adjusted R² = 1 from all points after Cmax."""
    ts = [1.0, 3.0, 6.0, 11.0, 16.0, 21.0]
    rows = [
        result("P1", f"s{i}", t, "quantified", 10.0 * 0.5 ** ((t - 1.0) / 5.0))
        for i, t in enumerate(ts)
    ]
    d1 = _dose(_kinetics(rows, {"P1": [0.0]}), 1)
    assert d1["half_life_days"] == pytest.approx(5.0)
    assert d1["lambda_z_per_day"] == pytest.approx(LN2 / 5.0)
    assert d1["half_life_r2"] == pytest.approx(1.0)
    assert d1["half_life_reason"] is None
    points = d1["half_life_points"].split("; ")
    assert len(points) == 5  # Cmax excluded, the most points preferred on a tie
    assert points[0] == "day 3:7.579"  # 10 * 0.5 ** (2 / 5)
    overall = _overall(_kinetics(rows, {"P1": [0.0]}))
    assert overall["half_life_days"] == pytest.approx(5.0)


def test_half_life_prefers_the_best_adjusted_r2_on_the_terminal_points() -> None:
    """A distribution phase ahead of a clean terminal phase is left out of the fit."""
    ts = [1.0, 2.0, 10.0, 20.0, 30.0, 40.0]
    values = [50.0, 10.0, 8.0, 4.0, 2.0, 1.0]
    fit = estimate_half_life(ts, values)
    assert fit.half_life_days == pytest.approx(10.0)
    assert [t for t, _ in fit.points] == [10.0, 20.0, 30.0, 40.0]


@pytest.mark.parametrize(
    ("ts", "values", "reason"),
    [
        ([1.0, 2.0, 3.0], [5.0, 4.0, 3.0], "fewer than 3 quantified points after Cmax (2)"),
        ([1.0, 2.0, 3.0, 4.0], [8.0, 8 * 2**-0.1, 8 * 2**-0.2, 8 * 2**-0.3], "half-lives < 2"),
        ([1.0, 2.0, 3.0, 4.0, 5.0], [9.0, 4.0, 6.0, 1.0, 3.0], "adjusted R²"),
        ([1.0, 2.0, 3.0, 4.0], [9.0, 1.0, 2.0, 4.0], "lambda_z <= 0"),
        ([], [], "no quantified value"),
    ],
)
def test_half_life_not_estimable_reasons(ts: list[float], values: list[float], reason: str) -> None:
    """Short, flat, noisy or rising tails give no half-life and say why."""
    fit = estimate_half_life(ts, values)
    assert fit.half_life_days is None
    assert fit.reason is not None
    assert reason in fit.reason


def test_cmax_tmax_take_the_first_time_on_ties() -> None:
    """Tmax is the first time Cmax is reached (PKNCA first.tmax)."""
    rows = [
        result("P1", "a", 1.0, "quantified", 3.0),
        result("P1", "b", 2.0, "quantified", 3.0),
        result("P1", "c", 2.5, "quantified", 1.0),
    ]
    d1 = _dose(_kinetics(rows, {"P1": [0.0]}), 1)
    assert d1["cmax_pct"] == 3.0
    assert d1["cmax_sample_id"] == "a"
    assert d1["tmax_days"] == pytest.approx(1.0)


def test_troughs_predose_anchor_and_accumulation() -> None:
    """C_pre,n within 24 h anchors AUC_tau; R_ac = C_pre,n/C_pre,2 and AUC_n/AUC_1."""
    rows = [
        result("P1", "base", -2.0, "not_detected"),
        result("P1", "p1", 1.0, "quantified", 4.0),
        result("P1", "t1", 3.0 - 2 / 24, "quantified", 1.0),
        result("P1", "p2", 4.0, "quantified", 5.0),
        result("P1", "t2", 7.0 - 2 / 24, "quantified", 2.0),
        result("P1", "p3", 8.0, "quantified", 6.0),
        result("P1", "late", 9.0, "quantified", 3.0),
    ]
    k = _kinetics(rows, {"P1": [0.0, 3.0, 7.0]})
    d1, d2, d3 = _dose(k, 1), _dose(k, 2), _dose(k, 3)
    assert (d1["trough_pct"], d1["trough_sample_id"]) == (1.0, "t1")
    assert (d2["predose_pct"], d2["predose_sample_id"]) == (1.0, "t1")
    assert (d3["predose_pct"], d3["trough_pct"]) == (2.0, None)
    assert d1["accumulation_ratio_trough"] is None
    assert d2["accumulation_ratio_trough"] == pytest.approx(1.0)
    assert d3["accumulation_ratio_trough"] == pytest.approx(2.0)
    # dose 2 starts at its pre-dose sample where it was drawn: (3 - 1/12, 1.0) -> (4, 5) linear
    # over 1 + 1/12 days, then (4, 5) -> (7 - 1/12, 2) log down.
    gap = 1 + 2 / 24
    auc2 = (1.0 + 5.0) / 2 * gap + (3 - 1 / 12) * 3 / math.log(5 / 2)
    assert d2["auc_pct_days"] == pytest.approx(auc2)
    auc1 = 2.0 + (2 - 1 / 12) * 3 / math.log(4)
    assert d1["auc_pct_days"] == pytest.approx(auc1)
    assert d2["accumulation_ratio_auc"] == pytest.approx(auc2 / auc1)
    assert d1["accumulation_ratio_auc"] == pytest.approx(1.0)
    assert d2["interval_start_day"] == pytest.approx(3.0)
    assert d2["interval_end_day"] == pytest.approx(7.0)
    assert d3["interval_end_day"] is None
    # The overall AUC runs through every sample once: (0,0) (1,4) (3-1/12,1) (4,5) (7-1/12,2)
    # (8,6) (9,3); troughs are not counted twice, and the intervals tile it exactly.
    overall = (
        2.0
        + (2 - 1 / 12) * 3 / math.log(4)
        + (1.0 + 5.0) / 2 * gap
        + (3 - 1 / 12) * 3 / math.log(5 / 2)
        + (2.0 + 6.0) / 2 * gap
        + 3 / math.log(2)
    )
    assert overall == pytest.approx(auc1 + auc2 + d3["auc_pct_days"])
    assert _overall(k)["auc_pct_days"] == pytest.approx(overall)


def test_trough_outside_the_pre_dose_window_is_null() -> None:
    """A sample more than 24 h before the next dose is not its trough."""
    rows = [
        result("P1", "p1", 1.0, "quantified", 4.0),
        result("P1", "early", 1.5, "quantified", 2.0),
    ]
    k = _kinetics(rows, {"P1": [0.0, 3.0]})
    assert _dose(k, 1)["trough_pct"] is None
    assert _dose(k, 2)["predose_pct"] is None
    assert _dose(k, 2)["n_samples"] == 0
    assert _dose(k, 2)["half_life_reason"] == "no samples in the interval"


def test_one_patient_alone_gives_the_same_rows_as_in_a_cohort() -> None:
    """Kinetics are per patient: computing one patient alone matches the cohort run."""
    doses = {p: list(PROTOCOL_DOSE_DAYS) for p in ("P1", "P2", "P3")}
    rows = (
        typical_patient("P1")
        + typical_patient("P2", peak_pct=4.0)
        + typical_patient("P3", half_life_days=3.0)
    )
    all_k = _kinetics(rows, doses).filter(pl.col("patient_id") == "P2")
    one = _kinetics([r for r in rows if r["patient_id"] == "P2"], {"P2": doses["P2"]})
    assert one.drop("source_sha256", "ingested_at").equals(
        all_k.drop("source_sha256", "ingested_at")
    )
    assert one.height == 14
    assert set(one["specimen"]) == {"PB"}
    assert one.filter(pl.col("scope") == "dose")["cmax_pct"].min() == pytest.approx(4.0)


def test_cohort_summary_gives_median_and_range_per_dose() -> None:
    """Median and range of Cmax per dose across patients."""
    doses = {p: list(PROTOCOL_DOSE_DAYS) for p in ("P1", "P2", "P3")}
    rows = (
        typical_patient("P1", peak_pct=1.0)
        + typical_patient("P2", peak_pct=2.0)
        + typical_patient("P3", peak_pct=6.0)
    )
    cohort = summarise_cohort(_kinetics(rows, doses).lazy()).collect()
    CohortKinetics.validate(cohort, lazy=True)
    assert set(cohort["specimen"]) == {"PB"}
    cmax1 = cohort.filter((pl.col("dose_number") == 1) & (pl.col("parameter") == "cmax_pct")).row(
        0, named=True
    )
    assert (cmax1["n_patients"], cmax1["n_values"]) == (3, 3)
    assert (cmax1["median"], cmax1["min"], cmax1["max"]) == pytest.approx((2.0, 1.0, 6.0))
    assert cohort.filter(pl.col("scope") == "overall").height == 11


def test_cd56_values_never_enter_the_whole_blood_curve() -> None:
    """A CD56+ sorted value (10x higher) is its own curve: the whole-blood Cmax ignores it."""
    rows = [
        result("P1", "pb", 1.0, "quantified", 2.0),
        result("P1", "nk", 1.0, "quantified", 35.0, specimen="PB CD56+"),
        result("P1", "pb2", 2.0, "quantified", 1.0),
    ]
    k = _kinetics(rows, {"P1": [0.0]})
    assert _dose(k, 1)["cmax_pct"] == 2.0
    assert _overall(k)["cmax_pct"] == 2.0
    assert _dose(k, 1, specimen="PB CD56+")["cmax_pct"] == 35.0
    assert _dose(k, 1)["n_samples"] == 2


def test_dose_normalised_cmax_uses_the_cells_infused() -> None:
    """cmax_pct_per_1e9_cells = Cmax x 1e9 / cells (5e8 twice weekly, 1e9 monthly)."""
    rows = [
        result("P1", "a", 1.0, "quantified", 2.0),
        result("P1", "b", 4.0, "quantified", 3.0),
    ]
    k = _kinetics(rows, {"P1": [0.0, 3.0]}, {"P1": [5e8, 1e9]})
    assert (_dose(k, 1)["dose_cells"], _dose(k, 1)["cmax_pct_per_1e9_cells"]) == (5e8, 4.0)
    assert (_dose(k, 2)["dose_cells"], _dose(k, 2)["cmax_pct_per_1e9_cells"]) == (1e9, 3.0)
    assert _overall(k)["cmax_pct_per_1e9_cells"] is None


_STATE = st.sampled_from(["quantified", "quantified", "below_loq", "not_detected"])


@st.composite
def _dosed_patient(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[float]]:
    """Doses on the protocol days; each interval has post-dose samples and a pre-dose trough."""
    n_doses = draw(st.integers(1, 6))
    days = list(PROTOCOL_DOSE_DAYS[:n_doses])
    ends = [*days[1:], days[-1] + 5.0]
    rows: list[dict[str, Any]] = []
    for i, (start, end) in enumerate(zip(days, ends, strict=True)):
        offsets = draw(st.lists(st.floats(0.05, end - start - 1.2), min_size=1, max_size=3))
        trough = draw(st.floats(0.05, 0.9))
        for j, t in enumerate([*sorted(set(offsets)), end - start - trough]):
            state = draw(_STATE)
            value = draw(st.floats(0.2, 60.0)) if state == "quantified" else 0.1
            pct = None if state == "not_detected" else value
            rows.append(result("P1", f"s{i}-{j}", start + t, state, pct))
    return rows, days


@given(_dosed_patient())
def test_interval_aucs_add_up_to_the_overall_auc(
    patient: tuple[list[dict[str, Any]], list[float]],
) -> None:
    """With a pre-dose sample before every dose, the dose intervals tile the overall AUC."""
    rows, days = patient
    k = _kinetics(rows, {"P1": days})
    doses = k.filter(pl.col("scope") == "dose")
    assert doses.height == len(days)
    assert _overall(k)["auc_pct_days"] == pytest.approx(doses["auc_pct_days"].sum(), rel=1e-9)


@given(_dosed_patient())
def test_cmax_is_at_least_every_quantified_value(
    patient: tuple[list[dict[str, Any]], list[float]],
) -> None:
    """Each interval's Cmax >= every quantified value in it; the overall Cmax >= all of them."""
    rows, days = patient
    k = _kinetics(rows, {"P1": days})
    quantified = [r for r in rows if r["result_status"] == "quantified"]
    bounds = [*days[1:], math.inf]
    for n, (start, end) in enumerate(zip(days, bounds, strict=True), start=1):
        inside = [
            r["pct_ink"]
            for r in quantified
            if start <= (r["collected_at"] - T0).total_seconds() / 86400 < end
        ]
        cmax = _dose(k, n)["cmax_pct"]
        assert (cmax is None) == (not inside)
        assert all(cmax >= v for v in inside)
    overall = _overall(k)["cmax_pct"]
    assert all(overall >= r["pct_ink"] for r in quantified)
