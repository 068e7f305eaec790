"""One post-dose sample on one qPCR plate: gates, marker estimates, limits and the result.

The rules are stated once in :mod:`chimera.calculate.qpcr`; the arithmetic is methods.md 3
(:mod:`chimera.calculate.ddct`) and 4 (LoB, result states).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from chimera.calculate.common import PRODUCT_ROLES, SampleInfo
from chimera.calculate.ddct import (
    ReplicateSummary,
    blank_pct,
    ci_pct_from_ddct,
    log2_fraction,
    pct_from_log2,
    welch_dof,
)
from chimera.calculate.genomes import (
    Calls,
    PatientGenomes,
    Share,
    ShareEstimate,
    ink_for_remainder,
    other_shares,
)
from chimera.calculate.limits import (
    GenomeShare,
    Method,
    QcVerdict,
    SampleResult,
    classify_result,
    failed_result,
    limit_of_blank,
)
from chimera.calculate.qpcr_plate import PlateContext
from chimera.calculate.stats import sample_sd, t_quantile
from chimera.settings import QpcrSettings
from schemas.vocab import GenomeModel

_Z_95 = 1.959963984540054  # two-sided 95 % normal quantile, for marker discordance
_T_PROBABILITY = 0.975
_QPCR, _INK = Method.QPCR.value, Share.INK.value
Row = dict[str, object]


@dataclass(frozen=True)
class SampleOnPlate:
    """What one sample x plate evaluation reads."""

    sample_id: str
    context: PlateContext
    genomes: PatientGenomes
    calls: Calls
    table: dict[str, SampleInfo]
    blank_ids: tuple[str, ...]
    """Genomic 0 % iNK samples: negative controls with DNA and the patient's references."""
    notes: tuple[str, ...] = ()

    @property
    def settings(self) -> QpcrSettings:
        """The plate's settings."""
        return self.context.settings


class MarkerEstimate(NamedTuple):
    """One marker on one plate: log2 fraction of its genome, its SE and degrees of freedom."""

    marker: str
    share: Share
    log2_fraction: float | None
    se: float
    dof: float
    log2_lod: float
    n_amplified: int
    enough: bool
    sd_above_limit: bool


@dataclass(frozen=True)
class _Calibrator:
    sample_id: str
    reference: ReplicateSummary


@dataclass
class _Evaluation:
    estimates: list[MarkerEstimate] = field(default_factory=list)
    marker_rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    reviews: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blanks_pct: list[float] = field(default_factory=list)
    reference_enough: bool = True

    def of(self, share: Share) -> list[MarkerEstimate]:
        return [e for e in self.estimates if e.share is share]


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 0.1 else f"{value:.2f}"


def _group_stats(summary: ReplicateSummary, settings: QpcrSettings) -> tuple[float, float]:
    """(variance of the mean Ct, dof) of a replicate group; a single well uses the SD limit."""
    n = max(summary.n_kept, 1)
    sd = summary.sd_ct if summary.sd_ct is not None else settings.max_replicate_sd
    return sd * sd / n, float(max(n - 1, 1))


def _ref_window_failure(
    summary: ReplicateSummary, who: str, target: str, settings: QpcrSettings
) -> str | None:
    if summary.mean_ct is None:
        return f"DNA input: {who} reference gene {target} did not amplify"
    if not settings.reference_ct_min <= summary.mean_ct <= settings.reference_ct_max:
        return (
            f"DNA input: {who} reference gene {target} mean Ct {summary.mean_ct:.2f} outside "
            f"[{settings.reference_ct_min:g}, {settings.reference_ct_max:g}]"
        )
    return None


_REFERENCE_NAMES = {
    Share.INK: "100 % calibrator (donor_reference or calibrator)",
    Share.HSCT_DONOR: "HSCT donor reference (hsct_donor)",
    Share.RECIPIENT: "recipient germline reference (recipient_germline)",
}


