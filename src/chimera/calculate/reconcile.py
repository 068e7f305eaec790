"""Pick one headline value per sample when several methods measured it (methods.md section 7).

Declared rule, in order:

1. STR quantified at or above ``str_headline_above_pct`` (its LoQ, default 5 %) -> STR
   ("STR above its LoQ"): STR is validated in the mixed range where qPCR is least accurate.
2. Otherwise the first non-failed result in ``pcr_preference`` order (ddPCR, qPCR, STR)
   ("PCR below STR LoQ"): only PCR sees the 0.01-5 % range.
3. Otherwise (every method failed) the first failed row ("all methods failed").

Values are never averaged across methods, and method disagreement is never hidden
(``METHOD_DISCORDANCE``), judged with the critical difference of :mod:`chimera.critical_difference`
(each CI turned into an SE with its ``ci_quantile``, plus each method's between-run variation):

* two ``quantified`` results that differ beyond the critical difference; the headline is then the
  one with the smaller standard uncertainty (methods.md 7);
* a ``quantified`` result against another method's ``not_detected`` whose LoD lies below the
  quantified value's lower bound (that method should have seen it). An STR ``not_detected`` with
  a PCR value below the STR LoD is concordant.

Either makes the headline's ``qc_verdict`` ``review`` (a ``fail`` stays ``fail``), with both
values named in ``qc_reasons`` and ``headline_rule``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from chimera.alerts.config import CriticalDifferenceSettings
from chimera.critical_difference import RESULT_FIELDS, compare_pairs, standard_uncertainty
from chimera.result_text import describe
from chimera.settings import ReconcileSettings
from schemas.vocab import Method, QcVerdict, ResultStatus

DISCORDANCE = "METHOD_DISCORDANCE"
_JUDGED = (ResultStatus.QUANTIFIED, ResultStatus.NOT_DETECTED)


def discordances(
    rows: Sequence[Mapping[str, Any]], *, cd: CriticalDifferenceSettings
) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Return the pairs of one sample's results (different methods) that disagree.

    Examples
    --------
    >>> from chimera.alerts.config import packaged_alert_settings
    >>> cd = packaged_alert_settings().critical_difference
    >>> str_row = {"method": "STR", "pct_ink": 12.0, "ci_low": 10.0, "ci_high": 14.0,
    ...            "result_status": "quantified"}
    >>> nd = {"method": "ddPCR", "result_status": "not_detected", "lod_pct": 0.05}
    >>> len(discordances([str_row, nd], cd=cd))
    1
    """
    judged = [r for r in rows if r.get("result_status") in _JUDGED]
    pairs = [
        (a, b)
        for a, b in itertools.combinations(judged, 2)
        if ResultStatus.QUANTIFIED in (a["result_status"], b["result_status"])
    ]
    changes = compare_pairs(pairs, cd=cd)
    return [
        pair for pair, change in zip(pairs, changes, strict=True) if change["significant_change"]
    ]


def _pick(rows: Mapping[str, Mapping[str, Any]], *, settings: ReconcileSettings) -> tuple[str, str]:
    str_row = rows.get(Method.STR)
    if (
        str_row is not None
        and str_row["result_status"] == ResultStatus.QUANTIFIED
        and isinstance(str_row["pct_ink"], float)
        and str_row["pct_ink"] >= settings.str_headline_above_pct
    ):
        return Method.STR.value, f"STR above its LoQ ({settings.str_headline_above_pct:g} %)"
    for method in settings.pcr_preference:
        row = rows.get(method)
        if row is not None and row["result_status"] != ResultStatus.FAILED:
            if len(rows) == 1:
                return method, "only method measured"
            return method, f"preference {' > '.join(settings.pcr_preference)} below STR LoQ"
    return next(iter(rows)), "all methods failed"


def _uncertainty_or_inf(row: Mapping[str, Any], cd: CriticalDifferenceSettings) -> float:
    u = standard_uncertainty(row, cd=cd)
    return float("inf") if u is None else u


def _named(row: Mapping[str, Any]) -> str:
    return f"{row['method']} {describe(row)}"


def _sample_verdict(
    rows: dict[str, dict[str, Any]],
    *,
    settings: ReconcileSettings,
    cd: CriticalDifferenceSettings,
) -> tuple[str, str, str | None]:
    """Return the headline method, its rule and the discordance text (None = concordant)."""
    chosen, rule = _pick(rows, settings=settings)
    clashes = discordances(list(rows.values()), cd=cd)
    if not clashes:
        return chosen, rule, None
    both = [p for p in clashes if all(r["result_status"] == ResultStatus.QUANTIFIED for r in p)]
    if any(rows[chosen] in p for p in both):
        candidates = [r for p in both for r in p]
        best = min(candidates, key=lambda r: _uncertainty_or_inf(r, cd))
        if best["method"] != chosen:
            chosen, rule = str(best["method"]), f"{rule}; smaller uncertainty of discordant results"
    text = "; ".join(f"{DISCORDANCE}: {_named(a)} vs {_named(b)}" for a, b in clashes)
    return chosen, f"{rule}; {text}", text


