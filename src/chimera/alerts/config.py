"""Alert rules, delivery channels and the critical-difference model, as part of ``Settings``.

Every default is written once, in the packaged ``chimera/defaults/alert_rules.toml`` (each value
with its justification). The dataclasses here have no defaults of their own: they are built from
that file, with an optional user file (``alert_rules = "..."`` in ``chimera.toml``) and the
``[alerts]`` section of ``chimera.toml`` laid over it, each layer setting only what it changes.
Unknown sections, rules or keys and values of the wrong type raise ``ValueError`` naming the layer
and the expected names. Nothing here reads the environment.
"""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from schemas.vocab import AlertRuleId, Method, Severity

PACKAGED_SOURCE = "packaged alert_rules.toml"


@dataclass(frozen=True)
class AlertRule:
    """Fields every alert rule shares: version, severity and whether it runs."""

    version: str
    severity: Severity
    enabled: bool


@dataclass(frozen=True)
class PersistenceRule(AlertRule):
    """iNK still ``quantified`` more than ``days_after_last_dose`` after the final dose."""

    days_after_last_dose: float


@dataclass(frozen=True)
class AccumulationRule(AlertRule):
    """Pre-dose troughs of closely spaced doses rising to ``min_ratio`` x C_pre,2 and beyond the CD."""

    min_ratio: float
    max_dosing_interval_days: float
    predose_window_days: float


@dataclass(frozen=True)
class UnexpectedExpansionRule(AlertRule):
    """Growth dosing cannot explain: consecutive significant rises, or a level above the fitted decay."""

    min_consecutive_rises: int
    check_fitted_decay: bool


@dataclass(frozen=True)
class EarlyLossRule(AlertRule):
    """A sample after dose k ``not_detected`` where the time-matched sample after dose 1 was seen."""

    window_days: float
    min_dose_number: int
    match_tolerance_days: float


@dataclass(frozen=True)
class NeverDetectedRule(AlertRule):
    """Nothing detected after each of the first ``min_doses`` doses, by samples able to see it."""

    window_days: float
    min_doses: int
    expected_level_pct: float


@dataclass(frozen=True)
class FallingExposureRule(AlertRule):
    """Dose-normalised peaks of consecutive doses significantly below a fraction of dose 1's."""

    fraction_of_dose1: float
    min_consecutive_doses: int
    match_tolerance_days: float


@dataclass(frozen=True)
class RecipientRisingRule(AlertRule):
    """Three-genome patients: the patient's own share rising beyond the CD above its nadir."""

    min_consecutive: int


@dataclass(frozen=True)
class RepeatedQcFailureRule(AlertRule):
    """At least ``min_failures`` failed or QC-fail results for one patient and specimen."""

    min_failures: int


@dataclass(frozen=True)
class AlertRules:
    """One entry per rule; the field names are the ``schemas.vocab.AlertRuleId`` values."""

    persistence: PersistenceRule
    accumulation: AccumulationRule
    unexpected_expansion: UnexpectedExpansionRule
    early_loss: EarlyLossRule
    never_detected: NeverDetectedRule
    falling_exposure: FallingExposureRule
    recipient_rising: RecipientRisingRule
    repeated_qc_failure: RepeatedQcFailureRule

    def rule(self, rule_id: AlertRuleId) -> AlertRule:
        """Return the settings of ``rule_id``."""
        found: AlertRule = getattr(self, rule_id.value)
        return found


@dataclass(frozen=True)
class BetweenRunVariation:
    """An assay's between-run (analytical) variation: an SD in points and/or a CV (fraction)."""

    sd_pct: float
    cv: float


@dataclass(frozen=True)
class CriticalDifferenceSettings:
    """Quantile and per-method between-run variation behind every comparison (methods.md 9.1)."""

    z: float
    between_run: Mapping[Method, BetweenRunVariation]


@dataclass(frozen=True)
class WebhookChannel:
    """One webhook endpoint; ``name`` is what the delivery log records."""

    name: str
    url: str


@dataclass(frozen=True)
class EmailChannel:
    """SMTP settings; the password comes from ``Settings.smtp_password`` (``password_env``)."""

    enabled: bool
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool
    username: str
    password_env: str


@dataclass(frozen=True)
class ChannelSettings:
    """Where alerts go and how failed deliveries are retried."""

    webhooks: tuple[WebhookChannel, ...]
    email: EmailChannel
    timeout_s: float
    retry_base_s: float
    retry_max_s: float


@dataclass(frozen=True)
class AlertSettings:
    """The alert part of ``chimera.settings.Settings``."""

    rules: AlertRules
    channels: ChannelSettings
    critical_difference: CriticalDifferenceSettings


_T = TypeVar("_T")
_SECTIONS = ("rules", "channels", "critical_difference")


