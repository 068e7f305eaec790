"""Distribution quantiles behind every confidence interval, and the exact sample SD.

The special functions ``scipy.stats`` itself evaluates for these quantiles (``stdtrit``,
``betaincinv``, ``gammainccinv``), imported without ``scipy.stats`` (which takes about a second
to import). Cached because the same degrees of freedom recur for every sample of a run.
:func:`sample_sd` is the one SD of replicates (qPCR, ddPCR) and of per-locus % (STR).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from functools import lru_cache

from scipy import special


@lru_cache(maxsize=4096)
def t_quantile(probability: float, dof: float) -> float:
    """Quantile of Student's t with ``dof`` degrees of freedom.

    Examples
    --------
    >>> round(t_quantile(0.975, 2), 3), round(t_quantile(0.975, 8), 3)
    (4.303, 2.306)
    """
    if not 0.0 < probability < 1.0 or dof <= 0:
        msg = f"t quantile needs 0 < probability < 1 and dof > 0, got {probability}, {dof}"
        raise ValueError(msg)
    return float(special.stdtrit(dof, probability))


@lru_cache(maxsize=4096)
def beta_quantile(probability: float, a: float, b: float) -> float:
    """Quantile of the Beta(a, b) distribution (Clopper-Pearson bounds are Beta quantiles)."""
    return float(special.betaincinv(a, b, probability))


@lru_cache(maxsize=4096)
def poisson_mean_for_cdf(count: int, probability: float) -> float:
    """Poisson mean μ at which P(X <= count; μ) equals ``probability``.

    P(X <= k; μ) is the regularised upper incomplete gamma Q(k + 1, μ), so μ is its inverse.

    Examples
    --------
    >>> round(poisson_mean_for_cdf(0, 0.05), 3)  # the 3-copy Poisson floor of methods.md 4
    2.996
    """
    return float(special.gammainccinv(count + 1, probability))


def sample_sd(values: Sequence[float]) -> float:
    """Sample SD sqrt(Σ(x - x̄)² / (n - 1)) of >= 2 values, exact and correctly rounded.

    The same number as :func:`statistics.stdev` (exact rational sum of squares, one rounding
    at the square root), in integer arithmetic: the values share one power-of-two denominator.

    Examples
    --------
    >>> sample_sd([25.0, 25.5, 26.0])
    0.5
    """
    if len(values) < 2:
        msg = f"a sample SD needs at least 2 values, got {len(values)}"
        raise ValueError(msg)
    ratios = [value.as_integer_ratio() for value in values]
    n = len(ratios)
    scale = max([d for _, d in ratios])  # powers of two: each divides the largest
    scaled = [p * (scale // d) for p, d in ratios]
    total = sum(scaled)
    # Σ(x - x̄)² / (n - 1) = (n·ΣX² - (ΣX)²) / (n·(n - 1)·D²) with X = x·D integers.
    return _sqrt_of_fraction(
        n * sum([x * x for x in scaled]) - total * total, n * (n - 1) * scale * scale
    )


def _sqrt_of_fraction(numerator: int, denominator: int) -> float:
    """sqrt(numerator / denominator) correctly rounded: an integer root rounded to odd."""
    shift = (numerator.bit_length() - denominator.bit_length() - _SQRT_BITS) // 2
    if shift >= 0:
        return float(_root_to_odd(numerator, denominator << 2 * shift) << shift)
    return _root_to_odd(numerator << -2 * shift, denominator) / (1 << -shift)


_SQRT_BITS = 2 * sys.float_info.mant_dig + 3


def _root_to_odd(numerator: int, denominator: int) -> int:
    """floor(sqrt(numerator / denominator)) with its last bit set when inexact."""
    root = math.isqrt(numerator // denominator)
    return root | (root * root * denominator != numerator)
