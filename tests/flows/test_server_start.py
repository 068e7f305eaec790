"""`chimera server`: Prefect's configured server is used; else a local SQLite one, started once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from flow_builders import free_port, prefect_unconfigured
from prefect.settings import PREFECT_API_URL, temporary_settings
from rich.console import Console

from chimera.service import (
    prefect_api,
    prefect_api_url,
    prefect_env,
    serve_deployments,
    server_healthy,
    start_server,
)
from chimera.settings import load_settings

pytestmark = pytest.mark.flows


def test_server_starts_under_the_data_folder_and_is_not_started_twice(tmp_path: Path) -> None:
    """The first call starts a healthy server with its SQLite DB in <home>/prefect; the second finds it."""
    home = tmp_path / "data"
    home.mkdir()
    (home / "chimera.toml").write_text(f"prefect_port = {free_port()}\n")
    settings = load_settings(home=home)
    console = Console(record=True)
    with prefect_unconfigured():
        assert start_server(settings, console) == 0
    pid = int((home / "prefect" / "server.pid").read_text())
    try:
        assert server_healthy(prefect_api_url(settings))
        assert (home / "prefect" / "prefect.db").exists()
        with prefect_unconfigured():
            assert start_server(settings, console) == 0
        assert "already running" in console.export_text()
        assert int((home / "prefect" / "server.pid").read_text()) == pid
    finally:
        os.killpg(pid, signal.SIGTERM)


def test_configured_server_that_answers_is_used_not_started_12(
    prefect_harness: str, tmp_path: Path
) -> None:
    """With PREFECT_API_URL set to a live server, server and serve use it and start nothing."""
    home = tmp_path / "data"
    settings = load_settings(home=home)
    api = prefect_api(settings)
    assert api.url == prefect_harness
    assert api.configured_by == "PREFECT_API_URL"
    console = Console(record=True)
    assert start_server(settings, console) == 0
    assert "not starting another" in console.export_text()
    assert not (home / "prefect").exists()
    env = prefect_env(settings, {"PREFECT_HOME": "/users/own/.prefect"}, api=api)
    assert env["PREFECT_API_URL"] == prefect_harness
    assert env["PREFECT_HOME"] == "/users/own/.prefect"
    assert "PREFECT_SERVER_DATABASE_CONNECTION_URL" not in env


def test_configured_server_that_is_down_is_not_replaced_12(tmp_path: Path) -> None:
    """A configured server that does not answer is an error; no local server is started."""
    home = tmp_path / "data"
    port = free_port()
    (home).mkdir()
    (home / "chimera.toml").write_text(f"prefect_port = {port}\n")
    settings = load_settings(home=home)
    console = Console(record=True, width=200)
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        assert start_server(settings, console) == 1
        assert serve_deployments(settings, console) == 1
    text = console.export_text()
    assert f"http://127.0.0.1:{port}/api" in text
    assert "does not answer" in text
    assert not (home / "prefect" / "server.pid").exists()
    assert not server_healthy(f"http://127.0.0.1:{port}/api")


def test_prefect_profile_api_url_is_honoured_by_chimera_server_12(tmp_path: Path) -> None:
    """`chimera server` under a Prefect profile with PREFECT_API_URL starts no server of its own."""
    prefect_home = tmp_path / "prefect-home"
    prefect_home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    (prefect_home / "profiles.toml").write_text(
        f'active = "lab"\n\n[profiles.lab]\nPREFECT_API_URL = "{url}"\n'
    )
    home = tmp_path / "data"
    home.mkdir()
    (home / "chimera.toml").write_text(f"prefect_port = {port}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHIMERA_"))}
    env |= {"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = subprocess.run(
        [sys.executable, "-c", "from chimera.cli import main; main()", "server"],
        env=env | {"CHIMERA_HOME": str(home), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Prefect profile 'lab'" in done.stdout
    assert url in done.stdout
    assert not (home / "prefect" / "server.pid").exists()
    assert not server_healthy(url)
