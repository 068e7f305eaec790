"""STR profiles: allele arithmetic, reference genotype calls and per-allele sample signals.

Alleles are strings (``9.3``, ``10.10``); a genotype is the set of called alleles at a locus, so
a homozygote is a single allele (Rchimerism ``locSD.R`` counts peaks the same way). Marker names
match case- and space-insensitively (formats.md 2). Rules cite methods.md sections 2.4-2.5.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import polars as pl

from chimera.settings import StrSettings

NUMERIC_ALLELE_PATTERN = r"^\d+(\.\d+)?$"
"""A reference allele is a numeric call (``9``, ``9.3``); ``OL``, ``X``, ``Y``, ``?`` are not
(methods.md 2.4). Rchimerism keeps any token with a non-letter character; we are stricter so
that ``?`` and other punctuation never become alleles."""

_NUMERIC_ALLELE = re.compile(NUMERIC_ALLELE_PATTERN)
_SIGNAL_COLUMN = {"area": "area_rfu", "height": "height_rfu"}
_PENTA = re.compile(r"^penta\s*[de]$")


def allele_sort_key(allele: str) -> tuple[int, int, str]:
    """Sort alleles by repeat number then microvariant suffix (``9`` < ``9.3`` < ``10`` < ``10.10``).

    Examples
    --------
    >>> sorted(["10.10", "9.3", "10", "10.2", "9"], key=allele_sort_key)
    ['9', '9.3', '10', '10.2', '10.10']
    """
    return _sort_key(allele)


@functools.lru_cache(maxsize=65536)
def _sort_key(allele: str) -> tuple[int, int, str]:
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
    return _shifted(allele, repeats)


@functools.lru_cache(maxsize=65536)
def _shifted(allele: str, repeats: int) -> str | None:
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
    return 5 if _PENTA.match(marker_key(marker)) else 4


def marker_key(name: str) -> str:
    """Case- and space-insensitive marker key (``Penta E`` = ``PENTA  E``; formats.md 2)."""
    return _marker_key(name)


@functools.lru_cache(maxsize=4096)
def _marker_key(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip()).casefold()


def signal_column(signal: str) -> str:
    """The ``StrPeaks`` column of a signal name (``area`` -> ``area_rfu``); unknown names raise."""
    try:
        return _SIGNAL_COLUMN[signal.strip().casefold()]
    except KeyError:
        msg = f"STR signal must be one of {sorted(_SIGNAL_COLUMN)}, got {signal!r}"
        raise ValueError(msg) from None


def _marked_reference_peaks(
    peaks: pl.LazyFrame, *, fraction: float, signal: str, by: Sequence[str] = ("sample_id",)
) -> pl.LazyFrame:
    """Mark reference peaks with ``keep`` and ``removal_reason`` (methods.md 2.4-2.5, locSD.R).

    Non-numeric calls go first; the fraction-of-max filter then runs within each sample (each
    profile of columns ``by``) and marker on the numeric calls only (filtering first would
    delete real calls next to a larger ``OL`` peak, e.g. donor D16S539 in the Rchimerism
    example).
    """
    column = signal_column(signal)
    allele = pl.col("allele").cast(pl.String).str.strip_chars()
    marker = pl.col("marker").cast(pl.String).str.strip_chars()
    numeric = marker.fill_null("").str.len_chars().gt(0) & allele.str.contains(
        NUMERIC_ALLELE_PATTERN
    ).fill_null(value=False)
    group = [*by, "_marker_key"]
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


def profile_genotypes(
    peaks: pl.DataFrame, by: Sequence[str], *, settings: StrSettings
) -> dict[ProfileKey, dict[str, set[str]]]:
    """:func:`call_genotype` of every profile (rows grouped by ``by``), by marker key, at once."""
    marked = _marked_reference_peaks(
        peaks.lazy(), fraction=settings.reference_filter_fraction, signal=settings.signal, by=by
    )
    calls = (
        marked.filter(pl.col("keep"))
        .group_by(*by, "_marker_key", "allele")
        .agg(pl.col("marker").first())
        .select(*by, "marker", "allele")
        .collect()
    )
    found: dict[ProfileKey, dict[str, set[str]]] = {}
    width = len(by)
    for row in calls.iter_rows():
        marker, allele = row[width:]
        found.setdefault(row[:width], {}).setdefault(marker_key(marker), set()).add(allele)
    return found


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
class Genotypes:
    """One genome's reference genotype, by marker key.

    ``alleles``: the called alleles; ``names``: display names; ``discordant``: markers where the
    genome's reference samples disagree.
    """

    alleles: dict[str, set[str]]
    names: dict[str, str]
    discordant: tuple[str, ...] = ()


_GENOTYPE_CACHE_LIMIT = 1024
_genotype_cache: dict[tuple[object, ...], Genotypes | None] = {}


def reference_genotypes(
    peaks: pl.DataFrame, sample_ids: Sequence[str], *, settings: StrSettings
) -> Genotypes | None:
    """Union genotype of a genome's reference samples; loci where they disagree are noted.

    Kept by content (the peak rows in order, the ids, the settings): the product's reference
    is the same for every patient of its bank, so a rebuild of many patients calls it once.
    """
    ids = tuple(sorted(set(sample_ids)))
    rows = peaks.hash_rows().to_numpy().tobytes() if peaks.height else b""
    key = (ids, tuple(peaks.columns), rows, repr(settings))
    if key not in _genotype_cache:
        if len(_genotype_cache) >= _GENOTYPE_CACHE_LIMIT:
            _genotype_cache.clear()
        _genotype_cache[key] = _reference_genotypes(peaks, ids, settings=settings)
    return _genotype_cache[key]


def _reference_genotypes(
    peaks: pl.DataFrame, sample_ids: Sequence[str], *, settings: StrSettings
) -> Genotypes | None:
    per_sample: list[dict[str, set[str]]] = []
    names: dict[str, str] = {}
    for sample_id in sorted(set(sample_ids)):
        own = peaks.filter(pl.col("sample_id") == sample_id)
        if own.height == 0:
            continue
        calls = call_genotype(own.lazy(), settings=settings).collect()
        alleles: dict[str, set[str]] = {}
        for marker, allele in calls.iter_rows():
            key = marker_key(marker)
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
    return Genotypes(union, names, tuple(discordant))


ProfileKey = tuple[object, ...]
"""The values of a profile's grouping columns (``sample_id`` and, per run, ``source_sha256``)."""

