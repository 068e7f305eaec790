"""Random draws and number formatting (stdlib only, deterministic given the ``Random`` stream)."""

from __future__ import annotations

import datetime as dt
import math
import random

UTC = dt.UTC
POISSON_EXACT_BELOW_MEAN = 40.0
"""Knuth's product method below this mean, a rounded normal draw above (error < 0.1 %)."""


def poisson(rng: random.Random, mean: float) -> int:
    """Poisson draw: Knuth's product method below mean 40, rounded normal above."""
    if mean <= 0:
        return 0
    if mean < POISSON_EXACT_BELOW_MEAN:
        limit = math.exp(-mean)
        count, product = 0, rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
        return count
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def binomial(rng: random.Random, trials: int, p: float) -> int:
    """Binomial draw: geometric skipping when few successes are expected, normal otherwise."""
    if p <= 0.0 or trials <= 0:
        return 0
    if p >= 1.0:
        return trials
    if p > 0.5:
        return trials - binomial(rng, trials, 1.0 - p)
    mean = trials * p
    if mean < POISSON_EXACT_BELOW_MEAN:
        log_q = math.log1p(-p)
        count, position = 0, 0
        while True:
            position += int(math.log(1.0 - rng.random()) / log_q) + 1
            if position > trials:
                return count
            count += 1
    draw = round(rng.gauss(mean, math.sqrt(mean * (1.0 - p))))
    return min(max(draw, 0), trials)


def lognormal_factor(rng: random.Random, sd_log: float) -> float:
    """Multiplicative noise factor exp(N(0, sd_log))."""
    return math.exp(rng.gauss(0.0, sd_log))


def clipped_jitter(rng: random.Random, sd_log: float, low: float, high: float) -> float:
    """A lognormal factor clipped to [low, high] (keeps designed values inside their range)."""
    return min(max(lognormal_factor(rng, sd_log), low), high)


def round_sig(value: float, digits: int) -> float:
    """Round to ``digits`` significant digits (0 stays 0)."""
    return 0.0 if value == 0 else float(f"{value:.{digits}g}")


def fmt_sig(value: float, digits: int) -> str:
    """Format with ``digits`` significant digits, never in exponent notation."""
    if value == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def iso_z(moment: dt.datetime | None) -> str:
    """Format an aware UTC datetime as ISO-8601 with a ``Z`` suffix (empty for None)."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sample_sd(values: list[float]) -> float:
    """Sample standard deviation (n - 1)."""
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
