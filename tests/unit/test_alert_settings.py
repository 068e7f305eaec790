"""Alert rules, channels and critical differences are part of Settings, defaulted only in the TOML."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from chimera.alerts import config
from chimera.alerts.config import load_alert_settings, packaged_alert_settings
from chimera.settings import Settings, load_settings
from schemas.vocab import AlertRuleId, Method, Severity

PACKAGED = packaged_alert_settings()


def test_packaged_defaults_cover_every_rule_and_method() -> None:
    """One rule per AlertRuleId, one between-run entry per Method, the protocol values."""
    rules = PACKAGED.rules
    assert {f.name for f in dataclasses.fields(rules)} == {r.value for r in AlertRuleId}
    assert all(isinstance(rules.rule(r).severity, Severity) for r in AlertRuleId)
    assert rules.unexpected_expansion.severity is Severity.CRITICAL
    assert rules.accumulation.severity is Severity.WARNING
    assert rules.persistence.days_after_last_dose == 28.0
    assert rules.early_loss.match_tolerance_days == 0.5
    assert (
        rules.falling_exposure.fraction_of_dose1,
        rules.falling_exposure.min_consecutive_doses,
    ) == (0.5, 2)
    assert rules.repeated_qc_failure.min_failures == 3
    assert set(PACKAGED.critical_difference.between_run) == set(Method)
    assert PACKAGED.critical_difference.between_run[Method.STR].sd_pct == 2.0
    assert PACKAGED.channels.webhooks == ()
    assert PACKAGED.channels.email.enabled is False


def test_no_default_is_written_in_python() -> None:
    """The dataclasses carry no defaults: the packaged TOML is the only place they are written."""
    classes = [
        c for _, c in inspect.getmembers(config, inspect.isclass) if dataclasses.is_dataclass(c)
    ]
    assert len(classes) >= 10
    for cls in classes:
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING, (cls.__name__, f.name)
            assert f.default_factory is dataclasses.MISSING, (cls.__name__, f.name)


def test_settings_hold_the_packaged_alert_settings() -> None:
    """The one Settings object carries the alert settings."""
    assert Settings().alerts == PACKAGED
    assert load_settings({}, home=Path("nowhere")).alerts == PACKAGED


def test_chimera_toml_overrides_only_what_it_names(tmp_path: Path) -> None:
    """[alerts.*] in chimera.toml lays over the packaged file (and over an alert_rules file)."""
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        '[rules.persistence]\nversion = "3"\ndays_after_last_dose = 42\n'
        '[channels.webhooks]\nteams = "https://example.org/hook"\n',
        encoding="utf-8",
    )
    toml = tmp_path / "chimera.toml"
    toml.write_text(
        f'alert_rules = "{rules_file.as_posix()}"\n'
        "[alerts.rules.persistence]\ndays_after_last_dose = 35\n"
        "[alerts.critical_difference.between_run.STR]\nsd_pct = 1.5\n"
        '[alerts.channels.email]\nenabled = true\nrecipients = ["a@example.org"]\n'
        "[str]\nloq_pct = 4.0\n",
        encoding="utf-8",
    )
    settings = load_settings({}, config_file=toml)
    alerts = settings.alerts
    assert alerts.rules.persistence.days_after_last_dose == 35.0
    assert alerts.rules.persistence.version == "3"
    assert alerts.rules.early_loss == PACKAGED.rules.early_loss
    assert alerts.critical_difference.between_run[Method.STR].sd_pct == 1.5
    assert (
        alerts.critical_difference.between_run[Method.DDPCR]
        == PACKAGED.critical_difference.between_run[Method.DDPCR]
    )
    assert alerts.channels.webhooks[0].name == "teams"
    assert alerts.channels.email.recipients == ("a@example.org",)
    assert alerts.channels.email.password_env == "CHIMERA_SMTP_PASSWORD"
    assert settings.str.loq_pct == 4.0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "[rules.persistence]\ndays_after_dose = 3\n",
            r"bad\.toml \[rules\]\.persistence.*days_after_dose",
        ),
        ('[rules.early_loss]\nseverity = "urgent"\n', r"severity.*'urgent'"),
        ('[rules.early_loss]\nwindow_days = "7"\n', r"window_days: expected a float"),
        ("[rules.rejection]\nenabled = true\n", r"unknown \['rejection'\]"),
        (
            "[critical_difference.between_run.NGS]\nsd_pct = 1.0\ncv = 0.0\n",
            r"one table per method",
        ),
        ('[channels.webhooks]\nops = "ftp://x"\n', r"http\(s\) URL"),
        ("[thresholds]\nx = 1\n", r"expected sections"),
    ],
)
def test_bad_alert_files_name_the_file_and_the_key(tmp_path: Path, text: str, needle: str) -> None:
    """Typos and wrong types are errors that name the file, the key and what was expected."""
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=needle):
        load_alert_settings(bad)


def test_bad_alerts_section_names_chimera_toml(tmp_path: Path) -> None:
    """An error in [alerts] of chimera.toml names that section."""
    toml = tmp_path / "chimera.toml"
    toml.write_text("[alerts.rules.persistence]\ndays = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"chimera\.toml \[alerts\] \[rules\]\.persistence"):
        load_settings({}, config_file=toml)