def _check_value(kind: Any, value: Any, where: str) -> Any:
    """Return ``value`` converted to the field type ``kind``, or raise naming ``where``."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is Severity:
        if isinstance(value, str) and value in list(Severity):
            return Severity(value)
        msg = f"{where}: expected one of {[s.value for s in Severity]}, got {value!r}"
        raise ValueError(msg)
    elif typing.get_origin(kind) is tuple:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        name = getattr(kind, "__name__", str(kind))
        msg = f"{where}: expected a {name}, got {type(value).__name__} {value!r}"
        raise ValueError(msg)
    return value


def _table(value: Any, where: str) -> Mapping[str, Any]:
    """Return ``value`` when it is a TOML table, else raise naming ``where``."""
    if isinstance(value, Mapping):
        return value
    msg = f"{where}: expected a table, got {type(value).__name__} {value!r}"
    raise ValueError(msg)


def _build(cls: type[_T], data: Any, where: str) -> _T:
    """Instantiate the dataclass ``cls`` from a TOML table, checking names and types."""
    values = _table(data, where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        msg = f"{where}: expected keys {names}, got unknown {unknown}"
        raise ValueError(msg)
    kwargs: dict[str, Any] = {}
    for name in names:
        if name not in values:
            msg = f"{where}: expected key {name!r}, missing"
            raise ValueError(msg)
        kwargs[name] = _check_value(hints[name], values[name], f"{where}.{name}")
    return cls(**kwargs)


def _rules(table: Any, where: str) -> AlertRules:
    data = _table(table, where)
    hints = typing.get_type_hints(AlertRules)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        msg = f"{where}: expected rules {sorted(hints)}, got unknown {unknown}"
        raise ValueError(msg)
    built = {name: _build(kind, data.get(name), f"{where}.{name}") for name, kind in hints.items()}
    return AlertRules(**built)


def _channels(table: Any, where: str) -> ChannelSettings:
    data = _table(table, where)
    webhooks = []
    for name, url in _table(data.get("webhooks", {}), f"{where}.webhooks").items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            msg = f"{where}.webhooks.{name}: expected an http(s) URL, got {url!r}"
            raise ValueError(msg)
        webhooks.append(WebhookChannel(name=name, url=url))
    base = {k: v for k, v in data.items() if k not in {"webhooks", "email"}}
    names = ("retry_base_s", "retry_max_s", "timeout_s")
    unknown = sorted(set(base) - set(names))
    if unknown:
        expected = sorted([*names, "email", "webhooks"])
        msg = f"{where}: expected keys {expected}, got unknown {unknown}"
        raise ValueError(msg)
    values = {n: _check_value(float, base.get(n), f"{where}.{n}") for n in names}
    email = _build(EmailChannel, data.get("email", {}), f"{where}.email")
    return ChannelSettings(webhooks=tuple(webhooks), email=email, **values)


def _critical_difference(table: Any, where: str) -> CriticalDifferenceSettings:
    data = _table(table, where)
    unknown = sorted(set(data) - {"z", "between_run"})
    if unknown:
        msg = f"{where}: expected keys ['between_run', 'z'], got unknown {unknown}"
        raise ValueError(msg)
    runs = _table(data.get("between_run", {}), f"{where}.between_run")
    methods = [m.value for m in Method]
    if sorted(runs) != sorted(methods):
        msg = f"{where}.between_run: expected one table per method {methods}, got {sorted(runs)}"
        raise ValueError(msg)
    between = {
        Method(m): _build(BetweenRunVariation, runs[m], f"{where}.between_run.{m}") for m in methods
    }
    z = _check_value(float, data.get("z"), f"{where}.z")
    return CriticalDifferenceSettings(z=z, between_run=between)


def _parse(data: Mapping[str, Any], source: str) -> AlertSettings:
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        msg = f"{source}: expected sections {list(_SECTIONS)}, got unknown {unknown}"
        raise ValueError(msg)
    return AlertSettings(
        rules=_rules(data.get("rules"), f"{source} [rules]"),
        channels=_channels(data.get("channels"), f"{source} [channels]"),
        critical_difference=_critical_difference(
            data.get("critical_difference"), f"{source} [critical_difference]"
        ),
    )


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _packaged_data() -> dict[str, Any]:
    text = resources.files("chimera").joinpath("defaults/alert_rules.toml").read_text("utf-8")
    return tomllib.loads(text)


@lru_cache(maxsize=1)
def packaged_alert_settings() -> AlertSettings:
    """Return the packaged defaults (``chimera/defaults/alert_rules.toml``)."""
    return _parse(_packaged_data(), PACKAGED_SOURCE)


def load_alert_settings(
    path: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str = "chimera.toml [alerts]",
) -> AlertSettings:
    """Return the packaged alert settings with a user file and then ``overrides`` laid over them.

    Parameters
    ----------
    path
        A TOML file laid out like the packaged one (``[rules.*]``, ``[channels]``,
        ``[critical_difference]``); None = none.
    overrides
        The same layout as a mapping (the ``[alerts]`` section of ``chimera.toml``).
    overrides_source
        How errors in ``overrides`` name it.
    """
    data = _packaged_data()
    settings = _parse(data, PACKAGED_SOURCE)
    if path is not None:
        with path.open("rb") as fh:
            data = _merge(data, tomllib.load(fh))
        settings = _parse(data, path.name)
    if overrides:
        data = _merge(data, overrides)
        settings = _parse(data, overrides_source)
    return settings


def rule_parameters(rule: AlertRule) -> dict[str, Any]:
    """Return a rule's parameters as stored on every alert row (all fields but ``enabled``)."""
    return {f.name: getattr(rule, f.name) for f in fields(rule) if f.name != "enabled"}
