"""Flow ``refresh_trends``: rebuild trend, kinetics and alert tables for some or all patients."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from chimera.refresh import RefreshSummary
from flows.common import emit_alert_events, exclusive_inbox, md_cell, rename_run, settings_for
from flows.tasks import describe_alerts, refresh_patients


def _now() -> datetime:
    return datetime.now(UTC)


def summary_markdown(title: str, summary: RefreshSummary, alerts: list[dict[str, str]]) -> str:
    """A short Markdown report of a refresh."""
    lines = [
        f"# {title}",
        "",
        f"- patients refreshed: {', '.join(sorted(summary.patients)) or 'none'}",
        f"- open alerts: {summary.open_alerts}",
        f"- failed notification deliveries: {summary.failed_deliveries}",
        "",
    ]
    if alerts:
        lines += ["| alert | rule | severity | patient | message |", "|---|---|---|---|---|"]
        lines += [
            f"| {a['alert_id']} | {a['rule']} | {a['severity']} | {a['patient_id']} | {md_cell(a['message'])} |"
            for a in alerts
        ]
    else:
        lines.append("No new alerts.")
    return "\n".join(lines) + "\n"


@flow(name="refresh-trends", log_prints=False)
def refresh_trends(
    patients: list[str] | None = None,
    home: str | None = None,
    *,
    lock_timeout_seconds: float = 600.0,
) -> dict[str, Any]:
    """Recompute trends, kinetics and alerts for ``patients`` (None = everyone with results)."""
    settings = settings_for(home)
    with exclusive_inbox(settings, timeout_seconds=lock_timeout_seconds):
        summary = refresh_patients(
            None if patients is None else set(patients), settings=settings, now=_now()
        )
        alerts = describe_alerts(settings, summary.opened_alert_ids)
    emit_alert_events(alerts)
    create_markdown_artifact(
        markdown=summary_markdown("Trend refresh", summary, alerts),
        key="chimera-trend-refresh",
        description="Patients refreshed and alerts opened",
    )
    rename_run(f"{len(summary.patients)} patients: {len(alerts)} new alerts")
    get_run_logger().info(
        "refreshed %d patients, %d new alerts", len(summary.patients), len(alerts)
    )
    return {
        "patients": sorted(summary.patients),
        "opened_alerts": list(summary.opened_alert_ids),
        "open_alerts": summary.open_alerts,
        "failed_deliveries": summary.failed_deliveries,
    }
