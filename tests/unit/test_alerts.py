"""Alert rules on designed patients that should and should not fire; one id per episode.

Each patient is a small synthetic chimerism frame (``chimerism_builders``) run through the trend,
kinetics and alert code exactly as the pipeline runs them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from chimerism_builders import (
    PROTOCOL_DOSE_DAYS,
    at,
    chimerism_frame,
    infusions_frame,
    kinetic_patient,
    result,
    typical_patient,
)

from chimera.alerts.config import AlertSettings, packaged_alert_settings
from chimera.alerts.detect import CONDITION_COLUMNS, detect_alerts
from chimera.alerts.evidence import alert_id
from chimera.alerts.states import update_alert_states
from chimera.kinetics import compute_kinetics
from chimera.trends import build_trend_table
from schemas.trends import Alerts

SETTINGS = packaged_alert_settings()
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TRIAL_CELLS = [5e8] * 8 + [1e9] * 5
"""The low-dose cohort: 5e8 twice weekly x 8, then 1e9 every 4 weeks x 5."""


def detect(
    rows: Sequence[dict[str, Any]],
    *,
    settings: AlertSettings = SETTINGS,
    cells: Sequence[float] | None = None,
    dose_days: Sequence[float] = PROTOCOL_DOSE_DAYS,
) -> pl.DataFrame:
    """Run trends -> kinetics -> alerts on ``rows`` with the protocol doses for every patient."""
    patients = sorted({r["patient_id"] for r in rows})
    chim = chimerism_frame(rows).lazy()
    inf = infusions_frame(
        {p: list(dose_days) for p in patients},
        None if cells is None else {p: list(cells) for p in patients},
    ).lazy()
    cd = settings.critical_difference
    trends = build_trend_table(chim, inf, cd=cd)
    kinetics = compute_kinetics(trends, inf)
    return detect_alerts(trends, kinetics, chim, inf, settings=settings)


def fired(alerts: pl.DataFrame, patient: str | None = None) -> set[str]:
    """The rules that raised an alert (for one patient)."""
    if patient is not None:
        alerts = alerts.filter(pl.col("patient_id") == patient)
    return set(alerts["rule"])


def evidence(alerts: pl.DataFrame, rule: str) -> dict[str, Any]:
    """The parsed evidence of the one alert of ``rule``."""
    rows = alerts.filter(pl.col("rule") == rule)
    assert rows.height == 1, rows
    parsed: dict[str, Any] = json.loads(rows["evidence"][0])
    return parsed


def replace_sample(
    rows: list[dict[str, Any]], day: float, new: dict[str, Any]
) -> list[dict[str, Any]]:
    """Return ``rows`` with the sample drawn ``day`` days after dose 1 replaced by ``new``."""
    kept = [r for r in rows if r["collected_at"] != at(day)]
    assert len(kept) == len(rows) - 1, f"no sample at day {day}"
    return [*kept, new]


def drop_sample(rows: list[dict[str, Any]], day: float) -> list[dict[str, Any]]:
    """Return ``rows`` without the sample drawn ``day`` days after dose 1."""
    kept = [r for r in rows if r["collected_at"] != at(day)]
    assert len(kept) == len(rows) - 1, f"no sample at day {day}"
    return kept


def with_settings(**rules: dict[str, Any]) -> AlertSettings:
    """The packaged settings with some rule fields replaced."""
    changed = {
        name: replace(getattr(SETTINGS.rules, name), **values) for name, values in rules.items()
    }
    return replace(SETTINGS, rules=replace(SETTINGS.rules, **changed))


# ---- transient patients: nothing fires


def test_transient_patients_raise_no_alert() -> None:
    """Transient engraftment after every dose, cleared before the next q4w dose, is quiet."""
    rows = (
        typical_patient("P01")
        + typical_patient("P02", peak_pct=0.5)
        + typical_patient("P03", peak_pct=30.0, half_life_days=3.0)
        + kinetic_patient("P04", peak_pct=12.0, half_life_days=1.2, method="STR", lod=1.0)
    )
    assert detect(rows).is_empty()


# ---- persistence


def test_persistence_fires_when_quantified_28_days_after_the_last_dose() -> None:
    """A quantified sample 35 days after dose 13 raises persistence, with the value, CI and LoD."""
    rows = [*typical_patient("P01"), result("P01", "late", 199.0, "quantified", 0.8)]
    alerts = detect(rows)
    assert alerts["rule"].to_list() == ["persistence"]
    row = alerts.row(0, named=True)
    assert (row["severity"], row["episode_key"], row["specimen"]) == (
        "warning",
        "after dose 13",
        "PB",
    )
    assert row["alert_id"] == alert_id("persistence", "P01", "PB", "after dose 13")
    assert "35 days after dose 13" in row["message"]
    sample = evidence(alerts, "persistence")["samples"][0]
    assert sample["sample_id"] == "late"
    assert (sample["pct_ink"], sample["ci_low"], sample["ci_high"]) == pytest.approx(
        (0.8, 0.64, 1.0)
    )
    assert (sample["lod_pct"], sample["result_status"], sample["qc_verdict"]) == (
        0.05,
        "quantified",
        "pass",
    )
    assert json.loads(row["parameters"])["days_after_last_dose"] == 28.0


def test_persistence_ignores_below_loq_and_the_window_edge() -> None:
    """below_loq late results and a quantified sample exactly at 28 days do not fire."""
    rows = [
        *drop_sample(typical_patient("P01"), 192.0),
        result("P01", "blq", 199.0, "below_loq", 0.1),
        result("P01", "edge", 192.0, "quantified", 0.5),
    ]
    assert detect(rows).is_empty()


# ---- accumulating persistent patient: persistence + accumulation, never unexpected expansion


def _accumulating(patient: str = "P05") -> list[dict[str, Any]]:
    """t1/2 = 27 days: every twice-weekly dose adds to what is left (P03 of the sample trial)."""
    follow_up = (171.0, 192.0, 220.0, 248.0, 276.0, 304.0, 365.0)
    return kinetic_patient(patient, peak_pct=2.0, half_life_days=27.0, follow_up=follow_up)


def test_accumulating_patient_is_accumulation_and_persistence_not_expansion() -> None:
    """Regression (issue 11): troughs above the previous peak were read as unexpected expansion."""
    alerts = detect(_accumulating())
    assert fired(alerts) == {"accumulation", "persistence"}
    acc = evidence(alerts, "accumulation")
    assert acc["reference"]["sample_id"] == "P05-S02"  # the trough before dose 2
    assert acc["accumulation_ratio"] > 4.0
    assert all(t["comparison"]["critical_difference_pct"] > 0 for t in acc["troughs"])
    assert acc["observed_half_life_days"] == pytest.approx(27.0, rel=0.02)
    row = alerts.filter(pl.col("rule") == "accumulation").row(0, named=True)
    assert row["severity"] == "warning"
    assert row["episode_key"] == "troughs from dose 4"
    assert "not expansion" in row["message"]


def test_fast_clearance_does_not_accumulate() -> None:
    """t1/2 = 1.5 days: R_ac stays near 1.25 (below 2) even with a quantified trough."""
    rows = kinetic_patient("P01", peak_pct=8.0, half_life_days=1.5)
    assert "accumulation" not in fired(detect(rows))


# ---- expander: unexpected expansion


def _expander() -> list[dict[str, Any]]:
    """Typical until day 178, then growth with no dose (P05 of the sample trial)."""
    rows = [r for r in typical_patient("P06", peak_pct=5.0) if r["collected_at"] < at(178.0)]
    growth = [(181.0, 0.03), (192.0, 0.3), (220.0, 1.0), (248.0, 4.0), (276.0, 12.0)]
    return rows + [
        result(
            "P06",
            f"g{i}",
            day,
            "quantified" if pct >= 0.2 else "not_detected",
            pct if pct >= 0.2 else None,
        )
        for i, (day, pct) in enumerate(growth)
    ]


def test_expander_raises_critical_unexpected_expansion() -> None:
    """Consecutive significant rises after the last dose: critical, with each pair and its CD."""
    alerts = detect(_expander())
    assert "unexpected_expansion" in fired(alerts)
    assert "accumulation" not in fired(alerts)
    row = alerts.filter(pl.col("rule") == "unexpected_expansion").row(0, named=True)
    assert row["severity"] == "critical"
    ev = json.loads(row["evidence"])
    assert [c["to_sample_id"] for c in ev["comparisons"]] == ["g1", "g2", "g3", "g4"]
    assert ev["comparisons"][0]["cd_scale"] == "detection"
    assert ev["comparisons"][1]["cd_scale"] == "multiplicative"
    assert all(c["significant_change"] for c in ev["comparisons"])
    assert all(c["critical_difference_pct"] > 0 for c in ev["comparisons"])


def test_single_rise_then_fall_is_not_expansion() -> None:
    """One significant rise without a dose, then a fall, does not fire."""
    rows = [
        *typical_patient("P01"),
        result("P01", "r1", 60.0, "quantified", 1.0),
        result("P01", "r2", 66.0, "quantified", 3.0),
        result("P01", "r3", 72.0, "quantified", 1.0),
    ]
    assert "unexpected_expansion" not in fired(detect(rows))


def test_level_above_the_fitted_decay_is_expansion() -> None:
    """After dose 13, a plateau above the patient's own fitted decay (t1/2 5 d) fires."""
    base = [r for r in typical_patient("P01") if r["collected_at"] < at(164.0)]
    decay = [(165.0, 20.0), (170.0, 10.0), (175.0, 5.0), (180.0, 2.5), (185.0, 1.25)]
    rows = base + [result("P01", f"d{i}", t, "quantified", v) for i, (t, v) in enumerate(decay)]
    assert "unexpected_expansion" not in fired(detect(rows))
    plateau = [*rows, result("P01", "up", 190.0, "quantified", 1.2)]
    alerts = detect(plateau)
    row = alerts.filter(pl.col("rule") == "unexpected_expansion").row(0, named=True)
    assert row["episode_key"] == "above fitted decay after dose 13"
    hit = json.loads(row["evidence"])["exceedances"][0]
    assert hit["expected_pct"] == pytest.approx(0.625, rel=1e-6)
    assert hit["half_life_days"] == pytest.approx(5.0)
    assert hit["comparison"]["significant_change"] is True


