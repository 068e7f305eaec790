"""Rules for iNK that is lost or never seen: early loss, never detected, falling exposure (methods.md 9.3).

* ``early_loss``: a result within ``window_days`` after dose k is ``not_detected`` where the result
  drawn the same nominal time after dose 1 (within ``match_tolerance_days``; +1 d vs +1 d, never a
  trough against a peak) was seen, and the fall is significant by the detection rule (dose 1's
  lower bound, with between-run variation, above the later LoD).
* ``never_detected``: the first result after each of doses 1..``min_doses`` whose LoD could have
  seen ``expected_level_pct`` is ``not_detected``, and nothing was detected in between.
* ``falling_exposure``: the first result after dose n taken at dose 1's Tmax is significantly below
  dose 1's Cmax and below ``fraction_of_dose1`` of it, both as measured and per 1e9 cells infused
  (a fall a smaller dose explains is not falling exposure; a larger dose's less than proportional
  peak is not either), for ``min_consecutive_doses`` consecutive doses with such a result (a dose
  without one is skipped, never counted as 0).

In three-genome patients a result that shows a significant rise of the recipient share
(``Series.relapse``) is not read as iNK loss: a fall there is dilution by relapse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chimera.alerts.config import (
    CriticalDifferenceSettings,
    EarlyLossRule,
    FallingExposureRule,
    NeverDetectedRule,
)
from chimera.alerts.evidence import (
    Dose,
    Episode,
    Row,
    Series,
    comparison,
    counted_rows,
    episode,
    lod_of,
    sample_evidence,
    scaled,
    when,
)
from chimera.critical_difference import compare_pairs, significant_direction
from chimera.kinetics import CELLS_UNIT
from chimera.result_text import describe
from schemas.vocab import AlertRuleId, ChangeDirection, KineticsScope, ResultStatus

_DETECTED = (ResultStatus.QUANTIFIED, ResultStatus.BELOW_LOQ)
_DILUTION = "dilution by relapse (recipient share rising), not rejection"


def _after(rows: Sequence[Row], dose: Dose, window_days: float | None) -> list[Row]:
    """Results of dose ``dose``'s interval drawn after it (within ``window_days`` when given)."""
    return [
        r
        for r in rows
        if r.get("dose_number") == dose.number
        and r["days_since_last_infusion"] > 0
        and (window_days is None or r["days_since_last_infusion"] <= window_days)
    ]


def _matched(rows: Sequence[Row], nominal_days: float, tolerance_days: float) -> Row | None:
    """The result nearest ``nominal_days`` after its dose, within the tolerance (earlier on ties)."""
    near = [r for r in rows if abs(r["days_since_last_infusion"] - nominal_days) <= tolerance_days]
    return min(near, key=lambda r: abs(r["days_since_last_infusion"] - nominal_days), default=None)


def _loss_candidates(
    series: Series, rule: EarlyLossRule, rows: Sequence[Row]
) -> list[tuple[Dose, Row, Row]]:
    first = series.doses[0]
    reference = [
        r for r in _after(rows, first, rule.window_days) if r["result_status"] in _DETECTED
    ]
    out = []
    for dose in series.doses[1:]:
        if dose.number < rule.min_dose_number:
            continue
        for row in _after(rows, dose, rule.window_days):
            if (
                row["result_status"] != ResultStatus.NOT_DETECTED
                or row["sample_id"] in series.relapse
            ):
                continue
            ref = _matched(reference, row["days_since_last_infusion"], rule.match_tolerance_days)
            if ref is not None:
                out.append((dose, ref, row))
    return out


def early_loss(
    series: Series, rule: EarlyLossRule, cd: CriticalDifferenceSettings
) -> list[Episode]:
    """``not_detected`` after dose k where the time-matched result after dose 1 was seen."""
    if len(series.doses) < 2:
        return []
    candidates = _loss_candidates(series, rule, counted_rows(series, rule))
    changes = compare_pairs([(ref, row) for _, ref, row in candidates], cd=cd)
    by_dose: dict[int, list[tuple[Row, Row, dict[str, Any]]]] = {}
    for (dose, ref, row), change in zip(candidates, changes, strict=True):
        if significant_direction(change) is ChangeDirection.FALL:
            by_dose.setdefault(dose.number, []).append((ref, row, change))
    out = []
    first_dose = series.doses[0].number
    for dose_number, hits in by_dose.items():
        ref, row, change = hits[0]
        message = (
            f"iNK {describe(row)} {row['days_since_last_infusion']:.1f} days after "
            f"dose {dose_number} ({when(row)}), whereas {ref['days_since_last_infusion']:.1f} days "
            f"after dose {first_dose} it was {describe(ref)} ({when(ref)}). Early loss of the "
            "product: consider alloimmunisation (check donor-specific antibodies)."
        )
        evidence = {
            "compared": f"results within {rule.window_days:g} days after dose {dose_number} with "
            f"the result the same nominal time after dose {first_dose} "
            f"(+-{rule.match_tolerance_days:g} days)",
            "error_model": "detection rule: the dose-1 value's lower bound (CI + between-run "
            "variation) above the later sample's LoD",
            "dose_number": dose_number,
            "pairs": [
                {
                    "dose1_sample": sample_evidence(a),
                    "sample": sample_evidence(b),
                    "dose1_days_after_dose": a["days_since_last_infusion"],
                    "days_after_dose": b["days_since_last_infusion"],
                    "lod_used_pct": lod_of(b),
                    "comparison": comparison(a, b, c),
                }
                for a, b, c in hits
            ],
        }
        out.append(
            episode(
                AlertRuleId.EARLY_LOSS, rule, series, f"dose {dose_number}", row, message, evidence
            )
        )
    return out


