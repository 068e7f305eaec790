"""Settling across polls: a file is read only after two looks a settle interval apart agree.

Every test drives an injected clock (``FakeClock``) with explicit polls; the one real-time
test runs the one-shot command, which waits for the files itself.
"""

from __future__ import annotations

import os
import re
import zipfile
from datetime import timedelta
from io import BytesIO
from pathlib import Path

import polars as pl
from flow_builders import FakeClock, ledger, manifest_csv, post_dose_table
from reliability_builders import make_home, put, trial_files
from typer.testing import CliRunner

from chimera.cli import app
from chimera.inbox import load_sightings, scan_inbox, settle_inbox
from chimera.poll import poll_inbox
from chimera.warehouse import Warehouse
from schemas.vocab import FileStatus

SETTLE = "[inbox_rules]\nsettle_seconds = 10.0\nincomplete_settle_seconds = 60.0\n"


def _look(inbox: Path, clock: FakeClock, seen: dict | None = None) -> dict[str, object]:
    found = scan_inbox(
        inbox,
        now=clock(),
        settle_seconds=10.0,
        ignore_patterns=(".*",),
        seen=seen,
        incomplete_settle_seconds=60.0,
    )
    return {c.path.name: c for c in found}


def _seen(looks: dict[str, object]) -> dict:
    return {name: c.sighting for name, c in looks.items()}  # type: ignore[attr-defined]


def test_a_file_seen_once_is_never_ready(tmp_path: Path) -> None:
    """The first look cannot tell a finished file from a stalled copy, whatever its mtime."""
    put(tmp_path, {"manifest.csv": manifest_csv()})
    old = (tmp_path / "manifest.csv").stat().st_mtime - 86_400
    os.utime(tmp_path / "manifest.csv", (old, old))
    first = _look(tmp_path, FakeClock())["manifest.csv"]
    assert not first.ready  # type: ignore[attr-defined]
    assert first.why == "just arrived"  # type: ignore[attr-defined]
    assert first.wait_seconds == 10.0  # type: ignore[attr-defined]


def test_two_agreeing_looks_a_settle_interval_apart_make_it_ready(tmp_path: Path) -> None:
    """Same size and mtime 10 s later: ready; 9.9 s later: not yet."""
    put(tmp_path, {"manifest.csv": manifest_csv()})
    clock = FakeClock()
    seen = _seen(_look(tmp_path, clock))
    clock.advance(9.9)
    early = _look(tmp_path, clock, seen)["manifest.csv"]
    assert not early.ready  # type: ignore[attr-defined]
    assert round(early.wait_seconds, 3) == 0.1  # type: ignore[attr-defined]
    clock.advance(0.1)
    assert _look(tmp_path, clock, _seen({"manifest.csv": early}))["manifest.csv"].ready  # type: ignore[attr-defined]


