"""qPCR chimerism: % iNK from a donor-specific marker against a reference gene (methods.md 3).

A marker is present in the iNK product genome and absent from the patient; its Ct relative to a
reference gene, compared with a 100 % iNK calibrator on the same plate, gives the iNK fraction
(comparative Ct, Livak & Schmittgen 2001), corrected for amplification efficiency when the plate
carries a standard curve for both targets (Pfaffl 2001).

Rules chosen for this project (methods.md [R] items, documented here once):

* Replicates: valid = amplified (Ct not null and <= ``ct_cutoff``) and not omitted. With >= 3 valid
  replicates and SD > ``max_replicate_sd`` the one farthest from the median is dropped once; an SD
  still above the limit (or with < 3 replicates) gives QC ``review`` (methods.md 3.3).
* Informative marker: the product (``donor_reference``/``calibrator`` samples of the patient's lot)
  amplifies it in more than half of its wells, and every well of the patient's
  ``recipient_baseline`` does not (any plate). The reference gene is never a marker.
* Per plate gates: an NTC well amplifying before ``ntc_ct_min`` fails the plate; a reference-gene
  mean Ct outside ``[reference_ct_min, reference_ct_max]`` (sample or calibrator) is a DNA-input
  failure; a plate without a 100 % calibrator of the patient's lot cannot be used. Markers are
  estimated per plate (sample, reference and calibrator on that plate) and pooled across plates.
* Marker combination: the mean of per-marker log2 fractions (a geometric mean of % iNK). SE is the
  larger of the propagated within-marker SE and the between-marker SE (SD / sqrt(k)).
* Detection: 0 amplified marker replicates -> ``not_detected``; any amplified -> detected, but
  ``below_loq`` unless every marker used has >= ``min_replicates`` valid replicates (and the
  reference too) and the estimate is >= LoQ.
* Limits: LoD = max(``settings.lod_pct``, sample LoD, LoB). The sample LoD is the % iNK a marker
  Ct equal to ``ct_cutoff`` would give with this sample's reference Ct and calibrator (geometric
  mean over markers): the smallest fraction this reaction could still call. LoB (CLSI EP17-A2) is
  computed when blank wells on the plate (``negative_control`` samples, the patient's baseline)
  give at least one amplified marker result, blanks counting 0 % when not amplified; a detected
  estimate not above LoB is ``not_detected``. LoQ = max(``settings.loq_pct``, LoD).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import polars as pl

from chimera.calculate.common import PRODUCT_ROLES, is_reference_gene
from chimera.calculate.limits import (
    Method,
    MethodOutput,
    QcVerdict,
    SampleResult,
    classify_result,
    failed_result,
    limit_of_blank,
    markers_frame,
    results_frame,
)
from chimera.calculate.stats import t_quantile
from chimera.errors import NotChimerismAssayError
from chimera.settings import QpcrSettings

_Z_95 = 1.959963984540054  # two-sided 95 % normal quantile, for marker discordance


def amplification_factor(slope: float) -> float:
    """Amplification factor E = 10^(-1/slope) of a standard curve (2.0 = 100 %; Pfaffl 2001).

    Examples
    --------
    >>> round(amplification_factor(-3.321928), 4)
    2.0
    """
    if slope >= 0:
        msg = f"a standard-curve slope must be negative, got {slope}"
        raise ValueError(msg)
    return float(10 ** (-1 / slope))


def efficiency_from_slope(slope: float) -> float:
    """Amplification efficiency in % from a standard-curve slope: (10^(-1/slope) - 1) * 100.

    Examples
    --------
    >>> round(efficiency_from_slope(-3.196), 2), round(efficiency_from_slope(-3.383), 2)
    (105.54, 97.51)
    """
    return (amplification_factor(slope) - 1) * 100


def quantity_from_ct(ct: float, *, slope: float, intercept: float) -> float:
    """Standard-curve quantity Q = 10^((Ct - intercept) / slope) (methods.md 3.2).

    Examples
    --------
    >>> round(quantity_from_ct(25.711, slope=-3.196, intercept=41.924))
    118278
    """
    return float(10 ** ((ct - intercept) / slope))


def delta_ct(ct_marker: float, ct_reference: float) -> float:
    """ΔCt = Ct_marker - Ct_reference (Livak & Schmittgen 2001).

    Examples
    --------
    >>> round(delta_ct(31.051958, 14.079124), 6)
    16.972834
    """
    return ct_marker - ct_reference


def delta_delta_ct(*, delta_ct_sample: float, delta_ct_calibrator: float) -> float:
    """ΔΔCt = ΔCt_sample - ΔCt_calibrator (Livak & Schmittgen 2001).

    Examples
    --------
    >>> round(delta_delta_ct(delta_ct_sample=16.972834, delta_ct_calibrator=16.577312), 6)
    0.395522
    """
    return delta_ct_sample - delta_ct_calibrator


def pct_ink_ddct(delta_delta_ct: float) -> float:
    """% iNK = 100 * 2^(-ΔΔCt) against a 100 % iNK calibrator (methods.md 3.1).

    Examples
    --------
    >>> round(pct_ink_ddct(0.395522), 4)
    76.0214
    """
    return 100.0 * math.pow(2.0, -delta_delta_ct)


def pct_ink_pfaffl(
    *,
    ct_marker_sample: float,
    ct_reference_sample: float,
    ct_marker_calibrator: float,
    ct_reference_calibrator: float,
    amplification_marker: float = 2.0,
    amplification_reference: float = 2.0,
) -> float:
    """Efficiency-corrected % iNK = 100 * E_M^(ΔCt_M) / E_ref^(ΔCt_ref) (Pfaffl 2001).

    ΔCt_X = Ct_X,calibrator - Ct_X,sample; ``amplification_*`` are the factors E (2.0 = 100 %).
    With E = 2 for both targets this equals :func:`pct_ink_ddct`.

    Examples
    --------
    >>> round(pct_ink_pfaffl(ct_marker_sample=31.051958, ct_reference_sample=14.079124,
    ...                      ct_marker_calibrator=30.0, ct_reference_calibrator=13.422688), 4)
    76.0214
    """
    log2_fraction = _log2_fraction(
        ct_marker_sample,
        ct_reference_sample,
        ct_marker_calibrator,
        ct_reference_calibrator,
        amplification_marker,
        amplification_reference,
    )
    return _pct(log2_fraction)


def _pct(log2_fraction: float) -> float:
    """% iNK from a log2 fraction: 100 * 2^log2_f."""
    return 100.0 * math.pow(2.0, log2_fraction)


def _log2_fraction(
    ct_m_s: float, ct_r_s: float, ct_m_c: float, ct_r_c: float, e_m: float, e_r: float
) -> float:
    # Pfaffl 2001 in log2 form: log2 f = dCt_M * log2 E_M - dCt_ref * log2 E_ref (= -ΔΔCt at E = 2)
    return (ct_m_c - ct_m_s) * math.log2(e_m) - (ct_r_c - ct_r_s) * math.log2(e_r)


def se_delta_ct(*, sd_marker: float, n_marker: int, sd_reference: float, n_reference: int) -> float:
    """SE(ΔCt) = sqrt(SD_M^2 / n_M + SD_ref^2 / n_ref) (methods.md 3.3, error propagation).

    Examples
    --------
    >>> round(se_delta_ct(sd_marker=0.3, n_marker=3, sd_reference=0.4, n_reference=2), 6)
    0.331662
    """
    return math.sqrt(sd_marker**2 / n_marker + sd_reference**2 / n_reference)


def se_delta_delta_ct(*, se_sample: float, se_calibrator: float) -> float:
    """SE(ΔΔCt) = sqrt(SE(ΔCt_sample)^2 + SE(ΔCt_calibrator)^2) (methods.md 3.3).

    Examples
    --------
    >>> se_delta_delta_ct(se_sample=0.3, se_calibrator=0.4)
    0.5
    """
    return math.hypot(se_sample, se_calibrator)


def ci_pct_from_ddct(
    delta_delta_ct: float, *, se: float, dof: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Asymmetric CI of % iNK: 100 * 2^(-(ΔΔCt ± t_{(1+c)/2, dof} * SE)) (methods.md 3.3).

    Examples
    --------
    >>> low, high = ci_pct_from_ddct(1.0, se=0.2, dof=4)
    >>> round(low, 2), round(high, 2)
    (34.03, 73.47)
    """
    half_width = t_quantile((1.0 + confidence) / 2.0, dof) * se
    return pct_ink_ddct(delta_delta_ct + half_width), pct_ink_ddct(delta_delta_ct - half_width)


