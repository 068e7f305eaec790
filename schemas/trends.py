"""Contracts for the derived tables: trends, cellular kinetics, alerts and their delivery log.

``Trends`` and ``Kinetics`` carry the warehouse lineage columns (``source_sha256``,
``pipeline_version``, ``ingested_at``). For a trend row they are the chimerism row's source file and
ingestion time; for a kinetics row ``source_sha256`` is the SHA-256 of the sorted source hashes of
every trend and infusion row of the patient and ``ingested_at`` the latest of their ingestion times,
so the tables stay reproducible (no clock).
"""

from __future__ import annotations

import json

import pandera.polars as pa
import polars as pl

from schemas.base import UTC, StrictModel
from schemas.vocab import (
    AlertRuleId,
    AlertState,
    CdScale,
    ChangeDirection,
    DeliveryState,
    GenomeModel,
    KineticsScope,
    Method,
    QcVerdict,
    ResultStatus,
    Severity,
)
from schemas.warehouse import Lineage

_HAS_VALUE = [ResultStatus.QUANTIFIED, ResultStatus.BELOW_LOQ]


def _is_json_object(text: str | None) -> bool:
    """Return whether ``text`` parses as a JSON object or array (null passes)."""
    if text is None:
        return True
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict | list)


class Trends(Lineage):
    """One row per patient x specimen x sample: the headline result and its change from the last one.

    Curves never mix specimens: ``previous_sample_id`` is the patient's previous sample of the same
    ``specimen`` (``schemas.vocab.Specimen``; a missing specimen is ``PB``). ``change_pct`` is in
    percentage points; ``critical_difference_pct`` is the change the pair must exceed
    (``cd_scale`` says how it was derived, see :mod:`chimera.critical_difference`: each result's CI
    turned into an SE with ``ci_quantile`` and combined with the method's between-run variation).
    ``pct_recipient`` / ``pct_hsct_donor`` (with CIs) and ``genome_model`` come from the chimerism
    row when it carries them (null otherwise).
    """

    patient_id: str
    specimen: str
    sample_id: str
    collected_at: UTC = pa.Field(nullable=True)  # type: ignore[valid-type]
    study_day: pl.Int32 = pa.Field(nullable=True)
    days_since_dose1: pl.Float64 = pa.Field(nullable=True)
    days_since_last_infusion: pl.Float64 = pa.Field(nullable=True, ge=0)
    dose_number: pl.Int32 = pa.Field(nullable=True, ge=1)
    method: str = pa.Field(isin=list(Method))
    pct_ink: float = pa.Field(nullable=True, ge=0, le=100)
    ci_low: float = pa.Field(nullable=True, ge=0, le=100)
    ci_high: float = pa.Field(nullable=True, ge=0, le=100)
    ci_quantile: float = pa.Field(nullable=True, gt=0)
    lod_pct: float = pa.Field(nullable=True, ge=0)
    loq_pct: float = pa.Field(nullable=True, ge=0)
    result_status: str = pa.Field(isin=list(ResultStatus))
    qc_verdict: str = pa.Field(isin=list(QcVerdict))
    genome_model: str = pa.Field(nullable=True, isin=list(GenomeModel))
    pct_recipient: float = pa.Field(nullable=True, ge=0, le=100)
    pct_recipient_ci_low: float = pa.Field(nullable=True, ge=0, le=100)
    pct_recipient_ci_high: float = pa.Field(nullable=True, ge=0, le=100)
    pct_hsct_donor: float = pa.Field(nullable=True, ge=0, le=100)
    pct_hsct_donor_ci_low: float = pa.Field(nullable=True, ge=0, le=100)
    pct_hsct_donor_ci_high: float = pa.Field(nullable=True, ge=0, le=100)
    ink_cells_per_ul: float = pa.Field(nullable=True, ge=0)
    previous_sample_id: str = pa.Field(nullable=True)
    change_pct: pl.Float64 = pa.Field(nullable=True)
    change_ln: pl.Float64 = pa.Field(nullable=True)
    critical_difference_pct: pl.Float64 = pa.Field(nullable=True, ge=0)
    critical_difference_ln: pl.Float64 = pa.Field(nullable=True, ge=0)
    cd_scale: str = pa.Field(nullable=True, isin=list(CdScale))
    change_direction: str = pa.Field(nullable=True, isin=list(ChangeDirection))
    significant_change: bool = pa.Field(nullable=True)

    @pa.dataframe_check
    @classmethod
    def one_row_per_patient_specimen_and_sample(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Check that a sample appears once per patient and specimen (headline, not superseded)."""
        return data.lazyframe.select(
            pl.struct("patient_id", "specimen", "sample_id").is_duplicated().not_()
        )

    @pa.dataframe_check
    @classmethod
    def dose_number_is_null_only_before_dose_1(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Time since the last infusion exists exactly when a dose precedes the sample."""
        return data.lazyframe.select(
            pl.col("dose_number").is_null() == pl.col("days_since_last_infusion").is_null()
        )

    @pa.dataframe_check
    @classmethod
    def significance_needs_a_previous_sample(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Check that a change is judged only against a previous sample."""
        return data.lazyframe.select(
            pl.col("significant_change").is_null() | pl.col("previous_sample_id").is_not_null()
        )

    @pa.dataframe_check
    @classmethod
    def quantified_results_have_a_value(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """``quantified`` and ``below_loq`` rows carry a value; the other states never a bare 0."""
        has_value = pl.col("result_status").is_in(_HAS_VALUE)
        return data.lazyframe.select(has_value == pl.col("pct_ink").is_not_null())


class Kinetics(Lineage):
    """Non-compartmental cellular kinetics per patient x specimen: per dose interval and overall.

    A specimen's curve holds only its own results (a CD56+ value never enters the whole-blood
    Cmax). ``dose_cells`` is the infusion log's cell count and ``cmax_pct_per_1e9_cells`` the
    dose-normalised Cmax (``cmax_pct`` x 1e9 / ``dose_cells``). Times are days: ``tmax_days``/``tlast_days`` after the interval start (after dose 1 for the
    ``overall`` row); interval bounds are days since dose 1. ``predose_pct`` is C_pre,n (last
    sample before dose n within the pre-dose window); ``trough_pct`` is the last sample before the
    next dose. ``accumulation_ratio_trough`` = C_pre,n / C_pre,2 and ``accumulation_ratio_auc`` =
    AUC_n / AUC_1 (methods.md 8).
    """

    patient_id: str
    specimen: str
    scope: str = pa.Field(isin=list(KineticsScope))
    dose_number: pl.Int32 = pa.Field(nullable=True, ge=1)
    dose_cells: pl.Float64 = pa.Field(nullable=True, gt=0)
    interval_start_day: pl.Float64
    interval_end_day: pl.Float64 = pa.Field(nullable=True)
    n_samples: pl.Int32 = pa.Field(ge=0)
    n_quantified: pl.Int32 = pa.Field(ge=0)
    cmax_pct: pl.Float64 = pa.Field(nullable=True, ge=0, le=100)
    cmax_pct_per_1e9_cells: pl.Float64 = pa.Field(nullable=True, ge=0)
    cmax_sample_id: str = pa.Field(nullable=True)
    tmax_days: pl.Float64 = pa.Field(nullable=True, ge=0)
    predose_pct: pl.Float64 = pa.Field(nullable=True, ge=0, le=100)
    predose_status: str = pa.Field(nullable=True, isin=list(ResultStatus))
    predose_sample_id: str = pa.Field(nullable=True)
    trough_pct: pl.Float64 = pa.Field(nullable=True, ge=0, le=100)
    trough_status: str = pa.Field(nullable=True, isin=list(ResultStatus))
    trough_sample_id: str = pa.Field(nullable=True)
    auc_pct_days: pl.Float64 = pa.Field(nullable=True, ge=0)
    auc_0_28_pct_days: pl.Float64 = pa.Field(nullable=True, ge=0)
    tlast_days: pl.Float64 = pa.Field(nullable=True, ge=0)
    lambda_z_per_day: pl.Float64 = pa.Field(nullable=True)
    half_life_days: pl.Float64 = pa.Field(nullable=True, gt=0)
    half_life_r2: pl.Float64 = pa.Field(nullable=True)
    half_life_points: str = pa.Field(nullable=True)
    half_life_reason: str = pa.Field(nullable=True)
    accumulation_ratio_trough: pl.Float64 = pa.Field(nullable=True, ge=0)
    accumulation_ratio_auc: pl.Float64 = pa.Field(nullable=True, ge=0)
    blq_imputations: str = pa.Field(nullable=True)

    @pa.dataframe_check
    @classmethod
    def one_row_per_patient_specimen_scope_and_dose(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Check that a patient's specimen has one row per dose interval and one overall row."""
        return data.lazyframe.select(
            pl.struct("patient_id", "specimen", "scope", "dose_number").is_duplicated().not_()
        )

    @pa.dataframe_check
    @classmethod
    def dose_rows_have_a_dose_number(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """``dose`` rows name their dose; the ``overall`` row does not."""
        return data.lazyframe.select(
            (pl.col("scope") == KineticsScope.DOSE) == pl.col("dose_number").is_not_null()
        )

    @pa.dataframe_check
    @classmethod
    def missing_half_life_has_a_reason(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Every empty half-life says why."""
        return data.lazyframe.select(
            pl.col("half_life_days").is_not_null() | pl.col("half_life_reason").is_not_null()
        )

    @pa.dataframe_check
    @classmethod
    def quantified_samples_do_not_exceed_samples(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """``n_quantified`` <= ``n_samples``."""
        return data.lazyframe.select(pl.col("n_quantified") <= pl.col("n_samples"))


class CohortKinetics(StrictModel):
    """Median and range of each kinetic parameter per specimen and dose across patients."""

    specimen: str
    scope: str = pa.Field(isin=list(KineticsScope))
    dose_number: pl.Int32 = pa.Field(nullable=True, ge=1)
    parameter: str
    n_patients: pl.Int32 = pa.Field(ge=0)
    n_values: pl.Int32 = pa.Field(ge=0)
    median: pl.Float64 = pa.Field(nullable=True)
    min: pl.Float64 = pa.Field(nullable=True)
    max: pl.Float64 = pa.Field(nullable=True)

    @pa.dataframe_check
    @classmethod
    def range_brackets_the_median(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Check min <= median <= max when values exist."""
        return data.lazyframe.select(
            pl.col("median").is_null()
            | ((pl.col("min") <= pl.col("median")) & (pl.col("median") <= pl.col("max")))
        )

    @pa.dataframe_check
    @classmethod
    def values_come_from_patients(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """``n_values`` <= ``n_patients``."""
        return data.lazyframe.select(pl.col("n_values") <= pl.col("n_patients"))


class Alerts(StrictModel):
    """Alert states: one row per alert (rule x patient x specimen), updated on every run.

    ``alert_id`` hashes rule, patient, specimen and ``episode_key`` (the first episode), so an
    alert keeps its id while later episodes add evidence.
    """

    alert_id: str = pa.Field(str_length={"min_value": 16, "max_value": 16}, unique=True)
    rule: str = pa.Field(isin=list(AlertRuleId))
    rule_version: str
    severity: str = pa.Field(isin=list(Severity))
    patient_id: str
    specimen: str
    episode_key: str
    message: str
    evidence: str
    parameters: str
    state: str = pa.Field(isin=list(AlertState))
    first_detected_at: UTC  # type: ignore[valid-type]
    last_evaluated_at: UTC  # type: ignore[valid-type]
    resolved_at: UTC = pa.Field(nullable=True)  # type: ignore[valid-type]

    @pa.dataframe_check
    @classmethod
    def resolved_alerts_have_resolved_at(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """``resolved_at`` is set exactly for resolved alerts."""
        return data.lazyframe.select(
            (pl.col("state") == AlertState.RESOLVED) == pl.col("resolved_at").is_not_null()
        )

    @pa.dataframe_check
    @classmethod
    def evidence_and_parameters_are_json(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """``evidence`` and ``parameters`` are JSON objects or arrays."""
        return data.lazyframe.select(
            pl.col("evidence").map_elements(_is_json_object, return_dtype=pl.Boolean)
            & pl.col("parameters").map_elements(_is_json_object, return_dtype=pl.Boolean)
        )

    @pa.dataframe_check
    @classmethod
    def first_detection_precedes_evaluation(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """first_detected_at <= last_evaluated_at."""
        return data.lazyframe.select(pl.col("first_detected_at") <= pl.col("last_evaluated_at"))


class AlertDeliveries(StrictModel):
    """Delivery log: one row per alert x channel; failed rows are retried, sent rows never resent."""

    alert_id: str = pa.Field(str_length={"min_value": 16, "max_value": 16})
    channel: str
    state: str = pa.Field(isin=list(DeliveryState))
    attempts: pl.Int32 = pa.Field(ge=0)
    last_attempt_at: UTC = pa.Field(nullable=True)  # type: ignore[valid-type]
    last_error: str = pa.Field(nullable=True)

    @pa.dataframe_check
    @classmethod
    def one_row_per_alert_and_channel(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Check that an alert is logged once per channel."""
        return data.lazyframe.select(pl.struct("alert_id", "channel").is_duplicated().not_())

    @pa.dataframe_check
    @classmethod
    def attempted_rows_have_an_attempt_time(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Rows with attempts carry the time of the last one; sent rows have attempts >= 1."""
        return data.lazyframe.select(
            ((pl.col("attempts") > 0) == pl.col("last_attempt_at").is_not_null())
            & ((pl.col("state") != DeliveryState.SENT) | (pl.col("attempts") >= 1))
        )
