"""The table of file fates: every file's fate is printed, as a table or (large batch) a listing."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from chimera.errors import Problem
from chimera.ingest import FileOutcome
from chimera.report.outcomes import TABLE_MAX_FILES, print_outcomes
from schemas.vocab import FileStatus


def _outcome(i: int) -> FileOutcome:
    quarantined = i % 7 == 3
    return FileOutcome(
        file_name=f"plate_{i:04d}.csv",
        sha256=f"{i:064d}",
        size_bytes=10,
        status=FileStatus.QUARANTINED if quarantined else FileStatus.ACCEPTED,
        detected_format="quantstudio",
        rows=96,
        reason=f"unreadable_header: line {i}" if quarantined else None,
        destination=Path(f"quarantine/plate_{i:04d}.csv") if quarantined else None,
        problems=(Problem(rule="header", message=f"no header in plate {i}"),)
        if quarantined
        else (),
    )


def _printed(count: int) -> str:
    buffer = io.StringIO()
    print_outcomes(Console(file=buffer, width=100), [_outcome(i) for i in range(count)])
    return buffer.getvalue()


def test_a_large_batch_lists_every_files_fate_reason_report_and_problems() -> None:
    count = TABLE_MAX_FILES + 50
    out = _printed(count)
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("plate_")}
    assert len(lines) == count
    assert lines["plate_0003.csv"].split()[1:4] == ["quantstudio", "quarantined", "96"]
    assert "unreadable_header: line 3" in lines["plate_0003.csv"]
    assert "accepted" in lines["plate_0004.csv"]
    assert f"→ report: {Path('quarantine/plate_0003.csv')}.problems.txt" in out
    assert "plate_0003.csv: " in out
    assert "no header in plate 3" in out
    assert "┃" not in out


def test_a_small_batch_prints_the_boxed_table() -> None:
    out = _printed(5)
    assert "┃ file" in out
    assert "quarantined" in out
    assert "no header in plate 3" in out
