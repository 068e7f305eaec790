"""Contracts for parsed inputs: what every parser must return, whatever the instrument."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Optional

import pandera.polars as pa
import polars as pl

from schemas import fields
from schemas.base import UTC, StrictModel, rows_checked_alone
from schemas.vocab import Role

EARLIEST_DATE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
"""No sample or dose of this trial predates 2000: an earlier date is a typo (issue 13)."""
MAX_CELLS_PER_UL = 1e7
"""More cells per µL than any blood or marrow count (hyperleukocytosis ~1e6/µL)."""

_DIRECT_IDENTIFIER = re.compile(
    r"(patient |subject |first |last |given |family |full |middle |maiden |sur)?names?"
    r"|(patient )?initials"
    r"|dob|d o b|date of birth|birth ?date|birthday"
    r"|mrn|medical record( number| no| nr)?|hospital (number|no)|nhs (number|no)|ssn"
    r"|social security( number| no)?|insurance (number|no)|national id"
    r"|(home |postal |street )?address|street|post ?code|zip( code)?"
    r"|(tele)?phone( number| no)?|mobile( number)?|cell ?phone|tel"
    r"|e ?mail( address)?"
)
"""Column names of direct identifiers (issue 13): names, birth dates, record numbers, contacts."""


def direct_identifier_columns(names: Sequence[str]) -> list[str]:
    """Return the column names that look like direct identifiers, as written.

    Examples
    --------
    >>> direct_identifier_columns(["sample_id", "Patient Name", "DOB", "E-mail", "Sample Name"])
    ['Patient Name', 'DOB', 'E-mail']
    """
    found = []
    for name in names:
        key = re.sub(r"[\s_\-.:/]+", " ", name.replace("\ufeff", "").strip().casefold()).strip()
        if key and _DIRECT_IDENTIFIER.fullmatch(key):
            found.append(name.strip())
    return found


class Manifest(StrictModel):
    """Sample manifest: who each sample id belongs to and what it is.

    ``role = donor_reference``/``calibrator`` rows hold the iNK product; their ``patient_id``
    is the product lot and ``cell_bank`` the master cell bank (null = the trial's one bank).
    ``specimen`` is normalised to :class:`schemas.vocab.Specimen` where recognised, else kept
    as written; ``specimen_raw`` keeps the manifest's own spelling. Counts are cells/µL;
    ``purity_pct`` is the measured purity of a sorted fraction (0-100 %).
    """

    sample_id: str = pa.Field(
        description="Sample id from the manifest (pseudonymised).",
        str_length={"min_value": 1},
        unique=True,
    )
    patient_id: str = pa.Field(
        description="Pseudonymised patient id (product lot or series id for product / dilution rows).",
        str_length={"min_value": 1},
    )
    role: str = pa.Field(
        description="What the sample is: donor_reference, recipient_baseline, post_dose, ... (schemas.vocab.Role).",
        isin=list(Role),
    )
    collected_at: UTC = pa.Field(  # type: ignore[valid-type]
        description="When the sample was collected.", nullable=True, ge=EARLIEST_DATE
    )
    specimen: str = pa.Field(
        description="Specimen or sorted fraction (PB, PB CD56+, PB CD3+, PB CD33+, BM; unknown values verbatim).",
        nullable=True,
    )
    specimen_raw: Optional[str] = pa.Field(  # noqa: UP045 (pandera reads Optional)
        description="The specimen as the manifest wrote it, before normalisation.", nullable=True
    )
    wbc_per_ul: Optional[float] = fields.measure(  # noqa: UP045 (pandera reads Optional)
        "White blood cell count of the sample.", "cells/µL", maximum=MAX_CELLS_PER_UL
    )
    lymphocytes_per_ul: Optional[float] = fields.measure(  # noqa: UP045 (pandera reads Optional)
        "Lymphocyte count of the sample.", "cells/µL", maximum=MAX_CELLS_PER_UL
    )
    nk_per_ul: Optional[float] = fields.measure(  # noqa: UP045 (pandera reads Optional)
        "NK cell count of the sample (denominator of a CD56+ fraction).",
        "cells/µL",
        maximum=MAX_CELLS_PER_UL,
    )
    purity_pct: Optional[float] = fields.percent(  # noqa: UP045 (pandera reads Optional)
        "Measured purity of a sorted fraction.", positive=True
    )
    product_lot: Optional[str] = pa.Field(  # noqa: UP045 (pandera reads Optional)
        description="iNK product lot (master cell bank lot) given or received.", nullable=True
    )
    cell_bank: Optional[str] = pa.Field(  # noqa: UP045 (pandera reads Optional)
        description="Master cell bank of a product row (null = the trial's one bank).",
        nullable=True,
    )
    nominal_pct: Optional[float] = fields.percent("Known % iNK of a dilution standard.")  # noqa: UP045 (pandera reads Optional)

    @pa.dataframe_check
    @classmethod
    def dilution_standards_have_a_nominal_level(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A dilution standard (a known % iNK mixture) must say its nominal % iNK."""
        frame = data.lazyframe
        if "nominal_pct" not in frame.collect_schema().names():
            return frame.select(pl.col("role") != Role.DILUTION_STANDARD)
        return frame.select(
            (pl.col("role") != Role.DILUTION_STANDARD) | pl.col("nominal_pct").is_not_null()
        )

    @pa.dataframe_check
    @classmethod
    def post_dose_samples_have_collection_time(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A post-dose sample without collected_at cannot be placed on the study timeline."""
        return data.lazyframe.select(
            (pl.col("role") != Role.POST_DOSE) | pl.col("collected_at").is_not_null()
        )

    @pa.dataframe_check
    @classmethod
    def post_dose_samples_not_before_baseline(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A post-dose sample cannot be collected before its patient's earliest baseline."""
        baseline = (
            pl.col("collected_at")
            .filter(pl.col("role") == Role.RECIPIENT_BASELINE)
            .min()
            .over("patient_id")
        )
        return data.lazyframe.select(
            (pl.col("role") != Role.POST_DOSE)
            | pl.col("collected_at").is_null()
            | baseline.is_null()
            | (pl.col("collected_at") >= baseline)
        )


class InfusionLog(StrictModel):
    """One row per administered dose; ``cells`` is the dose in cells."""

    patient_id: str = pa.Field(
        description="Pseudonymised patient id (product lot or series id for product / dilution rows).",
        str_length={"min_value": 1},
    )
    dose_number: pl.Int32 = pa.Field(description="Dose number (1 = first infusion).", ge=1)
    infused_at: UTC = pa.Field(description="When the dose was infused.", ge=EARLIEST_DATE)  # type: ignore[valid-type]
    cells: float = pa.Field(
        description="Cells infused in the dose (dose level).",
        metadata={"unit": "cells"},
        gt=0,
        nullable=True,
    )
    product_lot: Optional[str] = pa.Field(  # noqa: UP045 (pandera reads Optional)
        description="iNK product lot (master cell bank lot) given or received.", nullable=True
    )

    @pa.dataframe_check
    @classmethod
    def one_row_per_patient_dose(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A dose number appears once per patient."""
        return data.lazyframe.select(pl.struct("patient_id", "dose_number").is_duplicated().not_())

    @pa.dataframe_check
    @classmethod
    def doses_in_time_order(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A patient's dose n+1 is infused after dose n (dose and time ranks agree)."""
        return data.lazyframe.select(
            pl.col("dose_number").rank("min").over("patient_id")
            == pl.col("infused_at").rank("min").over("patient_id")
        )


@rows_checked_alone
class StrPeaks(StrictModel):
    """GeneMapper peaks, one row per called or uncalled peak (sizing or genotypes table).

    ``allele`` is the call as text (``9.3``, ``OL``, ``X``, ``?``); null when outside every bin.
    """

    sample_id: str = pa.Field(
        description="Sample id from the manifest (pseudonymised).", str_length={"min_value": 1}
    )
    marker: str = pa.Field(
        description="STR locus, qPCR/ddPCR target or marker name.", nullable=True
    )
    allele: str = pa.Field(
        description="Allele call as text (9.3, OL, X, ?); null outside every bin.", nullable=True
    )
    size_bp: float = pa.Field(
        description="Peak size.", metadata={"unit": "bp"}, nullable=True, ge=0
    )
    height_rfu: float = pa.Field(
        description="Peak height.", metadata={"unit": "RFU"}, nullable=True, ge=0
    )
    area_rfu: float = pa.Field(
        description="Peak area.", metadata={"unit": "RFU"}, nullable=True, ge=0
    )
    dye: str = pa.Field(description="Dye colour of the peak.", nullable=True)
    source_row: pl.Int32 = pa.Field(description="1-based row number in the source export.", ge=1)


@rows_checked_alone
class QpcrWells(StrictModel):
    """qPCR wells, one row per well x target. ``ct`` null = no amplification (Undetermined/NaN)."""

    sample_id: str = pa.Field(
        description="Sample id from the manifest (pseudonymised).", nullable=True
    )
    well: str = pa.Field(description="Plate well (A01 ...).", str_length={"min_value": 1})
    target: str = pa.Field(description="Target (assay) name as exported.", nullable=True)
    task: str = pa.Field(
        description="Well task: unknown, standard, ntc, positive_control, negative_control, other.",
        isin=["unknown", "standard", "ntc", "positive_control", "negative_control", "other"],
    )
    reporter: str = pa.Field(description="Reporter dye.", nullable=True)
    ct: float = fields.measure("Cycle threshold; null = no amplification.", "cycles", maximum=100)
    omitted: bool = pa.Field(description="The instrument user omitted the well.")
    quantity: float = pa.Field(
        description="Quantity the instrument reported (standard curve).", nullable=True
    )
    slope: float = fields.measure(
        "Standard-curve slope the instrument reported.", "cycles/log10", minimum=None
    )
    intercept: float = fields.measure(
        "Standard-curve intercept the instrument reported.", "cycles", minimum=None
    )
    r_squared: float = pa.Field(
        description="Standard-curve R² the instrument reported.", nullable=True
    )
    efficiency_pct: float = fields.measure(
        "Amplification efficiency the instrument reported.", "%", minimum=None
    )
    source_row: pl.Int32 = pa.Field(description="1-based row number in the source export.", ge=1)


@rows_checked_alone
class DdpcrWells(StrictModel):
    """ddPCR wells, one row per well x target, counts as exported (λ is recomputed from them).

    ``target_role`` is ``reference`` for the reference gene, ``marker`` otherwise, null when the
    export does not say. ``merged_wells`` lists the member wells of a QuantaSoft merged row.
    """

    sample_id: str = pa.Field(
        description="Sample id from the manifest (pseudonymised).", nullable=True
    )
    well: str = pa.Field(description="Plate well (A01 ...).", str_length={"min_value": 1})
    target: str = pa.Field(description="Target (assay) name as exported.", nullable=True)
    channel: str = pa.Field(description="Detection channel (FAM, HEX/VIC ...).", nullable=True)
    target_role: str = pa.Field(
        description="reference for the reference gene, marker otherwise; null when the export does not say.",
        nullable=True,
    )
    sample_type: str = pa.Field(description="Sample type as exported.", nullable=True)
    status: str = pa.Field(description="Well status as exported.", nullable=True)
    accepted_droplets: pl.Int64 = fields.measure("Accepted droplets in the well.", "droplets")
    positives: pl.Int64 = pa.Field(
        description="Positive droplets.", metadata={"unit": "droplets"}, nullable=True, ge=0
    )
    negatives: pl.Int64 = pa.Field(
        description="Negative droplets.", metadata={"unit": "droplets"}, nullable=True, ge=0
    )
    concentration_copies_per_ul: float = fields.measure(
        "Concentration the software reported.", "copies/µL"
    )
    droplet_volume_nl: float = pa.Field(
        description="Droplet volume used for the Poisson estimate.", metadata={"unit": "nL"}, gt=0
    )
    merged_wells: str = pa.Field(
        description="Member wells of a QuantaSoft merged row.", nullable=True
    )
    is_merged: bool = pa.Field(description="The row is a QuantaSoft merged (M01) row.")
    software: str = pa.Field(
        description="Exporting software: quantasoft, quantasoft_old, qx_manager, other.",
        isin=["quantasoft", "quantasoft_old", "qx_manager", "other"],
    )
    source_row: pl.Int32 = pa.Field(description="1-based row number in the source export.", ge=1)

    @pa.dataframe_check
    @classmethod
    def positives_not_above_accepted(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Positive droplets cannot exceed accepted droplets."""
        return data.lazyframe.select(
            pl.col("positives").is_null()
            | pl.col("accepted_droplets").is_null()
            | (pl.col("positives") <= pl.col("accepted_droplets"))
        )

    @pa.dataframe_check
    @classmethod
    def positives_and_negatives_add_up_to_accepted(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Every accepted droplet is positive or negative (formats.md 9-10)."""
        counts = ("positives", "negatives", "accepted_droplets")
        return data.lazyframe.select(
            pl.any_horizontal(pl.col(c).is_null() for c in counts)
            | (pl.col("positives") + pl.col("negatives") == pl.col("accepted_droplets"))
        )
