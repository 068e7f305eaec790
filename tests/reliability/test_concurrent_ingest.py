"""Two ingests at once in two processes: they never interleave, and the second says it waited.

The first process holds the inbox lock (as the served flow does through
``flows.common.exclusive_inbox``) and ingests only when the test tells it to, so the order is
driven by events, not by timing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
from flow_builders import ledger, post_dose_table
from reliability_builders import make_home, put, trial_files

from waiting import DEADLINE_SECONDS, wait_until

ROOT = Path(__file__).resolve().parents[2]
FIRST = """
import sys
from pathlib import Path
from chimera.poll import inbox_lock, poll_once
from chimera.settings import load_settings
settings = load_settings(home=Path(sys.argv[1]))
with inbox_lock(settings, timeout_seconds=60, what="served inbox poll"):
    print("locked", flush=True)
    sys.stdin.readline()
    poll = poll_once(settings, max_wait_seconds=0)
    print(len(poll.accepted), "accepted", flush=True)
"""


def _said(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_second_ingest_waits_for_the_first_and_says_so(tmp_path: Path) -> None:
    """``chimera ingest FILES`` while an inbox poll runs: it waits, then ingests after it."""
    settings = make_home(tmp_path)
    put(settings.inbox, trial_files(range(1, 2)))
    extra = tmp_path / "manual"
    extra.mkdir()
    (extra / "gm_d02.txt").write_bytes(post_dose_table(2, 20.0))
    (extra / "manifest_d02.csv").write_bytes(trial_files(range(2, 3))["manifest.csv"])
    first = subprocess.Popen(
        [sys.executable, "-c", FIRST, str(settings.home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    second_log = tmp_path / "second.log"
    second = None
    try:
        assert first.stdout is not None and first.stdin is not None
        assert first.stdout.readline().strip() == "locked"
        with second_log.open("w") as out:
            second = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from chimera.cli import main; main()",
                    "ingest",
                    str(extra),
                    "--home",
                    str(settings.home),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=ROOT,
            )
            wait_until(
                lambda: (
                    "waiting for it to finish" in _said(second_log) or second.poll() is not None
                ),
                "the second ingest saying it waits",
            )
            said = _said(second_log)
            assert "another ingest is running (pid" in said, said
            assert "served inbox poll" in said
            assert ledger(settings.home).height == 0  # the second has written nothing
            first.stdin.write("go\n")
            first.stdin.flush()
            assert first.stdout.readline().strip() == "4 accepted"
            assert first.wait(timeout=DEADLINE_SECONDS) == 0
            assert second.wait(timeout=DEADLINE_SECONDS) == 0, second_log.read_text()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    said = " ".join(second_log.read_text().split())
    assert "waited" in said and "for another ingest (pid" in said
    log = ledger(settings.home)
    firsts = log.filter(pl.col("file_name").is_in(list(trial_files(range(1, 2)))))
    seconds = log.filter(pl.col("file_name").is_in(["gm_d02.txt", "manifest_d02.csv"]))
    assert firsts["file_name"].n_unique() == 4 and seconds["file_name"].n_unique() == 2
    assert firsts["logged_at"].max() < seconds["logged_at"].min()  # never interleaved