@dataclass(frozen=True)
class ReplicateSummary:
    """Replicate Ct values of one target in one sample after the outlier rule (methods.md 3.3)."""

    n_total: int
    """Non-omitted replicate wells."""
    amplified: tuple[int, ...]
    """Positions (in the input order) of replicates with Ct <= ``ct_cutoff``."""
    kept: tuple[int, ...]
    """Amplified positions used for the mean (``amplified`` minus a dropped outlier)."""
    outlier: int | None
    """Position dropped by the outlier rule, if any."""
    mean_ct: float | None
    sd_ct: float | None
    """Sample SD of the kept Ct values; None with fewer than 2."""
    sd_above_limit: bool
    """SD still above the limit after the outlier rule (QC ``review``)."""
    enough: bool
    """At least ``min_replicates`` kept replicates."""

    @property
    def n_amplified(self) -> int:
        """Replicates with a Ct at or below the cut-off."""
        return len(self.amplified)

    @property
    def n_kept(self) -> int:
        """Replicates used for the mean."""
        return len(self.kept)


def summarise_replicates(
    cts: Sequence[float | None],
    *,
    ct_cutoff: float,
    max_sd: float,
    min_replicates: int,
) -> ReplicateSummary:
    """Mean, SD and count of valid replicates with the declared outlier rule (methods.md 3.3).

    Valid = Ct not null and <= ``ct_cutoff`` (null = Undetermined, a censored value). With >= 3
    valid replicates and SD > ``max_sd`` the replicate farthest from the median is dropped once.

    Examples
    --------
    >>> s = summarise_replicates([25.0, 25.1, 27.0], ct_cutoff=40, max_sd=0.5, min_replicates=2)
    >>> s.outlier, round(s.mean_ct, 2), s.sd_above_limit
    (2, 25.05, False)
    >>> summarise_replicates([None, 41.0], ct_cutoff=40, max_sd=0.5, min_replicates=2).n_amplified
    0
    """
    amplified = tuple(i for i, ct in enumerate(cts) if ct is not None and ct <= ct_cutoff)
    kept = amplified
    outlier: int | None = None
    values = [cts[i] for i in kept]
    sd = statistics.stdev(v for v in values if v is not None) if len(values) >= 2 else None
    if sd is not None and sd > max_sd and len(kept) >= 3:
        median = statistics.median(v for v in values if v is not None)
        outlier = max(kept, key=lambda i: (abs((cts[i] or 0.0) - median), i))
        kept = tuple(i for i in kept if i != outlier)
        values = [cts[i] for i in kept]
        sd = statistics.stdev(v for v in values if v is not None)
    numbers = [v for v in values if v is not None]
    return ReplicateSummary(
        n_total=len(cts),
        amplified=amplified,
        kept=kept,
        outlier=outlier,
        mean_ct=statistics.fmean(numbers) if numbers else None,
        sd_ct=sd,
        sd_above_limit=sd is not None and sd > max_sd,
        enough=len(kept) >= min_replicates,
    )


