"""ddPCR chimerism: Poisson copy estimates, confidence intervals, zygosity and per-sample % iNK.

Sources (methods.md section 5): Bio-Rad ddPCR Applications Guide and popPCR ``calculateConc``
(Poisson estimate, 5.1); the zygosity factor k = n_ref / n_M (5.2); the two Wald conventions,
the ratio interval of QX Manager and the exact interval at low counts (5.3); replicate pooling
(5.4); QC gates (5.5); LoB from false-positive droplets (5.6, Sci Rep 2022); sample-specific LoD
(methods.md section 4). Every function here is pure: no file I/O, no clock, no logging.

Decisions recorded here [R]:

* z = 1.96 for 95 %: QX Manager and popPCR round the normal quantile, and only the rounded value
  reproduces their printed bounds to < 1e-7 (``PoissonConfMin/Max``, ``PoissonRatioMin/Max``).
* Zygosity factor from the product reference: λ_M/λ_ref below √0.5 (the log-scale midpoint of
  0.5 and 1) is a heterozygous marker (k = 2), at or above it homozygous (k = 1); a ratio outside
  0.25-1.5 is no germline marker and the marker is not used.
* The reference gene is recognised **by name** (``DdpcrSettings.reference_genes``); an export's
  ``Reference`` label alone is not enough, because QX Manager labels the reference of every
  copy-number run the same way (see :func:`assert_chimerism_plate`).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

import polars as pl

from chimera.calculate.common import PRODUCT_ROLES, is_reference_gene
from chimera.calculate.limits import (
    Method,
    MethodOutput,
    QcVerdict,
    SampleResult,
    classify_result,
    failed_result,
    markers_frame,
    results_frame,
)
from chimera.calculate.stats import beta_quantile, poisson_mean_for_cdf
from chimera.errors import NotChimerismAssayError
from chimera.settings import DdpcrSettings

EXACT_MAX_POSITIVES = 25
"""Up to this many positive droplets the exact (Clopper-Pearson) interval is used (methods.md 5.3)."""
HETEROZYGOUS_HOMOZYGOUS_BOUNDARY = math.sqrt(0.5)
"""Product λ_M/λ_ref below this is heterozygous (k = 2), else homozygous (k = 1) [R]."""
GERMLINE_RATIO_RANGE = (0.25, 1.5)
"""Product λ_M/λ_ref outside this range is no germline donor marker [R]."""
BASELINE_ABSENT_MAX_PCT = 1.0
"""A marker reading above this apparent % iNK in the pre-dose baseline is carried by the patient
(a carrier reads ~100 %); below it, baseline positives are false-positive background [R]."""

_NTC_NAMES = frozenset({"ntc", "h2o", "water", "blank", "no template control"})
_BLANK_TYPES = frozenset({"ntc", "blank", "negative_control"})


def z_value(confidence: float) -> float:
    """Two-sided normal quantile; exactly 1.96 for 95 % as Bio-Rad and popPCR print it.

    Examples
    --------
    >>> z_value(0.95)
    1.96
    >>> round(z_value(0.68), 4)
    0.9945
    """
    if not 0.0 < confidence < 1.0:
        msg = f"confidence must be between 0 and 1, got {confidence}"
        raise ValueError(msg)
    if math.isclose(confidence, 0.95):
        return 1.96
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _check_counts(positives: int, accepted: int) -> None:
    if accepted <= 0 or positives < 0 or positives > accepted:
        msg = (
            f"expected 0 <= positives <= accepted droplets and accepted > 0, "
            f"got {positives} positives of {accepted}"
        )
        raise ValueError(msg)


def poisson_lambda(positives: int, accepted: int) -> float:
    """Mean copies per droplet λ = -ln(1 - p), p = positives / accepted (methods.md 5.1).

    Every droplet positive gives ``inf`` (saturated: the copy number cannot be estimated).

    Examples
    --------
    >>> round(poisson_lambda(15_000, 20_000), 6)  # popPCR calculateConc(5000 negatives, 20000)
    1.386294
    >>> poisson_lambda(0, 20_000)
    0.0
    """
    _check_counts(positives, accepted)
    if positives == accepted:
        return math.inf
    return 0.0 - math.log1p(-positives / accepted)


def lambda_standard_error(positives: int, accepted: int) -> float:
    """Delta-method SE of λ: √(p / (N(1 - p))) (popPCR; methods.md 5.3).

    Examples
    --------
    >>> round(lambda_standard_error(15_000, 20_000), 6)
    0.012247
    """
    _check_counts(positives, accepted)
    if positives == accepted:
        return math.inf
    p = positives / accepted
    return math.sqrt(p / (accepted * (1.0 - p)))


def copies_per_ul(lambda_copies_per_droplet: float, droplet_volume_nl: float) -> float:
    """Concentration c = λ / V_d in copies per µL of reaction (methods.md 5.1).

    Examples
    --------
    >>> round(20 * copies_per_ul(poisson_lambda(15_000, 20_000), 0.85), 2)  # per 20 µL well
    32618.69
    """
    if droplet_volume_nl <= 0:
        msg = f"droplet volume must be > 0 nL, got {droplet_volume_nl}"
        raise ValueError(msg)
    return lambda_copies_per_droplet / (droplet_volume_nl * 1e-3)


def lambda_ci_wald(
    positives: int, accepted: int, *, confidence: float = 0.95
) -> tuple[float, float]:
    """λ-scale Wald interval λ ± z·√(p/(N(1-p))), lower bound floored at 0 (popPCR).

    Examples
    --------
    >>> [round(x, 6) for x in lambda_ci_wald(15_000, 20_000)]
    [1.362289, 1.410299]
    """
    lam = poisson_lambda(positives, accepted)
    half = z_value(confidence) * lambda_standard_error(positives, accepted)
    return max(0.0, lam - half), lam + half


def _lambda_interval(low_p: float, high_p: float) -> tuple[float, float]:
    """Map an interval of the positive fraction p to λ = -ln(1 - p); p >= 1 gives infinity."""
    high = math.inf if high_p >= 1.0 else -math.log1p(-high_p)
    return -math.log1p(-low_p), high


def lambda_ci_p_scale(
    positives: int, accepted: int, *, confidence: float = 0.95
) -> tuple[float, float]:
    """P-scale Wald interval transformed: -ln(1 - (p ± z·√(p(1-p)/N))) (QX Manager PoissonConf).

    Examples
    --------
    >>> [round(x, 6) for x in lambda_ci_p_scale(15_000, 20_000)]
    [1.362573, 1.410592]
    """
    _check_counts(positives, accepted)
    p = positives / accepted
    half = z_value(confidence) * math.sqrt(p * (1.0 - p) / accepted)
    return _lambda_interval(max(0.0, p - half), p + half)


def zero_positive_upper_lambda(accepted: int, *, confidence: float = 0.95) -> float:
    """One-sided upper bound of λ with no positive droplet: -ln(1 - confidence) / N (methods.md 5.3).

    This is also the exact (Clopper-Pearson) one-sided bound: 1 - (1 - p_U)^N = confidence.

    Examples
    --------
    >>> round(copies_per_ul(zero_positive_upper_lambda(39_279), 0.85), 2)  # QuantaSoft M04
    0.09
    """
    _check_counts(0, accepted)
    return -math.log(1.0 - confidence) / accepted


def clopper_pearson(
    positives: int, accepted: int, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of the positive fraction p.

    0 positives gives the one-sided bound (0, 1 - (1 - confidence)^(1/N)) (methods.md 5.3).

    Examples
    --------
    >>> [round(x, 5) for x in clopper_pearson(1, 10)]
    [0.00253, 0.44502]
    """
    _check_counts(positives, accepted)
    alpha = 1.0 - confidence
    if positives == 0:
        return 0.0, 1.0 - alpha ** (1.0 / accepted)
    # Clopper-Pearson bounds are Beta quantiles (Clopper & Pearson, Biometrika 1934).
    low = beta_quantile(alpha / 2.0, positives, accepted - positives + 1)
    high = (
        1.0
        if positives == accepted
        else beta_quantile(1.0 - alpha / 2.0, positives + 1, accepted - positives)
    )
    return low, high


