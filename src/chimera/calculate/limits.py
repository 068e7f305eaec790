"""Detection capability (LoB/LoD/LoQ) and result states, shared by every method.

Sources: CLSI EP17-A2; Armbruster & Pry, Clin Biochem Rev 2008;29 Suppl 1:S49 (LoB, LoD);
MIQE, Clin Chem 2009;55:611 (LoQ); methods.md section 4 (three result states, never a bare 0).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from schemas.vocab import GenomeModel, Method, QcVerdict, ResultStatus

__all__ = [
    "GenomeModel",
    "Method",
    "MethodOutput",
    "QcVerdict",
    "ResultStatus",
    "SampleResult",
]


def limit_of_blank(blanks: Sequence[float]) -> float:
    """LoB = mean_B + 1.645 * SD_B (parametric, CLSI EP17-A2).

    Examples
    --------
    >>> round(limit_of_blank([0.0, 0.01, 0.02, 0.01]), 5)
    0.02343
    """
    if len(blanks) < 2:
        msg = f"LoB needs at least 2 blank results, got {len(blanks)}"
        raise ValueError(msg)
    return statistics.fmean(blanks) + 1.645 * statistics.stdev(blanks)


def limit_of_detection(lob: float, low_results: Sequence[Sequence[float]]) -> float:
    """LoD = LoB + c_beta * SD_low, c_beta = 1.645 / (1 - 1/(4(L - J))) (CLSI EP17-A2).

    ``low_results`` holds the replicate results of each of J low-level samples (L results in all);
    SD_low is the pooled SD over those samples.
    """
    groups = [list(g) for g in low_results if len(g) >= 2]
    n_results = sum(len(g) for g in groups)
    n_samples = len(groups)
    if n_samples == 0 or n_results - n_samples < 1:
        msg = "LoD needs at least one low-level sample with 2 or more replicate results"
        raise ValueError(msg)
    pooled_var = sum((len(g) - 1) * statistics.variance(g) for g in groups) / (
        n_results - n_samples
    )
    c_beta = 1.645 / (1 - 1 / (4 * (n_results - n_samples)))
    return lob + c_beta * math.sqrt(pooled_var)


def classify_result(
    pct_ink_raw: float | None,
    *,
    detected: bool,
    failed: bool,
    loq_pct: float | None,
) -> ResultStatus:
    """Return the result state of one estimate (methods.md section 4, three-state table).

    ``detected`` is the method's own detection call (any marker signal above LoB, at least one
    amplified marker replicate, at least one positive droplet above the blank).
    """
    if failed:
        return ResultStatus.FAILED
    if not detected or pct_ink_raw is None:
        return ResultStatus.NOT_DETECTED
    if loq_pct is not None and pct_ink_raw < loq_pct:
        return ResultStatus.BELOW_LOQ
    return ResultStatus.QUANTIFIED


def clamp_pct(value: float | None) -> tuple[float | None, bool]:
    """Clamp a % iNK estimate to [0, 100]; the flag says whether it was outside (methods.md 2.2)."""
    if value is None:
        return None, False
    clamped = min(100.0, max(0.0, value))
    return clamped, clamped != value


@dataclass(frozen=True)
class DilutionLevel:
    """Replicate results of one nominal level of a dilution series (% iNK)."""

    nominal_pct: float
    n: int
    n_detected: int
    mean_pct: float | None
    cv: float | None


def summarise_dilution_series(
    rows: Sequence[tuple[float, str, float | None]],
) -> list[DilutionLevel]:
    """Group ``(nominal_pct, result_status, pct_ink)`` replicates by nominal level (> 0 %)."""
    by_level: dict[float, list[tuple[str, float | None]]] = {}
    for nominal, status, value in rows:
        if nominal > 0:
            by_level.setdefault(float(nominal), []).append((status, value))
    levels = []
    for nominal in sorted(by_level):
        reps = by_level[nominal]
        values = [v for s, v in reps if s in ("quantified", "below_loq") and v is not None]
        mean = statistics.fmean(values) if values else None
        cv = statistics.stdev(values) / mean if len(values) >= 2 and mean else None
        levels.append(DilutionLevel(nominal, len(reps), len(values), mean, cv))
    return levels


def limits_from_dilution_series(
    levels: Sequence[DilutionLevel],
    *,
    detection_rate: float = 0.95,
    max_relative_error: float = 0.25,
    max_cv: float = 0.25,
) -> tuple[float | None, float | None]:
    """LoD and LoQ (% iNK) from a dilution series of the product (CLSI EP17-A2; MIQE).

    LoD = the lowest level detected in >= ``detection_rate`` of its replicates, with every higher
    level detected as well. LoQ = the lowest level >= LoD whose mean is within
    ``max_relative_error`` of nominal and whose replicate CV is <= ``max_cv``, with every higher
    level meeting the same goal (methods.md section 4). None when no level qualifies.

    Examples
    --------
    >>> series = [DilutionLevel(0.01, 4, 1, 0.02, None), DilutionLevel(0.05, 4, 4, 0.07, 0.4),
    ...           DilutionLevel(0.1, 4, 4, 0.11, 0.2), DilutionLevel(1.0, 4, 4, 0.98, 0.05)]
    >>> limits_from_dilution_series(series)
    (0.05, 0.1)
    """
    lod = loq = None
    for level in sorted(levels, key=lambda x: x.nominal_pct, reverse=True):
        if level.n == 0 or level.n_detected / level.n < detection_rate:
            break
        lod = level.nominal_pct
    for level in sorted(levels, key=lambda x: x.nominal_pct, reverse=True):
        if lod is None or level.nominal_pct < lod or level.mean_pct is None:
            break
        accurate = abs(level.mean_pct - level.nominal_pct) <= max_relative_error * level.nominal_pct
        precise = level.cv is None or level.cv <= max_cv
        if not (accurate and precise):
            break
        loq = level.nominal_pct
    return lod, loq


@dataclass(frozen=True)
class GenomeShare:
    """Unclamped % of one non-iNK genome (recipient or prior HSCT donor) with its 95 % CI."""

    pct_raw: float | None
    ci_low_raw: float | None = None
    ci_high_raw: float | None = None


@dataclass(frozen=True)
class SampleResult:
    """One sample's chimerism by one method, before patient context and lineage are added.

    All percentages are % iNK (0-100 scale). ``pct_ink_raw`` and the CI are unclamped estimates;
    :func:`results_frame` clamps them.
    """

    sample_id: str
    method: Method
    result_status: ResultStatus
    pct_ink_raw: float | None
    ci_low_raw: float | None
    ci_high_raw: float | None
    lod_pct: float | None
    loq_pct: float | None
    qc_verdict: QcVerdict
    qc_reasons: tuple[str, ...] = field(default_factory=tuple)
    n_informative: int | None = None
    ci_quantile: float | None = None
    """The quantile the 95 % CI was built with (t for few loci/replicates, z = 1.96 for a
    Poisson CI); None = 1.96. A CI converts back to an SE only with this quantile."""
    genome_model: GenomeModel = GenomeModel.TWO_GENOME
    recipient: GenomeShare | None = None
    """% recipient (the patient's own cells); None = 100 - % iNK (two genomes)."""
    hsct_donor: GenomeShare | None = None
    """% prior HSCT donor (three-genome patients only)."""
    source_sha256: str | None = None
    """The plate (source file) a PCR result was measured on: one result per sample x plate."""


def failed_result(
    sample_id: str,
    method: Method,
    reasons: Sequence[str],
    *,
    lod_pct: float | None = None,
    loq_pct: float | None = None,
) -> SampleResult:
    """Return a ``failed`` result: no estimate, QC verdict ``fail``, no informative marker."""
    return SampleResult(
        sample_id=sample_id,
        method=method,
        result_status=ResultStatus.FAILED,
        pct_ink_raw=None,
        ci_low_raw=None,
        ci_high_raw=None,
        lod_pct=lod_pct,
        loq_pct=loq_pct,
        qc_verdict=QcVerdict.FAIL,
        qc_reasons=tuple(reasons),
        n_informative=0,
    )


RESULT_COLUMNS: dict[str, pl.DataType] = {
    "sample_id": pl.String(),
    "method": pl.String(),
    "pct_ink": pl.Float64(),
    "pct_ink_raw": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "lod_pct": pl.Float64(),
    "loq_pct": pl.Float64(),
    "result_status": pl.String(),
    "qc_verdict": pl.String(),
    "qc_reasons": pl.String(),
    "n_informative": pl.Int32(),
    "clamped": pl.Boolean(),
    "ci_quantile": pl.Float64(),
    "genome_model": pl.String(),
    "pct_recipient": pl.Float64(),
    "pct_recipient_ci_low": pl.Float64(),
    "pct_recipient_ci_high": pl.Float64(),
    "pct_hsct_donor": pl.Float64(),
    "pct_hsct_donor_ci_low": pl.Float64(),
    "pct_hsct_donor_ci_high": pl.Float64(),
    "source_sha256": pl.String(),
}

MARKER_COLUMNS: dict[str, pl.DataType] = {
    "sample_id": pl.String(),
    "method": pl.String(),
    "marker": pl.String(),
    "replicate": pl.String(),
    "sharing": pl.String(),
    "donor_alleles": pl.String(),
    "recipient_alleles": pl.String(),
    "hsct_donor_alleles": pl.String(),
    "signal_ink": pl.Float64(),
    "signal_total": pl.Float64(),
    "ct": pl.Float64(),
    "positives": pl.Int64(),
    "accepted_droplets": pl.Int64(),
    "copies_per_ul": pl.Float64(),
    "pct_ink": pl.Float64(),
    "pct_ink_control_normalised": pl.Float64(),
    "pct_recipient": pl.Float64(),
    "pct_hsct_donor": pl.Float64(),
    "stutter_ratio": pl.Float64(),
    "included": pl.Boolean(),
    "exclusion_reason": pl.String(),
    "source_sha256": pl.String(),
}


def results_frame(results: Sequence[SampleResult]) -> pl.DataFrame:
    """Tabulate results with the ``RESULT_COLUMNS`` schema; values are clamped to [0, 100].

    ``pct_ink`` is kept only for ``quantified`` and ``below_loq`` (never a bare 0 for the others).
    """
    rows = []
    for r in results:
        keep_value = r.result_status in (ResultStatus.QUANTIFIED, ResultStatus.BELOW_LOQ)
        pct, clamped = clamp_pct(r.pct_ink_raw if keep_value else None)
        lo, _ = clamp_pct(r.ci_low_raw if keep_value else None)
        hi, _ = clamp_pct(r.ci_high_raw if keep_value else None)
        if not keep_value and r.result_status is ResultStatus.NOT_DETECTED:
            hi = r.lod_pct  # not detected: the upper bound is the sample's LoD
            lo = 0.0 if hi is not None else None
        reasons = list(r.qc_reasons)
        if clamped:
            reasons.append(f"estimate {r.pct_ink_raw:.2f} % outside 0-100 % was clamped")
        ci_low = None if lo is None or pct is None else min(lo, pct)
        ci_high = None if hi is None else (max(hi, pct) if pct is not None else hi)
        rows.append(
            {
                "sample_id": r.sample_id,
                "method": r.method.value,
                "pct_ink": pct,
                "pct_ink_raw": r.pct_ink_raw,
                "ci_low": ci_low,
                "ci_high": ci_high,
                **_other_genomes(r, pct, ci_low, ci_high),
                "lod_pct": r.lod_pct,
                "loq_pct": r.loq_pct,
                "result_status": r.result_status.value,
                "qc_verdict": r.qc_verdict.value,
                "qc_reasons": "; ".join(reasons) if reasons else None,
                "n_informative": r.n_informative,
                "clamped": clamped,
                "ci_quantile": r.ci_quantile,
                "source_sha256": r.source_sha256,
            }
        )
    return pl.DataFrame(rows, schema=RESULT_COLUMNS)


def _share_columns(prefix: str, share: GenomeShare | None) -> dict[str, float | None]:
    value, _ = clamp_pct(share.pct_raw if share else None)
    low, _ = clamp_pct(share.ci_low_raw if share else None)
    high, _ = clamp_pct(share.ci_high_raw if share else None)
    return {prefix: value, f"{prefix}_ci_low": low, f"{prefix}_ci_high": high}


def _other_genomes(
    r: SampleResult, pct: float | None, ci_low: float | None, ci_high: float | None
) -> dict[str, object]:
    """% recipient and % HSCT donor columns; two genomes: recipient = 100 - % iNK.

    A ``not_detected`` two-genome result is 100 % recipient with the CI (100 - LoD, 100).
    """
    recipient = r.recipient
    if recipient is None and r.genome_model is GenomeModel.TWO_GENOME:
        if pct is not None:
            recipient = GenomeShare(
                100.0 - pct,
                None if ci_high is None else 100.0 - ci_high,
                None if ci_low is None else 100.0 - ci_low,
            )
        elif r.result_status is ResultStatus.NOT_DETECTED:
            recipient = GenomeShare(100.0, None if ci_high is None else 100.0 - ci_high, 100.0)
    return {
        "genome_model": r.genome_model.value,
        **_share_columns("pct_recipient", recipient),
        **_share_columns("pct_hsct_donor", r.hsct_donor),
    }


def empty_markers() -> pl.DataFrame:
    """An empty per-marker detail frame with the ``MARKER_COLUMNS`` schema."""
    return pl.DataFrame(schema=MARKER_COLUMNS)


def markers_frame(rows: Sequence[dict[str, object]]) -> pl.DataFrame:
    """Tabulate per-marker detail rows; missing keys become nulls.

    polars reads the dicts in one pass with the full schema (missing keys null, other keys
    ignored), so no filled copy of every row is built in Python.
    """
    return pl.DataFrame(rows, schema=MARKER_COLUMNS)


@dataclass(frozen=True)
class MethodOutput:
    """What a method's calculation returns: one row per reported sample and the detail behind it.

    ``results`` has ``RESULT_COLUMNS``; ``markers`` has ``MARKER_COLUMNS``.
    """

    results: pl.DataFrame
    markers: pl.DataFrame
