"""Chimera as a service on one machine: Prefect server, deployments, watcher, status.

I/O glue for the CLI (``chimera server|serve|watch|status``). The Prefect flows themselves live
in ``flows/`` at the repository root; :func:`serve_deployments` runs ``python -m flows.deploy``
from there as a child process with an explicit environment (Prefect home, API URL, data
folders), so nothing here reads the environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from threading import Event
from urllib.parse import urlparse

import httpx
import polars as pl
from rich.console import Console
from rich.table import Table

from chimera.inbox import scan_inbox
from chimera.pipeline import FileOutcome, ingest_paths, read_ledger, recover_dirty
from chimera.settings import Settings
from chimera.warehouse import Warehouse, sha256_of
from schemas.vocab import FileStatus

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_SECONDS = 120.0
LOCK_FILE = ".inbox.lock"


def prefect_api_url(settings: Settings) -> str:
    """The Prefect API this installation talks to (``settings.prefect_api_url`` or the local port).

    Examples
    --------
    >>> prefect_api_url(Settings(prefect_port=4321))
    'http://127.0.0.1:4321/api'
    """
    return settings.prefect_api_url or f"http://127.0.0.1:{settings.prefect_port}/api"


def prefect_home(settings: Settings) -> Path:
    """Where the local Prefect server keeps its SQLite database and logs."""
    return settings.home / "prefect"


def prefect_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a Prefect child process.

    Prefect home and SQLite database under the data folder, analytics off, the API URL, and
    the data folders the child's settings should resolve to.
    """
    home = prefect_home(settings).resolve()
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": prefect_api_url(settings),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "CHIMERA_HOME": str(settings.home.resolve()),
            "CHIMERA_WAREHOUSE": str(settings.warehouse.resolve()),
            "CHIMERA_INBOX": str(settings.inbox.resolve()),
        }
    )
    return env


