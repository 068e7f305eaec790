"""STR per-locus values into one sample result: robust aggregation and QC (methods.md 2.7).

Both genome models end here. Each informative locus brings its per-locus % of every genome it
can measure and its genome-unique alleles; this module drops loci whose stutter correction is
unreliable at the sample's level (methods.md 2.4, 2.6), applies the median/MAD outlier rule per
genome, and turns the retained loci into mean, t-interval, result state and QC verdict.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from chimera.calculate.limits import (
    GenomeModel,
    GenomeShare,
    Method,
    QcVerdict,
    SampleResult,
    classify_result,
    failed_result,
)
from chimera.calculate.stats import sample_sd, t_quantile
from chimera.calculate.stutter import GenomeAlleles, UnexpectedAllele, UniqueAllele
from chimera.settings import StrSettings


class Genome(StrEnum):
    """The genomes a patient's blood can hold, as named in QC messages."""

    INK = "iNK"
    HSCT_DONOR = "HSCT donor"
    RECIPIENT = "recipient"


AGGREGATED = {
    GenomeModel.TWO_GENOME: (Genome.INK,),
    GenomeModel.THREE_GENOME: (Genome.INK, Genome.HSCT_DONOR, Genome.RECIPIENT),
}
"""Genomes whose share is aggregated over loci; with two genomes recipient = 100 - iNK."""


class LocusAggregate(NamedTuple):
    """Summary of per-locus % values (methods.md 2.7); ``excluded`` follows input order.

    A named tuple, not a dataclass: one is made per genome of every sample.
    """

    mean_pct: float | None
    sd_pct: float | None
    cv: float | None
    median_pct: float | None
    n_informative: int
    n_excluded: int
    excluded: tuple[bool, ...] = ()
    spread_flag: bool = False
    """n <= 2 only: the loci differ by more than the outlier delta."""


def _describe(values: Sequence[float], excluded: Sequence[bool]) -> tuple[float | None, ...]:
    kept = [v for v, out in zip(values, excluded, strict=True) if not out]
    mean = statistics.fmean(kept) if kept else None
    sd = sample_sd(kept) if len(kept) >= 2 else None
    cv = sd / mean if sd is not None and mean else None
    return mean, sd, cv


def aggregate_loci(
    pct_values: Sequence[float], *, mad_factor: float, delta_pct: float
) -> LocusAggregate:
    """Robust aggregation of per-locus % values (methods.md 2.7, recommended rule).

    Exclude locus i when |f_i - median| > max(k * 1.4826 * MAD, delta); report mean/SD/CV of
    the retained loci and the median of all. With n <= 2 nothing is excluded and
    ``spread_flag`` says whether the loci differ by more than delta. Unlike the 2-SD rule this
    can exclude at n <= 5, where Samuelson's bound max|f_i - mean|/SD <= (n-1)/sqrt(n) < 2.

    Examples
    --------
    >>> agg = aggregate_loci([50.0, 50.0, 50.0, 90.0], mad_factor=3.0, delta_pct=5.0)
    >>> agg.mean_pct, agg.excluded
    (50.0, (False, False, False, True))
    """
    values = [float(v) for v in pct_values]
    n = len(values)
    if n == 0:
        return LocusAggregate(None, None, None, None, 0, 0)
    median = statistics.median(values)
    if n <= 2:
        excluded = tuple(False for _ in values)
        spread = max(values) - min(values) > delta_pct
    else:
        mad = statistics.median(abs(v - median) for v in values)
        threshold = max(mad_factor * 1.4826 * mad, delta_pct)
        excluded = tuple(abs(v - median) > threshold for v in values)
        spread = False
    mean, sd, cv = _describe(values, excluded)
    return LocusAggregate(mean, sd, cv, median, n, sum(excluded), excluded, spread)


def aggregate_loci_two_sd(pct_values: Sequence[float]) -> LocusAggregate:
    """Rchimerism aggregation: drop loci with |f_i - mean| > 2 SD (``chiSD.R``, methods.md 2.7).

    Mean and SD are taken over all loci first; mean, SD and CV are then reported for the
    retained loci. Kept to reproduce published Rchimerism numbers; :func:`aggregate_loci` is
    the rule used for results.

    Examples
    --------
    >>> aggregate_loci_two_sd([50.0, 50.0, 50.0, 90.0]).n_excluded  # Samuelson: n=4 never excludes
    0
    """
    values = [float(v) for v in pct_values]
    n = len(values)
    if n == 0:
        return LocusAggregate(None, None, None, None, 0, 0)
    mean_all = statistics.fmean(values)
    sd_all = sample_sd(values) if n >= 2 else 0.0
    # SD 0 (identical loci) excludes nothing, even where the float mean is one ulp off them.
    excluded = tuple(sd_all > 0 and abs(v - mean_all) > 2.0 * sd_all for v in values)
    mean, sd, cv = _describe(values, excluded)
    return LocusAggregate(mean, sd, cv, statistics.median(values), n, sum(excluded), excluded)


