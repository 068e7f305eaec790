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
        the workers compute later ones.
        """
        if not self.parallel or not items:
            return Mapped(self, [], items, here)
        self.start()
        assert self._executor is not None
        return Mapped(self, [self._executor.submit(function, item) for item in items], items, here)

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

    Asking for a result (``mapped[index]``) takes it from the spawned process that computed
    it; one no process has started is computed here; while the one asked for is still under
    way, this process computes the last item no process has started, and waits only when
    there is none. An exception of ``function`` is raised where its result is asked for; a
    broken pool leaves every result not in yet to this process.
    """

    def __init__(
        self,
        pool: WorkerPool,
        futures: Sequence[Future[R]],
        items: Sequence[T],
        here: Callable[[T], R],
    ) -> None:
        self._pool, self._futures, self._items, self._here = pool, futures, items, here
        self._done: dict[int, R] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> R:
        while index not in self._done:
            self._advance(index)
        return self._done[index]

    def _advance(self, index: int) -> None:
        """One step towards result ``index``: take it, compute it, or help with the rest."""
        if not self._futures or self._futures[index].cancel():
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

    def _compute(self, index: int) -> None:
        self._done[index] = self._here(self._items[index])

    def _take_last(self) -> bool:
        """Compute here the last item no spawned process has started (False: there is none)."""
        for index in reversed(range(len(self._futures))):
            if index not in self._done and self._futures[index].cancel():
                self._compute(index)
                return True
        return False

    def take_rest(self) -> None:
        """Compute here, last first, every item no spawned process has started."""
        while self._futures and self._take_last():
            pass

    def settle(self) -> None:
        """Drop the items no process has started; wait for those under way (results unused)."""
        for future in self._futures:
            if not future.cancel():
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
