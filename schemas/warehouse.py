"""Contracts for warehouse tables (validated before every Parquet write).

Every row carries lineage: ``source_sha256`` of the file it came from (or of the files, for
derived tables, in ``source_sha256``), ``pipeline_version`` and a UTC timestamp.
"""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from schemas import fields
from schemas.base import UTC, StrictModel, rows_checked_alone, rows_compared_within
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

    source_sha256: str = pa.Field(
        description="SHA-256 of the source file the row came from (derived tables: of the sorted source hashes behind it).",
        str_length={"min_value": 64, "max_value": 64},
    )
    pipeline_version: str = pa.Field(description="Chimera version that wrote the row.")
    ingested_at: UTC = pa.Field(description="When the row's source was ingested.")  # type: ignore[valid-type]


@rows_compared_within("sample_id", "patient_id")
class Samples(Manifest, Lineage):
    """Registered samples: manifest rows with lineage; the latest row for a sample id wins."""


@rows_compared_within("patient_id")
class Infusions(InfusionLog, Lineage):
    """Registered doses: infusion log rows with lineage; the latest row for a dose wins."""


class SourcedLineage(Lineage):
    """Lineage of raw assay rows: the name of the file they came from and the run it holds."""

    source_file: str = pa.Field(description="Name of the source file as received.")
    run_id: Optional[str] = pa.Field(  # noqa: UP045 (pandera reads Optional)
        description="Run or plate identity from the file's own header (experiment name, barcode, run end time; GeneMapper run name); null when the file carries none.",
        nullable=True,
    )


@rows_checked_alone
class StrObservations(StrPeaks, SourcedLineage):
    """Parsed STR peak rows of every accepted GeneMapper export."""


@rows_checked_alone
class QpcrObservations(QpcrWells, SourcedLineage):
    """Parsed qPCR wells of every accepted QuantStudio/StepOne/CFX export."""


@rows_checked_alone
class DdpcrObservations(DdpcrWells, SourcedLineage):
    """Parsed ddPCR wells of every accepted QuantaSoft/QX Manager export."""


class AssayLimits(Lineage):
    """LoD/LoQ per method computed from a dilution series of the product (``dilution_standard``).

    ``levels`` is JSON: per nominal level, replicates, detections, mean estimate and CV.
    ``applied`` marks the series whose limits the method uses (the most conservative).
    """

    method: str = pa.Field(description="Assay family: STR, qPCR or ddPCR.", isin=list(Method))
    series_id: str = pa.Field(description="Dilution series id.")
    lod_pct: float = fields.percent(
        "Limit of detection from the dilution series (CLSI EP17-A2).", upper=None
    )
    loq_pct: float = fields.percent("Limit of quantification from the dilution series.", upper=None)
    n_levels: pl.Int32 = pa.Field(description="Nominal levels in the series.", ge=0)
    levels: str = pa.Field(description="JSON: per nominal level n, detected, mean and CV.")
    applied: bool = pa.Field(description="The method uses this series' limits.")
    parameters_sha256: Optional[str] = pa.Field(  # noqa: UP045 (pandera reads Optional)
        description="SHA-256 of the settings that computed the row (table parameters holds them); null before it was recorded.",
        nullable=True,
        str_length={"min_value": 64, "max_value": 64},
    )


