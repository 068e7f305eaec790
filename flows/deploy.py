"""Deployments, served from one process: ``python -m flows.deploy`` (or ``chimera serve``).

- ``ingest-inbox/inbox-poll``: polls the inbox every ``inbox_rules.poll_interval_seconds``;
  one run at a time (a poll still running cancels the next one);
- ``refresh-trends/refresh-trends``: triggered by the ``chimera.inbox.ingested`` event of a
  poll that accepted files, for the patients in the event;
- ``nightly-rebuild/nightly-rebuild``: cron ``30 2 * * *`` (UTC).

Every flow also holds the global concurrency limit ``chimera-inbox`` (created here).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # `python flows/deploy.py` puts flows/ on sys.path, not the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import flows  # noqa: F401  (its __init__ turns Prefect analytics off first)

from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from chimera.settings import Settings, load_settings
from flows.common import ensure_alert_automation, ensure_concurrency_limit
from flows.ingest import ingest_inbox
from flows.nightly import nightly_rebuild
from flows.trends import refresh_trends

NIGHTLY_CRON = "30 2 * * *"


def build_deployments(settings: Settings) -> list[RunnerDeployment]:
    """The three deployments; flow runs read their settings from the serving environment."""
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
    )
    poll = ingest_inbox.to_deployment(
        name="inbox-poll",
        interval=timedelta(seconds=settings.inbox_rules.poll_interval_seconds),
        parameters={"refresh_trends": False},
        concurrency_limit=one_at_a_time,
        description="Poll the inbox: accept, archive, quarantine or keep waiting every settled file.",
        tags=["chimera", "inbox"],
    )
    trends = refresh_trends.to_deployment(
        name="refresh-trends",
        triggers=[
            DeploymentEventTrigger(
                name="after new data",
                expect={"chimera.inbox.ingested"},
                match={"prefect.resource.id": "chimera.inbox.*"},
                parameters={"patients": "{{ event.payload.patients }}"},
            )
        ],
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE
        ),
        description="Rebuild trends, kinetics and alerts for the patients a poll touched.",
        tags=["chimera", "trends"],
    )
    nightly = nightly_rebuild.to_deployment(
        name="nightly-rebuild",
        cron=NIGHTLY_CRON,
        concurrency_limit=one_at_a_time,
        description="Verify the warehouse against the archive; rebuild every patient and trend.",
        tags=["chimera", "nightly"],
    )
    return [_built(d) for d in (poll, trends, nightly)]


def _built(
    deployment: RunnerDeployment | Coroutine[Any, Any, RunnerDeployment],
) -> RunnerDeployment:
    """``to_deployment`` is sync-or-async; called outside an event loop it returns the object."""
    if not isinstance(deployment, RunnerDeployment):
        msg = "to_deployment returned a coroutine; call build_deployments outside an event loop"
        raise TypeError(msg)
    return deployment


def main() -> None:
    """Create the concurrency limit and serve the deployments (blocks until interrupted)."""
    settings = load_settings()
    ensure_concurrency_limit()
    if settings.alert_notification_block:
        ensure_alert_automation(settings.alert_notification_block)
    serve(*build_deployments(settings))


if __name__ == "__main__":
    main()
