"""Result states and detection limits shared by every method (methods.md section 4).

Hand calculations of CLSI EP17-A2 and of the three-state table; the method tests check the
same rules through each method's own path.
"""

from __future__ import annotations

import math
import statistics

import pytest

from chimera.calculate.limits import (
    DilutionLevel,
    clamp_pct,
    classify_result,
    limit_of_blank,
    limit_of_detection,
    limits_from_dilution_series,
    summarise_dilution_series,
)
from schemas.vocab import ResultStatus


@pytest.mark.parametrize(
    ("pct", "detected", "failed", "loq", "status"),
    [
        (0.5, True, False, 0.5, ResultStatus.QUANTIFIED),  # at the LoQ: quantified (>= LoQ)
        (0.4999, True, False, 0.5, ResultStatus.BELOW_LOQ),
        (30.0, True, False, 0.5, ResultStatus.QUANTIFIED),
        (30.0, False, False, 0.5, ResultStatus.NOT_DETECTED),  # no detection call: no value
        (None, True, False, 0.5, ResultStatus.NOT_DETECTED),
        (30.0, True, True, 0.5, ResultStatus.FAILED),  # QC failure outranks every value
        (0.01, True, False, None, ResultStatus.QUANTIFIED),  # no LoQ known: nothing demotes
    ],
)
def test_three_result_states(
    pct: float | None, detected: bool, failed: bool, loq: float | None, status: ResultStatus
) -> None:
    """quantified >= LoQ; below_loq detected but < LoQ; not_detected without a detection call;
    failed on QC failure (methods.md 4, "Three result states")."""
    assert classify_result(pct, detected=detected, failed=failed, loq_pct=loq) is status


def test_limit_of_blank_by_hand() -> None:
    """LoB = mean_B + 1.645 SD_B: blanks 0, 0.01, 0.02, 0.01 -> 0.01 + 1.645 x 0.008165."""
    blanks = [0.0, 0.01, 0.02, 0.01]
    assert statistics.stdev(blanks) == pytest.approx(0.008165, abs=1e-6)
    assert limit_of_blank(blanks) == pytest.approx(0.01 + 1.645 * math.sqrt(0.0002 / 3))
    with pytest.raises(ValueError, match="at least 2 blank results"):
        limit_of_blank([0.0])


def test_limit_of_detection_by_hand() -> None:
    """LoD = LoB + c_beta SD_low, c_beta = 1.645 / (1 - 1/(4(L - J))): L = 6 results on J = 2
    samples, each with SD 0.1 (pooled SD 0.1), c_beta = 1.645 / (15/16) = 1.754667."""
    low = [[0.2, 0.3, 0.4], [0.25, 0.35, 0.45]]
    c_beta = 1.645 / (1 - 1 / (4 * (6 - 2)))
    assert c_beta == pytest.approx(1.754667, abs=1e-6)
    assert limit_of_detection(0.1, low) == pytest.approx(0.1 + c_beta * 0.1)
    with pytest.raises(ValueError, match="2 or more replicate results"):
        limit_of_detection(0.1, [[0.2]])


def test_dilution_levels_and_limits() -> None:
    """LoD = lowest level detected in >= 95 % of replicates with every level above detected;
    LoQ = lowest level >= LoD within 25 % of nominal and CV <= 25 %, every level above too."""
    rows = [
        (0.0, "not_detected", None),  # the diluent: no level
        (0.01, "not_detected", None),
        (0.01, "below_loq", 0.02),
        (0.05, "below_loq", 0.04),
        (0.05, "below_loq", 0.08),
        (0.1, "quantified", 0.1),
        (0.1, "quantified", 0.11),
        (1.0, "quantified", 0.95),
        (1.0, "quantified", 1.05),
    ]
    levels = summarise_dilution_series(rows)
    assert [(lv.nominal_pct, lv.n, lv.n_detected) for lv in levels] == [
        (0.01, 2, 1),
        (0.05, 2, 2),
        (0.1, 2, 2),
        (1.0, 2, 2),
    ]
    assert levels[1].cv == pytest.approx(statistics.stdev([0.04, 0.08]) / 0.06)  # 0.47: too wide
    assert limits_from_dilution_series(levels) == (0.05, 0.1)


def test_an_undetected_level_above_ends_the_detected_run() -> None:
    """A level missed above a detected one: the LoD is above the miss (every higher level)."""
    levels = [
        DilutionLevel(0.05, 4, 4, 0.05, 0.1),
        DilutionLevel(0.1, 4, 3, 0.1, 0.1),  # 75 % detected
        DilutionLevel(1.0, 4, 4, 1.0, 0.05),
    ]
    assert limits_from_dilution_series(levels) == (1.0, 1.0)
    assert limits_from_dilution_series([DilutionLevel(1.0, 2, 1, 1.0, None)]) == (None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(50.0, (50.0, False)), (-0.3, (0.0, True)), (111.3, (100.0, True)), (None, (None, False))],
)
def test_clamp_keeps_the_flag(value: float | None, expected: tuple[float | None, bool]) -> None:
    """Estimates outside 0-100 % are clamped for the table and flagged (methods.md 2.2)."""
    assert clamp_pct(value) == expected
