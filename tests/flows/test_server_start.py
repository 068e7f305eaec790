"""`chimera server` starts a local SQLite Prefect server under the data folder, once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from flow_builders import free_port
from rich.console import Console

from chimera.service import prefect_api_url, server_healthy, start_server
from chimera.settings import load_settings

pytestmark = pytest.mark.flows


def test_server_starts_under_the_data_folder_and_is_not_started_twice(tmp_path: Path) -> None:
    """The first call starts a healthy server with its SQLite DB in <home>/prefect; the second finds it."""
    home = tmp_path / "data"
    home.mkdir()
    (home / "chimera.toml").write_text(f"prefect_port = {free_port()}\n")
    settings = load_settings(home=home)
    console = Console(record=True)
    assert start_server(settings, console) == 0
    pid = int((home / "prefect" / "server.pid").read_text())
    try:
        assert server_healthy(prefect_api_url(settings))
        assert (home / "prefect" / "prefect.db").exists()
        assert start_server(settings, console) == 0
        assert "already running" in console.export_text()
        assert int((home / "prefect" / "server.pid").read_text()) == pid
    finally:
        os.killpg(pid, signal.SIGTERM)