def server_healthy(api_url: str, *, timeout_seconds: float = 2.0) -> bool:
    """Whether a Prefect server answers ``GET <api>/health``."""
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout_seconds)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _ui_url(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")


def start_server(settings: Settings, console: Console) -> int:
    """Start ``prefect server start`` in the background unless a server already answers.

    SQLite and logs live under ``<home>/prefect``; analytics are off. Returns 0 once the server
    is healthy, 1 when it did not come up (the log's tail is printed).
    """
    api = prefect_api_url(settings)
    if server_healthy(api):
        console.print(f"Prefect server already running: UI {_ui_url(api)}  API {api}")
        return 0
    parsed = urlparse(api)
    if parsed.hostname not in {"127.0.0.1", "localhost"}:
        console.print(
            f"[red]error:[/red] {api} is not a local address and does not answer; start that server there"
        )
        return 1
    home = prefect_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    port = parsed.port or settings.prefect_port
    command = [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            env=prefect_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (home / "server.pid").write_text(f"{process.pid}\n", encoding="utf-8")
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server_healthy(api):
            console.print(
                f"Prefect server running (pid {process.pid}): UI {_ui_url(api)}  API {api}"
            )
            console.print(
                f"database and log under {home.resolve()}; stop it with `kill {process.pid}`"
            )
            return 0
        if process.poll() is not None:
            break
        time.sleep(0.5)
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
    console.print(
        f"[red]error:[/red] the Prefect server did not become healthy at {api}; log {log}:"
    )
    for line in tail:
        console.print(f"  {line}", markup=False)
    if process.poll() is None:
        process.terminate()
    return 1


def serve_deployments(settings: Settings, console: Console) -> int:
    """Serve the deployments of ``flows/deploy.py`` against the local server (blocks).

    Inbox polling, trend refresh and nightly rebuild; the server is started first when none
    answers.
    """
    if not (REPO_ROOT / "flows" / "deploy.py").is_file():
        console.print(f"[red]error:[/red] flows/deploy.py not found under {REPO_ROOT}")
        return 2
    if not server_healthy(prefect_api_url(settings)):
        code = start_server(settings, console)
        if code:
            return code
    for folder in (settings.inbox, settings.warehouse, settings.archive, settings.quarantine):
        folder.mkdir(parents=True, exist_ok=True)
    console.print(
        f"serving inbox polling every {settings.inbox_rules.poll_interval_seconds} s on "
        f"{settings.inbox.resolve()}; Ctrl-C stops"
    )
    command = [sys.executable, "-m", "flows.deploy"]
    try:
        return subprocess.run(
            command, env=prefect_env(settings), cwd=REPO_ROOT, check=False
        ).returncode
    except KeyboardInterrupt:
        return 130


@contextlib.contextmanager
def inbox_lock(settings: Settings, *, timeout_seconds: float) -> Iterator[None]:
    """Hold the inbox poller lock: one poll (or rebuild) at a time across processes.

    A separate file from the warehouse's writer lock, which the pipeline takes inside each
    file's ingest. The kernel drops the lock when its holder dies (``SIGKILL`` included).
    Raises ``TimeoutError`` when another holder keeps it longer than ``timeout_seconds``.
    """
    settings.warehouse.mkdir(parents=True, exist_ok=True)
    path = settings.warehouse / LOCK_FILE
    deadline = time.monotonic() + timeout_seconds
    with path.open("a+") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    msg = f"{path}: another inbox poll held the lock for over {timeout_seconds:g} s"
                    raise TimeoutError(msg) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class Poll:
    """One pass over the inbox: what was processed and what is still settling."""

    outcomes: tuple[FileOutcome, ...]
    settling: tuple[str, ...] = field(default=())


def _now() -> datetime:
    return datetime.now(UTC)


def poll_inbox(
    settings: Settings, *, clock: Callable[[], datetime] = _now, lock_timeout_seconds: float = 600.0
) -> Poll:
    """Ingest every settled inbox file once, without Prefect (used by ``chimera watch``)."""
    from chimera.refresh import refresh_after_ingest  # noqa: PLC0415

    with inbox_lock(settings, timeout_seconds=lock_timeout_seconds):
        recover_dirty(settings=settings, now=clock())
        candidates = scan_inbox(
            settings.inbox,
            now=clock(),
            settle_seconds=settings.inbox_rules.settle_seconds,
            ignore_patterns=settings.inbox_rules.ignore_patterns,
        )
        ready = [c.path for c in candidates if c.ready]
        outcomes = ingest_paths(ready, settings=settings, clock=clock, move=True) if ready else []
        if any(o.status is FileStatus.ACCEPTED for o in outcomes):
            refresh_after_ingest(outcomes, settings=settings, now=clock())
    return Poll(tuple(outcomes), tuple(c.path.name for c in candidates if not c.ready))


def watch_inbox(settings: Settings, console: Console, *, stop: Event | None = None) -> int:
    """Ingest files as soon as they land, in-process (no Prefect server needed).

    On a file event wait the settle interval, then ingest every settled file.

    Network shares (SMB/NFS) deliver no file events to the watching machine, so polling
    (``chimera serve``) stays the default; this watcher also re-polls every
    ``poll_interval_seconds`` so waiting files still time out. ``stop`` ends the loop (tests).
    """
    from watchfiles import watch  # noqa: PLC0415

    rules = settings.inbox_rules
    settings.inbox.mkdir(parents=True, exist_ok=True)
    console.print(
        f"watching {settings.inbox.resolve()} (settle {rules.settle_seconds:g} s); Ctrl-C stops"
    )

    def run() -> Poll:
        poll = poll_inbox(settings)
        for o in poll.outcomes:
            console.print(
                f"{o.file_name}: {o.status.value}" + (f" ({o.reason})" if o.reason else "")
            )
        return poll

    pending = bool(run().settling)
    last = time.monotonic()
    tick_ms = max(int(rules.settle_seconds * 1000), 200)
    try:
        for changes in watch(
            settings.inbox,
            stop_event=stop,
            yield_on_timeout=True,
            rust_timeout=tick_ms,
            debounce=tick_ms,
        ):
            due = time.monotonic() - last >= rules.poll_interval_seconds
            if changes or pending or due:
                if changes:
                    time.sleep(rules.settle_seconds)
                pending = bool(run().settling)
                last = time.monotonic()
    except KeyboardInterrupt:
        return 0
    return 0


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
            console.print(f"last flow run: {_last_run(api)}  (UI {_ui_url(api)})")
        except httpx.HTTPError as err:
            console.print(f"Prefect server at {api} answered health but not the run query: {err}")
    else:
        console.print(f"no Prefect server running at {api} (start one with `chimera server`)")
    return 0
