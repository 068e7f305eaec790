"""STR (GeneMapper peak) chimerism: per-locus % iNK and the STR entry point.

Two genomes (iNK product D, patient R) use the exact allele-sharing formulas of methods.md 2.2;
a patient with a prior transplant donor on record is modelled with three genomes
(:mod:`chimera.calculate.str_three_genome`, methods.md 2.3). Peaks are stutter-corrected first
(:mod:`chimera.calculate.stutter`, 2.6) and per-locus values are aggregated robustly
(:mod:`chimera.calculate.str_aggregate`, 2.7). Percentages are on the 0-100 scale; per-locus
fractions f are reported as ``pct = 100 * f``.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl

from chimera.calculate.limits import (
    GenomeModel,
    Method,
    MethodOutput,
    SampleResult,
    clamp_pct,
    failed_result,
    markers_frame,
    results_frame,
)
from chimera.calculate.str_aggregate import (
    Genome,
    LocusGenotypes,
    LocusWork,
    SampleWork,
    summarise,
)
from chimera.calculate.str_profiles import (
    Genotypes,
    ProfileKey,
    allele_sort_key,
    join_alleles,
    marker_key,
    profile_broad_peaks,
    profile_y_heights,
    shift_allele,
    signal_column,
    y_is_unexpected,
)
from chimera.calculate.str_signals import GroupSignals, ProfileSignals
from chimera.calculate.str_sources import References, Sources, StrCache, sample_notes
from chimera.calculate.str_three_genome import Profile, evaluate_three_genome_many
from chimera.calculate.stutter import (
    LocusPeaks,
    genome_alleles,
    unexplained_many,
    unique_alleles_many,
)
from chimera.calculate.stutter_ratios import StutterLookup, estimate_stutter_ratios
from chimera.settings import StrSettings
from schemas.vocab import Role


class Sharing:
    """Allele-sharing codes of methods.md 2.2 (Rchimerism ``locSD.R`` profile codes)."""

    DISTINCT = "1"
    """Rows 1-4: no shared allele (Nollet type I)."""
    SHARED_221 = "221"
    """Row 5: D a/b vs R a/c (type I, shared allele ignored)."""
    SHARED_211 = "211"
    """Row 6: D a/b vs R a/a (type II)."""
    SHARED_121 = "121"
    """Row 7: D a/a vs R a/c (type II)."""
    IDENTICAL = "0"
    """Row 8: identical genotypes, not informative."""
    FALLBACK = "fallback"
    """Row 9: any other pattern; sum of D-only signal over all expected peaks (biased)."""


class LocusCall(NamedTuple):
    """One locus of one sample: sharing code and the % iNK from its formula.

    ``signal_ink`` is the (stutter-corrected) signal on iNK-only alleles; ``signal_total`` the
    denominator of the formula used. ``pct_ink_raw`` is None when not informative or when the
    denominator is zero; it is not clamped (rows 6-7 can leave 0-100 under imbalance). A named
    tuple: one is made per sample and locus.
    """

    sharing: str
    pct_ink_raw: float | None
    signal_ink: float
    signal_total: float


def classify_sharing(donor: Collection[str], recipient: Collection[str]) -> str:
    """Return the methods.md 2.2 sharing code of a D/R genotype pair (``locSD.R`` rules).

    Examples
    --------
    >>> classify_sharing({"14", "16"}, {"14"}), classify_sharing({"14"}, {"14", "18"})
    ('211', '121')
    >>> classify_sharing({"6", "7"}, {"6", "9"}), classify_sharing({"8", "13"}, {"10"})
    ('221', '1')
    >>> classify_sharing({"12", "14", "16"}, {"14"}), classify_sharing({"9"}, {"9"})
    ('fallback', '0')
    """
    d, r = set(donor), set(recipient)
    shared = d & r
    if d == r:
        return Sharing.IDENTICAL
    if not shared:
        return Sharing.DISTINCT
    if len(d) == 2 and len(r) == 2 and len(shared) == 1:
        return Sharing.SHARED_221
    if len(d) == 2 and r == shared and len(r) == 1:
        return Sharing.SHARED_211
    if len(r) == 2 and d == shared and len(d) == 1:
        return Sharing.SHARED_121
    return Sharing.FALLBACK


def locus_pct_ink(
    donor: Collection[str], recipient: Collection[str], signals: Mapping[str, float]
) -> LocusCall:
    """Return % iNK at one locus from the sample's allele signals (methods.md 2.2).

    Only alleles of the two reference genotypes enter the formulas; an unexpected sample allele
    is a QC finding, not part of the denominator (Rchimerism ``ignore_unknown_alleles``,
    methods.md 2.8 B).

    Examples
    --------
    >>> locus_pct_ink({"28", "30"}, {"28"}, {"28": 5041, "30": 4948}).pct_ink_raw
    99.0689758734608
    >>> locus_pct_ink({"14"}, {"14", "18"}, {"14": 800, "18": 200}).pct_ink_raw
    60.0
    """
    return SharingPlan.of(donor, recipient).call(signals)


@dataclass(frozen=True)
class SharingPlan:
    """The alleles each methods.md 2.2 formula sums at one locus of a D/R genotype pair.

    They depend on the genotypes only, so a patient's samples share one plan per locus.
    """

    sharing: str
    ink_only: tuple[str, ...]
    recipient_only: tuple[str, ...]
    shared: tuple[str, ...]
    expected: tuple[str, ...]

    @classmethod
    def of(cls, donor: Collection[str], recipient: Collection[str]) -> SharingPlan:
        """The plan of genotypes ``donor`` (iNK) and ``recipient``."""
        d, r = set(donor), set(recipient)
        # Sorted: a sum's order (and so its last bit) must not follow the string hash seed.
        plan = (tuple(sorted(alleles)) for alleles in (d - r, r - d, d & r, d | r))
        return cls(classify_sharing(d, r), *plan)

    def call(self, signals: Mapping[str, float]) -> LocusCall:
        """% iNK at the locus from the sample's allele signals (:func:`locus_pct_ink`)."""
        peaks = LocusPeaks.of_dicts([signals], self.expected)
        calls = self.call_many(peaks, peaks.observed)
        return LocusCall(self.sharing, calls.pct_ink_raw[0], calls.signal_ink[0],
                         calls.signal_total[0])  # fmt: skip

    def call_many(self, peaks: LocusPeaks, signals: np.ndarray) -> LocusCalls:
        """:meth:`call` of every sample of ``peaks`` (``signals``: samples x its alleles)."""
        code = self.sharing
        s = functools.partial(peaks.total, signals)
        signal_ink = s(self.ink_only)
        if code == Sharing.IDENTICAL:
            return LocusCalls([None] * len(signal_ink), signal_ink.tolist(),
                              s(self.expected).tolist())  # fmt: skip
        if code in (Sharing.DISTINCT, Sharing.FALLBACK):
            # Rows 1-4: f = sum s(D-only) / (sum s(D-only) + sum s(R-only)); row 9 (fallback):
            # f = sum s(D-only) / sum s(all expected peaks) -- biased when an allele is shared.
            total = s(self.expected)
            pct = _ratio(signal_ink, total)
        elif code == Sharing.SHARED_221:
            # Row 5 (D a/b vs R a/c): f = s_b / (s_b + s_c); the shared allele a is ignored.
            total = signal_ink + s(self.recipient_only)
            pct = _ratio(signal_ink, total)
        elif code == Sharing.SHARED_211:
            # Row 6 (D a/b vs R a/a): f = 2 * s_b / (s_a + s_b).
            total = signal_ink + s(self.shared)
            pct = _ratio(2.0 * signal_ink, total)
        else:
            # Row 7 (D a/a vs R a/c): f = 1 - 2 * s_c / (s_a + s_c).
            recipient_only = s(self.recipient_only)
            total = recipient_only + s(self.shared)
            pct = [None if r is None else 100.0 - r for r in _ratio(2.0 * recipient_only, total)]
        return LocusCalls(pct, signal_ink.tolist(), total.tolist())


