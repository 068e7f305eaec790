"""Alert delivery over webhooks (HTTP POST of JSON) and e-mail (SMTP): the I/O edge of alerting.

:func:`deliver_alerts` keeps a delivery log with one row per alert x channel. A delivery that fails
stays in the log as ``failed`` with the error and is retried on a later call once its back-off has
passed (``retry_base_s * 2^(attempts - 1)``, at most ``retry_max_s``); a ``sent`` row is never sent
again. The SMTP password is passed in by the caller (settings resolve ``password_env``); this module
never reads the environment.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import polars as pl

from chimera.alerts.config import ChannelSettings, EmailChannel
from schemas.base import polars_schema
from schemas.trends import AlertDeliveries
from schemas.vocab import AlertState, DeliveryState

DELIVERY_COLUMNS = polars_schema(AlertDeliveries)
"""Columns of the delivery log (from ``schemas.trends.AlertDeliveries``)."""

EMAIL_CHANNEL = "email"
_DELIVERABLE_STATES = (AlertState.OPEN, AlertState.ONGOING)


class DeliveryError(Exception):
    """A channel refused or could not take a message (the log keeps the text and retries)."""


def send_webhook(url: str, payload: Mapping[str, Any], *, timeout_s: float = 10.0) -> int:
    """POST ``payload`` as JSON to ``url`` and return the HTTP status.

    Raises
    ------
    DeliveryError
        On a non-2xx answer, a refused connection or a timeout.
    """
    if not url.startswith(("http://", "https://")):
        msg = f"expected an http(s) webhook URL, got {url!r}"
        raise DeliveryError(msg)
    body = json.dumps(payload, sort_keys=True, default=str).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "chimera"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        msg = f"webhook answered HTTP {exc.code} {exc.reason}"
        raise DeliveryError(msg) from exc
    except (urllib.error.URLError, OSError) as exc:
        msg = f"webhook unreachable: {exc}"
        raise DeliveryError(msg) from exc
    if not 200 <= status < 300:
        msg = f"webhook answered HTTP {status}; expected 2xx"
        raise DeliveryError(msg)
    return status


def _evidence_lines(evidence: str | None) -> list[str]:
    """Render the evidence JSON as indented, readable lines."""
    if not evidence:
        return ["  (none)"]
    try:
        data = json.loads(evidence)
    except ValueError:
        return [f"  {evidence}"]
    lines: list[str] = []

    def walk(value: Any, indent: int, label: str | None) -> None:
        pad = "  " * indent
        head = f"{pad}{label}: " if label is not None else pad
        if isinstance(value, Mapping):
            if label is not None:
                lines.append(f"{pad}{label}:")
            for key, item in value.items():
                walk(item, indent + (1 if label is not None else 0), str(key))
        elif isinstance(value, list):
            lines.append(f"{pad}{label}:" if label is not None else pad)
            for i, item in enumerate(value, start=1):
                walk(item, indent + 1, f"#{i}")
        else:
            lines.append(f"{head}{'-' if value is None else value}")

    walk(data, 1, None)
    return lines


def render_email(
    alert: Mapping[str, Any], *, sender: str, recipients: tuple[str, ...]
) -> EmailMessage:
    """Return the plain-text e-mail for one alert (message first, then the evidence)."""
    message = EmailMessage()
    severity = str(alert.get("severity", "")).upper()
    message["Subject"] = (
        f"[Chimera {severity}] {alert.get('rule')} - patient {alert.get('patient_id')}"
        + (f" ({alert['specimen']})" if alert.get("specimen") else "")
    )
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    body = [
        str(alert.get("message", "")),
        "",
        f"Patient: {alert.get('patient_id')}",
        f"Specimen: {alert.get('specimen')}",
        f"Rule: {alert.get('rule')} (version {alert.get('rule_version')})",
        f"Severity: {alert.get('severity')}",
        f"State: {alert.get('state')}",
        f"First detected: {alert.get('first_detected_at')}",
        f"Alert id: {alert.get('alert_id')}",
        "",
        "Evidence:",
        *_evidence_lines(alert.get("evidence")),
        "",
        f"Rule parameters: {alert.get('parameters')}",
    ]
    message.set_content("\n".join(body))
    return message


def send_email(
    alert: Mapping[str, Any],
    *,
    smtp: EmailChannel,
    password: str | None = None,
    timeout_s: float = 10.0,
) -> None:
    """Send one alert as a plain-text e-mail through ``smtp``.

    Raises
    ------
    DeliveryError
        When the server is unreachable, refuses the login or the message.
    """
    if not smtp.recipients:
        msg = "expected at least one e-mail recipient in [channels.email].recipients, got none"
        raise DeliveryError(msg)
    if smtp.username and password is None:
        msg = (
            f"SMTP login {smtp.username!r} needs a password; set the environment variable "
            f"{smtp.password_env} for the pipeline"
        )
        raise DeliveryError(msg)
    email = render_email(alert, sender=smtp.sender, recipients=smtp.recipients)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout_s) as client:
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if smtp.username and password is not None:
                client.login(smtp.username, password)
            client.send_message(email)
    except (smtplib.SMTPException, OSError) as exc:
        msg = f"SMTP {smtp.host}:{smtp.port} failed: {exc}"
        raise DeliveryError(msg) from exc


def _payload(alert: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in alert.items():
        if key in {"evidence", "parameters"} and isinstance(value, str):
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


def _due(row: Mapping[str, Any], channels: ChannelSettings, now: datetime) -> bool:
    if row["state"] == DeliveryState.SENT:
        return False
    attempts = int(row["attempts"] or 0)
    last = row["last_attempt_at"]
    if attempts == 0 or last is None:
        return True
    wait_s = min(channels.retry_base_s * 2 ** (attempts - 1), channels.retry_max_s)
    return bool(now >= last + timedelta(seconds=wait_s))


def deliver_alerts(
    alerts: pl.DataFrame,
    deliveries: pl.DataFrame,
    *,
    channels: ChannelSettings,
    now: datetime,
    password: str | None = None,
) -> pl.DataFrame:
    """Send each open (or ongoing, not yet delivered) alert once per channel; return the new log.

    Every configured webhook (channel ``webhook:<name>``) and the e-mail channel (``email``, when
    enabled) gets one log row per alert in state ``open`` or ``ongoing``. A row not yet ``sent``
    is attempted when due (back-off above); failure sets ``failed``, ``attempts + 1`` and
    ``last_error``; success sets ``sent``. Rows already in the log are kept (never lost), also for
    channels no longer configured.

    Parameters
    ----------
    alerts
        ``schemas.trends.Alerts`` rows.
    deliveries
        The last ``schemas.trends.AlertDeliveries`` log (may be empty).
    channels
        ``Settings.alerts.channels``.
    now
        Time of this delivery round (timezone-aware).
    password
        SMTP password, resolved by the caller from ``channels.email.password_env``.

    Returns
    -------
    pl.DataFrame
        ``schemas.trends.AlertDeliveries`` rows.
    """
    if now.tzinfo is None:
        msg = f"expected a timezone-aware delivery time, got naive {now.isoformat()}"
        raise ValueError(msg)
    log: dict[tuple[str, str], dict[str, Any]] = {}
    if not deliveries.is_empty():
        for row in deliveries.select(list(DELIVERY_COLUMNS)).iter_rows(named=True):
            log[(row["alert_id"], row["channel"])] = dict(row)
    by_id = {r["alert_id"]: r for r in alerts.iter_rows(named=True)} if alerts.height else {}
    names = [f"webhook:{hook.name}" for hook in channels.webhooks]
    if channels.email.enabled:
        names.append(EMAIL_CHANNEL)
    for aid, alert in by_id.items():
        if alert.get("state") not in _DELIVERABLE_STATES:
            continue
        for name in names:
            log.setdefault(
                (aid, name),
                {
                    "alert_id": aid,
                    "channel": name,
                    "state": DeliveryState.PENDING.value,
                    "attempts": 0,
                    "last_attempt_at": None,
                    "last_error": None,
                },
            )
    hooks = {f"webhook:{hook.name}": hook.url for hook in channels.webhooks}
    for (aid, name), row in log.items():
        target = by_id.get(aid)
        configured = name in hooks or (name == EMAIL_CHANNEL and channels.email.enabled)
        if target is None or not configured or not _due(row, channels, now):
            continue
        try:
            if name == EMAIL_CHANNEL:
                send_email(
                    target, smtp=channels.email, password=password, timeout_s=channels.timeout_s
                )
            else:
                send_webhook(hooks[name], _payload(target), timeout_s=channels.timeout_s)
        except DeliveryError as exc:
            row.update(state=DeliveryState.FAILED.value, last_error=str(exc))
        else:
            row.update(state=DeliveryState.SENT.value, last_error=None)
        row.update(attempts=int(row["attempts"] or 0) + 1, last_attempt_at=now)
    frame = pl.DataFrame(list(log.values()), schema=DELIVERY_COLUMNS)
    return frame.sort("alert_id", "channel")
