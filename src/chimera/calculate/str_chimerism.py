"""STR (GeneMapper peak) chimerism: genotype calls, per-locus % iNK and aggregation.

Every formula cites methods.md section 2. D = the iNK product genome, R = the patient. Alleles
are strings (``9.3``, ``10.10``); a genotype is the set of called alleles at a locus, so a
homozygote is a single allele (Rchimerism ``locSD.R`` counts peaks the same way). Percentages
are % iNK on the 0-100 scale; per-locus fractions f are reported as ``pct = 100 * f``.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from chimera.calculate.limits import (
    Method,
    MethodOutput,
    QcVerdict,
    SampleResult,
    clamp_pct,
    classify_result,
    failed_result,
    markers_frame,
    results_frame,
)
from chimera.calculate.stats import t_quantile
from chimera.settings import StrSettings

NUMERIC_ALLELE_PATTERN = r"^\d+(\.\d+)?$"
"""A reference allele is a numeric call (``9``, ``9.3``); ``OL``, ``X``, ``Y``, ``?`` are not
(methods.md 2.4). Rchimerism keeps any token with a non-letter character; we are stricter so
that ``?`` and other punctuation never become alleles."""

_NUMERIC_ALLELE = re.compile(NUMERIC_ALLELE_PATTERN)
_SIGNAL_COLUMN = {"area": "area_rfu", "height": "height_rfu"}
_PENTA = re.compile(r"^penta\s*[de]$")


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


@dataclass(frozen=True)
class LocusCall:
    """One locus of one sample: sharing code and the % iNK from its formula.

    ``signal_ink`` is the (stutter-corrected) signal on iNK-only alleles; ``signal_total`` the
    denominator of the formula used. ``pct_ink_raw`` is None when not informative or when the
    denominator is zero; it is not clamped (rows 6-7 can leave 0-100 under imbalance).
    """

    sharing: str
    pct_ink_raw: float | None
    signal_ink: float
    signal_total: float


@dataclass(frozen=True)
class LocusAggregate:
    """Summary of per-locus % iNK values (methods.md 2.7); ``excluded`` follows input order."""

    mean_pct: float | None
    sd_pct: float | None
    cv: float | None
    median_pct: float | None
    n_informative: int
    n_excluded: int
    excluded: tuple[bool, ...] = field(default_factory=tuple)
    spread_flag: bool = False
    """n <= 2 only: the loci differ by more than the outlier delta."""


def allele_sort_key(allele: str) -> tuple[int, int, str]:
    """Sort alleles by repeat number then microvariant suffix (``9`` < ``9.3`` < ``10`` < ``10.10``).

    Examples
    --------
    >>> sorted(["10.10", "9.3", "10", "10.2", "9"], key=allele_sort_key)
    ['9', '9.3', '10', '10.2', '10.10']
    """
    if _NUMERIC_ALLELE.match(allele):
        whole, _, suffix = allele.partition(".")
        return int(whole), int(suffix) if suffix else -1, ""
    return 1 << 30, 0, allele


def shift_allele(allele: str, repeats: int) -> str | None:
    """Return the allele ``repeats`` whole repeats away, keeping a microvariant suffix.

    In allele-number terms one repeat is 1 whatever the repeat length in bp (4 bp for
    tetranucleotide loci, 5 bp for Penta D/E): ``9.3`` -> ``8.3`` (methods.md 2.4).

    Examples
    --------
    >>> shift_allele("9.3", -1), shift_allele("10.10", 1), shift_allele("OL", 1)
    ('8.3', '11.10', None)
    """
    if not _NUMERIC_ALLELE.match(allele):
        return None
    whole, dot, suffix = allele.partition(".")
    shifted = int(whole) + repeats
    if shifted < 0:
        return None
    return f"{shifted}{dot}{suffix}"


def repeat_unit_bp(marker: str) -> int:
    """Repeat length in bp: 5 for Penta D/E, else 4 (tetranucleotide; methods.md 2.4).

    Examples
    --------
    >>> repeat_unit_bp("Penta E"), repeat_unit_bp("D3S1358")
    (5, 4)
    """
    return 5 if _PENTA.match(_marker_key(marker)) else 4


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
    d, r = set(donor), set(recipient)
    code = classify_sharing(d, r)
    d_only, r_only, shared = d - r, r - d, d & r

    def s(alleles: Iterable[str]) -> float:
        return float(sum(signals.get(a, 0.0) for a in alleles))

    signal_ink = s(d_only)
    if code == Sharing.IDENTICAL:
        return LocusCall(code, None, signal_ink, s(d | r))
    if code in (Sharing.DISTINCT, Sharing.FALLBACK):
        # Rows 1-4: f = sum s(D-only) / (sum s(D-only) + sum s(R-only)); row 9 (fallback):
        # f = sum s(D-only) / sum s(all expected peaks) -- biased when an allele is shared.
        total = s(d | r)
        return LocusCall(code, _ratio(signal_ink, total), signal_ink, total)
    if code == Sharing.SHARED_221:
        # Row 5 (D a/b vs R a/c): f = s_b / (s_b + s_c); the shared allele a is ignored.
        total = signal_ink + s(r_only)
        return LocusCall(code, _ratio(signal_ink, total), signal_ink, total)
    if code == Sharing.SHARED_211:
        # Row 6 (D a/b vs R a/a): f = 2 * s_b / (s_a + s_b).
        total = signal_ink + s(shared)
        return LocusCall(code, _ratio(2.0 * signal_ink, total), signal_ink, total)
    # Row 7 (D a/a vs R a/c): f = 1 - 2 * s_c / (s_a + s_c).
    recipient_only = s(r_only)
    total = recipient_only + s(shared)
    ratio = _ratio(2.0 * recipient_only, total)
    return LocusCall(code, None if ratio is None else 100.0 - ratio, signal_ink, total)


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator <= 0 else 100.0 * numerator / denominator


def stutter_corrected(signals: Mapping[str, float], *, stutter_ratio: float) -> dict[str, float]:
    """Subtract back stutter: s_corr(x) = max(0, s_obs(x) - SR * s_obs(x + 1 repeat)).

    Additive model of methods.md 2.6 (NIJ 2019); SR is the locus back-stutter ratio.

    Examples
    --------
    >>> stutter_corrected({"9": 100.0, "10": 1000.0, "11": 50.0}, stutter_ratio=0.08)
    {'9': 20.0, '10': 996.0, '11': 50.0}
    """
    if stutter_ratio <= 0:
        return dict(signals)
    corrected = {}
    for allele, value in signals.items():
        parent = shift_allele(allele, 1)
        above = signals.get(parent, 0.0) if parent is not None else 0.0
        corrected[allele] = max(0.0, value - stutter_ratio * above)
    return corrected


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


def _describe(values: Sequence[float], excluded: Sequence[bool]) -> tuple[float | None, ...]:
    kept = [v for v, out in zip(values, excluded, strict=True) if not out]
    mean = statistics.fmean(kept) if kept else None
    sd = statistics.stdev(kept) if len(kept) >= 2 else None
    cv = sd / mean if sd is not None and mean else None
    return mean, sd, cv


def aggregate_loci(
    pct_values: Sequence[float], *, mad_factor: float, delta_pct: float
) -> LocusAggregate:
    """Robust aggregation of per-locus % iNK (methods.md 2.7, recommended rule).

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
    sd_all = statistics.stdev(values) if n >= 2 else 0.0
    excluded = tuple(abs(v - mean_all) > 2.0 * sd_all for v in values)
    if n < 2:
        excluded = (False,)
    mean, sd, cv = _describe(values, excluded)
    return LocusAggregate(mean, sd, cv, statistics.median(values), n, sum(excluded), excluded)


def _marker_key(name: str) -> str:
    """Case- and space-insensitive marker key (``Penta E`` = ``PENTA  E``; formats.md 2)."""
    return re.sub(r"\s+", " ", name.strip()).casefold()


def _signal_column(signal: str) -> str:
    try:
        return _SIGNAL_COLUMN[signal.strip().casefold()]
    except KeyError:
        msg = f"STR signal must be one of {sorted(_SIGNAL_COLUMN)}, got {signal!r}"
        raise ValueError(msg) from None


def _marked_reference_peaks(peaks: pl.LazyFrame, *, fraction: float, signal: str) -> pl.LazyFrame:
    """Mark reference peaks with ``keep`` and ``removal_reason`` (methods.md 2.4-2.5, locSD.R).

    Non-numeric calls go first; the fraction-of-max filter then runs within each sample and
    marker on the numeric calls only (filtering first would delete real calls next to a
    larger ``OL`` peak, e.g. donor D16S539 in the Rchimerism example).
    """
    column = _signal_column(signal)
    allele = pl.col("allele").cast(pl.String).str.strip_chars()
    marker = pl.col("marker").cast(pl.String).str.strip_chars()
    numeric = marker.fill_null("").str.len_chars().gt(0) & allele.str.contains(
        NUMERIC_ALLELE_PATTERN
    ).fill_null(value=False)
    group = ["sample_id", "_marker_key"]
    marked = peaks.with_columns(
        allele=allele,
        marker=marker,
        _marker_key=marker.str.replace_all(r"\s+", " ").str.to_lowercase(),
        _numeric=numeric,
        _signal=pl.col(column).cast(pl.Float64),
    ).with_columns(
        _marker_max=pl.when(pl.col("_numeric")).then(pl.col("_signal")).max().over(group)
    )
    above = pl.col("_signal") > fraction * pl.col("_marker_max")
    keep = pl.col("_numeric") & pl.col("_signal").is_not_null() & above.fill_null(value=False)
    reason = (
        pl.when(pl.col("marker").is_null() | (pl.col("marker") == ""))
        .then(pl.lit("outside every marker bin"))
        .when(~pl.col("_numeric"))
        .then(pl.lit("non-numeric call"))
        .when(pl.col("_signal").is_null())
        .then(pl.lit(f"no {signal} value"))
        .when(~keep)
        .then(pl.lit(f"{signal} not above {fraction:g} x the marker's largest called peak"))
        .otherwise(None)
    )
    return marked.with_columns(keep=keep, removal_reason=reason)


