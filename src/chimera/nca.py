"""Non-compartmental analysis primitives (methods.md section 8, PKNCA conventions).

* AUC by the linear-up / log-down trapezoidal rule (PKNCA ``auc.method = "lin up/log down"``).
* BLQ handling (PKNCA ``conc.blq``: first = keep, middle = drop, last = keep, keep meaning 0).
* Terminal half-life by log-linear regression on the last k >= 3 quantified points after Cmax
  (PKNCA ``min.hl.points``, ``adj.r.squared.factor``, ``allow.tmax.in.half.life = FALSE``,
  ``min.hl.r.squared``, ``min.span.ratio``).

Pure functions on plain sequences; :mod:`chimera.kinetics` applies them per dose interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from chimera.calculate.stats import t_quantile
from schemas.vocab import ResultStatus


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
    quantified = [i for i, p in enumerate(points) if p.status == ResultStatus.QUANTIFIED]
    first = quantified[0] if quantified else len(points)
    last = quantified[-1] if quantified else -1
    used: list[tuple[float, float]] = []
    notes: list[str] = []
    for i, p in enumerate(points):
        if p.status == ResultStatus.QUANTIFIED and p.value_pct is not None:
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

    def predict(self, time_days: float) -> float | None:
        """Return the fitted level at ``time_days`` (None when the fit was not accepted).

        The line passes through the mean of (t, ln C) of the fitted points with slope -lambda_z.

        Examples
        --------
        >>> fit = estimate_half_life([1.0, 8.0, 15.0, 22.0, 29.0], [16.0, 8.0, 4.0, 2.0, 1.0])
        >>> round(fit.predict(36.0), 6)
        0.5
        """
        if self.half_life_days is None or self.lambda_z_per_day is None or not self.points:
            return None
        t_mean = sum(t for t, _ in self.points) / len(self.points)
        y_mean = sum(math.log(c) for _, c in self.points) / len(self.points)
        return math.exp(y_mean - self.lambda_z_per_day * (time_days - t_mean))

    def prediction_half_width_ln(self, time_days: float) -> float | None:
        """Return the 95 % prediction-interval half-width of ln C at ``time_days``.

        ``t(0.975, n - 2) * s * sqrt(1 + 1/n + (t - t_mean)^2 / Sxx)`` with ``s`` the residual SD
        of the fit: how far a new result may lie from the fitted decay by chance (None when the
        fit was not accepted).

        Examples
        --------
        >>> fit = estimate_half_life([1.0, 8.0, 15.0, 22.0, 29.0], [16.0, 8.0, 4.0, 2.0, 1.0])
        >>> round(fit.prediction_half_width_ln(36.0), 9)  # an exact exponential: no scatter
        0.0
        """
        if self.predict(time_days) is None:
            return None
        n = len(self.points)
        ts = [t for t, _ in self.points]
        t_mean = sum(ts) / n
        sxx = sum((t - t_mean) ** 2 for t in ts)
        y_mean = sum(math.log(c) for _, c in self.points) / n
        slope = -(self.lambda_z_per_day or 0.0)
        residuals = [math.log(c) - (y_mean + slope * (t - t_mean)) for t, c in self.points]
        s = math.sqrt(sum(r * r for r in residuals) / (n - 2))
        leverage = 1 + 1 / n + (time_days - t_mean) ** 2 / sxx
        return t_quantile(0.975, n - 2) * s * math.sqrt(leverage)


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
