"""Three-genome STR chimerism (patient + prior HSCT donor + iNK) per locus (methods.md 2.3).

Signal model (2.1) with three genomes: each allele's share of the locus signal is
Σ_G f_G · d_G(x) / 2, the fractions non-negative and summing to 1. Per locus the fractions are
the constrained least-squares fit of that model to the stutter-corrected allele shares (the
"quirk-free" reference computation of methods.md 2.8 D). Where every genome has an allele of
its own this equals the unique-allele form f_X = k_X · Σ s(X-only) / Σ s(all) of Rchimerism
``locDD.R``; it also gives a value wherever the three dosage profiles separate a genome (e.g.
D3S1358 15/18 vs 15 vs 16/17 for the HSCT donor), and none where they cannot.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from chimera.calculate.limits import GenomeModel, Method
from chimera.calculate.str_aggregate import Genome, LocusGenotypes, LocusWork, SampleWork
from chimera.calculate.str_profiles import (
    Genotypes,
    allele_sort_key,
    join_alleles,
    marker_key,
    shift_allele,
)
from chimera.calculate.str_signals import GroupSignals, ProfileSignals
from chimera.calculate.stutter import (
    LocusPeaks,
    LocusStutter,
    UniqueAllele,
    genome_alleles,
    unexplained_many,
    unique_alleles_many,
)
from chimera.calculate.stutter_ratios import StutterLookup
from chimera.settings import StrSettings

_TOLERANCE = 1e-9
GENOME_ORDER = (Genome.INK, Genome.HSCT_DONOR, Genome.RECIPIENT)
_ROW_ALLELES = {
    Genome.INK: "donor_alleles",
    Genome.HSCT_DONOR: "hsct_donor_alleles",
    Genome.RECIPIENT: "recipient_alleles",
}
_REFERENCE_NAMES = {
    Genome.INK: "iNK product",
    Genome.HSCT_DONOR: "HSCT donor",
    Genome.RECIPIENT: "patient germline",
}


def dosage_matrix(genotypes: Sequence[Collection[str]], alleles: Sequence[str]) -> np.ndarray:
    """A[x, G] = d_G(x) / 2: share of genome G's signal on allele x (methods.md 2.1).

    A homozygote (one called allele) puts both copies, i.e. all its signal, on that allele.

    Examples
    --------
    >>> dosage_matrix([{"12"}, {"11", "12"}, {"11"}], ["11", "12"]).tolist()
    [[0.0, 0.5, 1.0], [1.0, 0.5, 0.0]]
    """
    return np.array(
        [[1.0 / len(g) if allele in g else 0.0 for g in genotypes] for allele in alleles]
    )


_System = tuple[list[int], np.ndarray, np.ndarray]
"""One support S of the simplex: its genome indices, 2 (A_S)ᵀ and the KKT matrix of the fit."""


def _systems(dosage: np.ndarray) -> list[_System]:
    """The KKT matrix of the equality-constrained fit on every support of the simplex."""
    k = dosage.shape[1]
    found = []
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            sub = dosage[:, support]
            # [[2 AᵀA, 1], [1ᵀ, 0]], filled in place (np.block's checks cost more than the fit)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = 2 * sub.T @ sub
            kkt[:size, size] = kkt[size, :size] = 1.0
            found.append((list(support), 2 * sub.T, kkt))
    return found


def solve_fractions(
    dosage: np.ndarray, shares: np.ndarray, systems: Sequence[_System] | None = None
) -> np.ndarray:
    """Fractions f >= 0 with Σ f = 1 minimising ||A f - p||² (exact, small problems).

    Every support S of the simplex is tried: the equality-constrained fit on S (its KKT system,
    least-norm when the columns are dependent) is kept when feasible, and the best objective
    wins. The optimum has a vertex whose support fit is unique, so this is exact. ``systems``
    are :func:`_systems` of ``dosage`` (they depend on the genotypes only, so a caller
    solving many samples of one patient builds them once).

    Examples
    --------
    >>> a = dosage_matrix([{"15", "18"}, {"15"}, {"16", "17"}], ["15", "16", "17", "18"])
    >>> truth = np.array([0.6, 0.3, 0.1])
    >>> np.round(solve_fractions(a, a @ truth), 12).tolist()
    [0.6, 0.3, 0.1]
    """
    fractions: np.ndarray = solve_fractions_many(dosage, shares[np.newaxis, :], systems)[0]
    return fractions


def solve_fractions_many(
    dosage: np.ndarray, shares: np.ndarray, systems: Sequence[_System] | None = None
) -> np.ndarray:
    """:func:`solve_fractions` of every row of ``shares`` (samples x alleles) at once.

    One least-squares call per support solves every sample (one right-hand side each); the
    products are stacked matrix-vector products, so each row gets the bits a one-sample solve
    gives.
    """
    samples, k = shares.shape[0], dosage.shape[1]
    best_objective = np.full(samples, np.inf)
    best = np.zeros((samples, k))
    column_shares = shares[:, :, np.newaxis]
    for support, twice_transposed, kkt in _systems(dosage) if systems is None else systems:
        size = len(support)
        rhs = np.ones((size + 1, samples))
        rhs[:-1] = np.matmul(twice_transposed, column_shares)[:, :, 0].T
        solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:size].T
        feasible = ~(solution < -_TOLERANCE).any(axis=1)
        fractions = np.zeros((samples, k))
        fractions[:, support] = np.clip(solution, 0.0, None)
        fitted = np.matmul(dosage, fractions[:, :, np.newaxis])[:, :, 0]
        objective = ((fitted - shares) ** 2).sum(axis=1)
        better = feasible & (objective < best_objective - 1e-15)
        best_objective[better] = objective[better]
        best[better] = fractions[better]
    assert np.isfinite(best_objective).all()
    return np.asarray(best / best.sum(axis=1, keepdims=True), dtype=float)


def separable(dosage: np.ndarray) -> list[bool]:
    """Which genome fractions the dosage profiles determine (given Σ f = 1).

    f_G is determined iff no direction in the null space of [A; 1ᵀ] moves it.

    Examples
    --------
    >>> separable(dosage_matrix([{"6", "7"}, {"6", "8"}, {"6", "7"}], ["6", "7", "8"]))
    [False, True, False]
    """
    system = np.vstack([dosage, np.ones(dosage.shape[1])])
    _, singular, vt = np.linalg.svd(system)
    rank = int(np.sum(singular > _TOLERANCE))
    null = vt[rank:]
    return [bool(np.all(np.abs(null[:, g]) < 1e-7)) for g in range(dosage.shape[1])]


def locus_fractions(
    genotypes: Sequence[Collection[str]], signals: Mapping[str, float]
) -> tuple[list[float | None], float, list[bool]]:
    """Per-locus % of each genome, the signal used and which genomes the locus separates.

    A genome's % is None where the locus cannot separate it or has no signal. Only alleles of
    the reference genotypes enter; unexpected peaks are a QC finding.

    Examples
    --------
    >>> pct, total, which = locus_fractions([{"30", "31"}, {"29", "30"}, {"30", "35"}],
    ...                                     {"29": 150.0, "30": 500.0, "31": 300.0, "35": 50.0})
    >>> [round(p, 6) for p in pct], total, which
    ([60.0, 30.0, 10.0], 1000.0, [True, True, True])
    """
    return locus_fractions_many(genotypes, [signals])[0]


LocusFractions = tuple[list[float | None], float, list[bool]]
"""Per-genome % (None: not separable or no signal), signal used, genomes separated."""


def locus_fractions_many(
    genotypes: Sequence[Collection[str]], profiles: Sequence[Mapping[str, float]]
) -> list[LocusFractions]:
    """:func:`locus_fractions` of many samples at one locus of the same genotypes."""
    peaks = LocusPeaks.of_dicts(profiles, frozenset().union(*genotypes))
    return locus_fractions_of(genotypes, peaks, peaks.observed)


def locus_fractions_of(
    genotypes: Sequence[Collection[str]], peaks: LocusPeaks, signals: np.ndarray
) -> list[LocusFractions]:
    """:func:`locus_fractions` of every sample of ``peaks`` (``signals``: its allele columns)."""
    alleles, dosage, which, systems = _locus_model(tuple(frozenset(g) for g in genotypes))
    column_totals = peaks.total(signals, alleles)
    totals = column_totals.tolist()
    found: list[LocusFractions] = [([None] * len(genotypes), t, list(which)) for t in totals]
    solved = np.flatnonzero(column_totals > 0) if any(which) else np.array([], dtype=int)
    if not len(solved):
        return found
    columns = np.array([peaks.column[a] for a in alleles], dtype=np.intp)
    shares = signals[np.ix_(solved, columns)] / column_totals[solved, np.newaxis]
    fitted = solve_fractions_many(dosage, shares, systems)
    for i, fractions in zip(solved.tolist(), fitted, strict=True):
        pct = [100.0 * float(f) if ok else None for f, ok in zip(fractions, which, strict=True)]
        found[i] = (pct, totals[i], list(which))
    return found


@functools.lru_cache(maxsize=4096)
def _locus_model(
    genotypes: tuple[frozenset[str], ...],
) -> tuple[list[str], np.ndarray, tuple[bool, ...], list[_System]]:
    """Alleles, dosage matrix, separable genomes and KKT systems of one locus's genotypes.

    They depend on the genotypes only, which are the same for every sample of a patient.
    """
    alleles = sorted(set().union(*genotypes), key=allele_sort_key)
    dosage = dosage_matrix(genotypes, alleles)
    return alleles, dosage, tuple(separable(dosage)), _systems(dosage)


def _sharing(values: Mapping[Genome, float]) -> str:
    """Marker-row code of a three-genome locus: the genomes it separates, ``3G none`` if none."""
    return _sharing_of(tuple(g in values for g in GENOME_ORDER))


@functools.lru_cache(maxsize=16)
def _sharing_of(separated: tuple[bool, ...]) -> str:
    """:func:`_sharing` of the genomes ``separated`` (in ``GENOME_ORDER``): one per sample and locus."""
    names = [g.value for g, ok in zip(GENOME_ORDER, separated, strict=True) if ok]
    return "3G " + ("/".join(names) or "none")


def evaluate_three_genome(
    genotypes: Mapping[Genome, Genotypes],
    signals: Mapping[str, Mapping[str, float]],
    *,
    sample_id: str,
    lookup: StutterLookup,
    settings: StrSettings,
) -> SampleWork:
    """Per-locus % of iNK, HSCT donor and recipient of one sample, after stutter correction."""
    group = ProfileSignals.of_dicts([signals]).group([(0,)])
    return evaluate_three_genome_many(genotypes, [(sample_id, lookup)], group, settings=settings)[0]


Profile = tuple[str, StutterLookup]
"""One sample's id and its stutter lookup."""


