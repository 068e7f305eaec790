"""Waiting in tests without racing a sleep: poll a condition until it holds, up to a deadline.

Each wait ends as soon as its condition holds; the deadline is generous (a loaded 2-core CI
machine) and only stops a run that hung, with a message naming what never happened.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

DEADLINE_SECONDS = 240.0
"""Upper bound for any wait: never reached by a healthy run, however slow the machine."""


def holds_within(condition: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    """Check ``condition`` every ``every`` s until it holds (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() >= deadline:
            return False
        pause.wait(every)
    return True


def wait_until(
    condition: Callable[[], bool],
    what: str,
    *,
    timeout: float = DEADLINE_SECONDS,
    every: float = 0.05,
    diagnose: Callable[[], object] | None = None,
) -> None:
    """Wait until ``condition`` holds; fail naming ``what`` (and ``diagnose()``) at ``timeout``."""
    if not holds_within(condition, timeout, every):
        seen = f": {diagnose()}" if diagnose is not None else ""
        msg = f"{what} did not happen within {timeout:g} s{seen}"
        raise AssertionError(msg)


def exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited (reaping it); True when it is not our child."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True
