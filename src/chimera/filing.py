"""Where a finished file goes: ``archive/YYYY/MM/`` or quarantine, never over another file.

A file keeps its name (made printable, :func:`display_name`) unless another file holds it; then
``<stem>.<sha8><suffix>``, then ``<stem>.<sha8>-2<suffix>`` and so on. A name is claimed with a
hard link, which fails instead of replacing (also on a case-insensitive or normalising file
system), so two runs, two files with one name from two sub-folders, or names that collide
after Unicode normalisation never overwrite each other. Names too long for the file system
are shortened. A copy is written to a hidden temporary file first, so a full disk leaves
nothing partial. Quarantined files get ``<name>.problems.txt`` (plain words for a lab user)
and ``<name>.failures.parquet``; those names are claimed the same way.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from itertools import count
from pathlib import Path

import polars as pl

from chimera.errors import Problem
from chimera.filemodes import private_dirs, private_file

NAME_MAX_BYTES = 255
"""Longest file name most file systems take (ext4, XFS, NTFS via SMB, APFS)."""
REPORT_SUFFIXES = (".problems.txt", ".failures.parquet")
TEMPORARY_PREFIX = ".incoming-"
"""Name prefix of a file being written (never read as data)."""
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


def printable(text: str) -> str:
    r"""``text`` as valid UTF-8 without control characters (what the ledger can store).

    Examples
    --------
    >>> printable("a\udcffb\tc")
    'a\ufffdb?c'
    """
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def display_name(name: str) -> str:
    r"""A file name as the ledger and reports show it: valid UTF-8, NFC, no control characters.

    Examples
    --------
    >>> display_name("cafe\u0301 run.csv")
    'café run.csv'
    >>> display_name("bad\udcffname\n.csv")
    'bad\ufffdname?.csv'
    """
    return printable(unicodedata.normalize("NFC", printable(name))) or "unnamed"


def fit_name(name: str, *, reserve: int = 0) -> str:
    """Shorten ``name`` (keeping its suffix) so it plus ``reserve`` bytes fits a file name.

    Examples
    --------
    >>> len(fit_name("x" * 300 + ".csv", reserve=30).encode())
    225
    >>> fit_name("plate.csv")
    'plate.csv'
    """
    limit = NAME_MAX_BYTES - reserve
    if len(name.encode()) <= limit:
        return name
    suffix = Path(name).suffix if len(Path(name).suffix) <= 16 else ""
    stem = name.removesuffix(suffix) if suffix else name
    while stem and len((stem + suffix).encode()) > limit:
        stem = stem[:-1]
    return stem + suffix


def _names(name: str, sha256: str, reserve: int) -> Iterator[str]:
    """``name``, then ``<stem>.<sha8><suffix>``, then ``<stem>.<sha8>-N<suffix>``."""
    # 12 bytes for ".<sha8>-NN" on top of what the caller reserves.
    base = fit_name(name, reserve=reserve + 12)
    stem, suffix = Path(base).stem, Path(base).suffix
    yield fit_name(name, reserve=reserve)
    yield f"{stem}.{sha256[:8]}{suffix}"
    for n in count(2):
        yield f"{stem}.{sha256[:8]}-{n}{suffix}"


def _hard_link(source: Path, target: Path) -> bool:
    """Hard-link ``source`` as ``target``, never replacing it; False where links are unsupported.

    Raises ``FileExistsError`` when ``target`` exists.
    """
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in _NO_HARD_LINKS:
            raise
        return False
    return True


def _claim(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the name ``target`` unless something holds it (``FileExistsError``)."""
    if _hard_link(tmp, target):
        tmp.unlink()
        return
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "file exists", str(target))
    tmp.rename(target)


def _temporary(folder: Path) -> Path:
    return folder / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}.tmp"


def _copy_into(source: Path, tmp: Path) -> None:
    if source.is_symlink():
        tmp.symlink_to(source.readlink())
    else:
        shutil.copy2(source, tmp, follow_symlinks=False)


def _put(source: Path, target: Path, *, move: bool) -> None:
    """Move (hard link, then unlink) or copy ``source`` to ``target``, never replacing it."""
    if move and _hard_link(source, target):
        source.unlink()
        return
    tmp = _temporary(target.parent)
    try:
        _copy_into(source, tmp)
        _claim(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if move:
        source.unlink()


def place(
    source: Path,
    folder: Path,
    *,
    sha256: str,
    move: bool,
    name: str | None = None,
    reserved: Sequence[str] = (),
) -> Path:
    """Put ``source`` into ``folder`` under the first free name; return where it went.

    ``reserved`` are suffixes whose companion files (``<name><suffix>``) must be free too.
    """
    private_dirs(folder)
    wanted = display_name(name or source.name)
    reserve = max((len(s.encode()) for s in reserved), default=0)
    for candidate in _names(wanted, sha256, reserve):
        target = folder / candidate
        if any(os.path.lexists(folder / (candidate + s)) for s in ("", *reserved)):
            continue
        try:
            _put(source, target, move=move)
        except FileExistsError:
            continue
        return private_file(target)
    msg = "unreachable: the name sequence is endless"
    raise AssertionError(msg)


def write_new(path: Path, write: Callable[[Path], object]) -> Path:
    """Write a new file through a temporary one (``write(tmp)``); never replaces ``path``."""
    tmp = _temporary(path.parent)
    try:
        write(tmp)
        private_file(tmp)
        _claim(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_parquet_synced(frame: pl.DataFrame, path: Path) -> None:
    """Write and fsync one Parquet file; a failed write raises ``OSError`` with its errno.

    polars reports an I/O failure (disk full ...) as a ``ComputeError`` naming the OS error;
    it becomes the ``OSError`` it was, so callers handle a full disk in one place.
    """
    try:
        frame.write_parquet(path, compression="zstd", statistics=True)
    except pl.exceptions.PolarsError as err:
        found = _OS_ERROR.search(str(err))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from err
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def archive_file(
    source: Path, archive_root: Path, *, sha256: str, when: datetime, move: bool
) -> Path:
    """Move (or copy) an accepted file to ``archive/YYYY/MM/``; return its new path."""
    folder = archive_root / f"{when:%Y}" / f"{when:%m}"
    return place(source, folder, sha256=sha256, move=move)


def problems_report(
    name: str, sha256: str, headline: str, problems: Sequence[Problem], when: datetime
) -> str:
    """The ``.problems.txt`` a lab user reads: what is wrong, where, and what to do."""
    lines = [
        f"File: {display_name(name)}",
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
    return "\n".join(lines) + "\n"


def failures_frame(problems: Sequence[Problem]) -> pl.DataFrame:
    """The problems as a table (``<name>.failures.parquet``)."""
    return pl.DataFrame(
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
    ``<name>.failures.parquet`` holds the same list as a table. When a report cannot be
    written (disk full) the file goes back where it was and the error is raised: a file is
    never in quarantine without its report.
    """
    target = place(source, quarantine_root, sha256=sha256, move=move, reserved=REPORT_SUFFIXES)
    text = problems_report(source.name, sha256, headline, problems, when)
    failures = failures_frame(problems)
    reports = [target.with_name(target.name + suffix) for suffix in REPORT_SUFFIXES]
    try:
        write_new(reports[0], lambda tmp: tmp.write_text(text, encoding="utf-8"))
        write_new(reports[1], lambda tmp: write_parquet_synced(failures, tmp))
    except OSError:
        for report in reports:
            report.unlink(missing_ok=True)
        if move:
            _put(target, source, move=True)
        else:
            target.unlink()
        raise
    return target
