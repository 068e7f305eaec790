"""Cellular kinetics per patient x specimen and dose interval (methods.md section 8, PKNCA conventions).

* Each specimen is its own curve (a CD56+ sorted value never enters the whole-blood Cmax).
* Dose interval n is [t_n, t_{n+1}) in days since dose 1; the last interval runs to the end of
  follow-up. A sample at exactly t_n belongs to interval n (as ``dose_number`` in the trend table).
* Cmax/Tmax: highest ``quantified`` value in the interval and its time after t_n, first on ties
  (PKNCA ``first.tmax = TRUE``). The pre-dose anchor (below) never counts as Cmax.
  ``cmax_pct_per_1e9_cells`` normalises Cmax to the cells infused (infusion log ``cells``).
* C_pre,n (``predose_pct``): last reportable sample before t_n within ``predose_window_days``
  (default 1 day = 24 h; any time before dose 1 for the baseline); ``trough_pct``: the same for the
  next dose, i.e. the last value of this interval.
* AUC: lin-up/log-down (:func:`chimera.nca.auc_lin_up_log_down`) over the interval's samples. The
  curve of dose 1 starts at 0 at t_1 (no iNK before the first dose); that of a later dose starts
  at its pre-dose sample C_pre,n, at the time it was drawn, when one exists. The intervals then
  tile the time axis: the overall AUC is the sum of the interval AUCs.
* BLQ (``below_loq`` and ``not_detected``; :func:`chimera.nca.apply_blq_rules`): 0 before the first
  quantified point, dropped between quantified points, 0 after the last one; every imputation is
  listed in ``blq_imputations``. ``failed`` results are not measurements and are ignored.
* Tlast: last ``quantified`` time after t_n (after dose 1 on the overall row).
* Half-life: :func:`chimera.nca.estimate_half_life` on the interval's quantified points.
* Accumulation: C_pre,n / C_pre,2 (both ``quantified``) and AUC_n / AUC_1 (methods.md 8, R_ac).

The overall row covers dose 1 to the last sample (AUC with each point's BLQ treatment from its own
interval) and adds AUC0-28d; its half-life is the terminal one, after the last dose.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from chimera import __version__
from chimera.nca import HalfLifeFit, Point, apply_blq_rules, auc_lin_up_log_down, estimate_half_life
from chimera.trends import SERIES_KEY
from schemas.base import polars_schema
from schemas.trends import Kinetics
from schemas.vocab import KineticsScope, ResultStatus

CELLS_UNIT = 1e9
"""Dose-normalised Cmax is per this many cells infused."""

_REPORTABLE = (ResultStatus.QUANTIFIED, ResultStatus.BELOW_LOQ, ResultStatus.NOT_DETECTED)

KINETICS_COLUMNS = polars_schema(Kinetics)
"""Column order and dtypes of the kinetics table (from ``schemas.trends.Kinetics``)."""

COHORT_PARAMETERS = (
    "cmax_pct",
    "cmax_pct_per_1e9_cells",
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
    cells: float | None


def _label(sample: _Sample) -> str:
    return f"day {_fmt_day(sample.day)} ({sample.sample_id})"


def _last_before(
    samples: Sequence[_Sample], day: float, window_days: float | None
) -> _Sample | None:
    candidates = [
        s for s in samples if s.day < day and (window_days is None or s.day >= day - window_days)
    ]
    return candidates[-1] if candidates else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _interval_points(
    inside: Sequence[_Sample], dose: _Dose, predose: _Sample | None
) -> tuple[list[Point], bool]:
    """Return the interval's points (days after t_n) and whether they start with a pre-dose anchor."""
    points: list[Point] = []
    anchored = False
    if inside and dose.number == 1 and inside[0].day > dose.day:
        # No iNK exists before the first dose: C(t_1) is BLQ by definition, kept as 0 (first).
        points.append(Point(0.0, ResultStatus.NOT_DETECTED, None, "dose 1 time (assumed)"))
    elif inside and dose.number > 1 and predose is not None:
        anchored = True
        points.append(
            Point(
                predose.day - dose.day,
                predose.status,
                predose.value_pct,
                f"pre-dose {_label(predose)}",
            )
        )
    points.extend(Point(s.day - dose.day, s.status, s.value_pct, _label(s)) for s in inside)
    return points, anchored


