"""Hostile names, links and sizes: nothing escapes the data root, nothing is overwritten."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import polars as pl
import pytest
from flow_builders import ledger, manifest_csv, post_dose_table, sha, table
from reliability_builders import files_under, make_home, poll, put, trial_files
from typer.testing import CliRunner

from chimera import source_file
from chimera.cli import app
from chimera.filing import NAME_MAX_BYTES
from chimera.maintenance import verify_warehouse
from chimera.settings import Settings
from schemas.vocab import FileStatus

NFC = unicodedata.normalize("NFC", "café d01.txt")
NFD = unicodedata.normalize("NFD", "café d01.txt")


def _placed(settings: Settings) -> dict[str, str]:
    """SHA-256 -> path of every file in the archive and quarantine (reports left out)."""
    found = files_under(settings.archive) | {
        f"quarantine/{k}": v
        for k, v in files_under(settings.quarantine).items()
        if not k.endswith((".problems.txt", ".failures.parquet"))
    }
    return {digest: name for name, digest in found.items()}


def test_symlinks_are_never_followed_and_say_so(tmp_path: Path) -> None:
    """Links to a file or a folder outside the inbox (or inside it) are refused, unread.

    The outside files are untouched, nothing of them reaches the warehouse, and the ledger
    and the problems report say why. Before, the linked manifest was read and accepted.
    """
    settings = make_home(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "manifest.csv"
    secret.write_bytes(manifest_csv(range(7, 9)))
    (outside / "folder").mkdir()
    (outside / "folder" / "plate.txt").write_bytes(post_dose_table(7, 50.0))
    put(settings.inbox, {"manifest.csv": manifest_csv()})
    (settings.inbox / "linked_manifest.csv").symlink_to(secret)
    (settings.inbox / "linked_folder").symlink_to(outside / "folder")
    (settings.inbox / "alias.csv").symlink_to(settings.inbox / "manifest.csv")
    before = files_under(outside)

    result = poll(settings)

    fates = {o.file_name: (o.status, o.reason or "") for o in result.outcomes}
    assert fates["manifest.csv"][0] is FileStatus.ACCEPTED
    for name in ("linked_manifest.csv", "linked_folder", "alias.csv"):
        status, reason = fates[name]
        assert status is FileStatus.QUARANTINED
        assert reason.startswith("not_a_regular_file: ")
        assert "links are never followed" in reason
    assert "outside the inbox" in fates["linked_manifest.csv"][1]
    assert "inside the inbox" in fates["alias.csv"][1]
    assert files_under(outside) == before
    samples = pl.read_parquet(settings.warehouse / "samples" / "*.parquet")
    assert "P01-D07" not in samples["sample_id"].to_list()
    report = (settings.quarantine / "linked_manifest.csv.problems.txt").read_text()
    assert "symbolic link" in report and "outside the inbox" in report
    assert (settings.quarantine / "linked_manifest.csv").is_symlink()
    assert not any(settings.inbox.iterdir())


def test_a_named_pipe_is_refused_without_being_opened(tmp_path: Path) -> None:
    """Opening a FIFO for reading would block the poll forever; it is quarantined unread."""
    settings = make_home(tmp_path)
    os.mkfifo(settings.inbox / "plate.txt")
    result = poll(settings)
    assert [(o.file_name, o.status) for o in result.outcomes] == [
        ("plate.txt", FileStatus.QUARANTINED)
    ]
    assert "not a regular file" in (result.outcomes[0].reason or "")


ODD_NAMES = [
    "with spaces and (parentheses).txt",
    "-rf --no-preserve-root.txt",
    "dots..in..the..name..txt",
    "résumé_日本語_плашка.txt",
    "x" * 240 + ".txt",
    "tab\there.txt",
]


def test_odd_names_are_archived_inside_the_data_root_intact(tmp_path: Path) -> None:
    """Spaces, leading dashes, dots, Unicode, control characters, 244-byte names: all archived.

    Every archived file is under ``archive/`` with its exact bytes; names fit the file
    system even with a hash suffix and a report suffix added.
    """
    settings = make_home(tmp_path)
    junk = "junk " + "y" * 245 + ".csv"
    files = {
        "manifest.csv": manifest_csv(range(1, len(ODD_NAMES) + 1)),
        "infusions.csv": trial_files()["infusions.csv"],
        "gm_refs.txt": trial_files()["gm_refs.txt"],
        junk: b"not an export\n",
    }
    files |= {name: post_dose_table(n, 5.0 * n) for n, name in enumerate(ODD_NAMES, start=1)}
    put(settings.inbox, files)

    result = poll(settings)

    fates = {o.file_name: o.status for o in result.outcomes}
    assert fates.pop(junk) is FileStatus.QUARANTINED
    assert set(fates.values()) == {FileStatus.ACCEPTED}
    assert set(_placed(settings)) == {sha(d) for d in files.values()}
    assert not any(settings.inbox.iterdir())
    for path in [*settings.archive.rglob("*"), *settings.quarantine.rglob("*")]:
        assert path.resolve().is_relative_to(settings.home.resolve())
        assert len(path.name.encode()) <= NAME_MAX_BYTES
    reports = list(settings.quarantine.glob("junk *.problems.txt"))
    assert len(reports) == 1 and "not an export" not in reports[0].name
    names = set(ledger(settings.home)["file_name"])
    assert "tab?here.txt" in names  # control characters are never written into the ledger
    assert verify_warehouse(settings).ok


def test_non_utf8_names_reach_the_ledger_as_valid_text(tmp_path: Path) -> None:
    """A name that is not UTF-8 (Latin-1 bytes from an old share) is ingested, shown with U+FFFD."""
    settings = make_home(tmp_path)
    put(settings.inbox, {"manifest.csv": manifest_csv()})
    raw = os.fsencode(settings.inbox) + b"/Pl\xe4tte.txt"
    Path(os.fsdecode(raw)).write_bytes(b"hello, not an export\n")
    result = poll(settings)
    assert {o.file_name for o in result.outcomes} == {"manifest.csv", "Pl\ufffdtte.txt"}
    assert (settings.quarantine / "Pl\ufffdtte.txt").read_bytes() == b"hello, not an export\n"


def test_names_that_collide_never_overwrite_each_other(tmp_path: Path) -> None:
    """One name in two sub-folders, NFC vs NFD spellings, a file named like another's report.

    Every file keeps its own copy (hash suffix on a collision) and every report its own name.
    """
    settings = make_home(tmp_path)
    files = {
        "a/notes.txt": b"first notes\n",
        "b/notes.txt": b"second notes\n",
        "c/notes.txt": b"third notes\n",
        NFC: b"not an export, NFC name\n",
        NFD: b"not an export, NFD name\n",
        "plate.txt.problems.txt.csv": b"decoy\n",
        "plate.txt.failures.parquet": b"decoy parquet\n",
        "plate.txt": b"plate that is not an export\n",
    }
    again = {name: data + b"again\n" for name, data in files.items()}
    put(settings.inbox, files)
    poll(settings)
    put(settings.inbox, again)  # the same names once more
    result = poll(settings)

    assert {o.status for o in result.outcomes} == {FileStatus.QUARANTINED}
    kept = files_under(settings.quarantine)
    reports = [k for k in kept if k.endswith(".problems.txt")]
    assert len(reports) == 2 * len(files)
    quarantined = {
        digest
        for name, digest in kept.items()
        if f"{name}.problems.txt" in kept  # the file a report belongs to
    }
    assert quarantined == {sha(d) for d in [*files.values(), *again.values()]}
    assert ledger(settings.home).filter(pl.col("status") == "quarantined").height == 16


def test_a_file_above_the_size_limit_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 300 MB file (sparse) is quarantined as too large from its size alone: never read."""
    settings = make_home(tmp_path)
    huge = settings.inbox / "plate_export.txt"
    with huge.open("wb") as fh:
        fh.truncate(300_000_000)
    put(settings.inbox, {"manifest.csv": manifest_csv()})
    read = source_file._read_no_follow

    def refuse_huge(path: Path) -> bytes:
        assert path.name != huge.name, "the huge file was read"
        return read(path)

    monkeypatch.setattr(source_file, "_read_no_follow", refuse_huge)
    result = poll(settings)
    fates = {o.file_name: o for o in result.outcomes}
    assert fates["manifest.csv"].status is FileStatus.ACCEPTED
    too_large = fates["plate_export.txt"]
    assert too_large.status is FileStatus.QUARANTINED
    assert too_large.reason_code == "too_large"
    assert "300.0 MB is larger than the 200.0 MB limit" in (too_large.reason or "")
    assert too_large.size_bytes == 300_000_000
    assert (settings.quarantine / "plate_export.txt").stat().st_size == 300_000_000
    assert verify_warehouse(settings).ok


