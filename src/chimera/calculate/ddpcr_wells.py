"""ddPCR wells: droplet counts per well and target, QC gates, pooled estimates (methods.md 5).

A duplex well holds one marker and the reference gene; its counts are grouped here, a
QuantaSoft merged row is used only when its member wells are absent (5.4), wells failing the
droplet gates are excluded with a reason (5.5), and several wells' counts are pooled into one
Poisson estimate of % genome with its CI (5.3).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import polars as pl

from chimera.calculate.common import SampleInfo, is_no_template, is_reference_gene
from chimera.calculate.poisson import (
    EXACT_MAX_POSITIVES,
    lambda_ci_exact,
    limit_of_blank_droplets,
    p_scale_standard_error,
    poisson_lambda,
    z_value,
)
from chimera.settings import DdpcrSettings
from schemas.vocab import Role


class Count(NamedTuple):
    """Positive and accepted droplets of one target; droplet volume in nL.

    Counts, parts and estimates are named tuples: many are built per sample, cheaper than
    dataclasses.
    """

    positives: int
    accepted: int
    volume_nl: float

    @property
    def pair(self) -> tuple[int, int]:
        """(positives, accepted)."""
        return self.positives, self.accepted


@dataclass(slots=True)
class Well:
    """One well (or kept merged row) of one plate: marker counts and reference counts."""

    plate: str
    well: str
    sample_id: str | None
    sample_type: str | None
    markers: dict[str, Count] = field(default_factory=dict)
    reference: Count | None = None
    missing_counts: bool = False
    targets: set[str] = field(default_factory=set)
    """Every marker the export has a row of in this well, with or without counts."""
    exclusion: str | None = None
    """Why the well is left out (:func:`well_exclusion`), None when used."""


class Part(NamedTuple):
    """One marker's pooled counts, the reference counts of the same wells, and k = n_ref/n_M."""

    marker: Count
    reference: Count
    k: float


class Estimate(NamedTuple):
    """A pooled % genome estimate, its CI and the genome equivalents behind it."""

    pct: float
    low: float
    high: float
    marker_copies: float
    reference_genome_equivalents: float


def target_key(target: str | None, channel: str | None) -> str:
    """The name a target is known by: its name, else its channel."""
    return target or channel or "unnamed target"


def pooled(counts: Iterable[Count]) -> Count | None:
    """Sum counts over wells (methods.md 5.4); the volume is the droplet-weighted mean."""
    items = list(counts)
    if not items:
        return None
    if len(items) == 1:
        only = items[0]
        volume = only.volume_nl * only.accepted / only.accepted if only.accepted else 0.0
        return Count(only.positives, only.accepted, volume)
    positives = accepted = 0
    weighted = 0.0
    for count in items:  # one pass, in well order
        positives += count.positives
        accepted += count.accepted
        weighted += count.volume_nl * count.accepted
    return Count(positives, accepted, weighted / accepted if accepted else 0.0)


def estimate(parts: Sequence[Part], *, confidence: float) -> Estimate:
    """Pooled % genome = 100·Σ marker copies / Σ (reference copies / k) over the parts.

    For one part this is 100·k·c_M/c_ref (methods.md 5.2). CI (methods.md 5.3): exact
    (Clopper-Pearson) on the pooled marker droplets for <= 25 positives, else the linear
    ratio interval with the p-scale SEs of QX Manager (one duplex well reproduces its
    ``PoissonRatioMin/Max`` x 100·k); the reference gene's relative SE is added in both cases.
    """
    z = z_value(confidence)
    marker_copies = genomes = var_marker = 0.0
    positives = accepted = 0
    for part in parts:
        copies, genome_equivalents = _copies_and_genomes(part)
        marker_copies += copies
        genomes += genome_equivalents
        se = p_scale_standard_error(*part.marker.pair, confidence=confidence)
        var_marker += (part.marker.accepted * se) ** 2
        positives += part.marker.positives
        accepted += part.marker.accepted
    reference = pooled(p.reference for p in parts)
    assert reference is not None
    cv_ref = p_scale_standard_error(*reference.pair, confidence=confidence) / poisson_lambda(
        *reference.pair
    )
    pct = 100.0 * marker_copies / genomes
    if positives <= EXACT_MAX_POSITIVES:
        lam_low, lam_high = lambda_ci_exact(positives, accepted, confidence=confidence)
        low = 100.0 * lam_low * accepted / genomes * math.exp(-z * cv_ref)
        high = 100.0 * lam_high * accepted / genomes * math.exp(z * cv_ref)
    else:
        rel = math.hypot(math.sqrt(var_marker) / marker_copies, cv_ref)
        low, high = max(0.0, pct * (1.0 - z * rel)), pct * (1.0 + z * rel)
    return Estimate(pct, low, high, marker_copies, genomes)


