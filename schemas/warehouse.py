"""Contracts for warehouse tables (validated before every Parquet write).

Every row carries lineage: ``source_sha256`` of the file it came from (or of the files, for
derived tables, in ``source_sha256``), ``pipeline_version`` and a UTC timestamp.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from schemas.base import UTC, StrictModel
from schemas.inputs import DdpcrWells, InfusionLog, Manifest, QpcrWells, StrPeaks
from schemas.vocab import FileStatus, Method, QcVerdict, ResultStatus

METHODS = list(Method)
"""Alias of ``list(Method)`` kept for ``schemas.trends``; new code uses ``schemas.vocab``."""
RESULT_STATUSES = list(ResultStatus)
"""Alias of ``list(ResultStatus)`` kept for ``schemas.trends``."""
QC_VERDICTS = list(QcVerdict)
"""Alias of ``list(QcVerdict)`` kept for ``schemas.trends``."""


class Lineage(StrictModel):
    """Columns every warehouse row carries."""

    source_sha256: str = pa.Field(str_length={"min_value": 64, "max_value": 64})
    pipeline_version: str
    ingested_at: UTC  # type: ignore[valid-type]


class Samples(Manifest, Lineage):
    """Registered samples: manifest rows with lineage; the latest row for a sample id wins."""


class Infusions(InfusionLog, Lineage):
    """Registered doses: infusion log rows with lineage; the latest row for a dose wins."""


class SourcedLineage(Lineage):
    """Lineage of raw assay rows, which also keep the name of the file they came from."""

    source_file: str


class StrObservations(StrPeaks, SourcedLineage):
    """Parsed STR peak rows of every accepted GeneMapper export."""


class QpcrObservations(QpcrWells, SourcedLineage):
    """Parsed qPCR wells of every accepted QuantStudio/StepOne/CFX export."""


class DdpcrObservations(DdpcrWells, SourcedLineage):
    """Parsed ddPCR wells of every accepted QuantaSoft/QX Manager export."""


class AssayLimits(Lineage):
    """LoD/LoQ per method computed from a dilution series of the product (``dilution_standard``).

    ``levels`` is JSON: per nominal level, replicates, detections, mean estimate and CV.
    ``applied`` marks the series whose limits the method uses (the most conservative).
    """

    method: str = pa.Field(isin=list(Method))
    series_id: str
    lod_pct: float = pa.Field(nullable=True, ge=0)
    loq_pct: float = pa.Field(nullable=True, ge=0)
    n_levels: pl.Int32 = pa.Field(ge=0)
    levels: str
    applied: bool


class Chimerism(Lineage):
    """One row per sample x method: the headline % iNK and how far to trust it.

    ``pct_ink`` is 0-100 (clamped; ``pct_ink_raw`` keeps the unclamped estimate) and is null only
    for ``not_detected`` and ``failed``. ``lod_pct``/``loq_pct`` are the sample's own limits.
    """

    patient_id: str
    sample_id: str
    collected_at: UTC = pa.Field(nullable=True)  # type: ignore[valid-type]
    study_day: pl.Int32 = pa.Field(nullable=True)
    specimen: str = pa.Field(nullable=True)
    method: str = pa.Field(isin=list(Method))
    pct_ink: float = pa.Field(nullable=True, ge=0, le=100)
    pct_ink_raw: float = pa.Field(nullable=True)
    ci_low: float = pa.Field(nullable=True, ge=0, le=100)
    ci_high: float = pa.Field(nullable=True, ge=0, le=100)
    ci_quantile: float = pa.Field(nullable=True, gt=0)
    lod_pct: float = pa.Field(nullable=True, ge=0)
    loq_pct: float = pa.Field(nullable=True, ge=0)
    result_status: str = pa.Field(isin=list(ResultStatus))
    qc_verdict: str = pa.Field(isin=list(QcVerdict))
    qc_reasons: str = pa.Field(nullable=True)
    n_informative: pl.Int32 = pa.Field(nullable=True, ge=0)
    clamped: bool
    ink_cells_per_ul: float = pa.Field(nullable=True, ge=0)
    is_headline: bool
    headline_rule: str = pa.Field(nullable=True)
    superseded: bool
    source_file: str

    @pa.dataframe_check
    @classmethod
    def quantified_results_have_a_value(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """``quantified`` and ``below_loq`` rows carry a value; the other states never a bare 0."""
        has_value = pl.col("result_status").is_in([ResultStatus.QUANTIFIED, ResultStatus.BELOW_LOQ])
        return data.lazyframe.select(has_value == pl.col("pct_ink").is_not_null())

    @pa.dataframe_check
    @classmethod
    def ci_brackets_the_value(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """ci_low <= pct_ink <= ci_high when all three exist (small float tolerance)."""
        eps = 1e-9
        return data.lazyframe.select(
            pl.col("pct_ink").is_null()
            | pl.col("ci_low").is_null()
            | pl.col("ci_high").is_null()
            | (
                (pl.col("ci_low") <= pl.col("pct_ink") + eps)
                & (pl.col("pct_ink") <= pl.col("ci_high") + eps)
            )
        )

    @pa.dataframe_check
    @classmethod
    def one_current_row_per_sample_and_method(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Among rows not superseded, a sample has one row per method."""
        return data.lazyframe.select(
            pl.col("superseded")
            | pl.struct("sample_id", "method", "superseded").is_duplicated().not_()
        )


class Markers(Lineage):
    """Per-locus / per-marker / per-well detail behind each chimerism row."""

    patient_id: str
    sample_id: str
    method: str = pa.Field(isin=list(Method))
    marker: str
    replicate: str = pa.Field(nullable=True)
    sharing: str = pa.Field(nullable=True)
    donor_alleles: str = pa.Field(nullable=True)
    recipient_alleles: str = pa.Field(nullable=True)
    signal_ink: float = pa.Field(nullable=True)
    signal_total: float = pa.Field(nullable=True)
    ct: float = pa.Field(nullable=True)
    positives: pl.Int64 = pa.Field(nullable=True)
    accepted_droplets: pl.Int64 = pa.Field(nullable=True)
    copies_per_ul: float = pa.Field(nullable=True)
    pct_ink: float = pa.Field(nullable=True)
    included: bool
    exclusion_reason: str = pa.Field(nullable=True)
    superseded: bool
    source_file: str


class IngestLog(StrictModel):
    """The ledger: one row per thing that happened to a file (append-only)."""

    source_sha256: str = pa.Field(str_length={"min_value": 64, "max_value": 64})
    file_name: str
    size_bytes: pl.Int64 = pa.Field(ge=0)
    detected_format: str = pa.Field(nullable=True)
    status: str = pa.Field(isin=list(FileStatus))
    reason: str = pa.Field(nullable=True)
    rows: pl.Int64 = pa.Field(ge=0)
    supersedes: str = pa.Field(nullable=True)
    flow_run_id: str = pa.Field(nullable=True)
    pipeline_version: str
    logged_at: UTC  # type: ignore[valid-type]
