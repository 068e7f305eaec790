"""STR signals of many profiles as columns, served one locus at a time (methods.md 2.2, 2.6).

:func:`~chimera.calculate.str_profiles.signal_sums` sums each profile's numeric-call signal per
marker and allele in one polars pass; :class:`ProfileSignals` keeps those sums as columns and
hands the calculation one locus of a group of samples as a
:class:`~chimera.calculate.stutter.LocusPeaks` matrix, with no mapping per sample and locus.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import polars as pl

from chimera.calculate.str_profiles import ProfileKey, marker_key, signal_column, signal_sums
from chimera.calculate.stutter import LocusPeaks

_Columns = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One locus's peaks: each one's profile index, allele code and signal."""

_NO_PEAKS: _Columns = (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp), np.zeros(0))


class ProfileSignals:
    """Numeric-call signal of every profile by marker key and allele, kept as columns.

    Peak n belongs to profile ``profiles[n]`` (an index into ``keys``) at marker key
    ``markers[0][markers[1][n]]`` and allele ``alleles[0][alleles[1][n]]`` (names and one code
    per peak), with signal ``values[n]``.
    """

    def __init__(
        self,
        keys: Sequence[ProfileKey],
        profiles: np.ndarray,
        markers: tuple[Sequence[str], np.ndarray],
        alleles: tuple[Sequence[str], np.ndarray],
        values: np.ndarray,
    ) -> None:
        self.index = {key: i for i, key in enumerate(keys)}
        self.allele_names = list(alleles[0])
        names, codes = markers
        order = np.argsort(codes, kind="stable")
        starts = np.searchsorted(codes[order], np.arange(len(names) + 1)).tolist()
        self._loci: dict[str, _Columns] = {}
        self._markers: list[set[str]] = [set() for _ in keys]
        for name, start, stop in zip(names, starts[:-1], starts[1:], strict=True):
            at = order[start:stop]
            self._loci[name] = (profiles[at], alleles[1][at], values[at])
            for profile in np.unique(profiles[at]).tolist():
                self._markers[profile].add(name)

    @classmethod
    def of_frame(cls, peaks: pl.DataFrame, by: Sequence[str], *, signal: str) -> ProfileSignals:
        """The signals of every profile of ``peaks`` (rows grouped by ``by``)."""
        rows = (
            signal_sums(peaks, by, signal=signal)
            .with_columns(_profile=pl.struct(by).rank("dense") - 1)
            .collect()
        )
        profiles = rows["_profile"].to_numpy().astype(np.intp)
        first = np.unique(profiles, return_index=True)[1]
        keys = list(zip(*(rows[c].gather(first).to_list() for c in by), strict=True))
        written = rows["_key"].unique().to_list()
        names = list(dict.fromkeys(marker_key(m) for m in written))
        code = {name: c for c, name in enumerate(names)}
        return cls(keys, profiles, (names, _codes(rows["_key"], written, [code[marker_key(m)] for m in written])),
                   _named(rows["allele"]), rows[signal_column(signal)].to_numpy())  # fmt: skip

    @classmethod
    def of_dicts(cls, signals: Sequence[Mapping[str, Mapping[str, float]]]) -> ProfileSignals:
        """Profiles ``(0,)``, ``(1,)``, ... with signals by marker key and allele."""
        peaks = [(i, key, allele, value) for i, by_marker in enumerate(signals)
                 for key, by_allele in by_marker.items() for allele, value in by_allele.items()]  # fmt: skip
        profiles, markers, alleles, values = zip(*peaks, strict=True) if peaks else ((),) * 4
        return cls([(i,) for i in range(len(signals))], np.array(profiles, dtype=np.intp),
                   _named(pl.Series(markers, dtype=pl.String)),
                   _named(pl.Series(alleles, dtype=pl.String)), np.array(values, dtype=float))  # fmt: skip

    def markers(self, key: ProfileKey) -> frozenset[str]:
        """The marker keys profile ``key`` has a numeric call at."""
        i = self.index.get(key)
        return frozenset() if i is None else frozenset(self._markers[i])

    def locus(self, key: str) -> _Columns:
        """Every profile's peaks at marker key ``key``: profile index, allele code, signal."""
        return self._loci.get(key, _NO_PEAKS)

    def group(self, keys: Sequence[ProfileKey]) -> GroupSignals:
        """The signals of profiles ``keys``, in that order."""
        return GroupSignals(self, keys)


def _named(values: pl.Series) -> tuple[list[str], np.ndarray]:
    """Distinct strings of ``values`` and each value's code into them."""
    names = values.unique().to_list()
    return names, _codes(values, names, list(range(len(names))))


def _codes(values: pl.Series, names: list[str], codes: list[int]) -> np.ndarray:
    return values.replace_strict(names, codes, return_dtype=pl.Int64).to_numpy().astype(np.intp)


class GroupSignals:
    """Some profiles of a :class:`ProfileSignals`, one locus at a time, rows in their order."""

    def __init__(self, signals: ProfileSignals, keys: Sequence[ProfileKey]) -> None:
        self._signals, self._size = signals, len(keys)
        self._row = np.full(len(signals.index), -1, dtype=np.intp)
        for row, key in enumerate(keys):
            if key in signals.index:
                self._row[signals.index[key]] = row

    def at(self, key: str, expected: Collection[str]) -> LocusPeaks:
        """The group's peaks at marker key ``key`` (``expected``: the alleles that stutter)."""
        profiles, alleles, values = self._signals.locus(key)
        rows = self._row[profiles]
        mine = rows >= 0
        if not mine.all():
            rows, alleles, values = rows[mine], alleles[mine], values[mine]
        names = self._signals.allele_names
        return LocusPeaks(self._size, rows, (names, alleles), values, expected)