def call_genotype(
    peaks: pl.LazyFrame, *, settings: StrSettings, filter_signal: str | None = None
) -> pl.LazyFrame:
    """Call a reference genotype: the (marker, allele) pairs kept by the reference filter.

    ``peaks`` has the ``StrPeaks`` columns for one or more reference samples of one genome;
    the union of their calls is returned, sorted. Non-numeric calls are dropped first, then
    peaks whose signal is not above ``settings.reference_filter_fraction`` x the marker's
    largest remaining peak (methods.md 2.5). The filter metric is ``settings.signal`` unless
    ``filter_signal`` overrides it (the Rchimerism height variant filters on area).
    """
    marked = _marked_reference_peaks(
        peaks,
        fraction=settings.reference_filter_fraction,
        signal=filter_signal or settings.signal,
    )
    return (
        marked.filter(pl.col("keep"))
        .group_by("_marker_key", "allele")
        .agg(pl.col("marker").first())
        .select("marker", "allele")
        .sort("marker", "allele")
    )


def filtered_reference_peaks(
    peaks: pl.LazyFrame, *, settings: StrSettings, filter_signal: str | None = None
) -> pl.LazyFrame:
    """Return the reference peaks that :func:`call_genotype` removes, with ``removal_reason``.

    Peaks outside every bin are left out: they never were allele candidates.
    """
    marked = _marked_reference_peaks(
        peaks,
        fraction=settings.reference_filter_fraction,
        signal=filter_signal or settings.signal,
    )
    columns = [c for c in marked.collect_schema().names() if not c.startswith("_")]
    return marked.filter(
        ~pl.col("keep") & (pl.col("removal_reason") != "outside every marker bin")
    ).select([c for c in columns if c != "keep"])