@rows_checked_alone
class Chimerism(Lineage):
    """One row per sample x method: the headline % iNK and how far to trust it.

    ``pct_ink`` is 0-100 (clamped; ``pct_ink_raw`` keeps the unclamped estimate) and is null only
    for ``not_detected`` and ``failed``. ``lod_pct``/``loq_pct`` are the sample's own limits.
    """

    patient_id: str = pa.Field(
        description="Pseudonymised patient id (product lot or series id for product / dilution rows)."
    )
    sample_id: str = pa.Field(description="Sample id from the manifest (pseudonymised).")
    collected_at: UTC = pa.Field(description="When the sample was collected.", nullable=True)  # type: ignore[valid-type]
    study_day: pl.Int32 = fields.measure(
        "Calendar days from the date of the first infusion (day 0).", "d", minimum=None
    )
    specimen: str = pa.Field(
        description="Specimen or sorted fraction (PB, PB CD56+, PB CD3+, PB CD33+, BM; unknown values verbatim).",
        nullable=True,
    )
    method: str = pa.Field(description="Assay family: STR, qPCR or ddPCR.", isin=list(Method))
    pct_ink: float = fields.pct_ink()
    pct_ink_raw: float = pa.Field(
        description="Unclamped % iNK estimate.", metadata={"unit": "%"}, nullable=True
    )
    ci_low: float = fields.ci_bound("Lower")
    ci_high: float = fields.ci_bound("Upper")
    ci_quantile: float = pa.Field(
        description="Quantile the 95 % CI was built with (t(0.975, dof) or 1.96); null = 1.96.",
        nullable=True,
        gt=0,
    )
    # X | None: the three-genome columns may be absent (results written before they existed).
    genome_model: str | None = fields.genome_model()
    pct_recipient: float | None = fields.share(
        "% of the patient's own cells (2 genomes: 100 - pct_ink)."
    )
    pct_recipient_ci_low: float | None = fields.share("Lower 95 % bound of pct_recipient.")
    pct_recipient_ci_high: float | None = fields.share("Upper 95 % bound of pct_recipient.")
    pct_hsct_donor: float | None = fields.share("% of the prior HSCT donor's cells (3 genomes).")
    pct_hsct_donor_ci_low: float | None = fields.share("Lower 95 % bound of pct_hsct_donor.")
    pct_hsct_donor_ci_high: float | None = fields.share("Upper 95 % bound of pct_hsct_donor.")
    lod_pct: float = fields.sample_lod()
    loq_pct: float = fields.sample_loq()
    result_status: str = fields.result_status()
    qc_verdict: str = fields.qc_verdict()
    qc_reasons: str = pa.Field(
        description="Why QC is not a plain pass, and what a reader must know (repeat measurement, missing cell count), in plain language.",
        nullable=True,
    )
    n_informative: pl.Int32 = pa.Field(
        description="Informative loci (STR) or markers/wells (PCR) used.", nullable=True, ge=0
    )
    clamped: bool = pa.Field(description="The raw estimate fell outside 0-100 % and was clamped.")
    ink_cells_per_ul: float = fields.measure(
        "iNK cells per µL blood = pct_ink/100 × the specimen's cell count: WBC (else lymphocytes) for whole blood, nk_per_ul for PB CD56+; null for other specimens or without the count (methods.md 6).",
        "cells/µL",
    )
    purity_pct: float | None = fields.percent(
        "Measured purity of a sorted fraction, from the manifest.", positive=True
    )
    pct_ink_purity_corrected: float | None = fields.percent(
        "PB CD56+ only: pct_ink / (purity_pct / 100), clamped to 100 (the impure cells are taken as non-iNK; methods.md 6); null for other specimens or without purity_pct."
    )
    is_headline: bool = pa.Field(
        description="This method's result is the sample's headline value (methods.md 7)."
    )
    headline_rule: str = pa.Field(
        description="The reconciliation rule that chose the headline.", nullable=True
    )
    superseded: bool = pa.Field(
        description="Not the current row of its sample x method (see superseded_reason): a re-export of the same run replaced its file, or it is the other row of a repeat measurement."
    )
    superseded_reason: str | None = pa.Field(
        description="Why a superseded row is not current (which file replaced it, or which repeat measurement is current); null for current rows.",
        nullable=True,
    )
    source_file: str = pa.Field(description="Name of the source file as received.")
    parameters_sha256: Optional[str] = pa.Field(  # noqa: UP045 (pandera reads Optional)
        description="SHA-256 of the settings that computed the row (table parameters holds them); null before it was recorded.",
        nullable=True,
        str_length={"min_value": 64, "max_value": 64},
    )

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


