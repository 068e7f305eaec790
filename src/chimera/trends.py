"""Trend table: each patient's headline results per specimen in time order, with the change from the last one.

A patient's specimens are separate curves (``schemas.vocab.Specimen``; a missing specimen is whole
blood, ``PB``): a CD56+ sorted value is never compared with a whole-blood one. The change from the
previous reportable (non-failed) sample of the same patient and specimen is judged with the
critical difference of :func:`chimera.critical_difference.judge_change` (methods.md 9.1). Failed rows and rows
that cannot be placed in time are listed but never compared.
"""

from __future__ import annotations

import polars as pl

from chimera import __version__
from chimera.alerts.config import CriticalDifferenceSettings
from chimera.critical_difference import CHANGE_COLUMNS, RESULT_FIELDS, compare_results
from schemas.base import polars_schema
from schemas.trends import Trends
from schemas.vocab import ResultStatus, Specimen

TREND_COLUMNS = polars_schema(Trends)
"""Column order and dtypes of the trend table (from ``schemas.trends.Trends``)."""

SERIES_KEY = ("patient_id", "specimen")
"""One curve per patient and specimen."""

OPTIONAL_CHIMERISM_COLUMNS = (
    "ci_quantile",
    "genome_model",
    "pct_recipient",
    "pct_recipient_ci_low",
    "pct_recipient_ci_high",
    "pct_hsct_donor",
    "pct_hsct_donor_ci_low",
    "pct_hsct_donor_ci_high",
)
"""Chimerism columns the trend table carries when present (null otherwise)."""

_DAY_US = 86_400_000_000.0


def _days_between(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    return (later - earlier).dt.total_microseconds().cast(pl.Float64) / _DAY_US


def specimen_expr(column: str = "specimen") -> pl.Expr:
    """Return the specimen with a missing value read as whole blood (``Specimen.PB``)."""
    return pl.coalesce(pl.col(column), pl.lit(Specimen.PB.value)).alias(column)


def _with_optional_columns(chimerism: pl.LazyFrame) -> pl.LazyFrame:
    names = set(chimerism.collect_schema().names())
    missing = [c for c in OPTIONAL_CHIMERISM_COLUMNS if c not in names]
    return chimerism.with_columns(pl.lit(None, dtype=TREND_COLUMNS[c]).alias(c) for c in missing)


def _placed(chimerism: pl.LazyFrame, infusions: pl.LazyFrame) -> pl.LazyFrame:
    """Headline rows with their time ``_t``, dose number and days since dose 1 / the last dose."""
    doses = infusions.select("patient_id", "dose_number", "infused_at")
    first_dose = doses.group_by("patient_id").agg(pl.col("infused_at").min().alias("_dose1_at"))
    rows = (
        _with_optional_columns(chimerism)
        .filter(pl.col("is_headline") & pl.col("superseded").not_())
        .with_columns(specimen_expr())
        .with_row_index("_row")
        .join(first_dose, on="patient_id", how="left")
        .with_columns(pl.col("study_day").cast(pl.Int32))
        .with_columns(
            pl.coalesce(
                pl.col("collected_at"),
                pl.col("_dose1_at") + pl.duration(days=pl.col("study_day")),
            ).alias("_t"),
            pl.coalesce(
                pl.col("study_day"),
                (pl.col("collected_at").dt.date() - pl.col("_dose1_at").dt.date()).dt.total_days(),
            )
            .cast(pl.Int32)
            .alias("study_day"),
        )
    )
    last_dose = (
        rows.select("_row", "patient_id", "_t")
        .join(doses, on="patient_id", how="inner")
        .filter(pl.col("infused_at") <= pl.col("_t"))
        .group_by("_row")
        .agg(
            pl.col("dose_number").sort_by("infused_at").last().alias("_dose_number"),
            pl.col("infused_at").max().alias("_last_infused_at"),
        )
    )
    return rows.join(last_dose, on="_row", how="left").with_columns(
        _days_between(pl.col("_t"), pl.col("_dose1_at")).alias("days_since_dose1"),
        _days_between(pl.col("_t"), pl.col("_last_infused_at")).alias("days_since_last_infusion"),
        pl.col("_dose_number").cast(pl.Int32).alias("dose_number"),
    )


def build_trend_table(
    chimerism: pl.LazyFrame, infusions: pl.LazyFrame, *, cd: CriticalDifferenceSettings
) -> pl.LazyFrame:
    """Return one row per patient x specimen x sample with dose context and the change from the last one.

    Only headline, not superseded ``Chimerism`` rows are used. ``dose_number`` is the last dose
    given at or before the sample (null before dose 1), ``days_since_last_infusion`` the time since
    it and ``days_since_dose1`` the time since the first infusion (study day 0), all in days from
    the timestamps. A row without ``collected_at`` is placed at ``dose-1 time + study_day``; a
    missing ``study_day`` is the calendar-day difference (UTC) from dose 1. Collects the rows to
    compare (the critical difference is per-pair arithmetic).

    Parameters
    ----------
    chimerism
        Rows of ``schemas.warehouse.Chimerism`` (plus, when present, ``genome_model`` and the
        ``pct_recipient`` / ``pct_hsct_donor`` columns with their CIs).
    infusions
        Rows of ``schemas.warehouse.Infusions``.
    cd
        Critical-difference settings (``Settings.alerts.critical_difference``).

    Returns
    -------
    pl.LazyFrame
        Rows of ``schemas.trends.Trends``, ordered by patient, specimen and time.
    """
    order = [*SERIES_KEY, "_t", "sample_id"]
    placed = _placed(chimerism, infusions).sort(order, nulls_last=True)
    comparable = pl.col("_t").is_not_null() & (pl.col("result_status") != ResultStatus.FAILED)
    prev_cols = ["sample_id", *RESULT_FIELDS]
    shifted = (
        placed.filter(comparable)
        .with_columns(
            pl.col(name).shift(1).over(SERIES_KEY).alias(f"prev_{name}") for name in prev_cols
        )
        .collect()
    )
    compared = compare_results(shifted, "prev_", "", cd=cd).select(
        "_row", pl.col("prev_sample_id").alias("previous_sample_id"), *CHANGE_COLUMNS
    )
    return (
        placed.join(compared.lazy(), on="_row", how="left")
        .with_columns(pl.lit(__version__).alias("pipeline_version"))
        .sort(order, nulls_last=True)
        .select(pl.col(name).cast(dtype) for name, dtype in TREND_COLUMNS.items())
    )