def assert_chimerism_plate(wells: pl.DataFrame, *, settings: QpcrSettings, file_name: str) -> None:
    """Raise when a parsed plate (``QpcrWells``) cannot be a chimerism assay.

    A chimerism plate needs a reference-gene target (``settings.reference_genes``) and at least
    one other (marker) target.

    Raises
    ------
    NotChimerismAssayError
        With what was looked for, what was found and how to fix it.
    """
    targets = sorted({t for t in wells.get_column("target").to_list() if t})
    found = ", ".join(targets[:12]) + (
        f" and {len(targets) - 12} more" if len(targets) > 12 else ""
    )
    found = found or "no target names at all"
    expected = ", ".join(settings.reference_genes)
    references = [t for t in targets if is_reference_gene(t, settings.reference_genes)]
    if not references:
        msg = (
            f"{file_name}: no reference-gene target (expected one of {expected}); found targets "
            f"{found}. This plate is not a chimerism assay, or its reference gene has another "
            "name: add it to qpcr.reference_genes in chimera.toml"
        )
        raise NotChimerismAssayError(msg)
    if len(references) == len(targets):
        msg = (
            f"{file_name}: only reference-gene target(s) {', '.join(references)} and no "
            "donor-specific marker target; a chimerism plate needs at least one marker "
            "(e.g. an iNK-specific indel) beside the reference gene. This plate is not a "
            "chimerism assay (e.g. a reference-gene standard curve)"
        )
        raise NotChimerismAssayError(msg)


def _marker_calls(
    wells: pl.DataFrame,
    *,
    product_sample_ids: Collection[str],
    baseline_sample_ids: Collection[str],
    settings: QpcrSettings,
) -> dict[str, str | None]:
    """Return each non-reference target with None when informative, else the reason it is not."""
    calls: dict[str, str | None] = {}
    usable = wells.filter(~pl.col("omitted") & pl.col("target").is_not_null())
    amplified = pl.col("ct").is_not_null() & (pl.col("ct") <= settings.ct_cutoff)
    per_target = (
        usable.group_by("target")
        .agg(
            product_n=pl.col("sample_id").is_in(list(product_sample_ids)).sum(),
            product_amp=(pl.col("sample_id").is_in(list(product_sample_ids)) & amplified).sum(),
            baseline_n=pl.col("sample_id").is_in(list(baseline_sample_ids)).sum(),
            baseline_amp=(pl.col("sample_id").is_in(list(baseline_sample_ids)) & amplified).sum(),
        )
        .sort("target")
    )
    for row in per_target.iter_rows(named=True):
        target = str(row["target"])
        if is_reference_gene(target, settings.reference_genes):
            continue
        if row["product_n"] == 0:
            calls[target] = "the iNK product (calibrator/donor reference) was not tested"
        elif 2 * row["product_amp"] <= row["product_n"]:
            calls[target] = (
                f"the iNK product amplified in {row['product_amp']}/{row['product_n']} wells"
            )
        elif row["baseline_n"] == 0:
            calls[target] = "the patient's pre-dose baseline was not tested"
        elif row["baseline_amp"] > 0:
            calls[target] = (
                f"the patient's baseline amplified in {row['baseline_amp']}/{row['baseline_n']} "
                "wells (marker not donor-specific for this patient)"
            )
        else:
            calls[target] = None
    return calls


