"""ddPCR Poisson arithmetic: copies per droplet, confidence intervals, pooling, blank limits.

Sources (methods.md section 5): Bio-Rad ddPCR Applications Guide and popPCR ``calculateConc``
(Poisson estimate, 5.1); the marker/reference ratio and copy number (5.2); the two Wald
conventions, the QX Manager ratio interval and the exact interval at low counts (5.3); replicate
pooling (5.4); LoB from false-positive droplets (5.6, Sci Rep 2022); the Poisson detection floor
(methods.md section 4). Numbers in, numbers out: no frames, no I/O.

Decisions recorded here [R]:

* z = 1.96 for 95 %: QX Manager and popPCR round the normal quantile, and only the rounded value
  reproduces their printed bounds to < 1e-7 (``PoissonConfMin/Max``, ``PoissonRatioMin/Max``).
* Marker copies per product genome from the product reference: c = n_ref·λ_M/λ_ref; below
  ``MIN_CARRIER_COPIES`` (0.5) the product does not carry the marker, else n_M is the integer
  nearest to c on a log scale (n or n + 1 split at √(n(n + 1)); 1 for c < 1), any n_M >= 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Literal

from chimera.calculate.stats import beta_quantile, poisson_mean_for_cdf

EXACT_MAX_POSITIVES = 25
"""Up to this many positive droplets the exact (Clopper-Pearson) interval is used (methods.md 5.3)."""
MIN_CARRIER_COPIES = 0.5
"""Fewer marker copies per genome than this: the genome does not carry the marker [R]."""


@lru_cache(maxsize=64)
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


def p_scale_standard_error(positives: int, accepted: int, *, confidence: float = 0.95) -> float:
    """SE of λ implied by the p-scale Wald interval: its width over 2z (QX Manager, 5.3).

    This is the SE behind QX Manager's ``PoissonRatioMin/Max``; the popPCR λ-scale SE
    (:func:`lambda_standard_error`) differs in the 4th digit.

    Examples
    --------
    >>> half = (1.410592 - 1.362573) / 2 / 1.96  # methods.md 5.7, p-scale form of popPCR
    >>> round(p_scale_standard_error(15_000, 20_000), 6) == round(half, 6)
    True
    """
    _check_counts(positives, accepted)
    z = z_value(confidence)
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
        p_scale_standard_error(marker_positives, marker_accepted, confidence=confidence) / lam_m,
        p_scale_standard_error(reference_positives, reference_accepted, confidence=confidence)
        / lam_r,
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


def marker_copies(ratio: float, *, reference_copies: int = 2) -> int:
    """Integer marker copies per genome n_M from λ_M/λ_ref (methods.md 5.2; rule above).

    0 means the genome does not carry the marker. Examples: the PMC7788686 "100 %" male control
    (ratio 0.43) has one Y copy; QX Manager A01 (ratio 0.987) two copies.

    Examples
    --------
    >>> marker_copies(0.43), marker_copies(0.987), marker_copies(0.02), marker_copies(2.4)
    (1, 2, 0, 5)
    """
    copies = ratio * reference_copies
    if copies < MIN_CARRIER_COPIES:
        return 0
    if copies < 1.0:
        return 1
    low = math.floor(copies)
    return low + 1 if copies >= math.sqrt(low * (low + 1)) else low


def zygosity_factor(marker_copies_per_genome: int, *, reference_copies: int = 2) -> float:
    """Zygosity factor k = n_ref / n_M (methods.md 5.2): 2 for a heterozygous marker against a diploid gene.

    Examples
    --------
    >>> zygosity_factor(1), zygosity_factor(2), zygosity_factor(4)
    (2.0, 1.0, 0.5)
    """
    if marker_copies_per_genome < 1:
        msg = f"a marker measures a genome only with >= 1 copy, got {marker_copies_per_genome}"
        raise ValueError(msg)
    return reference_copies / marker_copies_per_genome


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