def evaluate_three_genome_many(
    genotypes: Mapping[Genome, Genotypes],
    profiles: Sequence[Profile],
    signals: GroupSignals,
    *,
    settings: StrSettings,
) -> list[SampleWork]:
    """:func:`evaluate_three_genome` of many samples typed by the same genotypes.

    Loci go outermost so that each locus's fractions are solved for every sample at once;
    ``signals`` holds the samples' peaks, rows in the order of ``profiles``.
    """
    works = [SampleWork(GenomeModel.THREE_GENOME) for _ in profiles]
    sex = {marker_key(m) for m in settings.sex_markers}
    names = {k: v for g in reversed(GENOME_ORDER) for k, v in genotypes[g].names.items()}
    for key in sorted(names, key=lambda k: names[k]):
        name = names[key]
        typed = {g: genotypes[g].alleles.get(key, set()) for g in GENOME_ORDER}
        base: dict[str, object] = {"method": Method.STR.value, "marker": name, "included": False}
        base.update({_ROW_ALLELES[g]: join_alleles(a) or None for g, a in typed.items()})
        rows = [{"sample_id": sample_id, **base} for sample_id, _ in profiles]
        for work, row in zip(works, rows, strict=True):
            work.marker_rows.append(row)
        missing = [_REFERENCE_NAMES[g] for g, a in typed.items() if not a]
        if missing:
            for row in rows:
                row["exclusion_reason"] = f"no {' or '.join(missing)} reference call"
            continue
        expected = frozenset().union(*typed.values())
        stutters = [lookup.at(name) for _, lookup in profiles]
        peaks = signals.at(key, expected)
        matrix = peaks.corrected(stutters)
        fractions = locus_fractions_of([typed[g] for g in GENOME_ORDER], peaks, matrix)
        genomes = genome_alleles({g.value: a for g, a in typed.items()})
        locus = LocusGenotypes(name, expected, _stutter_positions(typed), sex_marker=key in sex,
                       genomes=genomes)  # fmt: skip
        uniques = unique_alleles_many(genomes, peaks, matrix, stutters)
        unexpected = unexplained_many(name, peaks, matrix, stutters, settings=settings)
        for i, work in enumerate(works):
            work.unexpected += unexpected[i]
            _locus_row(work, rows[i], locus, uniques[i], stutters[i], fractions[i],
                       settings=settings)  # fmt: skip
    return works