def informative_markers(
    wells: pl.LazyFrame | pl.DataFrame,
    *,
    product_sample_ids: Collection[str],
    baseline_sample_ids: Collection[str],
    settings: QpcrSettings,
) -> list[str]:
    """Return the donor-specific marker targets for one patient, sorted by name.

    ``wells`` has ``QpcrWells`` columns (any plates). A marker is informative when the product
    samples amplify it (Ct <= ``ct_cutoff``) in more than half of their wells and no well of the
    patient's baseline samples does; reference-gene targets are never markers.
    """
    frame = wells.collect() if isinstance(wells, pl.LazyFrame) else wells
    calls = _marker_calls(
        frame,
        product_sample_ids=product_sample_ids,
        baseline_sample_ids=baseline_sample_ids,
        settings=settings,
    )
    return [target for target, reason in calls.items() if reason is None]


@dataclass
class _Well:
    plate: str
    sample_id: str | None
    target: str | None
    well: str
    ct: float | None
    omitted: bool
    task: str


@dataclass(frozen=True)
class _MarkerEstimate:
    """One marker on one plate: log2 fraction of iNK, its SE and degrees of freedom."""

    marker: str
    plate: str
    log2_fraction: float | None
    se: float
    dof: float
    log2_lod: float
    n_amplified: int
    enough: bool
    sd_above_limit: bool


