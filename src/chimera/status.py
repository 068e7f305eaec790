"""``chimera status``: what waits in the inbox and why, what was quarantined, the last run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import polars as pl
from rich.console import Console
from rich.table import Table

from chimera.inbox import scan_inbox
from chimera.registry import read_ledger
from chimera.service import prefect_api_url, server_healthy, ui_url
from chimera.settings import Settings
from chimera.warehouse import Warehouse, sha256_of
from schemas.vocab import FileStatus


def _now() -> datetime:
    return datetime.now(UTC)


def _last_run(api: str) -> str:
    from prefect.client.orchestration import SyncPrefectClient  # noqa: PLC0415
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime  # noqa: PLC0415
    from prefect.client.schemas.sorting import FlowRunSort  # noqa: PLC0415

    with SyncPrefectClient(api) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False)),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        if not runs:
            return "no flow run yet"
        run = runs[0]
        flow = client.read_flow(run.flow_id)
        started = f"{run.start_time:%Y-%m-%d %H:%M:%S} UTC" if run.start_time else "?"
        return f"{flow.name} / {run.name}: {run.state_name} (started {started})"


def _latest_status(ledger: pl.DataFrame) -> dict[str, dict[str, str | None]]:
    if ledger.height == 0:
        return {}
    last = ledger.sort("logged_at").group_by("source_sha256", maintain_order=True).last()
    return {
        row["source_sha256"]: {"status": row["status"], "reason": row["reason"]}
        for row in last.iter_rows(named=True)
    }


def _quarantine_headline(report: Path) -> str:
    lines = report.read_text(encoding="utf-8", errors="replace").splitlines()
    if "What is wrong:" in lines:
        index = lines.index("What is wrong:")
        return lines[index + 1].strip() if index + 1 < len(lines) else ""
    return ""


def print_status(settings: Settings, console: Console) -> int:
    """Files waiting (and for what), quarantined, accepted today; the last flow run's state."""
    now = _now()
    ledger = read_ledger(Warehouse(settings.warehouse))
    latest = _latest_status(ledger)
    waiting = Table(title=f"Inbox {settings.inbox}")
    for column in ("file", "state", "waiting for"):
        waiting.add_column(column)
    candidates = scan_inbox(
        settings.inbox,
        now=now,
        settle_seconds=settings.inbox_rules.settle_seconds,
        ignore_patterns=settings.inbox_rules.ignore_patterns,
    )
    for candidate in candidates:
        try:
            entry = latest.get(sha256_of(candidate.path.read_bytes()), {})
        except OSError:
            entry = {}
        state = entry.get("status") or (
            "ready, not yet polled" if candidate.ready else "still being copied"
        )
        reason = entry.get("reason") or ""
        waiting.add_row(candidate.path.name, state, reason.removeprefix("waiting for "))
    console.print(waiting if candidates else f"inbox {settings.inbox}: empty")
    reports = (
        sorted(settings.quarantine.glob("*.problems.txt")) if settings.quarantine.is_dir() else []
    )
    if reports:
        table = Table(title=f"Quarantined ({settings.quarantine})")
        table.add_column("file")
        table.add_column("why")
        for report in reports:
            table.add_row(report.name.removesuffix(".problems.txt"), _quarantine_headline(report))
        console.print(table)
    else:
        console.print("quarantine: empty")
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    accepted = (
        ledger.filter(
            (pl.col("status") == FileStatus.ACCEPTED.value) & (pl.col("logged_at") >= today)
        )
        if ledger.height
        else ledger
    )
    console.print(f"accepted today (UTC): {accepted.height}")
    for row in accepted.iter_rows(named=True):
        console.print(
            f"  {row['logged_at']:%H:%M:%S}  {row['file_name']}  ({row['detected_format']}, {row['rows']} rows)"
        )
    api = prefect_api_url(settings)
    if server_healthy(api):
        try:
            console.print(f"last flow run: {_last_run(api)}  (UI {ui_url(api)})")
        except httpx.HTTPError as err:
            console.print(f"Prefect server at {api} answered health but not the run query: {err}")
    else:
        console.print(f"no Prefect server running at {api} (start one with `chimera server`)")
    return 0
