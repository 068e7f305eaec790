"""Random cohorts for benchmark histories: many patients drawn from the designed scenarios.

Most patients are typical transient ones; a few accumulate, expand, reject, never engraft, fall
in exposure or carry a third genome (prior HSCT), with the same kinetics models as the committed
trial. Enrolment is staggered evenly over the first three quarters of the period.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import replace

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
SORTED_FRACTION_DAYS = (1, 25, 53)
EXPANSION_ANCHORS = ((181.0, 0.03), (220.0, 1.0), (276.0, 12.0), (365.0, 17.5))
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


def _scenario(
    rng: random.Random, base: PatientDesign, donor: dict[str, int] | None
) -> PatientDesign:
    """Apply the kinetics of the patient's scenario to a typical design."""
    scenario = base.scenario
    if scenario == "accumulating_persistent":
        cmax = typical_cmax(rng, rng.uniform(3.0, 6.0))
        return replace(base, half_life_days=rng.uniform(12.0, 25.0), cmax_per_1e9_pct=cmax)
    if scenario == "unexpected_expansion":
        return replace(base, expansion_anchors=EXPANSION_ANCHORS)
    if scenario == "early_loss":
        return replace(base, rejected_from_dose=rng.choice((2, 3, 4)))
    if scenario == "never_engrafting":
        return replace(base, cmax_per_1e9_pct=(0.0,) * len(base.cmax_per_1e9_pct))
    if scenario == "falling_exposure":
        falling = tuple(round(v * 0.8**n, 2) for n, v in enumerate(base.cmax_per_1e9_pct))
        return replace(base, cmax_per_1e9_pct=falling)
    if donor is not None:
        start = rng.uniform(1.0, 5.0)
        relapse = scenario.startswith("relapse")
        anchors = (
            ((-7.0, start), (60.0, start), (180.0, 30.0), (365.0, 50.0))
            if relapse
            else ((-7.0, start), (365.0, start))
        )
        return replace(base, hsct_donor_markers=donor, recipient_share_anchors=anchors,
                       dilution_by_relapse=relapse)  # fmt: skip
    return base


def random_patient(
    rng: random.Random, index: int, first_infusion: dt.datetime, end: dt.date
) -> PatientDesign:
    """One random patient of a benchmark cohort."""
    names, weights = zip(*SCENARIO_WEIGHTS, strict=True)
    scenario = rng.choices(names, weights)[0]
    germline, donor = _genomes(rng, three_genome=scenario.endswith("three_genome"))
    base = PatientDesign(
        patient_id=f"H{index:03d}", scenario=scenario, cohort=1 if index % 2 else 2,
        first_infusion=first_infusion, half_life_days=rng.uniform(0.8, 1.3),
        cmax_per_1e9_pct=typical_cmax(rng, rng.uniform(10.0, 24.0)), sex=rng.choice("MF"),
        germline_markers=germline, wbc_baseline_per_ul=rng.uniform(1500.0, 4500.0),
        blood_specimen=rng.choice(SPECIMEN_SPELLINGS), note="benchmark patient",
        enrolment_end=end,
    )  # fmt: skip
    patient = _scenario(rng, base, donor)
    if rng.random() < SORTED_SHARE:
        patient = replace(patient, sorted_fraction_days=SORTED_FRACTION_DAYS)
    return patient


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
