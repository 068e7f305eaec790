"""Distribution quantiles behind every confidence interval (one place, from scipy.special).

The special functions ``scipy.stats`` itself evaluates for these quantiles (``stdtrit``,
``betaincinv``, ``gammainccinv``), imported without ``scipy.stats`` (which takes about a second
to import). Cached because the same degrees of freedom recur for every sample of a run.
"""

from __future__ import annotations

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


def poisson_mean_for_cdf(count: int, probability: float) -> float:
    """Poisson mean μ at which P(X <= count; μ) equals ``probability``.

    P(X <= k; μ) is the regularised upper incomplete gamma Q(k + 1, μ), so μ is its inverse.

    Examples
    --------
    >>> round(poisson_mean_for_cdf(0, 0.05), 3)  # the 3-copy Poisson floor of methods.md 4
    2.996
    """
    return float(special.gammainccinv(count + 1, probability))
