"""Worker processes for a big in-process batch: files parsed and patients rebuilt in parallel.

A ``chimera ingest`` of a long history spends most of its time in two stages whose pieces are
independent: parsing each file (:func:`chimera.staging.stage_each`) and computing each
patient's rows (:func:`chimera.rebuild.patients_in_worker`). :class:`WorkerPool` runs them in
``Settings.scale.workers`` processes, started only when the batch is big enough to pay for them
(``scale.pool_min_files`` files, ``scale.pool_min_patients`` patients): a worker costs ~2-3 s
of CPU to import polars, pandera and the package. Workers get picklable arguments (ids, paths,
the frozen :class:`~chimera.settings.Settings`) and return picklable results; every write to
the warehouse stays in the main process, under its lock.

Processes start with the *spawn* method only: polars runs a thread pool that a forked child
inherits in a locked state, so a forked worker can deadlock (polars user guide,
"Multiprocessing"). An exception raised by a worker's function is raised again in the caller as
itself (:mod:`concurrent.futures` pickles it back); a worker that died (killed, out of memory)
breaks the pool, and the remaining work is then done in the main process.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Generic, TypeVar

from chimera.settings import Settings

LOGGER = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SPAWN = multiprocessing.get_context("spawn")
"""The only start method the pool uses (module docstring)."""

SHARES_PER_WORKER = 8
"""Work is cut into this many pieces per worker, so one slow piece does not leave the others
idle at the end."""


WARM_MODULES = ("chimera.staging", "chimera.rebuild")
"""What a worker imports as it starts (the modules of its entry points, and all they need)."""


def _ready(modules: Sequence[str]) -> int:
    """A worker's first task: import ``modules`` now, not when the first real work comes."""
    for module in modules:
        importlib.import_module(module)
    return os.getpid()


