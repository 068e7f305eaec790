"""Comparative-Ct arithmetic: ΔΔCt, efficiency correction, replicates, CIs, blank cut-off.

Sources: Livak & Schmittgen, Methods 2001;25:402 (ΔΔCt, methods.md 3.1); Pfaffl, Nucleic Acids
Res 2001;29:e45 (efficiency, 3.2); error propagation and the replicate rule (3.3); censored
no-amplification values (3.4); CLSI EP17-A2 (LoB, methods.md 4). Numbers in, numbers out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from chimera.calculate.limits import limit_of_blank
from chimera.calculate.stats import sample_sd, t_quantile


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
    log2_f = log2_fraction(
        ct_marker_sample,
        ct_reference_sample,
        ct_marker_calibrator,
        ct_reference_calibrator,
        amplification_marker,
        amplification_reference,
    )
    return pct_from_log2(log2_f)


def pct_from_log2(log2_fraction: float) -> float:
    """% iNK from a log2 fraction: 100 * 2^log2_f."""
    return 100.0 * math.pow(2.0, log2_fraction)


def log2_fraction(
    ct_m_s: float, ct_r_s: float, ct_m_c: float, ct_r_c: float, e_m: float, e_r: float
) -> float:
    """log2 f of Pfaffl 2001: (Ct_M,cal - Ct_M,s)·log2 E_M - (Ct_ref,cal - Ct_ref,s)·log2 E_ref.

    Arguments: marker and reference Ct of the sample, then of the calibrator, then the two
    amplification factors. At E = 2 this is -ΔΔCt (methods.md 3.1-3.2).

    Examples
    --------
    >>> log2_fraction(30.0, 24.0, 26.0, 25.0, 2.0, 2.0)
    -5.0
    """
    return (ct_m_c - ct_m_s) * math.log2(e_m) - (ct_r_c - ct_r_s) * math.log2(e_r)


def blank_pct(
    ct: float | None,
    ct_reference: float,
    ct_marker_calibrator: float,
    ct_reference_calibrator: float,
    e_m: float,
    e_r: float,
    ct_cutoff: float,
) -> float:
    """% iNK of one blank (LoB input) marker well: 0 when not amplified (censored, 3.4).

    Examples
    --------
    >>> blank_pct(None, 24.0, 26.0, 25.0, 2.0, 2.0, 40.0), blank_pct(30.0, 24.0, 26.0, 25.0, 2.0, 2.0, 40.0)
    (0.0, 3.125)
    """
    if ct is None or ct > ct_cutoff:
        return 0.0
    return pct_from_log2(
        log2_fraction(ct, ct_reference, ct_marker_calibrator, ct_reference_calibrator, e_m, e_r)
    )


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


class ReplicateSummary(NamedTuple):
    """Replicate Ct values of one target in one sample after the outlier rule (methods.md 3.3).

    A named tuple: one is built per sample x target of every plate, cheaper than a dataclass.
    """

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
    amplified = tuple([i for i, ct in enumerate(cts) if ct is not None and ct <= ct_cutoff])
    kept = amplified
    outlier: int | None = None
    numbers = [ct for ct in cts if ct is not None and ct <= ct_cutoff]
    sd = sample_sd(numbers) if len(numbers) >= 2 else None
    if sd is not None and sd > max_sd and len(kept) >= 3:
        median = statistics.median(numbers)
        outlier = max(kept, key=lambda i: (abs((cts[i] or 0.0) - median), i))
        kept = tuple(i for i in kept if i != outlier)
        numbers = [ct for i, ct in enumerate(cts) if i in kept and ct is not None]
        sd = sample_sd(numbers)
    return ReplicateSummary(
        n_total=len(cts),
        amplified=amplified,
        kept=kept,
        outlier=outlier,
        # statistics.fmean is this division of the correctly rounded sum.
        mean_ct=math.fsum(numbers) / len(numbers) if numbers else None,
        sd_ct=sd,
        sd_above_limit=sd is not None and sd > max_sd,
        enough=len(kept) >= min_replicates,
    )


def welch_dof(components: Iterable[tuple[float, float]]) -> float:
    """Welch-Satterthwaite dof for a sum of variances given as (variance, dof) pairs.

    ν = (Σ v)² / Σ (v² / ν_i), at least 1 (Welch 1947; Satterthwaite 1946).

    Examples
    --------
    >>> welch_dof([(0.01, 2.0), (0.01, 2.0)])
    4.0
    """
    items = [(v, d) for v, d in components if d > 0]
    total = sum([v for v, _ in items])
    denominator = sum([v * v / d for v, d in items])
    if total <= 0 or denominator <= 0:
        return float(max(1.0, sum([d for _, d in items])))
    return max(1.0, total * total / denominator)


def blank_ct_cutoff(
    blank_cts: Sequence[float | None], *, ct_cutoff: float, tolerance: float
) -> float:
    """Ct after which a well is blank background: the earlier of ``tolerance`` and the LoB Ct.

    Blank (NTC/water) results on the copy scale s = 2^(ct_cutoff - Ct), 0 when Undetermined or
    later than ``ct_cutoff``; with >= 2 blanks of which >= 1 amplified, LoB = mean + 1.645·SD
    (CLSI EP17-A2) and the LoB Ct = ct_cutoff - log2(LoB). ``tolerance`` is the lab's NTC
    tolerance (``ntc_ct_min``: an NTC crossing later still passes the plate), so a well later
    than it is indistinguishable from accepted blank background (methods.md 3.4, 4; issue 11).

    Examples
    --------
    >>> blank_ct_cutoff([None, None], ct_cutoff=40, tolerance=38)
    38
    >>> round(blank_ct_cutoff([37.0, None], ct_cutoff=40, tolerance=38), 2)
    36.27
    """
    signals = [
        0.0 if ct is None or ct > ct_cutoff else math.pow(2.0, ct_cutoff - ct) for ct in blank_cts
    ]
    if len(signals) < 2 or not any(signals):
        return min(tolerance, ct_cutoff)
    lob = limit_of_blank(signals)
    return min(tolerance, ct_cutoff - math.log2(lob)) if lob > 1.0 else min(tolerance, ct_cutoff)
