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
    specimen: str | None = "PB",
    ci_quantile: float | None = None,
    recipient: tuple[float, float, float] | None = None,
) -> dict[str, Any]:
    """Return one Chimerism row; the default CI of a value is x/1.25 .. x*1.25 (x +/- 2 for STR).

    ``recipient`` = (pct, ci_low, ci_high) makes it a three-genome row: the HSCT donor holds the
    rest (100 - iNK - recipient).
    """
    if status in ("quantified", "below_loq") and ci is None and pct is not None:
        ci = (
            (max(pct - 2.0, 0.0), min(pct + 2.0, 100.0))
            if method == "STR"
            else (pct / 1.25, min(pct * 1.25, 100.0))
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
        "specimen": specimen,
        "method": method,
        "pct_ink": pct,
        "pct_ink_raw": pct,
        "ci_low": None if ci is None else ci[0],
        "ci_high": None if ci is None else ci[1],
        "ci_quantile": ci_quantile,
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
        "superseded_reason": "replaced in a test" if superseded else None,
        "purity_pct": None,
        "pct_ink_purity_corrected": None,
        "source_file": "test.csv",
        **_genomes(pct if status in ("quantified", "below_loq") else 0.0, recipient),
    }


def _genomes(ink: float | None, recipient: tuple[float, float, float] | None) -> dict[str, Any]:
    if recipient is None:
        return {}
    rest = 100.0 - (ink or 0.0) - recipient[0]
    return {
        "genome_model": "three_genome",
        "pct_recipient": recipient[0],
        "pct_recipient_ci_low": recipient[1],
        "pct_recipient_ci_high": recipient[2],
        "pct_hsct_donor": max(rest, 0.0),
        "pct_hsct_donor_ci_low": None,
        "pct_hsct_donor_ci_high": None,
    }


def value_result(
    patient_id: str, sample_id: str, day: float, pct: float, **kw: Any
) -> dict[str, Any]:
    """Return a result whose state follows the value: ND < LoD 0.05 <= below_loq < LoQ 0.2."""
    if pct < 0.05:
        return result(patient_id, sample_id, day, "not_detected", **kw)
    status = "below_loq" if pct < 0.2 else "quantified"
    return result(patient_id, sample_id, day, status, round(pct, 6), **kw)


THREE_GENOME_COLUMNS = {
    "genome_model": pl.String,
    "pct_recipient": pl.Float64,
    "pct_recipient_ci_low": pl.Float64,
    "pct_recipient_ci_high": pl.Float64,
    "pct_hsct_donor": pl.Float64,
    "pct_hsct_donor_ci_low": pl.Float64,
    "pct_hsct_donor_ci_high": pl.Float64,
}


def chimerism_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """Return validated Chimerism rows, plus the three-genome columns when any row has them."""
    three = any("genome_model" in r for r in rows)
    base = [{k: v for k, v in r.items() if k not in THREE_GENOME_COLUMNS} for r in rows]
    frame = _validated(base)
    if not three:
        return frame
    extra = pl.DataFrame(
        [{k: r.get(k) for k in THREE_GENOME_COLUMNS} for r in rows], schema=THREE_GENOME_COLUMNS
    )
    return frame.hstack(extra)


def _validated(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
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
        "superseded_reason": pl.String,
        "purity_pct": pl.Float64,
        "pct_ink_purity_corrected": pl.Float64,
    }
    frame = pl.DataFrame(rows, schema_overrides=schema)
    return Chimerism.validate(frame, lazy=True)


def infusions_frame(
    doses: dict[str, Sequence[float]], cells: dict[str, Sequence[float]] | None = None
) -> pl.DataFrame:
    """Return validated Infusions rows: ``{patient: [dose days]}`` (cells per dose, default 1e9)."""
    rows = [
        {
            "source_sha256": SHA,
            "pipeline_version": "test",
            "ingested_at": T0,
            "patient_id": patient_id,
            "dose_number": i,
            "infused_at": at(day),
            "cells": (cells or {}).get(patient_id, [1e9] * len(days))[i - 1],
            "product_lot": "LOT1",
        }
        for patient_id, days in doses.items()
        for i, day in enumerate(days, start=1)
    ]
    return Infusions.validate(pl.DataFrame(rows), lazy=True)


def kinetic_patient(
    patient_id: str,
    *,
    peak_pct: float = 2.0,
    half_life_days: float = 1.5,
    dose_days: Sequence[float] = PROTOCOL_DOSE_DAYS,
    peaks: Sequence[float] | None = None,
    follow_up: Sequence[float] = (171.0, 192.0, 365.0),
    **kw: Any,
) -> list[dict[str, Any]]:
    """Return a patient whose level is a sum of exponential decays, one per dose.

    Each dose adds ``peaks[i]`` (default ``peak_pct``) one day after it and decays with
    ``half_life_days``; samples are a baseline, a pre-dose trough 2 h before every later dose, a
    sample one day after every dose and the ``follow_up`` days. States follow the value (LoD 0.05,
    LoQ 0.2); ``kw`` goes to every row (e.g. ``method``).
    """
    k = math.log(2) / half_life_days
    heights = list(peaks) if peaks is not None else [peak_pct] * len(dose_days)

    def level(t: float) -> float:
        return sum(
            h * math.exp(-k * (t - d - 1))
            for d, h in zip(dose_days, heights, strict=True)
            if t >= d + 1
        )

    times = [-2.0]
    for d in dose_days:
        if d > 0:
            times.append(d - 2 / 24)
        times.append(d + 1)
    times += list(follow_up)
    return [
        value_result(patient_id, f"{patient_id}-S{i:02d}", t, level(t), **kw)
        for i, t in enumerate(sorted(times))
    ]


def typical_patient(
    patient_id: str, *, peak_pct: float = 2.0, half_life_days: float = 1.5
) -> list[dict[str, Any]]:
    """Return a transient-engraftment patient: baseline, pre-dose and day+1 samples, clearance."""
    return kinetic_patient(patient_id, peak_pct=peak_pct, half_life_days=half_life_days)
