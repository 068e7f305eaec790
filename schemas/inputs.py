"""Contracts for parsed inputs: what every parser must return, whatever the instrument."""

from __future__ import annotations

from typing import Optional

import pandera.polars as pa
import polars as pl

from schemas.base import UTC, StrictModel
from schemas.vocab import Role

ROLES = [str(role) for role in Role]
"""Manifest roles: every member of :class:`schemas.vocab.Role`."""


class Manifest(StrictModel):
    """Sample manifest: who each sample id belongs to and what it is.

    ``role = donor_reference`` rows hold the iNK product; their ``patient_id`` is the product lot.
    """

    sample_id: str = pa.Field(str_length={"min_value": 1}, unique=True)
    patient_id: str = pa.Field(str_length={"min_value": 1})
    role: str = pa.Field(isin=ROLES)
    collected_at: UTC = pa.Field(nullable=True)  # type: ignore[valid-type]
    specimen: str = pa.Field(nullable=True)
    wbc_per_ul: Optional[float] = pa.Field(nullable=True, ge=0)  # noqa: UP045 (pandera reads Optional)
    lymphocytes_per_ul: Optional[float] = pa.Field(nullable=True, ge=0)  # noqa: UP045
    product_lot: Optional[str] = pa.Field(nullable=True)  # noqa: UP045
    nominal_pct: Optional[float] = pa.Field(nullable=True, ge=0, le=100)  # noqa: UP045

    @pa.dataframe_check
    @classmethod
    def dilution_standards_have_a_nominal_level(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A dilution standard (a known % iNK mixture) must say its nominal % iNK."""
        frame = data.lazyframe
        if "nominal_pct" not in frame.collect_schema().names():
            return frame.select(pl.col("role") != "dilution_standard")
        return frame.select(
            (pl.col("role") != "dilution_standard") | pl.col("nominal_pct").is_not_null()
        )

    @pa.dataframe_check
    @classmethod
    def post_dose_samples_have_collection_time(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A post-dose sample without collected_at cannot be placed on the study timeline."""
        return data.lazyframe.select(
            (pl.col("role") != "post_dose") | pl.col("collected_at").is_not_null()
        )


class InfusionLog(StrictModel):
    """One row per administered dose."""

    patient_id: str = pa.Field(str_length={"min_value": 1})
    dose_number: pl.Int32 = pa.Field(ge=1)
    infused_at: UTC  # type: ignore[valid-type]
    cells: float = pa.Field(gt=0, nullable=True)
    product_lot: Optional[str] = pa.Field(nullable=True)  # noqa: UP045

    @pa.dataframe_check
    @classmethod
    def one_row_per_patient_dose(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A dose number appears once per patient."""
        return data.lazyframe.select(pl.struct("patient_id", "dose_number").is_duplicated().not_())


class StrPeaks(StrictModel):
    """GeneMapper peaks, one row per called or uncalled peak (sizing or genotypes table).

    ``allele`` is the call as text (``9.3``, ``OL``, ``X``, ``?``); null when outside every bin.
    """

    sample_id: str = pa.Field(str_length={"min_value": 1})
    marker: str = pa.Field(nullable=True)
    allele: str = pa.Field(nullable=True)
    size_bp: float = pa.Field(nullable=True, ge=0)
    height_rfu: float = pa.Field(nullable=True, ge=0)
    area_rfu: float = pa.Field(nullable=True, ge=0)
    dye: str = pa.Field(nullable=True)
    source_row: pl.Int32 = pa.Field(ge=1)


class QpcrWells(StrictModel):
    """qPCR wells, one row per well x target. ``ct`` null = no amplification (Undetermined/NaN)."""

    sample_id: str = pa.Field(nullable=True)
    well: str = pa.Field(str_length={"min_value": 1})
    target: str = pa.Field(nullable=True)
    task: str = pa.Field(
        isin=["unknown", "standard", "ntc", "positive_control", "negative_control", "other"]
    )
    reporter: str = pa.Field(nullable=True)
    ct: float = pa.Field(nullable=True, ge=0, le=100)
    omitted: bool
    quantity: float = pa.Field(nullable=True)
    slope: float = pa.Field(nullable=True)
    intercept: float = pa.Field(nullable=True)
    r_squared: float = pa.Field(nullable=True)
    efficiency_pct: float = pa.Field(nullable=True)
    source_row: pl.Int32 = pa.Field(ge=1)


class DdpcrWells(StrictModel):
    """ddPCR wells, one row per well x target, counts as exported (λ is recomputed from them).

    ``target_role`` is ``reference`` for the reference gene, ``marker`` otherwise, null when the
    export does not say. ``merged_wells`` lists the member wells of a QuantaSoft merged row.
    """

    sample_id: str = pa.Field(nullable=True)
    well: str = pa.Field(str_length={"min_value": 1})
    target: str = pa.Field(nullable=True)
    channel: str = pa.Field(nullable=True)
    target_role: str = pa.Field(nullable=True)
    sample_type: str = pa.Field(nullable=True)
    status: str = pa.Field(nullable=True)
    accepted_droplets: pl.Int64 = pa.Field(nullable=True, ge=0)
    positives: pl.Int64 = pa.Field(nullable=True, ge=0)
    negatives: pl.Int64 = pa.Field(nullable=True, ge=0)
    concentration_copies_per_ul: float = pa.Field(nullable=True, ge=0)
    droplet_volume_nl: float = pa.Field(gt=0)
    merged_wells: str = pa.Field(nullable=True)
    is_merged: bool
    software: str = pa.Field(isin=["quantasoft", "quantasoft_old", "qx_manager", "other"])
    source_row: pl.Int32 = pa.Field(ge=1)

    @pa.dataframe_check
    @classmethod
    def positives_not_above_accepted(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Positive droplets cannot exceed accepted droplets."""
        return data.lazyframe.select(
            pl.col("positives").is_null()
            | pl.col("accepted_droplets").is_null()
            | (pl.col("positives") <= pl.col("accepted_droplets"))
        )
