"""The cyclic garbage collector kept off a batch's long-lived objects.

CPython's collector walks every tracked object of a generation each time it collects it, and
full collections come often while a rebuild allocates many short-lived objects. A big batch
holds hundreds of thousands of long-lived ones (parsed rows, the registry, row indexes, plate
contexts) that every full collection walks again, for nothing: about 15 % of the CPU of a
50-patient ingest. :func:`gc.freeze` moves every object alive now into a permanent generation
that collections skip; reference counting still frees them, and :func:`gc.unfreeze` hands
them back to the collector (Python docs, "gc — Garbage Collector interface", ``gc.freeze``).
Speed only: no result depends on it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def set_aside() -> None:
    """Keep everything alive now out of the collector's walks (:func:`gc.freeze`).

    Call it within :func:`long_lived`, which hands the objects back, or in a process that
    ends with its work (a pool worker).
    """
    gc.freeze()


@contextmanager
def long_lived() -> Iterator[None]:
    """A block whose long-lived state :func:`set_aside` may keep from the collector.

    Leaving the block hands every set-aside object back (:func:`gc.unfreeze`), so a
    long-running process (``chimera watch``, a Prefect worker) collects a finished batch's
    cycles as usual.
    """
    try:
        yield
    finally:
        gc.unfreeze()