def _sample_columns(prefix: str, sample: _Sample | None) -> dict[str, Any]:
    return {
        f"{prefix}_pct": None if sample is None else sample.value_pct,
        f"{prefix}_status": None if sample is None else sample.status,
        f"{prefix}_sample_id": None if sample is None else sample.sample_id,
    }


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
    points, anchored = _interval_points(inside, dose, predose)
    quantified = [
        s for s in inside if s.status == ResultStatus.QUANTIFIED and s.value_pct is not None
    ]
    used, notes = apply_blq_rules(points)
    # max() returns the first maximal element, i.e. the first time on ties (first.tmax).
    cmax_sample = max(quantified, key=lambda s: s.value_pct or 0.0) if quantified else None
    cmax = None if cmax_sample is None else cmax_sample.value_pct
    fit = estimate_half_life([s.day for s in quantified], [s.value_pct or 0.0 for s in quantified])
    row: dict[str, Any] = {
        "scope": KineticsScope.DOSE.value,
        "dose_number": dose.number,
        "dose_cells": dose.cells,
        "interval_start_day": dose.day,
        "interval_end_day": next_day,
        "n_samples": len(inside),
        "n_quantified": len(quantified),
        "cmax_pct": cmax,
        "cmax_pct_per_1e9_cells": None
        if cmax is None or not dose.cells
        else cmax * CELLS_UNIT / dose.cells,
        "cmax_sample_id": None if cmax_sample is None else cmax_sample.sample_id,
        "tmax_days": None if cmax_sample is None else cmax_sample.day - dose.day,
        **_sample_columns("predose", predose),
        **_sample_columns("trough", trough),
        "auc_pct_days": auc_lin_up_log_down([t for t, _ in used], [c for _, c in used])
        if inside
        else None,
        "auc_0_28_pct_days": None,
        "tlast_days": quantified[-1].day - dose.day if quantified else None,
        **_half_life_columns(fit, no_samples=not inside),
        "blq_imputations": "; ".join(notes) if notes else None,
    }
    # A pre-dose anchor is the previous interval's last point (same time, same BLQ treatment):
    # the overall series takes it once.
    overall_points = [(t + dose.day, c) for t, c in used[1 if anchored else 0 :]]
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
        s for s in after_dose1 if s.status == ResultStatus.QUANTIFIED and s.value_pct is not None
    ]
    cmax_sample = max(quantified, key=lambda s: s.value_pct or 0.0) if quantified else None
    times = [t for t, _ in points]
    values = [c for _, c in points]
    half_life: dict[str, Any] = {
        "lambda_z_per_day": None,
        "half_life_days": None,
        "half_life_r2": None,
        "half_life_points": None,
        "half_life_reason": "no dose interval",
    }
    if dose_rows:
        half_life = {key: dose_rows[-1][key] for key in half_life}
        if half_life["half_life_reason"] is not None:
            half_life["half_life_reason"] = f"after the last dose: {half_life['half_life_reason']}"
    notes = [r["blq_imputations"] for r in dose_rows if r["blq_imputations"]]
    return {
        "scope": KineticsScope.OVERALL.value,
        "dose_number": None,
        "dose_cells": None,
        "interval_start_day": 0.0,
        "interval_end_day": None,
        "n_samples": len(after_dose1),
        "n_quantified": len(quantified),
        "cmax_pct": None if cmax_sample is None else cmax_sample.value_pct,
        "cmax_pct_per_1e9_cells": None,
        "cmax_sample_id": None if cmax_sample is None else cmax_sample.sample_id,
        "tmax_days": None if cmax_sample is None else cmax_sample.day,
        **_sample_columns("predose", None),
        **_sample_columns("trough", None),
        "auc_pct_days": auc_lin_up_log_down(times, values) if after_dose1 else None,
        "auc_0_28_pct_days": auc_lin_up_log_down(times, values, end_day=28.0)
        if times and times[-1] >= 28
        else None,
        "tlast_days": quantified[-1].day if quantified else None,
        **half_life,
        "accumulation_ratio_trough": None,
        "accumulation_ratio_auc": None,
        "blq_imputations": "; ".join(notes) if notes else None,
    }


def _accumulation(rows: list[dict[str, Any]]) -> None:
    """Fill R_ac = C_pre,n / C_pre,2 (both quantified) and AUC_n / AUC_1 on the dose rows."""

    def quantified_predose(row: dict[str, Any]) -> float | None:
        return row["predose_pct"] if row["predose_status"] == ResultStatus.QUANTIFIED else None

    pre2 = quantified_predose(rows[1]) if len(rows) > 1 else None
    first_auc = rows[0]["auc_pct_days"] if rows else None
    for i, row in enumerate(rows):
        row["accumulation_ratio_trough"] = _ratio(quantified_predose(row), pre2) if i else None
        row["accumulation_ratio_auc"] = _ratio(row["auc_pct_days"], first_auc)


