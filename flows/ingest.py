"""Flow ``ingest_inbox``: poll the inbox once and put every settled file where it belongs.

Run it once, in-process, with ``python flows/ingest.py [--home DIR]``: with no
``PREFECT_API_URL`` Prefect 3 starts a temporary local server for the run and stops it after.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # `python flows/ingest.py` puts flows/ on sys.path, not the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import flows  # noqa: F401  (its __init__ turns Prefect analytics off first)

import argparse
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from chimera.ingest import FileOutcome
from chimera.poll import Poll, RefreshStep, exit_code, poll_once
from chimera.refresh import RefreshSummary
from chimera.settings import Settings
from chimera.storage import synced_site
from flows.common import (
    emit_alert_events,
    emit_file_event,
    emit_ingested_event,
    exclusive_inbox,
    md_cell,
    rename_run,
    settings_for,
)
from flows.runners import parse_in_parallel
from flows.tasks import describe_alerts, refresh_after_ingest
from schemas.vocab import FileStatus


def _now() -> datetime:
    return datetime.now(UTC)


def run_name(
    outcomes: Sequence[FileOutcome], errors: Sequence[str], settling: Sequence[str]
) -> str:
    """``"3 files: 2 accepted, 1 waiting"``; says so when nothing was ready."""
    counts = {s.value: sum(o.status is s for o in outcomes) for s in FileStatus}
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    if errors:
        parts.append(f"{len(errors)} failed")
    total = len(outcomes) + len(errors)
    name = (
        f"{total} file{'s' if total != 1 else ''}: {', '.join(parts)}"
        if total
        else "no files ready"
    )
    return name + (f" ({len(settling)} still copying)" if settling else "")


def report_markdown(
    outcomes: Sequence[FileOutcome], errors: Sequence[str], settling: Sequence[str], held: str
) -> str:
    """The run's Markdown artifact: one row per file with its fate."""
    lines = ["# Inbox poll", "", f"Slot held via {held}.", ""]
    if outcomes or errors:
        lines += ["| file | status | format | rows | detail |", "|---|---|---|---|---|"]
        for o in outcomes:
            detail = o.reason or ""
            if o.destination is not None:
                detail += f" → {o.destination}"
            lines.append(
                f"| {md_cell(o.file_name)} | {o.status.value} | {md_cell(o.detected_format)} | {o.rows} | {md_cell(detail)} |"
            )
        lines += [f"| {md_cell(e)} | **error** | | | see the task run log |" for e in errors]
    else:
        lines.append("No settled files in the inbox.")
    if settling:
        lines += ["", f"Still being copied (not read yet): {', '.join(settling)}"]
    return "\n".join(lines) + "\n"


def _refresh_step(settings: Settings) -> RefreshStep:
    """The poll's refresh as a Prefect task."""

    def refresh(outcomes: Sequence[FileOutcome]) -> RefreshSummary | None:
        # The files are in place whatever happens here: a failed refresh is reported in the
        # run name, artifact and log, and the next refresh (trend deployment) redoes it.
        state = refresh_after_ingest(outcomes, settings=settings, now=_now(), return_state=True)
        if not state.is_completed():
            return None
        summary: RefreshSummary = state.result()
        return summary

    return refresh


@flow(name="ingest-inbox")
def ingest_inbox(
    home: str | None = None, *, refresh_trends: bool = True, lock_timeout_seconds: float = 600.0
) -> dict[str, Any]:
    """Poll the inbox once: every settled file is accepted, left waiting, or quarantined.

    ``refresh_trends=False`` leaves trends to the ``refresh-trends`` deployment, which the
    ``chimera.inbox.ingested`` event of this run triggers.
    """
    settings = settings_for(home)
    logger = get_run_logger()
    with ExitStack() as stack:
        try:
            held = stack.enter_context(
                exclusive_inbox(settings, timeout_seconds=lock_timeout_seconds)
            )
            # Shared object storage ([scale] URLs): lease, pull, and publish when the poll ends.
            settings, _ = stack.enter_context(synced_site(settings))
        except TimeoutError as err:
            logger.warning("skipped: %s", err)
            rename_run("skipped: another poll is running")
            return {"skipped": True, "files": [], "settling": [], "errors": []}
        run_id = flow_run.get_id()
        poll = poll_once(
            settings,
            clock=_now,
            parse_many=parse_in_parallel(settings, run_id),
            flow_run_id=run_id,
            refresh=_refresh_step(settings) if refresh_trends else None,
        )
        alerts = (
            describe_alerts(settings, poll.refreshed.opened_alert_ids)
            if poll.refreshed is not None
            else []
        )
    for outcome in poll.outcomes:
        emit_file_event(outcome)
    if poll.accepted:
        patients = sorted({p for o in poll.accepted for p in o.patients})
        emit_ingested_event(settings, patients, [o.file_name for o in poll.accepted])
    emit_alert_events(alerts)
    failed_note = " (trend refresh failed)" if poll.refresh_failed else ""
    create_markdown_artifact(
        markdown=report_markdown(poll.outcomes, poll.errors, poll.settling, held)
        + ("\n**Trend refresh failed**: see the task run log.\n" if poll.refresh_failed else ""),
        key="chimera-inbox-poll",
        description="Files seen by this inbox poll and what happened to each",
    )
    name = run_name(poll.outcomes, poll.errors, poll.settling) + failed_note
    rename_run(name)
    logger.info(name)
    if poll.errors:
        msg = (
            f"{len(poll.errors)} file(s) failed with an unexpected error and stay in the inbox: "
            f"{', '.join(poll.errors)}"
        )
        raise RuntimeError(msg)
    return poll_result(poll, alerts)


def poll_result(poll: Poll, alerts: Sequence[dict[str, str]]) -> dict[str, Any]:
    """The flow's return value: each file's fate, files still settling, alerts opened."""
    return {
        "skipped": False,
        "files": [
            {
                "file_name": o.file_name,
                "sha256": o.sha256,
                "status": o.status.value,
                "reason": o.reason,
                "supersedes": o.supersedes,
                "destination": str(o.destination) if o.destination else None,
            }
            for o in poll.outcomes
        ],
        "settling": list(poll.settling),
        "errors": list(poll.errors),
        "opened_alerts": [a["alert_id"] for a in alerts],
        "refresh_failed": poll.refresh_failed,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Poll the inbox once from the command line; exit 3 if a file was quarantined, 4 if waiting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--home", help="data folder (default: CHIMERA_HOME or ./chimera-data)")
    args = parser.parse_args(argv)
    result = ingest_inbox(args.home)
    for f in result["files"]:
        sys.stdout.write(
            f"{f['file_name']}: {f['status']}{' - ' + f['reason'] if f['reason'] else ''}\n"
        )
    return exit_code(FileStatus(f["status"]) for f in result["files"])


if __name__ == "__main__":
    raise SystemExit(main())
