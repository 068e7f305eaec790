"""Raw assay rows indexed by sample and by file, so a rebuild takes one patient's share cheaply.

A rebuild of a few patients scans the rows; a larger one partitions them once
(:data:`PARTITION_AFTER_TAKES`). Both give the same rows in the same order (issue 12).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from chimera.plate_cache import PlateCache
from chimera.plate_targets import FileMarkers, plates_by_target
from chimera.registry import sources_by_sample

ROW_POSITION = "__row"
"""Column holding each indexed row's position (rows taken keep their stored order)."""


FIRST_ROW_COLUMNS = ("sample_id", "source_sha256", "source_file", "ingested_at")
"""What :meth:`RowIndex.first_rows` gives of each sample's first row on a file."""

PARTITION_AFTER_TAKES = 8
"""Takes answered by a scan of all rows before :class:`RowIndex` partitions them once."""


@dataclass(frozen=True)
class RowIndex:
    """Raw rows indexed by sample and by file, so that one patient's share is cheap to take.

    The first few takes (a rebuild of a few patients) each scan the rows; only a rebuild that
    takes more (:data:`PARTITION_AFTER_TAKES`) partitions every row once, so the fixed cost of
    a small rebuild does not grow with the warehouse. Both give the same rows in the same order.
    """

    frame: pl.DataFrame
    """Every row, with :data:`ROW_POSITION`."""
    _takes: list[int] = field(default_factory=lambda: [0], compare=False, repr=False)
    plates: PlateCache = field(default_factory=PlateCache, compare=False, repr=False)
    """PCR plates of these rows (and of replaced files) indexed once per rebuild."""
    _kept: dict[tuple[str, ...], KeptRows] = field(default_factory=dict, compare=False, repr=False)
    _markers: dict[tuple[str, tuple[str, ...]], FileMarkers] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def of(cls, rows: pl.DataFrame) -> RowIndex:
        """Index ``rows`` (raw assay rows with ``sample_id`` and ``source_sha256``)."""
        return cls(rows.with_row_index(ROW_POSITION))

    @cached_property
    def sources(self) -> dict[str, set[str]]:
        """The files holding each sample id."""
        return {
            sample_id: set(shas) for sample_id, shas in sources_by_sample(self.frame).iter_rows()
        }

    @cached_property
    def by_sample(self) -> Positions:
        """The positions of each sample id's rows."""
        return Positions.of(self.frame, "sample_id")

    @cached_property
    def _file_positions(self) -> Positions:
        return Positions.of(self.frame, "source_sha256")

    @cached_property
    def _rows(self) -> pl.DataFrame:
        """Every row without :data:`ROW_POSITION`, which rows are gathered from.

        A gather, then a drop of that column, costs twice a gather of the rows alone.
        """
        return self.frame.drop(ROW_POSITION)

    @cached_property
    def by_source(self) -> dict[str, pl.DataFrame]:
        """The rows of each file (by SHA-256)."""
        parts = self.frame.partition_by("source_sha256", as_dict=True)
        return {str(k[0]): v for k, v in parts.items()}

    @cached_property
    def _first_rows(self) -> tuple[pl.DataFrame, Positions]:
        """Each (sample, file)'s first row (:data:`FIRST_ROW_COLUMNS`), in stored order, by sample."""
        firsts = (
            self.frame.select(FIRST_ROW_COLUMNS)
            .unique(["sample_id", "source_sha256"], keep="first", maintain_order=True)
            .with_row_index(ROW_POSITION)
        )
        return firsts.drop(ROW_POSITION), Positions.of(firsts, "sample_id")

    def first_rows(self, sample_ids: Iterable[str]) -> pl.DataFrame | None:
        """The first row of each of ``sample_ids`` on each file holding it, in stored order.

        Only once the rows are partitioned (a large rebuild: one pass over all rows then
        answers every patient); None before, when a scan of the caller's rows costs less.
        """
        if "by_sample" not in self.__dict__ and self._takes[0] <= PARTITION_AFTER_TAKES:
            return None
        rows, positions = self._first_rows
        found = positions.of_keys(set(sample_ids))
        return rows[np.sort(np.concatenate(found))] if found else rows.clear()

    def _partitioned(self) -> bool:
        """Whether takes use the partitions (built on the first take past the threshold)."""
        self._takes[0] += 1
        return "by_sample" in self.__dict__ or self._takes[0] > PARTITION_AFTER_TAKES

    def sources_of(self, sample_ids: Iterable[str]) -> set[str]:
        """The files holding any of these samples."""
        ids = set(sample_ids)
        if "sources" not in self.__dict__ and not self._partitioned():
            held = self.frame.filter(pl.col("sample_id").is_in(list(ids)))["source_sha256"]
            return set(held.drop_nulls().to_list())
        return {sha for sid in ids for sha in self.sources.get(sid, ())}

    def take(self, sample_ids: Iterable[str] = (), sources: Iterable[str] = ()) -> pl.DataFrame:
        """The rows of these files and of these samples, each once, in stored order."""
        files = set(sources)
        ids = set(sample_ids)
        if not self._partitioned():
            wanted = pl.col("source_sha256").is_in(list(files)) | pl.col("sample_id").is_in(
                list(ids)
            )
            return self.frame.filter(wanted).drop(ROW_POSITION)
        by_file = self._file_positions.of_keys(files)
        by_sample = self.by_sample.of_keys(ids)
        if not by_file + by_sample:
            return self._gather(None)
        positions = np.sort(np.concatenate(by_file + by_sample))
        if by_file and by_sample:
            # A row both on ``files`` and of ``ids`` is taken once (the rows of different
            # keys of one column never repeat: each row has one file and one sample id).
            positions = positions[np.concatenate(([True], positions[1:] != positions[:-1]))]
        return self._gather(positions)

    def _gather(self, positions: np.ndarray | None) -> pl.DataFrame:
        """The rows at ``positions`` (ascending: stored order), without :data:`ROW_POSITION`."""
        return self._rows.clear() if positions is None else self._rows[positions]

    def markers(self, shas: Sequence[str], reference_genes: Sequence[str]) -> list[FileMarkers]:
        """The markers of each sample on each file of ``shas`` (current files), indexed once.

        The files not yet indexed are indexed together, in one pass over their rows only (a
        scan, or once the rows are partitioned a gather of their positions), so a rebuild
        reads only the files of the patients it rebuilds, each once.
        """
        genes = tuple(reference_genes)
        missing = [sha for sha in dict.fromkeys(shas) if (sha, genes) not in self._markers]
        if missing:
            if self._partitioned():
                held = self._file_positions.of_keys(missing)
                rows = self.frame[np.sort(np.concatenate(held))] if held else self.frame.clear()
            else:
                rows = self.frame.filter(pl.col("source_sha256").is_in(missing))
            found = FileMarkers.by_file(rows, genes)
            for sha in missing:
                self._markers[(sha, genes)] = found.get(sha, FileMarkers(frozenset(), {}))
        return [self._markers[(sha, genes)] for sha in shas]

    def kept(self, sample_ids: Sequence[str]) -> KeptRows:
        """The rows of ``sample_ids`` (a product's registered reference), indexed once."""
        key = tuple(sorted(sample_ids))
        if key not in self._kept:
            if self._partitioned():
                found = self.by_sample.of_keys(key)
                rows = self.frame[np.sort(np.concatenate(found))] if found else self.frame.clear()
            else:
                rows = self.frame.filter(pl.col("sample_id").is_in(list(key)))
            self._kept[key] = KeptRows.of(rows)
        return self._kept[key]

    def take_plates(
        self, sources: Iterable[str], kept: KeptRows, sliced: Iterable[str]
    ) -> pl.DataFrame:
        """Every row of the files ``sources`` and the ``kept`` rows on ``sliced``, in stored order."""
        files = set(sources)
        others = [s for s in sorted(set(sliced) - files) if s in kept.positions]
        if self._partitioned():
            # One gather of the rows' positions (the kept rows lie on other files: no repeats).
            found = self._file_positions.of_keys(sorted(files))
            found += [kept.positions[s] for s in others]
            return self._gather(np.sort(np.concatenate(found)) if found else None)
        extra = [kept.by_source[s] for s in others]
        parts = [self.frame.filter(pl.col("source_sha256").is_in(list(files))), *extra]
        return pl.concat(parts).sort(ROW_POSITION).drop(ROW_POSITION)


