"""Evaluate every enabled alert rule on the trend and kinetics tables, one curve at a time.

A curve is one patient x specimen (whole blood and each sorted fraction apart). Each rule returns
episodes; a patient's episodes of one rule on one specimen merge into one alert, named (and its
``alert_id`` fixed) by the episode that became true first, so later episodes add evidence to the
same alert instead of raising new ones. Nothing here reads the clock, the environment or files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import polars as pl

from chimera.alerts import growth, loss, qc, relapse
from chimera.alerts.config import (
    AlertRule,
    AlertSettings,
    CriticalDifferenceSettings,
    rule_parameters,
)
from chimera.alerts.evidence import Dose, Episode, Series, alert_id, jsonable
from chimera.trends import SERIES_KEY
from schemas.base import polars_schema
from schemas.trends import Alerts
from schemas.vocab import AlertRuleId

ALERT_COLUMNS = polars_schema(Alerts)
"""Columns of the alert-state table (from ``schemas.trends.Alerts``)."""

STATE_COLUMNS = ("state", "first_detected_at", "last_evaluated_at", "resolved_at")
CONDITION_COLUMNS = {k: v for k, v in ALERT_COLUMNS.items() if k not in STATE_COLUMNS}
"""Columns of :func:`detect_alerts` (current conditions, no state)."""

SeriesRule = Callable[[Series, Any, CriticalDifferenceSettings], list[Episode]]
SERIES_RULES: dict[AlertRuleId, SeriesRule] = {
    AlertRuleId.PERSISTENCE: growth.persistence,
    AlertRuleId.ACCUMULATION: growth.accumulation,
    AlertRuleId.UNEXPECTED_EXPANSION: growth.unexpected_expansion,
    AlertRuleId.EARLY_LOSS: loss.early_loss,
    AlertRuleId.NEVER_DETECTED: loss.never_detected,
    AlertRuleId.FALLING_EXPOSURE: loss.falling_exposure,
    AlertRuleId.RECIPIENT_RISING: relapse.recipient_rising,
}
"""The rules evaluated per curve (``repeated_qc_failure`` reads the chimerism table)."""


def _doses(infusions: pl.LazyFrame) -> dict[str, tuple[Dose, ...]]:
    names = set(infusions.collect_schema().names())
    cells = pl.col("cells") if "cells" in names else pl.lit(None, dtype=pl.Float64)
    frame = (
        infusions.select("patient_id", "dose_number", "infused_at", cells.alias("cells"))
        .sort("patient_id", "infused_at")
        .collect()
    )
    out: dict[str, tuple[Dose, ...]] = {}
    for (patient_id,), group in frame.group_by("patient_id", maintain_order=True):
        start = group["infused_at"][0]
        out[str(patient_id)] = tuple(
            Dose(
                int(r["dose_number"]),
                (r["infused_at"] - start).total_seconds() / 86_400.0,
                r["cells"],
            )
            for r in group.iter_rows(named=True)
        )
    return out


def _grouped(frame: pl.DataFrame) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in frame.iter_rows(named=True):
        out.setdefault((row["patient_id"], row["specimen"]), []).append(row)
    return out


def build_series(
    trends: pl.LazyFrame,
    kinetics: pl.LazyFrame,
    infusions: pl.LazyFrame,
    *,
    cd: CriticalDifferenceSettings,
) -> list[Series]:
    """Return one :class:`Series` per patient x specimen with placed, time-ordered trend rows."""
    rows = _grouped(
        trends.filter(pl.col("days_since_dose1").is_not_null())
        .sort(*SERIES_KEY, "days_since_dose1", "sample_id")
        .collect()
    )
    kinetic = _grouped(kinetics.collect())
    doses = _doses(infusions)
    out = []
    for key in sorted(set(rows) | set(kinetic)):
        series = Series(
            patient_id=key[0],
            specimen=key[1],
            rows=tuple(rows.get(key, [])),
            kinetics=tuple(kinetic.get(key, [])),
            doses=doses.get(key[0], ()),
        )
        out.append(replace(series, relapse=relapse.relapse_context(series, cd)))
    return out


def detect_alerts(
    trends: pl.LazyFrame,
    kinetics: pl.LazyFrame,
    chimerism: pl.LazyFrame,
    infusions: pl.LazyFrame,
    *,
    settings: AlertSettings,
) -> pl.DataFrame:
    """Return the alert conditions present in the current data, one row per alert.

    The rules (``chimera.alerts.growth``, ``loss``, ``relapse``, ``qc``; disabled ones skipped)
    and their parameters come from ``settings`` (``Settings.alerts``); every comparison uses
    ``settings.critical_difference``.

    Parameters
    ----------
    trends
        ``schemas.trends.Trends`` rows.
    kinetics
        ``schemas.trends.Kinetics`` rows.
    chimerism
        ``schemas.warehouse.Chimerism`` rows (all, for ``repeated_qc_failure``).
    infusions
        ``schemas.warehouse.Infusions`` rows.

    Returns
    -------
    pl.DataFrame
        ``CONDITION_COLUMNS``: id, rule, version, severity, patient, specimen, episode key,
        message, evidence (JSON: what was compared, with which error, the results with values,
        CIs, LoDs, states and QC, and each pair with the CD used) and parameters (JSON).
    """
    cd = settings.critical_difference
    episodes: list[Episode] = []
    for series in build_series(trends, kinetics, infusions, cd=cd):
        for rule_id, evaluate in SERIES_RULES.items():
            rule = settings.rules.rule(rule_id)
            if rule.enabled:
                episodes += evaluate(series, rule, cd)
    if settings.rules.repeated_qc_failure.enabled:
        episodes += qc.repeated_qc_failure(chimerism, settings.rules.repeated_qc_failure)
    frame = pl.DataFrame(merge_episodes(episodes), schema=CONDITION_COLUMNS)
    return frame.sort("patient_id", "specimen", "rule", "episode_key")


def _condition(first: Episode, group: Sequence[Episode]) -> dict[str, Any]:
    rule: AlertRule = first.rule
    if len(group) == 1:
        message, evidence = first.message, dict(first.evidence)
    else:
        later = ", ".join(e.episode_key for e in group[1:])
        message = (
            f"{first.message} The same condition is present in {len(group) - 1} later "
            f"episode(s): {later}."
        )
        evidence = {"episodes": [{"episode_key": e.episode_key, **e.evidence} for e in group]}
    return {
        "alert_id": alert_id(
            first.rule_id.value, first.patient_id, first.specimen, first.episode_key
        ),
        "rule": first.rule_id.value,
        "rule_version": rule.version,
        "severity": str(rule.severity),
        "patient_id": first.patient_id,
        "specimen": first.specimen,
        "episode_key": first.episode_key,
        "message": message,
        "evidence": json.dumps(evidence, sort_keys=True, default=jsonable),
        "parameters": json.dumps(rule_parameters(rule), sort_keys=True, default=str),
    }


def merge_episodes(episodes: Sequence[Episode]) -> list[dict[str, Any]]:
    """Merge each patient x specimen x rule's episodes into one alert, earliest onset first.

    The clinical team gets one early-loss alert listing every dose affected, not one per dose.
    The episode that became true first names the alert, so its id stays stable while later
    episodes add evidence.
    """
    groups: dict[tuple[str, str, str], list[Episode]] = {}
    for e in episodes:
        groups.setdefault((e.patient_id, e.specimen, e.rule_id.value), []).append(e)
    out = []
    for _, group in sorted(groups.items()):
        ordered = sorted(group, key=lambda e: (e.onset_day, e.episode_key))
        out.append(_condition(ordered[0], ordered))
    return out
