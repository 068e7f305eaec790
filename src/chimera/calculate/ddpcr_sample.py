"""One post-dose sample on one ddPCR plate: markers, limits, result state, genome shares.

The rules (zygosity per plate, background per plate, copy number, control normalisation,
three genomes) are stated once in :mod:`chimera.calculate.ddpcr`; the arithmetic is
methods.md 4 (LoB/LoD/LoQ, result states) and 5.2-5.6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from chimera.calculate.common import SampleInfo
from chimera.calculate.ddpcr_wells import (
    Count,
    Estimate,
    Part,
    Plate,
    Well,
    blank_counts,
    estimate,
    marker_counts,
    own_scope,
    plate_marker_counts,
    point_estimate,
    pooled,
    ratio,
    wells_of,
)
from chimera.calculate.genomes import (
    Calls,
    PatientGenomes,
    Share,
    ShareEstimate,
    other_shares,
)
from chimera.calculate.limits import (
    GenomeShare,
    Method,
    QcVerdict,
    SampleResult,
    classify_result,
    failed_result,
)
from chimera.calculate.poisson import (
    copies_per_ul,
    detection_limit_copies,
    limit_of_blank_droplets,
    marker_copies,
    poisson_lambda,
    z_value,
)
from chimera.calculate.stats import sample_sd
from chimera.settings import DdpcrSettings
from schemas.vocab import GenomeModel

CONTROL_OFF_TOLERANCE = 0.10
"""A reference reading its marker copies more than this relatively off n_M "reads off" [R]."""

Row = dict[str, object]
_DDPCR, _INK = Method.DDPCR.value, Share.INK.value
ON_PLATE = "reference on this plate"
OWN_PLATES = "reference on the patient's plates"


@dataclass
class Shared:
    """What every sample of one calculation reads alike on a plate, found once per plate."""

    copies: dict[tuple[object, ...], _Copies | None] = field(default_factory=dict)
    """n_M by (plate, marker, share, reference ids, own plates)."""


@dataclass
class SampleContext:
    """Everything one sample x plate evaluation reads."""

    info: SampleInfo
    genomes: PatientGenomes
    calls: Calls
    plate: Plate
    own: Sequence[Plate]
    """The patient's own plates (holding any of their samples)."""
    own_key: tuple[str, ...]
    """The plate ids of ``own``."""
    plates: Sequence[Plate]
    """Every plate: the own plates and the registered reference's wells on the others."""
    settings: DdpcrSettings
    notes: list[str] = field(default_factory=list)
    shared: Shared = field(default_factory=Shared)
    """Per-plate findings of the same calculation, shared by its samples."""

    @property
    def wells(self) -> list[Well]:
        """The sample's wells on this plate, excluded ones too."""
        return self.plate.dna[self.info.sample_id]


@dataclass(frozen=True)
class _Copies:
    """Marker copies per genome n_M of a share's reference, and what the reference read."""

    n_marker: int
    observed: float | None
    source: str


@dataclass(frozen=True)
class _Used:
    """One marker used for one share on this plate."""

    name: str
    part: Part
    copies: _Copies
    expected_fp: float = 0.0


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _reference_ids(genomes: PatientGenomes, share: Share) -> tuple[str, ...]:
    return {
        Share.INK: genomes.product_ids,
        Share.HSCT_DONOR: genomes.hsct_ids,
        Share.RECIPIENT: genomes.germline_ids,
    }[share]


def _copies(ctx: SampleContext, name: str, share: Share) -> _Copies | None:
    """:func:`_plate_copies`, found once per plate of the calculation."""
    ids = _reference_ids(ctx.genomes, share)
    key = (ctx.plate.plate, name, share, ids, ctx.own_key)
    if key not in ctx.shared.copies:
        ctx.shared.copies[key] = _plate_copies(ctx, name, share)
    return ctx.shared.copies[key]


