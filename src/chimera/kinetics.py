"""Cellular kinetics per patient and dose interval (methods.md section 8, PKNCA conventions).

* Dose interval n is [t_n, t_{n+1}) in days since dose 1; the last interval runs to the end of
  follow-up. A sample at exactly t_n belongs to interval n (as ``dose_number`` in the trend table).
* Cmax/Tmax: highest ``quantified`` value in the interval and its time after t_n, first on ties
  (PKNCA ``first.tmax = TRUE``). The pre-dose anchor (below) never counts as Cmax.
* C_pre,n (``predose_pct``): last reportable sample before t_n within ``predose_window_days``
  (default 1 day = 24 h; any time before dose 1 for the baseline); ``trough_pct``: the same for the
  next dose, i.e. the last value of this interval.
* AUC: lin-up/log-down (PKNCA ``auc.method = "lin up/log down"``) over the interval's samples. The
  concentration at t_n is anchored as 0 for dose 1 (no iNK before the first dose) and as C_pre,n for
  later doses when one exists, so AUC_tau covers the rise after each dose.
* BLQ (``below_loq`` and ``not_detected``; PKNCA ``conc.blq`` first = keep, middle = drop,
  last = keep, keep meaning 0): BLQ before the first quantified point is 0, between quantified
  points dropped, after the last quantified point 0. Every imputation is listed in
  ``blq_imputations``. ``failed`` results are not measurements and are ignored.
* Tlast: last ``quantified`` time after t_n (after dose 1 on the overall row).
* Half-life: log-linear fits of ln C on t over the last k quantified points after Cmax (Cmax
  excluded), k >= 3; best adjusted R² wins, preferring more points within 1e-4; accepted when
  adj. R² >= 0.9, lambda_z > 0 and the fitted span >= 2 half-lives (PKNCA ``min.hl.points``,
  ``adj.r.squared.factor``, ``allow.tmax.in.half.life = FALSE``, ``min.hl.r.squared``,
  ``min.span.ratio``); otherwise null with a reason.
* Accumulation: C_pre,n / C_pre,2 (both ``quantified``) and AUC_n / AUC_1 (methods.md 8, R_ac).

The overall row covers dose 1 to the last sample (AUC with each point's BLQ treatment from its own
interval) and adds AUC0-28d; its half-life is the terminal one, after the last dose.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from chimera import __version__
from chimera.calculate.limits import ResultStatus

_DAY_US = 86_400_000_000.0
_REPORTABLE = (
    ResultStatus.QUANTIFIED.value,
    ResultStatus.BELOW_LOQ.value,
    ResultStatus.NOT_DETECTED.value,
)

KINETICS_COLUMNS: dict[str, pl.DataType] = {
    "patient_id": pl.String(),
    "scope": pl.String(),
    "dose_number": pl.Int32(),
    "interval_start_day": pl.Float64(),
    "interval_end_day": pl.Float64(),
    "n_samples": pl.Int32(),
    "n_quantified": pl.Int32(),
    "cmax_pct": pl.Float64(),
    "cmax_sample_id": pl.String(),
    "tmax_days": pl.Float64(),
    "predose_pct": pl.Float64(),
    "predose_status": pl.String(),
    "predose_sample_id": pl.String(),
    "trough_pct": pl.Float64(),
    "trough_status": pl.String(),
    "trough_sample_id": pl.String(),
    "auc_pct_days": pl.Float64(),
    "auc_0_28_pct_days": pl.Float64(),
    "tlast_days": pl.Float64(),
    "lambda_z_per_day": pl.Float64(),
    "half_life_days": pl.Float64(),
    "half_life_r2": pl.Float64(),
    "half_life_points": pl.String(),
    "half_life_reason": pl.String(),
    "accumulation_ratio_trough": pl.Float64(),
    "accumulation_ratio_auc": pl.Float64(),
    "blq_imputations": pl.String(),
    "source_sha256": pl.String(),
    "pipeline_version": pl.String(),
    "ingested_at": pl.Datetime("us", "UTC"),
}
"""Column order and dtypes of the kinetics table (schema ``schemas.trends.Kinetics``)."""

COHORT_PARAMETERS = (
    "cmax_pct",
    "tmax_days",
    "predose_pct",
    "trough_pct",
    "auc_pct_days",
    "auc_0_28_pct_days",
    "tlast_days",
    "half_life_days",
    "accumulation_ratio_trough",
    "accumulation_ratio_auc",
)
"""Parameters summarised across patients by :func:`summarise_cohort`."""


def _fmt_day(day: float) -> str:
    return f"{day:.2f}".rstrip("0").rstrip(".")


def _fmt_pct(value: float) -> str:
    return f"{value:.4g}"


def auc_lin_up_log_down(
    times_days: Sequence[float], values_pct: Sequence[float], *, end_day: float | None = None
) -> float:
    """Return the area under the curve by the linear-up / log-down trapezoidal rule.

    A segment is linear, (t2 - t1)(C1 + C2)/2, unless it falls with both values > 0; then it is
    logarithmic, (t2 - t1)(C1 - C2)/ln(C1/C2) (PKNCA ``"lin up/log down"``). With ``end_day`` the
    area stops there, the value at ``end_day`` interpolated the same way (linear up, log down).
    Values must already be BLQ-processed (see :func:`apply_blq_rules`) and times increasing.

    Examples
    --------
    Rise 0 -> 4 over 1 day (linear: 2.0), fall 4 -> 1 over 2 days (log: 2 * 3 / ln 4 = 4.328):

    >>> round(auc_lin_up_log_down([0.0, 1.0, 3.0], [0.0, 4.0, 1.0]), 3)
    6.328

    Stopping at day 2, where log interpolation gives 2.0: 2.0 + 1 * (4 - 2) / ln 2 = 4.885:

    >>> round(auc_lin_up_log_down([0.0, 1.0, 3.0], [0.0, 4.0, 1.0], end_day=2.0), 3)
    4.885
    """
    if len(times_days) != len(values_pct):
        msg = f"expected as many times as values, got {len(times_days)} and {len(values_pct)}"
        raise ValueError(msg)
    total = 0.0
    for i in range(1, len(times_days)):
        t1, t2 = times_days[i - 1], times_days[i]
        c1, c2 = values_pct[i - 1], values_pct[i]
        if t2 < t1:
            msg = f"expected increasing times, got {t1} then {t2}"
            raise ValueError(msg)
        if end_day is not None and t1 >= end_day:
            break
        if end_day is not None and t2 > end_day:
            c2 = _interpolate(t1, c1, t2, c2, end_day)
            t2 = end_day
        total += _segment_area(t1, c1, t2, c2)
    return total


def _segment_area(t1: float, c1: float, t2: float, c2: float) -> float:
    if c2 < c1 and c2 > 0:
        return (t2 - t1) * (c1 - c2) / math.log(c1 / c2)
    return (t2 - t1) * (c1 + c2) / 2


def _interpolate(t1: float, c1: float, t2: float, c2: float, t: float) -> float:
    frac = (t - t1) / (t2 - t1)
    if c2 < c1 and c2 > 0:
        return math.exp(math.log(c1) + frac * (math.log(c2) - math.log(c1)))
    return c1 + frac * (c2 - c1)


@dataclass(frozen=True)
class Point:
    """One result on an interval's time axis (days after the interval start)."""

    time_days: float
    status: str
    value_pct: float | None
    label: str
    """How the point is named in notes, e.g. ``"day 3.12 (S-0004)"``."""


