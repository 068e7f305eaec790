"""The watched folder: which files are ready to read, remembered across polls.

A file is ready when two looks at least ``settle_seconds`` apart saw the same size and
modification time. The looks are kept between polls (and between processes) in the warehouse's
``inbox_state`` table, so a copy that stalls, or a copy that kept the source's old mtime (as
Windows Explorer and ``cp -p`` do), is not read until it has really stopped changing. A file
whose end looks cut off (text without a final line end, a workbook without its zip directory)
must stay unchanged for ``incomplete_settle_seconds`` instead; the parsers then decide whether it
is truncated. Symbolic links and other non-regular entries are never followed or read: they are
refused with a reason (:attr:`Candidate.refusal`). Where a finished file goes is
:mod:`chimera.filing`.
"""

from __future__ import annotations

import codecs
import fnmatch
import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from chimera.settings import Settings
from chimera.warehouse import INBOX_STATE, Warehouse

_ZIP = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_TAIL_BYTES = 65_536 + 22
"""A zip's end-of-directory record sits in its last 64 KiB + 22 bytes."""


@dataclass(frozen=True)
class Sighting:
    """What one look saw of a file: size, mtime and since when exactly that was seen."""

    size_bytes: int
    mtime_ns: int
    unchanged_since: datetime


@dataclass(frozen=True)
class Candidate:
    """A file seen in the inbox and whether it may be read now."""

    path: Path
    size_bytes: int
    ready: bool
    wait_seconds: float = 0.0
    """Seconds until it is read if it stays unchanged (0 when ready or refused)."""
    why: str = ""
    """Why it is not read yet, in plain words."""
    sighting: Sighting | None = None
    refusal: str | None = None
    """Set for entries that are never read (symbolic links, pipes, devices): why not."""


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


def ends_complete(head: bytes, tail: bytes, size: int) -> bool:
    r"""Whether a file's end looks written to the end.

    Text needs a final line end (UTF-16 included), except Excel's "CSV UTF-8" (UTF-8 BOM),
    which writes none; a zip workbook (xlsx) needs its end-of-directory record; an OLE2
    workbook (xls) whole 512-byte sectors. An empty file is not complete.

    Examples
    --------
    >>> ends_complete(b"a,b", b"a,b\n1,2\n", 8)
    True
    >>> ends_complete(b"a,b", b"a,b\n1,", 6)
    False
    >>> ends_complete(b"\xff\xfea\x00", b"a\x00\n\x00", 6)
    True
    """
    if size == 0:
        return False
    if head.startswith(_ZIP):
        return _ZIP_END in tail
    if head.startswith(_OLE2):
        return size % 512 == 0
    if head.startswith(codecs.BOM_UTF8):
        return True
    return tail.rstrip(b"\x00")[-1:] in (b"\n", b"\r")


def _read_ends(path: Path, size: int) -> tuple[bytes, bytes]:
    """First 8 and last :data:`_TAIL_BYTES` bytes, without following a link or blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        head = os.pread(fd, 8, 0)
        tail = os.pread(fd, min(size, _TAIL_BYTES), max(0, size - _TAIL_BYTES))
    finally:
        os.close(fd)
    return head, tail


def _entries(inbox: Path, patterns: Sequence[str]) -> Iterator[tuple[Path, os.stat_result]]:
    """Every non-folder entry under ``inbox`` with its own ``lstat`` (links not followed)."""
    folders = [inbox]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if is_ignored(entry.name, patterns):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                folders.append(Path(entry.path))
            else:
                yield Path(entry.path), info


def refusal_of(path: Path, info: os.stat_result, inbox: Path) -> str | None:
    """Why an inbox entry is never read (None for a regular file)."""
    if stat.S_ISREG(info.st_mode):
        return None
    if stat.S_ISLNK(info.st_mode):
        target = str(path.readlink())
        resolved = (path.parent / target).resolve()
        where = (
            "inside the inbox (that file is read on its own)"
            if resolved.is_relative_to(inbox.resolve())
            else "outside the inbox"
        )
        return (
            f"a symbolic link to {target!r}, {where}; links are never followed: "
            "copy the file itself into the inbox"
        )
    return "not a regular file (a named pipe, socket or device); it was not read"


def _look(
    path: Path,
    info: os.stat_result,
    previous: Sighting | None,
    *,
    now: datetime,
    settle_seconds: float,
    incomplete_settle_seconds: float,
) -> Candidate:
    """Compare one look with the previous one and decide whether the file may be read."""
    same = previous is not None and (previous.size_bytes, previous.mtime_ns) == (
        info.st_size,
        info.st_mtime_ns,
    )
    since = previous.unchanged_since if same and previous is not None else now
    sighting = Sighting(info.st_size, info.st_mtime_ns, since)
    try:
        complete = ends_complete(*_read_ends(path, info.st_size), info.st_size)
    except OSError:
        complete = False
    needed = settle_seconds if complete else max(settle_seconds, incomplete_settle_seconds)
    wait = max(needed - (now - since).total_seconds(), 0.0)
    if wait == 0:
        return Candidate(path, info.st_size, ready=True, sighting=sighting)
    if previous is not None and not same:
        why = "still being copied (it changed since the last look)"
    elif not complete:
        why = "its end looks cut off (no final line end): still being written?"
    elif previous is None:
        why = "just arrived"
    else:
        why = "unchanged so far"
    return Candidate(path, info.st_size, ready=False, wait_seconds=wait, why=why, sighting=sighting)


def scan_inbox(
    inbox: Path,
    *,
    now: datetime,
    settle_seconds: float,
    ignore_patterns: Sequence[str],
    seen: Mapping[str, Sighting] | None = None,
    incomplete_settle_seconds: float = 0.0,
) -> list[Candidate]:
    """List inbox entries (recursively, links never followed) with whether each may be read.

    ``seen`` holds the previous looks by :func:`state_key` (:func:`load_sightings`);
    a file not in it was never seen, so it is not ready (unless ``settle_seconds`` is 0).
    """
    if not inbox.is_dir():
        return []
    seen = seen or {}
    found = []
    for path, info in sorted(_entries(inbox, ignore_patterns)):
        refusal = refusal_of(path, info, inbox)
        if refusal is not None:
            found.append(Candidate(path, info.st_size, ready=False, refusal=refusal))
            continue
        key = state_key(inbox, path)
        found.append(
            _look(
                path,
                info,
                seen.get(key),
                now=now,
                settle_seconds=settle_seconds,
                incomplete_settle_seconds=incomplete_settle_seconds,
            )
        )
    return found


def state_key(inbox: Path, path: Path) -> str:
    r"""A file's key in ``inbox_state``: its path relative to the inbox, as valid text.

    Bytes that are not UTF-8 are written as ``\xNN`` (the key is only ever compared).
    """
    relative = path.relative_to(inbox).as_posix()
    return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _inbox_id(inbox: Path) -> str:
    return str(inbox.absolute())


def load_sightings(warehouse: Warehouse, inbox: Path) -> dict[str, Sighting]:
    """The previous looks at ``inbox``'s files, by :func:`state_key`."""
    frame = warehouse.read_part(INBOX_STATE, _inbox_id(inbox))
    if frame is None:
        return {}
    return {
        row["path"]: Sighting(row["size_bytes"], row["mtime_ns"], row["unchanged_since"])
        for row in frame.iter_rows(named=True)
    }