def t_interval(
    mean: float | None, sd: float | None, n: int
) -> tuple[float | None, float | None, float | None]:
    """95 % CI of a mean over n loci: mean +/- t(0.975, n-1) * SD / sqrt(n), and the t used.

    Examples
    --------
    >>> low, high, t = t_interval(50.0, 10.0, 3)
    >>> round(low, 3), round(high, 3), round(t, 3)
    (25.159, 74.841, 4.303)
    """
    if mean is None or sd is None or n < 2:
        return None, None, None
    quantile = t_quantile(0.975, n - 1)
    half = quantile * sd / math.sqrt(n)
    return mean - half, mean + half, quantile


@dataclass(frozen=True)
class LocusGenotypes:
    """What one locus's reference genotypes say, the same for every sample they type.

    ``parents``: every expected allele; ``near``: genome-unique alleles in a stutter position
    of another genome's allele (for the QC note); ``genomes``: the genotypes as the key of
    :func:`chimera.calculate.stutter.unique_alleles_of`.
    """

    name: str
    parents: frozenset[str]
    near: list[str]
    sex_marker: bool
    genomes: GenomeAlleles


@dataclass
class LocusWork:
    """One informative locus of one sample while the sample is aggregated.

    ``values`` holds the unclamped per-locus % of each genome the locus can measure; ``unique``
    the genome-unique alleles; ``total`` the corrected signal over the expected alleles;
    ``excluded`` the reason a genome's value is left out (filled by :func:`summarise`).
    """

    row: dict[str, object]
    values: dict[Genome, float]
    unique: list[UniqueAllele]
    total: float
    excluded: dict[Genome, str] = field(default_factory=dict)


@dataclass
class SampleWork:
    """Per-sample accumulators while loci are evaluated."""

    model: GenomeModel
    marker_rows: list[dict[str, object]] = field(default_factory=list)
    loci: list[LocusWork] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    review: bool = False
    unexpected: list[UnexpectedAllele] = field(default_factory=list)
    stutter_notes: list[str] = field(default_factory=list)
    clamped: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)


class _Share(NamedTuple):
    """One genome's aggregate over its retained loci."""

    agg: LocusAggregate
    ci_low: float | None
    ci_high: float | None
    quantile: float | None
    detected: bool
    values: tuple[float, ...]
    outliers: tuple[str, ...]


def _exclude_unreliable_stutter(
    work: SampleWork, values_of: dict[Genome, list[float]], *, settings: StrSettings
) -> list[str]:
    """Leave out loci whose stutter correction cannot be trusted at this sample's level.

    A genome's own allele in a stutter position is unreliable for that genome's share when the
    SD of the stutter expected there exceeds ``stutter_uncertainty_limit`` times the signal the
    genome's provisional share (median over loci) predicts for it: the minority genome's
    alleles, iNK in blood above all. Worst loci go first, while at least
    ``min_informative_loci`` remain for the genome (Nollet 2001; methods.md 2.4, 2.6).
    ``values_of`` holds each genome's locus values (:func:`_values`).
    """
    limit = settings.stutter_uncertainty_limit
    messages: list[str] = []
    for genome in AGGREGATED[work.model]:
        values = values_of[genome]
        if not values:
            continue
        share = statistics.median(values)
        flagged = []
        for locus in work.loci:
            if genome not in locus.values:
                continue
            worst: tuple[float, UniqueAllele] | None = None  # the genome's first most severe
            for u in locus.unique:
                # an allele without stutter SD scores 0.0, never above a limit >= 0: skip it then
                if u.genome == genome and (limit < 0 or u.stutter_sd > 0):
                    severity = u.stutter_severity(share, locus.total)
                    if worst is None or severity > worst[0]:
                        worst = (severity, u)
            if worst is not None and worst[0] > limit:
                flagged.append((worst[0], locus, worst[1]))
        room = len(values) - settings.min_informative_loci
        flagged.sort(key=lambda item: -item[0])
        for rank, (_, locus, allele) in enumerate(flagged):
            expected = allele.expected(share, locus.total)
            what = (
                f"{allele.genome} allele {allele.allele} in the stutter position of "
                f"{allele.stutter_parents}: stutter correction uncertain "
                f"(SD {allele.stutter_sd:.0f} vs {expected:.0f} expected)"
            )
            if rank < room:
                locus.excluded[genome] = what
                messages.append(f"{locus.row['marker']} ({what})")
    return messages


def _values(work: SampleWork, genome: Genome) -> list[float]:
    return [locus.values[genome] for locus in work.loci if genome in locus.values]


