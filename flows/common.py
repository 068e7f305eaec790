"""Orchestration helpers shared by the flows: settings, the inbox slot, events, run names."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect.automations import Automation, EventTrigger, Posture, SendNotification
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event
from prefect.exceptions import ObjectAlreadyExists
from prefect.runtime import flow_run

from chimera.inbox_lock import inbox_lock
from chimera.ingest import FileOutcome
from chimera.settings import Settings, load_settings
from schemas.vocab import FileStatus

INBOX_LIMIT = "chimera-inbox"
"""Global concurrency limit (1 slot) held by every flow that writes the warehouse."""
LEASE_SECONDS = 60.0
"""Slot lease; renewed while the flow runs, so a killed holder frees the slot within a minute."""
EVENTED = (FileStatus.ACCEPTED, FileStatus.QUARANTINED)


def settings_for(home: str | None) -> Settings:
    """Settings of a data folder (its ``chimera.toml`` applies), or from the environment."""
    return load_settings() if home is None else load_settings({"CHIMERA_HOME": home})


def ensure_concurrency_limit(name: str = INBOX_LIMIT, limit: int = 1) -> bool:
    """Create the global concurrency limit on the Prefect server; False when it already exists."""
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit)
            )
        except ObjectAlreadyExists:
            return False
    return True


@contextmanager
def exclusive_inbox(settings: Settings, *, timeout_seconds: float) -> Iterator[str]:
    """Hold the inbox slot: the global limit (when the server has it) and the file lock.

    The global limit ``chimera-inbox`` serialises flows across workers sharing one Prefect
    server; the inbox file lock serialises writers on one machine, with or without a server.
    Yields how the slot is held; raises ``TimeoutError`` when it stays busy for longer than
    ``timeout_seconds``.
    """
    with ExitStack() as stack:
        held = "file lock"
        try:
            stack.enter_context(
                concurrency(
                    INBOX_LIMIT,
                    occupy=1,
                    strict=True,
                    timeout_seconds=timeout_seconds,
                    lease_duration=LEASE_SECONDS,
                )
            )
            held = f"global concurrency limit {INBOX_LIMIT!r} + file lock"
        except ConcurrencySlotAcquisitionError:
            pass  # no such limit (test harness, temporary server): the file lock alone serialises
        lock = stack.enter_context(
            inbox_lock(settings, timeout_seconds=timeout_seconds, what="Prefect flow")
        )
        yield held + (f" ({lock.render()})" if lock.waited_seconds else "")


def rename_run(name: str) -> None:
    """Give the current flow run a name that says what it did."""
    run_id = flow_run.get_id()
    if run_id is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id), name=name)


def inbox_resource(settings: Settings) -> dict[str, str]:
    """The Prefect event resource of an inbox folder."""
    folder = str(Path(settings.inbox).resolve())
    return {
        "prefect.resource.id": f"chimera.inbox.{hashlib.sha256(folder.encode()).hexdigest()[:12]}",
        "prefect.resource.name": folder,
    }


def emit_file_event(outcome: FileOutcome) -> None:
    """``chimera.file.accepted`` / ``chimera.file.quarantined`` with resource ``chimera.file.<sha>``."""
    if outcome.status not in EVENTED:
        return
    emit_event(
        event=f"chimera.file.{outcome.status.value}",
        resource={
            "prefect.resource.id": f"chimera.file.{outcome.sha256}",
            "prefect.resource.name": outcome.file_name,
            "chimera.format": outcome.detected_format or "unknown",
        },
        payload={
            "file_name": outcome.file_name,
            "status": outcome.status.value,
            "reason": outcome.reason,
            "reason_code": outcome.reason_code,
            "rows": outcome.rows,
            "patients": sorted(outcome.patients),
            "destination": str(outcome.destination) if outcome.destination else None,
        },
    )


def emit_ingested_event(settings: Settings, patients: list[str], files: list[str]) -> None:
    """``chimera.inbox.ingested``: one poll accepted files; triggers the trend refresh."""
    emit_event(
        event="chimera.inbox.ingested",
        resource=inbox_resource(settings),
        payload={"patients": patients, "files": files},
    )


def emit_alert_events(alerts: list[dict[str, str]]) -> None:
    """``chimera.alert.opened`` per new alert (resource ``chimera.alert.<id>``), for automations."""
    for alert in alerts:
        emit_event(
            event="chimera.alert.opened",
            resource={
                "prefect.resource.id": f"chimera.alert.{alert['alert_id']}",
                "prefect.resource.name": f"{alert['rule']} {alert['patient_id']}",
                "chimera.severity": alert["severity"],
                "chimera.patient": alert["patient_id"],
            },
            payload=dict(alert),
        )


ALERT_SUBJECT = (
    "Chimera {{ event.payload.severity | e }} alert: {{ event.payload.rule | e }} "
    "({{ event.payload.patient_id | e }})"
)
ALERT_BODY = "{{ event.payload.message | e }}"
"""Notification templates: ids come from lab files, so HTML in them is escaped (``| e``) for
channels that render it (Slack, Teams, HTML e-mail)."""
ALERT_AUTOMATION = "chimera-alert-opened"
"""Automation that forwards ``chimera.alert.opened`` events to a Prefect notification block."""


def ensure_alert_automation(block_name: str) -> UUID | None:
    """Create or update the automation sending each new alert to a notification block.

    ``block_name`` is ``<block-type-slug>/<name>`` of a block the lab configured in Prefect
    (Slack, Microsoft Teams, e-mail, webhook ... apprise underneath), e.g.
    ``slack-webhook/lab-alerts``. Returns the automation id (None if the server gave none).
    """
    block = cast("Block", Block.load(block_name))
    block_id = block._block_document_id
    if block_id is None:
        msg = f"notification block {block_name!r} is not saved on the Prefect server"
        raise ValueError(msg)
    automation = Automation(
        name=ALERT_AUTOMATION,
        description="Chimera: notify the clinical team of every new persistence/expansion/loss alert.",
        trigger=EventTrigger(
            expect={"chimera.alert.opened"},
            match={"prefect.resource.id": "chimera.alert.*"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject=ALERT_SUBJECT,
                body=ALERT_BODY,
            )
        ],
    )
    try:
        existing: Automation | None = cast("Automation", Automation.read(name=ALERT_AUTOMATION))
    except ValueError:
        existing = None
    if existing is None:
        return cast("Automation", automation.create()).id
    automation.id = existing.id
    automation.update()
    return existing.id


def md_cell(value: Any) -> str:
    """A value made safe for one Markdown table cell."""
    return str("" if value is None else value).replace("|", "\\|").replace("\n", " ")
