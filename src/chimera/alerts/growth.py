"""Rules for iNK that stays or grows: persistence, accumulation and unexpected expansion (methods.md 9.3).

* ``persistence``: a ``quantified`` result more than ``days_after_last_dose`` after the final dose.
* ``accumulation``: a pre-dose trough of a closely spaced dose at least ``min_ratio`` x C_pre,2 and
  above it beyond the critical difference; expected pharmacology of a long half-life, reported
  with R_ac and the observed half-life.
* ``unexpected_expansion``: growth dosing cannot explain: ``min_consecutive_rises`` consecutive
  significant rises with no dose in between, or a result above the patient's own fitted decay
  after the dose (accepted PKNCA fit of the earlier points after the interval's Cmax, its 95 %
  prediction interval as the expected value's CI) beyond the critical difference.

Each rule is causal: whether an episode exists depends only on results up to its onset, so a
later sample never removes an alert already raised.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

from chimera.alerts.config import (
    AccumulationRule,
    CriticalDifferenceSettings,
    PersistenceRule,
    UnexpectedExpansionRule,
)
from chimera.alerts.evidence import (
    Episode,
    Row,
    Series,
    comparison,
    counted_rows,
    day_of,
    episode,
    sample_evidence,
    uncounted_in_span,
    when,
)
from chimera.critical_difference import compare_pairs, significant_direction
from chimera.nca import estimate_half_life
from chimera.result_text import describe
from schemas.vocab import AlertRuleId, ChangeDirection, KineticsScope, ResultStatus


def _quantified(row: Row) -> bool:
    return row.get("result_status") == ResultStatus.QUANTIFIED and row.get("pct_ink") is not None


def persistence(
    series: Series, rule: PersistenceRule, cd: CriticalDifferenceSettings
) -> list[Episode]:
    """``quantified`` more than ``days_after_last_dose`` after the final dose (state gate only)."""
    del cd  # the gate is the result state, no comparison
    if not series.doses:
        return []
    final = series.doses[-1]
    late = [
        r
        for r in counted_rows(series, rule)
        if _quantified(r)
        and r.get("dose_number") == final.number
        and r["days_since_last_infusion"] > rule.days_after_last_dose
    ]
    if not late:
        return []
    last = late[-1]
    message = (
        f"iNK still quantified {last['days_since_last_infusion']:.0f} days after dose "
        f"{final.number} (limit {rule.days_after_last_dose:g} days): {describe(last)} on "
        f"{when(last)}" + (f"; {len(late)} such samples" if len(late) > 1 else "") + ". "
        "Allogeneic iNK are expected to clear within one dosing interval."
    )
    evidence = {
        "compared": "each quantified result after the final dose with the time since that dose",
        "error_model": "result state: only quantified results count",
        "last_dose_number": final.number,
        "days_after_last_dose_limit": rule.days_after_last_dose,
        "samples": [sample_evidence(r) for r in late],
        "not_counted": uncounted_in_span(series, rule, day_of(late[0]), day_of(last)),
    }
    key = f"after dose {final.number}"
    return [episode(AlertRuleId.PERSISTENCE, rule, series, key, late[0], message, evidence)]


def _peak_to_trough_half_lives(series: Series) -> list[dict[str, Any]]:
    """Half-life from each interval's Cmax to its trough: ln 2 x dt / ln(Cmax / trough)."""
    by_id = series.by_id()
    out = []
    for k in series.kinetics:
        peak = by_id.get(k.get("cmax_sample_id") or "")
        trough = by_id.get(k.get("trough_sample_id") or "")
        if k.get("scope") != KineticsScope.DOSE or peak is None or trough is None:
            continue
        if not _quantified(trough) or not 0 < trough["pct_ink"] < peak["pct_ink"]:
            continue
        days = day_of(trough) - day_of(peak)
        if days <= 0:
            continue
        half_life = math.log(2) * days / math.log(peak["pct_ink"] / trough["pct_ink"])
        out.append(
            {
                "dose_number": k["dose_number"],
                "peak_sample_id": peak["sample_id"],
                "trough_sample_id": trough["sample_id"],
                "half_life_days": half_life,
            }
        )
    return out


