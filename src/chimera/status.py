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
from chimera.service import PrefectApi, prefect_api, server_healthy, ui_url
from chimera.settings import Settings
from chimera.warehouse import Warehouse, sha256_of
from schemas.vocab import FileStatus


def _now() -> datetime:
    return datetime.now(UTC)


def _last_run(api: PrefectApi) -> str:
    from prefect.client.orchestration import SyncPrefectClient  # noqa: PLC0415
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime  # noqa: PLC0415
    from prefect.client.schemas.sorting import FlowRunSort  # noqa: PLC0415

    with SyncPrefectClient(api.url, api_key=api.api_key) as client:
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


def _print_inbox(settings: Settings, ledger: pl.DataFrame, now: datetime, console: Console) -> None:
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


def _print_quarantine(settings: Settings, console: Console) -> None:
    folder = settings.quarantine
    reports = sorted(folder.glob("*.problems.txt")) if folder.is_dir() else []
    if not reports:
        console.print("quarantine: empty")
        return
    table = Table(title=f"Quarantined ({folder})")
    table.add_column("file")
    table.add_column("why")
    for report in reports:
        table.add_row(report.name.removesuffix(".problems.txt"), _quarantine_headline(report))
    console.print(table)


def _print_accepted_today(ledger: pl.DataFrame, now: datetime, console: Console) -> None:
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    accepted = ledger.filter(
        (pl.col("status") == FileStatus.ACCEPTED) & (pl.col("logged_at") >= today)
    )
    console.print(f"accepted today (UTC): {accepted.height}")
    for row in accepted.iter_rows(named=True):
        console.print(
            f"  {row['logged_at']:%H:%M:%S}  {row['file_name']}  ({row['detected_format']}, {row['rows']} rows)"
        )


def _print_last_run(api: PrefectApi, console: Console) -> None:
    if not server_healthy(api.url, api_key=api.api_key):
        if api.managed:
            console.print(
                f"no Prefect server running at {api.url} (start one with `chimera server`)"
            )
        else:
            console.print(
                f"the Prefect server configured by {api.configured_by} ({api.url}) does not answer"
            )
        return
    try:
        console.print(f"last flow run: {_last_run(api)}  (UI {ui_url(api.url)})")
    except httpx.HTTPError as err:
        console.print(f"Prefect server at {api.url} answered health but not the run query: {err}")


def print_status(settings: Settings, console: Console) -> int:
    """Files waiting (and for what), quarantined, accepted today; the last flow run's state.

    The last run comes from the server Prefect is configured with, else chimera's local one.
    """
    now = _now()
    ledger = read_ledger(Warehouse(settings.warehouse))
    _print_inbox(settings, ledger, now, console)
    _print_quarantine(settings, console)
    _print_accepted_today(ledger, now, console)
    _print_last_run(prefect_api(settings), console)
    return 0