def _single_rule(settings: ReconcileSettings) -> pl.Expr:
    """:func:`_pick`'s rule for a sample measured by one method only, as one expression."""
    pct = pl.col("pct_ink")
    str_above = (
        (pl.col("method") == Method.STR.value)
        & pl.col("result_status").eq_missing(ResultStatus.QUANTIFIED.value)
        & pct.is_not_null()
        & ~pct.is_nan()
        & (pct >= settings.str_headline_above_pct)
    ).fill_null(False)
    preferred = (
        pl.col("method").is_in(list(settings.pcr_preference))
        & pl.col("result_status").ne_missing(ResultStatus.FAILED.value)
    ).fill_null(False)
    return (
        pl.when(str_above)
        .then(pl.lit(f"STR above its LoQ ({settings.str_headline_above_pct:g} %)"))
        .when(preferred)
        .then(pl.lit("only method measured"))
        .otherwise(pl.lit("all methods failed"))
    )


_FLAGS: dict[str, pl.DataType] = {
    "method": pl.String(),
    "headline_rule": pl.String(),
    "_clash": pl.String(),
}


def _headline_flags(
    results: pl.DataFrame,
    keys: list[str],
    *,
    settings: ReconcileSettings,
    cd: CriticalDifferenceSettings,
) -> pl.DataFrame:
    """The chosen method, rule and discordance text of each sample (``keys``) of ``results``.

    A sample measured by one method gets :func:`_pick`'s rule as one expression over all such
    samples; a sample measured by several is judged row by row (:func:`_sample_verdict`), all
    of them read in one pass, with only the columns a verdict reads (``RESULT_FIELDS``, QC).
    """
    size = pl.len().over(keys)
    single = results.filter(size == 1).select(
        *keys, "method", headline_rule=_single_rule(settings), _clash=pl.lit(None, pl.String)
    )
    read = [c for c in dict.fromkeys([*keys, *RESULT_FIELDS, "qc_verdict"]) if c in results]
    several = results.filter(size > 1).select(read).sort(keys, maintain_order=True, nulls_last=True)
    flags: list[tuple[Any, ...]] = []
    rows = several.iter_rows(named=True)
    for key, group in itertools.groupby(rows, key=lambda r: tuple(r[k] for k in keys)):
        by_method = {str(r["method"]): r for r in group}
        chosen, rule, clash = _sample_verdict(by_method, settings=settings, cd=cd)
        flags.append((*key, chosen, rule, clash))
    schema: dict[str, pl.DataType] = {**results.select(keys).schema, **_FLAGS}
    return pl.concat([single, pl.DataFrame(flags, schema=schema, orient="row")])


def choose_headline(
    results: pl.DataFrame,
    *,
    settings: ReconcileSettings,
    cd: CriticalDifferenceSettings,
    within: Sequence[str] = (),
) -> pl.DataFrame:
    """Add ``is_headline`` and ``headline_rule`` to current (not superseded) result rows.

    ``results`` holds ``sample_id, method, pct_ink, ci_low, ci_high, ci_quantile, lod_pct,
    result_status, qc_verdict, qc_reasons`` for one or more samples, one row per sample x method
    (a sample = its ``sample_id`` within the columns ``within``, e.g. many patients at once).
    A discordant sample's headline gets ``qc_verdict = review`` and the discordance in
    ``qc_reasons``.
    """
    keys = [*within, "sample_id"]
    chosen_frame = _headline_flags(results, keys, settings=settings, cd=cd)
    discordant = pl.col("_clash").is_not_null()
    return (
        results.drop("is_headline", "headline_rule", strict=False)
        .join(chosen_frame, on=[*keys, "method"], how="left", maintain_order="left")
        .with_columns(
            is_headline=pl.col("headline_rule").is_not_null(),
            qc_verdict=pl.when(discordant & (pl.col("qc_verdict") != QcVerdict.FAIL))
            .then(pl.lit(QcVerdict.REVIEW.value))
            .otherwise(pl.col("qc_verdict")),
            qc_reasons=pl.when(discordant)
            .then(
                pl.concat_str(
                    [pl.col("qc_reasons"), pl.col("_clash")], separator="; ", ignore_nulls=True
                )
            )
            .otherwise(pl.col("qc_reasons")),
        )
        .drop("_clash")
    )
