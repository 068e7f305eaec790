"""PCR plates indexed once per rebuild and shared by every patient on them (issue 12).

A plate's index (qPCR :class:`~chimera.calculate.qpcr_plate.PlateContext`, ddPCR
:class:`~chimera.calculate.ddpcr_wells.Plate`) depends only on its wells and on the manifest
role of each sample on it: every sample gets its registry role, never the instrument's type,
whichever patient is being computed. A patient's calculation reads its own plates whole and,
from other plates, only the wells of the product's registered reference (a slice,
:mod:`chimera.method_rows`); each plate x slice is indexed once here and reused.

The cache belongs to one rebuild (one registry, one settings object): given another registry
or settings it starts afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import polars as pl

from chimera.calculate.common import SampleInfo, sample_table
from chimera.calculate.ddpcr_wells import Plate, collect_wells, index_plates
from chimera.calculate.qpcr_plate import PlateContext
from chimera.registry import Registry
from chimera.settings import DdpcrSettings, QpcrSettings

Slice = tuple[str, ...] | None
"""The sample ids kept of a plate (sorted), or None for every well."""

T = TypeVar("T")


@dataclass(frozen=True)
class RegistryTable:
    """Registry samples by id (:func:`sample_table`) and their registry positions, indexed once."""

    samples: pl.DataFrame
    infos: dict[str, SampleInfo]
    order: dict[str, int]
    lots: dict[str, SampleInfo] = field(default_factory=dict)
    """Product samples with their lot as ``product_lot`` (:meth:`others`), built once each."""

    @classmethod
    def of(cls, samples: pl.DataFrame) -> RegistryTable:
        """Index the registry's ``samples`` rows."""
        order: dict[str, int] = {}
        for position, sample_id in enumerate(samples["sample_id"].to_list()):
            order.setdefault(sample_id, position)
        return cls(samples, sample_table(samples), order)

    def others(
        self,
        sample_ids: Iterable[str],
        exclude: Collection[str],
        roles: Collection[str],
        lots: Collection[str],
    ) -> dict[str, SampleInfo]:
        """The samples of ``sample_ids`` not in ``exclude`` nor of ``roles``, in registry order.

        Samples of the roles ``lots`` get their ``patient_id`` (their lot) as ``product_lot``.
        """
        # Set operations in C, then registry order (``order`` holds every id of ``infos``).
        known = sorted(
            (self.infos.keys() & set(sample_ids)).difference(exclude), key=self.order.__getitem__
        )
        found = {}
        for sid in known:
            info = self.infos[sid]
            if info.role in roles:
                continue
            if info.role in lots:
                info = self._as_lot(sid)
            found[sid] = info
        return found

    def _as_lot(self, sid: str) -> SampleInfo:
        """The product sample ``sid`` with its ``patient_id`` (its lot) as ``product_lot``."""
        if sid not in self.lots:
            row = self.samples[self.order[sid]].with_columns(product_lot=pl.col("patient_id"))
            self.lots[sid] = sample_table(row)[sid]
        return self.lots[sid]


@dataclass
class PlateCache:
    """Indexed PCR plates by (``source_sha256``, slice), for one registry and settings."""

    _owner: tuple[object, object] | None = None
    _table: dict[str, SampleInfo] = field(default_factory=dict)
    _registered: tuple[Registry, RegistryTable] | None = None
    _qpcr: dict[tuple[str, Slice], PlateContext] = field(default_factory=dict)
    _ddpcr: dict[tuple[str, Slice], Plate] = field(default_factory=dict)
    _samples: dict[int, tuple[pl.DataFrame, dict[str, SampleInfo]]] = field(default_factory=dict)

    def _own(self, registry: Registry, settings: object) -> None:
        """Start afresh when asked for another registry or settings than before."""
        owner = self._owner
        if owner is None or owner[0] is not registry or owner[1] is not settings:
            self._owner = (registry, settings)
            self._table = self.registry_table(registry).infos
            self._qpcr, self._ddpcr = {}, {}

    def registry_table(self, registry: Registry) -> RegistryTable:
        """Every sample of ``registry`` as the PCR calculations read it, built once per registry."""
        if self._registered is None or self._registered[0] is not registry:
            self._registered = (registry, RegistryTable.of(registry.samples))
        return self._registered[1]

    def sample_table(self, samples: pl.DataFrame) -> dict[str, SampleInfo]:
        """:func:`sample_table` of one patient's ``samples`` frame, read once per frame.

        Do not modify the table returned (it is shared by the patient's methods).
        """
        known = self._samples.get(id(samples))
        if known is None or known[0] is not samples:
            known = self._samples[id(samples)] = (samples, sample_table(samples))
        return known[1]

    def qpcr(
        self,
        sha: str,
        kept: Slice,
        rows: Callable[[], pl.DataFrame],
        *,
        registry: Registry,
        settings: QpcrSettings,
    ) -> PlateContext:
        """The qPCR plate ``sha`` (``rows()``: its wells, at least those ``kept``), indexed once.

        ``rows()`` holds that plate's wells only, so they are indexed as one plate directly.
        """
        self._own(registry, settings)
        return _once(
            self._qpcr,
            (sha, kept),
            lambda: PlateContext(sha, _kept(rows(), kept), settings, self._table),
        )

    def ddpcr(
        self,
        sha: str,
        kept: Slice,
        rows: Callable[[], pl.DataFrame],
        *,
        registry: Registry,
        settings: DdpcrSettings,
    ) -> Plate:
        """The ddPCR plate ``sha`` (``rows()``: its wells, at least those ``kept``), indexed once."""
        self._own(registry, settings)
        return _once(
            self._ddpcr,
            (sha, kept),
            lambda: index_plates(
                collect_wells(_kept(rows(), kept), settings), self._table, settings
            )[sha],
        )


def _once(store: dict[tuple[str, Slice], T], key: tuple[str, Slice], build: Callable[[], T]) -> T:
    """``store[key]``, built by ``build()`` on the first request only."""
    if key not in store:
        store[key] = build()
    return store[key]


def _kept(rows: pl.DataFrame, kept: Slice) -> pl.DataFrame:
    return rows if kept is None else rows.filter(pl.col("sample_id").is_in(list(kept)))