def _calibrator(
    sample: SampleOnPlate, share: Share, reference: str
) -> tuple[_Calibrator | None, str | None]:
    """The plate's 100 % reference of a share: role ``calibrator`` first, most wells, id."""
    context = sample.context
    ids = {
        Share.INK: sample.genomes.product_ids,
        Share.HSCT_DONOR: sample.genomes.hsct_ids,
        Share.RECIPIENT: sample.genomes.germline_ids,
    }[share]
    present = [sid for sid in ids if sid in context.samples]
    if not present:
        where = f" of {sample.genomes.bank}" if share is Share.INK else ""
        return None, f"no {_REFERENCE_NAMES[share]}{where} on plate"

    def rank(sid: str) -> tuple[int, int, str]:
        role = sample.table[sid].role if sid in sample.table else ""
        order = PRODUCT_ROLES.index(role) if role in PRODUCT_ROLES else len(PRODUCT_ROLES)
        return order, -context.well_counts[sid], sid

    chosen = min(present, key=rank)
    summary = context.summary(chosen, reference)
    failure = _ref_window_failure(summary, f"reference {chosen}", reference, sample.settings)
    if failure:
        return None, failure
    return _Calibrator(chosen, summary), None


def _marker_factors(context: PlateContext, marker: str, reference: str) -> tuple[float, float]:
    """Efficiency-corrected factors when both targets have a standard curve, else E = 2."""
    e_marker, e_ref = context.factor(marker), context.factor(reference)
    if e_marker is not None and e_ref is not None:
        return e_marker, e_ref
    return 2.0, 2.0


def _add_rows(
    sample: SampleOnPlate,
    evaluation: _Evaluation,
    target: str,
    summary: ReplicateSummary,
    sharing: str,
    pct: float | None,
    *,
    reason: str | None = None,
) -> None:
    context = sample.context
    valid = context.wells(sample.sample_id, target)
    every = context.all_wells(sample.sample_id, target)
    # Without omitted wells the valid wells are every well, in order.
    position = None if len(valid) == len(every) else {id(w): i for i, w in enumerate(valid)}
    for i, well in enumerate(every):
        index = i if position is None else position.get(id(well))
        why = reason
        if why is None:
            if well.omitted:
                why = "omitted in the instrument software"
            elif index is not None and index == summary.outlier:
                why = "outlier: farthest from the median while replicate SD exceeded the limit"
            elif index is None or index not in summary.amplified:
                why = "not amplified (Undetermined or Ct above the cut-off)"
        evaluation.marker_rows.append(
            {
                "sample_id": sample.sample_id,
                "method": _QPCR,
                "marker": target,
                "replicate": well.well,
                "sharing": sharing,
                "ct": well.ct,
                "pct_ink": pct,
                "included": why is None,
                "exclusion_reason": why,
                "source_sha256": context.plate,
            }
        )


def _evaluate_marker(
    sample: SampleOnPlate,
    marker: str,
    share: Share,
    calibrator: _Calibrator,
    reference: str,
    evaluation: _Evaluation,
) -> None:
    context, settings = sample.context, sample.settings
    summary = context.summary(sample.sample_id, marker)
    cal = context.summary(calibrator.sample_id, marker)
    ref_summary = context.reference_summary(sample.sample_id, reference, marker)
    cal_ref = context.reference_summary(calibrator.sample_id, reference, marker)
    if cal.mean_ct is None or ref_summary.mean_ct is None or cal_ref.mean_ct is None:
        evaluation.reviews.append(
            f"marker {marker}: reference {calibrator.sample_id} did not amplify"
        )
        _add_rows(
            sample,
            evaluation,
            marker,
            summary,
            share.value,
            None,
            reason="reference did not amplify",
        )
        return
    e_m, e_r = _marker_factors(context, marker, reference)
    cts = (ref_summary.mean_ct, cal.mean_ct, cal_ref.mean_ct, e_m, e_r)
    log2_lod = log2_fraction(settings.ct_cutoff, *cts)
    log2_f: float | None = None
    se, dof = 0.0, 1.0
    if summary.mean_ct is not None:
        log2_f = log2_fraction(summary.mean_ct, *cts)
        # methods.md 3.3: variance of log2 f from the four mean Cts, weighted by log2 E.
        groups = [(summary, e_m), (cal, e_m), (ref_summary, e_r), (cal_ref, e_r)]
        components = []
        for group, factor in groups:
            var, group_dof = _group_stats(group, settings)
            components.append((var * math.log2(factor) ** 2, group_dof))
        se = math.sqrt(sum(v for v, _ in components))
        dof = welch_dof(components)
    evaluation.estimates.append(
        MarkerEstimate(
            marker=marker,
            share=share,
            log2_fraction=log2_f,
            se=se,
            dof=dof,
            log2_lod=log2_lod,
            n_amplified=summary.n_amplified,
            enough=summary.enough,
            sd_above_limit=summary.sd_above_limit,
        )
    )
    pct = None if log2_f is None or share is not Share.INK else pct_from_log2(log2_f)
    _add_rows(sample, evaluation, marker, summary, share.value, pct)


