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

from schemas import fields
from schemas.base import UTC, StrictModel, rows_checked_alone
from schemas.vocab import (
    AlertRuleId,
    AlertState,
    CdScale,
    ChangeDirection,
    DeliveryState,
    KineticsScope,
    Method,
    ResultStatus,
    Severity,
)
from schemas.warehouse import Lineage

_HAS_VALUE = [ResultStatus.QUANTIFIED, ResultStatus.BELOW_LOQ]
_SPECIMEN = (
    "Specimen or sorted fraction (schemas.vocab.Specimen: PB, PB CD56+, PB CD3+, PB CD33+, BM; "
    "unknown values verbatim; missing = PB): each is its own curve."
)
_PATIENT = "Pseudonymised patient id (product lot or series id for product / dilution rows)."


def _is_json_object(text: str | None) -> bool:
    """Return whether ``text`` parses as a JSON object or array (null passes)."""
    if text is None:
        return True
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict | list)


@rows_checked_alone
class Trends(Lineage):
    """One row per patient x specimen x sample: the headline result and its change from the last one.

    Curves never mix specimens: ``previous_sample_id`` is the patient's previous sample of the same
    ``specimen``. ``change_pct`` is in percentage points; ``critical_difference_pct`` is the change
    the pair must exceed (``cd_scale`` says how it was derived, see
    :mod:`chimera.critical_difference`: each result's CI turned into an SE with ``ci_quantile``
    and combined with the method's between-run variation). ``genome_model`` and the
    ``pct_recipient`` / ``pct_hsct_donor`` columns come from the chimerism row when it carries them.
    """

    patient_id: str = pa.Field(description=_PATIENT)
    specimen: str = pa.Field(description=_SPECIMEN)
    sample_id: str = pa.Field(description="Sample id from the manifest (pseudonymised).")
    collected_at: UTC = pa.Field(description="When the sample was collected.", nullable=True)  # type: ignore[valid-type]
    study_day: pl.Int32 = fields.measure(
        "Calendar days from the date of the first infusion (day 0).", "d", minimum=None
    )
    days_since_dose1: pl.Float64 = fields.measure(
        "Days from the first infusion to collection.", "d", minimum=None
    )
    days_since_last_infusion: pl.Float64 = fields.measure(
        "Days from the latest preceding dose to collection.", "d"
    )
    dose_number: pl.Int32 = pa.Field(
        description="Dose number (1 = first infusion).", nullable=True, ge=1
    )
    method: str = pa.Field(description="Assay family: STR, qPCR or ddPCR.", isin=list(Method))
    pct_ink: float = fields.pct_ink()
    ci_low: float = fields.ci_bound("Lower")
    ci_high: float = fields.ci_bound("Upper")
    ci_quantile: float = pa.Field(
        description="Quantile the CI was built with (t for few loci/replicates; null = 1.96).",
        nullable=True,
        gt=0,
    )
    lod_pct: float = fields.sample_lod()
    loq_pct: float = fields.sample_loq()
    result_status: str = fields.result_status()
    qc_verdict: str = fields.qc_verdict()
    genome_model: str = fields.genome_model()
    pct_recipient: float = fields.share("% of the patient's own cells (2 genomes: 100 - pct_ink).")
    pct_recipient_ci_low: float = fields.share("Lower 95 % bound of pct_recipient.")
    pct_recipient_ci_high: float = fields.share("Upper 95 % bound of pct_recipient.")
    pct_hsct_donor: float = fields.share("% of the prior HSCT donor's cells (3 genomes).")
    pct_hsct_donor_ci_low: float = fields.share("Lower 95 % bound of pct_hsct_donor.")
    pct_hsct_donor_ci_high: float = fields.share("Upper 95 % bound of pct_hsct_donor.")
    ink_cells_per_ul: float = fields.measure(
        "iNK cells per µL blood = pct_ink/100 × WBC (or lymphocytes) (methods.md 6).", "cells/µL"
    )
    previous_sample_id: str = pa.Field(
        description="The previous headline sample of the same specimen the change is measured against.",
        nullable=True,
    )
    change_pct: pl.Float64 = pa.Field(
        description="Change from the previous sample.", metadata={"unit": "% points"}, nullable=True
    )
    change_ln: pl.Float64 = pa.Field(
        description="ln(pct_ink / previous pct_ink).", metadata={"unit": "ln"}, nullable=True
    )
    critical_difference_pct: pl.Float64 = fields.measure(
        "Change the pair must exceed to be significant (methods.md 9.1).", "% points"
    )
    critical_difference_ln: pl.Float64 = fields.measure(
        "Critical difference on the ln scale (PCR pairs).", "ln"
    )
    cd_scale: str = pa.Field(
        description="How the critical difference was derived: additive, multiplicative or detection.",
        nullable=True,
        isin=list(CdScale),
    )
    change_direction: str = pa.Field(
        description="rise, fall or none.", nullable=True, isin=list(ChangeDirection)
    )
    significant_change: bool = pa.Field(
        description="The change exceeds the critical difference.", nullable=True
    )

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