@dataclass
class _Evaluation:
    estimates: list[_MarkerEstimate] = field(default_factory=list)
    marker_rows: list[dict[str, object]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    reviews: list[str] = field(default_factory=list)
    blanks_pct: list[float] = field(default_factory=list)
    reference_enough: bool = True


def _factors(plate_rows: pl.DataFrame, target: str) -> float | None:
    """Amplification factor E of ``target`` on one plate from its slope or efficiency, if any."""
    rows = plate_rows.filter(pl.col("target") == target)
    slopes = [s for s in rows.get_column("slope").to_list() if s is not None and s < 0]
    factor: float | None = None
    if slopes:
        factor = amplification_factor(statistics.median(slopes))
    else:
        effs = [e for e in rows.get_column("efficiency_pct").to_list() if e is not None and e > 0]
        if effs:
            factor = 1.0 + statistics.median(effs) / 100.0
    # A factor outside (1, 3) is not a usable standard curve (E = 2 is 100 % efficiency).
    return factor if factor is not None and 1.0 < factor < 3.0 else None


def _welch_dof(components: Iterable[tuple[float, float]]) -> float:
    """Welch-Satterthwaite dof for a sum of variances given as (variance, dof) pairs."""
    items = [(v, d) for v, d in components if d > 0]
    total = sum(v for v, _ in items)
    denominator = sum(v * v / d for v, d in items)
    if total <= 0 or denominator <= 0:
        return float(max(1.0, sum(d for _, d in items)))
    return max(1.0, total * total / denominator)


def _group_stats(summary: ReplicateSummary, settings: QpcrSettings) -> tuple[float, float, int]:
    """(variance of the mean Ct, dof, n) of a replicate group; a single well uses the SD limit."""
    n = max(summary.n_kept, 1)
    sd = summary.sd_ct if summary.sd_ct is not None else settings.max_replicate_sd
    return sd * sd / n, float(max(n - 1, 1)), n


def _fmt(value: float) -> str:
    return f"{value:.3g}" if value < 0.1 else f"{value:.2f}"


class _PlateContext:
    """Everything about one plate that the sample evaluations share."""

    def __init__(self, plate: str, rows: pl.DataFrame, settings: QpcrSettings) -> None:
        self.plate = plate
        self.rows = rows
        self.settings = settings
        self.by_sample_target: dict[tuple[str | None, str | None], list[_Well]] = defaultdict(list)
        self.ntc_failures: list[str] = []
        for row in rows.sort("well").iter_rows(named=True):
            well = _Well(
                plate=plate,
                sample_id=row["sample_id"],
                target=row["target"],
                well=row["well"],
                ct=row["ct"],
                omitted=bool(row["omitted"]),
                task=row["task"],
            )
            self.by_sample_target[(well.sample_id, well.target)].append(well)
            if (
                well.task == "ntc"
                and not well.omitted
                and well.ct is not None
                and well.ct < settings.ntc_ct_min
            ):
                self.ntc_failures.append(
                    f"NTC well {well.well} ({well.target}) amplified at Ct {well.ct:.2f} "
                    f"(< {settings.ntc_ct_min:g}): plate contaminated"
                )
        self.samples = {s for s, _ in self.by_sample_target if s is not None}
        self._factor_cache: dict[str, float | None] = {}

    def wells(self, sample_id: str, target: str) -> list[_Well]:
        return [w for w in self.by_sample_target.get((sample_id, target), []) if not w.omitted]

    def all_wells(self, sample_id: str, target: str) -> list[_Well]:
        return list(self.by_sample_target.get((sample_id, target), []))

    def summary(self, sample_id: str, target: str) -> ReplicateSummary:
        return summarise_replicates(
            [w.ct for w in self.wells(sample_id, target)],
            ct_cutoff=self.settings.ct_cutoff,
            max_sd=self.settings.max_replicate_sd,
            min_replicates=self.settings.min_replicates,
        )

    def factor(self, target: str) -> float | None:
        if target not in self._factor_cache:
            self._factor_cache[target] = _factors(self.rows, target)
        return self._factor_cache[target]

    def reference_target(self, sample_id: str) -> str | None:
        """Return the first configured reference gene this sample has wells for on this plate."""
        targets = [t for (s, t) in self.by_sample_target if s == sample_id and t is not None]
        for gene in self.settings.reference_genes:
            for target in targets:
                if is_reference_gene(target, (gene,)):
                    return target
        return None


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


def _choose_calibrator(
    context: _PlateContext, product_ids: Sequence[tuple[str, str]]
) -> str | None:
    """Pick the plate's 100 % calibrator: role ``calibrator`` first, then most wells, then id."""
    present = [(sid, role) for sid, role in product_ids if sid in context.samples]
    if not present:
        return None
    counts = {
        sid: sum(len(v) for (s, _), v in context.by_sample_target.items() if s == sid)
        for sid, _ in present
    }
    present.sort(key=lambda p: (PRODUCT_ROLES.index(p[1]), -counts[p[0]], p[0]))
    return present[0][0]


@dataclass(frozen=True)
class _Patient:
    patient_id: str
    lot: str | None
    product_ids: tuple[tuple[str, str], ...]
    baseline_ids: tuple[str, ...]
    calls: dict[str, str | None]


def _evaluate_plate(
    sample_id: str,
    context: _PlateContext,
    patient: _Patient,
    blank_ids: Sequence[str],
    *,
    replicate_prefix: str,
    evaluation: _Evaluation,
) -> None:
    """Add this plate's marker estimates, detail rows and gate outcomes to ``evaluation``."""
    settings = context.settings
    label = f"plate {context.plate[:12]}"
    if context.ntc_failures:
        evaluation.failures.extend(f"{label}: {reason}" for reason in context.ntc_failures)
        return
    reference = context.reference_target(sample_id)
    if reference is None:
        evaluation.failures.append(f"{label}: DNA input: no reference-gene wells for the sample")
        return
    ref_summary = context.summary(sample_id, reference)
    _add_rows(
        evaluation, context, sample_id, reference, ref_summary, replicate_prefix, "reference", None
    )
    failure = _ref_window_failure(ref_summary, "sample", reference, settings)
    if failure:
        evaluation.failures.append(f"{label}: {failure}")
        return
    calibrator = _choose_calibrator(context, patient.product_ids)
    if calibrator is None:
        lot = patient.lot or "unknown"
        evaluation.failures.append(
            f"{label}: no 100 % calibrator on plate (expected a donor_reference or calibrator "
            f"sample of product lot {lot})"
        )
        return
    cal_ref = context.summary(calibrator, reference)
    failure = _ref_window_failure(cal_ref, f"calibrator {calibrator}", reference, settings)
    if failure:
        evaluation.failures.append(f"{label}: {failure}")
        return
    if not ref_summary.enough:
        evaluation.reference_enough = False
    if ref_summary.sd_above_limit:
        evaluation.reviews.append(f"reference {reference} replicate SD above limit")
    e_ref_curve = context.factor(reference)
    for marker, reason in sorted(patient.calls.items()):
        if not context.all_wells(sample_id, marker):
            continue
        if reason is not None:
            summary = context.summary(sample_id, marker)
            _add_rows(
                evaluation,
                context,
                sample_id,
                marker,
                summary,
                replicate_prefix,
                "not_informative",
                None,
                reason=f"not informative: {reason}",
            )
            continue
        _evaluate_marker(
            sample_id, marker, context, calibrator, ref_summary, cal_ref,
            e_ref_curve, replicate_prefix, evaluation,
        )  # fmt: skip
    for blank in blank_ids:
        _collect_blanks(
            blank, context, patient, calibrator, reference, cal_ref, ref_summary, evaluation
        )


def _marker_factors(
    context: _PlateContext, marker: str, e_ref_curve: float | None
) -> tuple[float, float]:
    """Efficiency-corrected factors when both targets have a standard curve, else E = 2."""
    e_marker = context.factor(marker)
    if e_marker is not None and e_ref_curve is not None:
        return e_marker, e_ref_curve
    return 2.0, 2.0


def _evaluate_marker(
    sample_id: str,
    marker: str,
    context: _PlateContext,
    calibrator: str,
    ref_summary: ReplicateSummary,
    cal_ref: ReplicateSummary,
    e_ref_curve: float | None,
    replicate_prefix: str,
    evaluation: _Evaluation,
) -> None:
    settings = context.settings
    summary = context.summary(sample_id, marker)
    cal = context.summary(calibrator, marker)
    if cal.mean_ct is None:
        evaluation.reviews.append(
            f"marker {marker}: calibrator {calibrator} did not amplify on plate {context.plate[:12]}"
        )
        _add_rows(
            evaluation,
            context,
            sample_id,
            marker,
            summary,
            replicate_prefix,
            "donor_only",
            None,
            reason="calibrator did not amplify",
        )
        return
    e_m, e_r = _marker_factors(context, marker, e_ref_curve)
    if ref_summary.mean_ct is None or cal_ref.mean_ct is None:  # excluded by the plate gates
        return
    log2_lod = _log2_fraction(
        settings.ct_cutoff, ref_summary.mean_ct, cal.mean_ct, cal_ref.mean_ct, e_m, e_r
    )
    log2_f: float | None = None
    se, dof = 0.0, 1.0
    if summary.mean_ct is not None:
        log2_f = _log2_fraction(
            summary.mean_ct, ref_summary.mean_ct, cal.mean_ct, cal_ref.mean_ct, e_m, e_r
        )
        # methods.md 3.3: variance of log2 f from the four mean Cts, weighted by log2 E.
        groups = [
            (_group_stats(summary, settings), math.log2(e_m)),
            (_group_stats(cal, settings), math.log2(e_m)),
            (_group_stats(ref_summary, settings), math.log2(e_r)),
            (_group_stats(cal_ref, settings), math.log2(e_r)),
        ]
        components = [(var * w * w, d) for (var, d, _), w in groups]
        se = math.sqrt(sum(v for v, _ in components))
        dof = _welch_dof(components)
    estimate = _MarkerEstimate(
        marker=marker,
        plate=context.plate,
        log2_fraction=log2_f,
        se=se,
        dof=dof,
        log2_lod=log2_lod,
        n_amplified=summary.n_amplified,
        enough=summary.enough,
        sd_above_limit=summary.sd_above_limit,
    )
    evaluation.estimates.append(estimate)
    pct = None if log2_f is None else _pct(log2_f)
    _add_rows(evaluation, context, sample_id, marker, summary, replicate_prefix, "donor_only", pct)


def _collect_blanks(
    blank: str,
    context: _PlateContext,
    patient: _Patient,
    calibrator: str,
    reference: str,
    cal_ref: ReplicateSummary,
    sample_ref: ReplicateSummary,
    evaluation: _Evaluation,
) -> None:
    """Blank results in % iNK per marker well: 0 when not amplified (LoB input, CLSI EP17-A2)."""
    settings = context.settings
    if blank not in context.samples:
        return
    own_ref = context.summary(blank, reference)
    ref_ct = own_ref.mean_ct if own_ref.mean_ct is not None else sample_ref.mean_ct
    for marker, reason in patient.calls.items():
        if reason is not None:
            continue
        cal = context.summary(calibrator, marker)
        if cal.mean_ct is None or ref_ct is None or cal_ref.mean_ct is None:
            continue
        e_m, e_r = _marker_factors(context, marker, context.factor(reference))
        for well in context.wells(blank, marker):
            if well.ct is None or well.ct > settings.ct_cutoff:
                evaluation.blanks_pct.append(0.0)
            else:
                log2_f = _log2_fraction(well.ct, ref_ct, cal.mean_ct, cal_ref.mean_ct, e_m, e_r)
                evaluation.blanks_pct.append(_pct(log2_f))


def _add_rows(
    evaluation: _Evaluation,
    context: _PlateContext,
    sample_id: str,
    target: str,
    summary: ReplicateSummary,
    replicate_prefix: str,
    sharing: str,
    pct: float | None,
    *,
    reason: str | None = None,
) -> None:
    valid = context.wells(sample_id, target)
    position = {id(w): i for i, w in enumerate(valid)}
    for well in context.all_wells(sample_id, target):
        index = position.get(id(well))
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
                "sample_id": sample_id,
                "method": Method.QPCR.value,
                "marker": target,
                "replicate": f"{replicate_prefix}{well.well}",
                "sharing": sharing,
                "ct": well.ct,
                "pct_ink": pct,
                "included": why is None,
                "exclusion_reason": why,
            }
        )