def apply_blq_rules(points: Sequence[Point]) -> tuple[list[tuple[float, float]], list[str]]:
    """Apply PKNCA's default BLQ rules and return the usable (time, value) pairs and the notes.

    ``below_loq`` and ``not_detected`` are BLQ: 0 before the first ``quantified`` point, dropped
    between quantified points, 0 after the last one (all 0 when nothing is quantified).

    Examples
    --------
    >>> pts = [Point(0.0, "not_detected", None, "a"), Point(1.0, "quantified", 4.0, "b"),
    ...        Point(2.0, "below_loq", 0.3, "c"), Point(3.0, "quantified", 1.0, "d"),
    ...        Point(4.0, "not_detected", None, "e")]
    >>> used, notes = apply_blq_rules(pts)
    >>> used
    [(0.0, 0.0), (1.0, 4.0), (3.0, 1.0), (4.0, 0.0)]
    >>> notes[1]
    'c below_loq: dropped (BLQ between quantified values)'
    """
    quantified = [i for i, p in enumerate(points) if p.status == ResultStatus.QUANTIFIED.value]
    first = quantified[0] if quantified else len(points)
    last = quantified[-1] if quantified else -1
    used: list[tuple[float, float]] = []
    notes: list[str] = []
    for i, p in enumerate(points):
        if p.status == ResultStatus.QUANTIFIED.value and p.value_pct is not None:
            used.append((p.time_days, p.value_pct))
        elif i < first:
            used.append((p.time_days, 0.0))
            notes.append(f"{p.label} {p.status}: 0 (BLQ before the first quantified value)")
        elif i > last:
            used.append((p.time_days, 0.0))
            notes.append(f"{p.label} {p.status}: 0 (BLQ after the last quantified value)")
        else:
            notes.append(f"{p.label} {p.status}: dropped (BLQ between quantified values)")
    return used, notes


