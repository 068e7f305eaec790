"""Each contract accepts a valid frame and rejects each rule's failing frame (pandera style)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandera.errors as pa_errors
import polars as pl
import pytest

from chimera.errors import ValidationFailedError
from chimera.validation import validate_frame
from schemas.inputs import DdpcrWells, InfusionLog, Manifest
from schemas.warehouse import Chimerism

T = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)


def _manifest(**overrides: object) -> pl.DataFrame:
    row = {
        "sample_id": "P01-D1",
        "patient_id": "P01",
        "role": "post_dose",
        "collected_at": T,
        "specimen": "peripheral blood",
        "wbc_per_ul": 2500.0,
        "lymphocytes_per_ul": 800.0,
        "product_lot": None,
    }
    row.update(overrides)
    return pl.DataFrame(
        [row], schema_overrides={"collected_at": pl.Datetime("us", "UTC"), "product_lot": pl.String}
    )


def _chimerism(**overrides: object) -> pl.DataFrame:
    row = {
        "source_sha256": "a" * 64,
        "pipeline_version": "0.1.0",
        "ingested_at": T,
        "patient_id": "P01",
        "sample_id": "P01-D1",
        "collected_at": T,
        "study_day": 1,
        "specimen": "peripheral blood",
        "method": "ddPCR",
        "pct_ink": 0.42,
        "pct_ink_raw": 0.42,
        "ci_low": 0.31,
        "ci_high": 0.55,
        "ci_quantile": 1.96,
        "lod_pct": 0.03,
        "loq_pct": 0.1,
        "result_status": "quantified",
        "qc_verdict": "pass",
        "qc_reasons": None,
        "n_informative": 1,
        "clamped": False,
        "ink_cells_per_ul": 10.5,
        "is_headline": True,
        "headline_rule": "only method measured",
        "superseded": False,
        "superseded_reason": None,
        "source_file": "plate.csv",
        "genome_model": "two_genome",
        "pct_recipient": 99.58,
        "pct_recipient_ci_low": 99.45,
        "pct_recipient_ci_high": 99.69,
        "pct_hsct_donor": None,
        "pct_hsct_donor_ci_low": None,
        "pct_hsct_donor_ci_high": None,
        "purity_pct": None,
        "pct_ink_purity_corrected": None,
    }
    row.update(overrides)
    return pl.DataFrame(
        [row],
        schema_overrides={
            "ingested_at": pl.Datetime("us", "UTC"),
            "collected_at": pl.Datetime("us", "UTC"),
            "study_day": pl.Int32,
            "n_informative": pl.Int32,
            "qc_reasons": pl.String,
            "pct_ink": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
            "ci_quantile": pl.Float64,
            "superseded_reason": pl.String,
            "pct_hsct_donor": pl.Float64,
            "pct_hsct_donor_ci_low": pl.Float64,
            "pct_hsct_donor_ci_high": pl.Float64,
            "purity_pct": pl.Float64,
            "pct_ink_purity_corrected": pl.Float64,
        },
    )


def test_valid_manifest_passes_and_validating_twice_is_idempotent() -> None:
    """A valid manifest passes, and validating the result again changes nothing."""
    once = Manifest.validate(_manifest())
    assert Manifest.validate(once).equals(once)


def test_post_dose_sample_needs_collection_time() -> None:
    """A post-dose row without collected_at breaks post_dose_samples_have_collection_time."""
    with pytest.raises(pa_errors.SchemaErrors, match="post_dose_samples_have_collection_time"):
        Manifest.validate(_manifest(collected_at=None), lazy=True)


def test_baseline_without_collection_time_is_allowed() -> None:
    """Only post-dose rows must carry a collection time: the same row passes as a baseline."""
    baseline = _manifest(role="recipient_baseline", collected_at=None)
    validated = Manifest.validate(baseline)
    assert validated["collected_at"].to_list() == [None]
    assert validated.select(baseline.columns).equals(baseline)
    with pytest.raises(pa_errors.SchemaErrors, match="post_dose_samples_have_collection_time"):
        Manifest.validate(baseline.with_columns(role=pl.lit("post_dose")), lazy=True)


def test_infusion_log_one_row_per_patient_dose() -> None:
    """The same dose twice breaks one_row_per_patient_dose."""
    frame = pl.DataFrame(
        {
            "patient_id": ["P01", "P01"],
            "dose_number": [1, 1],
            "infused_at": [T, T],
            "cells": [5e8, 5e8],
            "product_lot": [None, None],
        },
        schema_overrides={"product_lot": pl.String},
    )
    with pytest.raises(pa_errors.SchemaErrors, match="one_row_per_patient_dose"):
        InfusionLog.validate(frame, lazy=True)


def test_ddpcr_positives_cannot_exceed_accepted() -> None:
    """More positive droplets than accepted droplets breaks positives_not_above_accepted."""
    frame = pl.DataFrame(
        [
            {
                "sample_id": "S1",
                "well": "A01",
                "target": "S02",
                "channel": "FAM",
                "target_role": None,
                "sample_type": "unknown",
                "status": "OK",
                "accepted_droplets": 100,
                "positives": 101,
                "negatives": 0,
                "concentration_copies_per_ul": None,
                "droplet_volume_nl": 0.85,
                "merged_wells": None,
                "is_merged": False,
                "software": "qx_manager",
                "source_row": 2,
            }
        ],
        schema_overrides={
            "target_role": pl.String,
            "concentration_copies_per_ul": pl.Float64,
            "merged_wells": pl.String,
        },
    )
    with pytest.raises(ValidationFailedError) as err:
        validate_frame(frame, DdpcrWells, file_name="plate.csv")
    assert err.value.problems[0].row == 2
    assert "positives not above accepted" in err.value.problems[0].message


def test_valid_chimerism_row_passes() -> None:
    """A quantified ddPCR row with its CI and LoD passes unchanged, and so does a not-detected
    row that carries no value and its LoD as the upper bound (never a bare 0)."""
    quantified = _chimerism()
    assert Chimerism.validate(quantified).select(quantified.columns).equals(quantified)
    not_detected = _chimerism(
        result_status="not_detected", pct_ink=None, pct_ink_raw=None, ci_low=None, ci_high=0.03
    )
    validated = Chimerism.validate(not_detected)
    assert validated.select("result_status", "pct_ink", "ci_high").rows() == [
        ("not_detected", None, 0.03)
    ]


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"result_status": "not_detected"}, "quantified_results_have_a_value"),
        ({"pct_ink": None}, "quantified_results_have_a_value"),
        ({"ci_low": 0.5}, "ci_brackets_the_value"),
        ({"method": "PCR"}, "isin"),
        ({"pct_ink": 120.0, "ci_high": 130.0}, "less_than_or_equal_to"),
        ({"genome_model": "four_genome"}, "isin"),
        ({"pct_hsct_donor": 101.0}, "less_than_or_equal_to"),
        ({"pct_ink_purity_corrected": 104.0}, "less_than_or_equal_to"),
        ({"purity_pct": 0.0}, "greater_than"),
    ],
)
def test_chimerism_rules_reject_bad_rows(overrides: dict[str, object], rule: str) -> None:
    """Each Chimerism rule has a row that breaks it; a bare 0 for not_detected is refused."""
    with pytest.raises(pa_errors.SchemaErrors, match=rule):
        Chimerism.validate(_chimerism(**overrides), lazy=True)


def test_one_current_row_per_sample_and_method() -> None:
    """Two current rows for the same sample and method break the rule; a superseded copy does not."""
    two = pl.concat([_chimerism(), _chimerism(source_sha256="b" * 64)])
    with pytest.raises(pa_errors.SchemaErrors, match="one_current_row_per_sample_and_method"):
        Chimerism.validate(two, lazy=True)
    repeat = "repeat measurement: plate.csv is current (later)"
    Chimerism.validate(
        pl.concat(
            [
                _chimerism(),
                _chimerism(source_sha256="b" * 64, superseded=True, superseded_reason=repeat),
            ]
        )
    )


def test_isin_problem_lists_plain_vocabulary_values() -> None:
    """A value outside an enum-backed domain is explained with the plain values, not reprs."""
    with pytest.raises(ValidationFailedError) as caught:
        validate_frame(_chimerism(method="PCR"), Chimerism, file_name="chimerism")
    messages = [p.message for p in caught.value.problems if p.column == "method"]
    assert messages == ["'method' must be one of ['STR', 'qPCR', 'ddPCR']"]
