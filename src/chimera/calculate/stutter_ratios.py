"""STR stutter ratios per kit and locus, measured on the lab's single-source profiles.

Ratios come, in order of preference, from the lab's own single-source profiles of the same
panel (median of stutter / parent per locus; methods.md 2.6), the configured
``StrSettings.stutter_ratios`` / ``default_stutter_ratio``, and the published average for the
repeat length. :func:`estimate_stutter_ratios` returns the table
(``schemas.stutter.StutterRatioEstimates``, warehouse table ``stutter_ratios``);
:class:`StutterLookup` serves one sample's loci from it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection
from dataclasses import dataclass

import polars as pl

from chimera.calculate.str_profiles import (
    marker_key,
    profile_genotypes,
    profile_signals,
    repeat_unit_bp,
    shift_allele,
)
from chimera.calculate.stutter import NO_STUTTER, LocusStutter
from chimera.settings import StrSettings
from schemas.base import polars_schema
from schemas.stutter import StutterRatioEstimates
from schemas.vocab import Role, StutterDirection, StutterSource

PUBLISHED_BACK_STUTTER = {4: 0.0732, 5: 0.0215}
"""Published mean back-stutter ratio by repeat length in bp: 7.32 % for tetranucleotide STRs
(PowerPlex ESX 17) and 2.15 % for pentanucleotide STRs (Forensic Sci Int Genet 2017, PMID
28445836); Identifiler locus means span 3.12-10.71 % (Ann Clin Lab Sci 2008;38:264,
methods.md 2.6). No per-locus manufacturer table was available, so the class mean is used."""

PUBLISHED_REFERENCE = (
    "published mean back stutter for the repeat length (tetranucleotide 7.32 %, "
    "pentanucleotide 2.15 %; Forensic Sci Int Genet 2017, PMID 28445836)"
)

FORWARD_REFERENCE = (
    "median of the panel's n+1 observations over all loci (forward stutter does not depend on "
    "the marker; Bright et al., Electrophoresis 2014, NCJ 249310)"
)

SINGLE_SOURCE_ROLES = (
    Role.DONOR_REFERENCE,
    Role.CALIBRATOR,
    Role.RECIPIENT_GERMLINE,
    Role.HSCT_DONOR,
)
"""Roles whose samples carry one genome; a two-genome patient's ``recipient_baseline`` too."""

_PANEL_OVERLAP = 0.8
"""Profiles whose marker sets overlap this much (Jaccard) belong to one kit/panel."""
_SE_MEDIAN = math.sqrt(math.pi / 2)
"""SE of a median = sqrt(pi/2) * SD / sqrt(n) for normal observations."""

STUTTER_COLUMNS = polars_schema(StutterRatioEstimates)


def single_source_samples(samples: pl.DataFrame) -> pl.DataFrame:
    """Rows of ``samples`` whose DNA has one genome (stutter is measured on these).

    Product references and calibrators, germline and HSCT-donor references, and the baselines
    of patients without a prior transplant donor (a three-genome baseline is a mixture).
    """
    three_genome = samples.filter(pl.col("role") == Role.HSCT_DONOR)["patient_id"].unique()
    single = pl.col("role").is_in(list(SINGLE_SOURCE_ROLES)) | (
        (pl.col("role") == Role.RECIPIENT_BASELINE)
        & ~pl.col("patient_id").is_in(three_genome.implode())
    )
    return samples.filter(single)


@dataclass(frozen=True)
class _Observation:
    panel: int
    key: str
    direction: StutterDirection
    ratio: float
    sample_id: str