def _half_life_evidence(series: Series) -> dict[str, Any]:
    """The observed half-life: peak-to-trough per interval and the accepted terminal fits."""
    per_interval = _peak_to_trough_half_lives(series)
    fits = [
        {
            "scope": k["scope"],
            "dose_number": k.get("dose_number"),
            "half_life_days": k["half_life_days"],
        }
        for k in series.kinetics
        if k.get("half_life_days") is not None
    ]
    return {
        "observed_half_life_days": statistics.median(h["half_life_days"] for h in per_interval)
        if per_interval
        else None,
        "peak_to_trough_half_lives": per_interval,
        "fitted_half_lives": fits,
        "fitted_half_life_reason": None if fits else "no accepted log-linear fit (PKNCA criteria)",
    }


def _troughs(series: Series, rule: AccumulationRule, rows: Sequence[Row]) -> list[tuple[int, Row]]:
    """Counted quantified results within the pre-dose window of doses 3.. of the close schedule."""
    out = []
    for prev, dose in zip(series.doses[1:], series.doses[2:], strict=False):
        if dose.day - prev.day > rule.max_dosing_interval_days:
            continue
        out += [
            (dose.number, r)
            for r in rows
            if _quantified(r) and dose.day - rule.predose_window_days <= day_of(r) < dose.day
        ]
    return out


def accumulation(
    series: Series, rule: AccumulationRule, cd: CriticalDifferenceSettings
) -> list[Episode]:
    """Troughs rising to ``min_ratio`` x C_pre,2 and beyond the CD across closely spaced doses."""
    if len(series.doses) < 3:
        return []
    rows = counted_rows(series, rule)
    dose2 = series.doses[1]
    before2 = [r for r in rows if dose2.day - rule.predose_window_days <= day_of(r) < dose2.day]
    if not before2 or not _quantified(before2[-1]):
        return []
    ref = before2[-1]
    troughs = _troughs(series, rule, rows)
    changes = compare_pairs([(ref, r) for _, r in troughs], cd=cd)
    judged = []
    for (dose_number, row), change in zip(troughs, changes, strict=True):
        ratio = row["pct_ink"] / ref["pct_ink"]
        hit = ratio >= rule.min_ratio and significant_direction(change) is ChangeDirection.RISE
        judged.append((dose_number, row, ratio, change, hit))
    hits = [j for j in judged if j[4]]
    if not hits:
        return []
    first_dose, first, *_ = hits[0]
    peak = max(hits, key=lambda j: j[2])
    half_life = _half_life_evidence(series)
    observed = half_life["observed_half_life_days"]
    message = (
        f"Pre-dose troughs rose across closely spaced doses to R_ac = {peak[2]:.2g} x the trough "
        f"before dose 2 ({describe(ref)} on {when(ref)} -> {describe(peak[1])} on "
        f"{when(peak[1])}, beyond the critical difference "
        f"{peak[3]['critical_difference_pct']:.3g} points): accumulation"
        + (f" with an observed half-life of about {observed:.2g} days" if observed else "")
        + ". Expected pharmacology of a long-lived product, not expansion."
    )
    evidence = {
        "compared": "each pre-dose trough of doses 3.. with C_pre,2, the trough before dose 2",
        "error_model": "critical difference of the pair (CI + between-run variation)",
        "reference": sample_evidence(ref),
        "min_ratio": rule.min_ratio,
        "accumulation_ratio": peak[2],
        "troughs": [
            {
                "dose_number": d,
                "accumulation_ratio": q,
                "sample": sample_evidence(r),
                "comparison": comparison(ref, r, c),
                "fires": h,
            }
            for d, r, q, c, h in judged
        ],
        **half_life,
    }
    key = f"troughs from dose {first_dose}"
    return [episode(AlertRuleId.ACCUMULATION, rule, series, key, first, message, evidence)]


def _consecutive_rises(
    series: Series, rule: UnexpectedExpansionRule, cd: CriticalDifferenceSettings
) -> list[Episode]:
    rows = [r for r in counted_rows(series, rule) if r.get("dose_number") is not None]
    pairs = list(itertools.pairwise(rows))
    changes = compare_pairs(pairs, cd=cd)
    out: list[Episode] = []
    run: list[tuple[Row, Row, dict[str, Any]]] = []

    def flush() -> None:
        if len(run) >= rule.min_consecutive_rises:
            out.append(_rises_episode(series, rule, list(run)))
        run.clear()

    for (a, b), change in zip(pairs, changes, strict=True):
        rising = (
            a["dose_number"] == b["dose_number"]
            and significant_direction(change) is ChangeDirection.RISE
        )
        if rising and run and run[-1][1] is a:
            run.append((a, b, change))
        else:
            flush()
            if rising:
                run.append((a, b, change))
    flush()
    return out


