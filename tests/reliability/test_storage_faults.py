"""A full disk or a read-only warehouse during a write: a clean stop, then a full recovery.

Faults are injected where the bytes are written, as the libraries really fail: polars reports
a failed Parquet write as a ``ComputeError`` naming the OS error (after writing part of the
file), Python raises ``OSError``. One test runs the command under a real per-file size limit
(``RLIMIT_FSIZE``), so the kernel refuses the write.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest
from flow_builders import FakeClock, ledger, post_dose_id, sha
from reliability_builders import files_under, make_home, poll, put, temporaries, trial_files
from typer.testing import CliRunner

from chimera import filing
from chimera import inbox_lock as lock_module
from chimera.cli import app
from chimera.maintenance import verify_warehouse
from chimera.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
WORDS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only"}
NOTES = b"not an export, to be quarantined\n"


def _files() -> dict[str, bytes]:
    return trial_files(range(1, 2)) | {"notes.txt": NOTES}


@contextmanager
def failing_write(monkeypatch: pytest.MonkeyPatch, at: int, code: int) -> Iterator[list[str]]:
    """Make the ``at``-th Parquet write fail with ``code`` after writing part of the file."""
    write = pl.DataFrame.write_parquet
    calls: list[str] = []

    def faulty(frame: pl.DataFrame, file: Path, *args: object, **kwargs: object) -> None:
        calls.append(str(file))
        if len(calls) == at:
            Path(file).write_bytes(b"PAR1 half a file")
            msg = (
                "parquet: File out of specification: underlying IO error: "
                f"{os.strerror(code)} (os error {code})"
            )
            raise pl.exceptions.ComputeError(msg)
        write(frame, file, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(pl.DataFrame, "write_parquet", faulty)
        yield calls


def _writes_of_a_clean_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    settings = make_home(tmp_path / "count")
    put(settings.inbox, _files())
    with failing_write(monkeypatch, at=0, code=errno.ENOSPC) as calls:
        poll(settings)
    return len(calls)


def _nothing_lost_or_partial(settings: Settings) -> None:
    """Every dropped file is in exactly one place; no half-written file anywhere."""
    assert temporaries(settings.home) == []
    for path in settings.warehouse.rglob("*.parquet"):
        pl.read_parquet(path)  # raises on a partial file
    expected = Counter(sha(d) for d in _files().values())
    placed = Counter(
        v
        for k, v in (files_under(settings.archive) | files_under(settings.quarantine)).items()
        if not k.endswith((".problems.txt", ".failures.parquet"))
    )
    left = Counter(files_under(settings.inbox).values())
    assert placed + left == expected


def _recovered(settings: Settings, clock: FakeClock) -> None:
    clock.advance(60)
    again = poll(settings, clock)
    assert again.failure is None, again.failure
    log = ledger(settings.home)
    accepted = Counter(log.filter(pl.col("status") == "accepted")["source_sha256"])
    assert accepted == Counter(sha(d) for n, d in _files().items() if n != "notes.txt")
    assert sha(NOTES) in set(log.filter(pl.col("status") == "quarantined")["source_sha256"])
    assert not any(settings.inbox.iterdir())
    chimerism = pl.read_parquet(settings.warehouse / "chimerism" / "P01.parquet")
    assert chimerism["sample_id"].to_list() == [post_dose_id(1)]
    assert verify_warehouse(settings).ok, verify_warehouse(settings).mismatches


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_a_failed_parquet_write_at_every_point_stops_cleanly_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """Fail each Parquet write of a poll in turn (raw rows, ledger, registry, derived tables,
    quarantine report, inbox state): the poll says why in plain words and stops, the file it
    was on stays in the inbox, nothing is partial, and the next poll finishes everything."""
    points = _writes_of_a_clean_run(tmp_path, monkeypatch)
    assert points >= 12  # raw rows, registry, ledger (one a poll), derived, snapshot, report, state
    for at in range(1, points + 1):
        settings = make_home(tmp_path / f"{code}-{at}")
        put(settings.inbox, _files())
        clock = FakeClock()
        with failing_write(monkeypatch, at=at, code=code):
            result = poll(settings, clock)
        assert result.failure is not None, at
        assert WORDS[code] in result.failure
        assert "and run again" in result.failure
        name = result.failure.split(":")[0]
        if name in _files():
            assert (settings.inbox / name).read_bytes() == _files()[name], at
        _nothing_lost_or_partial(settings)
        _recovered(settings, clock)


def test_a_failed_move_into_the_archive_or_quarantine_leaves_the_file_in_the_inbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while a file is being placed: it stays in the inbox, the run stops."""
    put_file = filing._put
    for at in range(1, len(_files()) + 1):
        settings = make_home(tmp_path / str(at))
        put(settings.inbox, _files())
        clock = FakeClock()
        calls: list[Path] = []

        def full(
            source: Path, target: Path, *, move: bool, calls: list[Path] = calls, at: int = at
        ) -> None:
            calls.append(source)
            if len(calls) == at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
            put_file(source, target, move=move)

        with monkeypatch.context() as patch:
            patch.setattr(filing, "_put", full)
            result = poll(settings, clock)
        assert result.failure is not None and "the disk is full" in result.failure
        assert calls[at - 1].read_bytes() == _files()[calls[at - 1].name]
        _nothing_lost_or_partial(settings)
        _recovered(settings, clock)


