"""One inbox poll: settle -> read once -> order -> ingest -> rebuild -> refresh.

The same poll runs ``chimera ingest --inbox``, ``chimera watch`` and the Prefect
``ingest-inbox`` flow (which passes Prefect tasks as its ``ingest_one``/``refresh`` steps).
A poll first looks at the inbox until its files have settled (:func:`settle_inbox`: two looks
``settle_seconds`` apart, remembered across polls), waiting up to ``max_wait_seconds``; every
file it does not read is listed with why (:attr:`Poll.unread`). Files are ingested in
dependency order (manifests and infusion logs first); waiting files are retried while a round
accepts anything, and every touched patient is rebuilt once at the end. A failed write (disk
full, read-only warehouse) stops the run with a plain message (:class:`StorageFailure`); the
file stays in the inbox. :func:`exit_code` is the one mapping from file fates to a command's
exit status.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from threading import Event

from rich.console import Console

from chimera.batch import StorageFailure, open_batch, writing
from chimera.detect import Assay, ExportFormat
from chimera.errors import NotARegularFileError
from chimera.filing import display_name
from chimera.heap import long_lived, set_aside
from chimera.inbox import Candidate, Notify, Unread, save_sightings, settle_inbox
from chimera.inbox_lock import inbox_lock
from chimera.ingest import FileOutcome, ParseMany, ingest_source, prepare_sources
from chimera.rebuild import recompute_patients, recover_dirty
from chimera.refresh import RefreshSummary, refresh_patients
from chimera.settings import Settings
from chimera.source_file import SourceFile, read_source, refused_source
from chimera.staging import parse_in_pool
from chimera.warehouse import Warehouse, is_storage_error, storage_problem
from chimera.workers import WorkerPool, use_pool, worker_pool
from schemas.vocab import FileStatus

LOGGER = logging.getLogger(__name__)

IngestOne = Callable[[SourceFile], FileOutcome | None]
"""Ingest one read file; None when it failed unexpectedly (it then stays where it is)."""
RefreshStep = Callable[[Sequence[FileOutcome]], RefreshSummary | None]
"""Refresh trends, kinetics and alerts after accepted files; None when the refresh failed."""


class ExitCode(IntEnum):
    """Exit status of every command that ingests files."""

    OK = 0
    """Every file accepted (or already known)."""
    FAILED = 1
    """The run stopped: a write failed (disk full, read-only warehouse) or verification drifted."""
    USAGE = 2
    QUARANTINED = 3
    """At least one file was quarantined."""
    WAITING = 4
    """At least one file waits for a prerequisite (manifest, baseline, product reference), or
    is still being copied."""


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
    """Manifests, then infusion logs, then assays, each group by name (detected once)."""

    def rank(source: SourceFile) -> tuple[int, bool, str]:
        detection = source.detection
        if detection is None:
            return (3, True, source.name)
        later = detection.format is not ExportFormat.MANIFEST
        return (_FORMAT_ORDER[detection.assay], later, source.name)

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
            try:
                outcome = ingest_one(source)
            except StorageFailure as failure:
                failure.outcomes = {**outcomes, source.path: None}
                raise
            if outcome is not None:
                LOGGER.info("%s: %s %s", outcome.file_name, outcome.status, outcome.reason or "")
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
    parse_many: ParseMany | None = None,
    flow_run_id: str | None = None,
    pool: WorkerPool | None = None,
) -> dict[Path, FileOutcome | None]:
    """Ingest read files in dependency order; each touched patient is rebuilt once at the end.

    Patients a crash left dirty are rebuilt first. By default the files are one batch
    (:mod:`chimera.batch`): parsed once, checked in one pass per contract, written together.
    ``ingest_one`` (the Prefect flow's task) ingests each file on its own instead (touched
    patients only marked dirty, rebuilt at the end). ``parse_many`` parses the batch's files
    elsewhere (:func:`chimera.ingest.prepare_sources`); ``flow_run_id`` goes into the ledger.
    A big batch parses and rebuilds in worker processes (``pool``, else one of its own:
    :mod:`chimera.workers`).

    Raises
    ------
    StorageFailure
        When a write failed (in-process ingest and the rebuilds); the file stays in place.
    """
    with writing("rebuilding patients left by an interrupted run"):
        recover_dirty(settings=settings, now=clock())
    ordered = processing_order(sources)
    if ingest_one is None:
        return _ingest_batch(
            ordered,
            settings=settings,
            clock=clock,
            move=move,
            parse_many=parse_many,
            flow_run_id=flow_run_id,
            pool=pool,
        )
    outcomes = ingest_in_rounds(ordered, ingest_one)
    try:
        with writing("rebuilding the touched patients"):
            recover_dirty(settings=settings, now=clock())
    except StorageFailure as failure:
        failure.outcomes = outcomes
        raise
    return outcomes


def _one_in_batch(
    source: SourceFile, ingest: Callable[[SourceFile], FileOutcome]
) -> FileOutcome | None:
    """Ingest one file of the batch; a bug in one file leaves it in place, never stops the rest."""
    try:
        return ingest(source)
    except StorageFailure:
        raise
    except OSError as err:
        if is_storage_error(err):
            raise StorageFailure(source.name, err) from err
        LOGGER.error("%s failed (%s); it stays where it is", source.name, err.strerror)
    except Exception as err:  # noqa: BLE001 - one file's bug must not stop the others
        # The type only: a message may quote the file's content, which logs never carry.
        LOGGER.error("%s failed (%s); it stays where it is", source.name, type(err).__name__)
    return None


def _parsing(
    pool: WorkerPool,
    settings: Settings,
    parse_many: ParseMany | None,
    *,
    files: int,
    clock: Callable[[], datetime],
) -> contextlib.AbstractContextManager[ParseMany | None]:
    """The batch's ``parse_many``: the one given, else the pool's, else None (in-process).

    The pool parses a batch of ``scale.pool_min_files`` files; its parses are taken in while
    the batch books (:func:`chimera.staging.parse_in_pool`).
    """
    if parse_many is None and use_pool(pool, files, settings.scale.pool_min_files):
        return parse_in_pool(pool, settings, clock=clock)
    return contextlib.nullcontext(parse_many)


def _ingest_batch(
    ordered: Sequence[SourceFile],
    *,
    settings: Settings,
    clock: Callable[[], datetime],
    move: bool,
    parse_many: ParseMany | None,
    flow_run_id: str | None,
    pool: WorkerPool | None,
) -> dict[Path, FileOutcome | None]:
    """Ingest ordered files as one batch, flush it, then rebuild every touched patient once.

    A batch of ``scale.pool_min_files`` files parses in the worker pool, unless ``parse_many``
    is given: the workers parse later files while this process books the first ones.
    """
    own = (
        worker_pool(settings, files=len(ordered)) if pool is None else contextlib.nullcontext(pool)
    )
    with own as workers, open_batch(settings) as batch, long_lived():

        def in_batch(source: SourceFile) -> FileOutcome:
            return ingest_source(
                source,
                settings=settings,
                now=clock(),
                move=move,
                flow_run_id=flow_run_id,
                recompute=False,
                batch=batch,
            )

        def book(source: SourceFile) -> FileOutcome | None:
            # Its parse taken in first, outside the one-file guard: a pool whose work failed
            # stops the batch (nothing written), as a failed parse_many does.
            batch.prepared.get(source.sha256)
            return _one_in_batch(source, in_batch)

        with _parsing(workers, settings, parse_many, files=len(ordered), clock=clock) as parse:
            set_aside()  # the read files and the batch's warehouse state, kept through the parse
            prepare_sources(ordered, batch, clock=clock, parse_many=parse)
            set_aside()  # the parsed files (in-process) live through the batch (chimera.heap)
            outcomes = ingest_in_rounds(ordered, book)
        placed: dict[Path, FileOutcome | None] = {}
        try:
            placed.update(batch.flush())
            with writing("rebuilding the touched patients"):
                recompute_patients(
                    batch.warehouse, batch.touched, settings=settings, now=clock(), pool=workers
                )
                batch.warehouse.persist_snapshots()
        except StorageFailure as failure:
            placed.update(failure.outcomes)
            failure.outcomes = {path: placed.get(path, o) for path, o in outcomes.items()}
            raise
    return {path: placed.get(path, outcome) for path, outcome in outcomes.items()}


def ingest_paths(
    paths: Sequence[Path],
    *,
    settings: Settings,
    clock: Callable[[], datetime],
    move: bool,
    pool: WorkerPool | None = None,
) -> list[FileOutcome]:
    """Read and ingest files given by path (``chimera ingest FILES``, ``chimera demo``).

    A big batch's worker pool starts before the files are read, so the workers' imports
    overlap reading and detecting them (:mod:`chimera.workers`); a caller's ``pool`` (kept
    for the refresh after) is used instead.
    """
    own = worker_pool(settings, files=len(paths)) if pool is None else contextlib.nullcontext(pool)
    with own as workers:
        sources = [read_source(path) for path in paths]
        outcomes = ingest_sources(sources, settings=settings, clock=clock, move=move, pool=workers)
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
    unread: tuple[Unread, ...] = ()
    """Every file not read, with why and when it will be (the ``settling`` files)."""
    failure: str | None = None
    """Why the run stopped early (a failed write: disk full, read-only), in plain words."""

    @property
    def accepted(self) -> tuple[FileOutcome, ...]:
        """The files accepted by this poll."""
        return tuple(o for o in self.outcomes if o.status is FileStatus.ACCEPTED)


def _read(candidate: Candidate, settings: Settings) -> SourceFile:
    """Read a settled inbox file once (links refused unread, huge files refused by size)."""
    if candidate.refusal is not None:
        refusal = NotARegularFileError(
            f"{display_name(candidate.path.name)} is {candidate.refusal}"
        )
        return refused_source(candidate.path, refusal, size_bytes=candidate.size_bytes)
    return read_source(
        candidate.path, max_bytes=settings.inbox_rules.max_file_bytes, follow_links=False
    )


def _read_all(
    candidates: Sequence[Candidate], settings: Settings
) -> tuple[list[SourceFile], list[str]]:
    """Read each candidate once; the names of those that could not be read."""
    sources, errors = [], []
    for candidate in candidates:
        try:
            sources.append(_read(candidate, settings))
        except OSError as err:
            LOGGER.warning("%s could not be read: %s", candidate.path.name, err.strerror)
            errors.append(display_name(candidate.path.name))
    return sources, errors


def poll_once(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = _now,
    ingest_one: IngestOne | None = None,
    parse_many: ParseMany | None = None,
    flow_run_id: str | None = None,
    refresh: RefreshStep | None = None,
    max_wait_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notify: Notify | None = None,
) -> Poll:
    """Ingest every settled inbox file once (the caller holds the inbox lock).

    ``ingest_one`` ingests one read file (default: in-process, moving the file); ``parse_many``
    parses the files of the in-process batch elsewhere (parallel tasks); ``refresh``
    runs when files were accepted (None: no refresh, e.g. a deployment triggered by events).
    ``max_wait_seconds`` bounds the wait for files still settling (None: twice
    ``settle_seconds``, enough for files that just arrived).
    """
    rules = settings.inbox_rules
    wait = 2 * rules.settle_seconds if max_wait_seconds is None else max_wait_seconds
    try:
        with writing("recording the inbox look"):
            candidates = settle_inbox(
                settings, clock=clock, max_wait_seconds=wait, sleep=sleep, notify=notify
            )
    except StorageFailure as failed:
        return Poll((), errors=(failed.file_name,), failure=str(failed))
    readable = [c for c in candidates if c.ready or c.refusal is not None]
    stopped_because: str | None = None
    # Started before the files are read, so the workers' imports overlap reading them.
    with worker_pool(settings, files=len(readable) if parse_many is None else 0) as pool:
        sources, errors = _read_all(readable, settings)
        try:
            done = ingest_sources(
                sources,
                settings=settings,
                clock=clock,
                move=True,
                ingest_one=ingest_one,
                parse_many=parse_many,
                flow_run_id=flow_run_id,
                pool=pool,
            )
        except StorageFailure as stopped:
            done, stopped_because = stopped.outcomes, str(stopped)
            LOGGER.error("the run stopped: %s", stopped_because)
    errors += [display_name(path.name) for path, outcome in done.items() if outcome is None]
    if sources and stopped_because is None:
        with contextlib.suppress(OSError):  # only bookkeeping: the next poll forgets them too
            save_sightings(Warehouse(settings.warehouse), settings.inbox, candidates, now=clock())
    outcomes = tuple(o for o in (done.get(s.path) for s in sources) if o is not None)
    unread = tuple(
        Unread(display_name(c.path.name), c.why, c.wait_seconds)
        for c in candidates
        if not c.ready and c.refusal is None
    )
    poll = Poll(outcomes, tuple(u.name for u in unread), tuple(errors), unread=unread)
    if stopped_because is not None:
        return replace(poll, failure=stopped_because)
    if refresh is None or not poll.accepted:
        return poll
    refreshed = refresh(outcomes)
    return replace(poll, refreshed=refreshed, refresh_failed=refreshed is None)


def accepted_patients(outcomes: Iterable[FileOutcome]) -> set[str]:
    """Patients touched by the accepted files."""
    return {p for o in outcomes if o.status is FileStatus.ACCEPTED for p in o.patients}


def refresh_after_ingest(
    outcomes: Iterable[FileOutcome],
    *,
    settings: Settings,
    now: datetime,
    pool: WorkerPool | None = None,
) -> RefreshSummary:
    """Refresh trends, kinetics and alerts for the patients touched by accepted files.

    A big refresh computes in ``pool``'s workers (:func:`chimera.refresh.refresh_patients`).
    """
    return refresh_patients(accepted_patients(outcomes), settings=settings, now=now, pool=pool)


def poll_inbox(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = _now,
    lock_timeout_seconds: float = 600.0,
    refresh: bool = True,
    max_wait_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notify: Notify | None = None,
) -> Poll:
    """Take the inbox lock and poll once in-process, without Prefect (``chimera watch``)."""

    def in_process(outcomes: Sequence[FileOutcome]) -> RefreshSummary | None:
        try:
            return refresh_after_ingest(outcomes, settings=settings, now=clock())
        except OSError as err:
            LOGGER.error("the trend refresh failed: %s", storage_problem(err))
            return None

    with inbox_lock(settings, timeout_seconds=lock_timeout_seconds, what="inbox poll"):
        return poll_once(
            settings,
            clock=clock,
            refresh=in_process if refresh else None,
            max_wait_seconds=max_wait_seconds,
            sleep=sleep,
            notify=notify,
        )


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