def _locus_row(
    work: SampleWork,
    row: dict[str, object],
    locus: LocusGenotypes,
    unique: list[UniqueAllele],
    stutter: LocusStutter,
    fractions: LocusFractions,
    *,
    settings: StrSettings,
) -> None:
    """One sample's marker row and locus work at a locus all three genomes are typed at."""
    name, near = locus.name, locus.near
    pct, total, which = fractions
    values = {g: p for g, p in zip(GENOME_ORDER, pct, strict=True) if p is not None}
    row.update(
        sharing=_sharing(values),
        signal_ink=sum(u.signal for u in unique if u.genome == Genome.INK),
        signal_total=total,
        pct_ink=values.get(Genome.INK),
        stutter_ratio=stutter.back if settings.stutter_correction else None,
    )
    reason = _not_used(informative=any(which), sex_marker=locus.sex_marker, total=total)
    if reason is not None:
        row["exclusion_reason"] = reason
        return
    if Genome.INK not in values:
        row["exclusion_reason"] = "iNK not separable from the other genomes"
    work.loci.append(LocusWork(row, values, unique, total))
    if near:
        work.stutter_notes.append(f"{name} ({', '.join(near)})")


def _not_used(*, informative: bool, sex_marker: bool, total: float) -> str | None:
    if not informative:
        return "not informative (the three genotypes separate no genome)"
    if sex_marker:
        return "sex marker"
    if total <= 0:
        return "no sample signal at the expected alleles"
    return None


def _stutter_positions(typed: Mapping[Genome, Collection[str]]) -> list[str]:
    """Genome-unique alleles one repeat below or above another genome's allele."""
    found = []
    for genome, alleles in typed.items():
        others = set().union(*(a for g, a in typed.items() if g is not genome))
        for allele in sorted(set(alleles) - others, key=allele_sort_key):
            if shift_allele(allele, 1) in others or shift_allele(allele, -1) in others:
                found.append(f"{genome} {allele}")
    return found
