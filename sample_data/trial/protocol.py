"""The protocol (dosing cohorts, schedule, product lots, sample ids) and the designed patients.

Doses: twice weekly x 8 at the cohort's dose (5e8 cells in cohort 1, 1e9 in cohort 2), then 1e9
every 4 weeks x 5 (study days 52-164); follow-up to day 365.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from .genetics import TRANSGENE, hsct_markers, ink_markers
from .rand import clipped_jitter
from .vocab import AlertRuleId

SEED = 20250304
DOSE_DAYS = (0, 3, 7, 10, 14, 17, 21, 24, 52, 80, 108, 136, 164)
TWICE_WEEKLY_DOSES = 8
COHORT_DOSE_CELLS = {1: 5e8, 2: 1e9}
MONTHLY_DOSE_CELLS = 1e9
Q4W_EXTRA_DAYS = (3, 7, 14)
FOLLOW_UP_DAYS = (192, 220, 248, 276, 304, 335, 365)
BASELINE_DAY = -7
CELLS_PER_NORMALISED_DOSE = 1e9
"""Cmax is designed per 1e9 cells: a 5e8 dose gives half the bolus of a 1e9 dose."""

CELL_BANK = "INK-MCB01"
LOT_RELEASES = (("INK-MCB01-L01", dt.date(2025, 1, 1)), ("INK-MCB01-L02", dt.date(2025, 9, 1)))
"""Lots of the one master cell bank and the date each lot was first infused."""
PRODUCT_REFERENCE_ID = "INK-MCB01-REF"
"""The product reference DNA (extracted from lot L01), typed on every STR run and PCR plate."""
PRODUCT_REFERENCE_LOT = "INK-MCB01-L01"
CALIBRATORS = (
    ("INK-MCB01-L01-CAL", "INK-MCB01-L01", dt.date(2025, 1, 1)),
    ("INK-MCB01-L02-CAL", "INK-MCB01-L02", dt.date(2026, 1, 1)),
)
"""The 100 % calibrator on every qPCR/ddPCR plate: lot L01 DNA, then lot L02 DNA from 2026."""
NTC_ID = "NTC"

SPECIMEN_PRODUCT = "iNK cell product"
SPECIMEN_WATER = "nuclease-free water"
SPECIMEN_GERMLINE = "buccal swab"
SPECIMEN_HSCT_DONOR = "HSCT donor DNA (archived)"
FRACTION_CD56 = "CD56"
FRACTION_CD3 = "CD3"

ALL_RULES = tuple(AlertRuleId)


def lot_on(day: dt.date) -> str:
    """The product lot infused on a date (the latest lot released by then)."""
    return [lot for lot, released in LOT_RELEASES if released <= day][-1]


def calibrator_on(day: dt.date) -> tuple[str, str]:
    """The calibrator (sample id, lot) a plate run on ``day`` carries."""
    sample_id, lot, _ = [c for c in CALIBRATORS if c[2] <= day][-1]
    return sample_id, lot


def baseline_id(patient_id: str) -> str:
    """Pre-dose blood (day -7)."""
    return f"{patient_id}-BL"


def germline_id(patient_id: str) -> str:
    """The patient's own genome (buccal swab) of a three-genome patient."""
    return f"{patient_id}-GL"


def hsct_donor_id(patient_id: str) -> str:
    """The prior transplant donor's DNA of a three-genome patient."""
    return f"{patient_id}-HSCTD"


@dataclass(frozen=True)
class PatientDesign:
    """One patient's scenario: kinetics, genomes, blood counts and the alerts it must raise."""

    patient_id: str
    scenario: str
    cohort: int
    first_infusion: dt.datetime
    half_life_days: float
    cmax_per_1e9_pct: tuple[float, ...]
    sex: str
    germline_markers: dict[str, int]
    wbc_baseline_per_ul: float
    blood_specimen: str
    note: str
    must_fire: tuple[str, ...] = ()
    unconstrained: tuple[str, ...] = ()
    wbc_log_step_sd: float = 0.10
    nk_share: float = 0.10
    """Endogenous NK cells as a share of the patient's (non-iNK) leukocytes."""
    hsct_donor_markers: dict[str, int] | None = None
    recipient_share_anchors: tuple[tuple[float, float], ...] = ()
    """(study day, % of the non-iNK cells that are the recipient's own); three-genome only."""
    dilution_by_relapse: bool = False
    rejected_from_dose: int | None = None
    expansion_anchors: tuple[tuple[float, float], ...] = ()
    qc_failure_samples: tuple[str, ...] = ()
    str_contaminated_sample: str | None = None
    missed_samples: tuple[str, ...] = ()
    dose_cells_override: dict[int, float] = field(default_factory=dict)
    sorted_fraction_days: tuple[int, ...] = ()
    sorted_specimens: tuple[str, str] = ("CD56+ sorted PB", "PB CD3+")
    ddpcr_marker: str | None = None
    enrolment_end: dt.date | None = None
    """Last day samples exist (history generator: the end of the simulated period)."""

    @property
    def three_genome(self) -> bool:
        """A prior allogeneic HSCT: the patient's blood holds the HSCT donor's genome too."""
        return self.hsct_donor_markers is not None

    @property
    def must_not_fire(self) -> tuple[str, ...]:
        """Every rule that is neither required nor left open for this patient."""
        return tuple(r for r in ALL_RULES if r not in self.must_fire + self.unconstrained)

    def dose_cells(self, dose_number: int) -> float:
        """Cells given at a dose (protocol cohort dose, or the logged reduced dose)."""
        if dose_number in self.dose_cells_override:
            return self.dose_cells_override[dose_number]
        if dose_number <= TWICE_WEEKLY_DOSES:
            return COHORT_DOSE_CELLS[self.cohort]
        return MONTHLY_DOSE_CELLS

    def qpcr_markers(self) -> list[str]:
        """Informative indel markers run on qPCR follow-up plates (the transgene is ddPCR-only)."""
        return [
            m for m in ink_markers(self.germline_markers, self.hsct_donor_markers) if m != TRANSGENE
        ]

    def ddpcr_ink_marker(self) -> str:
        """The marker of the patient's ddPCR wells."""
        if self.ddpcr_marker is not None:
            return self.ddpcr_marker
        return ink_markers(self.germline_markers, self.hsct_donor_markers)[0]

    def hsct_marker(self) -> str | None:
        """The marker measuring the HSCT donor's share (three-genome patients)."""
        found = hsct_markers(self.germline_markers, self.hsct_donor_markers)
        return found[0] if found else None


def typical_cmax(rng: random.Random, base_per_1e9_pct: float) -> tuple[float, ...]:
    """Comparable dose-normalised Cmax per dose: base x lognormal(0.12) clipped to 0.8-1.25."""
    return tuple(
        round(base_per_1e9_pct * clipped_jitter(rng, 0.12, 0.8, 1.25), 2) for _ in DOSE_DAYS
    )


def validate_design(patient: PatientDesign) -> None:
    """Fail loudly when a design cannot be measured (no informative marker, wrong HSCT marker)."""
    if not patient.qpcr_markers():
        msg = f"{patient.patient_id}: no informative indel marker for qPCR"
        raise ValueError(msg)
    if patient.ddpcr_ink_marker() not in ink_markers(
        patient.germline_markers, patient.hsct_donor_markers
    ):
        msg = f"{patient.patient_id}: ddPCR marker {patient.ddpcr_ink_marker()} is not informative"
        raise ValueError(msg)
    if patient.three_genome and patient.hsct_marker() is None:
        msg = f"{patient.patient_id}: three-genome patient without an HSCT-donor marker"
        raise ValueError(msg)