class LocusCalls(NamedTuple):
    """:class:`LocusCall` values of many samples at one locus, one list entry per sample."""

    pct_ink_raw: list[float | None]
    signal_ink: list[float]
    signal_total: list[float]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> list[float | None]:
    """100 * numerator / denominator, None where the denominator is not positive."""
    valid = ~(denominator <= 0)
    ratio = 100.0 * numerator / np.where(valid, denominator, 1.0)
    return [r if ok else None for r, ok in zip(ratio.tolist(), valid.tolist(), strict=True)]


def stutter_position_alleles(donor: Collection[str], recipient: Collection[str]) -> list[str]:
    """Return iNK-only alleles one repeat below or above a patient allele (methods.md 2.4).

    Such an allele collects the patient's back (n-1) or forward (n+1) stutter, which inflates
    a minority iNK signal.

    Examples
    --------
    >>> stutter_position_alleles({"8", "13"}, {"9", "20"})
    ['8']
    """
    r = set(recipient)
    hits = [
        allele
        for allele in set(donor) - r
        if shift_allele(allele, 1) in r or shift_allele(allele, -1) in r
    ]
    return sorted(hits, key=allele_sort_key)


def _stutter_column(stutter_ratio: float, *, settings: StrSettings) -> float | None:
    return stutter_ratio if settings.stutter_correction else None


