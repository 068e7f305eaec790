"""Persistence, expansion, loss and QC alerts from the trend and kinetics tables (methods.md 9.3).

Rules live in TOML (packaged defaults: ``chimera/defaults/alert_rules.toml``). Each alert is an
*episode*: ``alert_id`` hashes rule + patient + episode key, so the same condition keeps its id on
every run and :func:`update_alert_states` can tell new (``open``), continuing (``ongoing``) and
vanished (``resolved``) conditions apart. A condition exists as long as its evidence rows exist in
the current (not superseded) data. Nothing here reads the clock, the environment or files other
than the rules file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from chimera.calculate.limits import QcVerdict, ResultStatus
from chimera.trends import Z_95, compare_results_exprs

SEVERITIES = ("info", "warning", "critical")

_ALERT_KEY_COLUMNS: dict[str, pl.DataType] = {
    "alert_id": pl.String(),
    "rule": pl.String(),
    "rule_version": pl.String(),
    "severity": pl.String(),
    "patient_id": pl.String(),
    "episode_key": pl.String(),
}
_ALERT_BODY_COLUMNS: dict[str, pl.DataType] = {
    "message": pl.String(),
    "evidence": pl.String(),
    "parameters": pl.String(),
}

CONDITION_COLUMNS: dict[str, pl.DataType] = {**_ALERT_KEY_COLUMNS, **_ALERT_BODY_COLUMNS}
"""Columns of :func:`detect_alerts` (current conditions, no state)."""

ALERT_COLUMNS: dict[str, pl.DataType] = {
    **_ALERT_KEY_COLUMNS,
    "state": pl.String(),
    "first_detected_at": pl.Datetime("us", "UTC"),
    "last_evaluated_at": pl.Datetime("us", "UTC"),
    "resolved_at": pl.Datetime("us", "UTC"),
    **_ALERT_BODY_COLUMNS,
}
"""Columns of the alert-state table (schema ``schemas.trends.Alerts``)."""


@dataclass(frozen=True)
class AlertRule:
    """Fields every alert rule shares: version, severity and whether it runs."""

    version: str = "1"
    severity: str = "warning"
    enabled: bool = True


@dataclass(frozen=True)
class PersistenceRule(AlertRule):
    """iNK still ``quantified`` more than ``days_after_last_dose`` after the latest dose."""

    days_after_last_dose: float = 28.0


@dataclass(frozen=True)
class UnexpectedExpansionRule(AlertRule):
    """Consecutive significant rises with no dose between, or a trough above the last Cmax + CD."""

    severity: str = "critical"
    min_consecutive_rises: int = 2
    check_trough_vs_previous_cmax: bool = True


@dataclass(frozen=True)
class EarlyLossRule(AlertRule):
    """First post-dose sample of a later dose ``not_detected`` although dose 1 was quantified."""

    window_days: float = 7.0
    min_dose_number: int = 2


@dataclass(frozen=True)
class FallingExposureRule(AlertRule):
    """Cmax of consecutive later doses below a fraction of the dose-1 Cmax."""

    fraction_of_dose1: float = 0.5
    min_consecutive_doses: int = 2


@dataclass(frozen=True)
class RepeatedQcFailureRule(AlertRule):
    """At least ``min_failures`` failed or QC-fail results for one patient."""

    min_failures: int = 3


@dataclass(frozen=True)
class WebhookChannel:
    """One webhook endpoint; ``name`` is what the delivery log records."""

    name: str
    url: str


@dataclass(frozen=True)
class EmailChannel:
    """SMTP settings; the password is looked up by the caller from ``password_env``."""

    enabled: bool = False
    host: str = "localhost"
    port: int = 25
    sender: str = "chimera@localhost"
    recipients: tuple[str, ...] = ()
    starttls: bool = False
    username: str = ""
    password_env: str = "CHIMERA_SMTP_PASSWORD"


@dataclass(frozen=True)
class ChannelSettings:
    """Where alerts go and how failed deliveries are retried."""

    webhooks: tuple[WebhookChannel, ...] = ()
    email: EmailChannel = field(default_factory=EmailChannel)
    timeout_s: float = 10.0
    retry_base_s: float = 300.0
    retry_max_s: float = 21600.0


@dataclass(frozen=True)
class AlertRules:
    """Every alert rule and the delivery channels."""

    persistence: PersistenceRule = field(default_factory=PersistenceRule)
    unexpected_expansion: UnexpectedExpansionRule = field(default_factory=UnexpectedExpansionRule)
    early_loss: EarlyLossRule = field(default_factory=EarlyLossRule)
    falling_exposure: FallingExposureRule = field(default_factory=FallingExposureRule)
    repeated_qc_failure: RepeatedQcFailureRule = field(default_factory=RepeatedQcFailureRule)
    channels: ChannelSettings = field(default_factory=ChannelSettings)


_T = TypeVar("_T")
_RULE_TYPES: dict[str, type[Any]] = {
    "persistence": PersistenceRule,
    "unexpected_expansion": UnexpectedExpansionRule,
    "early_loss": EarlyLossRule,
    "falling_exposure": FallingExposureRule,
    "repeated_qc_failure": RepeatedQcFailureRule,
}


def _build(cls: type[_T], values: Mapping[str, Any], where: str) -> _T:
    """Instantiate dataclass ``cls`` from TOML values, checking names and types."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        value = raw
        if key not in known:
            msg = f"{where}: expected one of {sorted(known)}, got unknown key {key!r}"
            raise ValueError(msg)
        default = getattr(cls(), key)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int | float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = type(default)(value) if ok else value
        elif isinstance(default, tuple):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            msg = (
                f"{where}.{key}: expected a {type(default).__name__}, "
                f"got {type(value).__name__} {value!r}"
            )
            raise ValueError(msg)
        if key == "severity" and value not in SEVERITIES:
            msg = f"{where}.severity: expected one of {list(SEVERITIES)}, got {value!r}"
            raise ValueError(msg)
        kwargs[key] = value
    return cls(**kwargs)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_rules(data: Mapping[str, Any], source: str) -> AlertRules:
    unknown = set(data) - {"rules", "channels"}
    if unknown:
        msg = f"{source}: expected sections [rules.*] and [channels], got {sorted(unknown)}"
        raise ValueError(msg)
    rules = data.get("rules", {})
    unknown_rules = set(rules) - set(_RULE_TYPES)
    if unknown_rules:
        msg = f"{source}: expected rules {sorted(_RULE_TYPES)}, got unknown {sorted(unknown_rules)}"
        raise ValueError(msg)
    built = {
        name: _build(cls, rules.get(name, {}), f"{source} [rules.{name}]")
        for name, cls in _RULE_TYPES.items()
    }
    ch = dict(data.get("channels", {}))
    hooks = ch.pop("webhooks", {})
    email = ch.pop("email", {})
    webhooks = []
    for name, url in hooks.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            msg = f"{source} [channels.webhooks].{name}: expected an http(s) URL, got {url!r}"
            raise ValueError(msg)
        webhooks.append(WebhookChannel(name=name, url=url))
    channel_base = _build(ChannelSettings, ch, f"{source} [channels]")
    channels = ChannelSettings(
        webhooks=tuple(webhooks),
        email=_build(EmailChannel, email, f"{source} [channels.email]"),
        timeout_s=channel_base.timeout_s,
        retry_base_s=channel_base.retry_base_s,
        retry_max_s=channel_base.retry_max_s,
    )
    return AlertRules(**built, channels=channels)


