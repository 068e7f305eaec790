"""One inbox poll: scan -> read once -> order -> ingest -> rebuild -> refresh.

The same poll runs ``chimera ingest --inbox``, ``chimera watch`` and the Prefect
``ingest-inbox`` flow (which passes Prefect tasks as its ``ingest_one``/``refresh`` steps).
Files are ingested in dependency order (manifests and infusion logs first); waiting files are
retried while a round accepts anything, and every touched patient is rebuilt once at the end.
:func:`exit_code` is the one mapping from file fates to a command's exit status.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from threading import Event

from rich.console import Console

from chimera.detect import Assay
from chimera.inbox import scan_inbox
from chimera.ingest import FileOutcome, SourceFile, ingest_source, read_source
from chimera.rebuild import recover_dirty
from chimera.refresh import RefreshSummary, refresh_patients
from chimera.settings import Settings
from schemas.vocab import FileStatus

LOCK_FILE = ".inbox.lock"

IngestOne = Callable[[SourceFile], FileOutcome | None]
"""Ingest one read file; None when it failed unexpectedly (it then stays where it is)."""
RefreshStep = Callable[[Sequence[FileOutcome]], RefreshSummary | None]
"""Refresh trends, kinetics and alerts after accepted files; None when the refresh failed."""


class ExitCode(IntEnum):
    """Exit status of every command that ingests files."""

    OK = 0
    """Every file accepted (or already known)."""
    USAGE = 2
    QUARANTINED = 3
    """At least one file was quarantined."""
    WAITING = 4
    """At least one file waits for a prerequisite (manifest, baseline, product reference)."""


def exit_code(statuses: Iterable[FileStatus]) -> ExitCode:
    """The command's exit status for these file fates (quarantine outranks waiting).

    Examples
    --------
    >>> int(exit_code([FileStatus.ACCEPTED, FileStatus.WAITING]))
    4
    >>> int(exit_code([FileStatus.WAITING, FileStatus.QUARANTINED]))
    3
    """
    seen = set(statuses)
    if FileStatus.QUARANTINED in seen:
        return ExitCode.QUARANTINED
    if FileStatus.WAITING in seen:
        return ExitCode.WAITING
    return ExitCode.OK


def _now() -> datetime:
    return datetime.now(UTC)


_FORMAT_ORDER = {Assay.REGISTRY: 0, Assay.STR: 1, Assay.QPCR: 2, Assay.DDPCR: 2, Assay.NONE: 3}


def processing_order(sources: Sequence[SourceFile]) -> list[SourceFile]:
    """Manifests and infusion logs first, then assays, each group by name (detected once)."""

    def rank(source: SourceFile) -> tuple[int, str]:
        detection = source.detection
        return (_FORMAT_ORDER[detection.assay] if detection else 3, source.name)

    return sorted(sources, key=rank)


def ingest_in_rounds(
    sources: Sequence[SourceFile], ingest_one: IngestOne
) -> dict[Path, FileOutcome | None]:
    """Ingest files in order, then retry the waiting ones while a round accepts any file.

    A manifest dropped last therefore still releases the assays that waited for it.
    A file whose ``ingest_one`` returns None (unexpected failure) is not retried.
    """
    outcomes: dict[Path, FileOutcome | None] = {}
    pending = list(sources)
    progress = True
    while pending and progress:
        progress = False
        still_waiting = []
        for source in pending:
            outcome = ingest_one(source)
            outcomes[source.path] = outcome
            if outcome is not None and outcome.status is FileStatus.WAITING:
                still_waiting.append(source)
            elif outcome is not None:
                progress = True
        pending = still_waiting
    return outcomes


def ingest_sources(
    sources: Sequence[SourceFile],
    *,
    settings: Settings,
    clock: Callable[[], datetime],
    move: bool,
    ingest_one: IngestOne | None = None,
) -> dict[Path, FileOutcome | None]:
    """Ingest read files in dependency order; each touched patient is rebuilt once at the end.

    Patients a crash left dirty are rebuilt first. ``ingest_one`` defaults to
    :func:`chimera.ingest.ingest_source` (touched patients only marked dirty).
    """

    def in_process(source: SourceFile) -> FileOutcome:
        return ingest_source(source, settings=settings, now=clock(), move=move, recompute=False)

    recover_dirty(settings=settings, now=clock())
    outcomes = ingest_in_rounds(processing_order(sources), ingest_one or in_process)
    recover_dirty(settings=settings, now=clock())
    return outcomes


def ingest_paths(
    paths: Sequence[Path], *, settings: Settings, clock: Callable[[], datetime], move: bool
) -> list[FileOutcome]:
    """Read and ingest files given by path (``chimera ingest FILES``, ``chimera demo``)."""
    sources = [read_source(path) for path in paths]
    outcomes = ingest_sources(sources, settings=settings, clock=clock, move=move)
    return [o for o in (outcomes.get(p) for p in paths) if o is not None]


@dataclass(frozen=True)
class Poll:
    """One pass over the inbox: what was processed and what is still settling."""

    outcomes: tuple[FileOutcome, ...]
    settling: tuple[str, ...] = ()
    """Files still being copied (not read yet)."""
    errors: tuple[str, ...] = ()
    """Files that could not be read or failed unexpectedly; they stay in the inbox."""
    refreshed: RefreshSummary | None = None
    refresh_failed: bool = False

    @property
    def accepted(self) -> tuple[FileOutcome, ...]:
        """The files accepted by this poll."""
        return tuple(o for o in self.outcomes if o.status is FileStatus.ACCEPTED)


def poll_once(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = _now,
    ingest_one: IngestOne | None = None,
    refresh: RefreshStep | None = None,
) -> Poll:
    """Ingest every settled inbox file once (the caller holds the inbox lock).

    ``ingest_one`` ingests one read file (default: in-process, moving the file); ``refresh``
    runs when files were accepted (None: no refresh, e.g. a deployment triggered by events).
    """
    candidates = scan_inbox(
        settings.inbox,
        now=clock(),
        settle_seconds=settings.inbox_rules.settle_seconds,
        ignore_patterns=settings.inbox_rules.ignore_patterns,
    )
    sources, errors = [], []
    for candidate in (c for c in candidates if c.ready):
        try:
            sources.append(read_source(candidate.path))
        except OSError:
            errors.append(candidate.path.name)
    done = ingest_sources(sources, settings=settings, clock=clock, move=True, ingest_one=ingest_one)
    errors += [path.name for path, outcome in done.items() if outcome is None]
    outcomes = tuple(o for o in (done.get(s.path) for s in sources) if o is not None)
    poll = Poll(outcomes, tuple(c.path.name for c in candidates if not c.ready), tuple(errors))
    if refresh is None or not poll.accepted:
        return poll
    refreshed = refresh(outcomes)
    return Poll(poll.outcomes, poll.settling, poll.errors, refreshed, refreshed is None)


def accepted_patients(outcomes: Iterable[FileOutcome]) -> set[str]:
    """Patients touched by the accepted files."""
    return {p for o in outcomes if o.status is FileStatus.ACCEPTED for p in o.patients}


def refresh_after_ingest(
    outcomes: Iterable[FileOutcome], *, settings: Settings, now: datetime
) -> RefreshSummary:
    """Refresh trends, kinetics and alerts for the patients touched by accepted files."""
    return refresh_patients(accepted_patients(outcomes), settings=settings, now=now)


@contextlib.contextmanager
def inbox_lock(settings: Settings, *, timeout_seconds: float) -> Iterator[None]:
    """Hold the inbox poller lock: one poll (or rebuild) at a time across processes.

    A separate file from the warehouse's writer lock, which ingest takes inside each file.
    The kernel drops the lock when its holder dies (``SIGKILL`` included). Raises
    ``TimeoutError`` when another holder keeps it longer than ``timeout_seconds``.
    """
    settings.warehouse.mkdir(parents=True, exist_ok=True)
    path = settings.warehouse / LOCK_FILE
    deadline = time.monotonic() + timeout_seconds
    with path.open("a+") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    msg = f"{path}: another inbox poll held the lock for over {timeout_seconds:g} s"
                    raise TimeoutError(msg) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def poll_inbox(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = _now,
    lock_timeout_seconds: float = 600.0,
    refresh: bool = True,
) -> Poll:
    """Take the inbox lock and poll once in-process, without Prefect (``chimera watch``)."""

    def in_process(outcomes: Sequence[FileOutcome]) -> RefreshSummary:
        return refresh_after_ingest(outcomes, settings=settings, now=clock())

    with inbox_lock(settings, timeout_seconds=lock_timeout_seconds):
        return poll_once(settings, clock=clock, refresh=in_process if refresh else None)


def watch_inbox(settings: Settings, console: Console, *, stop: Event | None = None) -> int:
    """Ingest files as soon as they land, in-process (no Prefect server needed).

    On a file event wait the settle interval, then ingest every settled file.

    Network shares (SMB/NFS) deliver no file events to the watching machine, so polling
    (``chimera serve``) stays the default; this watcher also re-polls every
    ``poll_interval_seconds`` so waiting files still time out. ``stop`` ends the loop (tests).
    """
    from watchfiles import watch  # noqa: PLC0415

    rules = settings.inbox_rules
    settings.inbox.mkdir(parents=True, exist_ok=True)
    console.print(
        f"watching {settings.inbox.resolve()} (settle {rules.settle_seconds:g} s); Ctrl-C stops"
    )

    def run() -> Poll:
        poll = poll_inbox(settings)
        for o in poll.outcomes:
            console.print(
                f"{o.file_name}: {o.status.value}" + (f" ({o.reason})" if o.reason else "")
            )
        return poll

    pending = bool(run().settling)
    last = time.monotonic()
    tick_ms = max(int(rules.settle_seconds * 1000), 200)
    try:
        for changes in watch(
            settings.inbox,
            stop_event=stop,
            yield_on_timeout=True,
            rust_timeout=tick_ms,
            debounce=tick_ms,
        ):
            due = time.monotonic() - last >= rules.poll_interval_seconds
            if changes or pending or due:
                if changes:
                    time.sleep(rules.settle_seconds)
                pending = bool(run().settling)
                last = time.monotonic()
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK
