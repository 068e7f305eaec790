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
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import TypeVar

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
        if not self.parallel or not items:
            return [here(item) for item in items]
        self.start()
        assert self._executor is not None
        futures = [self._executor.submit(function, item) for item in items]
        done = {
            index: here(items[index])
            for index in reversed(range(len(items)))
            if futures[index].cancel()
        }
        results: list[R] = []
        for index, (future, item) in enumerate(zip(futures, items, strict=True)):
            if index in done:
                results.append(done[index])
                continue
            try:
                results.append(future.result())
            except BrokenProcessPool:
                LOGGER.warning("a worker process died; the rest of the work runs in this process")
                self.close()
                self.workers = 1
                results.append(here(item))
        return results

    def close(self) -> None:
        """Stop the workers (waiting for running work; work not started is dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


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
