"""End to end with a real local Prefect server: the served polling deployment ingests files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
from flow_builders import (
    archived,
    drop,
    free_port,
    infusion_csv,
    ledger,
    manifest_csv,
    post_dose_table,
    prefect_unconfigured,
    references_table,
    sha,
    table,
    write_config,
)
from rich.console import Console

from chimera.service import prefect_api_url, start_server
from chimera.settings import load_settings
from waiting import exited, holds_within, wait_until

pytestmark = pytest.mark.flows
ROOT = Path(__file__).resolve().parents[2]


def _stop(pid: int) -> None:
    """Stop a process group we started: SIGINT, then SIGTERM, then SIGKILL (bounded waits)."""
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        if holds_within(lambda: exited(pid), grace, every=0.2):
            return


def _base_env(prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHIMERA_"))}
    env |= {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
    }
    return env


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    """A real local Prefect server, started the way ``chimera server`` starts it."""
    data = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    write_config(data, f"prefect_port = {port}\n")
    settings = load_settings(home=data)
    console = Console(record=True)
    with prefect_unconfigured():
        assert start_server(settings, console) == 0, console.export_text()
    pid = int((data / "prefect" / "server.pid").read_text())
    try:
        yield prefect_api_url(settings), port, data / "prefect"
    finally:
        _stop(pid)


def _flow_runs(api: str, flow_name: str) -> list[dict[str, object]]:
    body = {
        "flows": {"name": {"any_": [flow_name]}},
        "flow_runs": {
            "state": {"type": {"any_": ["RUNNING", "COMPLETED", "FAILED", "CRASHED", "PENDING"]}}
        },
        "limit": 50,
    }
    response = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10)
    response.raise_for_status()
    runs: list[dict[str, object]] = response.json()
    return runs


def _named_run_done(api: str) -> bool:
    """A completed inbox poll whose run name says files were accepted."""
    runs = _flow_runs(api, "ingest-inbox")
    return any(str(r["name"]).endswith("accepted") for r in runs if r["state_type"] == "COMPLETED")


def _resource_ids(api: str, name: str) -> set[str]:
    return {str(e["resource"]["prefect.resource.id"]) for e in _events(api, name)}  # type: ignore[index]


def _events(api: str, name: str) -> list[dict[str, object]]:
    body = {
        "filter": {"event": {"name": [name]}, "occurred": {"since": "2000-01-01T00:00:00Z"}},
        "limit": 50,
    }
    response = httpx.post(f"{api}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    events: list[dict[str, object]] = response.json()["events"]
    return events


def test_served_poll_deployment_ingests_dropped_files(
    prefect_server: tuple[str, int, Path], tmp_path: Path
) -> None:
    """``chimera serve`` polls the inbox: dropped files are accepted, archived and in the warehouse."""
    api, port, prefect_home = prefect_server
    home = tmp_path / "data"
    write_config(
        home,
        f"prefect_port = {port}\n\n[inbox_rules]\nsettle_seconds = 1.0\npoll_interval_seconds = 5\n",
    )
    env = _base_env(prefect_home) | {"CHIMERA_HOME": str(home)}
    out = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-c", "from chimera.cli import main; main()", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    files = {
        "manifest.csv": manifest_csv(),
        "infusions.csv": infusion_csv(),
        "gm_refs.txt": references_table(),
        "gm_d01.txt": post_dose_table(1, 12.0),
    }

    def log_tail() -> str:
        return (tmp_path / "serve.log").read_text(errors="replace")[-3000:]

    expected = {sha(d) for d in files.values()}

    def accepted() -> set[str]:
        assert serve.poll() is None, log_tail()
        log = ledger(home)
        if "status" not in log.columns:
            return set()
        return set(log.filter(pl.col("status") == "accepted")["source_sha256"])

    try:
        for name, data in files.items():
            drop(home / "inbox", name, data, age_seconds=0)
        # The ledger row comes before the move out of the inbox: wait for both.
        wait_until(
            lambda: expected <= accepted() and not any((home / "inbox").iterdir()),
            "every file accepted and moved out of the inbox",
            every=0.5,
            diagnose=log_tail,
        )
        assert accepted() == expected
        assert set(archived(home)) >= expected
        # The ledger says "accepted" per file; the patients are rebuilt once the poll ends.
        wait_until(
            lambda: _named_run_done(api),
            "a completed poll named after its accepted files",
            every=0.5,
            diagnose=lambda: [
                (r["name"], r["state_type"]) for r in _flow_runs(api, "ingest-inbox")
            ],
        )
        wait_until(
            lambda: table(home, "chimerism").height > 0, "P01 rebuilt", every=0.5, diagnose=log_tail
        )
        assert table(home, "chimerism")["sample_id"].to_list() == ["P01-D01"]
        wanted = {f"chimera.file.{s}" for s in expected}
        wait_until(
            lambda: wanted <= _resource_ids(api, "chimera.file.accepted"),
            "a chimera.file.accepted event per file",
            every=0.5,
            diagnose=lambda: _resource_ids(api, "chimera.file.accepted"),
        )
        wait_until(
            lambda: bool(_flow_runs(api, "refresh-trends")),
            "the chimera.inbox.ingested event triggering a trend refresh",
            every=0.5,
            diagnose=log_tail,
        )
    finally:
        _stop(serve.pid)
        out.close()