def evaluate_two_genome(
    genotypes: Mapping[Genome, Genotypes],
    signals: Mapping[str, Mapping[str, float]],
    *,
    sample_id: str,
    lookup: StutterLookup,
    settings: StrSettings,
) -> SampleWork:
    """Per-locus % iNK of one sample from the 2.2 formulas, after stutter correction."""
    group = ProfileSignals.of_dicts([signals]).group([(0,)])
    return evaluate_two_genome_many(genotypes, [(sample_id, lookup)], group, settings=settings)[0]


def evaluate_two_genome_many(
    genotypes: Mapping[Genome, Genotypes],
    profiles: Sequence[Profile],
    signals: GroupSignals,
    *,
    settings: StrSettings,
) -> list[SampleWork]:
    """:func:`evaluate_two_genome` of many samples typed by the same genotypes.

    ``signals`` holds the samples' peaks, rows in the order of ``profiles``.

    Loci go outermost: what the genotypes say at a locus (sharing plan, allele strings,
    stutter positions) is worked out once for every sample.
    """
    donor, recipient = genotypes[Genome.INK], genotypes[Genome.RECIPIENT]
    works = [SampleWork(GenomeModel.TWO_GENOME) for _ in profiles]
    sex = {marker_key(m) for m in settings.sex_markers}
    names = {**recipient.names, **donor.names}
    for key in sorted(set(donor.alleles) | set(recipient.alleles), key=lambda k: names[k]):
        name = names[key]
        d, r = donor.alleles.get(key, set()), recipient.alleles.get(key, set())
        base: dict[str, object] = {
            "method": Method.STR.value,
            "marker": name,
            "donor_alleles": join_alleles(d) or None,
            "recipient_alleles": join_alleles(r) or None,
            "included": False,
        }
        if not d or not r:
            base["exclusion_reason"] = (
                f"no {'iNK product' if not d else 'patient baseline'} reference call"
            )
            for work, (sample_id, _) in zip(works, profiles, strict=True):
                work.marker_rows.append({"sample_id": sample_id, **base})
            continue
        genomes = genome_alleles({Genome.INK.value: d, Genome.RECIPIENT.value: r})
        typed = LocusGenotypes(name, frozenset(d | r), stutter_position_alleles(d, r),
                               sex_marker=key in sex, genomes=genomes)  # fmt: skip
        peaks = signals.at(key, typed.parents)
        _pair_rows(works, base, typed, SharingPlan.of(d, r), profiles, peaks, settings=settings)
    return works