def _combine(estimates: Sequence[_MarkerEstimate]) -> tuple[float, float, float]:
    """Mean log2 fraction over markers, its SE and dof (see the module docstring)."""
    values = [e.log2_fraction for e in estimates if e.log2_fraction is not None]
    used = [e for e in estimates if e.log2_fraction is not None]
    k = len(values)
    mean = statistics.fmean(values)
    se_within = math.sqrt(sum(e.se**2 for e in used)) / k
    dof_within = _welch_dof((e.se**2, e.dof) for e in used)
    if k >= 2:
        se_between = statistics.stdev(values) / math.sqrt(k)
        if se_between > se_within:
            return mean, se_between, float(k - 1)
    return mean, se_within, dof_within


def _discordance(estimates: Sequence[_MarkerEstimate]) -> str | None:
    used = sorted(
        (e for e in estimates if e.log2_fraction is not None), key=lambda e: e.log2_fraction or 0.0
    )
    if len(used) < 2:
        return None
    low, high = used[0], used[-1]
    gap = (high.log2_fraction or 0.0) - (low.log2_fraction or 0.0)
    if gap > _Z_95 * math.hypot(low.se, high.se):
        pct_low = _pct(low.log2_fraction or 0.0)
        pct_high = _pct(high.log2_fraction or 0.0)
        return (
            f"markers disagree: {low.marker} {_fmt(pct_low)} % vs {high.marker} {_fmt(pct_high)} %"
        )
    return None


