"""What leaves the system: file modes, logs, the network, spreadsheets and browsers.

Hostile ids enter through the inbox here, as a lab's manifest would bring them, and are
followed to every output Chimera writes.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flow_builders import (
    FIRST_DOSE,
    SENTINEL,
    files_with_sentinel,
    genemapper_table,
    infusion_csv,
    references_table,
    table,
)
from reliability_builders import make_home, put, trial_files
from typer.testing import CliRunner

from chimera.cli import app
from chimera.export_safety import FORMULA_STARTS

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "chimera"
HOSTILE_SAMPLE = '=HYPERLINK("http://x")<script>alert(1)</script>'
HOSTILE_PATIENT = "@SUM(1+1)<img src=x onerror=alert(1)>"


@pytest.fixture
def world_umask() -> Iterator[None]:
    """Run with the common 022 umask, under which files are world-readable unless made private."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.output


def _ingest_everything(home: Path, inbox: Path) -> None:
    _invoke("ingest", "--inbox", str(inbox), "--home", str(home))
    _invoke("report", "--home", str(home))
    _invoke("verify", "--home", str(home))


def test_nothing_chimera_creates_is_world_readable(tmp_path: Path, world_umask: None) -> None:
    """Archive, quarantine, warehouse (tables, ledger, locks, state) and reports: no access for
    others, whatever the user's umask; dropped files lose their world-read bit when filed."""
    settings = make_home(tmp_path)
    put(settings.inbox, trial_files() | {"notes.txt": b"not an export\n"})
    for path in settings.inbox.iterdir():
        path.chmod(0o666)
    _ingest_everything(settings.home, settings.inbox)
    created = [settings.archive, settings.quarantine, settings.warehouse, settings.home / "reports"]
    checked = 0
    for root in created:
        assert root.is_dir(), root
        for path in [root, *root.rglob("*")]:
            mode = path.lstat().st_mode
            assert not mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IXOTH), (path, oct(mode))
            checked += 1
    assert checked > 40


def test_file_contents_never_reach_the_logs_or_the_alerts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sentinel planted in file contents appears in no log line of a whole ingest, and in
    no alert (message, evidence) opened from the same files (10, 20, 30 % iNK: expansion)."""
    settings = make_home(tmp_path)
    put(settings.inbox, trial_files(range(1, 4)) | files_with_sentinel())
    caplog.set_level(logging.DEBUG)
    _ingest_everything(settings.home, settings.inbox)
    assert len(caplog.records) > 0
    assert SENTINEL not in caplog.text
    for record in caplog.records:
        assert SENTINEL not in str(record.args)
    alerts = table(settings.home, "alerts")
    assert alerts.height >= 1
    for row in alerts.iter_rows(named=True):
        assert SENTINEL not in repr(row)


def test_nothing_is_sent_anywhere_without_alert_channels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest, report, verify and query open no network connection when no channel is set."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        msg = "network use"
        raise OSError(msg)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    settings = make_home(tmp_path)
    put(settings.inbox, trial_files())
    _ingest_everything(settings.home, settings.inbox)
    _invoke("query", "select count(*) as n from chimerism", "--home", str(settings.home))
    assert attempts == []


NETWORK = re.compile(
    r"^\s*(import|from)\s+(httpx|urllib\.request|smtplib|socket|requests|http\.client)\b",
    re.MULTILINE,
)


def test_only_the_alert_channels_and_the_prefect_client_can_reach_the_network() -> None:
    """The modules that can open a connection: alert delivery (configured channels) and the
    local Prefect server's health and status checks (the configured API URL)."""
    users = sorted(
        p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if NETWORK.search(p.read_text())
    )
    assert users == ["channels.py", "service.py", "status.py"]


ANALYTICS_PROBE = """
import runpy, sys
entry = sys.argv[1]
if entry.endswith(".py"):  # run as a lab user would: python flows/ingest.py --help
    sys.argv = [entry, "--help"]
    try:
        runpy.run_path(entry, run_name="__main__")
    except SystemExit:
        pass
else:
    __import__(entry)
import os
from prefect.settings import get_current_settings
print(get_current_settings().server.analytics_enabled, os.environ.get("DO_NOT_TRACK"))
"""
CI_MARKERS = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILDKITE", "TF_BUILD")
"""Prefect's SDK telemetry is off in CI by itself; the probe runs as on a lab machine."""


@pytest.mark.parametrize(
    "entry", ["chimera.cli", "flows.ingest", "flows.deploy", "flows/ingest.py"]
)
def test_prefect_analytics_are_off_in_every_chimera_process(entry: str, tmp_path: Path) -> None:
    """Whatever the user's environment, a process entering through Chimera has Prefect's server
    analytics and its SDK telemetry (``DO_NOT_TRACK``) off before Prefect is first imported."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "CHIMERA_")) and k not in {"DO_NOT_TRACK", *CI_MARKERS}
    }
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    done = subprocess.run(
        [sys.executable, "-c", ANALYTICS_PROBE, entry],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "False 1", done.stdout[-2000:]


WRITERS = re.compile(r"\.(write_csv|write_excel|to_csv)\(|csv\.writer\(|openpyxl")


def test_every_spreadsheet_chimera_writes_goes_through_export_safety() -> None:
    """No module writes CSV or XLSX except through ``chimera.export_safety``."""
    writers = sorted(
        p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if WRITERS.search(p.read_text())
    )
    assert writers == ["export_safety.py"]


def _hostile_trial() -> dict[str, bytes]:
    manifest = (
        "sample_id,patient_id,role,collected_at,specimen,wbc_per_ul,product_lot\n"
        "REF-LOTA,LOT-A,donor_reference,2025-01-05T08:00:00Z,product,,LOT-A\n"
        f"BL-X,{HOSTILE_PATIENT},recipient_baseline,2025-01-08T08:00:00Z,PB,5200,LOT-A\n"
        f'"{HOSTILE_SAMPLE.replace(chr(34), chr(34) * 2)}",{HOSTILE_PATIENT},post_dose,'
        "2025-01-11T09:00:00Z,+cmd|' /C calc'!A0,4800,LOT-A\n"
    ).encode()
    doses = infusion_csv().replace(b"P01,", f"{HOSTILE_PATIENT},".encode())
    plate = genemapper_table([("REF-LOTA", 100.0), ("BL-X", 0.0), (HOSTILE_SAMPLE, 30.0)])
    assert FIRST_DOSE.year == 2025
    return {"manifest.csv": manifest, "doses.csv": doses, "plate.txt": plate}


def test_hostile_ids_from_the_inbox_never_run_in_a_spreadsheet_or_a_browser(
    tmp_path: Path,
) -> None:
    """Formula and HTML ids dropped by a lab: neutralised in every CSV, escaped in every report."""
    settings = make_home(tmp_path)
    put(settings.inbox, _hostile_trial())
    _ingest_everything(settings.home, settings.inbox)
    assert references_table()  # the builders' plate layout is the one used above
    for name, column in (
        ("samples", "sample_id"),
        ("chimerism", "sample_id"),
        ("samples", "specimen"),
    ):
        result = CliRunner().invoke(
            app,
            ["query", f"select {column} from {name}", "--csv", "--home", str(settings.home)],
        )
        assert result.exit_code == 0, result.output
        cells = [line.strip('"') for line in result.output.splitlines()[1:]]
        assert cells, name
        assert not [c for c in cells if c.startswith(FORMULA_STARTS)], (name, cells)
    pages = list((settings.home / "reports").glob("*.html"))
    assert len(pages) >= 2
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "<script>alert(1)" not in html
        assert "<img src=x" not in html
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in p.read_text() for p in pages)
