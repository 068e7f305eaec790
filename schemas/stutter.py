"""Contract of the per-locus stutter ratios behind every STR stutter correction (methods.md 2.6).

``StutterRatioEstimates`` is what :func:`chimera.calculate.stutter_ratios.estimate_stutter_ratios`
returns; ``StutterRatios`` is the same frame as a warehouse table (``stutter_ratios``), with
lineage.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from schemas.base import StrictModel
from schemas.vocab import StutterDirection, StutterSource
from schemas.warehouse import Lineage


class StutterRatioEstimates(StrictModel):
    """One row per panel x marker x direction: the stutter ratio used and where it came from.

    ``ratio`` = stutter area (or height) / parent area, 0-1. ``ratio_sd`` is the SD of the
    single-source observations (null below 2). ``source_sample_ids`` lists the profiles that
    were measured (comma-separated); ``reference`` names the setting or publication otherwise.
    ``panel`` is the comma-separated sorted marker list of the profiles' kit.
    """

    panel: str = pa.Field(
        description="The kit: comma-separated sorted marker list of its profiles."
    )
    marker: str = pa.Field(description="STR locus.")
    direction: str = pa.Field(
        description="back (n-1) or forward (n+1) stutter.", isin=list(StutterDirection)
    )
    signal: str = pa.Field(
        description="Peak signal the ratio is measured on (area or height).",
        isin=["area", "height"],
    )
    ratio: float = pa.Field(
        description="Stutter / parent signal, 0-1 (methods.md 2.6).", ge=0, le=1
    )
    ratio_sd: float = pa.Field(
        description="SD of the single-source observations (null below 2).", nullable=True, ge=0
    )
    n_observations: pl.Int32 = pa.Field(
        description="Single-source stutter observations behind a measured ratio.", ge=0
    )
    source: str = pa.Field(
        description="measured, configured or published.", isin=list(StutterSource)
    )
    source_sample_ids: str = pa.Field(
        description="Single-source samples the ratio was measured on (comma-separated).",
        nullable=True,
    )
    reference: str = pa.Field(
        description="Setting or publication a ratio not measured comes from.", nullable=True
    )

    @pa.dataframe_check
    @classmethod
    def measured_rows_have_observations(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A ``measured`` ratio names the profiles it was measured on."""
        measured = pl.col("source") == StutterSource.MEASURED.value
        return data.lazyframe.select(
            ~measured | ((pl.col("n_observations") > 0) & pl.col("source_sample_ids").is_not_null())
        )

    @pa.dataframe_check
    @classmethod
    def one_ratio_per_panel_marker_direction(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Each panel, marker and direction has one ratio."""
        return data.lazyframe.select(
            pl.struct("panel", "marker", "direction").is_duplicated().not_()
        )


class StutterRatios(StutterRatioEstimates, Lineage):
    """Warehouse table ``stutter_ratios``: the estimates with lineage on every row."""
