"""Alert episodes across runs: ``open`` when new, ``ongoing`` while present, ``resolved`` when gone.

``alert_id`` is stable per alert (rule x patient x specimen x first episode key), so the same
condition keeps its id on every run and never fires twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import polars as pl

from chimera.alerts.detect import ALERT_COLUMNS, CONDITION_COLUMNS
from schemas.vocab import AlertState, Specimen


def _as_rows(frame: pl.DataFrame, columns: Iterable[str]) -> dict[str, dict[str, Any]]:
    if frame.is_empty() or "alert_id" not in frame.columns:
        return {}
    keep = [c for c in columns if c in frame.columns]
    return {r["alert_id"]: r for r in frame.select(keep).iter_rows(named=True)}


def update_alert_states(
    previous: pl.DataFrame, current: pl.DataFrame, *, now: datetime
) -> pl.DataFrame:
    """Return the new alert-state table from the last one and the current conditions.

    A condition not seen before is ``open`` (first detected ``now``); one already open or ongoing
    becomes ``ongoing`` with its ``first_detected_at`` kept and message/evidence refreshed; an open
    or ongoing alert whose condition is gone becomes ``resolved`` at ``now``; a resolved alert
    stays resolved unless its condition returns, when it is ``open`` again (first detection kept).

    Parameters
    ----------
    previous
        The last ``schemas.trends.Alerts`` table (may be empty).
    current
        Output of :func:`chimera.alerts.detect.detect_alerts`.
    now
        Evaluation time (timezone-aware).

    Returns
    -------
    pl.DataFrame
        ``schemas.trends.Alerts`` rows, ordered by patient, specimen, rule and episode.
    """
    if now.tzinfo is None:
        msg = f"expected a timezone-aware evaluation time, got naive {now.isoformat()}"
        raise ValueError(msg)
    if not previous.is_empty() and "specimen" not in previous.columns:
        # An alert table written before alerts were per specimen: those were whole-blood curves.
        previous = previous.with_columns(specimen=pl.lit(Specimen.PB.value))
    before = _as_rows(previous, ALERT_COLUMNS)
    seen = _as_rows(current, CONDITION_COLUMNS)
    rows: list[dict[str, Any]] = []
    for aid, cond in seen.items():
        old = before.get(aid)
        if old is None:
            state, first = AlertState.OPEN, now
        elif old["state"] == AlertState.RESOLVED:
            state, first = AlertState.OPEN, old["first_detected_at"]
        else:
            state, first = AlertState.ONGOING, old["first_detected_at"]
        rows.append(
            {
                **cond,
                "state": state.value,
                "first_detected_at": first,
                "last_evaluated_at": now,
                "resolved_at": None,
            }
        )
    for aid, old in before.items():
        if aid in seen:
            continue
        if old["state"] == AlertState.RESOLVED:
            rows.append(dict(old))
        else:
            rows.append(
                {
                    **old,
                    "state": AlertState.RESOLVED.value,
                    "resolved_at": now,
                    "last_evaluated_at": now,
                }
            )
    frame = pl.DataFrame(rows, schema=ALERT_COLUMNS)
    return frame.sort("patient_id", "specimen", "rule", "episode_key")