def lambda_ci_exact(
    positives: int, accepted: int, *, confidence: float = 0.95
) -> tuple[float, float]:
    """Exact interval of λ: Clopper-Pearson on p, transformed by -ln(1 - p) (methods.md 5.3).

    Examples
    --------
    >>> low, high = lambda_ci_exact(0, 39_279)
    >>> low, round(copies_per_ul(high, 0.85), 3)
    (0.0, 0.09)
    """
    return _lambda_interval(*clopper_pearson(positives, accepted, confidence=confidence))


def lambda_ci(positives: int, accepted: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Interval used for reporting: exact for 0-25 positives, else the QX Manager p-scale Wald."""
    if positives <= EXACT_MAX_POSITIVES:
        return lambda_ci_exact(positives, accepted, confidence=confidence)
    return lambda_ci_p_scale(positives, accepted, confidence=confidence)


def _p_scale_se(positives: int, accepted: int, z: float) -> float:
    """SE of λ implied by the p-scale Wald interval: its half-width over z (QX Manager)."""
    p = positives / accepted
    half = z * math.sqrt(p * (1.0 - p) / accepted)
    high_p = min(p + half, math.nextafter(1.0, 0.0))
    return (-math.log1p(-high_p) + math.log1p(-max(0.0, p - half))) / (2.0 * z)


def ratio_ci_linear(
    marker_positives: int,
    marker_accepted: int,
    reference_positives: int,
    reference_accepted: int,
    *,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Ratio interval r ± z·r·√((SE_M/λ_M)² + (SE_ref/λ_ref)²) as QX Manager PoissonRatioMin/Max.

    r = λ_M / λ_ref (same droplet volume). Each SE is the half-width of that target's p-scale
    Wald interval divided by z: this reproduces QX Manager's printed ratio bounds (A01:
    0.960059-1.013545); the popPCR λ-scale SE differs in the 6th digit.

    Examples
    --------
    >>> [round(x, 6) for x in ratio_ci_linear(10_940, 20_486, 11_037, 20_486)]
    [0.960059, 1.013545]
    """
    z = z_value(confidence)
    lam_m = poisson_lambda(marker_positives, marker_accepted)
    lam_r = poisson_lambda(reference_positives, reference_accepted)
    if lam_r == 0.0 or math.isinf(lam_r) or math.isinf(lam_m):
        msg = (
            "the ratio needs 0 < reference positives < accepted droplets and an unsaturated marker"
        )
        raise ValueError(msg)
    ratio = lam_m / lam_r
    if lam_m == 0.0:
        return 0.0, 0.0
    rel = math.hypot(
        _p_scale_se(marker_positives, marker_accepted, z) / lam_m,
        _p_scale_se(reference_positives, reference_accepted, z) / lam_r,
    )
    return max(0.0, ratio - z * ratio * rel), ratio + z * ratio * rel


def ratio_ci_log(
    marker_positives: int,
    marker_accepted: int,
    reference_positives: int,
    reference_accepted: int,
    *,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Log-scale ratio interval r·exp(± z·√((SE_M/λ_M)² + (SE_ref/λ_ref)²)), λ-scale SEs.

    Always positive and asymmetric (methods.md 5.3, "ratio (log scale)").

    Examples
    --------
    >>> [round(x, 4) for x in ratio_ci_log(10_940, 20_486, 11_037, 20_486)]
    [0.9604, 1.0139]
    """
    z = z_value(confidence)
    lam_m = poisson_lambda(marker_positives, marker_accepted)
    lam_r = poisson_lambda(reference_positives, reference_accepted)
    if lam_r == 0.0 or lam_m == 0.0 or math.isinf(lam_r) or math.isinf(lam_m):
        msg = "the log-scale ratio needs positive, unsaturated marker and reference counts"
        raise ValueError(msg)
    ratio = lam_m / lam_r
    rel = math.hypot(
        lambda_standard_error(marker_positives, marker_accepted) / lam_m,
        lambda_standard_error(reference_positives, reference_accepted) / lam_r,
    )
    return ratio * math.exp(-z * rel), ratio * math.exp(z * rel)


@dataclass(frozen=True)
class PooledCounts:
    """Replicate wells pooled by summing droplets (methods.md 5.4)."""

    positives: int
    accepted_droplets: int
    n_wells: int


def pool_replicates(counts: Iterable[tuple[int, int]]) -> PooledCounts:
    """Sum ``(positives, accepted)`` over replicate wells, then estimate once (methods.md 5.4).

    A QuantaSoft merged row (``M01``) already is such a sum: pool either it or its member wells,
    never both.

    Examples
    --------
    >>> pool_replicates([(160, 20_419), (141, 20_066)])
    PooledCounts(positives=301, accepted_droplets=40485, n_wells=2)
    """
    positives = accepted = n_wells = 0
    for pos, acc in counts:
        _check_counts(pos, acc)
        positives += pos
        accepted += acc
        n_wells += 1
    return PooledCounts(positives, accepted, n_wells)


def pct_ink_ddpcr(
    *,
    marker_positives: int,
    marker_accepted: int,
    reference_positives: int,
    reference_accepted: int,
    zygosity_factor: float,
    convention: Literal["poisson", "raw"] = "poisson",
) -> float:
    """%iNK = 100·k·λ_M/λ_ref, k = n_ref/n_M (methods.md 5.2).

    ``convention="raw"`` uses the uncorrected positive fractions instead of λ (the published
    PMC7788686 Table 3 values); Poisson correction matters only at high occupancy.

    Examples
    --------
    >>> kw = {"marker_accepted": 22_512, "reference_accepted": 22_512, "zygosity_factor": 2}
    >>> round(pct_ink_ddpcr(marker_positives=7_121, reference_positives=13_184, **kw), 2)
    86.32
    >>> round(
    ...     pct_ink_ddpcr(marker_positives=7_121, reference_positives=13_184, convention="raw", **kw),
    ...     2,
    ... )
    108.02
    """
    if reference_positives == 0:
        msg = "the reference gene has no positive droplets; % iNK cannot be computed"
        raise ValueError(msg)
    if convention == "raw":
        _check_counts(marker_positives, marker_accepted)
        _check_counts(reference_positives, reference_accepted)
        marker = marker_positives / marker_accepted
        reference = reference_positives / reference_accepted
    else:
        marker = poisson_lambda(marker_positives, marker_accepted)
        reference = poisson_lambda(reference_positives, reference_accepted)
    return 100.0 * zygosity_factor * marker / reference


def infer_zygosity_factor(product_ratio: float) -> int | None:
    """Zygosity factor k from the product reference's λ_M/λ_ref (≈0.5 → 2, ≈1 → 1).

    Boundary √0.5 (log-scale midpoint); outside 0.25-1.5 the marker is no germline donor marker
    and None is returned [R].

    Examples
    --------
    >>> infer_zygosity_factor(0.43), infer_zygosity_factor(0.98), infer_zygosity_factor(0.02)
    (2, 1, None)
    """
    low, high = GERMLINE_RATIO_RANGE
    if not low <= product_ratio <= high:
        return None
    return 2 if product_ratio < HETEROZYGOUS_HOMOZYGOUS_BOUNDARY else 1


def _poisson_cdf(count: int, mean: float) -> float:
    if count < 0:
        return 0.0
    if mean <= 0.0:
        return 1.0
    term = math.exp(-mean)
    total = term
    for i in range(1, count + 1):
        term *= mean / i
        total += term
    return min(1.0, total)


def limit_of_blank_droplets(expected_false_positives: float, *, confidence: float = 0.95) -> int:
    """LoB in droplets: the 95th percentile of Poisson(expected false positives) (methods.md 5.6).

    ``expected_false_positives`` = blank false-positive rate per droplet x the sample's accepted
    droplets; blanks are NTC / negative-control wells and the patient's pre-dose baseline.

    Examples
    --------
    >>> limit_of_blank_droplets(0.0), limit_of_blank_droplets(1.0)
    (0, 3)
    """
    count = 0
    while _poisson_cdf(count, expected_false_positives) < confidence:
        count += 1
    return count


def detection_limit_copies(
    *,
    lob_droplets: int,
    expected_false_positives: float,
    min_copies: float,
    confidence: float = 0.95,
) -> float:
    """Return the copies giving P(positives > LoB) >= confidence, never below ``min_copies``.

    With a clean blank (LoB 0) this is the Poisson floor -ln(0.05) ≈ 3 copies (methods.md 4).

    Examples
    --------
    >>> round(detection_limit_copies(lob_droplets=0, expected_false_positives=0.0, min_copies=0), 3)
    2.996
    >>> round(detection_limit_copies(lob_droplets=3, expected_false_positives=1.0, min_copies=3), 2)
    6.75
    """
    total = poisson_mean_for_cdf(lob_droplets, 1.0 - confidence)
    return max(float(min_copies), total - expected_false_positives)


def _target_key(target: str | None, channel: str | None) -> str:
    return target or channel or "unnamed target"


def assert_chimerism_plate(
    wells: pl.DataFrame | pl.LazyFrame, *, settings: DdpcrSettings, file_name: str
) -> None:
    """Refuse a plate that holds no chimerism assay: a reference gene plus a marker target.

    The reference gene is recognised by name (``settings.reference_genes``, case-insensitive,
    ``RPP30_HEX`` counts). A target the export only *labels* ``Reference`` (QX Manager
    ``TargetType``) is not enough: every copy-number run labels its reference that way (the
    SMN2 CNV export has targets ``1``/``2``). Such plates are refused with a message saying how
    to name the reference.

    Raises
    ------
    NotChimerismAssayError
        When no reference-gene target or no other (marker) target is present.
    """
    frame = wells.collect() if isinstance(wells, pl.LazyFrame) else wells
    targets: dict[str, str | None] = {}
    for row in frame.select("target", "channel", "target_role").iter_rows(named=True):
        key = _target_key(row["target"], row["channel"])
        if targets.get(key) != "reference":
            targets[key] = row["target_role"]
    references = [t for t in targets if is_reference_gene(t, settings.reference_genes)]
    markers = [t for t in targets if t not in references]
    genes = ", ".join(settings.reference_genes)
    found = ", ".join(sorted(targets)) or "none"
    if not references:
        labelled = [t for t, role in targets.items() if role == "reference"]
        hint = (
            f" The export labels {', '.join(labelled)} as Reference, but that name is not a "
            "reference gene; if this is a chimerism run, name the reference target (e.g. RPP30) "
            "in the instrument software or add its name to ddpcr.reference_genes."
            if labelled
            else ""
        )
        msg = (
            f"{file_name}: not a ddPCR chimerism assay: expected a reference-gene target "
            f"({genes}) and at least one marker target, found targets {found}.{hint} "
            "Copy-number, NIPD or mutation assays are not read by Chimera."
        )
        raise NotChimerismAssayError(msg)
    if not markers:
        msg = (
            f"{file_name}: not a ddPCR chimerism assay: the plate has the reference gene "
            f"({', '.join(references)}) but no marker target; export the plate with the iNK "
            "marker assay included."
        )
        raise NotChimerismAssayError(msg)


@dataclass
class _Count:
    positives: int
    accepted: int
    volume_nl: float


@dataclass
class _Well:
    """One well (or kept merged row) of one plate: marker counts and reference counts."""

    plate: str
    well: str
    sample_id: str | None
    sample_type: str | None
    markers: dict[str, _Count] = field(default_factory=dict)
    reference: _Count | None = None
    missing_counts: bool = False


@dataclass(frozen=True)
class _Part:
    """One marker's pooled counts and the reference counts measured over the same wells."""

    marker: _Count
    reference: _Count
    k: float


@dataclass(frozen=True)
class _Estimate:
    pct: float
    low: float
    high: float
    marker_copies: float
    reference_genome_equivalents: float
    expected_fp: float = 0.0


def _pooled(counts: Iterable[_Count]) -> _Count | None:
    items = list(counts)
    if not items:
        return None
    accepted = sum(c.accepted for c in items)
    volume = sum(c.volume_nl * c.accepted for c in items) / accepted if accepted else 0.0
    return _Count(sum(c.positives for c in items), accepted, volume)


def _estimate(parts: Sequence[_Part], *, confidence: float) -> _Estimate:
    """Pooled fraction f = Σ marker copies / Σ (reference copies / k) over the parts.

    For one part this is 100·k·c_M/c_ref. CI: exact (Clopper-Pearson) on the pooled marker
    droplets for <= 25 positives, else the linear delta interval; the reference gene's relative
    SE is added in both cases.
    """
    z = z_value(confidence)
    marker_copies = 0.0
    genomes = 0.0
    var_marker = 0.0
    positives = accepted = 0
    for part in parts:
        lam_m = poisson_lambda(part.marker.positives, part.marker.accepted)
        lam_r = poisson_lambda(part.reference.positives, part.reference.accepted)
        c_ref = lam_r / part.reference.volume_nl  # copies per nL
        volume = part.marker.accepted * part.marker.volume_nl
        marker_copies += lam_m * part.marker.accepted
        genomes += c_ref * volume / part.k
        var_marker += (part.marker.accepted * lambda_standard_error(*_pc(part.marker))) ** 2
        positives += part.marker.positives
        accepted += part.marker.accepted
    reference = _pooled(p.reference for p in parts)
    assert reference is not None
    cv_ref = lambda_standard_error(reference.positives, reference.accepted) / poisson_lambda(
        reference.positives, reference.accepted
    )
    pct = 100.0 * marker_copies / genomes
    if positives <= EXACT_MAX_POSITIVES:
        lam_low, lam_high = lambda_ci_exact(positives, accepted, confidence=confidence)
        low = 100.0 * lam_low * accepted / genomes * math.exp(-z * cv_ref)
        high = 100.0 * lam_high * accepted / genomes * math.exp(z * cv_ref)
    else:
        rel = math.hypot(math.sqrt(var_marker) / marker_copies, cv_ref)
        low, high = max(0.0, pct * (1.0 - z * rel)), pct * (1.0 + z * rel)
    return _Estimate(pct, low, high, marker_copies, genomes)


def _reference_for(used: Sequence[_Well], fallback: Sequence[_Well]) -> _Count | None:
    """Pool the reference counts of the wells a marker was read in, else of all wells."""
    own = [w.reference for w in used if w.reference is not None]
    if own:
        return _pooled(own)
    return _pooled(w.reference for w in fallback if w.reference is not None)


def _pc(count: _Count) -> tuple[int, int]:
    return count.positives, count.accepted


@dataclass
class _SampleInfo:
    sample_id: str
    patient_id: str
    role: str
    product_lot: str | None


@dataclass
class _MarkerProfile:
    """What the product reference says about one marker."""

    ratio: float | None
    k: int | None
    positives: int


def _is_blank(well: _Well, info: _SampleInfo | None) -> bool:
    if info is not None:
        return info.role == "negative_control"
    return (well.sample_type or "").casefold() in _BLANK_TYPES or (
        (well.sample_id or "").strip().casefold() in _NTC_NAMES
    )


def _collect_wells(frame: pl.DataFrame, settings: DdpcrSettings) -> list[_Well]:
    """Group rows into wells; drop merged rows whose member wells are present (methods.md 5.4)."""
    if "source_sha256" not in frame.columns:
        frame = frame.with_columns(pl.lit("plate").alias("source_sha256"))
    rows = list(frame.iter_rows(named=True))
    present: set[tuple[str, str, str]] = set()
    for row in rows:
        if not row["is_merged"]:
            key = _target_key(row["target"], row["channel"])
            present.add((row["source_sha256"], row["well"], key))
    wells: dict[tuple[str, str], _Well] = {}
    for row in rows:
        plate, key = row["source_sha256"], _target_key(row["target"], row["channel"])
        if row["is_merged"]:
            members = [m.strip() for m in (row["merged_wells"] or "").split(",") if m.strip()]
            if any((plate, m, key) in present for m in members):
                continue  # pooled from its member wells instead; never count both
        unit = wells.setdefault(
            (plate, row["well"]),
            _Well(plate, row["well"], row["sample_id"], row["sample_type"]),
        )
        if not row["accepted_droplets"] or row["positives"] is None:
            unit.missing_counts = True
            continue
        count = _Count(
            int(row["positives"]), int(row["accepted_droplets"]), row["droplet_volume_nl"]
        )
        if is_reference_gene(row["target"], settings.reference_genes):
            if unit.reference is None:
                unit.reference = count
        else:
            unit.markers[key] = count
    return list(wells.values())


def _well_exclusion(well: _Well, settings: DdpcrSettings) -> str | None:
    """Why a well is left out (QC gates, methods.md 5.5), or None when it is used.

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


def _samples_table(samples: pl.DataFrame) -> dict[str, _SampleInfo]:
    lot = "product_lot" if "product_lot" in samples.columns else None
    table: dict[str, _SampleInfo] = {}
    for row in samples.iter_rows(named=True):
        table[str(row["sample_id"])] = _SampleInfo(
            str(row["sample_id"]),
            str(row["patient_id"]),
            str(row["role"]),
            row[lot] if lot else None,
        )
    return table


def _product_profiles(
    wells_by_lot: dict[str, list[_Well]], confidence: float
) -> dict[str, dict[str, _MarkerProfile]]:
    profiles: dict[str, dict[str, _MarkerProfile]] = {}
    for lot, wells in wells_by_lot.items():
        names = sorted({m for w in wells for m in w.markers})
        lot_profile: dict[str, _MarkerProfile] = {}
        for name in names:
            used = [w for w in wells if name in w.markers]
            marker = _pooled(w.markers[name] for w in used)
            reference = _reference_for(used, wells)
            if marker is None or reference is None or marker.positives == marker.accepted:
                lot_profile[name] = _MarkerProfile(
                    None, None, 0 if marker is None else marker.positives
                )
                continue
            ratio = _estimate([_Part(marker, reference, 1.0)], confidence=confidence).pct / 100.0
            lot_profile[name] = _MarkerProfile(
                ratio, infer_zygosity_factor(ratio), marker.positives
            )
        profiles[lot] = lot_profile
    return profiles


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def compute_ddpcr_chimerism(
    wells: pl.LazyFrame, samples: pl.LazyFrame, *, settings: DdpcrSettings
) -> MethodOutput:
    """% iNK per post-dose sample from ddPCR wells (methods.md sections 4 and 5).

    Parameters
    ----------
    wells
        ``DdpcrWells`` rows plus ``source_sha256`` (the plate), NTC wells included; a duplex
        well has one row per target (marker and reference gene, same ``well``).
    samples
        ``sample_id, patient_id, role, product_lot``: product references (``donor_reference``,
        else ``calibrator``) are found by lot, baselines (``recipient_baseline``) by patient.
    settings
        Droplet gate, LoD/LoQ droplets, saturation fraction, confidence.

    Returns
    -------
    MethodOutput
        One result per post-dose sample with wells; marker rows per well and per marker
        (``replicate = "pooled"``), excluded wells and non-informative markers included.

    Notes
    -----
    Informative marker: positive in the product reference with a germline λ_M/λ_ref (which also
    fixes k, see :func:`infer_zygosity_factor`) and absent from the patient's baseline (apparent
    % iNK <= ``BASELINE_ABSENT_MAX_PCT``). LoB: 95th percentile of the false-positive droplets
    expected from blank wells (NTC, negative controls, the patient's baseline) at the sample's
    droplet count. LoD (%) = 100·k·c_LoD/C_ref with c_LoD >= ``lod_positive_droplets`` copies
    and C_ref the reference copies in the sample's accepted droplets; LoQ likewise from
    ``loq_positive_droplets``. Several informative markers are pooled as Σ marker copies /
    Σ (reference copies / k); their spread is reported.
    """
    frame = wells.collect()
    table = _samples_table(samples.collect())
    all_wells = _collect_wells(frame, settings)
    confidence = settings.confidence

    product_wells: dict[str, dict[str, list[_Well]]] = {
        role: defaultdict(list) for role in PRODUCT_ROLES
    }
    baseline_wells: dict[str, list[_Well]] = defaultdict(list)
    blank_wells: list[_Well] = []
    sample_wells: dict[str, list[_Well]] = defaultdict(list)
    ntc_notes: dict[str, list[str]] = defaultdict(list)
    for well in all_wells:
        info = table.get(well.sample_id or "")
        if _is_blank(well, info):
            blank_wells.append(well)
            if well.reference is not None and well.reference.positives > 0:
                ntc_notes[well.plate].append(
                    f"NTC/negative control {well.well} has {well.reference.positives} "
                    "reference-gene positive droplets (contamination)"
                )
            for name, count in well.markers.items():
                if count.positives >= settings.lod_positive_droplets:
                    ntc_notes[well.plate].append(
                        f"NTC/negative control {well.well} has {count.positives} {name} positive "
                        "droplets (contamination)"
                    )
            continue
        if info is None:
            continue
        usable = _well_exclusion(well, settings) is None
        if info.role in PRODUCT_ROLES and usable:
            product_wells[info.role][info.product_lot or info.patient_id].append(well)
        elif info.role == "recipient_baseline" and usable:
            baseline_wells[info.patient_id].append(well)
        elif info.role == "post_dose":
            sample_wells[info.sample_id].append(well)

    chosen = product_wells["donor_reference"] or product_wells["calibrator"]
    profiles = _product_profiles(dict(chosen), confidence)

    results: list[SampleResult] = []
    marker_rows: list[dict[str, object]] = []
    for sample_id in sorted(sample_wells):
        info = table[sample_id]
        result, rows = _compute_sample(
            info,
            sample_wells[sample_id],
            profiles=profiles,
            baseline=baseline_wells.get(info.patient_id, []),
            blanks=blank_wells,
            ntc_notes=ntc_notes,
            settings=settings,
        )
        results.append(result)
        marker_rows.extend(rows)
    return MethodOutput(results=results_frame(results), markers=markers_frame(marker_rows))


def _compute_sample(
    info: _SampleInfo,
    wells: list[_Well],
    *,
    profiles: dict[str, dict[str, _MarkerProfile]],
    baseline: list[_Well],
    blanks: list[_Well],
    ntc_notes: dict[str, list[str]],
    settings: DdpcrSettings,
) -> tuple[SampleResult, list[dict[str, object]]]:
    confidence = settings.confidence
    review: list[str] = []
    notes: list[str] = []
    multi_plate = len({w.plate for w in wells}) > 1

    def replicate(well: _Well) -> str:
        return f"{well.plate[:8]}:{well.well}" if multi_plate else well.well

    for plate in sorted({w.plate for w in wells}):
        review.extend(ntc_notes.get(plate, []))

    # Product profile of the lot the patient received.
    lot = info.product_lot
    profile = profiles.get(lot) if lot else None
    if profile is None and profiles:
        if len(profiles) == 1 or lot is None:
            used_lot = min(profiles)
            profile = profiles[used_lot]
            if lot is not None or len(profiles) > 1:
                review.append(
                    f"product lot {lot} has no ddPCR product reference on these plates; used "
                    f"lot {used_lot} (same master cell bank)"
                )
        else:
            review.append(f"product lot {lot} has no ddPCR product reference on these plates")

    exclusions = {id(w): _well_exclusion(w, settings) for w in wells}
    included = [w for w in wells if exclusions[id(w)] is None]
    for well in included:
        if well.reference is not None and (
            well.reference.positives
            > settings.reference_saturation_fraction * well.reference.accepted
        ):
            share = 100.0 * well.reference.positives / well.reference.accepted
            review.append(
                f"well {replicate(well)}: reference gene positive in {share:.1f} % of droplets "
                "(near saturation; dilute DNA)"
            )

    marker_names = sorted({m for w in wells for m in w.markers})
    reference_pool = _pooled(w.reference for w in included if w.reference is not None)
    rows: list[dict[str, object]] = []
    sharing: dict[str, str] = {}

    def fail(reason: str) -> tuple[SampleResult, list[dict[str, object]]]:
        for well in wells:
            for name, count in well.markers.items():
                rows.append(
                    _marker_row(
                        info.sample_id,
                        name,
                        replicate(well),
                        count,
                        None,
                        False,
                        exclusions[id(well)] or reason,
                        sharing.get(name),
                    )
                )
        return failed_result(info.sample_id, Method.DDPCR, [reason, *review]), rows

    if not included:
        reasons = sorted({r for r in exclusions.values() if r})
        return fail("every well excluded: " + "; ".join(reasons))
    if reference_pool is None:
        genes = ", ".join(settings.reference_genes)
        return fail(f"no reference-gene ({genes}) counts for this sample")
    if profile is None:
        return fail("no product reference (donor_reference) wells with this marker assay")

    # Blank false-positive rate per marker: NTC / negative controls + this patient's baseline.
    if not baseline:
        review.append(
            f"no pre-dose baseline for patient {info.patient_id} on these plates: marker "
            "informativeness not confirmed"
        )
    parts: list[tuple[str, _Part, float]] = []
    not_informative: dict[str, str] = {}
    for name in marker_names:
        prof = profile.get(name)
        if prof is None or prof.k is None or prof.positives < settings.lod_positive_droplets:
            sharing[name] = "not_in_product"
            ratio = "no product data" if prof is None or prof.ratio is None else f"{prof.ratio:.3f}"
            not_informative[name] = (
                f"not informative: product λ_M/λ_ref {ratio} is not a germline donor marker"
            )
            continue
        k = float(prof.k)
        base_pct = _baseline_pct(name, baseline, k, confidence)
        if base_pct is not None and base_pct > BASELINE_ABSENT_MAX_PCT:
            sharing[name] = "shared"
            not_informative[name] = (
                f"not informative: patient baseline reads {_fmt(base_pct)} % (carries the marker)"
            )
            continue
        sharing[name] = "donor_only"
        used = [w for w in included if name in w.markers]
        if not used:
            not_informative[name] = "no included well measured this marker"
            continue
        marker = _pooled(w.markers[name] for w in used)
        reference = _reference_for(used, included)
        assert marker is not None
        assert reference is not None
        if marker.positives == marker.accepted:
            not_informative[name] = "marker positive in every droplet (saturated)"
            continue
        fp_positives = sum(
            w.markers[name].positives for w in [*blanks, *baseline] if name in w.markers
        )
        fp_accepted = sum(
            w.markers[name].accepted for w in [*blanks, *baseline] if name in w.markers
        )
        rate = fp_positives / fp_accepted if fp_accepted else 0.0
        parts.append((name, _Part(marker, reference, k), rate * marker.accepted))
        if prof.ratio is not None and abs(prof.ratio * k - 1.0) > 0.15:
            notes.append(
                f"{name}: product λ_M/λ_ref {prof.ratio:.3f} (expected {1 / k:.2f}); "
                f"control-normalised estimate = reported x {1 / (prof.ratio * k):.3f}"
            )

    if not parts:
        detail = "; ".join(f"{n}: {r}" for n, r in not_informative.items()) or "no marker target"
        return fail(f"no informative marker ({detail})")

    estimate = _estimate([p for _, p, _ in parts], confidence=confidence)
    expected_fp = sum(fp for _, _, fp in parts)
    lob = limit_of_blank_droplets(expected_fp, confidence=confidence)
    positives = sum(p.marker.positives for _, p, _ in parts)
    detected = positives > lob
    genomes = estimate.reference_genome_equivalents
    lod_copies = detection_limit_copies(
        lob_droplets=lob,
        expected_false_positives=expected_fp,
        min_copies=settings.lod_positive_droplets,
        confidence=confidence,
    )
    if genomes > 0:
        lod_pct = 100.0 * lod_copies / genomes
        loq_pct = 100.0 * max(float(settings.loq_positive_droplets), lod_copies) / genomes
    else:
        lod_pct, loq_pct = settings.lod_pct, settings.loq_pct
    # A dilution series validated on this assay sets a floor under the sample's Poisson limits.
    lod_pct = max(lod_pct, settings.validated_lod_pct or 0.0)
    loq_pct = max(loq_pct, settings.validated_loq_pct or 0.0, lod_pct)
    if lob > 0:
        notes.append(f"LoB {lob} positive droplets (blank false-positive background)")

    # Per-marker pooled rows and well rows, well-to-well spread.
    per_marker: dict[str, _Estimate] = {}
    for name, part, _fp in parts:
        per_marker[name] = _estimate([part], confidence=confidence)
        well_pcts: list[float] = []
        for well in wells:
            if name not in well.markers:
                continue
            reason = exclusions[id(well)]
            count = well.markers[name]
            pct: float | None = None
            if reason is None and count.positives < count.accepted:
                ref = well.reference or reference_pool
                pct = _estimate([_Part(count, ref, part.k)], confidence=confidence).pct
                well_pcts.append(pct)
            rows.append(
                _marker_row(
                    info.sample_id,
                    name,
                    replicate(well),
                    count,
                    pct,
                    reason is None,
                    reason,
                    sharing[name],
                )
            )
        m_est = per_marker[name]
        rows.append(
            _marker_row(
                info.sample_id, name, "pooled", part.marker, m_est.pct, True, None, sharing[name]
            )
        )
        if len(well_pcts) >= 2:
            notes.append(
                f"{name}: well-to-well SD {_fmt(statistics.stdev(well_pcts))} % over "
                f"{len(well_pcts)} wells (the Poisson CI covers counting error only)"
            )
    for name, reason in not_informative.items():
        for well in wells:
            if name in well.markers:
                rows.append(
                    _marker_row(
                        info.sample_id,
                        name,
                        replicate(well),
                        well.markers[name],
                        None,
                        False,
                        reason,
                        sharing.get(name),
                    )
                )
    if len(per_marker) >= 2:
        spread = ", ".join(f"{n} {_fmt(e.pct)} %" for n, e in per_marker.items())
        notes.append(f"informative markers: {spread}")
        ests = list(per_marker.values())
        if any(a.high < b.low for a in ests for b in ests):
            review.append(f"informative markers disagree beyond their 95 % CIs ({spread})")

    status = classify_result(estimate.pct, detected=detected, failed=False, loq_pct=loq_pct)
    verdict = QcVerdict.REVIEW if review else QcVerdict.PASS
    result = SampleResult(
        sample_id=info.sample_id,
        method=Method.DDPCR,
        result_status=status,
        pct_ink_raw=estimate.pct,
        ci_low_raw=estimate.low,
        ci_high_raw=estimate.high,
        lod_pct=lod_pct,
        loq_pct=loq_pct,
        qc_verdict=verdict,
        qc_reasons=(*review, *notes),
        n_informative=len(parts),
    )
    return result, rows


def _baseline_pct(name: str, baseline: list[_Well], k: float, confidence: float) -> float | None:
    used = [w for w in baseline if name in w.markers]
    marker = _pooled(w.markers[name] for w in used)
    reference = _reference_for(used, baseline)
    if marker is None or reference is None:
        return None
    if marker.positives == marker.accepted:
        return math.inf
    return _estimate([_Part(marker, reference, k)], confidence=confidence).pct


def _marker_row(
    sample_id: str,
    marker: str,
    replicate: str,
    count: _Count,
    pct: float | None,
    included: bool,  # noqa: FBT001 - private row builder
    reason: str | None,
    sharing: str | None,
) -> dict[str, object]:
    lam = (
        None
        if count.positives >= count.accepted
        else poisson_lambda(count.positives, count.accepted)
    )
    return {
        "sample_id": sample_id,
        "method": Method.DDPCR.value,
        "marker": marker,
        "replicate": replicate,
        "sharing": sharing,
        "positives": count.positives,
        "accepted_droplets": count.accepted,
        "copies_per_ul": None if lam is None else copies_per_ul(lam, count.volume_nl),
        "pct_ink": pct,
        "included": included,
        "exclusion_reason": reason,
    }