@dataclass(frozen=True)
class _Genotypes:
    alleles: dict[str, set[str]]
    names: dict[str, str]
    discordant: tuple[str, ...] = ()


def _genotypes(
    peaks: pl.DataFrame, sample_ids: Sequence[str], *, settings: StrSettings
) -> _Genotypes | None:
    """Union genotype of a genome's reference samples; loci where they disagree are noted."""
    per_sample: list[dict[str, set[str]]] = []
    names: dict[str, str] = {}
    for sample_id in sorted(set(sample_ids)):
        own = peaks.filter(pl.col("sample_id") == sample_id)
        if own.height == 0:
            continue
        calls = call_genotype(own.lazy(), settings=settings).collect()
        alleles: dict[str, set[str]] = {}
        for marker, allele in calls.iter_rows():
            key = _marker_key(marker)
            names.setdefault(key, marker)
            alleles.setdefault(key, set()).add(allele)
        per_sample.append(alleles)
    if not per_sample:
        return None
    union: dict[str, set[str]] = {}
    for alleles in per_sample:
        for key, values in alleles.items():
            union.setdefault(key, set()).update(values)
    discordant = sorted(
        names[key] for key in union if any(s.get(key, set()) != union[key] for s in per_sample)
    )
    return _Genotypes(union, names, tuple(discordant))


def _sample_signals(peaks: pl.DataFrame, *, signal: str) -> dict[str, dict[str, float]]:
    """Numeric-call signal per marker key and allele, summed over duplicate rows."""
    column = _signal_column(signal)
    allele = pl.col("allele").cast(pl.String).str.strip_chars()
    rows = (
        peaks.lazy()
        .with_columns(allele=allele, _key=pl.col("marker").cast(pl.String))
        .filter(
            pl.col("_key").is_not_null()
            & pl.col("allele").str.contains(NUMERIC_ALLELE_PATTERN).fill_null(value=False)
            & pl.col(column).is_not_null()
        )
        .group_by("_key", "allele")
        .agg(pl.col(column).cast(pl.Float64).sum())
        .collect()
    )
    signals: dict[str, dict[str, float]] = {}
    for marker, allele_name, value in rows.iter_rows():
        signals.setdefault(_marker_key(marker), {})[allele_name] = float(value)
    return signals


def _y_height(peaks: pl.DataFrame) -> tuple[float, float]:
    """Summed heights of the Amelogenin X and Y peaks (RFU)."""
    amel = peaks.filter(pl.col("marker").cast(pl.String).str.to_uppercase().str.starts_with("AMEL"))
    allele = pl.col("allele").cast(pl.String).str.to_uppercase()
    x = amel.filter(allele == "X")["height_rfu"].sum()
    y = amel.filter(allele == "Y")["height_rfu"].sum()
    return float(x or 0.0), float(y or 0.0)


def unexpected_y(
    sample: pl.DataFrame, references: pl.DataFrame, *, min_fraction: float = 0.05
) -> bool:
    """Whether a sample shows an Amelogenin Y peak that neither reference genome carries.

    AMEL is a sex check, never part of the iNK mean (methods.md 2.4): a female product given to a
    female patient cannot produce Y signal, so Y above ``min_fraction`` of the AMEL signal points
    to a swapped or contaminated sample.

    Examples
    --------
    >>> refs = pl.DataFrame({"marker": ["AMEL"], "allele": ["X"], "height_rfu": [2000.0]})
    >>> mixed = pl.DataFrame({"marker": ["AMEL", "AMEL"], "allele": ["X", "Y"], "height_rfu": [1800.0, 600.0]})
    >>> unexpected_y(mixed, refs), unexpected_y(refs, refs)
    (True, False)
    """
    if references.height == 0:
        return False
    _, reference_y = _y_height(references)
    if reference_y > 0:
        return False
    x, y = _y_height(sample)
    return y > 0 and y >= min_fraction * (x + y)