@rows_checked_alone
class Markers(Lineage):
    """Per-locus / per-marker / per-well detail behind each chimerism row."""

    patient_id: str = pa.Field(
        description="Pseudonymised patient id (product lot or series id for product / dilution rows)."
    )
    sample_id: str = pa.Field(description="Sample id from the manifest (pseudonymised).")
    method: str = pa.Field(description="Assay family: STR, qPCR or ddPCR.", isin=list(Method))
    marker: str = pa.Field(description="STR locus, qPCR/ddPCR target or marker name.")
    replicate: str = pa.Field(
        description="Well or replicate id; pooled for the combined row.", nullable=True
    )
    sharing: str = pa.Field(
        description="STR allele-sharing configuration (1/221/211/121/0/fallback) or PCR marker class.",
        nullable=True,
    )
    donor_alleles: str = pa.Field(description="iNK product alleles at the locus.", nullable=True)
    recipient_alleles: str = pa.Field(
        description="Patient alleles at the locus (three genomes: from recipient_germline).",
        nullable=True,
    )
    hsct_donor_alleles: str | None = pa.Field(
        description="Prior HSCT donor alleles at the locus (three-genome patients).", nullable=True
    )
    signal_ink: float = pa.Field(
        description="Signal attributed to iNK (peak area/height sum or copies).", nullable=True
    )
    signal_total: float = pa.Field(description="Total signal at the locus/marker.", nullable=True)
    ct: float = fields.measure("Cycle threshold; null = no amplification.", "cycles", minimum=None)
    positives: pl.Int64 = pa.Field(
        description="Positive droplets.", metadata={"unit": "droplets"}, nullable=True
    )
    accepted_droplets: pl.Int64 = pa.Field(
        description="Accepted droplets in the well.", metadata={"unit": "droplets"}, nullable=True
    )
    copies_per_ul: float = fields.measure(
        "Poisson-corrected concentration.", "copies/µL", minimum=None
    )
    pct_ink: float = pa.Field(
        description="Per-locus / per-well % iNK estimate.", metadata={"unit": "%"}, nullable=True
    )
    pct_ink_control_normalised: float | None = fields.measure(
        "ddPCR pooled marker row: % iNK scaled by the expected / observed marker copies of the product control, when that control reads off.",
        "%",
        minimum=None,
    )
    pct_recipient: float | None = fields.measure(
        "Per-locus / per-marker % of the patient's own cells (three genomes).", "%", minimum=None
    )
    pct_hsct_donor: float | None = fields.measure(
        "Per-locus / per-marker % of the prior HSCT donor's cells (three genomes).",
        "%",
        minimum=None,
    )
    stutter_ratio: float | None = pa.Field(
        description="STR back-stutter ratio (stutter / parent signal) subtracted at the locus; null when uncorrected.",
        nullable=True,
        ge=0,
    )
    included: bool = pa.Field(description="The locus/well entered the headline estimate.")
    exclusion_reason: str = pa.Field(description="Why the locus/well was left out.", nullable=True)
    superseded: bool = pa.Field(
        description="The chimerism row this detail belongs to is superseded (see chimerism.superseded_reason)."
    )
    source_file: str = pa.Field(description="Name of the source file as received.")
    parameters_sha256: Optional[str] = pa.Field(  # noqa: UP045 (pandera reads Optional)
        description="SHA-256 of the settings that computed the row (table parameters holds them); null before it was recorded.",
        nullable=True,
        str_length={"min_value": 64, "max_value": 64},
    )


@rows_checked_alone
class IngestLog(StrictModel):
    """The ledger: one row per thing that happened to a file (append-only)."""

    source_sha256: str = pa.Field(
        description="SHA-256 of the source file the row came from (derived tables: of the sorted source hashes behind it).",
        str_length={"min_value": 64, "max_value": 64},
    )
    file_name: str = pa.Field(description="File name as received.")
    size_bytes: pl.Int64 = pa.Field(description="File size.", metadata={"unit": "bytes"}, ge=0)
    detected_format: str = pa.Field(description="Format detected from the content.", nullable=True)
    status: str = pa.Field(
        description="The file's fate: accepted, quarantined, duplicate or waiting.",
        isin=list(FileStatus),
    )
    reason: str = pa.Field(
        description="Why the file is waiting or quarantined (plain language).", nullable=True
    )
    rows: pl.Int64 = pa.Field(description="Rows the file contributed.", ge=0)
    supersedes: str = pa.Field(
        description="Name(s) of the earlier file(s) of the same run (a re-export or re-analysis) this file replaces; the reason says why.",
        nullable=True,
    )
    flow_run_id: str = pa.Field(
        description="Prefect flow run that processed the file.", nullable=True
    )
    pipeline_version: str = pa.Field(description="Chimera version that wrote the row.")
    logged_at: UTC = pa.Field(description="When the event was logged.")  # type: ignore[valid-type]


class Parameters(StrictModel):
    """Every settings snapshot that computed derived rows, by hash (``parameters_sha256``)."""

    parameters_sha256: str = pa.Field(
        description="SHA-256 of settings_json (the id derived rows name).",
        str_length={"min_value": 64, "max_value": 64},
    )
    settings_json: str = pa.Field(
        description="The computation settings as canonical JSON (no paths, no secrets)."
    )
    pipeline_version: str = pa.Field(description="Chimera version that first used them.")
    recorded_at: UTC = pa.Field(description="When they were first used.")  # type: ignore[valid-type]


class InboxState(StrictModel):
    """The inbox poller's last look at each waiting file (settling bookkeeping, not data)."""

    inbox: str = pa.Field(description="The inbox folder (absolute path).")
    path: str = pa.Field(description="The file's path relative to the inbox.")
    size_bytes: pl.Int64 = pa.Field(
        description="Size at the last look.", metadata={"unit": "bytes"}, ge=0
    )
    mtime_ns: pl.Int64 = pa.Field(
        description="Modification time at the last look.", metadata={"unit": "ns since 1970"}
    )
    unchanged_since: UTC = pa.Field(description="Since when size and mtime stayed the same.")  # type: ignore[valid-type]
    checked_at: UTC = pa.Field(description="When the poller last looked.")  # type: ignore[valid-type]