def test_review_results_never_raise_a_critical_alert_on_their_own() -> None:
    """Regression (issue 11): rises carried by QC-review results raised a critical alert."""
    rows = [
        *typical_patient("P01"),
        result("P01", "r1", 60.0, "quantified", 1.0),
        result("P01", "r2", 66.0, "quantified", 3.0, qc="review"),
        result("P01", "r3", 72.0, "quantified", 9.0, qc="review"),
    ]
    assert "unexpected_expansion" not in fired(detect(rows))


def test_review_results_are_listed_marked_when_pass_results_fire() -> None:
    """A review result inside a run of pass results is skipped, and cited with counted = false."""
    rows = [
        *typical_patient("P01"),
        result("P01", "r1", 60.0, "quantified", 1.0),
        result("P01", "r2", 63.0, "quantified", 30.0, qc="review"),
        result("P01", "r3", 66.0, "quantified", 3.0),
        result("P01", "r4", 72.0, "quantified", 9.0),
    ]
    ev = evidence(detect(rows), "unexpected_expansion")
    assert [c["to_sample_id"] for c in ev["comparisons"]] == ["r3", "r4"]
    assert ev["not_counted"][0]["sample_id"] == "r2"
    assert ev["not_counted"][0]["counted"] is False
    assert "review" in ev["not_counted"][0]["reason"]