def _first_informative(rows: Sequence[Row], rule: NeverDetectedRule) -> Row | None:
    """The first result that is detected or whose LoD could have seen the expected level."""
    for row in rows:
        if row["result_status"] in _DETECTED:
            return row
        lod = lod_of(row)
        if lod is not None and lod <= rule.expected_level_pct:
            return row
    return None


def never_detected(
    series: Series, rule: NeverDetectedRule, cd: CriticalDifferenceSettings
) -> list[Episode]:
    """Not detected after each of doses 1..``min_doses`` by results able to see a typical level."""
    del cd  # the gate is each sample's LoD against the expected level
    rows = [r for r in counted_rows(series, rule) if r["sample_id"] not in series.relapse]
    firsts: list[Row] = []
    skipped: list[dict[str, Any]] = []
    for dose in series.doses:
        after = _after(rows, dose, rule.window_days)
        first = _first_informative(after, rule)
        skipped += [
            {**sample_evidence(r), "reason": f"LoD above {rule.expected_level_pct:g} %"}
            for r in after[: after.index(first) if first is not None else len(after)]
        ]
        if first is None:
            continue  # nothing able to see the expected level after this dose
        if first["result_status"] in _DETECTED:
            break
        firsts.append(first)
    if len(firsts) < rule.min_doses:
        return []
    onset = firsts[rule.min_doses - 1]
    seen = [
        r
        for r in rows
        if r["result_status"] in _DETECTED
        and r.get("dose_number") is not None
        and r["days_since_dose1"] <= onset["days_since_dose1"]
    ]
    if seen:
        return []
    listed = ", ".join(f"dose {r['dose_number']}: {describe(r)}" for r in firsts)
    message = (
        f"iNK never detected after {len(firsts)} doses ({listed}), by samples able to see "
        f"{rule.expected_level_pct:g} %. Primary non-engraftment: consider pre-existing "
        "donor-specific antibodies."
    )
    evidence = {
        "compared": "the first post-dose result after each dose with the expected level",
        "error_model": f"each sample's LoD; only samples with LoD <= {rule.expected_level_pct:g} % count",
        "expected_level_pct": rule.expected_level_pct,
        "samples": [{**sample_evidence(r), "lod_used_pct": lod_of(r)} for r in firsts],
        "not_counted": skipped,
    }
    return [
        episode(AlertRuleId.NEVER_DETECTED, rule, series, "from dose 1", onset, message, evidence)
    ]


def _per_cells(row: Row, dose: Dose, reference: Dose) -> tuple[dict[str, Any], bool]:
    """Return ``row`` normalised to % per 1e9 cells infused, and whether both doses logged cells."""
    if not dose.cells or not reference.cells:
        return dict(row), False
    return scaled(row, CELLS_UNIT / dose.cells), True


def _fell(ref: Row, row: Row, change: dict[str, Any], rule: FallingExposureRule) -> bool:
    """A significant fall to below ``fraction_of_dose1`` x the reference (an ND counts its LoD)."""
    level = row.get("pct_ink")
    level = lod_of(row) if level is None else level
    return (
        significant_direction(change) is ChangeDirection.FALL
        and level is not None
        and level < rule.fraction_of_dose1 * ref["pct_ink"]
    )