def _plate_copies(ctx: SampleContext, name: str, share: Share) -> _Copies | None:
    """n_M from the share's reference on this plate, else on the patient's plates, else every.

    The patient's plates are read when any of them holds the reference's wells of the marker,
    every plate (the registered reference) only when none does.
    """
    settings = ctx.settings
    configured = settings.product_marker_copies.get(name) if share is Share.INK else None
    ids = _reference_ids(ctx.genomes, share)
    wider = own_scope(name, ids, ctx.own, ctx.plates)
    source = OWN_PLATES if wider is ctx.own else "registered reference (every plate)"
    scopes = (([ctx.plate], ON_PLATE), (wider, source))
    for plates, source in scopes:
        if source == ON_PLATE:
            counts = plate_marker_counts(ctx.plate, name, ids)
        else:
            wells = wells_of(ids, plates)
            counts = marker_counts(name, wells, wells)
        if counts is None or counts[0].positives >= counts[0].accepted:
            continue
        observed = ratio(*counts) * settings.reference_gene_copies
        n_marker = configured or marker_copies(
            observed / settings.reference_gene_copies,
            reference_copies=settings.reference_gene_copies,
        )
        if n_marker >= 1:
            return _Copies(n_marker, observed, source)
    return _Copies(configured, None, "configured copy number") if configured else None


def _background(ctx: SampleContext, name: str) -> tuple[float, str | None]:
    """False-positive droplets per droplet of an iNK marker: this plate's blanks, else all."""
    blank_ids = ctx.genomes.blank_ids
    positives, accepted = blank_counts(ctx.plate, name, blank_ids)
    if accepted:
        return positives / accepted, None
    every = [blank_counts(plate, name, blank_ids) for plate in ctx.plates]
    positives, accepted = sum(p for p, _ in every), sum(a for _, a in every)
    note = f"{name}: no blank wells on this plate; background from the other plates"
    return (positives / accepted if accepted else 0.0), note


def _marker_row(
    ctx: SampleContext,
    marker: str,
    replicate: str,
    count: Count,
    pct: float | None,
    reason: str | None,
    sharing: str | None,
) -> Row:
    lam = None if count.positives >= count.accepted else poisson_lambda(*count.pair)
    return {
        "sample_id": ctx.info.sample_id,
        "method": _DDPCR,
        "marker": marker,
        "replicate": replicate,
        "sharing": sharing,
        "positives": count.positives,
        "accepted_droplets": count.accepted,
        "copies_per_ul": None if lam is None else copies_per_ul(lam, count.volume_nl),
        "pct_ink": pct,
        "included": reason is None,
        "exclusion_reason": reason,
        "source_sha256": ctx.plate.plate,
    }


def _failed(
    ctx: SampleContext, reason: str, review: list[str], sharing: dict[str, str]
) -> tuple[SampleResult, list[Row]]:
    rows = [
        _marker_row(ctx, name, well.well, count, None, well.exclusion or reason, sharing.get(name))
        for well in ctx.wells
        for name, count in sorted(well.markers.items())
    ]
    result = failed_result(ctx.info.sample_id, Method.DDPCR, [reason, *review, *ctx.notes])
    return replace(result, genome_model=ctx.genomes.model, source_sha256=ctx.plate.plate), rows


def _saturation(ctx: SampleContext, included: Sequence[Well]) -> list[str]:
    notes = []
    for well in included:
        ref = well.reference
        if (
            ref is not None
            and ref.positives > ctx.settings.reference_saturation_fraction * ref.accepted
        ):
            share = 100.0 * ref.positives / ref.accepted
            notes.append(
                f"well {well.well}: reference gene positive in {share:.1f} % of droplets "
                "(near saturation; dilute DNA)"
            )
    return notes


def _select_markers(
    ctx: SampleContext, included: Sequence[Well]
) -> tuple[dict[Share, list[_Used]], dict[str, str], dict[str, str]]:
    """(markers used per share, reason per marker not used, sharing label per marker)."""
    used: dict[Share, list[_Used]] = {share: [] for share in Share}
    unused: dict[str, str] = {}
    sharing: dict[str, str] = {}
    for name in sorted({m for w in ctx.wells for m in w.markers}):
        share, reason = ctx.calls.get(name, (None, "no reference genome data"))
        if share is None:
            sharing[name] = "not_informative"
            unused[name] = f"not informative: {reason}"
            continue
        sharing[name] = share.value
        copies = _copies(ctx, name, share)
        counts = marker_counts(name, included, included)
        if copies is None:
            unused[name] = "no reference wells give the marker's copy number"
        elif counts is None:
            unused[name] = "no included well measured this marker"
        elif counts[0].positives == counts[0].accepted:
            unused[name] = "marker positive in every droplet (saturated)"
        else:
            k = ctx.settings.reference_gene_copies / copies.n_marker
            fp = 0.0
            if copies.source != ON_PLATE:
                ctx.notes.append(
                    f"{name}: {copies.n_marker} copies per genome from the "
                    f"{copies.source} (no usable reference wells on this plate)"
                )
            if share is Share.INK:
                rate, note = _background(ctx, name)
                fp = rate * counts[0].accepted
                ctx.notes.extend([note] if note else [])
            used[share].append(_Used(name, Part(counts[0], counts[1], k), copies, fp))
    return used, unused, sharing


