"""Chimera as a service on one machine: the Prefect server and the served deployments.

I/O glue for the CLI (``chimera server|serve``). The Prefect flows themselves live
in ``flows/`` at the repository root; :func:`serve_deployments` runs ``python -m flows.deploy``
from there as a child process with an explicit environment (Prefect home, API URL, data
folders), so nothing here reads the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
from rich.console import Console

from chimera.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_SECONDS = 120.0


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


def ui_url(api_url: str) -> str:
    """The Prefect UI address of an API URL."""
    return api_url.rstrip("/").removesuffix("/api")


def start_server(settings: Settings, console: Console) -> int:
    """Start ``prefect server start`` in the background unless a server already answers.

    SQLite and logs live under ``<home>/prefect``; analytics are off. Returns 0 once the server
    is healthy, 1 when it did not come up (the log's tail is printed).
    """
    api = prefect_api_url(settings)
    if server_healthy(api):
        console.print(f"Prefect server already running: UI {ui_url(api)}  API {api}")
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
                f"Prefect server running (pid {process.pid}): UI {ui_url(api)}  API {api}"
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