def load_alert_rules(path: Path | None = None) -> AlertRules:
    """Load alert rules and channels from TOML; ``None`` = the packaged defaults.

    A user file is laid over the packaged defaults, so it may set only what it changes. Unknown
    sections, rules or keys raise ``ValueError`` naming the file and the expected names.
    """
    packaged = resources.files("chimera").joinpath("defaults/alert_rules.toml").read_text("utf-8")
    data = tomllib.loads(packaged)
    source = "packaged alert_rules.toml"
    if path is not None:
        with path.open("rb") as fh:
            override = tomllib.load(fh)
        data = _merge(data, override)
        source = path.name
    return _parse_rules(data, source)


def alert_id(rule: str, patient_id: str, episode_key: str) -> str:
    """Return the stable id of an alert episode: the first 16 hex digits of a SHA-256."""
    key = f"{rule}|{patient_id}|{episode_key}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


_EVIDENCE_FIELDS = (
    "sample_id",
    "collected_at",
    "study_day",
    "days_since_dose1",
    "days_since_last_infusion",
    "dose_number",
    "method",
    "pct_ink",
    "ci_low",
    "ci_high",
    "lod_pct",
    "loq_pct",
    "result_status",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _sample_evidence(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _jsonable(row.get(name)) for name in _EVIDENCE_FIELDS if name in row}


def _describe(row: Mapping[str, Any]) -> str:
    """Return a result as a clinician reads it, e.g. ``0.42 % (95 % CI 0.31-0.55)``."""
    status = row.get("result_status")
    lod = row.get("lod_pct")
    if lod is None and status == ResultStatus.NOT_DETECTED.value:
        lod = row.get("ci_high")
    if status == ResultStatus.NOT_DETECTED.value:
        return "not detected" + (f" (< LoD {lod:.3g} %)" if lod is not None else "")
    if status == ResultStatus.FAILED.value:
        return "not reportable (failed)"
    value = row.get("pct_ink")
    text = "no value" if value is None else f"{value:.3g} %"
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is not None and hi is not None:
        text += f" (95 % CI {lo:.3g}-{hi:.3g})"
    if status == ResultStatus.BELOW_LOQ.value:
        text += ", below LoQ"
    return text


def _when(row: Mapping[str, Any]) -> str:
    day = row.get("study_day")
    where = f"study day {day}" if day is not None else "an undated sample"
    return f"{where} ({row.get('sample_id')}, {row.get('method')})"


def _condition(
    rule_name: str,
    rule: AlertRule,
    patient_id: str,
    episode_key: str,
    message: str,
    evidence: Mapping[str, Any],
) -> dict[str, Any]:
    params = {k: v for k, v in asdict(rule).items() if k not in {"enabled"}}
    return {
        "alert_id": alert_id(rule_name, patient_id, episode_key),
        "rule": rule_name,
        "rule_version": rule.version,
        "severity": rule.severity,
        "patient_id": patient_id,
        "episode_key": episode_key,
        "message": message,
        "evidence": json.dumps(evidence, sort_keys=True, default=_jsonable),
        "parameters": json.dumps(params, sort_keys=True),
    }


def _persistence(
    patient_id: str,
    rows: Sequence[Mapping[str, Any]],
    dose_numbers: Sequence[int],
    rule: PersistenceRule,
) -> list[dict[str, Any]]:
    if not dose_numbers:
        return []
    final_dose = max(dose_numbers)
    late = [
        r
        for r in rows
        if r["result_status"] == ResultStatus.QUANTIFIED.value
        and r["dose_number"] == final_dose
        and r["days_since_last_infusion"] is not None
        and r["days_since_last_infusion"] > rule.days_after_last_dose
    ]
    by_dose: dict[int, list[Mapping[str, Any]]] = {}
    for r in late:
        by_dose.setdefault(r["dose_number"], []).append(r)
    out = []
    for dose, samples in by_dose.items():
        last = samples[-1]
        message = (
            f"iNK still quantified {last['days_since_last_infusion']:.0f} days after dose {dose} "
            f"(limit {rule.days_after_last_dose:g} days): {_describe(last)} on {_when(last)}"
            + (f"; {len(samples)} such samples" if len(samples) > 1 else "")
            + ". Allogeneic iNK are expected to clear within one dosing interval."
        )
        evidence = {
            "last_dose_number": dose,
            "days_after_last_dose_limit": rule.days_after_last_dose,
            "samples": [_sample_evidence(s) for s in samples],
        }
        out.append(
            _condition("persistence", rule, patient_id, f"after dose {dose}", message, evidence)
        )
    return out


def _pair_frame(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> pl.DataFrame:
    """Judge each (earlier, later) pair of trend rows with the trend table's CD rules."""
    cols = ("pct_ink", "ci_low", "ci_high", "lod_pct", "result_status", "method")
    dtypes = {"result_status": pl.String(), "method": pl.String()}
    data = {
        f"{prefix}{c}": pl.Series([p[i].get(c) for p in pairs], dtype=dtypes.get(c, pl.Float64()))
        for i, prefix in enumerate(("a_", "b_"))
        for c in cols
    }
    return pl.DataFrame(data).select(**compare_results_exprs("a_", "b_", z=Z_95))


def _comparison(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "from_sample_id": row.get("previous_sample_id"),
        "to_sample_id": row.get("sample_id"),
        "change_pct": row.get("change_pct"),
        "change_ln": row.get("change_ln"),
        "critical_difference_pct": row.get("critical_difference_pct"),
        "critical_difference_ln": row.get("critical_difference_ln"),
        "cd_scale": row.get("cd_scale"),
        "significant_change": row.get("significant_change"),
    }


def _expansion(
    patient_id: str,
    rows: Sequence[Mapping[str, Any]],
    kinetics: Sequence[Mapping[str, Any]],
    rule: UnexpectedExpansionRule,
) -> list[dict[str, Any]]:
    by_id = {r["sample_id"]: r for r in rows}
    out = []
    run: list[Mapping[str, Any]] = []

    def flush() -> None:
        if len(run) >= rule.min_consecutive_rises:
            start = by_id[run[0]["previous_sample_id"]]
            end = run[-1]
            message = (
                f"iNK rose significantly {len(run)} times in a row with no dose in between: "
                f"{_describe(start)} on {_when(start)} to {_describe(end)} on {_when(end)}. "
                "Unexpected expansion of an iPSC-derived product: review the patient."
            )
            evidence = {
                "samples": [_sample_evidence(start), *(_sample_evidence(r) for r in run)],
                "comparisons": [_comparison(r) for r in run],
            }
            key = f"rises from {start['sample_id']}"
            out.append(_condition("unexpected_expansion", rule, patient_id, key, message, evidence))
        run.clear()

    for r in rows:
        prev = by_id.get(r.get("previous_sample_id") or "")
        rising = (
            prev is not None
            and r.get("significant_change") is True
            and r.get("change_direction") == "rise"
            and prev.get("dose_number") == r.get("dose_number")
        )
        if rising and run and run[-1]["sample_id"] == r["previous_sample_id"]:
            run.append(r)
        elif rising:
            flush()
            run.append(r)
        elif r.get("previous_sample_id") is not None:
            flush()
    flush()

    if not rule.check_trough_vs_previous_cmax:
        return out
    doses = sorted(
        (k for k in kinetics if k["scope"] == "dose"), key=lambda k: int(k["dose_number"])
    )
    pairs = []
    for prev_k, k in itertools.pairwise(doses):
        cmax_row = by_id.get(prev_k.get("cmax_sample_id") or "")
        trough_row = by_id.get(k.get("trough_sample_id") or "")
        if cmax_row is None or trough_row is None:
            continue
        if trough_row["result_status"] != ResultStatus.QUANTIFIED.value:
            continue
        pairs.append((prev_k, k, cmax_row, trough_row))
    if not pairs:
        return out
    judged = _pair_frame([(c, t) for _, _, c, t in pairs]).to_dicts()
    for (prev_k, k, cmax_row, trough_row), cmp in zip(pairs, judged, strict=True):
        if not (cmp["significant_change"] is True and cmp["change_direction"] == "rise"):
            continue
        next_dose = int(k["dose_number"]) + 1
        message = (
            f"Pre-dose trough before dose {next_dose} is {_describe(trough_row)} on "
            f"{_when(trough_row)}, above the dose {prev_k['dose_number']} peak "
            f"{_describe(cmax_row)} on {_when(cmax_row)} by more than the critical difference "
            f"({cmp['critical_difference_pct']:.3g} points). The lowest level of a cycle "
            "should not exceed the previous peak: possible expansion."
        )
        evidence = {
            "samples": [_sample_evidence(cmax_row), _sample_evidence(trough_row)],
            "comparisons": [
                {
                    "from_sample_id": cmax_row["sample_id"],
                    "to_sample_id": trough_row["sample_id"],
                    **{key: _jsonable(v) for key, v in cmp.items()},
                }
            ],
            "previous_interval_dose_number": prev_k["dose_number"],
            "trough_interval_dose_number": k["dose_number"],
        }
        key = f"trough before dose {next_dose}"
        out.append(_condition("unexpected_expansion", rule, patient_id, key, message, evidence))
    return out


def _first_post_dose(
    rows: Sequence[Mapping[str, Any]], dose_number: int, window_days: float
) -> Mapping[str, Any] | None:
    """First reportable sample strictly after the dose, if it falls inside the window."""
    after = [
        r
        for r in rows
        if r["dose_number"] == dose_number
        and r["days_since_last_infusion"] is not None
        and r["days_since_last_infusion"] > 0
        and r["result_status"] != ResultStatus.FAILED.value
    ]
    if not after or after[0]["days_since_last_infusion"] > window_days:
        return None
    return after[0]


def _early_loss(
    patient_id: str,
    rows: Sequence[Mapping[str, Any]],
    dose_numbers: Sequence[int],
    rule: EarlyLossRule,
) -> list[dict[str, Any]]:
    if not dose_numbers:
        return []
    first_dose = min(dose_numbers)
    ref = _first_post_dose(rows, first_dose, rule.window_days)
    if ref is None or ref["result_status"] != ResultStatus.QUANTIFIED.value:
        return []
    ref_value = ref["pct_ink"]
    out = []
    for dose in sorted(dose_numbers):
        if dose < rule.min_dose_number or dose == first_dose:
            continue
        sample = _first_post_dose(rows, dose, rule.window_days)
        if sample is None or sample["result_status"] != ResultStatus.NOT_DETECTED.value:
            continue
        lod = sample.get("lod_pct") if sample.get("lod_pct") is not None else sample.get("ci_high")
        if lod is None or lod > ref_value:
            continue  # measurement gate: the assay could not have seen the dose-1 level
        message = (
            f"iNK not detected (< LoD {lod:.3g} %) in the first sample after dose {dose}, "
            f"{sample['days_since_last_infusion']:.1f} days after the infusion ({_when(sample)}), "
            f"whereas the first sample after dose {first_dose} showed {_describe(ref)} on "
            f"{_when(ref)}. Early loss of the product: consider alloimmunisation (check DSA)."
        )
        evidence = {
            "dose_number": dose,
            "window_days": rule.window_days,
            "lod_used_pct": lod,
            "dose1_value_pct": ref_value,
            "samples": [_sample_evidence(ref), _sample_evidence(sample)],
        }
        out.append(_condition("early_loss", rule, patient_id, f"dose {dose}", message, evidence))
    return out


def _falling_exposure(
    patient_id: str,
    rows: Sequence[Mapping[str, Any]],
    kinetics: Sequence[Mapping[str, Any]],
    rule: FallingExposureRule,
) -> list[dict[str, Any]]:
    doses = sorted(
        (k for k in kinetics if k["scope"] == "dose"), key=lambda k: int(k["dose_number"])
    )
    if not doses or doses[0]["cmax_pct"] is None or doses[0]["cmax_pct"] <= 0:
        return []
    by_id = {r["sample_id"]: r for r in rows}
    dose1 = doses[0]
    threshold = rule.fraction_of_dose1 * dose1["cmax_pct"]
    out = []
    run: list[Mapping[str, Any]] = []

    def flush() -> None:
        if len(run) >= rule.min_consecutive_doses:
            listed = ", ".join(
                f"dose {k['dose_number']} "
                + (f"{k['cmax_pct']:.3g} %" if k["cmax_pct"] is not None else "none quantified")
                for k in run
            )
            message = (
                f"Peak iNK after {len(run)} consecutive doses fell below "
                f"{rule.fraction_of_dose1:g} x the dose-1 peak ({dose1['cmax_pct']:.3g} %, "
                f"threshold {threshold:.3g} %): {listed}. Falling exposure: consider "
                "alloimmunisation (check DSA)."
            )
            evidence = {
                "dose1": {
                    "cmax_pct": dose1["cmax_pct"],
                    "sample": _sample_evidence(by_id.get(dose1["cmax_sample_id"], {})),
                },
                "threshold_pct": threshold,
                "doses": [
                    {
                        "dose_number": k["dose_number"],
                        "cmax_pct": k["cmax_pct"] if k["cmax_pct"] is not None else 0.0,
                        "cmax_imputed_zero": k["cmax_pct"] is None,
                        "n_samples": k["n_samples"],
                        "n_quantified": k["n_quantified"],
                        "sample": _sample_evidence(by_id.get(k["cmax_sample_id"] or "", {})),
                    }
                    for k in run
                ],
            }
            key = f"from dose {run[0]['dose_number']}"
            out.append(_condition("falling_exposure", rule, patient_id, key, message, evidence))
        run.clear()

    for k in doses[1:]:
        if not k["n_samples"]:
            continue  # nothing measured: neither counts nor breaks a run
        cmax = k["cmax_pct"] if k["cmax_pct"] is not None else 0.0
        if cmax < threshold:
            run.append(k)
        else:
            flush()
    flush()
    return out


def _qc_failures(chimerism: pl.LazyFrame, rule: RepeatedQcFailureRule) -> list[dict[str, Any]]:
    failed = (
        chimerism.filter(
            pl.col("superseded").not_()
            & (
                (pl.col("result_status") == ResultStatus.FAILED.value)
                | (pl.col("qc_verdict") == QcVerdict.FAIL.value)
            )
        )
        .select(
            "patient_id",
            "sample_id",
            "collected_at",
            "study_day",
            "method",
            "result_status",
            "qc_verdict",
            "qc_reasons",
            "is_headline",
            "source_file",
        )
        .sort("patient_id", "collected_at", "sample_id", "method", nulls_last=True)
        .collect()
    )
    out = []
    for (patient_id,), group in failed.group_by("patient_id", maintain_order=True):
        if group.height < rule.min_failures:
            continue
        rows = group.to_dicts()
        listed = "; ".join(
            f"{r['sample_id']} {r['method']} ({r['qc_reasons'] or r['result_status']})"
            for r in rows[:5]
        )
        message = (
            f"{group.height} results failed QC for this patient (threshold {rule.min_failures}): "
            f"{listed}{' ...' if group.height > 5 else ''}. Check sample handling and the assay; "
            "monitoring has gaps."
        )
        evidence = {
            "n_failures": group.height,
            "results": [{k: _jsonable(v) for k, v in r.items() if k != "patient_id"} for r in rows],
        }
        out.append(
            _condition(
                "repeated_qc_failure", rule, str(patient_id), "qc failures", message, evidence
            )
        )
    return out


def _by_patient(frame: pl.DataFrame) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in frame.iter_rows(named=True):
        out.setdefault(row["patient_id"], []).append(row)
    return out


def detect_alerts(
    trends: pl.LazyFrame,
    kinetics: pl.LazyFrame,
    chimerism: pl.LazyFrame,
    infusions: pl.LazyFrame,
    *,
    rules: AlertRules,
) -> pl.DataFrame:
    """Return the alert conditions present in the current data, one row per episode.

    Rules (disabled ones are skipped; parameters from ``rules``):

    * ``persistence``: a ``quantified`` sample more than ``days_after_last_dose`` after the
      patient's last dose (the final infusion so far).
    * ``unexpected_expansion``: ``min_consecutive_rises`` consecutive significant rises (trend
      table CD) between samples of one dose interval; or the trough ending interval n (last sample
      before dose n+1, ``quantified``) above the Cmax of interval n-1 by more than the CD.
    * ``early_loss``: the first reportable sample within ``window_days`` after dose k >=
      ``min_dose_number`` is ``not_detected`` while dose 1's first such sample was ``quantified``,
      and the sample's LoD (else its CI upper bound) is <= that dose-1 value.
    * ``falling_exposure``: Cmax of >= ``min_consecutive_doses`` consecutive later doses below
      ``fraction_of_dose1`` x dose-1 Cmax; an interval with samples but no quantified value counts
      as 0, an interval without samples is skipped.
    * ``repeated_qc_failure``: >= ``min_failures`` current ``Chimerism`` rows (any method,
      headline or not) with ``result_status = failed`` or ``qc_verdict = fail``.

    Parameters
    ----------
    trends
        ``schemas.trends.Trends`` rows.
    kinetics
        ``schemas.trends.Kinetics`` rows.
    chimerism
        ``schemas.warehouse.Chimerism`` rows (all, for the QC rule).
    infusions
        ``schemas.warehouse.Infusions`` rows.

    Returns
    -------
    pl.DataFrame
        ``CONDITION_COLUMNS``: id, rule, version, severity, patient, episode key, message,
        evidence (JSON: the results compared with values, CIs, LoD, states and the CD used) and
        parameters (JSON).
    """
    trend_rows = _by_patient(
        trends.sort("patient_id", "days_since_dose1", "sample_id", nulls_last=True).collect()
    )
    kinetic_rows = _by_patient(kinetics.collect())
    dose_numbers: dict[str, list[int]] = {}
    for row in infusions.select("patient_id", "dose_number").collect().iter_rows(named=True):
        dose_numbers.setdefault(row["patient_id"], []).append(int(row["dose_number"]))
    conditions: list[dict[str, Any]] = []
    for patient_id in sorted(set(trend_rows) | set(kinetic_rows)):
        rows = trend_rows.get(patient_id, [])
        kin = kinetic_rows.get(patient_id, [])
        if rules.persistence.enabled:
            conditions += _persistence(
                patient_id, rows, dose_numbers.get(patient_id, []), rules.persistence
            )
        if rules.unexpected_expansion.enabled:
            conditions += _expansion(patient_id, rows, kin, rules.unexpected_expansion)
        if rules.early_loss.enabled:
            conditions += _early_loss(
                patient_id, rows, dose_numbers.get(patient_id, []), rules.early_loss
            )
        if rules.falling_exposure.enabled:
            conditions += _falling_exposure(patient_id, rows, kin, rules.falling_exposure)
    if rules.repeated_qc_failure.enabled:
        conditions += _qc_failures(chimerism, rules.repeated_qc_failure)
    frame = pl.DataFrame(_one_episode_per_rule(conditions), schema=CONDITION_COLUMNS)
    return frame.sort("patient_id", "rule", "episode_key")


def _one_episode_per_rule(conditions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge a patient's conditions of one rule into one alert.

    The clinical team gets one early-loss alert listing every dose affected, not one per dose.
    The first condition (earliest episode) names the alert, so its id stays stable while later
    doses add evidence.
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    extra: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for condition in sorted(conditions, key=lambda c: (c["patient_id"], c["rule"])):
        key = (condition["patient_id"], condition["rule"])
        if key not in merged:
            merged[key] = dict(condition)
            extra[key] = [condition]
        else:
            extra[key].append(condition)
    for key, group in extra.items():
        if len(group) == 1:
            continue
        first = merged[key]
        first["message"] = (
            f"{group[0]['message']} The same condition is present in {len(group) - 1} later "
            f"episode(s): {', '.join(g['episode_key'] for g in group[1:])}."
        )
        first["evidence"] = json.dumps(
            {
                "episodes": [
                    {"episode_key": g["episode_key"], **json.loads(g["evidence"])} for g in group
                ]
            },
            sort_keys=True,
        )
    return list(merged.values())


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
    Because ``alert_id`` is stable per episode, a condition never fires twice.

    Parameters
    ----------
    previous
        The last ``schemas.trends.Alerts`` table (may be empty).
    current
        Output of :func:`detect_alerts`.
    now
        Evaluation time (timezone-aware).

    Returns
    -------
    pl.DataFrame
        ``schemas.trends.Alerts`` rows, ordered by patient, rule and episode.
    """
    if now.tzinfo is None:
        msg = f"expected a timezone-aware evaluation time, got naive {now.isoformat()}"
        raise ValueError(msg)
    before = _as_rows(previous, ALERT_COLUMNS)
    seen = _as_rows(current, CONDITION_COLUMNS)
    rows: list[dict[str, Any]] = []
    for aid, cond in seen.items():
        old = before.get(aid)
        if old is None:
            state, first = "open", now
        elif old["state"] == "resolved":
            state, first = "open", old["first_detected_at"]
        else:
            state, first = "ongoing", old["first_detected_at"]
        rows.append(
            {
                **cond,
                "state": state,
                "first_detected_at": first,
                "last_evaluated_at": now,
                "resolved_at": None,
            }
        )
    for aid, old in before.items():
        if aid in seen:
            continue
        if old["state"] == "resolved":
            rows.append(dict(old))
        else:
            rows.append({**old, "state": "resolved", "resolved_at": now, "last_evaluated_at": now})
    frame = pl.DataFrame(rows, schema=ALERT_COLUMNS)
    return frame.sort("patient_id", "rule", "episode_key")