def _aggregate_share(work: SampleWork, genome: Genome, *, settings: StrSettings) -> _Share:
    candidates = [
        locus for locus in work.loci if genome in locus.values and genome not in locus.excluded
    ]
    values = [locus.values[genome] for locus in candidates]
    agg = aggregate_loci(
        values, mad_factor=settings.outlier_mad_factor, delta_pct=settings.outlier_delta_pct
    )
    outliers = []
    for locus, out in zip(candidates, agg.excluded, strict=True):
        if out:
            locus.excluded[genome] = "outlier"
            outliers.append(f"{locus.row['marker']} ({locus.values[genome]:.2f} %)")
    retained = [locus for locus, out in zip(candidates, agg.excluded, strict=True) if not out]
    ci_low, ci_high, quantile = t_interval(agg.mean_pct, agg.sd_pct, len(retained))
    own = [u for locus in retained for u in locus.unique if u.genome == genome]
    if own:
        detected = any(u.seen(settings.stutter_sigmas) for u in own)
    else:  # e.g. only 121 loci: the share shows as a deficit, not as its own peak
        detected = agg.mean_pct is not None and agg.mean_pct > settings.lod_pct
    return _Share(agg, ci_low, ci_high, quantile, detected, tuple(values), tuple(outliers))


def _share_reasons(
    label: str, share: _Share, n: int, *, settings: StrSettings
) -> tuple[list[str], bool]:
    """QC reasons of one genome's share, each prefixed with ``label``; and whether to review."""
    reasons, review = [], False
    if n < settings.min_informative_loci:
        review = True
        reasons.append(
            f"{label}only {n} informative locus/loci; at least {settings.min_informative_loci} needed"
        )
    sd = share.agg.sd_pct
    if sd is not None and sd > settings.spread_review_pct:
        review = True
        reasons.append(
            f"{label}inter-locus SD {sd:.2f} points exceeds {settings.spread_review_pct:g}"
        )
    if share.agg.spread_flag:
        review = True
        spread = max(share.values) - min(share.values)
        reasons.append(
            f"{label}the {len(share.values)} informative loci differ by {spread:.2f} points "
            f"(> {settings.outlier_delta_pct:g})"
        )
    if share.outliers:
        reasons.append(f"{label}outlier loci excluded: " + ", ".join(share.outliers))
    return reasons, review


def _missing_unique_alleles(
    work: SampleWork, shares: dict[Genome, _Share], *, settings: StrSettings
) -> list[str]:
    """Genome-unique alleles without signal where the genome's share predicts a clear peak.

    Only for genomes at or above ``missing_allele_min_pct``: an allele below
    ``missing_allele_fraction`` of its expected signal is missing. One such locus that the
    outlier rule already removed is a dropout; missing alleles at a retained locus or at two
    loci mean the sample does not fit the reference genotypes (methods.md 2.8 D, "DD example").
    """
    found = []
    for genome, share in shares.items():
        mean = share.agg.mean_pct
        if mean is None or mean < settings.missing_allele_min_pct:
            continue
        mine, retained = [], False
        for locus in work.loci:
            cutoff = settings.missing_allele_fraction
            gone = [
                u.allele
                for u in locus.unique
                if u.genome == genome and u.signal < cutoff * u.expected(mean, locus.total)
            ]
            if gone:
                mine.append(f"{genome} {locus.row['marker']} {'/'.join(gone)}")
                retained = retained or (genome in locus.values and genome not in locus.excluded)
        if retained or len(mine) >= 2:
            found.extend(mine)
    return found


def _unexpected_reasons(unexpected: Sequence[UnexpectedAllele]) -> tuple[list[str], bool]:
    """Contamination / swap finding from peaks in no genotype, and whether it needs review.

    A foreign genome shows alleles away from stutter positions or at several loci; one
    oversized stutter-position peak at a single locus is reported without review.
    """
    if not unexpected:
        return [], False
    loci = {u.marker for u in unexpected}
    if len(loci) >= 2 or any(not u.stutter_position for u in unexpected):
        listed = ", ".join(str(u) for u in unexpected)
        return [
            "possible contamination or sample swap: allele(s) in neither genotype: " + listed
        ], True
    listed = ", ".join(str(u) for u in unexpected)
    return [f"stutter-position peak larger than stutter usually is (single locus): {listed}"], False


def _genome_share(share: _Share, *, settings: StrSettings) -> GenomeShare:
    """A non-iNK genome's share; not detected = no value, CI (0, LoD) (never a bare 0)."""
    if share.agg.mean_pct is None:
        return GenomeShare(None)
    if not share.detected:
        return GenomeShare(None, 0.0, settings.lod_pct)
    return GenomeShare(share.agg.mean_pct, share.ci_low, share.ci_high)