def broad_peaks(peaks: pl.DataFrame, *, factor: float) -> list[str]:
    """Called peaks whose area/height ratio is ``factor`` times off the sample's median ratio.

    A true allele's area/height ratio is about the same for every peak of a run; a broad
    artefact (dye blob, spike) has a much larger one. In the Rchimerism example the D7S820
    ``10`` peak has area/height 23 against about 6-7 for true alleles, and reads 28 % patient by
    area but 10 % by height (methods.md 2.8 QC lessons).

    Examples
    --------
    >>> frame = pl.DataFrame({"marker": ["A", "A", "B", "B"], "allele": ["8", "10", "12", "13"],
    ...                       "area_rfu": [6000.0, 5700.0, 6500.0, 6200.0],
    ...                       "height_rfu": [950.0, 250.0, 1000.0, 1000.0]})
    >>> broad_peaks(frame, factor=2.5)
    ['A 10 (area/height 22.8 vs 6.4)']
    """
    called = peaks.filter(
        pl.col("marker").is_not_null()
        & pl.col("allele")
        .cast(pl.String)
        .str.contains(NUMERIC_ALLELE_PATTERN)
        .fill_null(value=False)
        & (pl.col("height_rfu") > 0)
        & pl.col("area_rfu").is_not_null()
    ).with_columns(ratio=pl.col("area_rfu") / pl.col("height_rfu"))
    if called.height < 4:
        return []
    median = float(called["ratio"].median())  # type: ignore[arg-type]
    odd = called.filter((pl.col("ratio") > factor * median) | (pl.col("ratio") < median / factor))
    return [
        f"{r['marker']} {r['allele']} (area/height {r['ratio']:.1f} vs {median:.1f})"
        for r in odd.iter_rows(named=True)
    ]


def _join(alleles: Iterable[str]) -> str:
    return "/".join(sorted(alleles, key=allele_sort_key))


@dataclass
class _SampleWork:
    """Per-sample accumulators while loci are evaluated."""

    marker_rows: list[dict[str, object]] = field(default_factory=list)
    candidates: list[tuple[int, float]] = field(default_factory=list)
    """(index into ``marker_rows``, unclamped locus % iNK) of each aggregated locus."""
    reasons: list[str] = field(default_factory=list)
    review: bool = False
    unexpected: list[str] = field(default_factory=list)
    stutter_notes: list[str] = field(default_factory=list)
    clamped: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    ink_signal_seen: bool = False
    has_ink_only_allele: bool = False