def _collect_blanks(
    sample: SampleOnPlate,
    calibrator: _Calibrator,
    reference: str,
    sample_ref: ReplicateSummary,
    evaluation: _Evaluation,
) -> None:
    """Blank results in % iNK per marker well: 0 when not amplified (LoB input, CLSI EP17-A2).

    Blanks on this plate: its no-template wells and the genomic 0 % iNK samples.
    """
    context, cutoff = sample.context, sample.settings.ct_cutoff
    dna_blanks = [b for b in sample.blank_ids if b in context.samples]
    sample_ct, found = sample_ref.mean_ct, evaluation.blanks_pct
    for marker, (share, _) in sorted(sample.calls.items()):
        cal = context.summary(calibrator.sample_id, marker)
        if share is not Share.INK or cal.mean_ct is None or calibrator.reference.mean_ct is None:
            continue
        e_m, e_r = _marker_factors(context, marker, reference)
        scale = (cal.mean_ct, calibrator.reference.mean_ct, e_m, e_r)
        if sample_ct is not None:
            found.extend(
                blank_pct(w.ct, sample_ct, *scale, cutoff) for w in context.blank_wells(marker)
            )
        for blank in dna_blanks:
            own = context.summary(blank, reference).mean_ct
            if own is None and sample_ct is not None:
                wells = context.wells(blank, marker)
                found.extend(blank_pct(w.ct, sample_ct, *scale, cutoff) for w in wells)
            elif own is not None:
                # With its own reference Ct a DNA blank reads alike for every sample of a plate.
                key = (blank, marker, calibrator.sample_id, reference)
                if key not in context.blank_results:
                    wells = context.wells(blank, marker)
                    context.blank_results[key] = [
                        blank_pct(w.ct, own, *scale, cutoff) for w in wells
                    ]
                found.extend(context.blank_results[key])