def test_the_command_says_the_disk_is_full_in_plain_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``chimera ingest --inbox`` on a full disk: exit 1, one plain sentence, no traceback;
    the same command succeeds once there is space."""
    settings = make_home(tmp_path)
    put(settings.inbox, _files())
    command = ["ingest", "--inbox", str(settings.inbox), "--home", str(settings.home)]
    with failing_write(monkeypatch, at=2, code=errno.ENOSPC):
        failed = CliRunner().invoke(app, command)
    assert failed.exit_code == 1, failed.output
    assert failed.exception is None or isinstance(failed.exception, SystemExit)
    assert "Traceback" not in failed.output
    text = " ".join(failed.output.split())
    assert "the run stopped: manifest.csv: the disk is full (writing" in text
    assert "stay where they are; nothing partial was written" in text
    assert (settings.inbox / "manifest.csv").is_file()
    ok = CliRunner().invoke(app, command)
    assert ok.exit_code == 3, ok.output  # notes.txt is quarantined; everything else accepted
    assert verify_warehouse(settings).ok


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_real_file_size_limit_fails_the_run_cleanly(tmp_path: Path) -> None:
    """Under ``RLIMIT_FSIZE`` the kernel refuses writes past 3 kB (EFBIG): a clean exit 1."""
    settings = make_home(tmp_path)
    put(settings.inbox, _files())
    command = [
        sys.executable,
        "-c",
        "from chimera.cli import main; main()",
        "ingest",
        "--inbox",
        str(settings.inbox),
        "--home",
        str(settings.home),
    ]
    limited = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        preexec_fn=lambda: _limit_file_size(3_000),
        check=False,
    )
    said = " ".join((limited.stdout + limited.stderr).split())
    assert limited.returncode == 1, said
    assert "the file would exceed the size limit for one file" in said
    assert "Traceback" not in said
    _nothing_lost_or_partial(settings)
    ok = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert ok.returncode == 3, ok.stdout + ok.stderr
    assert verify_warehouse(settings).ok


def test_a_read_only_warehouse_is_said_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even the inbox lock cannot be written: exit 1, plain words, every file still in the inbox."""
    settings = make_home(tmp_path)
    put(settings.inbox, _files())

    def read_only(folder: Path) -> Path:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))

    monkeypatch.setattr(lock_module, "private_dirs", read_only)
    result = CliRunner().invoke(
        app, ["ingest", "--inbox", str(settings.inbox), "--home", str(settings.home)]
    )
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "taking the inbox lock: the file system is read-only (writing" in text
    assert files_under(settings.inbox) == {n: sha(d) for n, d in _files().items()}