def _pair_rows(
    works: Sequence[SampleWork],
    base: Mapping[str, object],
    locus: LocusGenotypes,
    plan: SharingPlan,
    profiles: Sequence[Profile],
    peaks: LocusPeaks,
    *,
    settings: StrSettings,
) -> None:
    """Every sample's marker row and locus work at a locus both genomes are typed at.

    Stutter correction, the 2.2 formula and the stutter checks run on the locus's columns of
    all samples at once (:class:`~chimera.calculate.stutter.LocusPeaks`).
    """
    name = locus.name
    stutters = [lookup.at(name) for _, lookup in profiles]
    corrected = peaks.corrected(stutters)
    calls = plan.call_many(peaks, corrected)
    unexpected = unexplained_many(name, peaks, corrected, stutters, settings=settings)
    reason = _not_used(plan.sharing, sex_marker=locus.sex_marker)
    usable = reason is None
    totals = peaks.total(corrected, plan.expected).tolist() if usable else []
    uniques = unique_alleles_many(locus.genomes, peaks, corrected, stutters) if usable else []
    sharing, fallback = plan.sharing, plan.sharing == Sharing.FALLBACK
    note = f"{name} (iNK {', '.join(locus.near)})" if locus.near else None
    ratios = [_stutter_column(stutter.back, settings=settings) for stutter in stutters]
    columns = zip(works, profiles, calls.pct_ink_raw, calls.signal_ink, calls.signal_total,
                  ratios, unexpected, strict=True)  # fmt: skip
    for i, (work, (sample_id, _), raw, ink, total, ratio, foreign) in enumerate(columns):
        pct, was_clamped = clamp_pct(raw)
        row = {"sample_id": sample_id, **base, "sharing": sharing, "signal_ink": ink,
               "signal_total": total, "pct_ink": pct, "stutter_ratio": ratio}  # fmt: skip
        work.marker_rows.append(row)
        if foreign:
            work.unexpected += foreign
        if raw is None or not usable:
            row["exclusion_reason"] = reason or "no sample signal at the expected alleles"
            continue
        work.loci.append(LocusWork(row, {Genome.INK: raw}, uniques[i], totals[i]))
        if was_clamped:
            work.clamped.append(f"{name} {raw:.2f} %")
            outside = max(raw - 100.0, -raw)
            work.review = work.review or outside > settings.outlier_delta_pct
        if fallback:
            work.fallback.append(name)
        if note is not None:
            work.stutter_notes.append(note)


def _not_used(sharing: str, *, sex_marker: bool) -> str | None:
    """Why no sample's value at a locus is used, whatever its signal (None: it may be)."""
    if sharing == Sharing.IDENTICAL:
        return "not informative"
    if sex_marker:
        return "sex marker"
    return None


def compute_str_chimerism(
    peaks: pl.LazyFrame,
    samples: pl.LazyFrame,
    *,
    settings: StrSettings,
    stutter: pl.DataFrame | None = None,
) -> MethodOutput:
    """Compute STR % iNK for every post-dose sample in ``peaks`` (methods.md 2.2-2.7).

    Parameters
    ----------
    peaks
        ``StrPeaks`` columns (plus ``source_sha256``) of the post-dose samples and of every
        genotype source: the product's ``donor_reference`` samples; for a two-genome patient
        the ``recipient_baseline``; for a patient with an ``hsct_donor`` sample (three genomes)
        the ``recipient_germline`` and ``hsct_donor`` samples (their baseline is a mixture and
        is not read as a genotype).
    samples
        ``sample_id, patient_id, role, product_lot`` (roles of ``schemas.vocab.Role``); a
        ``donor_reference`` row's ``patient_id`` and ``product_lot`` are the lot, a patient
        row's ``product_lot`` the lot the patient received; ``hsct_donor`` and
        ``recipient_germline`` rows carry the patient's ``patient_id``.
    settings
        STR options (signal, reference filter, stutter, outlier rule, LoD/LoQ).
    stutter
        ``schemas.stutter.StutterRatioEstimates`` rows (the warehouse ``stutter_ratios``
        table, measured over all of the lab's single-source profiles); None = estimate them
        from the single-source samples in ``peaks`` (:func:`estimate_stutter_ratios`).

    Returns
    -------
    MethodOutput
        One result per post-dose sample (mean of retained loci, 95 % t-interval over loci,
        recipient and HSCT-donor shares for three genomes) and one marker row per locus.
    """
    frame = peaks.collect()
    sample_frame = samples.select("sample_id", "patient_id", "role", "product_lot").collect()
    if stutter is None and settings.stutter_correction:
        stutter = estimate_stutter_ratios(frame, sample_frame, settings=settings)
    found = _evaluate(frame, sample_frame, ["sample_id"], settings=settings, stutter=stutter,
                      cache=StrCache())  # fmt: skip
    return MethodOutput(
        results=results_frame([result for _, result, _ in found]),
        markers=markers_frame([row for _, _, rows in found for row in rows]),
    )