def _profile_observations(
    genotype: dict[str, set[str]],
    signals: dict[str, dict[str, float]],
    *,
    settings: StrSettings,
) -> list[tuple[str, StutterDirection, float]]:
    """(marker key, direction, stutter / parent) at each clean stutter position of one profile.

    ``genotype`` is the profile's reference-filtered call and ``signals`` its allele signals,
    both by marker key. A position counts only when it is not an allele itself and no other
    allele also stutters into it (n-1 of one allele and n+1 of another); absent stutter peaks
    give no observation (they may sit below the analytical threshold). A ratio above
    ``max_stutter_ratio`` (``max_forward_stutter_ratio`` for n+1) is not stutter (an allele
    removed by the reference filter, pull-up) and is left out.
    """
    found = []
    for key, alleles in genotype.items():
        observed = signals.get(key, {})
        for parent in alleles:
            for direction, step in ((StutterDirection.BACK, -1), (StutterDirection.FORWARD, 1)):
                position = shift_allele(parent, step)
                if position is None or position in alleles or position not in observed:
                    continue
                if shift_allele(position, step) in alleles or observed[parent] <= 0:
                    continue
                ratio = observed[position] / observed[parent]
                limit = (
                    settings.max_stutter_ratio
                    if direction is StutterDirection.BACK
                    else settings.max_forward_stutter_ratio
                )
                if ratio <= limit:
                    found.append((key, direction, ratio))
    return found


def _panels(marker_sets: list[frozenset[str]]) -> tuple[list[frozenset[str]], list[int]]:
    """Group marker sets into panels (largest first); return the panels and each set's panel."""
    order = sorted(range(len(marker_sets)), key=lambda i: (-len(marker_sets[i]), i))
    panels: list[frozenset[str]] = []
    member = [0] * len(marker_sets)
    for i in order:
        best = _best_panel(marker_sets[i], panels, minimum=_PANEL_OVERLAP)
        if best is None:
            panels.append(marker_sets[i])
            best = len(panels) - 1
        member[i] = best
    return panels, member


def _best_panel(
    markers: Collection[str], panels: list[frozenset[str]], *, minimum: float
) -> int | None:
    keys = set(markers)
    best, best_overlap = None, minimum
    for index, panel in enumerate(panels):
        union = len(keys | panel)
        overlap = len(keys & panel) / union if union else 0.0
        if overlap >= best_overlap and (best is None or overlap > best_overlap):
            best, best_overlap = index, overlap
    return best


def configured_back_stutter(marker: str, *, settings: StrSettings) -> tuple[float, StutterSource]:
    """Back-stutter ratio of a locus without a measurement: configured, else published.

    Examples
    --------
    >>> configured_back_stutter("Penta E", settings=StrSettings())
    (0.0215, <StutterSource.PUBLISHED: 'published'>)
    """
    configured = {marker_key(k): float(v) for k, v in settings.stutter_ratios.items()}
    key = marker_key(marker)
    if key in configured:
        return configured[key], StutterSource.CONFIGURED
    if settings.default_stutter_ratio is not None:
        return float(settings.default_stutter_ratio), StutterSource.CONFIGURED
    return PUBLISHED_BACK_STUTTER[repeat_unit_bp(marker)], StutterSource.PUBLISHED