def test_any_rule_made_critical_ignores_review_results() -> None:
    """The gate follows the configured severity: persistence set to critical skips review results."""
    rows = [*typical_patient("P01"), result("P01", "late", 199.0, "quantified", 0.8, qc="review")]
    assert fired(detect(rows)) == {"persistence"}
    critical = with_settings(persistence={"severity": "critical"})
    assert detect(rows, settings=critical).is_empty()


# ---- rejecter: early loss (time-matched)


def _rejecter(patient: str = "P07") -> list[dict[str, Any]]:
    """Dose 1 seen (~10 %), nothing from dose 2 on (LoD 0.05 %): the product is rejected."""
    return [
        result(patient, r["sample_id"], day, "not_detected") if (day := _day(r)) > 3.0 else r
        for r in kinetic_patient(patient, peak_pct=10.0)
    ]


def _day(row: dict[str, Any]) -> float:
    return float((row["collected_at"] - at(0.0)).total_seconds() / 86400)


def test_rejecter_raises_early_loss_with_the_time_matched_pair() -> None:
    """+1 d after dose k is compared with +1 d after dose 1, and the pair is recorded."""
    alerts = detect(_rejecter())
    assert "early_loss" in fired(alerts)
    assert "never_detected" not in fired(alerts)
    row = alerts.filter(pl.col("rule") == "early_loss").row(0, named=True)
    assert row["episode_key"] == "dose 2"
    ev = json.loads(row["evidence"])["episodes"][0]
    pair = ev["pairs"][0]
    assert pair["dose1_sample"]["sample_id"] == "P07-S01"  # +1 d after dose 1
    assert pair["days_after_dose"] == pytest.approx(1.0)
    assert pair["dose1_days_after_dose"] == pytest.approx(1.0)
    assert pair["lod_used_pct"] == 0.05
    assert pair["comparison"]["cd_scale"] == "detection"