class WorkerPool:
    """``workers`` processes at work: this one and ``workers - 1`` spawned ones.

    The spawned processes start on first use (or by :meth:`start`); this process takes the
    pieces they have not started (:meth:`map`), so the pool costs one start fewer.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._executor: ProcessPoolExecutor | None = None

    @property
    def parallel(self) -> bool:
        """Whether work given to :meth:`map` runs in other processes too (``workers > 1``)."""
        return self.workers > 1

    @property
    def pieces(self) -> int:
        """How many pieces to cut a stage's work into (:data:`SHARES_PER_WORKER` per worker)."""
        return self.workers * SHARES_PER_WORKER

    def start(self) -> None:
        """Start the spawned processes now, so their imports overlap the caller's own work."""
        if self._executor is not None or not self.parallel:
            return
        spawned = self.workers - 1
        LOGGER.info("starting %d worker processes", spawned)
        self._executor = ProcessPoolExecutor(spawned, mp_context=SPAWN)
        for _ in range(spawned):
            self._executor.submit(_ready, WARM_MODULES)

    def map(
        self, function: Callable[[T], R], items: Sequence[T], *, here: Callable[[T], R]
    ) -> list[R]:
        """``function`` of each item, in order: by the spawned processes, or ``here``.

        ``function`` must be a module-level function (or a :func:`functools.partial` of one),
        ``items`` and results picklable. ``here`` computes the same result in this process
        (from what it holds already); it takes the pieces, last first, that no spawned process
        has started, and all of them without workers or once the pool broke.
        """
        mapped = self.map_lazily(function, items, here=here)
        mapped.take_rest()
        return [mapped[index] for index in range(len(items))]

    def map_lazily(
        self, function: Callable[[T], R], items: Sequence[T], *, here: Callable[[T], R]
    ) -> Mapped[T, R]:
        """:meth:`map` whose results are computed or waited for as each one is asked for.

        The spawned processes start on the items in order at once; this process works only
        when it asks for a result (:class:`Mapped`), so it can use the results in order while
        the workers compute later ones. ``function`` and ``items`` as for :meth:`map`.
        """
        if not self.parallel or not items:
            return Mapped(self, items, here)
        self.start()
        executor = self._executor
        assert executor is not None
        return Mapped(
            self,
            items,
            here,
            submit=lambda index: executor.submit(function, items[index]),
            in_flight=self.workers - 1,
        )

    def broke(self) -> None:
        """A worker died: stop the pool; the rest of the work runs in this process."""
        LOGGER.warning("a worker process died; the rest of the work runs in this process")
        self.close()
        self.workers = 1

    def close(self) -> None:
        """Stop the workers (waiting for running work; work not started is dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class Mapped(Generic[T, R]):
    """A function's results over items (:meth:`WorkerPool.map_lazily`), each got on demand.

    The spawned processes are fed the items from the front, ``in_flight`` at a time (one
    each: an item queued behind a worker's current one could not be taken back). Asking for
    a result (``mapped[index]``) takes it from the process that computed it; one no process
    was given is computed here; while the one asked for is under way, this process computes
    the last item no process was given, and waits only when there is none. An exception of
    the function is raised where its result is asked for; a broken pool leaves every result
    not in yet to this process.
    """

    def __init__(
        self,
        pool: WorkerPool,
        items: Sequence[T],
        here: Callable[[T], R],
        *,
        submit: Callable[[int], Future[R]] | None = None,
        in_flight: int = 0,
    ) -> None:
        self._pool, self._items, self._here, self._submit = pool, items, here, submit
        self._in_flight = in_flight if submit is not None else 0
        self._lock = threading.RLock()
        self._futures: dict[int, Future[R]] = {}
        self._claimed: set[int] = set()
        """Items this process computes (so no worker is given them)."""
        self._front, self._busy, self._feeding, self._stopped = 0, 0, False, False
        self._refused = False
        """The pool refused an item (broken) and is not stopped yet."""
        self._done: dict[int, R] = {}
        self._feed()

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> R:
        while index not in self._done:
            self._advance(index)
        return self._done[index]

    def _feed(self) -> None:
        """Give the workers the first items nobody has, up to ``in_flight`` under way."""
        with self._lock:
            if self._feeding:
                return  # a future done at once calls back into here: the loop below goes on
            self._feeding = True
            try:
                while self._busy < self._in_flight and not self._stopped and self._pool.parallel:
                    while self._front in self._claimed:
                        self._front += 1
                    if self._front >= len(self._items):
                        return
                    self._give(self._front)
            finally:
                self._feeding = False

    def _give(self, index: int) -> None:
        assert self._submit is not None
        try:
            future = self._submit(index)
        except BrokenProcessPool:  # the rest is here's; the main thread stops the pool
            self._stopped = self._refused = True
            return
        except RuntimeError:  # shut down: the rest is here's
            self._stopped = True
            return
        self._futures[index] = future
        self._front, self._busy = index + 1, self._busy + 1
        future.add_done_callback(self._finished)

    def _finished(self, _: Future[R]) -> None:
        with self._lock:
            self._busy -= 1
        self._feed()

    def _claim(self, index: int) -> bool:
        """Keep ``index`` for this process, if no worker was given it."""
        with self._lock:
            if index in self._futures or index in self._claimed:
                return False
            self._claimed.add(index)
            return True

    def _advance(self, index: int) -> None:
        """One step towards result ``index``: take it, compute it, or help with the rest."""
        self._stop_if_refused()
        if self._claim(index):
            self._compute(index)
            return
        future = self._futures[index]
        if not future.done() and self._take_last():
            return
        try:
            self._done[index] = future.result()
        except BrokenProcessPool:
            self._pool.broke()
            self._compute(index)

    def _stop_if_refused(self) -> None:
        """Stop a pool that refused work (broken), here: not in a thread of the pool's own."""
        if self._refused:
            self._refused = False
            self._pool.broke()

    def _compute(self, index: int) -> None:
        self._done[index] = self._here(self._items[index])

    def _take_last(self) -> bool:
        """Compute here the last item no worker was given (False: there is none)."""
        for index in reversed(range(len(self._items))):
            if index in self._futures:
                return False  # every item before it was given to a worker or taken here
            if self._claim(index):
                self._compute(index)
                return True
        return False

    def take_rest(self) -> None:
        """Compute here, last first, every item no worker was given."""
        while self._take_last():
            pass
        self._stop_if_refused()

    def settle(self) -> None:
        """Give the workers nothing more; wait for what they have (results unused)."""
        with self._lock:
            self._stopped = True
            under_way = list(self._futures.values())
        for future in under_way:
            future.exception()


def shares(items: Sequence[T], parts: int) -> list[list[T]]:
    """Split ``items`` into at most ``parts`` runs of near-equal length, order kept.

    Examples
    --------
    >>> shares([1, 2, 3, 4, 5], 2)
    [[1, 2, 3], [4, 5]]
    >>> shares([1, 2], 4)
    [[1], [2]]
    """
    count = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), count)
    out, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        out.append(list(items[start:end]))
        start = end
    return [share for share in out if share]


@contextmanager
def worker_pool(settings: Settings, *, files: int) -> Iterator[WorkerPool]:
    """A pool for one batch of ``files`` files, closed at the end.

    Its workers start at once when the batch will parse in the pool (``files >=
    scale.pool_min_files``); otherwise only if a big rebuild asks for them.
    """
    pool = WorkerPool(settings.scale.workers)
    if use_pool(pool, files, settings.scale.pool_min_files):
        pool.start()
    try:
        yield pool
    finally:
        pool.close()


def use_pool(pool: WorkerPool | None, size: int, threshold: int) -> bool:
    """Whether work of ``size`` pieces (files, patients) goes to ``pool`` (its threshold met)."""
    return pool is not None and pool.parallel and size >= threshold
