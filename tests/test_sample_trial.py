"""The whole pipeline on the bundled synthetic trial recovers the generator's truth.

Tolerances are the issues' acceptance criteria: STR within 1 percentage point above 5 % iNK;
qPCR within 25 % relative error above its LoQ; ddPCR truth inside the 95 % CI in >= 90 % of
samples; a true zero never reported as quantified; exactly the designed patients per alert.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from chimera.poll import ingest_paths, refresh_after_ingest
from chimera.settings import Settings
from schemas.vocab import FileStatus

RULE_NAMES = {
    "EARLY_LOSS": "early_loss",
    "FALLING_EXPOSURE": "falling_exposure",
    "UNEXPECTED_PERSISTENCE": "persistence",
    "UNEXPECTED_EXPANSION": "unexpected_expansion",
    "REPEATED_QC_FAILURE": "repeated_qc_failure",
}


@pytest.fixture(scope="session")
def trial_run(
    sample_data_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """Ingest the sample trial once into a temporary warehouse."""
    settings = Settings().with_home(tmp_path_factory.mktemp("trial"))
    files = [
        p
        for p in sorted(sample_data_path.rglob("*"))
        if p.is_file() and p.suffix in {".csv", ".txt", ".xlsx"} and "truth" not in p.parts
    ]
    clock_state = [datetime(2026, 11, 1, tzinfo=UTC)]

    def clock() -> datetime:
        clock_state[0] += timedelta(seconds=1)
        return clock_state[0]

    outcomes = ingest_paths(files, settings=settings, clock=clock, move=False)
    refresh_after_ingest(outcomes, settings=settings, now=clock())
    root = settings.warehouse
    return {
        "outcomes": outcomes,
        "chimerism": pl.read_parquet(root / "chimerism" / "*.parquet").filter(
            ~pl.col("superseded")
        ),
        "alerts": pl.read_parquet(root / "alerts" / "*.parquet"),
        "kinetics": pl.read_parquet(root / "kinetics" / "*.parquet"),
        "truth": pl.read_csv(sample_data_path / "truth" / "truth.csv"),
        "design": json.loads((sample_data_path / "truth" / "design.json").read_text()),
    }


def _joined(trial_run: dict[str, object], method: str) -> pl.DataFrame:
    chimerism = trial_run["chimerism"]
    truth = trial_run["truth"]
    assert isinstance(chimerism, pl.DataFrame)
    assert isinstance(truth, pl.DataFrame)
    return chimerism.filter(pl.col("method") == method).join(
        truth.select("sample_id", pl.col("pct_ink").alias("true_pct")), on="sample_id"
    )


def test_every_sample_file_is_accepted(trial_run: dict[str, object]) -> None:
    """All 78 sample files are accepted; none waits or is quarantined."""
    outcomes = trial_run["outcomes"]
    assert isinstance(outcomes, list)
    assert len(outcomes) >= 70
    assert {o.status for o in outcomes} == {FileStatus.ACCEPTED}


def test_every_post_dose_sample_has_a_result_per_method(trial_run: dict[str, object]) -> None:
    """Each truth sample has a current row for every method it was measured with."""
    truth = trial_run["truth"]
    assert isinstance(truth, pl.DataFrame)
    for method in ("STR", "qPCR", "ddPCR"):
        expected = truth.filter(pl.col("methods").str.contains(method))["sample_id"].to_list()
        found = _joined(trial_run, method)["sample_id"].to_list()
        assert sorted(found) == sorted(expected), method


def test_study_day_counts_calendar_days_from_the_first_infusion(
    trial_run: dict[str, object],
) -> None:
    """study_day equals the generator's day numbering (day 0 = date of the first infusion)."""
    chimerism = trial_run["chimerism"]
    truth = trial_run["truth"]
    assert isinstance(chimerism, pl.DataFrame)
    assert isinstance(truth, pl.DataFrame)
    joined = chimerism.join(
        truth.select("sample_id", pl.col("study_day").alias("true_day")), on="sample_id"
    )
    assert joined.height > 1000
    assert (joined["study_day"] == joined["true_day"]).all()


def test_str_recovers_truth_within_one_point_above_5_pct(trial_run: dict[str, object]) -> None:
    """STR within 1 percentage point of the truth wherever the truth is above 5 % iNK."""
    rows = _joined(trial_run, "STR").filter(
        (pl.col("true_pct") > 5) & (pl.col("qc_verdict") == "pass")
    )
    assert rows.height > 100
    error = (rows["pct_ink"] - rows["true_pct"]).abs()
    assert error.max() <= 1.0, rows.filter(error > 1.0).select("sample_id", "pct_ink", "true_pct")


def test_str_contamination_is_sent_to_review(trial_run: dict[str, object]) -> None:
    """The sample spiked with a third genome is flagged, not reported as clean."""
    truth = trial_run["truth"]
    assert isinstance(truth, pl.DataFrame)
    spiked = truth.filter(pl.col("str_contaminated"))["sample_id"].to_list()
    rows = _joined(trial_run, "STR").filter(pl.col("sample_id").is_in(spiked))
    assert rows.height == len(spiked) > 0
    assert set(rows["qc_verdict"]) == {"review"}
    assert all("contamination" in r for r in rows["qc_reasons"])