def _copies_and_genomes(part: Part) -> tuple[float, float]:
    """(marker copies, reference genome equivalents / k) of one part's marker droplets (5.2)."""
    lam_m = poisson_lambda(part.marker.positives, part.marker.accepted)
    lam_r = poisson_lambda(part.reference.positives, part.reference.accepted)
    c_ref = lam_r / part.reference.volume_nl  # copies per nL
    return (
        lam_m * part.marker.accepted,
        c_ref * part.marker.accepted * part.marker.volume_nl / part.k,
    )


def point_estimate(part: Part) -> float:
    """% genome of one part without its CI: the ``pct`` of :func:`estimate` for ``[part]``."""
    copies, genomes = _copies_and_genomes(part)
    return 100.0 * (0.0 + copies) / (0.0 + genomes)


def ratio(marker: Count, reference: Count) -> float:
    """λ_M/λ_ref across wells: concentrations, so unequal droplet counts cancel (5.2)."""
    return point_estimate(Part(marker, reference, 1.0)) / 100.0


def reference_for(used: Sequence[Well], fallback: Iterable[Well]) -> Count | None:
    """Pool the reference counts of the wells a marker was read in, else of ``fallback``.

    ``fallback`` is read only when no well of ``used`` has reference counts.
    """
    own = [w.reference for w in used if w.reference is not None]
    if own:
        return pooled(own)
    return pooled(w.reference for w in fallback if w.reference is not None)


def marker_counts(
    name: str, wells: Sequence[Well], fallback: Sequence[Well]
) -> tuple[Count, Count] | None:
    """Pooled (marker, reference) counts of ``name`` over ``wells``; None when unmeasured.

    Wells without reference counts (singleplex) take the reference of the ``fallback`` wells on
    the plates that measured the marker, never of other plates.
    """
    used = [w for w in wells if name in w.markers]
    marker = pooled(w.markers[name] for w in used)
    plates = {w.plate for w in used}
    reference = reference_for(used, (w for w in fallback if w.plate in plates))
    if marker is None or reference is None:
        return None
    return marker, reference