def _describe_share(genome: Genome, share: _Share, n: int) -> str:
    if share.agg.mean_pct is None:
        return f"{genome} not separable at any locus"
    if not share.detected:
        return f"{genome} not detected ({n} loci)"
    retained = share.agg.n_informative - share.agg.n_excluded
    return f"{genome} {share.agg.mean_pct:.2f} % ({retained} of {n} loci)"


def _finish_rows(work: SampleWork) -> None:
    """Write each locus's inclusion and per-genome values and exclusions into its marker row."""
    columns = {Genome.RECIPIENT: "pct_recipient", Genome.HSCT_DONOR: "pct_hsct_donor"}
    for locus in work.loci:
        row, excluded = locus.row, locus.excluded
        row["included"] = Genome.INK in locus.values and Genome.INK not in excluded
        reason = row.get("exclusion_reason")
        if excluded:
            reasons = [reason] if reason else []
            for genome, why in excluded.items():
                reasons.append(why if genome is Genome.INK else f"{genome}: {why}")
            row["exclusion_reason"] = "; ".join(str(r) for r in reasons)
        else:
            row["exclusion_reason"] = str(reason) if reason else None
        if work.model is GenomeModel.THREE_GENOME:
            for genome, column in columns.items():
                row[column] = locus.values.get(genome)


def summarise(sample_id: str, work: SampleWork, *, settings: StrSettings) -> SampleResult:
    """Aggregate one sample's loci per genome and set status, CI and QC verdict (2.4-2.7)."""
    genomes = AGGREGATED[work.model]
    values_of = {g: _values(work, g) for g in genomes}  # locus values: fixed from here on
    n_ink = len(values_of[Genome.INK])
    if n_ink == 0:
        reason = (
            "no informative autosomal STR locus with signal: iNK and patient genotypes are "
            "identical, missing or unamplified at every locus"
            if work.model is GenomeModel.TWO_GENOME
            else "no autosomal STR locus with signal separates iNK from both other genomes"
        )
        return failed_result(
            sample_id, Method.STR, [reason], lod_pct=settings.lod_pct, loq_pct=settings.loq_pct
        )
    stutter_excluded = _exclude_unreliable_stutter(work, values_of, settings=settings)
    shares = {g: _aggregate_share(work, g, settings=settings) for g in genomes}
    reasons, review = list(work.notes), work.review
    for genome in genomes:
        label = "" if genome is Genome.INK else f"{genome}: "
        more, flag = _share_reasons(
            label, shares[genome], len(values_of[genome]), settings=settings
        )
        reasons.extend(more)
        review = review or flag
    foreign, review_foreign = _unexpected_reasons(work.unexpected)
    reasons.extend(foreign)
    review = review or review_foreign
    if work.model is GenomeModel.THREE_GENOME:
        missing = _missing_unique_alleles(work, shares, settings=settings)
        if missing:
            review = True
            reasons.append(
                "genome-unique alleles missing where the genome is otherwise well above LoD "
                "(the sample does not fit the three reference genotypes): " + ", ".join(missing)
            )
        reasons.append(
            "three genomes: "
            + "; ".join(_describe_share(g, shares[g], len(values_of[g])) for g in genomes[1:])
        )
    if stutter_excluded:
        reasons.append(
            "loci excluded because their stutter correction is unreliable at this level: "
            + ", ".join(stutter_excluded)
        )
    corrected = "stutter-corrected" if settings.stutter_correction else "not stutter-corrected"
    for prefix, items in (
        ("locus values outside 0-100 % clamped: ", work.clamped),
        ("fallback formula (biased by shared alleles) at ", work.fallback),
        (
            f"genome-unique allele(s) in a stutter position of another genome's allele ({corrected}): ",
            work.stutter_notes,
        ),
    ):
        if items:
            reasons.append(prefix + ", ".join(items))
    _finish_rows(work)
    ink = shares[Genome.INK]
    status = classify_result(
        ink.agg.mean_pct, detected=ink.detected, failed=False, loq_pct=settings.loq_pct
    )
    three = work.model is GenomeModel.THREE_GENOME
    return SampleResult(
        sample_id=sample_id,
        method=Method.STR,
        result_status=status,
        pct_ink_raw=ink.agg.mean_pct,
        ci_low_raw=ink.ci_low,
        ci_high_raw=ink.ci_high,
        lod_pct=settings.lod_pct,
        loq_pct=settings.loq_pct,
        qc_verdict=QcVerdict.REVIEW if review else QcVerdict.PASS,
        qc_reasons=tuple(reasons),
        n_informative=n_ink,
        ci_quantile=ink.quantile,
        genome_model=work.model,
        recipient=_genome_share(shares[Genome.RECIPIENT], settings=settings) if three else None,
        hsct_donor=_genome_share(shares[Genome.HSCT_DONOR], settings=settings) if three else None,
    )
