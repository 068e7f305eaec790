"""Random cohorts for benchmark histories: many patients drawn from the designed scenarios.

Most patients are typical transient ones; a few accumulate, expand, reject, never engraft, fall
in exposure or carry a third genome (prior HSCT), with the same kinetics models as the committed
trial. Enrolment is staggered evenly over the first three quarters of the period.
"""

from __future__ import annotations

import datetime as dt
import random

from .genetics import MARKERS, TRANSGENE
from .protocol import PatientDesign, typical_cmax
from .rand import UTC

SCENARIO_WEIGHTS = (
    ("typical_transient", 70),
    ("accumulating_persistent", 7),
    ("unexpected_expansion", 4),
    ("early_loss", 4),
    ("never_engrafting", 3),
    ("falling_exposure", 4),
    ("relapse_three_genome", 4),
    ("stable_three_genome", 4),
)
SPECIMEN_SPELLINGS = ("Peripheral blood", "PB", "PBMC", "peripheral blood", "Whole blood")
SORTED_SHARE = 0.1
ENROLMENT_SHARE_OF_PERIOD = 0.75


INK_INDEL_MARKERS = ("S02", "S03", "S05", "S08")
HSCT_CANDIDATE_MARKERS = ("S07", "S11")


def _marker_copies(rng: random.Random) -> dict[str, int]:
    copies = {m: rng.choice((0, 0, 1, 1, 2)) for m in MARKERS}
    copies[TRANSGENE] = 0
    return copies


def _genomes(
    rng: random.Random, *, three_genome: bool
) -> tuple[dict[str, int], dict[str, int] | None]:
    """Germline (and HSCT donor) marker copies with an informative iNK (and HSCT) marker."""
    while True:
        germline = _marker_copies(rng)
        donor = _marker_copies(rng) if three_genome else None
        absent = [m for m in INK_INDEL_MARKERS if not germline[m] and not (donor or {}).get(m)]
        if not absent:
            continue
        if donor is None or any(donor[m] and not germline[m] for m in HSCT_CANDIDATE_MARKERS):
            return germline, donor


def random_patient(
    rng: random.Random, index: int, first_infusion: dt.datetime, end: dt.date
) -> PatientDesign:
    """One random patient of a benchmark cohort."""
    names, weights = zip(*SCENARIO_WEIGHTS, strict=True)
    scenario = rng.choices(names, weights)[0]
    germline, donor = _genomes(rng, three_genome=scenario.endswith("three_genome"))
    cohort = 1 if index % 2 else 2
    base = rng.uniform(10.0, 24.0)
    kwargs: dict[str, object] = {}
    half_life = rng.uniform(0.8, 1.3)
    cmax = typical_cmax(rng, base)
    if scenario == "accumulating_persistent":
        half_life, cmax = rng.uniform(12.0, 25.0), typical_cmax(rng, rng.uniform(3.0, 6.0))
    elif scenario == "unexpected_expansion":
        kwargs["expansion_anchors"] = ((181.0, 0.03), (220.0, 1.0), (276.0, 12.0), (365.0, 17.5))
    elif scenario == "early_loss":
        kwargs["rejected_from_dose"] = rng.choice((2, 3, 4))
    elif scenario == "never_engrafting":
        cmax = (0.0,) * len(cmax)
    elif scenario == "falling_exposure":
        cmax = tuple(round(v * 0.8**n, 2) for n, v in enumerate(cmax))
    elif scenario.endswith("three_genome"):
        kwargs["hsct_donor_markers"] = donor
        start = rng.uniform(1.0, 5.0)
        relapse = scenario.startswith("relapse")
        kwargs["recipient_share_anchors"] = (
            ((-7.0, start), (60.0, start), (180.0, 30.0), (365.0, 50.0))
            if relapse
            else ((-7.0, start), (365.0, start))
        )
        kwargs["dilution_by_relapse"] = relapse
    if rng.random() < SORTED_SHARE:
        kwargs["sorted_fraction_days"] = (1, 25, 53)
    spelling = rng.choice(SPECIMEN_SPELLINGS)
    return PatientDesign(
        f"H{index:03d}",
        scenario,
        cohort,
        first_infusion,
        half_life,
        cmax,
        rng.choice("MF"),
        germline,
        rng.uniform(1500.0, 4500.0),
        spelling,
        "benchmark patient",
        enrolment_end=end,
        **kwargs,  # type: ignore[arg-type]
    )


def random_cohort(seed: int, patients: int, start: dt.date, months: int) -> list[PatientDesign]:
    """``patients`` random patients enrolled evenly over the period (follow-up cut at its end)."""
    rng = random.Random(f"{seed}-cohort")
    days = round(months * 30.44)
    end = start + dt.timedelta(days=days)
    spacing = days * ENROLMENT_SHARE_OF_PERIOD / max(patients, 1)
    cohort = []
    for index in range(1, patients + 1):
        day = start + dt.timedelta(days=7 + round((index - 1) * spacing))
        moment = dt.datetime(day.year, day.month, day.day, 8, 30, tzinfo=UTC)
        moment += dt.timedelta(minutes=5 * rng.randrange(0, 66))
        cohort.append(random_patient(rng, index, moment, end))
    return cohort
