"""A Prefect inbox flow and a manual ``chimera ingest`` at once, in two processes.

The flow process holds the inbox slot (``flows.common.exclusive_inbox``, as every served poll
does) and goes on only when the test tells it to, so the order is driven by events: the manual
ingest must say it waits, write nothing meanwhile, and then say how long it waited.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from flow_builders import (
    drop,
    infusion_csv,
    ledger,
    manifest_csv,
    post_dose_table,
    references_table,
)

from waiting import DEADLINE_SECONDS, wait_until

pytestmark = pytest.mark.flows
ROOT = Path(__file__).resolve().parents[2]
CHIMERA = [sys.executable, "-c", "from chimera.cli import main; main()"]
HOLDING_FLOW = """
import sys
import flows.ingest as flow_module
poll_once = flow_module.poll_once
def poll_when_told(*args, **kwargs):
    print("holding the inbox", flush=True)  # exclusive_inbox is entered: the slot is held
    sys.stdin.readline()
    return poll_once(*args, **kwargs)
flow_module.poll_once = poll_when_told
raise SystemExit(flow_module.main(["--home", sys.argv[1]]))
"""
FIRST = {
    "manifest.csv": manifest_csv(range(1, 2)),
    "infusions.csv": infusion_csv(),
    "gm_refs.txt": references_table(),
    "gm_d01.txt": post_dose_table(1, 12.0),
}
SECOND = {"manifest_d02.csv": manifest_csv(range(2, 3)), "gm_d02.txt": post_dose_table(2, 20.0)}


def _said(path: Path) -> str:
    return " ".join(path.read_text().split()) if path.exists() else ""


def test_a_manual_ingest_waits_for_a_running_inbox_flow(
    prefect_harness: str, home: Path, tmp_path: Path
) -> None:
    """``chimera ingest FILES`` while the inbox flow holds the slot: waits, says so, then runs."""
    for name, data in FIRST.items():
        drop(home / "inbox", name, data)
    manual = tmp_path / "manual"
    for name, data in SECOND.items():
        drop(manual, name, data)
    env = {**os.environ, "PREFECT_API_URL": prefect_harness, "PYTHONPATH": str(ROOT)}
    flow_run = subprocess.Popen(
        [sys.executable, "-c", HOLDING_FLOW, str(home)],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    second_log = tmp_path / "second.log"
    second = None
    try:
        assert flow_run.stdout is not None
        assert any("holding the inbox" in line for line in flow_run.stdout), flow_run.wait()
        with second_log.open("w") as out:
            second = subprocess.Popen(
                [*CHIMERA, "ingest", str(manual), "--home", str(home)],
                env=env | {"COLUMNS": "200"},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
            wait_until(
                lambda: (
                    "waiting for it to finish" in _said(second_log) or second.poll() is not None
                ),
                "the manual ingest saying it waits",
            )
            said = _said(second_log)
            assert "another ingest is running (pid" in said and "Prefect flow" in said, said
            assert ledger(home).height == 0  # the manual ingest wrote nothing meanwhile
            flow_out, _ = flow_run.communicate("go\n", timeout=DEADLINE_SECONDS)
            assert flow_run.returncode == 0, flow_out
            assert second.wait(timeout=DEADLINE_SECONDS) == 0, _said(second_log)
    finally:
        for process in (flow_run, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    assert "waited" in _said(second_log) and "for another ingest (pid" in _said(second_log)
    log = ledger(home).filter(pl.col("status") == "accepted")
    firsts = log.filter(pl.col("file_name").is_in(list(FIRST)))
    seconds = log.filter(pl.col("file_name").is_in(list(SECOND)))
    assert sorted(firsts["file_name"]) == sorted(FIRST)
    assert sorted(seconds["file_name"]) == sorted(SECOND)
    assert firsts["logged_at"].max() < seconds["logged_at"].min()  # never interleaved
    assert firsts["flow_run_id"].null_count() == 0 and seconds["flow_run_id"].null_count() == 2
