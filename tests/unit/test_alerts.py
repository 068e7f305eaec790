"""Alert rules fire on constructed patients, stay quiet on typical ones, and keep one id per episode."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from chimerism_builders import (
    PROTOCOL_DOSE_DAYS,
    chimerism_frame,
    infusions_frame,
    result,
    typical_patient,
)

from chimera.alerts import (
    AlertRules,
    alert_id,
    detect_alerts,
    load_alert_rules,
    update_alert_states,
)
from chimera.kinetics import compute_kinetics
from chimera.trends import build_trend_table
from schemas.trends import Alerts

RULES = load_alert_rules(None)
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _detect(rows: list[dict[str, Any]], *, rules: AlertRules = RULES) -> pl.DataFrame:
    patients = sorted({r["patient_id"] for r in rows})
    chim = chimerism_frame(rows).lazy()
    inf = infusions_frame({p: list(PROTOCOL_DOSE_DAYS) for p in patients}).lazy()
    trends = build_trend_table(chim, inf)
    kinetics = compute_kinetics(trends, inf)
    return detect_alerts(trends, kinetics, chim, inf, rules=rules)


def _replace_sample(
    rows: list[dict[str, Any]], day: float, new: dict[str, Any]
) -> list[dict[str, Any]]:
    """Return ``rows`` with the sample drawn at ``day`` after dose 1 replaced by ``new``."""
    target = result("X", "X", day, "not_detected")["collected_at"]
    kept = [r for r in rows if r["collected_at"] != target]
    assert len(kept) == len(rows) - 1, f"no sample at day {day}"
    return [*kept, new]


def _evidence(frame: pl.DataFrame, rule: str) -> dict[str, Any]:
    row = frame.filter(pl.col("rule") == rule).row(0, named=True)
    return json.loads(row["evidence"])


def test_typical_patients_raise_no_alert() -> None:
    """Transient engraftment after every dose, clearing before the next q4w dose, is quiet."""
    rows = (
        typical_patient("P01")
        + typical_patient("P02", peak_pct=0.5)
        + typical_patient("P03", peak_pct=30.0, half_life_days=3.0)
    )
    assert _detect(rows).is_empty()


def test_persistence_fires_when_quantified_28_days_after_the_last_dose() -> None:
    """A quantified sample 35 days after dose 13 raises persistence, with the value, CI and LoD."""
    rows = [*typical_patient("P01"), result("P01", "late", 199.0, "quantified", 0.8)]
    alerts = _detect(rows)
    assert alerts["rule"].to_list() == ["persistence"]
    row = alerts.row(0, named=True)
    assert row["severity"] == "warning"
    assert row["episode_key"] == "after dose 13"
    assert row["alert_id"] == alert_id("persistence", "P01", "after dose 13")
    assert "35 days after dose 13" in row["message"]
    sample = _evidence(alerts, "persistence")["samples"][0]
    assert sample["sample_id"] == "late"
    assert (sample["pct_ink"], sample["ci_low"], sample["ci_high"]) == pytest.approx(
        (0.8, 0.64, 1.0)
    )
    assert sample["lod_pct"] == 0.05
    assert sample["result_status"] == "quantified"
    assert json.loads(row["parameters"])["days_after_last_dose"] == 28.0


def test_persistence_ignores_below_loq_and_the_window_edge() -> None:
    """below_loq late results and a quantified sample exactly at 28 days do not fire."""
    rows = [
        *typical_patient("P01"),
        result("P01", "blq", 199.0, "below_loq", 0.1),
        result("P01", "edge", 192.0, "quantified", 0.5),
    ]
    rows = [r for r in rows if r["sample_id"] != "P01-S27"]  # the typical day-192 sample
    assert _detect(rows).is_empty()


def test_unexpected_expansion_two_significant_rises_without_a_dose() -> None:
    """Three rising samples within the dose-9 interval (q4w) raise a critical expansion alert."""
    rows = [
        *typical_patient("P01"),
        result("P01", "r1", 60.0, "quantified", 1.0),
        result("P01", "r2", 66.0, "quantified", 3.0),
        result("P01", "r3", 72.0, "quantified", 9.0),
    ]
    alerts = _detect(rows)
    expansion = alerts.filter(pl.col("rule") == "unexpected_expansion")
    assert expansion.height == 1
    row = expansion.row(0, named=True)
    assert row["severity"] == "critical"
    evidence = json.loads(row["evidence"])
    assert [c["to_sample_id"] for c in evidence["comparisons"]] == ["r2", "r3"]
    assert all(c["significant_change"] for c in evidence["comparisons"])
    assert evidence["comparisons"][0]["cd_scale"] == "multiplicative"
    assert evidence["comparisons"][0]["critical_difference_ln"] > 0
    assert [s["sample_id"] for s in evidence["samples"]] == ["r1", "r2", "r3"]


def test_single_rise_after_a_dose_is_not_expansion() -> None:
    """One significant rise without a dose, then a fall, does not fire."""
    rows = [
        *typical_patient("P01"),
        result("P01", "r1", 60.0, "quantified", 1.0),
        result("P01", "r2", 66.0, "quantified", 3.0),
        result("P01", "r3", 72.0, "quantified", 1.0),
    ]
    assert "unexpected_expansion" not in _detect(rows)["rule"].to_list()


def test_unexpected_expansion_trough_above_previous_cmax() -> None:
    """A pre-dose trough above the previous interval's Cmax + CD raises expansion."""
    # Interval 1 peaks at 2 %; the trough before dose 3 (end of interval 2) reads 8 %.
    rows = _replace_sample(
        typical_patient("P01"), 7 - 2 / 24, result("P01", "trough3", 7 - 2 / 24, "quantified", 8.0)
    )
    alerts = _detect(rows)
    expansion = alerts.filter(pl.col("rule") == "unexpected_expansion")
    assert expansion["episode_key"].to_list() == ["trough before dose 3"]
    evidence = json.loads(expansion["evidence"][0])
    assert [s["sample_id"] for s in evidence["samples"]] == ["P01-S01", "trough3"]
    assert evidence["comparisons"][0]["significant_change"] is True


