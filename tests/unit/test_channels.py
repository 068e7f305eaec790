"""Alert delivery to a real loopback webhook and SMTP server; a down channel is retried, never lost."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import polars as pl
import pytest
from aiosmtpd.controller import Controller

from chimera.alerts.config import ChannelSettings, WebhookChannel, packaged_alert_settings
from chimera.alerts.detect import ALERT_COLUMNS
from chimera.channels import DeliveryError, deliver_alerts, send_webhook
from schemas.trends import AlertDeliveries

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
PACKAGED = packaged_alert_settings().channels
EVIDENCE = {
    "samples": [
        {
            "sample_id": "S-17",
            "pct_ink": 0.8,
            "ci_low": 0.64,
            "ci_high": 1.0,
            "lod_pct": 0.05,
            "result_status": "quantified",
        }
    ]
}


def _alerts(state: str = "open", alert_id: str = "a" * 16) -> pl.DataFrame:
    row = {
        "alert_id": alert_id,
        "rule": "persistence",
        "rule_version": "1",
        "severity": "warning",
        "patient_id": "P01",
        "specimen": "PB",
        "episode_key": "after dose 13",
        "state": state,
        "first_detected_at": NOW,
        "last_evaluated_at": NOW,
        "resolved_at": NOW if state == "resolved" else None,
        "message": "iNK still quantified 35 days after dose 13.",
        "evidence": json.dumps(EVIDENCE),
        "parameters": json.dumps({"days_after_last_dose": 28.0}),
    }
    return pl.DataFrame([row], schema=ALERT_COLUMNS)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _webhook_server(port: int = 0, status: int = 200) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield int(server.server_address[1]), received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@contextmanager
def _smtp_server() -> Iterator[tuple[int, _Inbox]]:
    inbox = _Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, ready_timeout=120)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def _hooks(port: int) -> ChannelSettings:
    return replace(
        PACKAGED,
        webhooks=(WebhookChannel("ops", f"http://127.0.0.1:{port}/hook"),),
        timeout_s=60.0,
        retry_base_s=60.0,
    )


def test_webhook_receives_the_alert_as_json() -> None:
    """An open alert is POSTed once as JSON with the evidence as an object."""
    with _webhook_server() as (port, received):
        log = deliver_alerts(_alerts(), pl.DataFrame(), channels=_hooks(port), now=NOW)
        AlertDeliveries.validate(log, lazy=True)
        assert log.select("channel", "state", "attempts").rows() == [("webhook:ops", "sent", 1)]
        assert len(received) == 1
        assert received[0]["alert_id"] == "a" * 16
        assert received[0]["evidence"]["samples"][0]["ci_low"] == 0.64
        again = deliver_alerts(
            _alerts("ongoing"), log, channels=_hooks(port), now=NOW + timedelta(hours=1)
        )
        assert len(received) == 1  # sent ones are not resent
        assert again.equals(log)


def test_email_is_delivered_with_readable_evidence() -> None:
    """The SMTP server receives one plain-text mail with the message and the evidence values."""
    with _smtp_server() as (port, inbox):
        channels = replace(
            PACKAGED,
            email=replace(
                PACKAGED.email,
                enabled=True,
                host="127.0.0.1",
                port=port,
                sender="chimera@example.org",
                recipients=("haem@example.org",),
            ),
            timeout_s=60.0,
        )
        log = deliver_alerts(_alerts(), pl.DataFrame(), channels=channels, now=NOW)
        assert log.select("channel", "state", "attempts").rows() == [("email", "sent", 1)]
        assert len(inbox.messages) == 1
        sender, recipients, content = inbox.messages[0]
        assert (sender, recipients) == ("chimera@example.org", ["haem@example.org"])
        mail = message_from_bytes(content)
        assert mail["Subject"] == "[Chimera WARNING] persistence - patient P01 (PB)"
        body = mail.get_payload(decode=True).decode()
        assert "iNK still quantified 35 days after dose 13." in body
        assert "ci_low: 0.64" in body
        assert "lod_pct: 0.05" in body
        assert "sample_id: S-17" in body


def test_channel_down_is_kept_as_failed_then_delivered_when_up() -> None:
    """A closed port leaves the delivery failed with attempts 1; the next due call sends it."""
    port = _free_port()
    channels = _hooks(port)
    log = deliver_alerts(_alerts(), pl.DataFrame(), channels=channels, now=NOW)
    row = log.row(0, named=True)
    assert (row["state"], row["attempts"]) == ("failed", 1)
    assert "unreachable" in row["last_error"]
    assert row["last_attempt_at"] == NOW

    # Within the back-off nothing is tried; the row is kept as it was.
    with _webhook_server(port) as (_, received):
        waiting = deliver_alerts(
            _alerts("ongoing"), log, channels=channels, now=NOW + timedelta(seconds=30)
        )
        assert waiting.equals(log)
        assert received == []
        sent = deliver_alerts(
            _alerts("ongoing"), log, channels=channels, now=NOW + timedelta(minutes=2)
        )
    AlertDeliveries.validate(sent, lazy=True)
    row = sent.row(0, named=True)
    assert (row["state"], row["attempts"], row["last_error"]) == ("sent", 2, None)
    assert len(received) == 1


def test_http_error_is_a_failed_delivery() -> None:
    """A 500 answer is recorded with its status and retried later."""
    with _webhook_server(status=500) as (port, received):
        log = deliver_alerts(_alerts(), pl.DataFrame(), channels=_hooks(port), now=NOW)
    assert len(received) == 1
    row = log.row(0, named=True)
    assert row["state"] == "failed"
    assert "HTTP 500" in row["last_error"]


def test_resolved_alerts_are_not_newly_queued() -> None:
    """Only open or ongoing alerts get delivery rows."""
    log = deliver_alerts(
        _alerts("resolved"), pl.DataFrame(), channels=_hooks(_free_port()), now=NOW
    )
    assert log.is_empty()


def test_email_login_without_password_fails_without_contacting_the_server() -> None:
    """A configured SMTP login with no password is a failed delivery naming the env variable."""
    channels = replace(
        PACKAGED,
        email=replace(
            PACKAGED.email,
            enabled=True,
            host="127.0.0.1",
            port=_free_port(),
            recipients=("x@example.org",),
            username="chimera",
            password_env="MY_SMTP_PW",
        ),
    )
    log = deliver_alerts(_alerts(), pl.DataFrame(), channels=channels, now=NOW)
    assert log["state"].to_list() == ["failed"]
    assert "MY_SMTP_PW" in log["last_error"][0]


def test_non_http_url_is_rejected() -> None:
    """Only http(s) webhooks are called."""
    with pytest.raises(DeliveryError, match="http"):
        send_webhook("file:///etc/passwd", {}, timeout_s=1.0)


def test_naive_time_is_rejected() -> None:
    """Delivery times must be timezone-aware."""
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 - the case under test
    with pytest.raises(ValueError, match="timezone-aware"):
        deliver_alerts(_alerts(), pl.DataFrame(), channels=PACKAGED, now=naive)