def save_sightings(
    warehouse: Warehouse, inbox: Path, candidates: Sequence[Candidate], *, now: datetime
) -> None:
    """Remember this look at ``inbox`` for the next poll (files gone since are forgotten).

    ``checked_at`` is only rewritten with a change, so an idle inbox costs no write.
    """
    rows = [
        {
            "inbox": _inbox_id(inbox),
            "path": state_key(inbox, c.path),
            "size_bytes": c.sighting.size_bytes,
            "mtime_ns": c.sighting.mtime_ns,
            "unchanged_since": c.sighting.unchanged_since,
            "checked_at": now,
        }
        for c in candidates
        if c.sighting is not None and c.path.exists()
    ]
    frame = pl.DataFrame(rows, schema=INBOX_STATE.schema)
    previous = warehouse.read_part(INBOX_STATE, _inbox_id(inbox))
    if previous is None and frame.height == 0:
        return
    if previous is not None and previous.drop("checked_at").equals(frame.drop("checked_at")):
        return  # nothing changed since the last look: no write
    warehouse.write(INBOX_STATE, _inbox_id(inbox), frame)


@dataclass(frozen=True)
class Unread:
    """An inbox file a poll did not read, and why (plain words)."""

    name: str
    why: str
    wait_seconds: float
    """Seconds until it is read if it stays unchanged."""

    def render(self) -> str:
        """``"x.txt: still being copied ...; will be read in 4 s"``."""
        return f"{self.name}: {self.why}; will be read in {self.wait_seconds:.0f} s if unchanged"


Notify = Callable[[Sequence[Candidate], float], None]
"""Told which files the poll waits for and for how many seconds, before each wait."""


def settle_inbox(
    settings: Settings,
    *,
    clock: Callable[[], datetime],
    max_wait_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    notify: Notify | None = None,
) -> list[Candidate]:
    """Look at the inbox until every file is ready (or refused), waiting up to ``max_wait_seconds``.

    Each look is saved (``inbox_state``), so the next poll, in this or another process, goes
    on from it. ``sleep`` and ``clock`` are injectable (tests advance a fake clock).
    """
    rules = settings.inbox_rules
    warehouse = Warehouse(settings.warehouse)
    seen = load_sightings(warehouse, settings.inbox)
    start = clock()
    while True:
        now = clock()
        candidates = scan_inbox(
            settings.inbox,
            now=now,
            settle_seconds=rules.settle_seconds,
            ignore_patterns=rules.ignore_patterns,
            seen=seen,
            incomplete_settle_seconds=rules.incomplete_settle_seconds,
        )
        save_sightings(warehouse, settings.inbox, candidates, now=now)
        seen = {
            state_key(settings.inbox, c.path): c.sighting
            for c in candidates
            if c.sighting is not None
        }
        waiting = [c for c in candidates if not c.ready and c.refusal is None]
        if not waiting:
            return candidates
        delay = min(c.wait_seconds for c in waiting)
        if (now - start).total_seconds() + delay > max_wait_seconds:
            return candidates
        if notify is not None:
            notify(waiting, delay)
        sleep(delay)