def _rises_episode(
    series: Series, rule: UnexpectedExpansionRule, run: list[tuple[Row, Row, dict[str, Any]]]
) -> Episode:
    start, end = run[0][0], run[-1][1]
    onset = run[rule.min_consecutive_rises - 1][1]
    message = (
        f"iNK rose significantly {len(run)} times in a row with no dose in between: "
        f"{describe(start)} on {when(start)} to {describe(end)} on {when(end)}. "
        "Growth dosing cannot explain (unexpected expansion of an iPSC-derived product): "
        "review the patient."
    )
    evidence = {
        "compared": "consecutive results within one dose interval (no dose in between)",
        "error_model": "critical difference of each pair (CI + between-run variation)",
        "samples": [sample_evidence(start), *(sample_evidence(b) for _, b, _ in run)],
        "comparisons": [comparison(a, b, c) for a, b, c in run],
        "not_counted": uncounted_in_span(series, rule, day_of(start), day_of(end)),
    }
    key = f"rises from {start['sample_id']}"
    return episode(AlertRuleId.UNEXPECTED_EXPANSION, rule, series, key, onset, message, evidence)


def _decay_candidates(rows: Sequence[Row]) -> list[tuple[Row, Row, dict[str, Any]]]:
    """(last fitted point, tested result, prediction) for each result after an accepted decay fit."""
    out: list[tuple[Row, Row, dict[str, Any]]] = []
    for j in range(1, len(rows)):
        prefix = rows[:j]
        fit = estimate_half_life([day_of(r) for r in prefix], [r["pct_ink"] for r in prefix])
        predicted = fit.predict(day_of(rows[j]))
        if predicted is None:
            continue
        spread = fit.prediction_half_width_ln(day_of(rows[j])) or 0.0
        expected = {
            **prefix[-1],
            "sample_id": f"fitted decay (t½ {fit.half_life_days:.3g} d)",
            "pct_ink": predicted,
            "ci_low": predicted * math.exp(-spread),
            "ci_high": predicted * math.exp(spread),
            "ci_quantile": None,
        }
        out.append(
            (
                expected,
                rows[j],
                {
                    "half_life_days": fit.half_life_days,
                    "fitted_points": [list(p) for p in fit.points],
                },
            )
        )
    return out


def _above_fitted_decay(
    series: Series, rule: UnexpectedExpansionRule, cd: CriticalDifferenceSettings
) -> list[Episode]:
    rows = [r for r in counted_rows(series, rule) if _quantified(r) and r.get("dose_number")]
    out = []
    for dose in series.doses:
        inside = [r for r in rows if r["dose_number"] == dose.number]
        candidates = _decay_candidates(inside)
        changes = compare_pairs([(e, r) for e, r, _ in candidates], cd=cd)
        hits = [
            (e, r, fit, c)
            for (e, r, fit), c in zip(candidates, changes, strict=True)
            if significant_direction(c) is ChangeDirection.RISE
        ]
        if not hits:
            continue
        expected, first, fit, _ = hits[0]
        message = (
            f"iNK {describe(first)} on {when(first)} is above the patient's own fitted decay after "
            f"dose {dose.number} ({expected['pct_ink']:.3g} % expected, t½ "
            f"{fit['half_life_days']:.3g} d) by more than the critical difference: growth dosing "
            "cannot explain (unexpected expansion). Review the patient."
        )
        evidence = {
            "compared": f"each result after dose {dose.number} with the log-linear decay fitted to "
            "the earlier quantified results after that interval's Cmax",
            "error_model": "critical difference of the pair: the fit's 95 % prediction interval "
            "and the result's CI, each with the between-run variation",
            "dose_number": dose.number,
            "exceedances": [
                {
                    "sample": sample_evidence(r),
                    "expected_pct": e["pct_ink"],
                    **f,
                    "comparison": comparison(e, r, c),
                }
                for e, r, f, c in hits
            ],
            "not_counted": uncounted_in_span(series, rule, day_of(inside[0]), day_of(hits[-1][1])),
        }
        key = f"above fitted decay after dose {dose.number}"
        out.append(
            episode(AlertRuleId.UNEXPECTED_EXPANSION, rule, series, key, first, message, evidence)
        )
    return out


def unexpected_expansion(
    series: Series, rule: UnexpectedExpansionRule, cd: CriticalDifferenceSettings
) -> list[Episode]:
    """Consecutive significant rises without a dose, or a result above the fitted decay + CD."""
    out = _consecutive_rises(series, rule, cd)
    if rule.check_fitted_decay:
        out += _above_fitted_decay(series, rule, cd)
    return out