def test_qpcr_relative_error_within_25_pct_above_loq(trial_run: dict[str, object]) -> None:
    """qPCR quantified results above LoQ are within 25 % of the truth."""
    rows = _joined(trial_run, "qPCR").filter(
        (pl.col("result_status") == "quantified") & (pl.col("true_pct") >= pl.col("loq_pct"))
    )
    assert rows.height > 100
    relative = ((rows["pct_ink"] - rows["true_pct"]) / rows["true_pct"]).abs()
    assert relative.max() <= 0.25


def test_ddpcr_confidence_interval_covers_truth(trial_run: dict[str, object]) -> None:
    """The truth lies inside the 95 % CI in at least 90 % of detected ddPCR samples."""
    rows = _joined(trial_run, "ddPCR").filter(
        pl.col("result_status").is_in(["quantified", "below_loq"]) & (pl.col("true_pct") > 0)
    )
    assert rows.height > 100
    inside = (rows["ci_low"] <= rows["true_pct"]) & (rows["true_pct"] <= rows["ci_high"])
    assert inside.mean() >= 0.90


def test_true_zeros_are_never_quantified(trial_run: dict[str, object]) -> None:
    """A sample with no iNK DNA is never reported as quantified by any method."""
    for method in ("STR", "qPCR", "ddPCR"):
        zeros = _joined(trial_run, method).filter(pl.col("true_pct") == 0)
        assert zeros.height > 20, method
        assert "quantified" not in set(zeros["result_status"]), method


def test_results_below_detection_are_never_a_bare_zero(trial_run: dict[str, object]) -> None:
    """not_detected rows carry no value but an LoD; failed rows a reason."""
    chimerism = trial_run["chimerism"]
    assert isinstance(chimerism, pl.DataFrame)
    nd = chimerism.filter(pl.col("result_status") == "not_detected")
    assert nd["pct_ink"].null_count() == nd.height
    assert nd["lod_pct"].null_count() == 0
    failed = chimerism.filter(pl.col("result_status") == "failed")
    assert failed["qc_reasons"].null_count() == 0


def test_designed_qc_failures_fail(trial_run: dict[str, object]) -> None:
    """The samples designed to fail QC are reported failed, and nobody else's are."""
    chimerism = trial_run["chimerism"]
    truth = trial_run["truth"]
    assert isinstance(chimerism, pl.DataFrame)
    assert isinstance(truth, pl.DataFrame)
    designed = set(truth.filter(pl.col("expected_qc_failure").is_not_null())["sample_id"])
    failed = set(chimerism.filter(pl.col("result_status") == "failed")["sample_id"])
    assert designed
    assert failed == designed


def test_exactly_the_designed_patients_raise_each_alert(trial_run: dict[str, object]) -> None:
    """Each alert rule fires for the patients the trial was designed to trigger, and no others."""
    alerts = trial_run["alerts"]
    design = trial_run["design"]
    assert isinstance(alerts, pl.DataFrame)
    assert isinstance(design, dict)
    current = alerts.filter(pl.col("state") != "resolved")
    for name, patients in design["expected_alerts"].items():
        fired = sorted(set(current.filter(pl.col("rule") == RULE_NAMES[name])["patient_id"]))
        assert fired == sorted(patients), name
    assert current.group_by("patient_id", "rule").len()["len"].max() == 1


def test_headline_picks_str_above_loq_and_pcr_below(trial_run: dict[str, object]) -> None:
    """One headline per sample: STR when quantified >= 5 %, otherwise a PCR method."""
    chimerism = trial_run["chimerism"]
    assert isinstance(chimerism, pl.DataFrame)
    heads = chimerism.filter(pl.col("is_headline"))
    assert heads.group_by("sample_id").len()["len"].max() == 1
    str_heads = heads.filter(pl.col("method") == "STR")
    assert (str_heads.filter(pl.col("result_status") == "quantified")["pct_ink"] >= 5).all()
    low = heads.filter(pl.col("method") != "STR")
    assert low.height > 0


def test_kinetics_of_p04_dose_1_match_hand_computation(trial_run: dict[str, object]) -> None:
    """P04's dose-1 Cmax, Tmax and lin-up/log-down AUC equal the arithmetic on its two samples."""
    kinetics = trial_run["kinetics"]
    chimerism = trial_run["chimerism"]
    assert isinstance(kinetics, pl.DataFrame)
    assert isinstance(chimerism, pl.DataFrame)
    heads = chimerism.filter((pl.col("patient_id") == "P04") & pl.col("is_headline")).sort(
        "collected_at"
    )
    peak, trough = heads.row(0, named=True), heads.row(1, named=True)
    assert (peak["sample_id"], trough["sample_id"]) == ("P04-D001", "P04-D003-PRE")
    dose1 = kinetics.filter(
        (pl.col("patient_id") == "P04") & (pl.col("scope") == "dose") & (pl.col("dose_number") == 1)
    ).row(0, named=True)
    infused = datetime(2025, 5, 6, 11, 20, tzinfo=UTC)
    t1 = (peak["collected_at"] - infused).total_seconds() / 86400
    t2 = (trough["collected_at"] - infused).total_seconds() / 86400
    c1, c2 = peak["pct_ink"], trough["pct_ink"]
    up = t1 * c1 / 2  # linear up from 0 % at the infusion
    down = (t2 - t1) * (c1 - c2) / math.log(c1 / c2)  # log down
    assert dose1["cmax_pct"] == pytest.approx(c1)
    assert dose1["tmax_days"] == pytest.approx(t1)
    assert dose1["auc_pct_days"] == pytest.approx(up + down, rel=1e-9)