def estimate_stutter_ratios(
    peaks: pl.LazyFrame | pl.DataFrame,
    samples: pl.LazyFrame | pl.DataFrame,
    *,
    settings: StrSettings,
) -> pl.DataFrame:
    """Per-locus stutter ratios from the single-source profiles in ``peaks`` (methods.md 2.6).

    Each profile (one sample in one file, ``source_sha256``) is genotyped with the reference
    filter; every clean n-1 (back) and n+1 (forward) position next to a called allele that
    shows a peak gives one observation of stutter / parent. Profiles are grouped into panels by
    their marker sets (one kit). Per panel and locus the ratio is the median observation; loci
    with fewer than ``min_stutter_observations`` get the configured or published back ratio
    (and no forward correction).

    Returns
    -------
    pl.DataFrame
        ``schemas.stutter.StutterRatioEstimates`` rows, sorted by panel, marker, direction.
    """
    peak_frame = peaks.lazy().collect()
    sources = single_source_samples(
        samples.lazy().select("sample_id", "patient_id", "role").collect()
    )
    chosen = peak_frame.filter(pl.col("sample_id").is_in(sources["sample_id"].implode()))
    if chosen.height == 0:
        return pl.DataFrame(schema=STUTTER_COLUMNS)
    by = ["sample_id", "source_sha256"] if "source_sha256" in chosen.columns else ["sample_id"]
    signals = profile_signals(chosen, by, signal=settings.signal)
    genotypes = profile_genotypes(chosen, by, settings=settings)
    listed = chosen.group_by(by).agg(pl.col("marker").drop_nulls().unique().sort())
    markers = dict(zip(listed.select(by).rows(), listed["marker"].to_list(), strict=True))
    names: dict[str, str] = {}
    marker_sets: list[frozenset[str]] = []
    found: list[tuple[str, list[tuple[str, StutterDirection, float]]]] = []
    for profile_key in sorted(markers, key=lambda k: tuple(str(x) for x in k)):
        own = signals.get(profile_key, {})
        for marker in markers[profile_key]:
            if marker_key(marker) in own:
                names.setdefault(marker_key(marker), marker)
        marker_sets.append(frozenset(own))
        seen = _profile_observations(genotypes.get(profile_key, {}), own, settings=settings)
        found.append((str(profile_key[0]), seen))
    panels, member = _panels(marker_sets)
    observations = [
        _Observation(member[i], key, direction, ratio, sample_id)
        for i, (sample_id, rows) in enumerate(found)
        for key, direction, ratio in rows
    ]
    rows = []
    for index, panel in enumerate(panels):
        label = ",".join(sorted((names.get(k, k) for k in panel), key=str.casefold))
        mine = [o for o in observations if o.panel == index]
        forward = [o for o in mine if o.direction is StutterDirection.FORWARD]
        for marker in sorted(panel):
            back = [o for o in mine if o.key == marker and o.direction is StutterDirection.BACK]
            name = names.get(marker, marker)
            rows.append(_ratio_row(label, name, StutterDirection.BACK, back, settings=settings))
            if len(forward) >= max(1, settings.min_stutter_observations):
                rows.append(
                    _ratio_row(label, name, StutterDirection.FORWARD, forward, settings=settings)
                )
    return pl.DataFrame(rows, schema=STUTTER_COLUMNS, orient="row").sort(
        "panel", "marker", "direction"
    )


def _ratio_row(
    panel: str,
    marker: str,
    direction: StutterDirection,
    observations: list[_Observation],
    *,
    settings: StrSettings,
) -> tuple[object, ...]:
    """One table row: the median of ``observations`` when there are enough, else the fallback.

    Forward rows pool the panel's n+1 observations over all loci: forward stutter does not
    depend on the marker (Bright et al., Electrophoresis 2014, NCJ 249310).
    """
    ratios = [o.ratio for o in observations]
    if len(ratios) >= max(1, settings.min_stutter_observations):
        ids = ", ".join(sorted({o.sample_id for o in observations}))
        sd = statistics.stdev(ratios) if len(ratios) >= 2 else None
        pooled = FORWARD_REFERENCE if direction is StutterDirection.FORWARD else None
        return (panel, marker, direction.value, settings.signal, statistics.median(ratios), sd,
                len(ratios), StutterSource.MEASURED.value, ids, pooled)  # fmt: skip
    ratio, source = configured_back_stutter(marker, settings=settings)
    reference = PUBLISHED_REFERENCE if source is StutterSource.PUBLISHED else "StrSettings"
    return (panel, marker, direction.value, settings.signal, ratio, None, len(ratios),
            source.value, None, reference)  # fmt: skip