def _finish(sample_id: str, evaluation: _Evaluation, settings: QpcrSettings) -> SampleResult:
    """Turn one sample's marker estimates and gate outcomes into a :class:`SampleResult`."""
    base_lod = settings.lod_pct
    if not evaluation.estimates:
        reasons = evaluation.failures or ["no informative marker measured for this sample"]
        return failed_result(
            sample_id,
            Method.QPCR,
            list(dict.fromkeys(reasons + evaluation.reviews)),
            lod_pct=base_lod,
            loq_pct=max(settings.loq_pct, base_lod),
        )
    reviews = list(evaluation.reviews)
    notes: list[str] = []
    if evaluation.failures:
        reviews.extend(f"{reason} (plate not used)" for reason in evaluation.failures)
    estimates = evaluation.estimates
    markers = sorted({e.marker for e in estimates})
    sample_lod = _pct(statistics.fmean(e.log2_lod for e in estimates))
    lob: float | None = None
    blanks = evaluation.blanks_pct
    if len(blanks) >= 2 and any(b > 0 for b in blanks):
        lob = limit_of_blank(blanks)
    lod = max(base_lod, sample_lod, lob or 0.0)
    loq = max(settings.loq_pct, lod)
    n_amplified = sum(e.n_amplified for e in estimates)
    n_replicates = sum(1 for row in evaluation.marker_rows if row["sharing"] == "donor_only")
    pct: float | None = None
    ci_low = ci_high = None
    quantifiable = (
        evaluation.reference_enough
        and all(e.enough for e in estimates)
        and all(e.log2_fraction is not None for e in estimates)
    )
    if n_amplified > 0:
        mean, se, dof = _combine(estimates)
        pct = _pct(mean)
        ci_low, ci_high = ci_pct_from_ddct(-mean, se=se, dof=dof)
        if not quantifiable:
            notes.append(
                f"{n_amplified}/{n_replicates} marker replicates amplified; fewer than "
                f"{settings.min_replicates} valid replicates per target, not quantifiable"
            )
        if any(e.sd_above_limit for e in estimates):
            reviews.append("marker replicate SD above limit after the outlier rule")
        if (discord := _discordance(estimates)) is not None:
            reviews.append(discord)
    detected = n_amplified > 0 and (lob is None or (pct is not None and pct > lob))
    if n_amplified > 0 and not detected and lob is not None:
        reviews.append(f"estimate not above the blank limit LoB {_fmt(lob)} %")
    status = classify_result(
        pct, detected=detected, failed=False, loq_pct=loq if quantifiable else math.inf
    )
    return SampleResult(
        sample_id=sample_id,
        method=Method.QPCR,
        result_status=status,
        pct_ink_raw=pct,
        ci_low_raw=ci_low,
        ci_high_raw=ci_high,
        lod_pct=lod,
        loq_pct=loq,
        qc_verdict=QcVerdict.REVIEW if reviews else QcVerdict.PASS,
        qc_reasons=tuple(dict.fromkeys(reviews + notes)),
        n_informative=len(markers),
    )