def _evaluate_plate(sample: SampleOnPlate, evaluation: _Evaluation) -> None:
    """Add this plate's marker estimates, detail rows and gate outcomes to ``evaluation``."""
    context, settings, sid = sample.context, sample.settings, sample.sample_id
    missing = sample.genomes.missing_reference()
    if missing is None and not any(share is Share.INK for share, _ in sample.calls.values()):
        why = "; ".join(f"{m}: {r}" for m, (_, r) in sorted(sample.calls.items()))
        missing = f"no informative marker for patient {sample.genomes.patient_id} ({why or 'no marker targets'})"
    if missing is not None:
        evaluation.failures.append(missing)
        return
    if context.ntc_failures:
        evaluation.failures.extend(context.ntc_failures)
        return
    reference = context.reference_target(sid)
    if reference is None:
        evaluation.failures.append("DNA input: no reference-gene wells for the sample")
        return
    ref_summary = context.summary(sid, reference)
    _add_rows(sample, evaluation, reference, ref_summary, "reference", None)
    failure = _ref_window_failure(ref_summary, "sample", reference, settings)
    if failure:
        evaluation.failures.append(failure)
        return
    has_wells = context.sample_targets(sid)
    measured = {share for m, (share, _) in sample.calls.items() if share and m in has_wells}
    calibrators: dict[Share, _Calibrator] = {}
    for wanted in sorted(measured | {Share.INK}):
        calibrator, absent = _calibrator(sample, wanted, reference)
        if calibrator is not None:
            calibrators[wanted] = calibrator
        elif wanted is Share.INK:
            evaluation.failures.append(absent or "no calibrator")
            return
        else:
            evaluation.notes.append(f"{wanted.value} markers not used: {absent}")
    evaluation.reference_enough = ref_summary.enough
    if ref_summary.sd_above_limit:
        evaluation.reviews.append(f"reference {reference} replicate SD above limit")
    for marker, (share, reason) in sorted(sample.calls.items()):
        if marker not in has_wells:
            continue
        summary = context.summary(sid, marker)
        if share is None or share not in calibrators:
            why = f"not informative: {reason}" if share is None else "no reference on this plate"
            _add_rows(sample, evaluation, marker, summary, "not_informative", None, reason=why)
            continue
        _evaluate_marker(sample, marker, share, calibrators[share], reference, evaluation)
    _collect_blanks(sample, calibrators[Share.INK], reference, ref_summary, evaluation)


def _combine(estimates: Sequence[MarkerEstimate]) -> tuple[float, float, float]:
    """Mean log2 fraction over markers, its SE and dof (see the qpcr module docstring)."""
    used = [e for e in estimates if e.log2_fraction is not None]
    values = [e.log2_fraction for e in used if e.log2_fraction is not None]
    k = len(values)
    mean = statistics.fmean(values)
    se_within = math.sqrt(sum(e.se**2 for e in used)) / k
    dof_within = welch_dof((e.se**2, e.dof) for e in used)
    if k >= 2:
        se_between = sample_sd(values) / math.sqrt(k)
        if se_between > se_within:
            return mean, se_between, float(k - 1)
    return mean, se_within, dof_within


def _share_estimate(estimates: Sequence[MarkerEstimate]) -> ShareEstimate | None:
    """A non-iNK genome's % from its markers (same combination as iNK)."""
    if not any(e.log2_fraction is not None for e in estimates):
        return None
    mean, se, dof = _combine(estimates)
    low, high = ci_pct_from_ddct(-mean, se=se, dof=dof)
    return ShareEstimate(pct_from_log2(mean), low, high, t_quantile(_T_PROBABILITY, dof))


def _discordance(estimates: Sequence[MarkerEstimate]) -> str | None:
    used = sorted(
        (e for e in estimates if e.log2_fraction is not None), key=lambda e: e.log2_fraction or 0.0
    )
    if len(used) < 2:
        return None
    low, high = used[0], used[-1]
    gap = (high.log2_fraction or 0.0) - (low.log2_fraction or 0.0)
    if gap > _Z_95 * math.hypot(low.se, high.se):
        pct_low = pct_from_log2(low.log2_fraction or 0.0)
        pct_high = pct_from_log2(high.log2_fraction or 0.0)
        return (
            f"markers disagree: {low.marker} {_fmt(pct_low)} % vs {high.marker} {_fmt(pct_high)} %"
        )
    return None


def _limits(
    estimates: Sequence[MarkerEstimate], evaluation: _Evaluation, settings: QpcrSettings
) -> tuple[float | None, float, float]:
    """(LoB, LoD, LoQ) in % iNK (qpcr module docstring; CLSI EP17-A2)."""
    sample_lod = pct_from_log2(statistics.fmean(e.log2_lod for e in estimates))
    blanks = evaluation.blanks_pct
    lob = limit_of_blank(blanks) if len(blanks) >= 2 and any(b > 0 for b in blanks) else None
    lod = max(settings.lod_pct, sample_lod, lob or 0.0)
    return lob, lod, max(settings.loq_pct, lod)


