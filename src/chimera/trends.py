"""Trend table: each patient's headline results in time order, with the change from the last one.

Change significance follows methods.md 9.1 (variance of a difference of two independent results):

* **additive** (any STR in the pair): significant when ``|x2 - x1| > z * sqrt(u1^2 + u2^2)``;
  ``u`` = the larger CI half-width / z (the larger side, because CIs are clamped at 0 %).
* **multiplicative** (qPCR/ddPCR on both sides, both values > 0): significant when
  ``|ln(x2 / x1)| > z * sqrt(se1^2 + se2^2)``; ``se`` = the larger half-width of the CI on the ln
  scale / z (the lower side is skipped when ``ci_low`` is 0). Falls back to additive when an
  ln-scale SE cannot be formed.
* **detection** (a ``not_detected`` side; a declared rule, no CI exists for "nothing"):
  ``not_detected -> value`` is a significant rise only when the new ``ci_low`` exceeds the previous
  sample's LoD; ``value -> not_detected`` is a significant fall only when the previous ``ci_low``
  exceeds the new sample's LoD; ``not_detected -> not_detected`` is no change. The LoD used is
  ``lod_pct``, else ``ci_high`` (a not-detected row's upper bound is its LoD).

``below_loq`` rows keep their estimate and CI (methods.md 4) and are compared numerically. Failed
rows and rows that cannot be placed in time are listed but never compared; the previous sample of a
row is the last earlier reportable (non-failed) one.
"""

from __future__ import annotations

import polars as pl

from chimera import __version__
from chimera.calculate.limits import Method, ResultStatus

Z_95 = 1.96
"""Two-sided 95 % normal quantile used for CIs and critical differences."""

PCR_METHODS = (Method.QPCR.value, Method.DDPCR.value)
_DAY_US = 86_400_000_000.0
_HAS_VALUE = (ResultStatus.QUANTIFIED.value, ResultStatus.BELOW_LOQ.value)

TREND_COLUMNS: dict[str, pl.DataType] = {
    "patient_id": pl.String(),
    "sample_id": pl.String(),
    "collected_at": pl.Datetime("us", "UTC"),
    "study_day": pl.Int32(),
    "days_since_dose1": pl.Float64(),
    "days_since_last_infusion": pl.Float64(),
    "dose_number": pl.Int32(),
    "specimen": pl.String(),
    "method": pl.String(),
    "pct_ink": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "lod_pct": pl.Float64(),
    "loq_pct": pl.Float64(),
    "result_status": pl.String(),
    "qc_verdict": pl.String(),
    "ink_cells_per_ul": pl.Float64(),
    "previous_sample_id": pl.String(),
    "change_pct": pl.Float64(),
    "change_ln": pl.Float64(),
    "critical_difference_pct": pl.Float64(),
    "critical_difference_ln": pl.Float64(),
    "cd_scale": pl.String(),
    "change_direction": pl.String(),
    "significant_change": pl.Boolean(),
    "source_sha256": pl.String(),
    "pipeline_version": pl.String(),
    "ingested_at": pl.Datetime("us", "UTC"),
}
"""Column order and dtypes of the trend table (schema ``schemas.trends.Trends``)."""


