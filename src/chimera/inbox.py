"""The watched folder: which files are ready, and where each file goes when it is done.

Everything that moves a file lives here: archive (``archive/YYYY/MM/``), quarantine (with a
``<name>.problems.txt`` report a lab user can act on, and ``<name>.failures.parquet``).
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from chimera.errors import Problem


@dataclass(frozen=True)
class Candidate:
    """A file seen in the inbox and whether it has settled."""

    path: Path
    size_bytes: int
    ready: bool


def is_ignored(name: str, patterns: Sequence[str]) -> bool:
    """Temporary, lock and hidden files are never read (``~$x.xlsx``, ``x.part``, ``.~lock``).

    Examples
    --------
    >>> is_ignored("~$manifest.xlsx", ["~$*"])
    True
    >>> is_ignored("manifest.xlsx", ["~$*", "*.tmp"])
    False
    """
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def scan_inbox(
    inbox: Path, *, now: datetime, settle_seconds: float, ignore_patterns: Sequence[str]
) -> list[Candidate]:
    """List inbox files (recursively) with whether each is complete.

    A file is ready when its last modification is at least ``settle_seconds`` old and its size
    did not change between two looks; a file still being copied keeps moving its mtime.
    """
    if not inbox.is_dir():
        return []
    found = []
    for path in sorted(inbox.rglob("*")):
        if not path.is_file() or any(
            is_ignored(part, ignore_patterns) for part in path.relative_to(inbox).parts
        ):
            continue
        try:
            first = path.stat()
            age = now.timestamp() - first.st_mtime
            second = path.stat()
        except FileNotFoundError:
            continue
        stable = first.st_size == second.st_size and first.st_mtime == second.st_mtime
        found.append(Candidate(path, second.st_size, ready=stable and age >= settle_seconds))
    return found


def _free_name(folder: Path, name: str, sha256: str) -> Path:
    """``folder/name``, or ``folder/<stem>.<sha8><suffix>`` when another file holds the name."""
    target = folder / name
    if not target.exists():
        return target
    stem, suffix = Path(name).stem, Path(name).suffix
    return folder / f"{stem}.{sha256[:8]}{suffix}"


def archive_file(
    source: Path, archive_root: Path, *, sha256: str, when: datetime, move: bool
) -> Path:
    """Move (or copy) an accepted file to ``archive/YYYY/MM/``; return its new path."""
    folder = archive_root / f"{when:%Y}" / f"{when:%m}"
    folder.mkdir(parents=True, exist_ok=True)
    target = _free_name(folder, source.name, sha256)
    if target.exists():
        return target
    if move:
        shutil.move(str(source), target)
    else:
        shutil.copy2(source, target)
    return target


def quarantine_file(
    source: Path,
    quarantine_root: Path,
    *,
    sha256: str,
    headline: str,
    problems: Sequence[Problem],
    when: datetime,
    move: bool,
) -> Path:
    """Move (or copy) a rejected file to quarantine beside its problem report; return its path.

    The report says what is wrong (row, column, value, rule) and how to fix it, in plain words;
    ``<name>.failures.parquet`` holds the same list as a table.
    """
    quarantine_root.mkdir(parents=True, exist_ok=True)
    target = _free_name(quarantine_root, source.name, sha256)
    lines = [
        f"File: {source.name}",
        f"SHA-256: {sha256}",
        f"Quarantined: {when.isoformat()}",
        "",
        "What is wrong:",
        f"  {headline}",
    ]
    if problems:
        lines += ["", "Problems found:"]
        lines += [f"  - {problem.render()}" for problem in problems]
    lines += [
        "",
        "What to do: correct the file (or re-export it from the instrument software) and drop it",
        "into the inbox again. This copy stays here for reference; nothing from it was loaded.",
    ]
    report = target.with_name(target.name + ".problems.txt")
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    failures = pl.DataFrame(
        [
            {
                "row": p.row,
                "column": p.column,
                "value": p.value,
                "rule": p.rule,
                "message": p.message,
                "fix": p.fix,
            }
            for p in problems
        ],
        schema={
            "row": pl.Int64,
            "column": pl.String,
            "value": pl.String,
            "rule": pl.String,
            "message": pl.String,
            "fix": pl.String,
        },
    )
    failures.write_parquet(target.with_name(target.name + ".failures.parquet"))
    if move:
        shutil.move(str(source), target)
    else:
        shutil.copy2(source, target)
    return target