def collect_wells(frame: pl.DataFrame, settings: DdpcrSettings) -> list[Well]:
    """Group rows into wells; drop merged rows whose member wells are present (methods.md 5.4)."""
    if "source_sha256" not in frame.columns:
        frame = frame.with_columns(pl.lit("plate").alias("source_sha256"))
    columns = (
        "source_sha256", "well", "target", "channel", "is_merged", "merged_wells", "sample_id",
        "sample_type", "accepted_droplets", "positives", "droplet_volume_nl",
    )  # fmt: skip
    # Column lists zipped, not ``rows()``: one Python object per cell, no row tuples (issue 12).
    lists = [frame.get_column(c).to_list() for c in columns]
    named: dict[tuple[str | None, str | None], str] = {}
    keys = [
        named.get(pair) or named.setdefault(pair, target_key(*pair))
        for pair in zip(lists[2], lists[3], strict=True)
    ]
    merged_rows = any(lists[4])
    present = (
        {(p, w, k) for p, w, m, k in zip(lists[0], lists[1], lists[4], keys, strict=True) if not m}
        if merged_rows
        else set()
    )
    references: dict[str | None, bool] = {}
    wells: dict[tuple[str, str], Well] = {}
    for row in zip(*lists, keys, strict=True):
        plate, name, target, _, merged, members_text, sample_id, kind = row[:8]
        accepted, positives, volume, key = row[8:]
        if merged:
            members = [m.strip() for m in (members_text or "").split(",") if m.strip()]
            if any((plate, m, key) in present for m in members):
                continue  # pooled from its member wells instead; never count both
        unit = wells.get((plate, name))
        if unit is None:
            unit = wells[(plate, name)] = Well(plate, name, sample_id, kind)
        if target not in references:
            references[target] = is_reference_gene(target, settings.reference_genes)
        reference = references[target]
        if not reference:
            unit.targets.add(key)
        if not accepted or positives is None:
            unit.missing_counts = True
            continue
        count = Count(int(positives), int(accepted), volume)
        if reference:
            if unit.reference is None:
                unit.reference = count
        else:
            unit.markers[key] = count
    return sorted(wells.values(), key=lambda w: (w.plate, w.well))


def well_exclusion(well: Well, settings: DdpcrSettings) -> str | None:
    """Why a DNA well is left out (QC gates, methods.md 5.5), or None when it is used.

    A well without a reference-gene row (singleplex layout) is kept; its marker is then set
    against the sample's pooled reference wells.
    """
    if well.missing_counts:
        return "droplet counts missing in the export (No Call without counts)"
    counts = [c for c in (well.reference, *well.markers.values()) if c is not None]
    accepted = max((c.accepted for c in counts), default=0)
    if accepted < settings.min_accepted_droplets:
        return f"{accepted:,} accepted droplets < {settings.min_accepted_droplets:,} minimum"
    if well.reference is None:
        return None
    if well.reference.positives == 0:
        return "no reference-gene positive droplets (no DNA template)"
    if well.reference.positives == well.reference.accepted:
        return "reference gene positive in every droplet (saturated; dilute and re-run)"
    return None


@dataclass
class Plate:
    """The wells of one plate, sorted by what they hold."""

    plate: str
    dna: dict[str, list[Well]] = field(default_factory=lambda: defaultdict(list))
    """Genomic DNA wells with a manifest row, by sample id (excluded wells too)."""
    no_template: list[Well] = field(default_factory=list)
    controls: list[Well] = field(default_factory=list)
    """Usable negative controls: the no-template wells and genomic 0 % controls."""
    notes: list[str] = field(default_factory=list)
    """Control findings: QC review for every sample of the plate."""
    contaminated: set[tuple[str, str]] = field(default_factory=set)
    """(well, marker) of controls above the LoB, left out of the background."""

    counts_of: dict[tuple[str, tuple[str, ...]], tuple[Count, Count] | None] = field(
        default_factory=dict
    )
    """:func:`marker_counts` of (marker, sample ids) on this plate alone, found once."""
    blanks_of: dict[tuple[str, tuple[str, ...]], tuple[int, int]] = field(default_factory=dict)
    """:func:`blank_counts` of (marker, genomic blank ids), found once."""
    holds_of: dict[tuple[str, tuple[str, ...]], bool] = field(default_factory=dict)
    """:func:`holds` of (marker, sample ids) on this plate alone, found once."""

    @cached_property
    def dna_markers(self) -> frozenset[str]:
        """Every marker with counts in the plate's DNA wells (excluded wells too)."""
        return frozenset(m for ws in self.dna.values() for w in ws for m in w.markers)