def compute_str_runs(
    peaks: pl.DataFrame,
    samples: pl.DataFrame,
    *,
    settings: StrSettings,
    stutter: pl.DataFrame,
    cache: StrCache | None = None,
) -> MethodOutput:
    """STR % iNK of every post-dose sample on every run (file) in ``peaks``, run by run.

    As :func:`compute_str_chimerism` with the stutter table given, but a sample's profile is
    its rows of one run (``source_sha256``): a sample measured on two runs gives two results,
    each with its run's ``source_sha256`` (results and marker rows), in run then sample order.
    Genotype sources come from every run; ``cache`` shares reference genotypes between calls
    that read the same rows of the reference samples.
    """
    by = ["sample_id", "source_sha256"]
    found = _evaluate(peaks, samples, by, settings=settings, stutter=stutter,
                      cache=StrCache() if cache is None else cache)  # fmt: skip
    results = results_frame([result for _, result, _ in found]).with_columns(
        source_sha256=pl.Series([key[1] for key, _, _ in found], dtype=pl.String)
    )
    markers = markers_frame([row for _, _, rows in found for row in rows]).with_columns(
        source_sha256=pl.Series([key[1] for key, _, rows in found for _ in rows], dtype=pl.String)
    )
    return MethodOutput(results, markers)


PEAK_COLUMNS = ("sample_id", "marker", "allele", "height_rfu", "area_rfu")
"""The ``StrPeaks`` columns the calculation reads (besides the profile grouping columns)."""

Evaluated = tuple[ProfileKey, SampleResult, list[dict[str, object]]]
"""A profile's key, its result and its marker rows."""


def _evaluate(
    peaks: pl.DataFrame,
    samples: pl.DataFrame,
    by: list[str],
    *,
    settings: StrSettings,
    stutter: pl.DataFrame | None,
    cache: StrCache,
) -> list[Evaluated]:
    """Every post-dose profile (rows grouped by ``by``, ``sample_id`` first) evaluated."""
    signal_column(settings.signal)
    sample_frame = samples.select("sample_id", "patient_id", "role", "product_lot")
    post: dict[str, tuple[str, str | None]] = {}
    for sample_id, patient_id, role, lot in sample_frame.iter_rows():
        if role == Role.POST_DOSE and sample_id not in post:
            post[sample_id] = (patient_id, lot)
    # the columns read below only: a filter copies every column it keeps
    peaks = peaks.select(list(dict.fromkeys(c for c in (*by, *PEAK_COLUMNS) if c in peaks.columns)))
    rows = peaks.filter(pl.col("sample_id").is_in(list(post)))
    signals = ProfileSignals.of_frame(rows, by, signal=settings.signal)
    heights = profile_y_heights(peaks, by)  # every profile's: post-dose and reference samples
    amel = {key: xy for key, xy in heights.items() if key[0] in post}
    broad = profile_broad_peaks(rows, by, factor=settings.area_height_ratio_factor)
    three_genome = set(sample_frame.filter(pl.col("role") == Role.HSCT_DONOR)["patient_id"])
    references = References(sample_frame, peaks, settings=settings, cache=cache, heights=heights)
    index = cache.stutter_index(stutter, settings)
    order = sorted(amel, key=lambda k: (tuple(str(v) for v in k[1:]), str(k[0])))
    found: dict[ProfileKey, Evaluated] = {}
    groups: dict[tuple[object, ...], list[tuple[ProfileKey, Sources]]] = {}
    for key in order:
        sample_id = str(key[0])
        patient_id, lot = post[sample_id]
        sources = references.sources(patient_id, lot, three_genome=patient_id in three_genome)
        if isinstance(sources, str):
            failed = failed_result(sample_id, Method.STR, [sources], lod_pct=settings.lod_pct,
                                   loq_pct=settings.loq_pct)  # fmt: skip
            found[key] = (key, failed, [])
            continue
        typed_by = tuple((genome, tuple(ids)) for genome, (ids, _) in sources.genomes.items())
        groups.setdefault((sources.model, typed_by), []).append((key, sources))
    for members in groups.values():
        first = members[0][1]
        genotypes = {genome: genotype for genome, (_, genotype) in first.genomes.items()}
        three = first.model is GenomeModel.THREE_GENOME
        evaluate = evaluate_three_genome_many if three else evaluate_two_genome_many
        profiles = [(str(key[0]), index.lookup(signals.markers(key))) for key, _ in members]
        group = signals.group([key for key, _ in members])
        works = evaluate(genotypes, profiles, group, settings=settings)
        for (key, sources), work in zip(members, works, strict=True):
            reference_y = references.y_height(sources.reference_ids())
            work.notes = sample_notes(
                sources,
                unexpected_y=y_is_unexpected(amel[key], reference_y),
                broad=broad.get(key, []),
            )
            work.review = work.review or bool(work.notes)
            found[key] = (key, summarise(str(key[0]), work, settings=settings), work.marker_rows)
    return [found[key] for key in order]
