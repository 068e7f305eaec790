"""Chimera as a service on one machine: the Prefect server and the served deployments.

I/O glue for the CLI (``chimera server|serve|status``). Prefect's own configuration comes
first, as every Prefect user expects: when ``PREFECT_API_URL`` is set (environment variable or
the active Prefect profile, read through ``prefect.settings``) chimera uses that server and
never starts one. Otherwise chimera runs its own local server (SQLite under
``<home>/prefect``, analytics off) at ``settings.prefect_api_url`` or ``prefect_port``.

The Prefect flows themselves live in ``flows/`` at the repository root;
:func:`serve_deployments` runs ``python -m flows.deploy`` from there as a child process with
an explicit environment (API URL, data folders), so nothing here reads the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
from rich.console import Console

from chimera.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_SECONDS = 120.0


def prefect_api_url(settings: Settings) -> str:
    """The API of chimera's local server (``settings.prefect_api_url`` or the local port).

    Examples
    --------
    >>> prefect_api_url(Settings(prefect_port=4321))
    'http://127.0.0.1:4321/api'
    """
    return settings.prefect_api_url or f"http://127.0.0.1:{settings.prefect_port}/api"


@dataclass(frozen=True)
class PrefectApi:
    """The Prefect API chimera talks to, and who chose it."""

    url: str
    configured_by: str | None = None
    """Prefect's configuration that set it (``Prefect profile 'lab'``, ``PREFECT_API_URL``);
    None = chimera's own local server, which chimera may start."""
    api_key: str | None = field(default=None, repr=False)

    @property
    def managed(self) -> bool:
        """Whether this is chimera's own local server (started by ``chimera server``)."""
        return self.configured_by is None


def configured_prefect_api() -> PrefectApi | None:
    """The API URL Prefect itself is configured with (env var or active profile), if any."""
    from prefect.settings import (  # noqa: PLC0415
        PREFECT_API_URL,
        get_current_settings,
        load_current_profile,
    )

    current = get_current_settings()
    url = current.api.url
    if not url:
        return None
    profile = load_current_profile()
    named = profile.settings.get(PREFECT_API_URL) == url
    source = f"Prefect profile {profile.name!r}" if named else "PREFECT_API_URL"
    key = current.api.key.get_secret_value() if current.api.key is not None else None
    return PrefectApi(url, source, key)


def prefect_api(settings: Settings) -> PrefectApi:
    """Prefect's configured server when there is one, else chimera's local server."""
    return configured_prefect_api() or PrefectApi(prefect_api_url(settings))


def prefect_home(settings: Settings) -> Path:
    """Where the local Prefect server keeps its SQLite database and logs."""
    return settings.home / "prefect"


def prefect_env(
    settings: Settings, base: dict[str, str] | None = None, *, api: PrefectApi | None = None
) -> dict[str, str]:
    """Environment for a Prefect child process.

    The API URL (and key) of ``api`` (default: chimera's local server), analytics off, and the
    data folders the child's settings should resolve to. For chimera's own server also its
    Prefect home and SQLite database under the data folder; a server configured in Prefect
    keeps the user's Prefect home and profiles.
    """
    api = api or PrefectApi(prefect_api_url(settings))
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "PREFECT_API_URL": api.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "CHIMERA_HOME": str(settings.home.resolve()),
            "CHIMERA_WAREHOUSE": str(settings.warehouse.resolve()),
            "CHIMERA_INBOX": str(settings.inbox.resolve()),
        }
    )
    if api.api_key:
        env["PREFECT_API_KEY"] = api.api_key
    if api.managed:
        home = prefect_home(settings).resolve()
        env["PREFECT_HOME"] = str(home)
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    return env


def server_healthy(
    api_url: str, *, timeout_seconds: float = 2.0, api_key: str | None = None
) -> bool:
    """Whether a Prefect server answers ``GET <api>/health``."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    try:
        response = httpx.get(
            f"{api_url.rstrip('/')}/health", timeout=timeout_seconds, headers=headers
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def ui_url(api_url: str) -> str:
    """The Prefect UI address of an API URL."""
    return api_url.rstrip("/").removesuffix("/api")


def _use_configured(api: PrefectApi, console: Console) -> int:
    """Report on the server Prefect is configured with (never start another); 0 if it answers."""
    if server_healthy(api.url, api_key=api.api_key):
        console.print(
            f"Prefect server configured by {api.configured_by} answers: UI {ui_url(api.url)}  "
            f"API {api.url}; not starting another"
        )
        return 0
    console.print(
        f"[red]error:[/red] the Prefect server configured by {api.configured_by} ({api.url}) "
        "does not answer; start that server, or unset PREFECT_API_URL (or switch Prefect "
        "profile) to run chimera's local server"
    )
    return 1


def start_server(settings: Settings, console: Console) -> int:
    """Start ``prefect server start`` in the background unless a server answers or is configured.

    When Prefect is configured with a server (``PREFECT_API_URL``, a Prefect profile) that
    server is used and none is started. Otherwise SQLite and logs live under ``<home>/prefect``;
    analytics are off. Returns 0 once the server is healthy, 1 when it did not come up (the
    log's tail is printed) or the configured one does not answer.
    """
    configured = prefect_api(settings)
    if not configured.managed:
        return _use_configured(configured, console)
    api = configured.url
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
    """Serve the deployments of ``flows/deploy.py`` against the Prefect server (blocks).

    Inbox polling, trend refresh and nightly rebuild, against the server Prefect is configured
    with, else chimera's local server (started first when it does not answer).
    """
    if not (REPO_ROOT / "flows" / "deploy.py").is_file():
        console.print(f"[red]error:[/red] flows/deploy.py not found under {REPO_ROOT}")
        return 2
    api = prefect_api(settings)
    if not server_healthy(api.url, api_key=api.api_key):
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
            command, env=prefect_env(settings, api=api), cwd=REPO_ROOT, check=False
        ).returncode
    except KeyboardInterrupt:
        return 130