def test_early_loss_never_compares_a_trough_with_a_peak() -> None:
    """Regression (issue 11): dose 4's first sample was its trough, compared with dose 1's peak."""
    rows = drop_sample(typical_patient("P01"), 11.0)  # dose 4's +1 d sample missing
    rows = replace_sample(rows, 14 - 2 / 24, result("P01", "trough5", 14 - 2 / 24, "not_detected"))
    assert "early_loss" not in fired(detect(rows))


def test_early_loss_is_gated_on_the_lod() -> None:
    """A not-detected sample whose LoD exceeds the dose-1 level could not have seen it."""
    rows = replace_sample(
        typical_patient("P01"), 11.0, result("P01", "blind", 11.0, "not_detected", lod=5.0)
    )
    assert "early_loss" not in fired(detect(rows))
    seen = replace_sample(typical_patient("P01"), 11.0, result("P01", "lost", 11.0, "not_detected"))
    assert "early_loss" in fired(detect(seen))


# ---- never engrafting


def test_never_engrafting_patient_raises_never_detected_with_each_lod() -> None:
    """Not detected after dose 1 and 2 by samples able to see 1 %: never_detected, no early loss."""
    rows = kinetic_patient("P08", peak_pct=0.0)
    alerts = detect(rows)
    assert fired(alerts) == {"never_detected"}
    ev = evidence(alerts, "never_detected")
    assert [s["dose_number"] for s in ev["samples"]][:2] == [1, 2]
    assert all(s["lod_used_pct"] == 0.05 for s in ev["samples"])
    assert ev["expected_level_pct"] == 1.0
    row = alerts.row(0, named=True)
    assert row["episode_key"] == "from dose 1"