def _evaluate_loci(
    donor: _Genotypes,
    recipient: _Genotypes,
    signals: Mapping[str, Mapping[str, float]],
    *,
    sample_id: str,
    settings: StrSettings,
) -> _SampleWork:
    work = _SampleWork()
    sex = {_marker_key(m) for m in settings.sex_markers}
    ratios = {_marker_key(k): float(v) for k, v in settings.stutter_ratios.items()}
    names = {**recipient.names, **donor.names}
    loci = sorted(set(donor.alleles) | set(recipient.alleles), key=lambda k: names[k])
    for key in loci:
        name = names[key]
        d = donor.alleles.get(key, set())
        r = recipient.alleles.get(key, set())
        row: dict[str, object] = {
            "sample_id": sample_id,
            "method": Method.STR.value,
            "marker": name,
            "donor_alleles": _join(d) or None,
            "recipient_alleles": _join(r) or None,
            "included": False,
        }
        work.marker_rows.append(row)
        if not d or not r:
            missing = "iNK product" if not d else "patient baseline"
            row["exclusion_reason"] = f"no {missing} reference call"
            continue
        observed = dict(signals.get(key, {}))
        ratio = ratios.get(key, settings.default_stutter_ratio)
        corrected = stutter_corrected(observed, stutter_ratio=ratio)
        call = locus_pct_ink(d, r, corrected)
        pct, was_clamped = clamp_pct(call.pct_ink_raw)
        row.update(
            sharing=call.sharing,
            signal_ink=call.signal_ink,
            signal_total=call.signal_total,
            pct_ink=pct,
        )
        _check_unexpected(name, d | r, corrected, work=work, settings=settings)
        if call.sharing == Sharing.IDENTICAL:
            row["exclusion_reason"] = "not informative"
            continue
        if key in sex:
            row["exclusion_reason"] = "sex marker"
            continue
        if call.pct_ink_raw is None:
            row["exclusion_reason"] = "no sample signal at the expected alleles"
            continue
        row["included"] = True
        work.candidates.append((len(work.marker_rows) - 1, call.pct_ink_raw))
        if d - r:
            work.has_ink_only_allele = True
            work.ink_signal_seen = work.ink_signal_seen or call.signal_ink > 0
        if was_clamped:
            work.clamped.append(f"{name} {call.pct_ink_raw:.2f} %")
            outside = max(call.pct_ink_raw - 100.0, -call.pct_ink_raw)
            work.review = work.review or outside > settings.outlier_delta_pct
        if call.sharing == Sharing.FALLBACK:
            work.fallback.append(name)
        near = stutter_position_alleles(d, r)
        if near:
            work.stutter_notes.append(f"{name} ({', '.join(near)})")
    return work


def _check_unexpected(
    name: str,
    expected: set[str],
    corrected: Mapping[str, float],
    *,
    work: _SampleWork,
    settings: StrSettings,
) -> None:
    total = sum(corrected.values())
    if total <= 0:
        return
    for allele in sorted(set(corrected) - expected, key=allele_sort_key):
        if _is_stutter(allele, expected, corrected, settings=settings):
            continue
        share = corrected[allele] / total
        if share > settings.min_unexpected_allele_fraction:
            work.unexpected.append(f"{name} {allele} ({100 * share:.0f} % of locus signal)")


def _is_stutter(
    allele: str, expected: set[str], signals: Mapping[str, float], *, settings: StrSettings
) -> bool:
    """Whether an unexpected peak is stutter of an expected allele (methods.md 2.6).

    It must sit one repeat below (back stutter, n-1) or above (forward, n+1) an expected allele
    with at most ``max_stutter_ratio`` of its signal. GeneMapper labels stutter peaks as alleles when its stutter filter is off, so such a peak is
    an artefact, not a third genome.
    """
    value = signals.get(allele, 0.0)
    for repeats in (1, -1):
        parent = shift_allele(allele, repeats)
        if parent in expected and value <= settings.max_stutter_ratio * signals.get(parent, 0.0):
            return True
    return False


def _failed(sample_id: str, reason: str, *, settings: StrSettings) -> SampleResult:
    return failed_result(
        sample_id, Method.STR, [reason], lod_pct=settings.lod_pct, loq_pct=settings.loq_pct
    )