_ONE = "_profile"
"""Grouping column of a frame that is one profile."""


def signal_sums(peaks: pl.DataFrame, by: Sequence[str], *, signal: str) -> pl.LazyFrame:
    """Numeric-call signal (column ``signal_column(signal)``) per profile, marker and allele.

    Rows are grouped by ``by``, the ``marker`` as written (column ``_key``) and the stripped
    ``allele``; duplicate rows of one allele are summed.
    """
    column = signal_column(signal)
    allele = pl.col("allele").cast(pl.String).str.strip_chars()
    return (
        peaks.lazy()
        .with_columns(allele=allele, _key=pl.col("marker").cast(pl.String))
        .filter(
            pl.col("_key").is_not_null()
            & pl.col("allele").str.contains(NUMERIC_ALLELE_PATTERN).fill_null(value=False)
            & pl.col(column).is_not_null()
        )
        .group_by(*by, "_key", "allele")
        .agg(pl.col(column).cast(pl.Float64).sum())
    )


def profile_signals(
    peaks: pl.DataFrame, by: Sequence[str], *, signal: str
) -> dict[ProfileKey, dict[str, dict[str, float]]]:
    """Numeric-call signal per profile (rows grouped by ``by``), marker key and allele.

    Duplicate rows of one allele are summed (:func:`signal_sums`); one ``group_by`` serves
    every profile.
    """
    column = signal_column(signal)
    rows = signal_sums(peaks, by, signal=signal).collect()
    signals: dict[ProfileKey, dict[str, dict[str, float]]] = {}
    keys = zip(*(rows[c].to_list() for c in by), strict=True)
    markers, alleles, values = (rows[c].to_list() for c in ("_key", "allele", column))
    key_of = {name: marker_key(name) for name in set(markers)}  # a few markers, many rows
    for key, marker, allele_name, value in zip(keys, markers, alleles, values, strict=True):
        per_marker = signals.get(key)
        if per_marker is None:
            per_marker = signals[key] = {}
        per_allele = per_marker.get(key_of[marker])
        if per_allele is None:
            per_allele = per_marker[key_of[marker]] = {}
        per_allele[allele_name] = value  # a Float64 sum of non-null values: a float
    return signals


def sample_signals(peaks: pl.DataFrame, *, signal: str) -> dict[str, dict[str, float]]:
    """Numeric-call signal per marker key and allele, summed over duplicate rows."""
    found = profile_signals(peaks.with_columns(pl.lit(0).alias(_ONE)), [_ONE], signal=signal)
    return found.get((0,), {})