def _shares(
    sample: SampleOnPlate, evaluation: _Evaluation, ink: ShareEstimate
) -> tuple[GenomeShare | None, GenomeShare | None]:
    if sample.genomes.model is not GenomeModel.THREE_GENOME:
        return None, None
    hsct, recipient, notes = other_shares(
        ink,
        _share_estimate(evaluation.of(Share.HSCT_DONOR)),
        _share_estimate(evaluation.of(Share.RECIPIENT)),
    )
    evaluation.notes.extend(notes)
    return hsct, recipient


def finish(sample: SampleOnPlate, evaluation: _Evaluation) -> SampleResult:
    """Turn one sample x plate's marker estimates and gate outcomes into a result."""
    settings = sample.settings
    estimates = evaluation.of(Share.INK)
    if not estimates:
        reasons = evaluation.failures or ["no informative marker measured for this sample"]
        result = failed_result(
            sample.sample_id,
            Method.QPCR,
            list(dict.fromkeys([*reasons, *evaluation.reviews, *sample.notes, *evaluation.notes])),
            lod_pct=settings.lod_pct,
            loq_pct=max(settings.loq_pct, settings.lod_pct),
        )
        return replace(
            result, genome_model=sample.genomes.model, source_sha256=sample.context.plate
        )
    reviews, notes = list(evaluation.reviews), list(sample.notes)
    lob, lod, loq = _limits(estimates, evaluation, settings)
    n_amplified = sum(e.n_amplified for e in estimates)
    n_replicates = sum(1 for row in evaluation.marker_rows if row["sharing"] == _INK)
    pct = ci_low = ci_high = quantile = None
    quantifiable = evaluation.reference_enough and all(
        e.enough and e.log2_fraction is not None for e in estimates
    )
    if n_amplified > 0:
        mean, se, dof = _combine(estimates)
        pct, quantile = pct_from_log2(mean), t_quantile(_T_PROBABILITY, dof)
        ci_low, ci_high = ci_pct_from_ddct(-mean, se=se, dof=dof)
        if not quantifiable:
            notes.append(
                f"{n_amplified}/{n_replicates} marker replicates amplified; fewer than "
                f"{settings.min_replicates} valid replicates per target, not quantifiable"
            )
        if any(e.sd_above_limit for e in estimates):
            reviews.append("marker replicate SD above limit after the outlier rule")
        reviews.extend([d] if (d := _discordance(estimates)) else [])
    detected = n_amplified > 0 and (lob is None or (pct is not None and pct > lob))
    if n_amplified > 0 and not detected and lob is not None:
        reviews.append(f"estimate not above the blank limit LoB {_fmt(lob)} %")
    ink = ink_for_remainder(pct, ci_low, ci_high, lod, quantile or _Z_95)
    hsct, recipient = _shares(sample, evaluation, ink)
    notes.extend(evaluation.notes)
    return SampleResult(
        sample_id=sample.sample_id,
        method=Method.QPCR,
        result_status=classify_result(
            pct, detected=detected, failed=False, loq_pct=loq if quantifiable else math.inf
        ),
        pct_ink_raw=pct,
        ci_low_raw=ci_low,
        ci_high_raw=ci_high,
        lod_pct=lod,
        loq_pct=loq,
        qc_verdict=QcVerdict.REVIEW if reviews else QcVerdict.PASS,
        qc_reasons=tuple(dict.fromkeys(reviews + notes)),
        n_informative=len({e.marker for e in estimates}),
        ci_quantile=quantile,
        genome_model=sample.genomes.model,
        recipient=recipient,
        hsct_donor=hsct,
        source_sha256=sample.context.plate,
    )


def evaluate(sample: SampleOnPlate) -> tuple[SampleResult, list[Row]]:
    """One sample x plate: its result and per-replicate detail rows."""
    evaluation = _Evaluation()
    _evaluate_plate(sample, evaluation)
    result = finish(sample, evaluation)
    return result, evaluation.marker_rows