def _summarise(
    sample_id: str, work: _SampleWork, *, settings: StrSettings, notes: Sequence[str]
) -> SampleResult:
    """Aggregate the candidate loci of one sample and set status, CI and QC verdict."""
    values = [raw for _, raw in work.candidates]
    n = len(values)
    if n == 0:
        reason = (
            "no informative autosomal STR locus with signal: iNK and patient genotypes are "
            "identical, missing or unamplified at every locus"
        )
        return _failed(sample_id, reason, settings=settings)
    agg = aggregate_loci(
        values, mad_factor=settings.outlier_mad_factor, delta_pct=settings.outlier_delta_pct
    )
    reasons = list(notes)
    review = work.review
    excluded_names = []
    for (index, raw), out in zip(work.candidates, agg.excluded, strict=True):
        if out:
            row = work.marker_rows[index]
            row.update(included=False, exclusion_reason="outlier")
            excluded_names.append(f"{row['marker']} ({raw:.2f} %)")
    if n < settings.min_informative_loci:
        review = True
        reasons.append(
            f"only {n} informative locus/loci; at least {settings.min_informative_loci} needed"
        )
    if work.unexpected:
        review = True
        reasons.append(
            "possible contamination or sample swap: allele(s) in neither genotype: "
            + ", ".join(work.unexpected)
        )
    if agg.sd_pct is not None and agg.sd_pct > settings.spread_review_pct:
        review = True
        reasons.append(
            f"inter-locus SD {agg.sd_pct:.2f} points exceeds {settings.spread_review_pct:g}"
        )
    if agg.spread_flag:
        review = True
        reasons.append(
            f"the {n} informative loci differ by {max(values) - min(values):.2f} points "
            f"(> {settings.outlier_delta_pct:g})"
        )
    if excluded_names:
        reasons.append("outlier loci excluded: " + ", ".join(excluded_names))
    if work.clamped:
        reasons.append("locus values outside 0-100 % clamped: " + ", ".join(work.clamped))
    if work.fallback:
        reasons.append("fallback formula (biased by shared alleles) at " + ", ".join(work.fallback))
    if work.stutter_notes:
        reasons.append(
            "iNK-only allele at a stutter position of a patient allele: "
            + ", ".join(work.stutter_notes)
        )
    mean = agg.mean_pct
    ci_low = ci_high = None
    n_retained = n - agg.n_excluded
    if mean is not None and agg.sd_pct is not None and n_retained >= 2:
        # 95 % CI of the mean over retained loci: mean +/- t(0.975, n-1) * SD / sqrt(n).
        half = t_quantile(0.975, n_retained - 1) * agg.sd_pct / math.sqrt(n_retained)
        ci_low, ci_high = mean - half, mean + half
    if work.has_ink_only_allele:
        detected = work.ink_signal_seen
    else:  # only 121 loci: the iNK share shows as a deficit, not as its own peak
        detected = mean is not None and mean > settings.lod_pct
    status = classify_result(mean, detected=detected, failed=False, loq_pct=settings.loq_pct)
    return SampleResult(
        sample_id=sample_id,
        method=Method.STR,
        result_status=status,
        pct_ink_raw=mean,
        ci_low_raw=ci_low,
        ci_high_raw=ci_high,
        lod_pct=settings.lod_pct,
        loq_pct=settings.loq_pct,
        qc_verdict=QcVerdict.REVIEW if review else QcVerdict.PASS,
        qc_reasons=tuple(reasons),
        n_informative=n,
    )