@dataclass(frozen=True)
class HalfLifeFit:
    """Result of a terminal half-life search; ``half_life_days`` is None when not accepted."""

    half_life_days: float | None
    lambda_z_per_day: float | None
    adj_r2: float | None
    points: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    reason: str | None = None


def _fit_log_linear(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Return (slope, adjusted R²) of ln C on t by ordinary least squares."""
    n = len(points)
    ts = [t for t, _ in points]
    ys = [math.log(c) for _, c in points]
    t_mean = sum(ts) / n
    y_mean = sum(ys) / n
    sxx = sum((t - t_mean) ** 2 for t in ts)
    sxy = sum((t - t_mean) * (y - y_mean) for t, y in zip(ts, ys, strict=True))
    syy = sum((y - y_mean) ** 2 for y in ys)
    if sxx == 0:
        return math.nan, math.nan
    slope = sxy / sxx
    r2 = 1.0 if syy == 0 else (sxy * sxy) / (sxx * syy)
    adj_r2 = 1 - (1 - r2) * (n - 1) / (n - 2)
    return slope, adj_r2


def estimate_half_life(
    times_days: Sequence[float],
    values_pct: Sequence[float],
    *,
    min_points: int = 3,
    min_adj_r2: float = 0.9,
    min_span_ratio: float = 2.0,
    adj_r2_factor: float = 1e-4,
) -> HalfLifeFit:
    """Estimate the terminal half-life from quantified points (PKNCA defaults).

    Points after the first Cmax (Cmax excluded) are fitted as ln C = a - lambda_z * t over the last
    k points, k = ``min_points`` .. all. The fit with the best adjusted R² wins; among fits within
    ``adj_r2_factor`` of it, the one with the most points. It is accepted when lambda_z > 0,
    adj. R² >= ``min_adj_r2`` and (t_last - t_first) / t½ >= ``min_span_ratio``.

    Parameters
    ----------
    times_days, values_pct
        Quantified results only (> 0), in time order.

    Examples
    --------
    An exact exponential with t½ = 7 days after a peak at day 1:

    >>> ts = [1.0, 8.0, 15.0, 22.0, 29.0]
    >>> cs = [20.0 * 0.5 ** ((t - 1.0) / 7.0) for t in ts]
    >>> fit = estimate_half_life(ts, cs)
    >>> round(fit.half_life_days, 6), round(fit.adj_r2, 6), len(fit.points)
    (7.0, 1.0, 4)
    >>> estimate_half_life([0.0, 1.0, 2.0], [5.0, 4.0, 3.0]).reason
    'fewer than 3 quantified points after Cmax (2)'
    """
    if len(times_days) != len(values_pct):
        msg = f"expected as many times as values, got {len(times_days)} and {len(values_pct)}"
        raise ValueError(msg)
    if not values_pct:
        return HalfLifeFit(None, None, None, reason="no quantified value")
    cmax = max(values_pct)
    i_max = list(values_pct).index(cmax)
    after = [(t, c) for t, c in zip(times_days[i_max + 1 :], values_pct[i_max + 1 :], strict=True)]
    after = [(t, c) for t, c in after if c > 0]
    if len(after) < min_points:
        reason = f"fewer than {min_points} quantified points after Cmax ({len(after)})"
        return HalfLifeFit(None, None, None, reason=reason)
    best: tuple[float, float, list[tuple[float, float]]] | None = None
    for k in range(min_points, len(after) + 1):
        pts = after[-k:]
        slope, adj_r2 = _fit_log_linear(pts)
        if math.isnan(slope):
            continue
        if (
            best is None
            or adj_r2 > best[1] + adj_r2_factor
            or (abs(adj_r2 - best[1]) <= adj_r2_factor and k > len(best[2]))
        ):
            best = (slope, adj_r2, pts)
    if best is None:
        return HalfLifeFit(None, None, None, reason="all points after Cmax at one time")
    slope, adj_r2, pts = best
    lambda_z = -slope
    if lambda_z <= 0:
        return HalfLifeFit(
            None, lambda_z, adj_r2, tuple(pts), reason="not declining after Cmax (lambda_z <= 0)"
        )
    half_life = math.log(2) / lambda_z
    span = (pts[-1][0] - pts[0][0]) / half_life
    if adj_r2 < min_adj_r2:
        reason = f"adjusted R² {adj_r2:.3f} < {min_adj_r2}"
        return HalfLifeFit(None, lambda_z, adj_r2, tuple(pts), reason=reason)
    if span < min_span_ratio:
        reason = f"fit spans {span:.2f} half-lives < {min_span_ratio} (t½ {half_life:.3g} d)"
        return HalfLifeFit(None, lambda_z, adj_r2, tuple(pts), reason=reason)
    return HalfLifeFit(half_life, lambda_z, adj_r2, tuple(pts))


@dataclass(frozen=True)
class _Sample:
    sample_id: str
    day: float
    status: str
    value_pct: float | None


@dataclass(frozen=True)
class _Dose:
    number: int
    day: float


def _label(sample: _Sample) -> str:
    return f"day {_fmt_day(sample.day)} ({sample.sample_id})"


def _last_before(
    samples: Sequence[_Sample], day: float, window_days: float | None
) -> _Sample | None:
    candidates = [
        s for s in samples if s.day < day and (window_days is None or s.day >= day - window_days)
    ]
    return candidates[-1] if candidates else None


def _value_if_quantified(sample: _Sample | None) -> float | None:
    if sample is None or sample.status != ResultStatus.QUANTIFIED.value:
        return None
    return sample.value_pct


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _interval_row(
    samples: Sequence[_Sample],
    dose: _Dose,
    next_day: float | None,
    *,
    predose_window_days: float,
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """Return the row of one dose interval and its BLQ-processed points (days since dose 1)."""
    inside = [s for s in samples if s.day >= dose.day and (next_day is None or s.day < next_day)]
    window = None if dose.number == 1 else predose_window_days
    predose = _last_before(samples, dose.day, window)
    trough = None if next_day is None else _last_before(samples, next_day, predose_window_days)
    if trough is not None and trough.day < dose.day:
        trough = None
    points: list[Point] = []
    starts_at_dose = bool(inside) and inside[0].day == dose.day
    anchored = bool(inside) and not starts_at_dose
    if anchored and dose.number == 1:
        # No iNK exists before the first dose: C(t_1) is BLQ by definition, kept as 0 (first).
        points.append(Point(0.0, ResultStatus.NOT_DETECTED.value, None, "dose 1 time (assumed)"))
    elif anchored and predose is not None:
        points.append(Point(0.0, predose.status, predose.value_pct, f"pre-dose {_label(predose)}"))
    else:
        anchored = False
    points.extend(Point(s.day - dose.day, s.status, s.value_pct, _label(s)) for s in inside)
    quantified = [
        s for s in inside if s.status == ResultStatus.QUANTIFIED.value and s.value_pct is not None
    ]
    used, notes = apply_blq_rules(points)
    cmax_sample = max(quantified, key=lambda s: s.value_pct or 0.0) if quantified else None
    # max() returns the first maximal element, i.e. the first time on ties (first.tmax).
    fit = estimate_half_life([s.day for s in quantified], [s.value_pct or 0.0 for s in quantified])
    auc = auc_lin_up_log_down([t for t, _ in used], [c for _, c in used]) if inside else None
    row: dict[str, Any] = {
        "scope": "dose",
        "dose_number": dose.number,
        "interval_start_day": dose.day,
        "interval_end_day": next_day,
        "n_samples": len(inside),
        "n_quantified": len(quantified),
        "cmax_pct": None if cmax_sample is None else cmax_sample.value_pct,
        "cmax_sample_id": None if cmax_sample is None else cmax_sample.sample_id,
        "tmax_days": None if cmax_sample is None else cmax_sample.day - dose.day,
        "predose_pct": None if predose is None else predose.value_pct,
        "predose_status": None if predose is None else predose.status,
        "predose_sample_id": None if predose is None else predose.sample_id,
        "trough_pct": None if trough is None else trough.value_pct,
        "trough_status": None if trough is None else trough.status,
        "trough_sample_id": None if trough is None else trough.sample_id,
        "auc_pct_days": auc,
        "auc_0_28_pct_days": None,
        "tlast_days": quantified[-1].day - dose.day if quantified else None,
        **_half_life_columns(fit, no_samples=not inside),
        "blq_imputations": "; ".join(notes) if notes else None,
    }
    # The anchor is always kept (it is first); a pre-dose anchor repeats the previous interval's
    # last point, so only dose 1's assumed zero joins the overall series.
    skip = 1 if anchored and dose.number > 1 else 0
    overall_points = [(t + dose.day, c) for t, c in used[skip:]]
    return row, overall_points


def _half_life_columns(fit: HalfLifeFit, *, no_samples: bool) -> dict[str, Any]:
    reason = "no samples in the interval" if no_samples else fit.reason
    return {
        "lambda_z_per_day": fit.lambda_z_per_day,
        "half_life_days": fit.half_life_days,
        "half_life_r2": fit.adj_r2,
        "half_life_points": "; ".join(f"day {_fmt_day(t)}:{_fmt_pct(c)}" for t, c in fit.points)
        or None,
        "half_life_reason": reason,
    }


def _overall_row(
    samples: Sequence[_Sample],
    dose_rows: Sequence[dict[str, Any]],
    points: Sequence[tuple[float, float]],
) -> dict[str, Any]:
    after_dose1 = [s for s in samples if s.day >= 0]
    quantified = [
        s
        for s in after_dose1
        if s.status == ResultStatus.QUANTIFIED.value and s.value_pct is not None
    ]
    cmax_sample = max(quantified, key=lambda s: s.value_pct or 0.0) if quantified else None
    times = [t for t, _ in points]
    values = [c for _, c in points]
    auc = auc_lin_up_log_down(times, values) if after_dose1 else None
    auc_28 = auc_lin_up_log_down(times, values, end_day=28.0) if times and times[-1] >= 28 else None
    last = dose_rows[-1] if dose_rows else None
    half_life: dict[str, Any] = {
        "lambda_z_per_day": None,
        "half_life_days": None,
        "half_life_r2": None,
        "half_life_points": None,
        "half_life_reason": "no dose interval",
    }
    if last is not None:
        half_life = {key: last[key] for key in half_life}
        if half_life["half_life_reason"] is not None:
            half_life["half_life_reason"] = f"after the last dose: {half_life['half_life_reason']}"
    notes = [r["blq_imputations"] for r in dose_rows if r["blq_imputations"]]
    return {
        "scope": "overall",
        "dose_number": None,
        "interval_start_day": 0.0,
        "interval_end_day": None,
        "n_samples": len(after_dose1),
        "n_quantified": len(quantified),
        "cmax_pct": None if cmax_sample is None else cmax_sample.value_pct,
        "cmax_sample_id": None if cmax_sample is None else cmax_sample.sample_id,
        "tmax_days": None if cmax_sample is None else cmax_sample.day,
        "predose_pct": None,
        "predose_status": None,
        "predose_sample_id": None,
        "trough_pct": None,
        "trough_status": None,
        "trough_sample_id": None,
        "auc_pct_days": auc,
        "auc_0_28_pct_days": auc_28,
        "tlast_days": quantified[-1].day if quantified else None,
        **half_life,
        "accumulation_ratio_trough": None,
        "accumulation_ratio_auc": None,
        "blq_imputations": "; ".join(notes) if notes else None,
    }


def _patient_rows(
    samples: Sequence[_Sample],
    doses: Sequence[_Dose],
    *,
    predose_window_days: float,
    follow_up_end_day: float | None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    overall_points: list[tuple[float, float]] = []
    for i, dose in enumerate(doses):
        next_day = doses[i + 1].day if i + 1 < len(doses) else None
        row, points = _interval_row(
            samples, dose, next_day, predose_window_days=predose_window_days
        )
        if next_day is None:
            row["interval_end_day"] = follow_up_end_day
        rows.append(row)
        overall_points.extend(points)
    by_dose = {r["dose_number"]: r for r in rows}
    first_auc = rows[0]["auc_pct_days"] if rows else None
    second = by_dose.get(doses[1].number) if len(doses) > 1 else None
    pre2 = (
        second["predose_pct"]
        if second is not None and second["predose_status"] == ResultStatus.QUANTIFIED.value
        else None
    )
    for i, row in enumerate(rows):
        pre_n = (
            row["predose_pct"] if row["predose_status"] == ResultStatus.QUANTIFIED.value else None
        )
        row["accumulation_ratio_trough"] = _ratio(pre_n, pre2) if i >= 1 else None
        row["accumulation_ratio_auc"] = _ratio(row["auc_pct_days"], first_auc)
    rows.append(_overall_row(samples, rows, overall_points))
    return rows


def _lineage(hashes: Sequence[str | None], times: Sequence[datetime | None]) -> dict[str, Any]:
    distinct = sorted({h for h in hashes if h})
    digest = hashlib.sha256("\n".join(distinct).encode()).hexdigest()
    known = [t for t in times if t is not None]
    return {
        "source_sha256": digest,
        "pipeline_version": __version__,
        "ingested_at": max(known) if known else None,
    }


def compute_kinetics(
    trends: pl.LazyFrame,
    infusions: pl.LazyFrame,
    *,
    predose_window_days: float = 1.0,
    follow_up_end_day: float | None = None,
) -> pl.LazyFrame:
    """Return NCA parameters per patient x dose interval and per patient overall.

    Works on one patient's rows or many; patients without infusions get no rows. The rules are in
    the module docstring (methods.md 8). Collects its inputs: NCA is per-patient arithmetic.

    Parameters
    ----------
    trends
        Rows of ``schemas.trends.Trends`` (``days_since_dose1``, ``result_status``, ``pct_ink``
        are used; lineage columns when present).
    infusions
        Rows of ``schemas.warehouse.Infusions``.
    predose_window_days
        W_pre: a pre-dose sample counts as C_pre,n / trough only this close before the dose.
    follow_up_end_day
        End of follow-up in days since dose 1, reported as the last interval's end (null = open).

    Returns
    -------
    pl.LazyFrame
        Rows of ``schemas.trends.Kinetics``.
    """
    names = set(trends.collect_schema().names())
    lineage_cols = [c for c in ("source_sha256", "ingested_at") if c in names]
    t = (
        trends.filter(
            pl.col("result_status").is_in(_REPORTABLE) & pl.col("days_since_dose1").is_not_null()
        )
        .select("patient_id", "sample_id", "days_since_dose1", "result_status", "pct_ink")
        .sort("patient_id", "days_since_dose1", "sample_id")
        .collect()
    )
    lineage = trends.select("patient_id", *lineage_cols).collect()
    inf_names = set(infusions.collect_schema().names())
    inf = (
        infusions.select(
            "patient_id",
            "dose_number",
            "infused_at",
            *(c for c in ("source_sha256", "ingested_at") if c in inf_names),
        )
        .sort("patient_id", "infused_at")
        .collect()
    )
    samples_by_patient: dict[str, list[_Sample]] = {}
    for r in t.iter_rows(named=True):
        samples_by_patient.setdefault(r["patient_id"], []).append(
            _Sample(r["sample_id"], r["days_since_dose1"], r["result_status"], r["pct_ink"])
        )
    out: list[dict[str, Any]] = []
    for (patient_id,), group in inf.group_by("patient_id", maintain_order=True):
        times = group["infused_at"].to_list()
        doses = [
            _Dose(int(n), (at - times[0]).total_seconds() / 86_400.0)
            for n, at in zip(group["dose_number"].to_list(), times, strict=True)
        ]
        rows = _patient_rows(
            samples_by_patient.get(str(patient_id), []),
            doses,
            predose_window_days=predose_window_days,
            follow_up_end_day=follow_up_end_day,
        )
        own = lineage.filter(pl.col("patient_id") == patient_id)
        hashes = [
            h
            for frame in (group, own)
            if "source_sha256" in frame.columns
            for h in frame["source_sha256"].to_list()
        ]
        ingested = [
            at
            for frame in (group, own)
            if "ingested_at" in frame.columns
            for at in frame["ingested_at"].to_list()
        ]
        stamp = _lineage(hashes, ingested)
        out.extend({"patient_id": patient_id, **row, **stamp} for row in rows)
    return pl.DataFrame(out, schema=KINETICS_COLUMNS).lazy()


def summarise_cohort(kinetics: pl.LazyFrame) -> pl.LazyFrame:
    """Return the median and range of each kinetic parameter per dose across patients.

    One row per scope x dose number x parameter (``COHORT_PARAMETERS``); ``n_patients`` counts
    the patients with that dose interval, ``n_values`` those with a value.

    Parameters
    ----------
    kinetics
        Rows of ``schemas.trends.Kinetics``.

    Returns
    -------
    pl.LazyFrame
        Rows of ``schemas.trends.CohortKinetics``, ordered by scope, dose and parameter order.
    """
    order = {name: i for i, name in enumerate(COHORT_PARAMETERS)}
    long = kinetics.select(
        "patient_id", "scope", "dose_number", *(pl.col(p).cast(pl.Float64) for p in order)
    ).unpivot(
        index=["patient_id", "scope", "dose_number"],
        on=list(order),
        variable_name="parameter",
        value_name="value",
    )
    return (
        long.group_by("scope", "dose_number", "parameter")
        .agg(
            pl.col("patient_id").n_unique().cast(pl.Int32).alias("n_patients"),
            pl.col("value").count().cast(pl.Int32).alias("n_values"),
            pl.col("value").median().alias("median"),
            pl.col("value").min().alias("min"),
            pl.col("value").max().alias("max"),
        )
        .with_columns(pl.col("parameter").replace_strict(order, return_dtype=pl.Int32).alias("_o"))
        .sort("scope", "dose_number", "_o", nulls_last=True)
        .drop("_o")
    )
