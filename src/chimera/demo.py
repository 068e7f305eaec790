"""The sample trial checks itself: every file must end as `truth/design.json` designed it.

The sample trial quarantines a truncated copy on purpose, so the plain exit status of an
ingest (3: something was quarantined) would make ``make demo`` fail on a correct run. The
demo instead compares each file's fate with its designed fate (and the file it designs as
superseded) and succeeds only when all agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from chimera.ingest import FileOutcome
from schemas.vocab import FileStatus

DESIGN_FILE = Path("truth") / "design.json"


@dataclass(frozen=True)
class DesignedFile:
    """One input file of the sample trial and the fate its generator designed."""

    path: str
    """Path below the sample-data folder, with ``/`` separators."""
    fate: FileStatus
    supersedes: str | None = None
    """Path of the file this one replaces as a re-export or re-analysis."""
    reason_contains: str | None = None
    note: str = ""


@dataclass(frozen=True)
class DesignCheck:
    """How the files' fates compare with the design."""

    total: int
    as_designed: int
    mismatches: tuple[str, ...]
    """One plain sentence per file that did not end as designed."""
    on_purpose: tuple[DesignedFile, ...]
    """Files designed to be quarantined (and that were)."""

    @property
    def ok(self) -> bool:
        """Whether every designed file ended as designed."""
        return not self.mismatches


def read_design(sample_data: Path) -> tuple[DesignedFile, ...] | None:
    """The designed fates under ``sample_data`` (None for a folder without a design)."""
    path = sample_data / DESIGN_FILE
    if not path.is_file():
        return None
    design = json.loads(path.read_text(encoding="utf-8"))
    return tuple(
        DesignedFile(
            path=entry["path"],
            fate=FileStatus(entry["fate"]),
            supersedes=entry.get("supersedes"),
            reason_contains=entry.get("reason_contains"),
            note=entry.get("note", ""),
        )
        for entry in design["files"]
    )


def earlier_fates(ledger: pl.DataFrame) -> dict[str, tuple[FileStatus, str | None]]:
    """Each file's (sha256) latest fate other than ``duplicate``, with its reason."""
    decided = ledger.filter(pl.col("status") != FileStatus.DUPLICATE).sort("logged_at")
    last = decided.group_by("source_sha256", maintain_order=True).last()
    return {
        row["source_sha256"]: (FileStatus(row["status"]), row["reason"])
        for row in last.iter_rows(named=True)
    }


def _fate(
    outcome: FileOutcome, earlier: Mapping[str, tuple[FileStatus, str | None]]
) -> tuple[FileStatus, str | None]:
    """A file's fate; a duplicate (the demo run again) keeps the fate it had the first time."""
    if outcome.status is FileStatus.DUPLICATE and outcome.sha256 in earlier:
        return earlier[outcome.sha256]
    return outcome.status, outcome.reason


def _mismatch(
    designed: DesignedFile,
    outcome: FileOutcome | None,
    earlier: Mapping[str, tuple[FileStatus, str | None]],
) -> str | None:
    """Why ``outcome`` is not what ``designed`` says (None when it is)."""
    if outcome is None:
        return f"{designed.path}: designed {designed.fate}, but it was not read"
    status, reason = _fate(outcome, earlier)
    if status is not designed.fate:
        return (
            f"{designed.path}: designed {designed.fate}, ended {status} ({reason or 'no reason'})"
        )
    if designed.reason_contains and designed.reason_contains not in (reason or ""):
        return f"{designed.path}: the reason should say {designed.reason_contains!r}: {reason}"
    superseded = designed.supersedes and Path(designed.supersedes).name
    fresh = outcome.status is not FileStatus.DUPLICATE
    if superseded and fresh and superseded not in (outcome.supersedes or ""):
        return f"{designed.path}: should supersede {superseded}, superseded {outcome.supersedes}"
    return None


def check_design(
    design: Sequence[DesignedFile],
    outcomes: Mapping[str, FileOutcome],
    earlier: Mapping[str, tuple[FileStatus, str | None]],
) -> DesignCheck:
    """Compare each designed file's fate with its outcome (``outcomes`` keyed by file name)."""
    mismatches = tuple(
        m
        for d in design
        if (m := _mismatch(d, outcomes.get(Path(d.path).name), earlier)) is not None
    )
    return DesignCheck(
        total=len(design),
        as_designed=len(design) - len(mismatches),
        mismatches=mismatches,
        on_purpose=tuple(d for d in design if d.fate is FileStatus.QUARANTINED),
    )