def test_early_loss_fires_when_a_later_dose_is_not_detected() -> None:
    """Dose 4's first post-dose sample not detected (LoD 0.05 % <= 2 %) raises early loss."""
    rows = _replace_sample(
        typical_patient("P01"), 11.0, result("P01", "lost", 11.0, "not_detected", lod=0.05)
    )
    alerts = _detect(rows)
    assert "early_loss" in alerts["rule"].to_list()
    loss = alerts.filter(pl.col("rule") == "early_loss").row(0, named=True)
    assert loss["episode_key"] == "dose 4"
    evidence = json.loads(loss["evidence"])
    assert evidence["lod_used_pct"] == 0.05
    assert evidence["dose1_value_pct"] == pytest.approx(2.0)
    assert [s["result_status"] for s in evidence["samples"]] == ["quantified", "not_detected"]


def test_early_loss_is_gated_on_the_lod() -> None:
    """A not-detected sample whose LoD exceeds the dose-1 level could not have seen it: no alert."""
    rows = _replace_sample(
        typical_patient("P01"), 11.0, result("P01", "blind", 11.0, "not_detected", lod=5.0)
    )
    assert "early_loss" not in _detect(rows)["rule"].to_list()


def test_falling_exposure_needs_two_consecutive_low_doses() -> None:
    """Cmax below half of dose 1 after doses 5 and 6 fires; after dose 5 alone it does not."""
    low5 = result("P01", "low5", 15.0, "quantified", 0.6)
    low6 = result("P01", "low6", 18.0, "not_detected")  # samples but none quantified: Cmax 0
    one = _replace_sample(typical_patient("P01"), 15.0, low5)
    assert "falling_exposure" not in _detect(one)["rule"].to_list()
    both = _replace_sample(one, 18.0, low6)
    both = _replace_sample(both, 21 - 2 / 24, result("P01", "pre7", 21 - 2 / 24, "not_detected"))
    alerts = _detect(both)
    falling = alerts.filter(pl.col("rule") == "falling_exposure")
    assert falling["episode_key"].to_list() == ["from dose 5"]
    evidence = json.loads(falling["evidence"][0])
    assert evidence["threshold_pct"] == pytest.approx(1.0)
    assert [d["dose_number"] for d in evidence["doses"]] == [5, 6]
    assert evidence["doses"][1]["cmax_imputed_zero"] is True
    dose5 = evidence["doses"][0]
    assert dose5["cmax_pct"] < 1.0
    assert dose5["sample"]["pct_ink"] == dose5["cmax_pct"]
    assert dose5["sample"]["ci_low"] == pytest.approx(dose5["cmax_pct"] / 1.25)
    assert dose5["sample"]["lod_pct"] == 0.05


def test_repeated_qc_failure_counts_every_current_row() -> None:
    """Three failed or QC-fail results (any method, headline or not) fire; superseded ones do not count."""
    base = typical_patient("P01")
    failures = [
        result("P01", "f1", 40.0, "failed"),
        result("P01", "f2", 41.0, "failed", method="STR", headline=False),
        result("P01", "f3", 42.0, "quantified", 0.5, method="qPCR", headline=False, qc="fail"),
    ]
    assert _detect(base + failures[:2]).is_empty()
    old = result("P01", "f9", 43.0, "failed", superseded=True)
    assert _detect([*base, *failures[:2], old]).is_empty()
    alerts = _detect(base + failures)
    assert alerts["rule"].to_list() == ["repeated_qc_failure"]
    evidence = _evidence(alerts, "repeated_qc_failure")
    assert evidence["n_failures"] == 3
    assert {r["sample_id"] for r in evidence["results"]} == {"f1", "f2", "f3"}