def _days_between(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    return (later - earlier).dt.total_microseconds().cast(pl.Float64) / _DAY_US


def _u_additive(x: pl.Expr, lo: pl.Expr, hi: pl.Expr, z: float) -> pl.Expr:
    """Return the standard uncertainty in percentage points from the larger CI half-width."""
    return pl.max_horizontal(hi - x, x - lo) / z


def _se_ln(x: pl.Expr, lo: pl.Expr, hi: pl.Expr, z: float) -> pl.Expr:
    """Return the standard error of ln(x) from the larger CI half-width on the ln scale."""
    upper = pl.when((x > 0) & (hi > 0)).then(hi.log() - x.log())
    lower = pl.when((x > 0) & (lo > 0)).then(x.log() - lo.log())
    se = pl.max_horizontal(upper, lower) / z
    return pl.when(se > 0).then(se)


def compare_results_exprs(first: str, second: str, *, z: float = Z_95) -> dict[str, pl.Expr]:
    """Return expressions judging the change from result ``first`` to result ``second``.

    Both results are read from columns named ``<prefix>pct_ink``, ``<prefix>ci_low``,
    ``<prefix>ci_high``, ``<prefix>lod_pct``, ``<prefix>result_status`` and ``<prefix>method``
    (``first``/``second`` are the prefixes, e.g. ``"prev_"`` and ``""``). The module docstring
    states the additive, multiplicative and detection rules.

    Returns
    -------
    dict[str, pl.Expr]
        ``change_pct``, ``change_ln``, ``critical_difference_pct``, ``critical_difference_ln``,
        ``cd_scale``, ``change_direction`` and ``significant_change``.

    Examples
    --------
    >>> import polars as pl
    >>> pair = pl.DataFrame({
    ...     "a_pct_ink": [10.0], "a_ci_low": [8.04], "a_ci_high": [11.96], "a_lod_pct": [1.0],
    ...     "a_result_status": ["quantified"], "a_method": ["STR"],
    ...     "b_pct_ink": [16.0], "b_ci_low": [14.04], "b_ci_high": [17.96], "b_lod_pct": [1.0],
    ...     "b_result_status": ["quantified"], "b_method": ["STR"],
    ... })
    >>> out = pair.select(**compare_results_exprs("a_", "b_"))
    >>> round(out["critical_difference_pct"][0], 3), out["significant_change"][0]
    (2.772, True)
    """

    def c(prefix: str, name: str) -> pl.Expr:
        return pl.col(f"{prefix}{name}")

    x1, x2 = c(first, "pct_ink"), c(second, "pct_ink")
    s1, s2 = c(first, "result_status"), c(second, "result_status")
    nd = ResultStatus.NOT_DETECTED.value
    v1, v2 = s1.is_in(_HAS_VALUE), s2.is_in(_HAS_VALUE)
    both_values = v1 & v2 & x1.is_not_null() & x2.is_not_null()
    from_nd = (s1 == nd) & v2
    to_nd = v1 & (s2 == nd)
    both_nd = (s1 == nd) & (s2 == nd)
    lod1 = pl.coalesce(c(first, "lod_pct"), c(first, "ci_high"))
    lod2 = pl.coalesce(c(second, "lod_pct"), c(second, "ci_high"))

    u1 = _u_additive(x1, c(first, "ci_low"), c(first, "ci_high"), z)
    u2 = _u_additive(x2, c(second, "ci_low"), c(second, "ci_high"), z)
    se1 = _se_ln(x1, c(first, "ci_low"), c(first, "ci_high"), z)
    se2 = _se_ln(x2, c(second, "ci_low"), c(second, "ci_high"), z)
    cd_add = z * (u1.pow(2) + u2.pow(2)).sqrt()
    cd_ln = z * (se1.pow(2) + se2.pow(2)).sqrt()
    multiplicative = (
        both_values
        & c(first, "method").is_in(PCR_METHODS)
        & c(second, "method").is_in(PCR_METHODS)
        & cd_ln.is_not_null()
    )
    change_pct = pl.when(both_values).then(x2 - x1)
    change_ln = pl.when(both_values & (x1 > 0) & (x2 > 0)).then((x2 / x1).log())
    cd_ln_pct = pl.when(x2 >= x1).then(x1 * (cd_ln.exp() - 1)).otherwise(x1 * (1 - (-cd_ln).exp()))
    cd_scale = (
        pl.when(multiplicative)
        .then(pl.lit("multiplicative"))
        .when(both_values & cd_add.is_not_null())
        .then(pl.lit("additive"))
        .when(from_nd | to_nd | both_nd)
        .then(pl.lit("detection"))
    )
    cd_pct = (
        pl.when(multiplicative)
        .then(cd_ln_pct)
        .when(both_values)
        .then(cd_add)
        .when(from_nd)
        .then(lod1)
        .when(to_nd)
        .then(lod2)
    )
    significant = (
        pl.when(multiplicative)
        .then(change_ln.abs() > cd_ln)
        .when(both_values)
        .then((x2 - x1).abs() > cd_add)
        .when(from_nd)
        .then(c(second, "ci_low") > lod1)
        .when(to_nd)
        .then(c(first, "ci_low") > lod2)
        .when(both_nd)
        .then(pl.lit(value=False))
    )
    direction = (
        pl.when(both_values & (x2 > x1))
        .then(pl.lit("rise"))
        .when(both_values & (x2 < x1))
        .then(pl.lit("fall"))
        .when(both_values | both_nd)
        .then(pl.lit("none"))
        .when(from_nd)
        .then(pl.lit("rise"))
        .when(to_nd)
        .then(pl.lit("fall"))
    )
    return {
        "change_pct": change_pct,
        "change_ln": change_ln,
        "critical_difference_pct": cd_pct,
        "critical_difference_ln": pl.when(multiplicative).then(cd_ln),
        "cd_scale": cd_scale,
        "change_direction": direction,
        "significant_change": significant,
    }


def build_trend_table(
    chimerism: pl.LazyFrame, infusions: pl.LazyFrame, *, z: float = Z_95
) -> pl.LazyFrame:
    """Return one row per patient x sample with dose context and the change from the last sample.

    Only headline, not superseded ``Chimerism`` rows are used. ``dose_number`` is the last dose
    given at or before the sample (null before dose 1), ``days_since_last_infusion`` the time since
    it and ``days_since_dose1`` the time since the first infusion (study day 0), all in days from
    the timestamps. A row without ``collected_at`` is placed at ``dose-1 time + study_day``; a
    missing ``study_day`` is the calendar-day difference (UTC) from dose 1. Significance rules are
    in the module docstring.

    Parameters
    ----------
    chimerism
        Rows of ``schemas.warehouse.Chimerism``.
    infusions
        Rows of ``schemas.warehouse.Infusions``.
    z
        Normal quantile for the critical difference (1.96 = 95 %).

    Returns
    -------
    pl.LazyFrame
        Rows of ``schemas.trends.Trends``, ordered by patient and time.
    """
    doses = infusions.select("patient_id", "dose_number", "infused_at")
    first_dose = doses.group_by("patient_id").agg(pl.col("infused_at").min().alias("_dose1_at"))
    rows = (
        chimerism.filter(pl.col("is_headline") & pl.col("superseded").not_())
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
    placed = (
        rows.join(last_dose, on="_row", how="left")
        .with_columns(
            _days_between(pl.col("_t"), pl.col("_dose1_at")).alias("days_since_dose1"),
            _days_between(pl.col("_t"), pl.col("_last_infused_at")).alias(
                "days_since_last_infusion"
            ),
            pl.col("_dose_number").cast(pl.Int32).alias("dose_number"),
        )
        .sort("patient_id", "_t", "sample_id", nulls_last=True)
    )
    comparable = pl.col("_t").is_not_null() & (pl.col("result_status") != ResultStatus.FAILED.value)
    prev_cols = ["sample_id", "pct_ink", "ci_low", "ci_high", "lod_pct", "result_status", "method"]
    compared = (
        placed.filter(comparable)
        .with_columns(
            pl.col(name).shift(1).over("patient_id").alias(f"prev_{name}") for name in prev_cols
        )
        .with_columns(**compare_results_exprs("prev_", "", z=z))
        .select("_row", pl.col("prev_sample_id").alias("previous_sample_id"), *_CHANGE_COLUMNS)
    )
    return (
        placed.join(compared, on="_row", how="left")
        .with_columns(pl.lit(__version__).alias("pipeline_version"))
        .sort("patient_id", "_t", "sample_id", nulls_last=True)
        .select(pl.col(name).cast(dtype) for name, dtype in TREND_COLUMNS.items())
    )


_CHANGE_COLUMNS = (
    "change_pct",
    "change_ln",
    "critical_difference_pct",
    "critical_difference_ln",
    "cd_scale",
    "change_direction",
    "significant_change",
)