@rows_checked_alone
class Kinetics(Lineage):
    """Non-compartmental cellular kinetics per patient x specimen: per dose interval and overall.

    A specimen's curve holds only its own results (a CD56+ value never enters the whole-blood
    Cmax). ``cmax_pct_per_1e9_cells`` is the dose-normalised Cmax. Times are days: ``tmax_days``/``tlast_days`` after the interval start (after dose 1 for the
    ``overall`` row); interval bounds are days since dose 1. ``predose_pct`` is C_pre,n (last
    sample before dose n within the pre-dose window); ``trough_pct`` is the last sample before the
    next dose. ``accumulation_ratio_trough`` = C_pre,n / C_pre,2 and ``accumulation_ratio_auc`` =
    AUC_n / AUC_1 (methods.md 8).
    """

    patient_id: str = pa.Field(description=_PATIENT)
    specimen: str = pa.Field(description=_SPECIMEN)
    scope: str = pa.Field(
        description="dose (one dose interval) or overall (whole follow-up).",
        isin=list(KineticsScope),
    )
    dose_number: pl.Int32 = pa.Field(
        description="Dose number (1 = first infusion).", nullable=True, ge=1
    )
    dose_cells: pl.Float64 = fields.measure(
        "Cells infused with the dose (infusion log).", "cells", strict=True
    )
    interval_start_day: pl.Float64 = pa.Field(
        description="Interval start, days since dose 1.", metadata={"unit": "d"}
    )
    interval_end_day: pl.Float64 = fields.measure(
        "Interval end, days since dose 1 (null = end of follow-up).", "d", minimum=None
    )
    n_samples: pl.Int32 = pa.Field(description="Samples in the interval.", ge=0)
    n_quantified: pl.Int32 = pa.Field(description="Quantified samples in the interval.", ge=0)
    cmax_pct: pl.Float64 = fields.percent("Highest quantified % iNK in the interval (Cmax).")
    cmax_pct_per_1e9_cells: pl.Float64 = fields.measure(
        "Dose-normalised Cmax: cmax_pct x 1e9 / dose_cells.", "% per 1e9 cells"
    )
    cmax_sample_id: str = pa.Field(description="Sample of Cmax.", nullable=True)
    tmax_days: pl.Float64 = fields.measure("Time of Cmax after the interval start (Tmax).", "d")
    predose_pct: pl.Float64 = fields.percent(
        "C_pre,n: last sample before the dose within the pre-dose window."
    )
    predose_status: str = pa.Field(
        description="result_status of the pre-dose sample.",
        nullable=True,
        isin=list(ResultStatus),
    )
    predose_sample_id: str = pa.Field(description="The pre-dose sample.", nullable=True)
    trough_pct: pl.Float64 = fields.percent("Last sample before the next dose.")
    trough_status: str = pa.Field(
        description="result_status of the trough sample.",
        nullable=True,
        isin=list(ResultStatus),
    )
    trough_sample_id: str = pa.Field(description="The trough sample.", nullable=True)
    auc_pct_days: pl.Float64 = fields.measure(
        "AUC over the interval, lin-up/log-down (methods.md 8).", "%·d"
    )
    auc_0_28_pct_days: pl.Float64 = pa.Field(
        description="AUC from dose 1 to day 28.", metadata={"unit": "%·d"}, nullable=True, ge=0
    )
    tlast_days: pl.Float64 = fields.measure("Last time with a quantified result (Tlast).", "d")
    lambda_z_per_day: pl.Float64 = fields.measure(
        "Terminal elimination rate constant λz.", "1/d", minimum=None
    )
    half_life_days: pl.Float64 = pa.Field(
        description="Terminal half-life ln 2 / λz.", metadata={"unit": "d"}, nullable=True, gt=0
    )
    half_life_r2: pl.Float64 = pa.Field(description="Adjusted R² of the λz fit.", nullable=True)
    half_life_points: str = pa.Field(description="Samples used in the λz fit.", nullable=True)
    half_life_reason: str = pa.Field(description="Why no half-life was estimated.", nullable=True)
    accumulation_ratio_trough: pl.Float64 = pa.Field(
        description="C_pre,n / C_pre,2.", metadata={"unit": "ratio"}, nullable=True, ge=0
    )
    accumulation_ratio_auc: pl.Float64 = pa.Field(
        description="AUC_n / AUC_1.", metadata={"unit": "ratio"}, nullable=True, ge=0
    )
    blq_imputations: str = pa.Field(
        description="Below-LoQ points and how each was imputed (PKNCA rules).", nullable=True
    )

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

    specimen: str = pa.Field(description=_SPECIMEN)
    scope: str = pa.Field(
        description="dose (one dose interval) or overall (whole follow-up).",
        isin=list(KineticsScope),
    )
    dose_number: pl.Int32 = pa.Field(
        description="Dose number (1 = first infusion).", nullable=True, ge=1
    )
    parameter: str = pa.Field(description="Kinetic parameter name (a kinetics column).")
    n_patients: pl.Int32 = pa.Field(description="Patients with this dose interval.", ge=0)
    n_values: pl.Int32 = pa.Field(description="Patients with a value for the parameter.", ge=0)
    median: pl.Float64 = pa.Field(
        description="Median across patients (the parameter's unit).", nullable=True
    )
    min: pl.Float64 = pa.Field(description="Minimum across patients.", nullable=True)
    max: pl.Float64 = pa.Field(description="Maximum across patients.", nullable=True)

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

    alert_id: str = pa.Field(
        description="Stable id of the alert (rule, patient, specimen, first episode).",
        str_length={"min_value": 16, "max_value": 16},
        unique=True,
    )
    rule: str = pa.Field(
        description="Alert rule id (schemas.vocab.AlertRuleId).", isin=list(AlertRuleId)
    )
    rule_version: str = pa.Field(description="Version of the rule's parameters.")
    severity: str = pa.Field(description="info, warning or critical.", isin=list(Severity))
    patient_id: str = pa.Field(description=_PATIENT)
    specimen: str = pa.Field(description=_SPECIMEN)
    episode_key: str = pa.Field(
        description="The first episode of the rule for this patient and specimen."
    )
    message: str = pa.Field(description="Plain-language alert text (ids and values only).")
    evidence: str = pa.Field(
        description="JSON: what was compared with which error model; the results (values, CIs, "
        "LoDs, states, QC) and each pair with the critical difference used."
    )
    parameters: str = pa.Field(description="JSON: the rule parameters used.")
    state: str = pa.Field(description="open, ongoing or resolved.", isin=list(AlertState))
    first_detected_at: UTC = pa.Field(description="When the alert first fired.")  # type: ignore[valid-type]
    last_evaluated_at: UTC = pa.Field(description="Last evaluation of the rule.")  # type: ignore[valid-type]
    resolved_at: UTC = pa.Field(description="When the condition stopped holding.", nullable=True)  # type: ignore[valid-type]

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

    alert_id: str = pa.Field(
        description="Stable id of the alert episode.", str_length={"min_value": 16, "max_value": 16}
    )
    channel: str = pa.Field(description="Delivery channel name.")
    state: str = pa.Field(description="pending, sent or failed.", isin=list(DeliveryState))
    attempts: pl.Int32 = pa.Field(description="Delivery attempts so far.", ge=0)
    last_attempt_at: UTC = pa.Field(description="Time of the last attempt.", nullable=True)  # type: ignore[valid-type]
    last_error: str = pa.Field(description="Error of the last failed attempt.", nullable=True)

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