def _limits(
    ctx: SampleContext, ink: Sequence[_Used], est: Estimate
) -> tuple[bool, float, float, int]:
    """(detected, LoD %, LoQ %, LoB droplets) of the pooled iNK markers (methods.md 4, 5.6)."""
    settings = ctx.settings
    expected_fp = sum(u.expected_fp for u in ink)
    lob = limit_of_blank_droplets(expected_fp, confidence=settings.confidence)
    positives = sum(u.part.marker.positives for u in ink)
    lod_copies = detection_limit_copies(
        lob_droplets=lob,
        expected_false_positives=expected_fp,
        min_copies=settings.lod_positive_droplets,
        confidence=settings.confidence,
    )
    genomes = est.reference_genome_equivalents
    if genomes > 0:
        lod_pct = 100.0 * lod_copies / genomes
        loq_pct = 100.0 * max(float(settings.loq_positive_droplets), lod_copies) / genomes
    else:
        lod_pct, loq_pct = settings.lod_pct, settings.loq_pct
    # A dilution series validated on this assay sets a floor under the sample's Poisson limits.
    lod_pct = max(lod_pct, settings.validated_lod_pct or 0.0)
    loq_pct = max(loq_pct, settings.validated_loq_pct or 0.0, lod_pct)
    return positives > lob, lod_pct, loq_pct, lob


def _ink_rows(
    ctx: SampleContext,
    ink: Sequence[_Used],
    reference_pool: Count,
    notes: list[str],
    pooled_estimate: Estimate,
) -> tuple[list[Row], dict[str, Estimate]]:
    """Per-well and pooled rows of the iNK markers; notes on spread and control reading.

    ``pooled_estimate`` is the estimate of every iNK marker pooled (one marker's own estimate).
    """
    confidence = ctx.settings.confidence
    rows: list[Row] = []
    per_marker: dict[str, Estimate] = {}
    for use in ink:
        m_est = pooled_estimate if len(ink) == 1 else estimate([use.part], confidence=confidence)
        per_marker[use.name] = m_est
        well_pcts: list[float] = []
        for well in (w for w in ctx.wells if use.name in w.markers):
            count = well.markers[use.name]
            pct: float | None = None
            if well.exclusion is None and count.positives < count.accepted:
                part = Part(count, well.reference or reference_pool, use.part.k)
                pct = point_estimate(part)
                well_pcts.append(pct)
            rows.append(_marker_row(ctx, use.name, well.well, count, pct, well.exclusion, _INK))
        pooled_row = _marker_row(ctx, use.name, "pooled", use.part.marker, m_est.pct, None, _INK)
        observed, n_marker = use.copies.observed, use.copies.n_marker
        if observed is not None and abs(observed / n_marker - 1.0) > CONTROL_OFF_TOLERANCE:
            normalised = m_est.pct * n_marker / observed
            pooled_row["pct_ink_control_normalised"] = normalised
            notes.append(
                f"{use.name}: the product {use.copies.source} reads {observed:.3g} "
                f"copies per genome (n_M = {n_marker}); control-normalised {_fmt(normalised)} %"
            )
        rows.append(pooled_row)
        if len(well_pcts) >= 2:
            notes.append(
                f"{use.name}: well-to-well SD {_fmt(sample_sd(well_pcts))} % over "
                f"{len(well_pcts)} wells (the Poisson CI covers counting error only)"
            )
    return rows, per_marker


def _other_rows(
    ctx: SampleContext,
    used: dict[Share, list[_Used]],
    unused: dict[str, str],
    sharing: dict[str, str],
) -> list[Row]:
    rows: list[Row] = []
    for share in (Share.HSCT_DONOR, Share.RECIPIENT):
        for use in used[share]:
            for well in (w for w in ctx.wells if use.name in w.markers):
                count = well.markers[use.name]
                rows.append(
                    _marker_row(ctx, use.name, well.well, count, None, well.exclusion, share.value)
                )
    for name, reason in unused.items():
        for well in (w for w in ctx.wells if name in w.markers):
            rows.append(
                _marker_row(
                    ctx, name, well.well, well.markers[name], None, reason, sharing.get(name)
                )
            )
    return rows