PATH_LIKE_PATIENT = "../../../outside"
PATH_LIKE_SAMPLE = "../../escape/D"


def test_ids_that_look_like_paths_never_become_paths(tmp_path: Path) -> None:
    """Patient, sample and lot ids from file contents (``../../..``, ``..``) name warehouse
    files and reports only through a safe file key: everything stays under the data root."""
    settings = make_home(tmp_path / "deep" / "er")
    files = {
        name: data.decode()
        .replace(",P01,", f",{PATH_LIKE_PATIENT},")
        .replace("\nP01,", f"\n{PATH_LIKE_PATIENT},")
        .replace("P01-D", PATH_LIKE_SAMPLE)
        .replace("LOT-A", "..")
        .encode()
        for name, data in trial_files().items()
    }
    put(settings.inbox, files)
    before = set(tmp_path.rglob("*"))
    runner = CliRunner()
    for command in ("ingest", "report", "verify"):
        args = [command, "--home", str(settings.home)]
        done = runner.invoke(
            app, args + (["--inbox", str(settings.inbox)] if command == "ingest" else [])
        )
        assert done.exit_code == 0, (command, done.output)
    created = set(tmp_path.rglob("*")) - before
    assert len(created) > 20
    assert not [p for p in created if not p.resolve().is_relative_to(settings.home.resolve())]
    chimerism = table(settings.home, "chimerism")
    assert set(chimerism["patient_id"]) == {PATH_LIKE_PATIENT}
    assert sorted(chimerism["sample_id"]) == [f"{PATH_LIKE_SAMPLE}01", f"{PATH_LIKE_SAMPLE}02"]
    assert table(settings.home, "trends")["patient_id"].unique().to_list() == [PATH_LIKE_PATIENT]
    patient_reports = [p for p in (settings.home / "reports").iterdir() if p.name != "cohort.html"]
    assert len(patient_reports) == 1
    assert PATH_LIKE_PATIENT not in patient_reports[0].name
