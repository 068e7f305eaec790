"""What every alert cites: the results compared (values, CIs, LoDs, states), the pair and the CD used.

Rules work on :class:`Series` (one patient x specimen curve from the trend table) and return
:class:`Episode` s. Which results may trigger a rule is decided here once (:func:`counts_for`):
``failed`` results and ``qc_verdict = fail`` never; ``review`` results never for a ``critical``
rule. Results that did not count but lie in an episode's span are listed in its evidence with
``counted = false`` and the reason, so nothing the clinician should see is hidden.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from chimera.alerts.config import AlertRule
from schemas.vocab import AlertRuleId, QcVerdict, ResultStatus, Severity

Row = Mapping[str, Any]
"""One trend-table row (``schemas.trends.Trends``) as a mapping."""

EVIDENCE_FIELDS = (
    "sample_id",
    "specimen",
    "collected_at",
    "study_day",
    "days_since_dose1",
    "days_since_last_infusion",
    "dose_number",
    "method",
    "pct_ink",
    "ci_low",
    "ci_high",
    "ci_quantile",
    "lod_pct",
    "loq_pct",
    "result_status",
    "qc_verdict",
)
"""The fields of a result that every alert cites."""

RECIPIENT_FIELDS = (
    "genome_model",
    "pct_recipient",
    "pct_recipient_ci_low",
    "pct_recipient_ci_high",
    "pct_hsct_donor",
)


@dataclass(frozen=True)
class Dose:
    """One infusion: number, time in days since dose 1 and cells infused (None = not logged)."""

    number: int
    day: float
    cells: float | None


@dataclass(frozen=True)
class Series:
    """One patient x specimen curve: trend rows in time order, kinetics rows and the doses."""

    patient_id: str
    specimen: str
    rows: tuple[Row, ...]
    kinetics: tuple[Row, ...]
    doses: tuple[Dose, ...]
    relapse: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Sample id -> the recipient rise it shows (three-genome patients; see ``relapse``)."""

    def by_id(self) -> dict[str, Row]:
        """Return the rows by sample id."""
        return {str(r["sample_id"]): r for r in self.rows}


@dataclass(frozen=True)
class Episode:
    """One occurrence of a rule's condition; ``onset_day`` is when it became true (days since dose 1)."""

    rule_id: AlertRuleId
    rule: AlertRule
    patient_id: str
    specimen: str
    episode_key: str
    onset_day: float
    message: str
    evidence: Mapping[str, Any]


def alert_id(rule: str, patient_id: str, specimen: str, episode_key: str) -> str:
    """Return the stable id of an alert: the first 16 hex digits of a SHA-256 of its key.

    Examples
    --------
    >>> alert_id("early_loss", "P01", "PB", "dose 4") == alert_id("early_loss", "P01", "PB", "dose 4")
    True
    """
    key = f"{rule}|{patient_id}|{specimen}|{episode_key}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """Return ``value`` as JSON can hold it (ISO dates, no NaN)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def counts_for(row: Row, rule: AlertRule) -> bool:
    """Whether a result may trigger ``rule``: never when failed, never ``review`` for a critical rule."""
    if row.get("result_status") == ResultStatus.FAILED or row.get("qc_verdict") == QcVerdict.FAIL:
        return False
    return not (rule.severity == Severity.CRITICAL and row.get("qc_verdict") == QcVerdict.REVIEW)


def not_counted_reason(row: Row, rule: AlertRule) -> str:
    """Why a result did not count for ``rule`` (see :func:`counts_for`)."""
    if row.get("result_status") == ResultStatus.FAILED:
        return "failed result"
    if row.get("qc_verdict") == QcVerdict.FAIL:
        return "qc_verdict fail"
    return f"qc_verdict review: never raises a {Severity(rule.severity).value} alert on its own"


def counted_rows(series: Series, rule: AlertRule) -> list[Row]:
    """Return the rows of ``series`` that may trigger ``rule``, in time order."""
    return [r for r in series.rows if counts_for(r, rule)]


def sample_evidence(row: Row, *, counted: bool = True) -> dict[str, Any]:
    """Return the cited fields of one result; three-genome rows add the recipient share."""
    out = {name: jsonable(row.get(name)) for name in EVIDENCE_FIELDS if name in row}
    if row.get("genome_model") is not None:
        out.update({name: jsonable(row.get(name)) for name in RECIPIENT_FIELDS})
    out["counted"] = counted
    return out


def uncounted_in_span(
    series: Series, rule: AlertRule, start: float, end: float
) -> list[dict[str, Any]]:
    """Results between ``start`` and ``end`` (days since dose 1) that did not count, marked."""
    out = []
    for row in series.rows:
        day = row.get("days_since_dose1")
        if day is None or not start <= day <= end or counts_for(row, rule):
            continue
        out.append({**sample_evidence(row, counted=False), "reason": not_counted_reason(row, rule)})
    return out


def comparison(
    earlier: Row, later: Row, change: Mapping[str, Any], **context: Any
) -> dict[str, Any]:
    """Return the record of one comparison: the pair, the change and the critical difference used."""
    return {
        "from_sample_id": earlier.get("sample_id"),
        "to_sample_id": later.get("sample_id"),
        **{key: jsonable(value) for key, value in change.items()},
        **{key: jsonable(value) for key, value in context.items()},
    }


def when(row: Row) -> str:
    """Return where a result sits in time, e.g. ``study day 12 (S-7, ddPCR)``."""
    day = row.get("study_day")
    where = f"study day {day}" if day is not None else "an undated sample"
    return f"{where} ({row.get('sample_id')}, {row.get('method')})"


def lod_of(row: Row) -> float | None:
    """Return a result's LoD: ``lod_pct``, else its CI upper bound (a not-detected row's bound)."""
    lod = row.get("lod_pct")
    return float(lod) if lod is not None else row.get("ci_high")


def day_of(row: Row) -> float:
    """Return a placed row's time in days since dose 1."""
    return float(row["days_since_dose1"])


def episode(
    rule_id: AlertRuleId,
    rule: AlertRule,
    series: Series,
    key: str,
    onset: Row,
    message: str,
    evidence: Mapping[str, Any],
) -> Episode:
    """Return an :class:`Episode` of ``series`` that became true at the result ``onset``."""
    return Episode(
        rule_id=rule_id,
        rule=rule,
        patient_id=series.patient_id,
        specimen=series.specimen,
        episode_key=key,
        onset_day=day_of(onset),
        message=message,
        evidence=evidence,
    )


def scaled(row: Row, factor: float, **changes: Any) -> dict[str, Any]:
    """Return a copy of a result with its value, CI and LoD multiplied by ``factor``."""
    out = dict(row)
    for name in ("pct_ink", "ci_low", "ci_high", "lod_pct"):
        if out.get(name) is not None:
            out[name] = out[name] * factor
    out.update(changes)
    return out


def rows_between(rows: Sequence[Row], start: float, end: float) -> list[Row]:
    """Return the rows whose time lies in [start, end] (days since dose 1)."""
    return [r for r in rows if start <= day_of(r) <= end]
