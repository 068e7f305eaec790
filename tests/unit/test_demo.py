"""The demo's own check against the sample trial's design (``chimera.demo``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from chimera.demo import DesignedFile, check_design, earlier_fates, read_design
from chimera.ingest import FileOutcome
from schemas.vocab import FileStatus

DESIGN = (
    DesignedFile("qpcr/plate.txt", FileStatus.ACCEPTED),
    DesignedFile("qpcr/plate_reexport.txt", FileStatus.ACCEPTED, supersedes="qpcr/plate.txt"),
    DesignedFile("ddpcr/cut.csv", FileStatus.QUARANTINED, reason_contains="truncated"),
)


def _outcome(name: str, status: FileStatus, **extra: str) -> FileOutcome:
    return FileOutcome(file_name=name, sha256=f"sha-{name}", size_bytes=1, status=status, **extra)


def _as_designed() -> dict[str, FileOutcome]:
    return {
        "plate.txt": _outcome("plate.txt", FileStatus.ACCEPTED),
        "plate_reexport.txt": _outcome(
            "plate_reexport.txt", FileStatus.ACCEPTED, supersedes="plate.txt"
        ),
        "cut.csv": _outcome("cut.csv", FileStatus.QUARANTINED, reason="truncated: cut off"),
    }


def test_every_file_as_designed_passes_and_names_the_quarantine_on_purpose() -> None:
    check = check_design(DESIGN, _as_designed(), {})
    assert check.ok
    assert (check.total, check.as_designed) == (3, 3)
    assert [d.path for d in check.on_purpose] == ["ddpcr/cut.csv"]


def test_a_wrong_fate_a_wrong_reason_a_missed_supersession_and_a_missing_file_fail() -> None:
    outcomes = _as_designed()
    outcomes["plate.txt"] = _outcome("plate.txt", FileStatus.QUARANTINED, reason="unreadable")
    outcomes["cut.csv"] = _outcome("cut.csv", FileStatus.QUARANTINED, reason="unknown format")
    outcomes["plate_reexport.txt"] = _outcome("plate_reexport.txt", FileStatus.ACCEPTED)
    check = check_design(DESIGN, outcomes, {})
    assert not check.ok
    assert check.as_designed == 0
    assert "designed accepted, ended quarantined (unreadable)" in check.mismatches[0]
    assert "should supersede plate.txt" in check.mismatches[1]
    assert "'truncated'" in check.mismatches[2]
    del outcomes["cut.csv"]
    assert "was not read" in check_design(DESIGN, outcomes, {}).mismatches[-1]


def test_a_second_run_judges_duplicates_by_their_first_fate() -> None:
    outcomes = {
        name: _outcome(name, FileStatus.DUPLICATE) for name in ("plate.txt", "plate_reexport.txt")
    }
    outcomes["cut.csv"] = _outcome("cut.csv", FileStatus.QUARANTINED, reason="truncated again")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ledger = pl.DataFrame(
        {
            "source_sha256": ["sha-plate.txt", "sha-plate_reexport.txt", "sha-plate.txt"],
            "status": ["accepted", "accepted", "duplicate"],
            "reason": [None, "supersedes plate.txt", None],
            "logged_at": [t0, t0, t0.replace(hour=1)],
        }
    )
    earlier = earlier_fates(ledger)
    assert earlier["sha-plate.txt"] == (FileStatus.ACCEPTED, None)
    assert check_design(DESIGN, outcomes, earlier).ok
    assert not check_design(DESIGN, outcomes, {}).ok


def test_a_folder_without_a_design_has_none(tmp_path: Path) -> None:
    assert read_design(tmp_path) is None


def test_the_sample_trial_design_is_read_whole(sample_data_path: Path) -> None:
    design = read_design(sample_data_path)
    assert design is not None
    assert len(design) == 96
    assert sum(d.fate is FileStatus.QUARANTINED for d in design) == 1
    assert sum(d.supersedes is not None for d in design) == 2