def _exposure_steps(
    series: Series, rule: FallingExposureRule, cd: CriticalDifferenceSettings
) -> tuple[Row | None, list[dict[str, Any]]]:
    """Return dose 1's Cmax result and, per later dose, its matched result judged against it."""
    rows = counted_rows(series, rule)
    by_id = {r["sample_id"]: r for r in rows}
    first = series.doses[0]
    k1 = next(
        (
            k
            for k in series.kinetics
            if k.get("scope") == KineticsScope.DOSE and k.get("dose_number") == first.number
        ),
        None,
    )
    ref = by_id.get((k1 or {}).get("cmax_sample_id") or "")
    if ref is None or ref["result_status"] != ResultStatus.QUANTIFIED:
        return None, []
    steps: list[dict[str, Any]] = []
    for dose in series.doses[1:]:
        after = _after(rows, dose, None)
        near = [
            r
            for r in after
            if abs(r["days_since_last_infusion"] - ref["days_since_last_infusion"])
            <= rule.match_tolerance_days
        ]
        if not near:
            steps.append({"dose_number": dose.number, "skipped": "no result at dose 1's Tmax"})
            continue
        row = near[0]
        if row["sample_id"] in series.relapse:
            steps.append(
                {"dose_number": dose.number, "skipped": _DILUTION, "sample": sample_evidence(row)}
            )
            continue
        norm, normalised = _per_cells(row, dose, first)
        ref_norm, _ = _per_cells(ref, first, dose)
        steps.append(
            {
                "dose_number": dose.number,
                "dose": dose,
                "row": row,
                "norm": norm,
                "ref_norm": ref_norm,
                "normalised": normalised,
            }
        )
    judged = [s for s in steps if "row" in s]
    raw = compare_pairs([(ref, s["row"]) for s in judged], cd=cd)
    per_cell = compare_pairs([(s["ref_norm"], s["norm"]) for s in judged], cd=cd)
    for step, change_raw, change in zip(judged, raw, per_cell, strict=True):
        step["ref"], step["change_raw"], step["change"] = ref, change_raw, change
        step["low"] = _fell(ref, step["row"], change_raw, rule) and _fell(
            step["ref_norm"], step["norm"], change, rule
        )
    return ref, steps


def _step_evidence(step: dict[str, Any]) -> dict[str, Any]:
    if "row" not in step:
        return {k: v for k, v in step.items() if k != "dose"}
    return {
        "dose_number": step["dose_number"],
        "cells": step["dose"].cells,
        "sample": sample_evidence(step["row"]),
        "pct_per_1e9_cells": step["norm"].get("pct_ink"),
        "lod_per_1e9_cells": step["norm"].get("lod_pct"),
        "dose_normalised": step["normalised"],
        "comparison": comparison(step["ref_norm"], step["norm"], step["change"]),
        "comparison_as_measured": comparison(step["ref"], step["row"], step["change_raw"]),
        "below_fraction_and_cd": step["low"],
    }


def falling_exposure(
    series: Series, rule: FallingExposureRule, cd: CriticalDifferenceSettings
) -> list[Episode]:
    """Dose-normalised peaks of consecutive doses below ``fraction_of_dose1`` x dose 1's and the CD."""
    if len(series.doses) < 2:
        return []
    ref, steps = _exposure_steps(series, rule, cd)
    if ref is None:
        return []
    runs: list[list[dict[str, Any]]] = [[]]
    for step in steps:
        if "row" not in step:
            continue  # skipped: neither counts nor breaks a run
        if step["low"]:
            runs[-1].append(step)
        elif runs[-1]:
            runs.append([])
    out = []
    for run in runs:
        if len(run) < rule.min_consecutive_doses:
            continue
        listed = ", ".join(f"dose {s['dose_number']}: {describe(s['row'])}" for s in run)
        ref_norm = run[0]["ref_norm"]["pct_ink"]
        message = (
            f"Peak iNK per 1e9 cells fell after {len(run)} consecutive doses below "
            f"{rule.fraction_of_dose1:g} x dose 1's ({describe(ref)} on {when(ref)}, "
            f"{ref_norm:.3g} % per 1e9 cells) beyond the critical difference: {listed}. Falling "
            "exposure: consider alloimmunisation (check donor-specific antibodies)."
        )
        evidence = {
            "compared": "the first result after each dose at dose 1's Tmax "
            f"(+-{rule.match_tolerance_days:g} days) with dose 1's Cmax, per 1e9 cells infused",
            "error_model": "critical difference of the pair, as measured and per 1e9 cells, and a "
            f"fall below {rule.fraction_of_dose1:g} x dose 1 in both",
            "dose1": {
                **sample_evidence(ref),
                "pct_per_1e9_cells": ref_norm,
                "cells": series.doses[0].cells,
            },
            "doses": [_step_evidence(s) for s in steps],
        }
        onset = run[rule.min_consecutive_doses - 1]["row"]
        key = f"from dose {run[0]['dose_number']}"
        out.append(
            episode(AlertRuleId.FALLING_EXPOSURE, rule, series, key, onset, message, evidence)
        )
    return out