def test_disabled_rules_are_skipped() -> None:
    """A disabled rule raises nothing."""
    rules = replace(RULES, persistence=replace(RULES.persistence, enabled=False))
    rows = [*typical_patient("P01"), result("P01", "late", 199.0, "quantified", 0.8)]
    assert _detect(rows, rules=rules).is_empty()


def test_states_open_ongoing_resolved_without_double_firing() -> None:
    """New -> open; still present -> ongoing with first detection kept; gone -> resolved."""
    rows = [*typical_patient("P01"), result("P01", "late", 199.0, "quantified", 0.8)]
    current = _detect(rows)
    empty = pl.DataFrame()
    first = Alerts.validate(update_alert_states(empty, current, now=NOW), lazy=True)
    assert first["state"].to_list() == ["open"]
    assert first["first_detected_at"].to_list() == [NOW]

    later = NOW + timedelta(days=1)
    again = _detect([*rows, result("P01", "later", 206.0, "quantified", 0.6)])
    second = Alerts.validate(update_alert_states(first, again, now=later), lazy=True)
    assert second.height == 1  # the same episode, not a second alert
    assert second["state"].to_list() == ["ongoing"]
    assert second["first_detected_at"].to_list() == [NOW]
    assert second["last_evaluated_at"].to_list() == [later]
    assert "2 such samples" in second["message"][0]

    gone = NOW + timedelta(days=2)
    third = Alerts.validate(
        update_alert_states(second, _detect(typical_patient("P01")), now=gone), lazy=True
    )
    assert third["state"].to_list() == ["resolved"]
    assert third["resolved_at"].to_list() == [gone]

    fourth = update_alert_states(
        third, _detect(typical_patient("P01")), now=gone + timedelta(days=1)
    )
    assert fourth.equals(third)


def test_alert_ids_are_stable_and_distinct_per_episode() -> None:
    """The id depends only on rule, patient and episode key."""
    assert alert_id("early_loss", "P01", "dose 4") == alert_id("early_loss", "P01", "dose 4")
    assert alert_id("early_loss", "P01", "dose 4") != alert_id("early_loss", "P01", "dose 5")
    assert alert_id("early_loss", "P01", "dose 4") != alert_id("early_loss", "P02", "dose 4")


def test_naive_time_is_rejected() -> None:
    """Evaluation times must be timezone-aware."""
    with pytest.raises(ValueError, match="timezone-aware"):
        update_alert_states(pl.DataFrame(), pl.DataFrame(), now=datetime(2026, 1, 1))  # noqa: DTZ001


def test_rules_file_overrides_defaults_and_rejects_unknown_keys(tmp_path: Path) -> None:
    """A user file changes only what it names; typos are errors naming the file."""
    path = tmp_path / "rules.toml"
    path.write_text(
        '[rules.persistence]\nversion = "2"\ndays_after_last_dose = 42\n'
        '[channels.webhooks]\nteams = "https://example.org/hook"\n'
        '[channels.email]\nenabled = true\nrecipients = ["a@example.org"]\n',
        encoding="utf-8",
    )
    rules = load_alert_rules(path)
    assert rules.persistence.days_after_last_dose == 42.0
    assert rules.persistence.version == "2"
    assert rules.early_loss == RULES.early_loss
    assert rules.channels.webhooks[0].name == "teams"
    assert rules.channels.email.recipients == ("a@example.org",)
    assert rules.channels.email.password_env == "CHIMERA_SMTP_PASSWORD"
    bad = tmp_path / "bad.toml"
    bad.write_text("[rules.persistence]\ndays_after_dose = 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.toml.*days_after_dose"):
        load_alert_rules(bad)
    worse = tmp_path / "worse.toml"
    worse.write_text('[rules.early_loss]\nseverity = "urgent"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="severity"):
        load_alert_rules(worse)


def test_packaged_defaults() -> None:
    """The packaged rules carry the protocol defaults."""
    assert RULES.persistence.days_after_last_dose == 28.0
    assert RULES.unexpected_expansion.severity == "critical"
    assert RULES.unexpected_expansion.min_consecutive_rises == 2
    assert RULES.early_loss.window_days == 7.0
    assert (
        RULES.falling_exposure.fraction_of_dose1,
        RULES.falling_exposure.min_consecutive_doses,
    ) == (0.5, 2)
    assert RULES.repeated_qc_failure.min_failures == 3
    assert RULES.channels.webhooks == ()
    assert RULES.channels.email.enabled is False