def _series_rows(
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
    _accumulation(rows)
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


def _series_lineage(lineage: pl.DataFrame) -> dict[tuple[str, str], tuple[list[Any], list[Any]]]:
    """Each curve's (source hashes, ingest times) of its trend rows, in row order.

    A row without patient or specimen belongs to no curve (an equality never matches a null).
    """
    out: dict[tuple[str, str], tuple[list[Any], list[Any]]] = {}
    if lineage.height == 0:
        return out
    for (patient, specimen), rows in lineage.partition_by(*SERIES_KEY, as_dict=True).items():
        if patient is None or specimen is None:
            continue
        out[(patient, specimen)] = (
            _column(rows, "source_sha256"),
            _column(rows, "ingested_at"),
        )
    return out


def _column(frame: pl.DataFrame, name: str) -> list[Any]:
    return frame[name].to_list() if name in frame.columns else []


def _doses(group: pl.DataFrame) -> list[_Dose]:
    times = group["infused_at"].to_list()
    cells = _column(group, "cells") or [None] * group.height
    return [
        _Dose(int(n), (at - times[0]).total_seconds() / 86_400.0, c)
        for n, at, c in zip(group["dose_number"].to_list(), times, cells, strict=True)
    ]


def compute_kinetics(
    trends: pl.LazyFrame,
    infusions: pl.LazyFrame,
    *,
    predose_window_days: float = 1.0,
    follow_up_end_day: float | None = None,
) -> pl.LazyFrame:
    """Return NCA parameters per patient x specimen x dose interval and per patient x specimen overall.

    Works on one patient's rows or many; patients without infusions get no rows. The rules are in
    the module docstring (methods.md 8). Collects its inputs: NCA is per-curve arithmetic.

    Parameters
    ----------
    trends
        Rows of ``schemas.trends.Trends`` (``specimen``, ``days_since_dose1``, ``result_status``,
        ``pct_ink`` are used; lineage columns when present).
    infusions
        Rows of ``schemas.warehouse.Infusions`` (``cells`` for the dose-normalised Cmax).
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
        .select(*SERIES_KEY, "sample_id", "days_since_dose1", "result_status", "pct_ink")
        .sort(*SERIES_KEY, "days_since_dose1", "sample_id")
        .collect()
    )
    lineage = trends.select(*SERIES_KEY, *lineage_cols).collect()
    inf_names = set(infusions.collect_schema().names())
    inf = (
        infusions.select(
            "patient_id",
            "dose_number",
            "infused_at",
            *(c for c in ("cells", "source_sha256", "ingested_at") if c in inf_names),
        )
        .sort("patient_id", "infused_at")
        .collect()
    )
    series: dict[tuple[str, str], list[_Sample]] = {}
    for r in t.iter_rows(named=True):
        series.setdefault((r["patient_id"], r["specimen"]), []).append(
            _Sample(r["sample_id"], r["days_since_dose1"], r["result_status"], r["pct_ink"])
        )
    by_patient: dict[str, list[tuple[str, list[_Sample]]]] = {}
    for (patient, specimen), samples in sorted(series.items()):
        by_patient.setdefault(patient, []).append((specimen, samples))
    stamps = _series_lineage(lineage)
    out: list[dict[str, Any]] = []
    for (patient_id,), group in inf.group_by("patient_id", maintain_order=True):
        doses = _doses(group)
        for specimen, samples in by_patient.get(patient_id, []):
            rows = _series_rows(
                samples,
                doses,
                predose_window_days=predose_window_days,
                follow_up_end_day=follow_up_end_day,
            )
            hashes, times = stamps.get((patient_id, specimen), ([], []))
            stamp = _lineage(
                _column(group, "source_sha256") + hashes, _column(group, "ingested_at") + times
            )
            out.extend({"patient_id": patient_id, "specimen": specimen, **r, **stamp} for r in rows)
    return pl.DataFrame(out, schema=KINETICS_COLUMNS).lazy()


def summarise_cohort(kinetics: pl.LazyFrame) -> pl.LazyFrame:
    """Return the median and range of each kinetic parameter per specimen and dose across patients.

    One row per specimen x scope x dose number x parameter (``COHORT_PARAMETERS``);
    ``n_patients`` counts the patients with that dose interval, ``n_values`` those with a value.

    Parameters
    ----------
    kinetics
        Rows of ``schemas.trends.Kinetics``.

    Returns
    -------
    pl.LazyFrame
        Rows of ``schemas.trends.CohortKinetics``, ordered by specimen, scope, dose and parameter
        order.
    """
    order = {name: i for i, name in enumerate(COHORT_PARAMETERS)}
    index = ["patient_id", "specimen", "scope", "dose_number"]
    long = kinetics.select(*index, *(pl.col(p).cast(pl.Float64) for p in order)).unpivot(
        index=index, on=list(order), variable_name="parameter", value_name="value"
    )
    return (
        long.group_by("specimen", "scope", "dose_number", "parameter")
        .agg(
            pl.col("patient_id").n_unique().cast(pl.Int32).alias("n_patients"),
            pl.col("value").count().cast(pl.Int32).alias("n_values"),
            pl.col("value").median().alias("median"),
            pl.col("value").min().alias("min"),
            pl.col("value").max().alias("max"),
        )
        .with_columns(pl.col("parameter").replace_strict(order, return_dtype=pl.Int32).alias("_o"))
        .sort("specimen", "scope", "dose_number", "_o", nulls_last=True)
        .drop("_o")
    )