@dataclass(frozen=True)
class KeptRows:
    """Some samples' rows (with :data:`ROW_POSITION`) by file, and the files holding each marker."""

    rows: pl.DataFrame
    plates: dict[str, set[str]]
    """Per marker (:func:`chimera.plate_targets.plates_by_target`): the files with its wells."""
    positions: dict[str, np.ndarray]
    """Per file: the :data:`ROW_POSITION` of its rows (taken by every patient of the bank)."""

    @classmethod
    def of(cls, rows: pl.DataFrame) -> KeptRows:
        """Index ``rows`` by file (their positions: the rows are split by file only if asked)."""
        grouped = rows.group_by("source_sha256", maintain_order=True).agg(ROW_POSITION)
        positions = {
            str(sha): found.to_numpy()
            for sha, found in zip(grouped["source_sha256"], grouped[ROW_POSITION], strict=True)
        }
        return cls(rows, plates_by_target(rows), positions)

    @cached_property
    def by_source(self) -> dict[str, pl.DataFrame]:
        """The rows on each file (by SHA-256)."""
        parts = self.rows.partition_by("source_sha256", as_dict=True)
        return {str(k[0]): v for k, v in parts.items()}

    def holding(self, targets: Iterable[str]) -> set[str]:
        """The files holding wells of any of ``targets``."""
        return {sha for target in targets for sha in self.plates.get(target, ())}


@dataclass(frozen=True)
class Positions:
    """The row positions of each value of one column, from one sort of that column."""

    order: np.ndarray
    """Every row position with a non-null value, grouped by value (stored order within one)."""
    spans: dict[str, tuple[int, int]]
    """Each value's slice of :attr:`order`."""

    @classmethod
    def of(cls, frame: pl.DataFrame, column: str) -> Positions:
        """Index ``frame`` (with :data:`ROW_POSITION`) by ``column``."""
        keyed = (
            frame.select(column, ROW_POSITION)
            .filter(pl.col(column).is_not_null())
            .sort(column, maintain_order=True)
        )
        sizes = keyed.group_by(column, maintain_order=True).len()
        ends = np.cumsum(sizes["len"].to_numpy())
        starts = ends - sizes["len"].to_numpy()
        spans = zip(starts.tolist(), ends.tolist(), strict=True)
        return cls(
            keyed[ROW_POSITION].to_numpy(), dict(zip(sizes[column].to_list(), spans, strict=True))
        )

    def of_keys(self, keys: Iterable[str]) -> list[np.ndarray]:
        """The positions of the rows of each of ``keys`` held (one array per key)."""
        return [
            self.order[start:end]
            for key in keys
            for start, end in [self.spans.get(key, (0, 0))]
            if end > start
        ]
