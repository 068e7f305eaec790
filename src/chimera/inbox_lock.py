"""The inbox poller lock: one poll, ingest or rebuild at a time across processes.

A separate file (``warehouse/.inbox.lock``) from the warehouse's writer lock, which ingest
takes inside each file; the kernel drops it when its holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chimera.filemodes import private_dirs
from chimera.settings import Settings

LOGGER = logging.getLogger(__name__)

LOCK_FILE = ".inbox.lock"


@dataclass(frozen=True)
class LockWait:
    """How the inbox lock was taken: seconds waited and who held it meanwhile."""

    waited_seconds: float = 0.0
    holder: str = ""

    def render(self) -> str:
        """``"waited 12 s for another ingest (pid 4242, chimera ingest since ...)"``."""
        return f"waited {self.waited_seconds:.0f} s for another ingest ({self.holder or 'unknown'})"


def _holder(fh: Any) -> str:
    fh.seek(0)
    return str(fh.read()).strip()


@contextlib.contextmanager
def inbox_lock(
    settings: Settings,
    *,
    timeout_seconds: float,
    what: str = "chimera",
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[LockWait]:
    """Hold the inbox poller lock: one poll (or ingest, or rebuild) at a time across processes.

    A separate file from the warehouse's writer lock, which ingest takes inside each file.
    The kernel drops the lock when its holder dies (``SIGKILL`` included). The holder writes
    who it is (``what``, pid, since when) into the lock file; a process that has to wait says
    so (``on_wait`` with the holder, a log line) and yields how long it waited. Raises
    ``TimeoutError`` when another holder keeps it longer than ``timeout_seconds``.
    """
    private_dirs(settings.warehouse)
    path = settings.warehouse / LOCK_FILE
    started = time.monotonic()
    deadline = started + timeout_seconds
    holder = ""
    with path.open("a+") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not holder:
                    holder = _holder(fh) or "another process"
                    LOGGER.warning("waiting for the inbox lock held by %s", holder)
                    if on_wait is not None:
                        on_wait(holder)
                if time.monotonic() >= deadline:
                    msg = f"{path}: another inbox poll held the lock for over {timeout_seconds:g} s"
                    raise TimeoutError(msg) from None
                time.sleep(0.1)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, {what}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
        fh.flush()
        waited = LockWait(time.monotonic() - started, holder) if holder else LockWait()
        if holder:
            LOGGER.warning("%s", waited.render())
        try:
            yield waited
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