def _share(ctx: SampleContext, uses: Sequence[_Used]) -> ShareEstimate | None:
    if not uses:
        return None
    confidence = ctx.settings.confidence
    est = estimate([u.part for u in uses], confidence=confidence)
    return ShareEstimate(est.pct, est.low, est.high, z_value(confidence))


def _genome_shares(
    ctx: SampleContext, used: dict[Share, list[_Used]], est: Estimate, notes: list[str]
) -> tuple[GenomeShare | None, GenomeShare | None]:
    """(% HSCT donor, % recipient) of a three-genome patient (rule in genomes.py)."""
    if ctx.genomes.model is not GenomeModel.THREE_GENOME:
        return None, None
    ink = ShareEstimate(est.pct, est.low, est.high, z_value(ctx.settings.confidence))
    hsct, recipient, more = other_shares(
        ink, _share(ctx, used[Share.HSCT_DONOR]), _share(ctx, used[Share.RECIPIENT])
    )
    for share in (Share.HSCT_DONOR, Share.RECIPIENT):
        for use in used[share]:
            pct = point_estimate(use.part)
            more.append(f"{share.value} marker {use.name}: {_fmt(pct)} %")
    notes.extend(more)
    return hsct, recipient


def evaluate_sample(ctx: SampleContext) -> tuple[SampleResult, list[Row]]:
    """% iNK of one post-dose sample on one plate (rules in :mod:`chimera.calculate.ddpcr`)."""
    included = [w for w in ctx.wells if w.exclusion is None]
    review = [*ctx.plate.notes, *_saturation(ctx, included)]
    reference_pool = pooled(w.reference for w in included if w.reference is not None)
    missing = ctx.genomes.missing_reference()
    if not included:
        reasons = sorted({w.exclusion for w in ctx.wells if w.exclusion})
        return _failed(ctx, "every well excluded: " + "; ".join(reasons), review, {})
    if reference_pool is None:
        genes = ", ".join(ctx.settings.reference_genes)
        return _failed(ctx, f"no reference-gene ({genes}) counts for this sample", review, {})
    if missing is not None:
        return _failed(ctx, missing, review, {})
    used, unused, sharing = _select_markers(ctx, included)
    ink = used[Share.INK]
    if not ink:
        detail = "; ".join(f"{n}: {r}" for n, r in unused.items()) or "no marker target"
        return _failed(ctx, f"no informative marker ({detail})", review, sharing)
    notes: list[str] = []
    est = estimate([u.part for u in ink], confidence=ctx.settings.confidence)
    detected, lod_pct, loq_pct, lob = _limits(ctx, ink, est)
    if lob > 0:
        notes.append(f"LoB {lob} positive droplets (blank false-positive background)")
    rows, per_marker = _ink_rows(ctx, ink, reference_pool, notes, est)
    rows.extend(_other_rows(ctx, used, unused, sharing))
    if len(per_marker) >= 2:
        spread = ", ".join(f"{n} {_fmt(e.pct)} %" for n, e in per_marker.items())
        notes.append(f"informative markers: {spread}")
        ests = list(per_marker.values())
        if any(a.high < b.low for a in ests for b in ests):
            review.append(f"informative markers disagree beyond their 95 % CIs ({spread})")
    hsct, recipient = _genome_shares(ctx, used, est, notes)
    result = SampleResult(
        sample_id=ctx.info.sample_id,
        method=Method.DDPCR,
        result_status=classify_result(est.pct, detected=detected, failed=False, loq_pct=loq_pct),
        pct_ink_raw=est.pct,
        ci_low_raw=est.low,
        ci_high_raw=est.high,
        lod_pct=lod_pct,
        loq_pct=loq_pct,
        qc_verdict=QcVerdict.REVIEW if review else QcVerdict.PASS,
        qc_reasons=tuple(dict.fromkeys([*review, *ctx.notes, *notes])),
        n_informative=len(ink),
        ci_quantile=z_value(ctx.settings.confidence),
        genome_model=ctx.genomes.model,
        recipient=recipient,
        hsct_donor=hsct,
        source_sha256=ctx.plate.plate,
    )
    return result, rows
