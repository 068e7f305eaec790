"""STR stutter correction: subtract the expected stutter of every allele (methods.md 2.6).

Stutter is an artefact peak one repeat shorter (back, n-1) or, rarer, longer (forward, n+1) than
its parent allele; its signal is a locus-specific fraction of the parent's. A minority-genome
allele in a stutter position of a majority-genome allele is inflated by it, so the expected
stutter of every parent is subtracted before the per-locus formulas (additive model, NIJ 2019):
s_corr(x) = max(0, s(x) - SR_back * s(x + 1) - SR_forward * s(x - 1)). This module also says how
uncertain that correction is at an allele and how much stutter a foreign-looking peak can be.
The ratios come from :mod:`chimera.calculate.stutter_ratios`.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from chimera.calculate.str_profiles import allele_sort_key, shift_allele
from chimera.settings import StrSettings
from schemas.vocab import StutterSource


@dataclass(frozen=True)
class LocusStutter:
    """Stutter ratios at one locus and their per-sample SD (fractions of the parent signal)."""

    back: float = 0.0
    back_sd: float = 0.0
    forward: float = 0.0
    forward_sd: float = 0.0
    source: StutterSource = StutterSource.CONFIGURED


NO_STUTTER = LocusStutter()


def expected_stutter(
    allele: str, signals: Mapping[str, float], parents: Collection[str], stutter: LocusStutter
) -> tuple[float, float]:
    """Expected stutter signal at ``allele`` from its parents and the SD of that expectation.

    Back stutter of the allele one repeat longer plus forward stutter of the one shorter, both
    only when that neighbour is an expected allele (``parents``).

    Examples
    --------
    >>> expected_stutter("13", {"14": 1000.0}, {"14"}, LocusStutter(0.08, 0.02))
    (80.0, 20.0)
    """
    mean, variance = 0.0, 0.0
    longer, shorter = _neighbours(allele)
    if longer is not None and longer in parents:
        value = signals.get(longer, 0.0)
        mean += stutter.back * value
        variance += (stutter.back_sd * value) ** 2
    if shorter is not None and shorter in parents:
        value = signals.get(shorter, 0.0)
        mean += stutter.forward * value
        variance += (stutter.forward_sd * value) ** 2
    return mean, math.sqrt(variance)


@functools.lru_cache(maxsize=65536)
def _neighbours(allele: str) -> tuple[str | None, str | None]:
    """The alleles one repeat longer (its back stutter lands here) and one shorter (forward)."""
    return shift_allele(allele, 1), shift_allele(allele, -1)


@functools.lru_cache(maxsize=65536)
def _longest_first(alleles: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(alleles, key=allele_sort_key, reverse=True))


def correct_stutter(
    signals: Mapping[str, float], parents: Collection[str], stutter: LocusStutter
) -> dict[str, float]:
    """Subtract every expected allele's stutter from the peak one repeat away (methods.md 2.6).

    s_corr(x) = max(0, s(x) - SR_back * s_corr(x + 1) - SR_forward * s(x - 1)), where only
    expected alleles (``parents``) stutter. Alleles are corrected from the longest down, so a
    parent is itself corrected before its stutter is subtracted.

    Examples
    --------
    >>> out = correct_stutter({"9": 100.0, "10": 1000.0, "11": 50.0}, {"10", "11"}, LocusStutter(0.08))
    >>> {allele: round(value, 2) for allele, value in out.items()}
    {'9': 20.32, '10': 996.0, '11': 50.0}
    """
    peaks = LocusPeaks.of_dicts([signals], parents)
    row, column = peaks.corrected([stutter])[0].tolist(), peaks.column
    return {allele: row[column[allele]] for allele in signals}


def _columns_of(signals: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Each peak of ``signals`` (one mapping per sample) as its sample row, allele and signal."""
    chain = itertools.chain.from_iterable
    rows = np.repeat(np.arange(len(signals)), [len(peaks) for peaks in signals])
    values = np.fromiter(chain(peaks.values() for peaks in signals), dtype=float, count=len(rows))
    return rows, list(chain(signals)), values


def _frozen(alleles: Collection[str]) -> frozenset[str]:
    return alleles if type(alleles) is frozenset else frozenset(alleles)


