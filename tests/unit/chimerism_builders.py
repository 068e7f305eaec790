"""Tiny builders for Chimerism / Infusions frames used by the trend, kinetics and alert tests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from schemas.warehouse import Chimerism, Infusions

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
SHA = "0" * 64
PROTOCOL_DOSE_DAYS = (0, 3, 7, 10, 14, 17, 21, 24, 52, 80, 108, 136, 164)


def at(day: float) -> datetime:
    """Return the time ``day`` days after dose 1."""
    return T0 + timedelta(days=day)


def result(
    patient_id: str,
    sample_id: str,
    day: float,
    status: str,
    pct: float | None = None,
    *,
    method: str = "ddPCR",
    ci: tuple[float, float] | None = None,
    lod: float = 0.05,
    headline: bool = True,
    superseded: bool = False,
    qc: str = "pass",
) -> dict[str, Any]:
    """Return one Chimerism row; the default CI of a value is x/1.25 .. x*1.25 (x +/- 2 for STR)."""
    if status in ("quantified", "below_loq") and ci is None and pct is not None:
        ci = (
            (max(pct - 2.0, 0.0), min(pct + 2.0, 100.0))
            if method == "STR"
            else (pct / 1.25, pct * 1.25)
        )
    if status == "not_detected":
        ci = (0.0, lod)
    return {
        "source_sha256": SHA,
        "pipeline_version": "test",
        "ingested_at": T0,
        "patient_id": patient_id,
        "sample_id": sample_id,
        "collected_at": at(day),
        "study_day": math.floor(day + 1e-9),
        "specimen": "PB",
        "method": method,
        "pct_ink": pct,
        "pct_ink_raw": pct,
        "ci_low": None if ci is None else ci[0],
        "ci_high": None if ci is None else ci[1],
        "ci_quantile": None,
        "lod_pct": lod,
        "loq_pct": 0.2,
        "result_status": status,
        "qc_verdict": qc,
        "qc_reasons": None,
        "n_informative": None,
        "clamped": False,
        "ink_cells_per_ul": None,
        "is_headline": headline,
        "headline_rule": None,
        "superseded": superseded,
        "source_file": "test.csv",
    }


def value_result(
    patient_id: str, sample_id: str, day: float, pct: float, **kw: Any
) -> dict[str, Any]:
    """Return a result whose state follows the value: ND < LoD 0.05 <= below_loq < LoQ 0.2."""
    if pct < 0.05:
        return result(patient_id, sample_id, day, "not_detected", **kw)
    status = "below_loq" if pct < 0.2 else "quantified"
    return result(patient_id, sample_id, day, status, round(pct, 6), **kw)


def chimerism_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """Return validated Chimerism rows."""
    schema = {
        "pct_ink": pl.Float64,
        "pct_ink_raw": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "ci_quantile": pl.Float64,
        "qc_reasons": pl.String,
        "n_informative": pl.Int32,
        "ink_cells_per_ul": pl.Float64,
        "headline_rule": pl.String,
    }
    frame = pl.DataFrame(rows, schema_overrides=schema)
    return Chimerism.validate(frame, lazy=True)


def infusions_frame(doses: dict[str, Sequence[float]]) -> pl.DataFrame:
    """Return validated Infusions rows: ``{patient: [dose days]}``."""
    rows = [
        {
            "source_sha256": SHA,
            "pipeline_version": "test",
            "ingested_at": T0,
            "patient_id": patient_id,
            "dose_number": i,
            "infused_at": at(day),
            "cells": 1e9,
            "product_lot": "LOT1",
        }
        for patient_id, days in doses.items()
        for i, day in enumerate(days, start=1)
    ]
    return Infusions.validate(pl.DataFrame(rows), lazy=True)


def typical_patient(
    patient_id: str, *, peak_pct: float = 2.0, half_life_days: float = 1.5
) -> list[dict[str, Any]]:
    """Return a transient-engraftment patient: baseline, pre-dose and day+1 samples, clearance."""
    k = math.log(2) / half_life_days

    def level(t: float) -> float:
        return sum(peak_pct * math.exp(-k * (t - d - 1)) for d in PROTOCOL_DOSE_DAYS if t >= d + 1)

    times = [-2.0]
    for d in PROTOCOL_DOSE_DAYS:
        if d > 0:
            times.append(d - 2 / 24)
        times.append(d + 1)
    times += [171.0, 192.0, 365.0]
    rows = []
    for i, t in enumerate(sorted(times)):
        rows.append(value_result(patient_id, f"{patient_id}-S{i:02d}", t, level(t)))
    return rows