class StutterLookup:
    """Stutter of each locus of one sample: its panel's rows of the stutter table, else fallback.

    The per-sample SD of a ratio is the SD of its observations when measured at least 3 times
    (plus the SE of their median), else ``assumed_stutter_cv`` (measured, configured) or
    ``published_stutter_cv`` (published) times the ratio.
    """

    def __init__(
        self, table: pl.DataFrame | None, markers: Collection[str], *, settings: StrSettings
    ) -> None:
        self._settings = settings
        self._rows: dict[tuple[str, str], LocusStutter] = {}
        self._seen: dict[str, LocusStutter] = {}
        if table is None or table.height == 0 or not settings.stutter_correction:
            return
        self._rows = StutterIndex(table, settings=settings).lookup(markers)._rows

    @classmethod
    def of_panel(cls, rows: pl.DataFrame, *, settings: StrSettings) -> StutterLookup:
        """The lookup of one panel's rows of the stutter table."""
        lookup = cls(None, (), settings=settings)
        for row in rows.iter_rows(named=True):
            sd = lookup._sd(row["ratio"], row["ratio_sd"], row["n_observations"], row["source"])
            lookup._rows[(marker_key(row["marker"]), row["direction"])] = LocusStutter(
                back=row["ratio"], back_sd=sd, source=StutterSource(row["source"])
            )
        return lookup

    def _sd(self, ratio: float, sd: float | None, n: int, source: str) -> float:
        if source == StutterSource.MEASURED and sd is not None and n >= 3:
            return sd * math.sqrt(1.0 + _SE_MEDIAN**2 / n)
        cv = (
            self._settings.published_stutter_cv
            if source == StutterSource.PUBLISHED
            else self._settings.assumed_stutter_cv
        )
        return cv * ratio

    def at(self, marker: str) -> LocusStutter:
        """Back and forward stutter of ``marker`` (no correction when it is switched off)."""
        if marker not in self._seen:
            self._seen[marker] = self._at(marker)
        return self._seen[marker]

    def _at(self, marker: str) -> LocusStutter:
        if not self._settings.stutter_correction:
            return NO_STUTTER
        key = marker_key(marker)
        back = self._rows.get((key, StutterDirection.BACK.value))
        if back is None:
            ratio, source = configured_back_stutter(marker, settings=self._settings)
            back = LocusStutter(ratio, self._sd(ratio, None, 0, source.value), source=source)
        forward = self._rows.get((key, StutterDirection.FORWARD.value))
        if forward is None or not self._settings.forward_stutter_correction:
            return back
        return LocusStutter(back.back, back.back_sd, forward.back, forward.back_sd, back.source)


class StutterIndex:
    """The stutter table read once: its panels' marker sets, one lookup per panel.

    A sample's panel is the one its loci overlap best (Jaccard >= 0.5); without one, every
    locus gets the configured or published ratio (:class:`StutterLookup`).
    """

    def __init__(self, table: pl.DataFrame | None, *, settings: StrSettings) -> None:
        self.table = table
        self.settings = settings
        self._sets: list[frozenset[str]] = []
        self._names: list[object] = []
        self._by_set: dict[frozenset[str], StutterLookup] = {}
        self._by_given: dict[frozenset[str], StutterLookup] = {}
        self._by_panel: dict[int, StutterLookup] = {}
        if table is None or table.height == 0 or not settings.stutter_correction:
            return
        panels = table.group_by("panel", maintain_order=True).agg(pl.col("marker"))
        self._sets = [frozenset(marker_key(m) for m in ms) for ms in panels["marker"].to_list()]
        self._names = panels["panel"].to_list()

    def lookup(self, markers: Collection[str]) -> StutterLookup:
        """The stutter lookup of a sample with loci ``markers`` (kept per locus set)."""
        given = markers if isinstance(markers, frozenset) else frozenset(markers)
        if given not in self._by_given:  # a patient's samples share a few locus sets
            self._by_given[given] = self._lookup(frozenset(marker_key(m) for m in given))
        return self._by_given[given]

    def _lookup(self, keys: frozenset[str]) -> StutterLookup:
        if keys not in self._by_set:
            best = _best_panel(keys, self._sets, minimum=0.5)
            if best is None:
                self._by_set[keys] = StutterLookup(None, (), settings=self.settings)
            else:
                if best not in self._by_panel:
                    assert self.table is not None
                    rows = self.table.filter(pl.col("panel") == self._names[best])
                    self._by_panel[best] = StutterLookup.of_panel(rows, settings=self.settings)
                self._by_set[keys] = self._by_panel[best]
        return self._by_set[keys]