def test_any_change_between_looks_restarts_the_wait(tmp_path: Path) -> None:
    """A new size (mtime put back, as a timestamp-keeping copy does) or a new mtime resets it."""
    path = tmp_path / "gm.txt"
    data = post_dose_table(1, 12.0)
    path.write_bytes(data[: len(data) // 2])
    kept = path.stat().st_mtime_ns
    clock = FakeClock()
    seen = _seen(_look(tmp_path, clock))
    path.write_bytes(data)
    os.utime(path, ns=(kept, kept))
    clock.advance(100)
    grown = _look(tmp_path, clock, seen)["gm.txt"]
    assert not grown.ready  # type: ignore[attr-defined]
    assert grown.why == "still being copied (it changed since the last look)"  # type: ignore[attr-defined]
    os.utime(path, ns=(kept + 10**9, kept + 10**9))
    clock.advance(100)
    touched = _look(tmp_path, clock, _seen({"gm.txt": grown}))["gm.txt"]
    assert not touched.ready  # type: ignore[attr-defined]
    assert touched.sighting.unchanged_since == clock()  # type: ignore[attr-defined]


def _workbook(complete: bool) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as book:
        book.writestr("xl/workbook.xml", "<workbook/>" * 50)
    data = buffer.getvalue()
    return data if complete else data[: len(data) - 30]


def test_a_cut_off_end_must_stay_unchanged_longer(tmp_path: Path) -> None:
    """No final line end, or a workbook without its zip directory: 60 s instead of 10 s.

    A UTF-16 export ending in a line end and Excel's "CSV UTF-8" (BOM, no final line end)
    are complete.
    """
    put(
        tmp_path,
        {
            "cut.csv": b"sample_id,patient_id\nS1,P0",
            "whole.csv": b"sample_id,patient_id\nS1,P01\n",
            "utf16.txt": "sample_id\tpatient_id\r\nS1\tP01\r\n".encode("utf-16"),
            "excel.csv": b"\xef\xbb\xbfsample_id,patient_id\r\nS1,P01",
            "cut.xlsx": _workbook(complete=False),
            "whole.xlsx": _workbook(complete=True),
            "empty.csv": b"",
        },
    )
    clock = FakeClock()
    seen = _seen(_look(tmp_path, clock))
    clock.advance(10)
    looks = _look(tmp_path, clock, seen)
    ready = {name for name, c in looks.items() if c.ready}  # type: ignore[attr-defined]
    assert ready == {"whole.csv", "utf16.txt", "excel.csv", "whole.xlsx"}
    assert "cut off" in looks["cut.csv"].why  # type: ignore[attr-defined]
    assert looks["cut.xlsx"].wait_seconds == 50  # type: ignore[attr-defined]
    clock.advance(50)
    later = _look(tmp_path, clock, _seen(looks))
    assert all(c.ready for c in later.values())  # type: ignore[attr-defined]


def test_looks_are_remembered_between_polls_in_the_warehouse(tmp_path: Path) -> None:
    """Each poll stores its look (``inbox_state``); the next poll, any process, goes on from it."""
    settings = make_home(tmp_path, SETTLE)
    put(settings.inbox, trial_files())
    clock = FakeClock()
    first = poll_inbox(settings, clock=clock, refresh=False, max_wait_seconds=0)
    assert first.outcomes == ()
    assert {u.why for u in first.unread} == {"just arrived"}
    stored = load_sightings(Warehouse(settings.warehouse), settings.inbox)
    assert set(stored) == set(trial_files())
    assert {s.unchanged_since for s in stored.values()} == {clock()}
    clock.advance(10)
    second = poll_inbox(settings, clock=clock, refresh=False, max_wait_seconds=0)
    assert {o.file_name: o.status for o in second.outcomes} == dict.fromkeys(
        trial_files(), FileStatus.ACCEPTED
    )
    assert second.unread == ()
    assert load_sightings(Warehouse(settings.warehouse), settings.inbox) == {}


def test_a_poll_waits_for_files_that_just_arrived(tmp_path: Path) -> None:
    """With a wait budget the poll looks again after the settle interval and reads everything.

    The manifest dropped with its exports is read first: no export is left waiting for it.
    """
    settings = make_home(tmp_path, SETTLE)
    put(settings.inbox, trial_files())
    clock = FakeClock()
    result = poll_inbox(
        settings, clock=clock, refresh=False, max_wait_seconds=30, sleep=clock.sleep
    )
    assert clock.slept == [10.0]
    assert {o.status for o in result.outcomes} == {FileStatus.ACCEPTED}
    assert len(result.outcomes) == len(trial_files())
    log = ledger(settings.home)
    assert log.filter(pl.col("status") == "accepted").height == len(trial_files())


def test_the_wait_is_bounded_and_lists_what_it_did_not_read(tmp_path: Path) -> None:
    """A copy that keeps changing is waited for up to the budget, then listed with why."""
    settings = make_home(tmp_path, SETTLE)
    put(settings.inbox, {"manifest.csv": manifest_csv()})
    growing = settings.inbox / "gm_d01.txt"
    data = post_dose_table(1, 12.0)
    clock = FakeClock()

    def copy_more(seconds: float) -> None:
        clock.sleep(seconds)
        with growing.open("ab") as fh:
            fh.write(data[: len(data) // 8])

    growing.write_bytes(b"")
    result = settle_inbox(settings, clock=clock, max_wait_seconds=45, sleep=copy_more)
    assert [c.path.name for c in result if c.ready] == ["manifest.csv"]
    assert sum(clock.slept) <= 45
    assert clock() - FakeClock()() <= timedelta(seconds=45)
    stuck = next(c for c in result if c.path == growing)
    assert stuck.why == "still being copied (it changed since the last look)"


def test_drop_then_one_shot_ingest_reads_every_file(tmp_path: Path) -> None:
    """``chimera ingest --inbox`` right after a drop waits for the files, then reads them all.

    Before, it skipped every file modified in the last settle interval without a word.
    """
    settings = make_home(tmp_path, "[inbox_rules]\nsettle_seconds = 0.5\n")
    files = trial_files()
    put(settings.inbox, files)
    result = CliRunner().invoke(
        app, ["ingest", "--inbox", str(settings.inbox), "--home", str(settings.home)]
    )
    assert result.exit_code == 0, result.output
    assert not any(settings.inbox.iterdir())
    log = ledger(settings.home)
    accepted = log.filter(pl.col("status") == "accepted")["file_name"]
    assert sorted(accepted) == sorted(files)
    assert "waiting 0 s for 5 file(s) still settling" in result.output.replace("\n", " ")


def test_one_shot_no_wait_lists_every_unread_file_with_when(tmp_path: Path) -> None:
    """``--no-wait`` reads nothing that just arrived and says, per file, why and when."""
    settings = make_home(tmp_path, "[inbox_rules]\nsettle_seconds = 20.0\n")
    files = trial_files()
    put(settings.inbox, files)
    result = CliRunner().invoke(
        app,
        ["ingest", "--inbox", str(settings.inbox), "--home", str(settings.home), "--no-wait"],
    )
    assert result.exit_code == 4, result.output
    said = re.findall(r"not read: (\S+): just arrived; will be read in (\d+) s", result.output)
    assert sorted(name for name, _ in said) == sorted(files)
    assert {int(seconds) for _, seconds in said} == {20}
    assert ledger(settings.home).height == 0
    assert sorted(p.name for p in settings.inbox.iterdir()) == sorted(files)