def _prepare(wells: pl.DataFrame) -> pl.DataFrame:
    if "source_sha256" not in wells.columns:
        wells = wells.with_columns(source_sha256=pl.lit("plate"))
    return wells.with_columns(
        pl.col("source_sha256").cast(pl.String).fill_null("plate"),
        pl.col("omitted").fill_null(value=False),
    )


def _patients(samples: pl.DataFrame) -> dict[str, dict[str, object]]:
    """Index the sample table: role, patient and product lot per sample id."""
    if "product_lot" not in samples.columns:
        samples = samples.with_columns(product_lot=pl.lit(None, dtype=pl.String))
    index: dict[str, dict[str, object]] = {}
    for row in samples.select("sample_id", "patient_id", "role", "product_lot").iter_rows(
        named=True
    ):
        if row["sample_id"] is not None:
            index[str(row["sample_id"])] = row
    return index


def _patient_lot(
    patient_id: str, sample_id: str, index: dict[str, dict[str, object]]
) -> str | None:
    own = index[sample_id].get("product_lot")
    if own:
        return str(own)
    lots = {
        str(r["product_lot"])
        for r in index.values()
        if r["patient_id"] == patient_id and r["role"] not in PRODUCT_ROLES and r["product_lot"]
    }
    return lots.pop() if len(lots) == 1 else None


def compute_qpcr_chimerism(
    wells: pl.LazyFrame, samples: pl.LazyFrame, *, settings: QpcrSettings
) -> MethodOutput:
    """Compute % iNK for every post-dose sample in ``wells`` (methods.md 3-4).

    Parameters
    ----------
    wells
        ``QpcrWells`` columns plus ``source_sha256`` (the plate id), for every relevant sample
        including product, baseline, blank and NTC wells, on one or several plates.
    samples
        ``sample_id``, ``patient_id``, ``role`` and ``product_lot`` (``Manifest`` columns).
    settings
        Thresholds; the rules are listed in the module docstring.

    Returns
    -------
    MethodOutput
        One ``results`` row per post-dose sample with wells; ``markers`` holds one row per
        replicate well of each marker and of the reference gene.
    """
    well_rows = _prepare(wells.collect())
    index = _patients(samples.collect())
    contexts = {
        str(plate): _PlateContext(str(plate), rows, settings)
        for (plate,), rows in well_rows.partition_by("source_sha256", as_dict=True).items()
    }
    blank_roles = {"negative_control"}
    results: list[SampleResult] = []
    marker_rows: list[dict[str, object]] = []
    patient_cache: dict[tuple[str, str | None], _Patient] = {}
    post_dose = sorted(
        sid
        for sid, row in index.items()
        if row["role"] == "post_dose" and any(sid in c.samples for c in contexts.values())
    )
    for sample_id in post_dose:
        patient_id = str(index[sample_id]["patient_id"])
        lot = _patient_lot(patient_id, sample_id, index)
        key = (patient_id, lot)
        if key not in patient_cache:
            product_ids = tuple(
                (sid, str(r["role"]))
                for sid, r in sorted(index.items())
                if r["role"] in PRODUCT_ROLES
                and (lot is None or str(r["product_lot"] or r["patient_id"]) == lot)
            )
            baseline_ids = tuple(
                sid
                for sid, r in sorted(index.items())
                if r["role"] == "recipient_baseline" and r["patient_id"] == patient_id
            )
            calls = _marker_calls(
                well_rows,
                product_sample_ids=[sid for sid, _ in product_ids],
                baseline_sample_ids=baseline_ids,
                settings=settings,
            )
            patient_cache[key] = _Patient(patient_id, lot, product_ids, baseline_ids, calls)
        patient = patient_cache[key]
        blank_ids = sorted(
            {sid for sid, r in index.items() if r["role"] in blank_roles}
            | set(patient.baseline_ids)
        )
        plates = [c for _, c in sorted(contexts.items()) if sample_id in c.samples]
        evaluation = _Evaluation()
        if lot is None:
            evaluation.reviews.append("product lot of the patient unknown; any iNK calibrator used")
        if not any(reason is None for reason in patient.calls.values()):
            why = (
                "; ".join(f"{m}: {r}" for m, r in sorted(patient.calls.items()))
                or "no marker targets"
            )
            evaluation.failures.append(f"no informative marker for patient {patient_id} ({why})")
        else:
            for context in plates:
                prefix = f"{context.plate[:8]}:" if len(plates) > 1 else ""
                _evaluate_plate(
                    sample_id, context, patient, blank_ids,
                    replicate_prefix=prefix, evaluation=evaluation,
                )  # fmt: skip
        results.append(_finish(sample_id, evaluation, settings))
        marker_rows.extend(evaluation.marker_rows)
    return MethodOutput(results=results_frame(results), markers=markers_frame(marker_rows))