def test_never_detected_needs_samples_that_could_have_seen_iNK() -> None:
    """STR not-detected results with an LoD of 5 % say nothing about a 1 % level."""
    rows = kinetic_patient("P08", peak_pct=0.0, method="STR", lod=5.0)
    assert detect(rows).is_empty()


# ---- falling exposure with mixed cohorts


def test_dose_proportional_peaks_are_not_falling_exposure() -> None:
    """Low-dose cohort: 2 % after 5e8, 4 % after 1e9 is the same exposure per cell."""
    peaks = [2.0 * c / 5e8 for c in TRIAL_CELLS]
    rows = kinetic_patient("P09", peaks=peaks)
    assert detect(rows, cells=TRIAL_CELLS).is_empty()


def test_less_than_proportional_peaks_on_a_doubled_dose_are_not_falling_exposure() -> None:
    """2 % after 5e8, 2.6 % after 1e9 (1.3x, as the sample trial's cohort): per cell 4 -> 2.6."""
    rows = kinetic_patient("P09", peaks=[2.0] * 8 + [1.3 * 2.0] * 5)
    assert detect(rows, cells=TRIAL_CELLS).is_empty()


def test_a_fall_the_dose_explains_is_not_falling_exposure() -> None:
    """A dose reduced from 1e9 to 5e8 halves the peak (10 % -> 4.5 %): 9 % per 1e9 cells, no fall."""
    cells = [1e9] * 4 + [5e8] * 9
    rows = kinetic_patient("P09", peaks=[10.0] * 4 + [4.5] * 9, half_life_days=0.8)
    assert "falling_exposure" in fired(detect(rows))  # the same peaks on unchanged doses
    alerts = detect(rows, cells=cells)
    assert "falling_exposure" not in fired(alerts)


def test_falling_exposure_across_the_dose_switch_is_judged_as_measured_and_per_cell() -> None:
    """10 % after 5e8, then 4 % (dose 4, 5e8) and 4 % after 1e9 (2 % per 1e9 cells): from dose 4."""
    cells = [5e8] * 4 + [1e9] * 9
    peaks = [10.0, 10.0, 10.0, 4.0] + [4.0] * 9
    rows = kinetic_patient("P09", peaks=peaks, half_life_days=0.8)
    alerts = detect(rows, cells=cells)
    assert fired(alerts) == {"falling_exposure"}
    assert alerts["episode_key"].to_list() == ["from dose 4"]
    ev = evidence(alerts, "falling_exposure")
    assert ev["dose1"]["pct_per_1e9_cells"] == pytest.approx(20.0, rel=1e-3)
    five = next(d for d in ev["doses"] if d["dose_number"] == 5)
    assert (five["cells"], five["dose_normalised"]) == (1e9, True)
    assert five["pct_per_1e9_cells"] == pytest.approx(4.0, rel=0.05)  # + what dose 4 left
    assert five["comparison"]["significant_change"] is True
    assert five["comparison_as_measured"]["significant_change"] is True
    assert five["below_fraction_and_cd"] is True