def profile_y_heights(
    peaks: pl.DataFrame | pl.LazyFrame, by: Sequence[str]
) -> dict[ProfileKey, tuple[float, float]]:
    """Summed heights of the Amelogenin X and Y peaks (RFU) of each profile."""
    amel = pl.col("marker").cast(pl.String).str.to_uppercase().str.starts_with("AMEL")
    allele = pl.col("allele").cast(pl.String).str.to_uppercase()
    sums = (
        peaks.lazy()
        .group_by(*by)
        .agg(
            x=pl.col("height_rfu").filter(amel & (allele == "X")).sum(),
            y=pl.col("height_rfu").filter(amel & (allele == "Y")).sum(),
        )
        .collect()
    )
    width = len(by)
    return {
        row[:width]: (float(row[width] or 0.0), float(row[width + 1] or 0.0))
        for row in sums.iter_rows()
    }


def amel_heights(peaks: pl.DataFrame) -> tuple[float, float]:
    """Summed heights of the Amelogenin X and Y peaks (RFU)."""
    found = profile_y_heights(peaks.with_columns(pl.lit(0).alias(_ONE)), [_ONE])
    return found.get((0,), (0.0, 0.0))


def y_is_unexpected(
    sample: tuple[float, float], reference_y: float | None, *, min_fraction: float = 0.05
) -> bool:
    """Whether AMEL heights ``sample`` (X, Y; RFU) show Y no reference genome carries.

    ``reference_y`` is the references' summed Y height (None: no reference peaks at all).
    Y above ``min_fraction`` of the sample's AMEL signal counts (methods.md 2.4).
    """
    if reference_y is None or reference_y > 0:
        return False
    x, y = sample
    return y > 0 and y >= min_fraction * (x + y)


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
    reference_y = amel_heights(references)[1] if references.height else None
    return y_is_unexpected(amel_heights(sample), reference_y, min_fraction=min_fraction)


def profile_broad_peaks(
    peaks: pl.DataFrame, by: Sequence[str], *, factor: float
) -> dict[ProfileKey, list[str]]:
    """Called peaks of each profile whose area/height ratio is ``factor`` times off its median.

    Only profiles with such a peak are keys; rows keep their order (:func:`broad_peaks`).
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
    median, ratio = pl.col("_median"), pl.col("ratio")
    odd = called.with_columns(_median=ratio.median().over(by), _n=pl.len().over(by)).filter(
        (pl.col("_n") >= 4) & ((ratio > factor * median) | (ratio < median / factor))
    )
    found: dict[ProfileKey, list[str]] = {}
    for row in odd.select(*by, "marker", "allele", "ratio", "_median").iter_rows():
        marker, allele, value, middle = row[len(by) :]
        found.setdefault(row[: len(by)], []).append(
            f"{marker} {allele} (area/height {value:.1f} vs {middle:.1f})"
        )
    return found


def broad_peaks(peaks: pl.DataFrame, *, factor: float) -> list[str]:
    """Called peaks whose area/height ratio is ``factor`` times off the sample's median ratio.

    A true allele's area/height ratio is about the same for every peak of a run; a broad
    artefact (dye blob, spike) has a much larger one. In the Rchimerism example the D7S820
    ``10`` peak has area/height 23 against about 6-7 for true alleles, and reads 28 % patient by
    area but 10 % by height (methods.md 2.8 QC lessons). Profiles with fewer than 4 called
    peaks are not judged.

    Examples
    --------
    >>> frame = pl.DataFrame({"marker": ["A", "A", "B", "B"], "allele": ["8", "10", "12", "13"],
    ...                       "area_rfu": [6000.0, 5700.0, 6500.0, 6200.0],
    ...                       "height_rfu": [950.0, 250.0, 1000.0, 1000.0]})
    >>> broad_peaks(frame, factor=2.5)
    ['A 10 (area/height 22.8 vs 6.4)']
    """
    found = profile_broad_peaks(peaks.with_columns(pl.lit(0).alias(_ONE)), [_ONE], factor=factor)
    return found.get((0,), [])


def join_alleles(alleles: Iterable[str]) -> str:
    """Alleles in repeat order joined by ``/`` (``9/9.3/10``), as in the marker rows."""
    return "/".join(sorted(alleles, key=allele_sort_key))
