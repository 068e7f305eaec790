"""Relapse context in three-genome patients: the patient's own share rising (``recipient_rising``).

Patients who relapsed after an allogeneic transplant carry their own genome, the transplant
donor's and, after dosing, iNK (``genome_model = three_genome``). The quantity compared is the
patient's share of the non-iNK cells, ``pct_recipient x 100 / (100 - pct_ink)`` (CI scaled
alike), so an iNK dose and its clearance do not read as recipient change. Each result is
compared with the lowest earlier value (the nadir) by the critical difference; a significant rise
on ``min_consecutive`` consecutive results is the alert. A fall of % iNK at such a result (against
the last result before the rise) is dilution by relapse, not rejection: :func:`relapse_context`
marks these results so the loss rules skip them, and the alert names the iNK change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chimera.alerts.config import CriticalDifferenceSettings, RecipientRisingRule
from chimera.alerts.evidence import (
    Episode,
    Row,
    Series,
    comparison,
    counted_rows,
    episode,
    sample_evidence,
    when,
)
from chimera.critical_difference import compare_pairs, significant_direction
from chimera.result_text import describe
from schemas.vocab import AlertRuleId, ChangeDirection, GenomeModel, QcVerdict, ResultStatus

_HAS_VALUE = (ResultStatus.QUANTIFIED, ResultStatus.BELOW_LOQ)


def _own_share(row: Row) -> dict[str, Any] | None:
    """The recipient share of the non-iNK cells as a result the comparator reads (None = none)."""
    recipient = row.get("pct_recipient")
    if row.get("genome_model") != GenomeModel.THREE_GENOME or recipient is None:
        return None
    ink = row.get("pct_ink") if row.get("result_status") in _HAS_VALUE else 0.0
    if ink is None or ink >= 100:
        return None
    factor = 100.0 / (100.0 - ink)
    low, high = row.get("pct_recipient_ci_low"), row.get("pct_recipient_ci_high")
    return {
        "sample_id": row["sample_id"],
        "pct_ink": min(recipient * factor, 100.0),
        "ci_low": None if low is None else min(low * factor, 100.0),
        "ci_high": None if high is None else min(high * factor, 100.0),
        "ci_quantile": row.get("ci_quantile"),
        "lod_pct": None,
        "result_status": ResultStatus.QUANTIFIED.value,
        "method": row.get("method"),
    }


def _rises(
    rows: Sequence[Row], cd: CriticalDifferenceSettings
) -> list[tuple[Row, Row, dict[str, Any]]]:
    """(nadir row, row, change of the own share) for every row after the first with a share."""
    shares = [(r, s) for r in rows if (s := _own_share(r)) is not None]
    pairs: list[tuple[Row, Row, dict[str, Any], dict[str, Any]]] = []
    nadir: tuple[Row, dict[str, Any]] | None = None
    for row, share in shares:
        if nadir is not None:
            pairs.append((nadir[0], row, nadir[1], share))
        if nadir is None or share["pct_ink"] < nadir[1]["pct_ink"]:
            nadir = (row, share)
    changes = compare_pairs([(a, b) for _, _, a, b in pairs], cd=cd)
    out = []
    for (low, row, share_low, share), change in zip(pairs, changes, strict=True):
        out.append(
            (
                low,
                row,
                {**change, "nadir_share_pct": share_low["pct_ink"], "share_pct": share["pct_ink"]},
            )
        )
    return out


def relapse_context(series: Series, cd: CriticalDifferenceSettings) -> dict[str, dict[str, Any]]:
    """Sample id -> the significant rise of the own share it shows (any result not failing QC)."""
    rows = [
        r
        for r in series.rows
        if r.get("result_status") != ResultStatus.FAILED and r.get("qc_verdict") != QcVerdict.FAIL
    ]
    return {
        str(row["sample_id"]): comparison(low, row, change)
        for low, row, change in _rises(rows, cd)
        if significant_direction(change) is ChangeDirection.RISE
    }


def _ink_change(low: Row, row: Row, cd: CriticalDifferenceSettings) -> dict[str, Any]:
    (change,) = compare_pairs([(low, row)], cd=cd)
    fell = significant_direction(change) is ChangeDirection.FALL
    return {
        **comparison(low, row, change),
        "reading": "dilution by relapse, not rejection" if fell else "no significant iNK fall",
    }


def recipient_rising(
    series: Series, rule: RecipientRisingRule, cd: CriticalDifferenceSettings
) -> list[Episode]:
    """The own share above its nadir beyond the CD on ``min_consecutive`` consecutive results."""
    rows = counted_rows(series, rule)
    rises = _rises(rows, cd)
    out: list[Episode] = []
    run: list[tuple[Row, Row, dict[str, Any]]] = []
    for rise in [*rises, None]:
        if rise is not None and significant_direction(rise[2]) is ChangeDirection.RISE:
            run.append(rise)
            continue
        if len(run) >= rule.min_consecutive:
            before = [r for r in rows if r["days_since_dose1"] < run[0][1]["days_since_dose1"]]
            out.append(_episode(series, rule, cd, list(run), before[-1]))
        run.clear()
    return out


def _episode(
    series: Series,
    rule: RecipientRisingRule,
    cd: CriticalDifferenceSettings,
    run: list[tuple[Row, Row, dict[str, Any]]],
    before: Row,
) -> Episode:
    """The alert for one run of risen results; ``before`` is the last result before the rise."""
    low, _, change = run[0]
    last = run[-1][1]
    ink = [_ink_change(before, b, cd) for _, b, _ in run]
    diluted = [c for c in ink if c["reading"].startswith("dilution")]
    message = (
        f"The patient's own (recipient) share of the non-iNK cells rose from "
        f"{change['nadir_share_pct']:.3g} % on {when(low)} to {run[-1][2]['share_pct']:.3g} % on "
        f"{when(last)}, beyond the critical difference ({change['critical_difference_pct']:.3g} "
        f"points at the first rise), on {len(run)} consecutive samples: possible relapse."
        + (
            f" iNK fell over the same time ({describe(before)} on {when(before)} -> "
            f"{describe(last)}): "
            "dilution by relapse, not rejection."
            if diluted
            else ""
        )
    )
    evidence = {
        "compared": "each result's recipient share of the non-iNK cells "
        "(pct_recipient x 100 / (100 - pct_ink)) with its lowest earlier value",
        "error_model": "critical difference of the pair (CI scaled alike + between-run variation)",
        "nadir": sample_evidence(low),
        "samples": [sample_evidence(b) for _, b, _ in run],
        "comparisons": [comparison(a, b, c) for a, b, c in run],
        "ink_before_rise": sample_evidence(before),
        "ink_during_rise": ink,
    }
    key = f"rise from {low['sample_id']}"
    onset = run[rule.min_consecutive - 1][1]
    return episode(AlertRuleId.RECIPIENT_RISING, rule, series, key, onset, message, evidence)