def test_falling_peaks_in_the_high_dose_cohort() -> None:
    """1e9 throughout, peaks 10 % -> 3 %: falling exposure once below half of dose 1 (dose 5).

    Dose 4's +1 d level is 3 % plus 2.25 % left from dose 3 (t1/2 1.5 d): not yet below 5 %.
    """
    peaks = [10.0, 10.0, 9.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    alerts = detect(kinetic_patient("P10", peaks=peaks), cells=[1e9] * 13)
    assert "falling_exposure" in fired(alerts)
    assert alerts.filter(pl.col("rule") == "falling_exposure")["episode_key"].to_list() == [
        "from dose 5"
    ]


def test_a_dose_without_a_matched_peak_sample_is_skipped_not_zero() -> None:
    """Regression (issue 11): doses sampled only at the trough counted as Cmax 0."""
    rows = typical_patient("P01")
    for day in (15.0, 18.0):  # the +1 d samples of doses 5 and 6
        rows = drop_sample(rows, day)
    for day in (17 - 2 / 24, 21 - 2 / 24):
        rows = replace_sample(rows, day, result("P01", f"nd{day:.0f}", day, "not_detected"))
    alerts = detect(rows)
    assert "falling_exposure" not in fired(alerts)


# ---- relapse in three-genome patients


def _three_genome(patient: str, recipient_share: Sequence[float]) -> list[dict[str, Any]]:
    """A typical iNK course with the patient's own share of the non-iNK cells per sample."""
    rows = typical_patient(patient, peak_pct=5.0)
    out = []
    for row, share in zip(
        sorted(rows, key=lambda r: r["collected_at"]), recipient_share, strict=False
    ):
        ink = row["pct_ink"] or 0.0
        rec = share * (100.0 - ink) / 100.0
        out.append({**row, **_recipient(rec)})
    return out


def _recipient(pct: float) -> dict[str, Any]:
    rest = 100.0 - pct
    return {
        "genome_model": "three_genome",
        "pct_recipient": pct,
        "pct_recipient_ci_low": pct / 1.1,
        "pct_recipient_ci_high": min(pct * 1.1, 100.0),
        "pct_hsct_donor": rest,
        "pct_hsct_donor_ci_low": None,
        "pct_hsct_donor_ci_high": None,
    }


def test_stable_recipient_share_in_a_three_genome_patient_is_quiet() -> None:
    """iNK doses and clearance move pct_recipient, not the recipient share of non-iNK cells."""
    rows = _three_genome("P11", [20.0] * 40)
    assert detect(rows).is_empty()


def test_relapse_is_recipient_rising_and_the_ink_fall_is_dilution_not_rejection() -> None:
    """The patient's own share rises from dose 4 on while iNK falls: no early loss is raised."""
    rows = _three_genome("P12", [20.0] * 7 + [45.0, 60.0, 75.0, 80.0] + [85.0] * 30)
    ordered = sorted(rows, key=lambda r: r["collected_at"])
    relapsing = {r["sample_id"] for r in ordered[7:]}
    rows = [
        {**r, "result_status": "not_detected", "pct_ink": None, "ci_low": 0.0, "ci_high": 0.05}
        if r["sample_id"] in relapsing
        else r
        for r in rows
    ]
    alerts = detect(rows)
    assert fired(alerts) == {"recipient_rising"}
    ev = evidence(alerts, "recipient_rising")
    assert ev["nadir"]["sample_id"] == ordered[0]["sample_id"]
    assert ev["comparisons"][0]["significant_change"] is True
    readings = {c["reading"] for c in ev["ink_during_rise"]}
    assert "dilution by relapse, not rejection" in readings
    two_genome = [
        {k: v for k, v in r.items() if not k.startswith(("pct_recipient", "pct_hsct", "genome"))}
        for r in rows
    ]
    assert "early_loss" in fired(detect(two_genome))  # the same iNK fall without relapse context


# ---- specimens


def test_cd56_sorted_values_are_their_own_curve() -> None:
    """A CD56+ sample at 30 % never makes the whole-blood curve expand, and is its own alert key."""
    rows = [
        *typical_patient("P01"),
        result("P01", "nk1", 60.0, "quantified", 30.0, specimen="PB CD56+"),
        result("P01", "nk2", 199.0, "quantified", 20.0, specimen="PB CD56+"),
    ]
    alerts = detect(rows)
    assert alerts.select("rule", "specimen").rows() == [("persistence", "PB CD56+")]
    assert alerts["alert_id"][0] == alert_id("persistence", "P01", "PB CD56+", "after dose 13")


# ---- QC failures, disabling, states


def test_repeated_qc_failure_counts_every_current_row() -> None:
    """Three failed or QC-fail results (any method, headline or not) fire; superseded do not count."""
    base = typical_patient("P01")
    failures = [
        result("P01", "f1", 40.0, "failed"),
        result("P01", "f2", 41.0, "failed", method="STR", headline=False),
        result("P01", "f3", 42.0, "quantified", 0.5, method="qPCR", headline=False, qc="fail"),
    ]
    assert detect(base + failures[:2]).is_empty()
    old = result("P01", "f9", 43.0, "failed", superseded=True)
    assert detect([*base, *failures[:2], old]).is_empty()
    alerts = detect(base + failures)
    assert alerts["rule"].to_list() == ["repeated_qc_failure"]
    ev = evidence(alerts, "repeated_qc_failure")
    assert ev["n_failures"] == 3
    assert {r["sample_id"] for r in ev["results"]} == {"f1", "f2", "f3"}


def test_disabled_rules_are_skipped() -> None:
    """A disabled rule raises nothing."""
    rows = [*typical_patient("P01"), result("P01", "late", 199.0, "quantified", 0.8)]
    assert detect(rows, settings=with_settings(persistence={"enabled": False})).is_empty()


def test_every_alert_states_its_comparison_and_error_model() -> None:
    """Each trend rule's evidence names what it compared and with which error."""
    rows = _accumulating("A") + _expander() + _rejecter("R") + kinetic_patient("N", peak_pct=0.0)
    alerts = detect(rows)
    assert {
        "accumulation",
        "persistence",
        "unexpected_expansion",
        "early_loss",
        "never_detected",
    } <= fired(alerts)
    for row in alerts.iter_rows(named=True):
        ev = json.loads(row["evidence"])
        first = ev["episodes"][0] if "episodes" in ev else ev
        assert first["compared"] and first["error_model"], row["rule"]
    assert list(alerts.columns) == list(CONDITION_COLUMNS)


def test_states_open_ongoing_resolved_without_double_firing() -> None:
    """New -> open; still present -> ongoing with first detection kept; gone -> resolved."""
    rows = [*typical_patient("P01"), result("P01", "late", 199.0, "quantified", 0.8)]
    first = Alerts.validate(update_alert_states(pl.DataFrame(), detect(rows), now=NOW), lazy=True)
    assert first["state"].to_list() == ["open"]
    assert first["first_detected_at"].to_list() == [NOW]

    later = NOW + timedelta(days=1)
    again = detect([*rows, result("P01", "later", 206.0, "quantified", 0.6)])
    second = Alerts.validate(update_alert_states(first, again, now=later), lazy=True)
    assert second.height == 1
    assert second["state"].to_list() == ["ongoing"]
    assert second["first_detected_at"].to_list() == [NOW]
    assert second["last_evaluated_at"].to_list() == [later]
    assert "2 such samples" in second["message"][0]

    gone = NOW + timedelta(days=2)
    third = Alerts.validate(
        update_alert_states(second, detect(typical_patient("P01")), now=gone), lazy=True
    )
    assert third["state"].to_list() == ["resolved"]
    assert third["resolved_at"].to_list() == [gone]
    fourth = update_alert_states(
        third, detect(typical_patient("P01")), now=gone + timedelta(days=1)
    )
    assert fourth.equals(third)


def test_an_alert_table_without_specimen_is_read_as_whole_blood() -> None:
    """Alert tables written before specimens were keys keep their rows (as PB)."""
    rows = [*typical_patient("P01"), result("P01", "late", 199.0, "quantified", 0.8)]
    first = update_alert_states(pl.DataFrame(), detect(rows), now=NOW).drop("specimen")
    second = Alerts.validate(update_alert_states(first, detect(rows), now=NOW), lazy=True)
    assert set(second["specimen"]) == {"PB"}


def test_naive_time_is_rejected() -> None:
    """Evaluation times must be timezone-aware."""
    with pytest.raises(ValueError, match="timezone-aware"):
        update_alert_states(pl.DataFrame(), pl.DataFrame(), now=datetime(2026, 1, 1))  # noqa: DTZ001