def compute_str_chimerism(
    peaks: pl.LazyFrame, samples: pl.LazyFrame, *, settings: StrSettings
) -> MethodOutput:
    """Compute STR % iNK for every post-dose sample in ``peaks`` (methods.md 2.2-2.7).

    Parameters
    ----------
    peaks
        ``StrPeaks`` columns (plus ``source_sha256``) for the post-dose samples, the patients'
        ``recipient_baseline`` samples and the products' ``donor_reference`` samples.
    samples
        ``sample_id, patient_id, role, product_lot``; a ``donor_reference`` row's
        ``patient_id`` and ``product_lot`` are the lot, a patient row's ``product_lot`` the
        lot the patient received.
    settings
        STR options (signal, reference filter, stutter ratios, outlier rule, LoD/LoQ).

    Returns
    -------
    MethodOutput
        One result per post-dose sample (mean of retained loci, 95 % t-interval over loci)
        and one marker row per locus typed in either reference.
    """
    _signal_column(settings.signal)
    peak_frame = peaks.collect()
    sample_frame = samples.select("sample_id", "patient_id", "role", "product_lot").collect()
    by_sample = {
        key[0]: frame
        for key, frame in peak_frame.partition_by("sample_id", as_dict=True).items()
        if key[0] is not None
    }
    present = set(by_sample)
    refs: dict[tuple[str, str], _Genotypes | None] = {}
    results: list[SampleResult] = []
    marker_rows: list[dict[str, object]] = []
    post = (
        sample_frame.filter(
            (pl.col("role") == "post_dose") & pl.col("sample_id").is_in(sorted(present))
        )
        .unique("sample_id", keep="first", maintain_order=True)
        .sort("sample_id")
    )
    for sample_id, patient_id, _, lot in post.iter_rows():
        donor = _reference(refs, "donor", lot, sample_frame, peak_frame, settings=settings)
        recipient = _reference(
            refs, "recipient", patient_id, sample_frame, peak_frame, settings=settings
        )
        if donor is None or recipient is None:
            if donor is None and lot is None:
                reason = (
                    f"no iNK product lot recorded for patient {patient_id!r}; record the lot "
                    "so the iNK reference profile can be found"
                )
            else:
                missing = (
                    f"iNK product lot {lot!r}"
                    if donor is None
                    else f"patient {patient_id!r} baseline (pre-dose)"
                )
                reason = (
                    f"no {missing} STR reference profile; type the missing reference before "
                    "this sample can be calculated"
                )
            results.append(_failed(sample_id, reason, settings=settings))
            continue
        signals = _sample_signals(by_sample[sample_id], signal=settings.signal)
        work = _evaluate_loci(donor, recipient, signals, sample_id=sample_id, settings=settings)
        notes = []
        reference_ids = sample_frame.filter(
            ((pl.col("role") == "donor_reference") & (pl.col("patient_id") == lot))
            | ((pl.col("role") == "recipient_baseline") & (pl.col("patient_id") == patient_id))
        )["sample_id"]
        if unexpected_y(
            by_sample[sample_id],
            peak_frame.filter(pl.col("sample_id").is_in(reference_ids.implode())),
        ):
            work.review = True
            notes.append(
                "Amelogenin Y signal although neither the iNK product nor the patient baseline "
                "has a Y allele: possible sample swap or contamination"
            )
        broad = broad_peaks(by_sample[sample_id], factor=settings.area_height_ratio_factor)
        if broad:
            work.review = True
            notes.append(
                "peak shape unlike the other alleles (area/height vs the sample's median; "
                "broad artefact or dye blob?): " + ", ".join(broad)
            )
        if donor.discordant:
            work.review = True
            notes.append("iNK reference samples disagree at " + ", ".join(donor.discordant))
        if recipient.discordant:
            work.review = True
            notes.append("patient baseline samples disagree at " + ", ".join(recipient.discordant))
        results.append(_summarise(sample_id, work, settings=settings, notes=notes))
        marker_rows.extend(work.marker_rows)
    return MethodOutput(results=results_frame(results), markers=markers_frame(marker_rows))


def _reference(
    cache: dict[tuple[str, str], _Genotypes | None],
    genome: str,
    owner: str | None,
    sample_frame: pl.DataFrame,
    peak_frame: pl.DataFrame,
    *,
    settings: StrSettings,
) -> _Genotypes | None:
    if owner is None:
        return None
    key = (genome, owner)
    if key not in cache:
        if genome == "donor":
            rows = sample_frame.filter(
                (pl.col("role") == "donor_reference")
                & ((pl.col("product_lot") == owner) | (pl.col("patient_id") == owner))
            )
        else:
            rows = sample_frame.filter(
                (pl.col("role") == "recipient_baseline") & (pl.col("patient_id") == owner)
            )
        ids = rows["sample_id"].to_list()
        cache[key] = _genotypes(
            peak_frame.filter(pl.col("sample_id").is_in(ids)), ids, settings=settings
        )
    return cache[key]