def index_plates(
    wells: Sequence[Well], table: dict[str, SampleInfo], settings: DdpcrSettings
) -> dict[str, Plate]:
    """Sort every well by plate into DNA wells, no-template wells and negative controls."""
    plates: dict[str, Plate] = {}
    for well in wells:
        plate = plates.get(well.plate)
        if plate is None:  # one Plate per plate, not one built (and dropped) per well
            plate = plates[well.plate] = Plate(well.plate)
        info = table.get(well.sample_id or "")
        well.exclusion = well_exclusion(well, settings)
        if is_no_template(info, well.sample_id, well.sample_type):
            if not well.missing_counts:
                plate.no_template.append(well)
                plate.controls.append(well)
        elif info is not None and info.role == Role.NEGATIVE_CONTROL:
            if well.exclusion is None:
                plate.controls.append(well)
        elif info is not None:
            plate.dna[info.sample_id].append(well)
    for plate in plates.values():
        judge_controls(plate, settings)
    return plates


def judge_controls(plate: Plate, settings: DdpcrSettings) -> None:
    """Contamination calls of a plate's negative controls (rules in :mod:`chimera.calculate.ddpcr`)."""
    floor = settings.lod_positive_droplets
    for well in plate.no_template:
        if well.reference is not None and well.reference.positives >= floor:
            plate.notes.append(
                f"no-template well {well.well} has {well.reference.positives} reference-gene "
                "positive droplets (genomic DNA contamination)"
            )
    for well in plate.controls:
        for name, count in sorted(well.markers.items()):
            others = [
                w.markers[name] for w in plate.controls if w is not well and name in w.markers
            ]
            accepted = sum(c.accepted for c in others)
            rate = sum(c.positives for c in others) / accepted if accepted else 0.0
            lob = limit_of_blank_droplets(rate * count.accepted, confidence=settings.confidence)
            if count.positives >= floor and count.positives > lob:
                plate.contaminated.add((well.well, name))
                plate.notes.append(
                    f"negative control {well.well} ({well.sample_id or 'no name'}) has "
                    f"{count.positives} {name} positive droplets, above the LoB of {lob} "
                    "(contamination, or the control DNA carries the marker)"
                )


def wells_of(ids: Sequence[str], plates: Sequence[Plate]) -> list[Well]:
    """Usable DNA wells of ``ids`` on ``plates``."""
    return [w for p in plates for sid in ids for w in p.dna.get(sid, []) if w.exclusion is None]


def plate_marker_counts(
    plate: Plate, name: str, ids: tuple[str, ...]
) -> tuple[Count, Count] | None:
    """:func:`marker_counts` of ``name`` over the usable wells of ``ids`` on one plate."""
    key = (name, ids)
    if key not in plate.counts_of:
        wells = wells_of(ids, [plate])
        plate.counts_of[key] = marker_counts(name, wells, wells)
    return plate.counts_of[key]


def blank_counts(plate: Plate, name: str, blank_ids: tuple[str, ...]) -> tuple[int, int]:
    """(positives, accepted) of marker ``name`` in one plate's blanks (methods.md 5.6).

    Blanks: the plate's uncontaminated negative controls and the usable wells of the genomic
    0 % samples ``blank_ids``.
    """
    key = (name, blank_ids)
    if key not in plate.blanks_of:
        blanks = [w for w in plate.controls if (w.well, name) not in plate.contaminated]
        counts = [
            w.markers[name] for w in blanks + wells_of(blank_ids, [plate]) if name in w.markers
        ]
        plate.blanks_of[key] = sum(c.positives for c in counts), sum(c.accepted for c in counts)
    return plate.blanks_of[key]


def holds(name: str, ids: Sequence[str], plates: Sequence[Plate]) -> bool:
    """Whether ``plates`` hold a well of ``ids`` with marker ``name`` (usable or not)."""
    key = (name, tuple(ids))
    for plate in plates:
        found = plate.holds_of.get(key)
        if found is None:
            found = plate.holds_of[key] = any(
                name in w.targets for sid in ids for w in plate.dna.get(sid, [])
            )
        if found:
            return True
    return False


def own_scope(
    name: str, ids: Sequence[str], own: Sequence[Plate], every: Sequence[Plate]
) -> Sequence[Plate]:
    """The patient's own plates when they hold wells of ``ids`` for ``name``, else every plate."""
    return own if holds(name, ids, own) else every