@functools.lru_cache(maxsize=65536)
def _correction_plan(
    alleles: tuple[str, ...], parents: frozenset[str]
) -> tuple[tuple[int, int | None, int | None], ...]:
    """Each column (alleles longest first) with its longer and shorter neighbour's column.

    A neighbour counts when it is a parent (an expected allele), as :func:`expected_stutter`
    reads them; the plan depends on the peaks' alleles and the genotypes only, which recur
    from locus to locus and patient to patient.
    """
    column = {allele: j for j, allele in enumerate(alleles)}
    plan = []
    for j, allele in enumerate(alleles):
        longer, shorter = _neighbours(allele)
        plan.append((j, column[longer] if longer is not None and longer in parents else None,
                     column[shorter] if shorter is not None and shorter in parents else None))  # fmt: skip
    return tuple(plan)


class LocusPeaks:
    """One locus of many samples: allele signals as a samples x alleles matrix (methods.md 2.6).

    Columns are every allele a sample has a peak at plus every ``expected`` allele (the parents
    that stutter), longest first; a sample without a peak at an allele reads 0 there and is not
    ``present``. The stutter arithmetic works on whole columns, so each formula runs once per
    locus for every sample typed by the same genotypes.
    """

    def __init__(self, samples: int, rows: np.ndarray, alleles: tuple[Sequence[str], np.ndarray],
                 values: np.ndarray, expected: Collection[str]) -> None:  # fmt: skip
        """The peaks of ``samples`` samples as columns: each peak's sample row, allele, signal.

        ``alleles`` holds the allele names and each peak's code into them; one peak per sample
        row and allele (signals of duplicate rows already summed).
        """
        names, codes = alleles
        self.expected = _frozen(expected)
        distinct, inverse = np.unique(codes, return_inverse=True)
        found = [names[c] for c in distinct.tolist()]
        self.alleles = _longest_first(tuple(sorted(self.expected.union(found))))
        self.column = {allele: j for j, allele in enumerate(self.alleles)}
        at = np.fromiter(map(self.column.__getitem__, found), dtype=np.intp, count=len(found))
        self.observed, self.present = self._matrix(samples, rows, at[inverse], values)

    @classmethod
    def of_dicts(
        cls, signals: Sequence[Mapping[str, float]], expected: Collection[str]
    ) -> LocusPeaks:
        """The peaks of one mapping (allele -> signal) per sample."""
        rows, alleles, values = _columns_of(signals)
        names = list(dict.fromkeys(alleles))
        code = {allele: c for c, allele in enumerate(names)}
        codes = np.fromiter(map(code.__getitem__, alleles), dtype=np.intp, count=len(alleles))
        return cls(len(signals), rows, (names, codes), values, expected)

    def _matrix(
        self, samples: int, rows: np.ndarray, columns: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        matrix = np.zeros((samples, len(self.alleles)))
        present = np.zeros(matrix.shape, dtype=bool)
        matrix[rows, columns] = values
        present[rows, columns] = True
        return matrix, present

    def dense(self, signals: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """``signals`` (alleles among the columns) as a matrix and where each has a peak."""
        rows, alleles, values = _columns_of(signals)
        columns = np.fromiter(map(self.column.__getitem__, alleles), dtype=np.intp,
                              count=len(alleles))  # fmt: skip
        return self._matrix(len(signals), rows, columns, values)

    def total(self, matrix: np.ndarray, alleles: Sequence[str]) -> np.ndarray:
        """Each sample's sum of ``matrix`` over ``alleles``, added left to right as ``sum`` does."""
        column = self.column
        found = np.zeros(matrix.shape[0])
        for allele in alleles:
            found = found + matrix[:, column[allele]]
        return found

    def corrected(self, stutters: Sequence[LocusStutter]) -> np.ndarray:
        """Every sample's s_corr (:func:`correct_stutter`); ``stutters`` is per sample."""
        observed, present = self.observed, self.present
        back = np.array([stutter.back for stutter in stutters])
        forward = np.array([stutter.forward for stutter in stutters])
        out = np.zeros_like(observed)
        for j, longer, shorter in _correction_plan(self.alleles, self.expected):
            # expected_stutter's mean: back stutter of the (corrected) longer parent plus
            # forward stutter of the shorter one, which is corrected after this allele
            mean = None if longer is None else back * out[:, longer]
            if shorter is not None:
                term = forward * observed[:, shorter]
                mean = term if mean is None else mean + term
            value = observed[:, j] if mean is None else observed[:, j] - mean
            out[:, j] = np.where(present[:, j] & (value > 0), value, 0.0)
        return out


class UniqueAllele(NamedTuple):
    """An allele only one genome carries at a locus, with the stutter other alleles add to it.

    ``signal`` is the stutter-corrected signal; ``dosage`` the share of the genome's signal on
    this allele (1 homozygote, 1/2 heterozygote; methods.md 2.1); ``stutter_sd`` the SD of the
    stutter expected at the allele (signal units, 0 when no expected allele stutters into it).
    A named tuple, not a dataclass: one is made per unique allele of every sample and locus.
    """

    genome: str
    allele: str
    signal: float
    dosage: float
    stutter_sd: float = 0.0
    stutter_parents: str = ""

    def expected(self, share_pct: float, total: float) -> float:
        """Signal the allele carries when its genome is ``share_pct`` % of a locus of ``total``."""
        return max(share_pct, 0.0) / 100.0 * total * self.dosage

    def stutter_severity(self, share_pct: float, total: float) -> float:
        """Stutter uncertainty over the expected signal (inf when nothing is expected)."""
        if self.stutter_sd <= 0:
            return 0.0
        expected = self.expected(share_pct, total)
        return math.inf if expected <= 0 else self.stutter_sd / expected

    def seen(self, sigmas: float) -> bool:
        """Signal beyond what stutter can explain (any signal where no stutter is expected)."""
        return self.signal > sigmas * self.stutter_sd


def unique_alleles(
    genomes: Mapping[str, Collection[str]],
    corrected: Mapping[str, float],
    stutter: LocusStutter,
) -> list[UniqueAllele]:
    """Every genome-unique allele of a locus with its corrected signal and stutter SD.

    Examples
    --------
    >>> found = unique_alleles({"iNK": {"13"}, "recipient": {"14", "16"}},
    ...                        {"13": 50.0, "14": 950.0, "16": 1000.0}, LocusStutter(0.08, 0.02))
    >>> [(u.genome, u.allele, u.dosage, u.stutter_sd, u.stutter_parents) for u in found]
    [('iNK', '13', 1.0, 19.0, '14'), ('recipient', '14', 0.5, 0.0, ''), ('recipient', '16', 0.5, 0.0, '')]
    """
    return unique_alleles_of(genome_alleles(genomes), corrected, stutter)


GenomeAlleles = tuple[tuple[str, frozenset[str]], ...]
"""Each genome's alleles at a locus, hashable (:func:`genome_alleles`)."""


def genome_alleles(genomes: Mapping[str, Collection[str]]) -> GenomeAlleles:
    """The genotypes of :func:`unique_alleles` as a key (built once per locus of a patient)."""
    return tuple((genome, frozenset(alleles)) for genome, alleles in genomes.items())


def unique_alleles_of(
    genomes: GenomeAlleles, corrected: Mapping[str, float], stutter: LocusStutter
) -> list[UniqueAllele]:
    """:func:`unique_alleles` of genotypes given as :func:`genome_alleles`."""
    peaks = LocusPeaks.of_dicts(
        [corrected], frozenset().union(*(alleles for _, alleles in genomes))
    )
    return unique_alleles_many(genomes, peaks, peaks.observed, [stutter])[0]


def unique_alleles_many(
    genomes: GenomeAlleles,
    peaks: LocusPeaks,
    corrected: np.ndarray,
    stutters: Sequence[LocusStutter],
) -> list[list[UniqueAllele]]:
    """:func:`unique_alleles_of` of every sample of ``peaks`` (``corrected``: its s_corr)."""
    column = peaks.column
    back_sd = np.array([stutter.back_sd for stutter in stutters])
    forward_sd = np.array([stutter.forward_sd for stutter in stutters])
    # a patient's samples share a few stutter objects: one layout each
    distinct = {id(s): s for s in stutters}
    layout_of = {k: _unique_layout(genomes, s.back_sd, s.forward_sd) for k, s in distinct.items()}
    if not stutters:
        return []
    entries = []
    for e, (genome, allele, dosage, near, longer, shorter) in enumerate(
        layout_of[id(stutters[0])]  # alleles and neighbours: every sample's, only near varies
    ):
        # expected_stutter's SD: the square root of the summed squared spreads
        variance = None
        for spread, neighbour in ((back_sd, longer), (forward_sd, shorter)):
            if neighbour is not None:
                part = np.square(spread * corrected[:, column[neighbour]])
                variance = part if variance is None else variance + part
        sd = np.zeros(len(stutters)) if variance is None else np.sqrt(variance)
        nears = (
            itertools.repeat(near)
            if len(layout_of) == 1
            else [layout_of[id(s)][e][3] for s in stutters]
        )
        fields = zip(itertools.repeat(genome), itertools.repeat(allele),
                     corrected[:, column[allele]].tolist(), itertools.repeat(dosage), sd.tolist(),
                     nears)  # fmt: skip
        entries.append(
            map(tuple.__new__, itertools.repeat(UniqueAllele), fields)
        )  # no Python __new__
    return (
        [list(found) for found in zip(*entries, strict=True)] if entries else [[] for _ in stutters]
    )


@functools.lru_cache(maxsize=65536)
def _unique_layout(
    genomes: GenomeAlleles, back_sd: float, forward_sd: float
) -> tuple[tuple[str, str, float, str, str | None, str | None], ...]:
    """Each genome-unique allele's genome, dosage, stutter parents and parent neighbours.

    The stutter parents are joined for the note; the neighbours (longer, shorter, or None
    when not an expected allele) are the ones :func:`expected_stutter` reads.

    They depend on the genotypes and on which stutter directions vary only, the same for every
    sample of a patient.
    """
    parents = frozenset().union(*(alleles for _, alleles in genomes))
    found = []
    for genome, alleles in genomes:
        others = frozenset().union(*(a for g, a in genomes if g != genome))
        for allele in sorted(alleles - others, key=allele_sort_key):
            near = [
                parent
                for parent, spread in ((shift_allele(allele, 1), back_sd),
                                       (shift_allele(allele, -1), forward_sd))
                if parent is not None and parent in parents and spread > 0
            ]  # fmt: skip
            longer, shorter = _neighbours(allele)
            found.append((genome, allele, 1 / len(alleles), "/".join(near),
                          longer if longer is not None and longer in parents else None,
                          shorter if shorter is not None and shorter in parents else None))  # fmt: skip
    return tuple(found)


def stutter_ceiling(
    allele: str,
    signals: Mapping[str, float],
    parents: Collection[str],
    stutter: LocusStutter,
    *,
    settings: StrSettings,
) -> float:
    """The most stutter ``allele`` can plausibly carry from its expected neighbours.

    Stutter ratios vary from peak to peak roughly log-normally, so the ceiling per parent is
    SR * exp(z * CV) (z = ``unexpected_allele_sigmas``), never below ``max_stutter_ratio``
    (``max_forward_stutter_ratio`` for n+1) of the parent, which also covers uncorrected runs,
    and never above twice that.

    Examples
    --------
    >>> round(stutter_ceiling("13", {"14": 1000.0}, {"14"}, LocusStutter(0.1, 0.02),
    ...                       settings=StrSettings()), 1)
    222.6
    """
    peaks = LocusPeaks.of_dicts([signals], _frozen(parents) | {allele})
    limits = _ceiling_ratios(stutter, settings)
    ceiling = _ceilings(peaks, peaks.column[allele], np.array([limits[0]]), np.array([limits[1]]))
    return float(ceiling[0])


def _ceilings(peaks: LocusPeaks, j: int, back: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Every sample's stutter ceiling at column ``j`` from its expected neighbours' peaks."""
    longer, shorter = _correction_plan(peaks.alleles, peaks.expected)[j][1:]
    ceiling = np.zeros(len(back))
    if longer is not None:
        ceiling = back * peaks.observed[:, longer]
    if shorter is not None:
        ceiling = ceiling + forward * peaks.observed[:, shorter]
    return ceiling


def _ceiling_ratios(stutter: LocusStutter, settings: StrSettings) -> tuple[float, float]:
    """Largest plausible back and forward stutter ratio of a locus (:func:`stutter_ceiling`)."""
    return _plausible_ratios(stutter, settings.unexpected_allele_sigmas,
                             settings.max_stutter_ratio, settings.max_forward_stutter_ratio)  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _plausible_ratios(
    stutter: LocusStutter, sigmas: float, back_floor: float, forward_floor: float
) -> tuple[float, float]:
    found = []
    for ratio, sd, floor in (
        (stutter.back, stutter.back_sd, back_floor),
        (stutter.forward, stutter.forward_sd, forward_floor),
    ):
        spread = math.exp(sigmas * sd / ratio) if ratio > 0 else 1.0
        found.append(max(floor, min(ratio * spread, 2 * floor)))
    return found[0], found[1]


@dataclass(frozen=True)
class UnexpectedAllele:
    """A peak in no reference genotype with more signal than stutter explains.

    ``stutter_position``: it sits one repeat from an expected allele (an extreme stutter is
    possible there; a foreign genome shows elsewhere too).
    """

    marker: str
    allele: str
    share: float
    stutter_position: bool

    def __str__(self) -> str:
        return f"{self.marker} {self.allele} ({100 * self.share:.0f} % of locus signal)"


def unexplained_alleles(
    name: str,
    expected: Collection[str],
    observed: Mapping[str, float],
    corrected: Mapping[str, float],
    stutter: LocusStutter,
    *,
    settings: StrSettings,
) -> list[UnexpectedAllele]:
    """Alleles in no reference genotype with more signal than stutter can explain.

    A peak one repeat from an expected allele is stutter up to :func:`stutter_ceiling`
    (methods.md 2.6). Anything else whose stutter-corrected signal is above
    ``min_unexpected_allele_fraction`` of the locus points to a foreign genome.

    Examples
    --------
    >>> stutter, settings = LocusStutter(0.1, 0.02), StrSettings()
    >>> clean = {"14": 900.0, "13": 190.0, "16": 100.0}  # 21 % of 14: a high stutter
    >>> unexplained_alleles("D3S1358", {"14", "16"}, clean,
    ...                     correct_stutter(clean, {"14", "16"}, stutter), stutter, settings=settings)
    []
    >>> foreign = {"14": 900.0, "11": 300.0, "16": 100.0}
    >>> [str(u) for u in unexplained_alleles("D3S1358", {"14", "16"}, foreign, foreign, stutter,
    ...                                      settings=settings)]
    ['D3S1358 11 (23 % of locus signal)']
    """
    peaks = LocusPeaks.of_dicts([observed], expected)
    corrected_matrix = peaks.dense([corrected])[0]
    return unexplained_many(name, peaks, corrected_matrix, [stutter], settings=settings)[0]


def unexplained_many(
    name: str,
    peaks: LocusPeaks,
    corrected: np.ndarray,
    stutters: Sequence[LocusStutter],
    *,
    settings: StrSettings,
) -> list[list[UnexpectedAllele]]:
    """:func:`unexplained_alleles` of every sample of ``peaks`` (``corrected``: its s_corr)."""
    found: list[list[UnexpectedAllele]] = [[] for _ in stutters]
    extra = [j for j, allele in enumerate(peaks.alleles) if allele not in peaks.expected]
    if not extra or not stutters:
        return found
    distinct = {id(s): s for s in stutters}  # a few distinct ones
    ratios = {k: _ceiling_ratios(s, settings) for k, s in distinct.items()}
    limits = np.array([ratios[id(s)] for s in stutters])
    beyond = []
    for j in extra:
        ceiling = _ceilings(peaks, j, limits[:, 0], limits[:, 1])
        # most extra peaks are stutter within its ceiling: sum and sort only what is left
        over = peaks.present[:, j] & ~(peaks.observed[:, j] <= ceiling)
        if over.any():
            beyond.append((peaks.alleles[j], over, ceiling))
    if not beyond:
        return found
    rows, present, column = corrected.tolist(), peaks.present.tolist(), peaks.column
    beyond.sort(key=lambda item: allele_sort_key(item[0]))
    for i in np.flatnonzero(np.any([over for _, over, _ in beyond], axis=0)).tolist():
        row, here = rows[i], present[i]
        total = sum(value for value, peak in zip(row, here, strict=True) if peak)
        if total <= 0:
            continue
        for allele, over, ceiling in beyond:
            share = row[column[allele]] / total
            if over[i] and share > settings.min_unexpected_allele_fraction:
                position = bool(ceiling[i] > 0)
                found[i].append(UnexpectedAllele(name, allele, share, stutter_position=position))
    return found
