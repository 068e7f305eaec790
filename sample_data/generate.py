"""Generate the synthetic Chimera sample trial: manifest, infusion log, instrument exports, truth.

Run ``.venv/bin/python sample_data/generate.py``. The output is deterministic (fixed seeds,
stdlib ``random`` + ``math`` only): every run writes byte-identical files into ``sample_data/``.

Design (details in ``sample_data/README.md``): 10 AML patients receive an iPSC-derived NK product
(one genome, lot ``INK-MCB-LOT01``); blood is sampled around each of 13 doses and monthly for a
year. Each post-dose sample has one true iNK fraction ``pct_ink`` which drives every method:

* STR: GeneMapper Sizing Tables (one run per calendar month; one run as a Genotypes Table), peak
  areas from s(x) = T·[f·d_D(x) + (1−f)·d_R(x)]/2 with noise, imbalance, back stutter and a
  50 RFU analysis threshold.
* qPCR: QuantStudio 7 Flex text exports (384-well), donor-specific indel markers + RPP30,
  Ct = intercept + slope·log10(Poisson copies) + noise.
* ddPCR: QuantaSoft 1.7 (early runs) and QX Manager (later runs) duplex marker (FAM) + RPP30
  (HEX) wells, positive droplets ~ Binomial(accepted, 1 − e^−λ).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import math
import random
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import openpyxl

# ----------------------------------------------------------------------------------------------
# Constants (units in the names)
# ----------------------------------------------------------------------------------------------
SEED = 20250304
OUT_DIR = Path(__file__).resolve().parent
UTC = dt.UTC
FIXED_DOC_TIME = dt.datetime(2025, 1, 1, 0, 0, 0)  # noqa: DTZ001 - openpyxl stores naive UTC
ZIP_ENTRY_TIME = (2025, 1, 1, 0, 0, 0)

PRODUCT_LOT = "INK-MCB-LOT01"
PRODUCT_REFERENCE_ID = f"{PRODUCT_LOT}-REF"
SPECIMEN_BLOOD = "peripheral blood"
SPECIMEN_PRODUCT = "iNK cell product"
SPECIMEN_WATER = "nuclease-free water"
NTC_PATIENT_ID = "NTC"

DOSE_DAYS = (0, 3, 7, 10, 14, 17, 21, 24, 52, 80, 108, 136, 164)
DOSE_CELLS = (5e8, 5e8, 5e8, 5e8, 1e9, 1e9, 1e9, 1e9, 1e9, 1e9, 1e9, 1e9, 1e9)
FIRST_Q4W_DOSE = 9
Q4W_EXTRA_DAYS = (3, 7, 14)
FOLLOW_UP_DAYS = (192, 220, 248, 276, 304, 335, 365)
BASELINE_DAY = -7
BOLUS_PLATEAU_DAYS = 1.0  # a dose's iNK fraction stays at Cmax for 1 day, then decays
CLEARANCE_FLOOR_PCT = 0.01  # model values below this are set to exactly 0 (all iNK cleared)
PCT_SIGNIFICANT_DIGITS = 5

# STR (GeneMapper) signal model
STR_ANALYSIS_THRESHOLD_RFU = 50
STR_TOTAL_SIGNAL_MIN_RFU = 22_000.0  # T: summed peak area per locus
STR_TOTAL_SIGNAL_MAX_RFU = 42_000.0
STR_AREA_NOISE_SD_LOG = 0.05
STR_HET_IMBALANCE_SD_LOG = 0.03
STR_LOCUS_SIGNAL_SD_LOG = 0.08
STR_STUTTER_NOISE_SD_LOG = 0.15
STR_AREA_PER_HEIGHT_MIN = 6.0
STR_AREA_PER_HEIGHT_MAX = 8.0
STR_SIZE_JITTER_SD_BP = 0.08
STR_CONTAMINATION_FRACTION = 0.25
STR_GENOTYPES_TABLE_SLOTS = 8
STR_GENOTYPES_TABLE_MONTH = "2025-06"

# qPCR (QuantStudio) Ct model
QPCR_GENOMES_PER_WELL_MIN = 10_000
QPCR_GENOMES_PER_WELL_MAX = 20_000
QPCR_FAILED_GENOMES_PER_WELL_MIN = 3
QPCR_FAILED_GENOMES_PER_WELL_MAX = 6
QPCR_CT_NOISE_SD_CYCLES = 0.08
QPCR_PIPETTING_CV = 0.03  # well-to-well DNA input variation of one extract (log SD)
QPCR_MAX_CYCLES = 40.0
QPCR_REPLICATES = 3
QPCR_CALIBRATOR_REPLICATES = 6  # the calibrator anchors every ΔΔCt on the plate
QPCR_PLATE_WELLS = 384
QPCR_PLATE_COLUMNS = 24
QPCR_RESERVED_WELLS = 40
# target -> (intercept Ct at 1 copy, slope cycles/decade, reporter, Ct threshold dRn)
QPCR_ASSAYS = {
    "RPP30": (37.6, -3.32, "VIC", 0.180),
    "S02": (37.9, -3.31, "FAM", 0.150),
    "S05": (38.0, -3.33, "FAM", 0.140),
    "S08": (37.8, -3.32, "FAM", 0.160),
    "S11": (37.7, -3.30, "FAM", 0.150),
}
REFERENCE_GENE = "RPP30"

# ddPCR
DDPCR_DROPLET_VOLUME_UL = 0.85e-3
DDPCR_WELL_VOLUME_UL = 20.0
DDPCR_ACCEPTED_MEAN = 17_000.0
DDPCR_ACCEPTED_SD = 1_500.0
DDPCR_ACCEPTED_MIN = 12_000
DDPCR_FAILED_ACCEPTED_MIN = 3_500
DDPCR_FAILED_ACCEPTED_MAX = 7_500
DDPCR_LAMBDA_REF_MIN = 0.5
DDPCR_LAMBDA_REF_MAX = 1.0
DDPCR_FAILED_LAMBDA_REF_MIN = 0.004
DDPCR_FAILED_LAMBDA_REF_MAX = 0.010
DDPCR_REPLICATES = 2
DDPCR_PIPETTING_CV = 0.03  # well-to-well DNA input variation of one extract (log SD)
DDPCR_PLATE_WELLS = 96
DDPCR_RESERVED_WELLS = 16
DDPCR_QX_MANAGER_FROM = dt.date(2025, 5, 1)  # runs from this date on use QX Manager
Z95 = 1.959963984540054

# donor-specific indel markers: copies per product genome (0 = product negative)
PRODUCT_MARKER_COPIES = {"S02": 1, "S05": 2, "S08": 1, "S11": 0}
PRODUCT_SEX = "XY"


# ----------------------------------------------------------------------------------------------
# STR panel (PowerPlex 16 names; offsets fitted to the real Rchimerism sizing tables)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Locus:
    """One STR locus: dye, size model, ladder range, allele frequencies and stutter ratio."""

    name: str
    dye: str
    offset_bp: float
    repeat_bp: int
    ladder_min: int
    ladder_max: int
    alleles: dict[str, float]
    stutter_ratio: float
    microvariant_bins: tuple[str, ...] = ()


LOCI = (
    Locus("D3S1358", "B", 64.2, 4, 12, 20, {"13": 3, "14": 12, "15": 26, "16": 25, "17": 20, "18": 12}, 0.090),
    Locus("TH01", "B", 138.0, 4, 4, 13, {"6": 23, "7": 19, "8": 12, "9": 15, "9.3": 30, "10": 1}, 0.030, ("9.3", "10.3")),
    Locus(
        "D21S11", "B", 103.2, 4, 24, 38,
        {"27": 4, "28": 16, "29": 20, "30": 25, "30.2": 3, "31": 7, "31.2": 9, "32.2": 11, "33.2": 5},
        0.075, ("28.2", "29.2", "30.2", "31.2", "32.2", "33.2", "34.2"),
    ),
    Locus(
        "D18S51", "B", 249.0, 4, 8, 27,
        {"12": 12, "13": 13, "14": 16, "15": 15, "16": 12, "17": 12, "18": 8, "19": 5, "20": 4, "21": 3},
        0.085,
    ),
    Locus(
        "Penta E", "B", 352.5, 5, 5, 24,
        {"5": 7, "7": 18, "10": 7, "11": 9, "12": 17, "13": 10, "14": 7, "15": 6, "16": 5, "17": 5, "18": 3},
        0.040,
    ),
    Locus("D5S818", "G", 86.7, 4, 7, 16, {"9": 4, "10": 5, "11": 36, "12": 35, "13": 15, "14": 5}, 0.065),
    Locus("D13S317", "G", 143.9, 4, 7, 15, {"8": 10, "9": 7, "10": 5, "11": 30, "12": 30, "13": 12, "14": 6}, 0.060),
    Locus("D7S820", "G", 188.5, 4, 6, 14, {"8": 15, "9": 15, "10": 27, "11": 20, "12": 15, "13": 3, "14": 5}, 0.065),
    Locus("D16S539", "G", 243.0, 4, 5, 15, {"9": 11, "10": 6, "11": 32, "12": 32, "13": 17, "14": 2}, 0.070),
    Locus("CSF1PO", "G", 293.0, 4, 6, 15, {"9": 2, "10": 25, "11": 30, "12": 35, "13": 7, "14": 1}, 0.070),
    Locus("Penta D", "G", 353.2, 5, 2, 17, {"8": 3, "9": 20, "10": 13, "11": 16, "12": 20, "13": 18, "14": 6, "15": 4}, 0.035),
    Locus("AMEL", "Y", 0.0, 0, 0, 0, {"X": 1}, 0.0),
    Locus("vWA", "Y", 82.3, 4, 10, 22, {"14": 10, "15": 11, "16": 20, "17": 26, "18": 20, "19": 10, "20": 3}, 0.080),
    Locus("D8S1179", "Y", 174.2, 4, 7, 18, {"10": 10, "11": 8, "12": 14, "13": 30, "14": 20, "15": 10, "16": 5, "17": 3}, 0.070),
    Locus("TPOX", "Y", 236.7, 4, 6, 13, {"8": 53, "9": 10, "10": 5, "11": 26, "12": 6}, 0.045),
    Locus("FGA", "Y", 257.6, 4, 16, 46, {"19": 6, "20": 14, "21": 18, "22": 20, "22.2": 1, "23": 15, "24": 13, "25": 8, "26": 5}, 0.100, ("22.2",)),
)  # fmt: skip
LOCUS_BY_NAME = {locus.name: locus for locus in LOCI}
AMEL_SIZE_BP = {"X": 104.13, "Y": 109.95}
DYE_ORDER = ("B", "G", "Y")

PRODUCT_STR_GENOTYPE = {
    "D3S1358": ("14", "17"), "TH01": ("7", "9.3"), "D21S11": ("29", "31.2"), "D18S51": ("13", "17"),
    "Penta E": ("11", "16"), "D5S818": ("11", "13"), "D13S317": ("9", "12"), "D7S820": ("8", "11"),
    "D16S539": ("9", "13"), "CSF1PO": ("10", "12"), "Penta D": ("9", "13"), "AMEL": ("X", "Y"),
    "vWA": ("15", "18"), "D8S1179": ("12", "14"), "TPOX": ("8", "11"), "FGA": ("21", "24"),
}  # fmt: skip

Genotype = dict[str, tuple[str, str]]


# ----------------------------------------------------------------------------------------------
# Patients and scenarios
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatientDesign:
    """Per-patient scenario parameters (the knobs that make each alert rule fire or not)."""

    patient_id: str
    scenario: str
    first_infusion: dt.datetime
    half_life_days: float
    cmax_pct: tuple[float, ...]
    sex: str
    marker_copies: dict[str, int]
    wbc_baseline_per_ul: float
    wbc_log_step_sd: float
    note: str
    rejected_from_dose: int | None = None
    expansion_anchors: tuple[tuple[float, float], ...] = ()
    qc_failure_samples: tuple[str, ...] = ()
    str_contaminated_sample: str | None = None


def _typical_cmax(rng: random.Random, base_pct: float) -> tuple[float, ...]:
    """Comparable Cmax per dose: 5e8 doses at base, 1e9 doses at 1.3x base, +-~12 % variation."""
    values = []
    for cells in DOSE_CELLS:
        scale = 1.0 if cells < 1e9 else 1.3
        jitter = min(max(math.exp(rng.gauss(0.0, 0.12)), 0.8), 1.25)
        values.append(round(base_pct * scale * jitter, 2))
    return tuple(values)


def build_patients() -> list[PatientDesign]:
    """Return the ten patients P01-P10 with their scenarios (see README for the rationale)."""
    rng = random.Random(f"{SEED}-patients")

    def start(month: int, day: int, hour: int, minute: int) -> dt.datetime:
        return dt.datetime(2025, month, day, hour, minute, tzinfo=UTC)

    def markers(s02: int, s05: int, s08: int, s11: int) -> dict[str, int]:
        return {"S02": s02, "S05": s05, "S08": s08, "S11": s11}

    p06_cmax = (15.0, 11.0, 8.0, 5.5, 4.5, 4.2, 4.0, 3.8, 2.2, 2.0, 2.1, 1.9, 2.0)
    p03_cmax = (2.5, 2.5, 2.5, 2.5, 3.0, 3.0, 3.0, 3.0, 8.0, 8.0, 8.0, 8.0, 8.0)
    return [
        PatientDesign("P01", "typical", start(3, 4, 9, 40), 1.5, _typical_cmax(rng, 9.0), "M",
                      markers(0, 1, 1, 1), 2500, 0.10, "typical transient"),
        PatientDesign("P02", "typical", start(3, 25, 10, 15), 1.2, _typical_cmax(rng, 7.0), "F",
                      markers(1, 0, 1, 0), 1200, 0.10, "typical transient"),
        PatientDesign("P03", "persistence", start(4, 15, 8, 55), 27.0, p03_cmax, "F",
                      markers(0, 0, 1, 1), 3800, 0.01,
                      "slow clearance (t1/2 27 d): quantified >= 0.5 % until day 276; stable WBC so absolute"
                      " iNK counts also fall within every interval"),
        PatientDesign("P04", "early_loss", start(5, 6, 11, 20), 1.0, _typical_cmax(rng, 10.0), "M",
                      markers(1, 1, 0, 1), 900, 0.10,
                      "rejection: dose 1 seen (~10 %), nothing after dose 2", rejected_from_dose=2),
        PatientDesign("P05", "unexpected_expansion", start(5, 27, 9, 5), 1.5, _typical_cmax(rng, 10.0),
                      "F", markers(0, 1, 0, 0), 2000, 0.08,
                      "typical until day 178, then dose-independent expansion from day ~181",
                      expansion_anchors=((181.0, 0.03), (192.0, 0.2), (220.0, 1.0), (248.0, 4.0),
                                         (276.0, 12.0), (304.0, 15.0), (335.0, 16.5), (365.0, 17.5))),
        PatientDesign("P06", "falling_exposure", start(6, 17, 13, 30), 1.0, p06_cmax, "M",
                      markers(1, 0, 0, 1), 4500, 0.10,
                      "Cmax falls 15 % -> 4 % (dose 8) -> 2 % (q4w doses)"),
        PatientDesign("P07", "repeated_qc_failure", start(7, 8, 10, 45), 1.5, _typical_cmax(rng, 10.0),
                      "F", markers(0, 1, 1, 0), 1800, 0.10,
                      "typical kinetics; 3 samples with DNA-input/droplet failures, 1 STR contamination",
                      qc_failure_samples=("P07-D055", "P07-D087", "P07-D111"),
                      str_contaminated_sample="P07-D015"),
        PatientDesign("P08", "typical_variable_wbc", start(7, 29, 12, 10), 1.0, _typical_cmax(rng, 8.0),
                      "M", markers(1, 1, 0, 0), 3000, 0.35, "typical kinetics, volatile WBC"),
        PatientDesign("P09", "typical", start(8, 19, 9, 25), 1.8, _typical_cmax(rng, 12.0), "F",
                      markers(0, 0, 1, 1), 1500, 0.10, "typical transient (highest Cmax)"),
        PatientDesign("P10", "typical", start(9, 9, 8, 35), 1.0, _typical_cmax(rng, 6.0), "M",
                      markers(1, 0, 1, 1), 5200, 0.10, "typical transient (lowest Cmax)"),
    ]  # fmt: skip


EXPECTED_ALERTS = {
    "EARLY_LOSS": ["P04"],
    "FALLING_EXPOSURE": ["P04", "P06"],
    "UNEXPECTED_PERSISTENCE": ["P03", "P05"],
    # P05 expands with no dose after day 178. P03's 27-day half-life makes each twice-weekly
    # pre-dose trough exceed the previous dose's peak: the trough-above-peak arm of the rule
    # (accumulation of a product expected to clear), which the clinical team must see too.
    "UNEXPECTED_EXPANSION": ["P03", "P05"],
    "REPEATED_QC_FAILURE": ["P07"],
}
ALERT_RULES = {
    "EARLY_LOSS": "not detected at the first post-dose sample after dose k >= 2 while dose 1's "
    "post-dose sample was quantified",
    "FALLING_EXPOSURE": "Cmax of >= 2 consecutive later doses below 0.5 x dose-1 Cmax "
    "(methods.md DECLINING_EXPOSURE)",
    "UNEXPECTED_PERSISTENCE": "quantified > 28 days after the last dose (day 164)",
    "UNEXPECTED_EXPANSION": ">= 2 consecutive significant rises (> 1.96*sqrt(u1^2+u2^2)) with no "
    "dose between, or a pre-dose trough above the previous interval's Cmax + CD",
    "REPEATED_QC_FAILURE": ">= 3 failed results for a patient",
}


# ----------------------------------------------------------------------------------------------
# Samples and truth
# ----------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One manifest row plus the simulation truth attached to it."""

    sample_id: str
    patient_id: str
    role: str
    collected_at: dt.datetime | None = None
    specimen: str = SPECIMEN_BLOOD
    study_day: int | None = None
    timepoint: str = ""
    dose_before: int = 0
    pct_ink: float = 0.0
    wbc_per_ul: int | None = None
    lymphocytes_per_ul: int | None = None
    product_lot: str | None = None
    qc_failure: tuple[str, ...] = ()
    str_contaminated: bool = False
    methods: list[str] = field(default_factory=list)


def iso_z(moment: dt.datetime | None) -> str:
    """Format an aware UTC datetime as ISO-8601 with a ``Z`` suffix (empty for None)."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dose_times(rng: random.Random, patient: PatientDesign) -> list[dt.datetime]:
    """Administration times: protocol days, infusion between 08:30 and 14:00 UTC."""
    first_date = patient.first_infusion.date()
    times = [patient.first_infusion]
    for day in DOSE_DAYS[1:]:
        minute_of_day = rng.randrange(8 * 60 + 30, 14 * 60, 5)
        date = first_date + dt.timedelta(days=day)
        times.append(dt.datetime(date.year, date.month, date.day, tzinfo=UTC)
                     + dt.timedelta(minutes=minute_of_day))  # fmt: skip
    return times


def _morning_draw(rng: random.Random, date: dt.date) -> dt.datetime:
    minute_of_day = rng.randrange(7 * 60, 11 * 60, 5)
    return dt.datetime(date.year, date.month, date.day, tzinfo=UTC) + dt.timedelta(
        minutes=minute_of_day
    )


def true_pct(patient: PatientDesign, doses: list[dt.datetime], moment: dt.datetime) -> float:
    """True % iNK at a moment: sum of per-dose boluses (+ expansion), floored, rounded.

    Each dose n adds ``Cmax_n`` for the first day and then decays with the patient's half-life.
    Values below ``CLEARANCE_FLOOR_PCT`` are exactly 0 (no iNK DNA left).
    """
    if patient.rejected_from_dose is not None:
        rejection_start = doses[patient.rejected_from_dose - 1]
        if moment > rejection_start:
            return 0.0
    total = 0.0
    decay_per_day = math.log(2.0) / patient.half_life_days
    for dose_time, cmax in zip(doses, patient.cmax_pct, strict=True):
        tau_days = (moment - dose_time).total_seconds() / 86_400.0
        if tau_days <= 0:
            continue
        total += cmax * math.exp(-decay_per_day * max(tau_days - BOLUS_PLATEAU_DAYS, 0.0))
    total += expansion_pct(patient, doses[0], moment)
    if total < CLEARANCE_FLOOR_PCT:
        return 0.0
    return float(f"{total:.{PCT_SIGNIFICANT_DIGITS}g}")


def expansion_pct(patient: PatientDesign, day0: dt.datetime, moment: dt.datetime) -> float:
    """Dose-independent expansion: log-linear interpolation between (day, %) anchors."""
    anchors = patient.expansion_anchors
    if not anchors:
        return 0.0
    day = (moment - day0).total_seconds() / 86_400.0
    if day < anchors[0][0]:
        return 0.0
    for (d1, v1), (d2, v2) in itertools.pairwise(anchors):
        if d1 <= day <= d2:
            weight = (day - d1) / (d2 - d1)
            return math.exp(math.log(v1) + weight * (math.log(v2) - math.log(v1)))
    return anchors[-1][1]


def build_samples(
    patient: PatientDesign, doses: list[dt.datetime], rng: random.Random
) -> list[Sample]:
    """Baseline, pre-dose troughs, post-dose and follow-up samples of one patient, in time order."""
    pid = patient.patient_id
    day0 = patient.first_infusion.date()
    samples = [
        Sample(f"{pid}-BL", pid, "recipient_baseline",
               _morning_draw(rng, day0 + dt.timedelta(days=BASELINE_DAY)),
               study_day=BASELINE_DAY, timepoint="baseline")
    ]  # fmt: skip
    for number, (day, dose_time) in enumerate(zip(DOSE_DAYS, doses, strict=True), start=1):
        if number > 1:
            before = dose_time - dt.timedelta(minutes=rng.randrange(30, 115, 5))
            samples.append(Sample(f"{pid}-D{day:03d}-PRE", pid, "post_dose", before, study_day=day,
                                  timepoint=f"pre-dose {number}", dose_before=number - 1))  # fmt: skip
        offsets = (1, *Q4W_EXTRA_DAYS) if number >= FIRST_Q4W_DOSE else (1,)
        for offset in offsets:
            moment = _morning_draw(rng, dose_time.date() + dt.timedelta(days=offset))
            samples.append(Sample(f"{pid}-D{day + offset:03d}", pid, "post_dose", moment,
                                  study_day=day + offset, timepoint=f"dose {number} +{offset}d",
                                  dose_before=number))  # fmt: skip
    for day in FOLLOW_UP_DAYS:
        moment = _morning_draw(rng, day0 + dt.timedelta(days=day))
        samples.append(Sample(f"{pid}-D{day:03d}", pid, "post_dose", moment, study_day=day,
                              timepoint="follow-up", dose_before=len(DOSE_DAYS)))  # fmt: skip
    samples.sort(key=lambda s: s.collected_at or dt.datetime.min.replace(tzinfo=UTC))
    for sample in samples:
        if sample.role == "post_dose" and sample.collected_at is not None:
            sample.pct_ink = true_pct(patient, doses, sample.collected_at)
            sample.product_lot = PRODUCT_LOT
        if sample.sample_id in patient.qc_failure_samples:
            sample.qc_failure = ("qPCR:reference_ct_above_33", "ddPCR:accepted_droplets_below_8000")
        if sample.sample_id == patient.str_contaminated_sample:
            sample.str_contaminated = True
    _attach_blood_counts(patient, samples, rng)
    return samples


def _attach_blood_counts(patient: PatientDesign, samples: list[Sample], rng: random.Random) -> None:
    """WBC as a mean-reverting log random walk (500-6000/uL); lymphocytes 15-45 % of WBC."""
    base = math.log(patient.wbc_baseline_per_ul)
    level = base
    for sample in samples:
        step = rng.gauss(0.0, patient.wbc_log_step_sd)
        step = min(max(step, -0.5), 0.5)
        level = base + 0.6 * (level - base) + step
        wbc = min(max(math.exp(level), 500.0), 6000.0)
        sample.wbc_per_ul = round(wbc)
        sample.lymphocytes_per_ul = round(wbc * rng.uniform(0.15, 0.45))


# ----------------------------------------------------------------------------------------------
# Random helpers (stdlib only)
# ----------------------------------------------------------------------------------------------
def poisson(rng: random.Random, mean: float) -> int:
    """Poisson draw: Knuth's product method below mean 40, rounded normal above."""
    if mean <= 0:
        return 0
    if mean < 40:
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
    if mean < 40:
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


def fmt_sig(value: float, digits: int) -> str:
    """Format with ``digits`` significant digits, never in exponent notation."""
    if value == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# ----------------------------------------------------------------------------------------------
# STR genotypes and peaks
# ----------------------------------------------------------------------------------------------
def allele_minus_one(locus: Locus, allele: str) -> str | None:
    """Allele one repeat shorter (back-stutter position); microvariants keep their suffix."""
    if locus.name == "AMEL":
        return None
    whole, _, fraction = allele.partition(".")
    shorter = int(whole) - 1
    if shorter < 1:
        return None
    return f"{shorter}.{fraction}" if fraction else str(shorter)


def allele_size_bp(locus: Locus, allele: str) -> float:
    """Fragment size: locus offset + repeat x allele (+ microvariant bases)."""
    if locus.name == "AMEL":
        return AMEL_SIZE_BP[allele]
    whole, _, fraction = allele.partition(".")
    return locus.offset_bp + locus.repeat_bp * int(whole) + (int(fraction) if fraction else 0)


def allele_label(locus: Locus, allele: str) -> str:
    """GeneMapper call: the allele when it falls in a ladder bin, ``OL`` otherwise."""
    if locus.name == "AMEL":
        return allele
    whole, _, fraction = allele.partition(".")
    if fraction:
        return allele if allele in locus.microvariant_bins else "OL"
    return allele if locus.ladder_min <= int(whole) <= locus.ladder_max else "OL"


def random_genotype(rng: random.Random, sex: str, product: Genotype | None) -> Genotype:
    """Draw a genotype; with ``product`` given, keep informative loci free of stutter overlaps.

    At a locus where patient and product differ, no allele of either genome sits one repeat below
    another (n-1), so back stutter never lands on an allele used by the per-locus formulas and the
    STR accuracy of the sample trial does not depend on stutter correction. Stutter peaks still
    appear (labelled n-1 calls) at positions no reference genome carries.
    """
    genotype: Genotype = {}
    for locus in LOCI:
        if locus.name == "AMEL":
            genotype["AMEL"] = ("X", "Y") if sex == "M" else ("X", "X")
            continue
        names, weights = list(locus.alleles), list(locus.alleles.values())
        while True:
            pair = tuple(
                sorted(rng.choices(names, weights, k=2), key=lambda a: allele_size_bp(locus, a))
            )
            if product is None:
                break
            union = set(product[locus.name]) | set(pair)
            if set(pair) == set(product[locus.name]):
                break  # not informative: stutter overlaps do not matter
            if not union & {allele_minus_one(locus, a) for a in union}:
                break
        genotype[locus.name] = (pair[0], pair[1])
    return genotype


def informative_loci(product: Genotype, patient: Genotype) -> list[str]:
    """Autosomal loci where product and patient genotypes differ."""
    return [
        locus.name
        for locus in LOCI
        if locus.name != "AMEL" and sorted(product[locus.name]) != sorted(patient[locus.name])
    ]


@dataclass
class Peak:
    """One exported GeneMapper peak."""

    dye: str
    marker: str
    allele: str
    size_bp: float
    height_rfu: int
    area_rfu: int


def simulate_str_peaks(
    rng: random.Random, mixture: list[tuple[Genotype, float]], total_signal_rfu: float
) -> list[Peak]:
    """Peaks of one sample: s(x) = T * sum_G w_G d_G(x)/2, noise, imbalance, stutter, threshold."""
    peaks: list[Peak] = []
    occupied: list[tuple[str, float]] = []
    for locus in LOCI:
        midpoint = allele_size_bp(locus, next(iter(locus.alleles)))
        degradation = 1.15 - 0.3 * min(max((midpoint - 100.0) / 300.0, 0.0), 1.0)
        locus_signal = (
            total_signal_rfu * degradation * lognormal_factor(rng, STR_LOCUS_SIGNAL_SD_LOG)
        )
        dosage: dict[str, float] = {}
        for genotype, weight in mixture:
            for allele in genotype[locus.name]:
                dosage[allele] = dosage.get(allele, 0.0) + weight / 2.0
        areas: dict[str, float] = {}
        for allele, share in dosage.items():
            if share <= 0:
                continue
            area = locus_signal * share * lognormal_factor(rng, STR_HET_IMBALANCE_SD_LOG)
            areas[allele] = areas.get(allele, 0.0) + area * lognormal_factor(
                rng, STR_AREA_NOISE_SD_LOG
            )
        stutters: dict[str, float] = {}
        for allele, area in areas.items():
            shorter = allele_minus_one(locus, allele)
            if shorter is not None:
                ratio = locus.stutter_ratio * lognormal_factor(rng, STR_STUTTER_NOISE_SD_LOG)
                stutters[shorter] = stutters.get(shorter, 0.0) + area * ratio
        for allele, area in stutters.items():
            areas[allele] = areas.get(allele, 0.0) + area
        for allele, area in areas.items():
            height = area / rng.uniform(STR_AREA_PER_HEIGHT_MIN, STR_AREA_PER_HEIGHT_MAX)
            if height < STR_ANALYSIS_THRESHOLD_RFU:
                continue
            size = allele_size_bp(locus, allele) + rng.gauss(0.0, STR_SIZE_JITTER_SD_BP)
            peaks.append(Peak(locus.dye, locus.name, allele_label(locus, allele), round(size, 2),
                              round(height), round(area)))  # fmt: skip
            occupied.append((locus.dye, size))
    peaks.extend(_noise_peaks(rng, occupied))
    return peaks


def _noise_peaks(rng: random.Random, occupied: list[tuple[str, float]]) -> list[Peak]:
    """A few off-ladder (``OL``) peaks inside marker ranges and unbinned peaks outside them."""
    noise: list[Peak] = []

    def free(dye: str, size: float) -> bool:
        return all(d != dye or abs(s - size) > 2.0 for d, s in occupied)

    for _ in range(rng.randint(0, 2)):
        locus = rng.choice([loc for loc in LOCI if loc.name != "AMEL"])
        low = allele_size_bp(locus, str(locus.ladder_min))
        high = allele_size_bp(locus, str(locus.ladder_max))
        size = rng.uniform(low, high)
        if free(locus.dye, size):
            area = rng.uniform(350.0, 900.0)
            noise.append(Peak(locus.dye, locus.name, "OL", round(size, 2),
                              round(area / rng.uniform(6.0, 8.0)), round(area)))  # fmt: skip
            occupied.append((locus.dye, size))
    for _ in range(rng.randint(1, 3)):
        dye = rng.choice(DYE_ORDER)
        size = rng.uniform(60.0, 110.0) if rng.random() < 0.5 else rng.uniform(110.0, 450.0)
        if free(dye, size) and not _inside_marker(dye, size):
            area = rng.uniform(400.0, 2200.0)
            noise.append(Peak(dye, "", "", round(size, 2),
                              round(area / rng.uniform(6.0, 10.0)), round(area)))  # fmt: skip
            occupied.append((dye, size))
    return noise


def _inside_marker(dye: str, size: float) -> bool:
    for locus in LOCI:
        if locus.dye != dye or locus.name == "AMEL":
            continue
        low = allele_size_bp(locus, str(locus.ladder_min)) - 2.0
        high = allele_size_bp(locus, str(locus.ladder_max)) + 2.0
        if low <= size <= high:
            return True
    return dye == "Y" and 100.0 <= size <= 114.0


def data_point(rng: random.Random, size_bp: float) -> int:
    """Scan number of a peak (linear size calibration fitted to the real sizing tables)."""
    return round(865.0 + 9.69 * size_bp + rng.gauss(0.0, 1.5))


def write_sizing_table(
    path: Path, entries: list[tuple[str, list[Peak]]], rng: random.Random
) -> None:
    """GeneMapper Sizing Table: TAB, CRLF, trailing TAB, ``"B,1"`` dye/peak ids, per sample."""
    header = ["Dye/Sample Peak", "Sample File Name", "Marker", "Allele", "Size", "Height", "Area",
              "Data Point"]  # fmt: skip
    lines = ["\t".join(header) + "\t"]
    for sample_id, peaks in entries:
        for dye in DYE_ORDER:
            dye_peaks = sorted((p for p in peaks if p.dye == dye), key=lambda p: p.size_bp)
            for index, peak in enumerate(dye_peaks, start=1):
                row = [f'"{dye},{index}"', sample_id, peak.marker, peak.allele,
                       _size_text(peak.size_bp), str(peak.height_rfu), str(peak.area_rfu),
                       str(data_point(rng, peak.size_bp))]  # fmt: skip
                lines.append("\t".join(row) + "\t")
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))


def _size_text(size_bp: float) -> str:
    text = f"{size_bp:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


GENOTYPES_PQV = ("DAC", "ADO", "AE", "OMIT", "OS", "SHP", "OBA", "SPA", "SP", "BIN", "PHR", "LPH",
                 "SPU", "AN", "BD", "DP", "NB", "CC", "OVL", "XTLK", "GQ", "CV", "UD1", "UD2", "UD3")  # fmt: skip


def write_genotypes_table(
    path: Path, run_name: str, entries: list[tuple[str, list[Peak]]], rng: random.Random
) -> None:
    """GeneMapper Genotypes Table: one row per sample x marker, slot blocks, LF, trailing TAB."""
    slots = range(1, STR_GENOTYPES_TABLE_SLOTS + 1)
    header = ["Sample File", "Sample Name", "Run Name", "Panel", "Marker", "Dye", "SNP"]
    for block in ("Allele", "Size", "Height", "Peak Area", "Data Point", "Mutation", "AE Comment"):
        header += [f"{block} {i}" for i in slots]
    header += list(GENOTYPES_PQV)
    lines = ["\t".join(header)]
    for well_index, (sample_id, peaks) in enumerate(entries):
        well = f"{'ABCDEFGH'[well_index % 8]}{well_index // 8 + 1:02d}"
        for locus in LOCI:
            called = [p for p in peaks if p.marker == locus.name]
            called = sorted(called, key=lambda p: -p.height_rfu)[:STR_GENOTYPES_TABLE_SLOTS]
            called.sort(key=lambda p: p.size_bp)
            pad = STR_GENOTYPES_TABLE_SLOTS - len(called)
            row = [f"{run_name}_{sample_id}_{well}.fsa", sample_id, run_name, "PowerPlex_16_v2",
                   locus.name, locus.dye, ""]  # fmt: skip
            row += [p.allele for p in called] + [""] * pad
            row += [_size_text(p.size_bp) for p in called] + [""] * pad
            row += [str(p.height_rfu) for p in called] + [""] * pad
            row += [f"{float(p.area_rfu):.1f}" for p in called] + [""] * pad
            row += [str(data_point(rng, p.size_bp)) for p in called] + [""] * pad
            row += [""] * (2 * STR_GENOTYPES_TABLE_SLOTS)
            numeric = [p for p in called if p.allele not in ("OL", "X", "Y")]
            many = len(numeric) > 2
            quality = rng.uniform(0.35, 0.6) if many else rng.uniform(0.85, 0.99)
            row += ["", "false", "false", "false", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0",
                    "0.0", "0.0", "0.0", "1.0" if many else "0.0", "0.0", "-2.0", "-2.0", "-2.0",
                    "-2.0", "0.0", f"{quality:.4f}", "", "", "", ""]  # fmt: skip
            lines.append("\t".join(row) + "\t")
    path.write_bytes(("\n".join(lines) + "\n").encode("ascii"))


# ----------------------------------------------------------------------------------------------
# Batching helpers
# ----------------------------------------------------------------------------------------------
def month_key(moment: dt.datetime) -> str:
    """Calendar month ``YYYY-MM`` of a UTC datetime."""
    return moment.strftime("%Y-%m")


def run_date(month: str, day_of_next_month: int) -> dt.date:
    """Run date of a monthly batch: the given day of the following month."""
    year, mon = (int(x) for x in month.split("-"))
    year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return dt.date(year, mon, day_of_next_month)


def plate_letter(index: int) -> str:
    """Plate suffix A, B, C ... for the n-th plate of a batch."""
    return "ABCDEFGHIJ"[index]


# ----------------------------------------------------------------------------------------------
# qPCR (QuantStudio text export)
# ----------------------------------------------------------------------------------------------
QPCR_HEADER = ["Well", "Well Position", "Omit", "Sample Name", "Target Name", "Task", "Reporter",
               "Quencher", "CT", "Ct Mean", "Ct SD", "Quantity", "Quantity Mean", "Quantity SD",
               "Automatic Ct Threshold", "Ct Threshold", "Automatic Baseline", "Baseline Start",
               "Baseline End", "Comments", "Y-Intercept", "R(superscript 2)", "Slope",
               "Efficiency", "Amp Score", "Cq Conf"]  # fmt: skip
EXPERIMENT_TYPE_DDCT = "Comparative C\u0442 (\u0394\u0394C\u0442)"


@dataclass
class QpcrWell:
    """One planned qPCR well before Ct simulation."""

    sample_name: str
    target: str
    task: str
    marker_fraction: float  # copies of target per genome, relative (f x n_M or 2 for RPP30)
    genomes: float


def simulate_ct(rng: random.Random, target: str, mean_copies: float) -> float | None:
    """Ct = intercept + slope*log10(copies) + noise, copies ~ Poisson; None = Undetermined."""
    intercept, slope, _, _ = QPCR_ASSAYS[target]
    copies = poisson(rng, mean_copies)
    if copies == 0:
        return None
    ct = intercept + slope * math.log10(copies) + rng.gauss(0.0, QPCR_CT_NOISE_SD_CYCLES)
    return None if ct >= QPCR_MAX_CYCLES else ct


def write_quantstudio(
    path: Path, rng: random.Random, wells: list[QpcrWell], experiment: str, experiment_type: str,
    run_end: dt.datetime,
) -> None:  # fmt: skip
    """Simulate Cts and write a QuantStudio 7 Flex ``[Results]`` text export (CRLF, TAB)."""
    cts = []
    for well in wells:
        mean_copies = well.genomes * well.marker_fraction
        cts.append(simulate_ct(rng, well.target, mean_copies))
    groups: dict[tuple[str, str], list[float]] = {}
    for well, ct in zip(wells, cts, strict=True):
        if ct is not None:
            groups.setdefault((well.sample_name, well.target), []).append(ct)
    stamp = (
        run_end.strftime("%Y-%m-%d %H:%M:%S") + (" PM" if run_end.hour >= 12 else " AM") + " UTC"
    )
    created = (run_end - dt.timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
    created += (" PM" if run_end.hour - 3 >= 12 else " AM") + " UTC"
    preamble = [
        ("Block Type", "384-Well Block"),
        ("Chemistry", "TAQMAN"),
        ("Date Created", created),
        ("Experiment Barcode", ""),
        ("Experiment Comment", ""),
        ("Experiment File Name", f"D:\\Chimera\\qPCR\\{experiment}.eds"),
        ("Experiment Name", experiment),
        ("Experiment Run End Time", stamp),
        ("Experiment Type", experiment_type),
        ("Instrument Name", "278885512"),
        ("Instrument Serial Number", "278885512"),
        ("Instrument Type", "QuantStudio(TM) 7 Flex System"),
        ("Passive Reference", "ROX"),
        ("Quantification Cycle Method", "Ct"),
        ("Signal Smoothing On", "true"),
        ("Stage/ Cycle where Analysis is performed", "Stage 2, Step 2"),
        ("User Name", "chimera-lab"),
    ]
    lines = [f"* {key} = {value}" for key, value in preamble]
    lines += ["", "[Results]", "\t".join(QPCR_HEADER)]
    for index, (well, ct) in enumerate(zip(wells, cts, strict=True)):
        position = (
            f"{'ABCDEFGHIJKLMNOP'[index // QPCR_PLATE_COLUMNS]}{index % QPCR_PLATE_COLUMNS + 1}"
        )
        _, _, reporter, threshold = QPCR_ASSAYS[well.target]
        group = groups.get((well.sample_name, well.target), [])
        mean = f"{sum(group) / len(group):.3f}" if group else ""
        sd = f"{_sd(group):.3f}" if len(group) >= 2 else ""
        if ct is None:
            ct_text, baseline_end, amp, conf = "Undetermined", "39", "0.000", "0.000"
        else:
            ct_text, baseline_end = f"{ct:.3f}", str(max(3, math.floor(ct) - 4))
            amp, conf = f"{rng.uniform(1.10, 1.30):.3f}", f"{rng.uniform(0.95, 0.995):.3f}"
        row = [str(index + 1), position, "false", well.sample_name, well.target, well.task,
               reporter, "NFQ-MGB", ct_text, mean, sd, "", "", "", "true", f"{threshold:.3f}",
               "true", "3", baseline_end, "", "", "", "", "", amp, conf]  # fmt: skip
        lines.append("\t".join(row))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))


def _sd(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# ----------------------------------------------------------------------------------------------
# ddPCR (QuantaSoft 1.7 and QX Manager)
# ----------------------------------------------------------------------------------------------
def _split_header(text: str) -> list[str]:
    return text.split(",")


QUANTASOFT_HEADER = _split_header(
    "Well,ExptType,Experiment,Sample,TargetType,Target,Status,Concentration,Supermix,"
    "CopiesPer20uLWell,TotalConfMax,TotalConfMin,PoissonConfMax,PoissonConfMin,Positives,Negatives,"
    "Ch1+Ch2+,Ch1+Ch2-,Ch1-Ch2+,Ch1-Ch2-,Linkage,AcceptedDroplets,CNV,TotalCNVMax,TotalCNVMin,"
    "PoissonCNVMax,PoissonCNVMin,ReferenceCopies,UnknownCopies,Ratio,TotalRatioMax,TotalRatioMin,"
    "PoissonRatioMax,PoissonRatioMin,FractionalAbundance,TotalFractionalAbundanceMax,"
    "TotalFractionalAbundanceMin,PoissonFractionalAbundanceMax,PoissonFractionalAbundanceMin,"
    "ReferenceAssayNumber,TargetAssayNumber,Threshold,MeanAmplitudeofPositives,"
    "MeanAmplitudeofNegatives,MeanAmplitudeTotal,ExperimentComments,MergedWells,TotalConfMax68,"
    "TotalConfMin68,PoissonConfMax68,PoissonConfMin68,TotalCNVMax68,TotalCNVMin68,PoissonCNVMax68,"
    "PoissonCNVMin68,TotalRatioMax68,TotalRatioMin68,PoissonRatioMax68,PoissonRatioMin68,"
    "TotalFractionalAbundanceMax68,TotalFractionalAbundanceMin68,PoissonFractionalAbundanceMax68,"
    "PoissonFractionalAbundanceMin68"
)
QUANTASOFT_QUOTED = {"Well", "Experiment", "Sample", "Target", "Status", "ExperimentComments"}
MU = "\u00b5"
QX_HEADER = _split_header(
    f"Well,Sample description 1,Sample description 2,Sample description 3,Sample description 4,"
    f"Target,Conc(copies/{MU}L),pg/{MU}L,Status,Status Reason,Experiment,SampleType,TargetType,"
    f"Supermix,DyeName(s),Copies/20{MU}LWell,TotalConfMax,TotalConfMin,PoissonConfMax,"
    f"PoissonConfMin,Accepted Droplets,Positives,Negatives,Copies/uL linked molecules,CNV,"
    f"TotalCNVMax,TotalCNVMin,PoissonCNVMax,PoissonCNVMin,ReferenceCopies,UnknownCopies,Threshold1,"
    f"Threshold2,Threshold3,ThresholdSigmaAbove,ThresholdSigmaBelow,ReferenceUsed,Ratio,"
    f"TotalRatioMax,TotalRatioMin,PoissonRatioMax,PoissonRatioMin,Fractional Abundance,"
    f"TotalFractionalAbundanceMax,TotalFractionalAbundanceMin,PoissonFractionalAbundanceMax,"
    f"PoissonFractionalAbundanceMin,MeanAmplitudeOfPositives,MeanAmplitudeOfNegatives,"
    f"MeanAmplitudeTotal,ExperimentComments,MergedWells,TotalConfidenceMax68,TotalConfidenceMin68,"
    f"PoissonConfidenceMax68,PoissonConfidenceMin68,TotalCNVMax68,TotalCNVMin68,PoissonCNVMax68,"
    f"PoissonCNVMin68,TotalRatioMax68,TotalRatioMin68,PoissonRatioMax68,PoissonRatioMin68,"
    f"TotalFractionalAbundanceMax68,TotalFractionalAbundanceMin68,PoissonFractionalAbundanceMax68,"
    f"PoissonFractionalAbundanceMin68,TiltCorrected,Ch1+Ch2+,Ch1+Ch2-,Ch1-Ch2+,Ch1-Ch2-"
)
SUPERMIX_QUANTASOFT = "ddPCR Supermix for Probes (no dUTP)"
SUPERMIX_QX = "ddPCR Supermix for Probes (No dUTP)"


@dataclass
class DdpcrWell:
    """One planned duplex well (marker FAM + RPP30 HEX) and its simulated droplet counts."""

    sample_name: str
    sample_type: str  # Unknown, PosCtrl, NTC
    marker: str
    lambda_ref: float
    lambda_marker: float
    accepted: int = 0
    pos_marker: int = 0
    pos_ref: int = 0


def simulate_droplets(rng: random.Random, well: DdpcrWell, *, failed: bool) -> None:
    """Accepted droplets ~ N(17000, 1500) >= 12000 (failed wells 3500-7500); positives binomial.

    Copies per accepted droplet are Poisson(λ) independently in every droplet, so the number of
    positive droplets is exactly Binomial(accepted, 1 − e^−λ) (equivalent to a Poisson number of
    copies in the accepted volume partitioned uniformly over the droplets).
    """
    if failed:
        well.accepted = rng.randint(DDPCR_FAILED_ACCEPTED_MIN, DDPCR_FAILED_ACCEPTED_MAX)
    else:
        well.accepted = max(
            DDPCR_ACCEPTED_MIN, round(rng.gauss(DDPCR_ACCEPTED_MEAN, DDPCR_ACCEPTED_SD))
        )
    well.pos_marker = binomial(rng, well.accepted, 1.0 - math.exp(-well.lambda_marker))
    well.pos_ref = binomial(rng, well.accepted, 1.0 - math.exp(-well.lambda_ref))


@dataclass
class ChannelStats:
    """Poisson estimate of one channel of one well (p-scale Wald CIs as in QX Manager)."""

    positives: int
    accepted: int
    conc: float
    conc_max: float
    conc_min: float
    conc_max68: float
    conc_min68: float
    se_lambda: float
    lam: float


def channel_stats(positives: int, accepted: int) -> ChannelStats:
    """λ = −ln(1 − p), concentration λ/V_d; CI from p ± z·√(p(1−p)/N) transformed."""
    p = positives / accepted
    lam = -math.log(1.0 - p)

    def bound(z: float, sign: int) -> float:
        if positives == 0:
            return -math.log(0.05) / accepted if sign > 0 else 0.0
        q = p + sign * z * math.sqrt(p * (1.0 - p) / accepted)
        q = min(max(q, 0.0), 1.0 - 1e-9)
        return -math.log(1.0 - q)

    se = math.sqrt(p / (accepted * (1.0 - p))) if positives else 0.0
    v = DDPCR_DROPLET_VOLUME_UL
    return ChannelStats(positives, accepted, lam / v, bound(Z95, 1) / v, bound(Z95, -1) / v,
                        bound(1.0, 1) / v, bound(1.0, -1) / v, se, lam)  # fmt: skip


def ratio_bounds(
    marker: ChannelStats, ref: ChannelStats, z: float
) -> tuple[float, float, float] | None:
    """Ratio c_marker/c_ref with a linear-delta CI (QX Manager PoissonRatioMax/Min)."""
    if marker.positives == 0 or ref.positives == 0:
        return None
    ratio = marker.lam / ref.lam
    rel = math.sqrt((marker.se_lambda / marker.lam) ** 2 + (ref.se_lambda / ref.lam) ** 2)
    return ratio, ratio * (1 + z * rel), max(ratio * (1 - z * rel), 0.0)


def _cluster_counts(rng: random.Random, well: DdpcrWell) -> tuple[int, int, int, int]:
    both = binomial(rng, well.pos_marker, well.pos_ref / well.accepted)
    only_marker = well.pos_marker - both
    only_ref = well.pos_ref - both
    return both, only_marker, only_ref, well.accepted - both - only_marker - only_ref


def _amplitudes(
    rng: random.Random, dye: str, positives: int, accepted: int
) -> tuple[str, str, str]:
    pos_mean = rng.uniform(8000, 10000) if dye == "FAM" else rng.uniform(5000, 6500)
    neg_mean = rng.uniform(1800, 2400) if dye == "FAM" else rng.uniform(1100, 1500)
    total = (pos_mean * positives + neg_mean * (accepted - positives)) / accepted
    return (f"{pos_mean:.15g}" if positives else "", f"{neg_mean:.15g}", f"{total:.15g}")


def quantasoft_rows(rng: random.Random, wells: list[tuple[str, DdpcrWell]]) -> list[str]:
    """Rows of a QuantaSoft 1.7 export: one per well per channel, 3-significant-digit values."""
    lines = [",".join(QUANTASOFT_HEADER)]
    for position, well in wells:
        marker = channel_stats(well.pos_marker, well.accepted)
        ref = channel_stats(well.pos_ref, well.accepted)
        clusters = _cluster_counts(rng, well)
        ratio95 = ratio_bounds(marker, ref, Z95)
        ratio68 = ratio_bounds(marker, ref, 1.0)
        ntc = well.sample_type == "NTC"
        for channel, (stats, target, dye) in enumerate(
            ((marker, well.marker, "FAM"), (ref, REFERENCE_GENE, "HEX")), start=1
        ):
            amp_pos, amp_neg, amp_total = _amplitudes(rng, dye, stats.positives, stats.accepted)
            conc = float(fmt_sig(stats.conc, 3))
            values = {
                "Well": position, "ExptType": "Absolute Quantification", "Experiment": "ABS",
                "Sample": well.sample_name, "TargetType": f"Ch{channel}{'NTC' if ntc else 'Unknown'}",
                "Target": target, "Status": "Manual", "Concentration": fmt_sig(stats.conc, 3),
                "Supermix": SUPERMIX_QUANTASOFT, "CopiesPer20uLWell": fmt_sig(conc * DDPCR_WELL_VOLUME_UL, 3),
                "PoissonConfMax": fmt_sig(stats.conc_max, 3), "PoissonConfMin": fmt_sig(stats.conc_min, 3),
                "Positives": str(stats.positives), "Negatives": str(stats.accepted - stats.positives),
                "Ch1+Ch2+": str(clusters[0]), "Ch1+Ch2-": str(clusters[1]),
                "Ch1-Ch2+": str(clusters[2]), "Ch1-Ch2-": str(clusters[3]),
                "Linkage": "0", "AcceptedDroplets": str(stats.accepted),
                "ReferenceAssayNumber": "2", "TargetAssayNumber": "1",
                "Threshold": "4200" if dye == "FAM" else "3100",
                "MeanAmplitudeofPositives": fmt_sig(float(amp_pos), 5) if amp_pos else "",
                "MeanAmplitudeofNegatives": fmt_sig(float(amp_neg), 5),
                "MeanAmplitudeTotal": fmt_sig(float(amp_total), 5), "ExperimentComments": "",
                "PoissonConfMax68": fmt_sig(stats.conc_max68, 3),
                "PoissonConfMin68": fmt_sig(stats.conc_min68, 3),
            }  # fmt: skip
            if ratio95 is not None and ratio68 is not None:
                values.update({
                    "Ratio": fmt_sig(ratio95[0], 3), "PoissonRatioMax": fmt_sig(ratio95[1], 3),
                    "PoissonRatioMin": fmt_sig(ratio95[2], 3),
                    "FractionalAbundance": fmt_sig(100 * ratio95[0] / (1 + ratio95[0]), 3),
                    "PoissonFractionalAbundanceMax": fmt_sig(100 * ratio95[1] / (1 + ratio95[1]), 3),
                    "PoissonFractionalAbundanceMin": fmt_sig(100 * ratio95[2] / (1 + ratio95[2]), 3),
                    "PoissonRatioMax68": fmt_sig(ratio68[1], 3), "PoissonRatioMin68": fmt_sig(ratio68[2], 3),
                    "PoissonFractionalAbundanceMax68": fmt_sig(100 * ratio68[1] / (1 + ratio68[1]), 3),
                    "PoissonFractionalAbundanceMin68": fmt_sig(100 * ratio68[2] / (1 + ratio68[2]), 3),
                })  # fmt: skip
            cells = []
            for name in QUANTASOFT_HEADER:
                value = values.get(name, "")
                cells.append(f'"{value}"' if name in QUANTASOFT_QUOTED else value)
            lines.append(",".join(cells) + ",")
    return lines


def qx_manager_rows(rng: random.Random, wells: list[tuple[str, DdpcrWell]]) -> list[str]:
    """Rows of a QX Manager well-data export: Unknown (FAM marker) + Reference (HEX RPP30)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(QX_HEADER)
    for position, well in wells:
        marker = channel_stats(well.pos_marker, well.accepted)
        ref = channel_stats(well.pos_ref, well.accepted)
        clusters = [str(c) for c in _cluster_counts(rng, well)]
        ratio95 = ratio_bounds(marker, ref, Z95)
        ratio68 = ratio_bounds(marker, ref, 1.0)
        ntc = well.sample_type == "NTC"
        for role, stats, target, dye in (("Unknown", marker, well.marker, "FAM"),
                                         ("Reference", ref, REFERENCE_GENE, "HEX")):  # fmt: skip
            amp_pos, amp_neg, amp_total = _amplitudes(rng, dye, stats.positives, stats.accepted)
            values = {
                "Well": position, "Sample description 1": well.sample_name, "Target": target,
                "Experiment": "DQ", "SampleType": well.sample_type, "TargetType": role,
                "Supermix": SUPERMIX_QX, "DyeName(s)": dye,
                "Accepted Droplets": str(stats.accepted), "Positives": str(stats.positives),
                "Negatives": str(stats.accepted - stats.positives),
                "Threshold1": f"{4150.0 if dye == 'FAM' else 3050.0:.15g}",
                "MeanAmplitudeOfPositives": amp_pos, "MeanAmplitudeOfNegatives": amp_neg,
                "MeanAmplitudeTotal": amp_total, "TiltCorrected": "No",
                "Ch1+Ch2+": clusters[0], "Ch1+Ch2-": clusters[1], "Ch1-Ch2+": clusters[2],
                "Ch1-Ch2-": clusters[3],
            }  # fmt: skip
            if ntc:
                values.update({"Conc(copies/\u00b5L)": "No Call", "Status": "CHECK",
                               "Status Reason": "Automatic Analysis Unsuccessful"})  # fmt: skip
            else:
                values.update({
                    f"Conc(copies/{MU}L)": f"{stats.conc:.15g}", "Status": "OK",
                    f"Copies/20{MU}LWell": f"{stats.conc * DDPCR_WELL_VOLUME_UL:.15g}",
                    "PoissonConfMax": f"{stats.conc_max:.15g}", "PoissonConfMin": f"{stats.conc_min:.15g}",
                    "PoissonConfidenceMax68": f"{stats.conc_max68:.15g}",
                    "PoissonConfidenceMin68": f"{stats.conc_min68:.15g}",
                })  # fmt: skip
                if role == "Unknown" and ratio95 is not None and ratio68 is not None:
                    values.update({
                        "CNV": f"{2 * ratio95[0]:.15g}", "PoissonCNVMax": f"{2 * ratio95[1]:.15g}",
                        "PoissonCNVMin": f"{2 * ratio95[2]:.15g}", "ReferenceCopies": "2",
                        "ReferenceUsed": "2", "Ratio": f"{ratio95[0]:.15g}",
                        "PoissonRatioMax": f"{ratio95[1]:.15g}", "PoissonRatioMin": f"{ratio95[2]:.15g}",
                        "Fractional Abundance": f"{100 * ratio95[0] / (1 + ratio95[0]):.15g}",
                        "PoissonFractionalAbundanceMax": f"{100 * ratio95[1] / (1 + ratio95[1]):.15g}",
                        "PoissonFractionalAbundanceMin": f"{100 * ratio95[2] / (1 + ratio95[2]):.15g}",
                        "PoissonCNVMax68": f"{2 * ratio68[1]:.15g}", "PoissonCNVMin68": f"{2 * ratio68[2]:.15g}",
                        "PoissonRatioMax68": f"{ratio68[1]:.15g}", "PoissonRatioMin68": f"{ratio68[2]:.15g}",
                        "PoissonFractionalAbundanceMax68": f"{100 * ratio68[1] / (1 + ratio68[1]):.15g}",
                        "PoissonFractionalAbundanceMin68": f"{100 * ratio68[2] / (1 + ratio68[2]):.15g}",
                    })  # fmt: skip
            writer.writerow([values.get(name, "") for name in QX_HEADER])
    return out.getvalue().rstrip("\n").split("\n")


# ----------------------------------------------------------------------------------------------
# Trial assembly
# ----------------------------------------------------------------------------------------------
@dataclass
class Trial:
    """Everything generated: patients, genotypes, samples, doses, plate controls, file list."""

    patients: list[PatientDesign]
    genotypes: dict[str, Genotype]
    doses: dict[str, list[dt.datetime]]
    samples: list[Sample]
    controls: list[Sample] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=dict)


def informative_markers(patient: PatientDesign) -> list[str]:
    """Markers carried by the product and absent from the patient (qPCR/ddPCR informative)."""
    return [m for m, n in PRODUCT_MARKER_COPIES.items() if n > 0 and patient.marker_copies[m] == 0]


def build_trial() -> Trial:
    """Patients, genotypes, dose times and samples with their truth."""
    patients = build_patients()
    rng_geno = random.Random(f"{SEED}-genotypes")
    genotypes: dict[str, Genotype] = {PRODUCT_LOT: dict(PRODUCT_STR_GENOTYPE)}
    doses: dict[str, list[dt.datetime]] = {}
    samples: list[Sample] = []
    rng_sched = random.Random(f"{SEED}-schedule")
    for patient in patients:
        while True:
            genotype = random_genotype(rng_geno, patient.sex, PRODUCT_STR_GENOTYPE)
            if len(informative_loci(PRODUCT_STR_GENOTYPE, genotype)) >= 8:
                break
        genotypes[patient.patient_id] = genotype
        doses[patient.patient_id] = dose_times(rng_sched, patient)
        samples.extend(build_samples(patient, doses[patient.patient_id], rng_sched))
        if not informative_markers(patient):
            msg = f"{patient.patient_id} has no informative qPCR marker"
            raise ValueError(msg)
    genotypes["THIRD_PARTY"] = random_genotype(rng_geno, "M", None)
    return Trial(patients, genotypes, doses, samples)


def write_str_runs(trial: Trial) -> None:
    """One GeneMapper run per calendar month of collection (product reference in the first)."""
    rng = random.Random(f"{SEED}-str")
    product = trial.genotypes[PRODUCT_LOT]
    by_month: dict[str, list[Sample]] = {}
    for sample in trial.samples:
        if sample.qc_failure or sample.collected_at is None:
            continue  # DNA-input failures were not STR-typed
        by_month.setdefault(month_key(sample.collected_at), []).append(sample)
    out_dir = OUT_DIR / "str"
    for index, month in enumerate(sorted(by_month)):
        entries: list[tuple[str, list[Peak]]] = []
        if index == 0:
            peaks = simulate_str_peaks(rng, [(product, 1.0)], rng.uniform(25_000, 35_000))
            entries.append((PRODUCT_REFERENCE_ID, peaks))
        for sample in by_month[month]:
            recipient = trial.genotypes[sample.patient_id]
            f = sample.pct_ink / 100.0
            mixture = [(product, f), (recipient, 1.0 - f)]
            if sample.str_contaminated:
                c = STR_CONTAMINATION_FRACTION
                mixture = [(product, f * (1 - c)), (recipient, (1 - f) * (1 - c)),
                           (trial.genotypes["THIRD_PARTY"], c)]  # fmt: skip
            total = rng.uniform(STR_TOTAL_SIGNAL_MIN_RFU, STR_TOTAL_SIGNAL_MAX_RFU)
            entries.append((sample.sample_id, simulate_str_peaks(rng, mixture, total)))
            sample.methods.append("STR")
        ran = run_date(month, 3)
        run_name = f"GM{month.replace('-', '')[2:]}"
        if month == STR_GENOTYPES_TABLE_MONTH:
            path = out_dir / f"{ran.isoformat()}_{run_name}_genotypes.txt"
            write_genotypes_table(path, run_name, entries, rng)
        else:
            path = out_dir / f"{ran.isoformat()}_{run_name}_sizing.txt"
            write_sizing_table(path, entries, rng)
        trial.files.setdefault("str", []).append(path.name)


def _control(trial: Trial, sample_id: str, role: str) -> None:
    if role == "calibrator":
        trial.controls.append(Sample(sample_id, PRODUCT_LOT, role, specimen=SPECIMEN_PRODUCT,
                                     product_lot=PRODUCT_LOT))  # fmt: skip
    else:
        trial.controls.append(Sample(sample_id, NTC_PATIENT_ID, role, specimen=SPECIMEN_WATER))


def write_qpcr(trial: Trial) -> None:
    """Marker-screening plates at enrolment and monthly follow-up plates (384-well)."""
    rng = random.Random(f"{SEED}-qpcr")
    out_dir = OUT_DIR / "qpcr"
    patients = {p.patient_id: p for p in trial.patients}

    input_genomes: dict[str, float] = {}

    def triplicate(
        name: str, target: str, per_genome: float, *, failed: bool = False,
        replicates: int = QPCR_REPLICATES,
    ) -> list[QpcrWell]:  # fmt: skip
        """Replicate wells of one DNA extract: same genome input per well (pipetting CV 3 %)."""
        if name not in input_genomes:
            low, high = ((QPCR_FAILED_GENOMES_PER_WELL_MIN, QPCR_FAILED_GENOMES_PER_WELL_MAX)
                         if failed else (QPCR_GENOMES_PER_WELL_MIN, QPCR_GENOMES_PER_WELL_MAX))  # fmt: skip
            input_genomes[name] = rng.uniform(low, high)
        return [
            QpcrWell(name, target, "UNKNOWN", per_genome,
                     input_genomes[name] * lognormal_factor(rng, QPCR_PIPETTING_CV))
            for _ in range(replicates)
        ]  # fmt: skip

    # marker screening: product + the new patient's baseline x all markers + RPP30, NTC
    for sample in (s for s in trial.samples if s.role == "recipient_baseline"):
        patient = patients[sample.patient_id]
        input_genomes.clear()
        wells: list[QpcrWell] = []
        for target in QPCR_ASSAYS:
            product_copies = 2.0 if target == REFERENCE_GENE else PRODUCT_MARKER_COPIES[target]
            patient_copies = 2.0 if target == REFERENCE_GENE else patient.marker_copies[target]
            wells += triplicate(PRODUCT_REFERENCE_ID, target, product_copies)
            wells += triplicate(sample.sample_id, target, patient_copies)
            wells += [QpcrWell("", target, "NTC", 0.0, 0.0) for _ in range(2)]
        ran = (sample.collected_at or patient.first_infusion) + dt.timedelta(days=1, hours=6)
        name = f"QS{ran:%y%m%d}{sample.patient_id}"
        path = out_dir / f"{ran.date().isoformat()}_{name}_marker_screen.txt"
        write_quantstudio(path, rng, wells, name, "Standard Curve", ran)
        trial.files.setdefault("qpcr", []).append(path.name)

    # monthly follow-up plates
    by_month: dict[str, list[Sample]] = {}
    for sample in trial.samples:
        if sample.role == "post_dose" and sample.collected_at is not None:
            by_month.setdefault(month_key(sample.collected_at), []).append(sample)
    baselines = {s.patient_id: s for s in trial.samples if s.role == "recipient_baseline"}
    for month in sorted(by_month):
        plates: list[list[Sample]] = [[]]
        used = 0
        seen: set[str] = set()
        for sample in by_month[month]:
            per = QPCR_REPLICATES * (len(informative_markers(patients[sample.patient_id])) + 1)
            extra = per if sample.patient_id not in seen else 0
            if used + per + extra > QPCR_PLATE_WELLS - QPCR_RESERVED_WELLS:
                plates.append([])
                used, seen = 0, set()
                extra = per
            plates[-1].append(sample)
            seen.add(sample.patient_id)
            used += per + extra
        for index, plate_samples in enumerate(plates):
            plate_id = f"QP{month.replace('-', '')[2:]}{plate_letter(index)}"
            calibrator, ntc = f"INK-CAL-{plate_id}", f"NTC-{plate_id}"
            _control(trial, calibrator, "calibrator")
            _control(trial, ntc, "negative_control")
            plate_patients = sorted({s.patient_id for s in plate_samples})
            markers = sorted(
                {m for pid in plate_patients for m in informative_markers(patients[pid])}
            )
            input_genomes.clear()
            wells = []
            for target in [*markers, REFERENCE_GENE]:
                copies = 2.0 if target == REFERENCE_GENE else PRODUCT_MARKER_COPIES[target]
                wells += triplicate(
                    calibrator, target, copies, replicates=QPCR_CALIBRATOR_REPLICATES
                )
            for pid in plate_patients:
                for target in [*informative_markers(patients[pid]), REFERENCE_GENE]:
                    wells += triplicate(baselines[pid].sample_id, target,
                                        2.0 if target == REFERENCE_GENE else 0.0)  # fmt: skip
            for sample in plate_samples:
                failed = bool(sample.qc_failure)
                for target in [*informative_markers(patients[sample.patient_id]), REFERENCE_GENE]:
                    copies = (2.0 if target == REFERENCE_GENE
                              else sample.pct_ink / 100.0 * PRODUCT_MARKER_COPIES[target])  # fmt: skip
                    wells += triplicate(sample.sample_id, target, copies, failed=failed)
                sample.methods.append("qPCR")
            for target in [*markers, REFERENCE_GENE]:
                wells += [QpcrWell(ntc, target, "NTC", 0.0, 0.0) for _ in range(2)]
            ran = dt.datetime.combine(run_date(month, 5), dt.time(15, 2, 50), tzinfo=UTC)
            ran += dt.timedelta(hours=2 * index)
            path = out_dir / f"{ran.date().isoformat()}_{plate_id}_followup.txt"
            write_quantstudio(path, rng, wells, plate_id, EXPERIMENT_TYPE_DDCT, ran)
            trial.files["qpcr"].append(path.name)


def plan_duplex_wells(
    rng: random.Random, name: str, kind: str, marker: str, fraction: float, *, failed: bool
) -> list[tuple[DdpcrWell, bool]]:
    """Replicate duplex wells of one extract: λ_ref 0.5-1.0 (failed: ~0.01), λ_M = λ_ref·f·n_M/2.

    Both wells share the sample's DNA concentration (pipetting CV 3 %), so pooling their counts
    estimates the same λ; the marker/reference ratio inside each well is unaffected anyway.
    """
    if kind == "NTC":
        lam_sample = 0.0
    elif failed:
        lam_sample = rng.uniform(DDPCR_FAILED_LAMBDA_REF_MIN, DDPCR_FAILED_LAMBDA_REF_MAX)
    else:
        lam_sample = rng.uniform(DDPCR_LAMBDA_REF_MIN, DDPCR_LAMBDA_REF_MAX)
    planned = []
    for _ in range(DDPCR_REPLICATES):
        lam = lam_sample * lognormal_factor(rng, DDPCR_PIPETTING_CV)
        marker_lam = lam * fraction * PRODUCT_MARKER_COPIES[marker] / 2.0
        planned.append((DdpcrWell(name, kind, marker, lam, marker_lam), failed))
    return planned


def write_ddpcr(trial: Trial) -> None:
    """Monthly 96-well duplex plates: QuantaSoft 1.7 before May 2025, QX Manager afterwards."""
    rng = random.Random(f"{SEED}-ddpcr")
    out_dir = OUT_DIR / "ddpcr"
    patients = {p.patient_id: p for p in trial.patients}
    baselines = {s.patient_id: s for s in trial.samples if s.role == "recipient_baseline"}
    by_month: dict[str, list[Sample]] = {}
    for sample in trial.samples:
        if sample.role == "post_dose" and sample.collected_at is not None:
            by_month.setdefault(month_key(sample.collected_at), []).append(sample)
    capacity = (DDPCR_PLATE_WELLS - DDPCR_RESERVED_WELLS) // DDPCR_REPLICATES
    for month in sorted(by_month):
        month_samples = by_month[month]
        chunks = [month_samples[i : i + capacity] for i in range(0, len(month_samples), capacity)]
        for index, plate_samples in enumerate(chunks):
            plate_id = f"DP{month.replace('-', '')[2:]}{plate_letter(index)}"
            calibrator, ntc = f"INK-CAL-{plate_id}", f"NTC-{plate_id}"
            _control(trial, calibrator, "calibrator")
            _control(trial, ntc, "negative_control")
            counts: dict[str, int] = {}
            for sample in plate_samples:
                counts[sample.patient_id] = counts.get(sample.patient_id, 0) + 1
            busiest = sorted(counts, key=lambda pid: (-counts[pid], pid))[:2]
            markers = sorted({informative_markers(patients[pid])[0] for pid in counts})
            planned: list[tuple[DdpcrWell, bool]] = []
            for marker in markers:
                planned += plan_duplex_wells(rng, calibrator, "PosCtrl", marker, 1.0, failed=False)
            for pid in sorted(busiest):
                planned += plan_duplex_wells(rng, baselines[pid].sample_id, "Unknown",
                                             informative_markers(patients[pid])[0], 0.0,
                                             failed=False)  # fmt: skip
            for sample in plate_samples:
                marker = informative_markers(patients[sample.patient_id])[0]
                planned += plan_duplex_wells(rng, sample.sample_id, "Unknown", marker,
                                             sample.pct_ink / 100.0,
                                             failed=bool(sample.qc_failure))  # fmt: skip
                sample.methods.append("ddPCR")
            planned += plan_duplex_wells(rng, ntc, "NTC", markers[0], 0.0, failed=False)
            wells: list[tuple[str, DdpcrWell]] = []
            for position, (well, failed) in enumerate(planned):
                simulate_droplets(rng, well, failed=failed)
                wells.append((f"{'ABCDEFGH'[position % 8]}{position // 8 + 1:02d}", well))
            ran = run_date(month, 7)
            if ran < DDPCR_QX_MANAGER_FROM:
                lines = quantasoft_rows(rng, wells)
                path = out_dir / f"{ran.isoformat()}_{plate_id}_quantasoft.csv"
                path.write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))
            else:
                lines = qx_manager_rows(rng, wells)
                path = out_dir / f"{ran.isoformat()}_{plate_id}_qxmanager.csv"
                path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode("utf-8"))
            trial.files.setdefault("ddpcr", []).append(path.name)


def write_manifest(trial: Trial) -> None:
    """``manifest.csv``: product reference, patient samples in time order, then plate controls."""
    header = ["sample_id", "patient_id", "role", "collected_at", "specimen", "wbc_per_ul",
              "lymphocytes_per_ul", "product_lot"]  # fmt: skip
    reference = Sample(PRODUCT_REFERENCE_ID, PRODUCT_LOT, "donor_reference",
                       specimen=SPECIMEN_PRODUCT, product_lot=PRODUCT_LOT)  # fmt: skip
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for s in [reference, *trial.samples, *trial.controls]:
        writer.writerow([s.sample_id, s.patient_id, s.role, iso_z(s.collected_at), s.specimen,
                         "" if s.wbc_per_ul is None else s.wbc_per_ul,
                         "" if s.lymphocytes_per_ul is None else s.lymphocytes_per_ul,
                         s.product_lot or ""])  # fmt: skip
    (OUT_DIR / "manifest.csv").write_text(out.getvalue(), encoding="utf-8")


def write_infusion_log(trial: Trial) -> None:
    """``infusion_log.xlsx`` (openpyxl) made byte-stable: fixed core properties and zip times."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Infusions"
    sheet.append(["patient_id", "dose_number", "infused_at", "cells", "product_lot"])
    for patient in trial.patients:
        for number, moment in enumerate(trial.doses[patient.patient_id], start=1):
            naive_utc = moment.astimezone(UTC).replace(tzinfo=None)
            sheet.append(
                [patient.patient_id, number, naive_utc, DOSE_CELLS[number - 1], PRODUCT_LOT]
            )
            sheet.cell(row=sheet.max_row, column=3).number_format = "yyyy-mm-dd hh:mm:ss"
            sheet.cell(row=sheet.max_row, column=4).number_format = "0.00E+00"
    workbook.properties.created = FIXED_DOC_TIME
    workbook.properties.modified = FIXED_DOC_TIME
    workbook.properties.creator = "chimera sample_data/generate.py"
    buffer = io.BytesIO()
    workbook.save(buffer)
    stable = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source,
        zipfile.ZipFile(stable, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=ZIP_ENTRY_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o600 << 16
            data = source.read(info.filename)
            if info.filename == "docProps/core.xml":  # openpyxl stamps "modified" at save time
                data = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                    rb"\g<1>" + FIXED_DOC_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode() + rb"\g<2>",
                    data,
                )
            target.writestr(entry, data)
    (OUT_DIR / "infusion_log.xlsx").write_bytes(stable.getvalue())


def write_truth(trial: Trial) -> None:
    """``truth/truth.csv`` (one row per post-dose sample) and ``truth/design.json``."""
    patients = {p.patient_id: p for p in trial.patients}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sample_id", "patient_id", "study_day", "collected_at", "timepoint",
                     "last_dose_number", "pct_ink", "methods", "qpcr_markers", "ddpcr_marker",
                     "expected_qc_failure", "str_contaminated"])  # fmt: skip
    for s in trial.samples:
        if s.role != "post_dose":
            continue
        markers = informative_markers(patients[s.patient_id])
        writer.writerow([s.sample_id, s.patient_id, s.study_day, iso_z(s.collected_at), s.timepoint,
                         s.dose_before, fmt_pct(s.pct_ink), ";".join(s.methods), ";".join(markers),
                         markers[0], ";".join(s.qc_failure),
                         "true" if s.str_contaminated else "false"])  # fmt: skip
    truth_dir = OUT_DIR / "truth"
    (truth_dir / "truth.csv").write_text(out.getvalue(), encoding="utf-8")
    (truth_dir / "design.json").write_text(json.dumps(design_document(trial), indent=2) + "\n",
                                           encoding="utf-8")  # fmt: skip


def fmt_pct(value: float) -> str:
    """Truth percentage text: exactly ``0`` for true zeros, else up to 5 significant digits."""
    return "0" if value == 0 else f"{value:.{PCT_SIGNIFICANT_DIGITS}g}"


def design_document(trial: Trial) -> dict[str, object]:
    """The per-patient scenarios, expected alerts and every model parameter, as JSON."""
    product = trial.genotypes[PRODUCT_LOT]
    patients_doc = {}
    for p in trial.patients:
        genotype = trial.genotypes[p.patient_id]
        markers = informative_markers(p)
        patients_doc[p.patient_id] = {
            "scenario": p.scenario,
            "note": p.note,
            "sex": p.sex,
            "first_infusion": iso_z(p.first_infusion),
            "half_life_days": p.half_life_days,
            "bolus_cmax_pct_per_dose": list(p.cmax_pct),
            "rejected_from_dose": p.rejected_from_dose,
            "expansion_anchors_day_pct": [list(a) for a in p.expansion_anchors],
            "qc_failure_samples": list(p.qc_failure_samples),
            "str_contaminated_sample": p.str_contaminated_sample,
            "wbc_baseline_per_ul": p.wbc_baseline_per_ul,
            "wbc_log_step_sd": p.wbc_log_step_sd,
            "baseline_sample_id": f"{p.patient_id}-BL",
            "str_genotype": {k: list(v) for k, v in genotype.items()},
            "str_informative_loci": informative_loci(product, genotype),
            "marker_copies": p.marker_copies,
            "qpcr_informative_markers": markers,
            "ddpcr_marker": markers[0],
        }
    return {
        "seed": SEED,
        "product": {
            "lot": PRODUCT_LOT,
            "reference_sample_id": PRODUCT_REFERENCE_ID,
            "sex": PRODUCT_SEX,
            "str_genotype": {k: list(v) for k, v in product.items()},
            "marker_copies_per_genome": PRODUCT_MARKER_COPIES,
        },
        "third_party_contaminant_str_genotype": {
            k: list(v) for k, v in trial.genotypes["THIRD_PARTY"].items()
        },
        "schedule": {
            "dose_days": list(DOSE_DAYS),
            "dose_cells": list(DOSE_CELLS),
            "baseline_day": BASELINE_DAY,
            "q4w_extra_days_after_dose": list(Q4W_EXTRA_DAYS),
            "follow_up_days": list(FOLLOW_UP_DAYS),
        },
        "kinetics_model": {
            "bolus": "Cmax_n for the first day after dose n, then exp(-ln2 (tau-1)/t_half)",
            "sum_over_doses": True,
            "clearance_floor_pct": CLEARANCE_FLOOR_PCT,
        },
        "alert_rules": ALERT_RULES,
        "expected_alerts": EXPECTED_ALERTS,
        "patients": patients_doc,
        "str": {
            "analysis_threshold_rfu": STR_ANALYSIS_THRESHOLD_RFU,
            "total_signal_rfu": [STR_TOTAL_SIGNAL_MIN_RFU, STR_TOTAL_SIGNAL_MAX_RFU],
            "area_noise_sd_log": STR_AREA_NOISE_SD_LOG,
            "het_imbalance_sd_log": STR_HET_IMBALANCE_SD_LOG,
            "area_per_height": [STR_AREA_PER_HEIGHT_MIN, STR_AREA_PER_HEIGHT_MAX],
            "stutter_ratio_by_locus": {
                loc.name: loc.stutter_ratio for loc in LOCI if loc.name != "AMEL"
            },
            "stutter_noise_sd_log": STR_STUTTER_NOISE_SD_LOG,
            "contamination_fraction": STR_CONTAMINATION_FRACTION,
            "genotypes_table_month": STR_GENOTYPES_TABLE_MONTH,
        },
        "qpcr": {
            "assays_intercept_slope_reporter_threshold": {
                k: list(v) for k, v in QPCR_ASSAYS.items()
            },
            "genomes_per_well": [QPCR_GENOMES_PER_WELL_MIN, QPCR_GENOMES_PER_WELL_MAX],
            "failed_genomes_per_well": [
                QPCR_FAILED_GENOMES_PER_WELL_MIN,
                QPCR_FAILED_GENOMES_PER_WELL_MAX,
            ],
            "ct_noise_sd_cycles": QPCR_CT_NOISE_SD_CYCLES,
            "replicates": QPCR_REPLICATES,
            "calibrator_replicates": QPCR_CALIBRATOR_REPLICATES,
        },
        "ddpcr": {
            "droplet_volume_nl": DDPCR_DROPLET_VOLUME_UL * 1000,
            "accepted_mean_sd_min": [DDPCR_ACCEPTED_MEAN, DDPCR_ACCEPTED_SD, DDPCR_ACCEPTED_MIN],
            "failed_accepted_range": [DDPCR_FAILED_ACCEPTED_MIN, DDPCR_FAILED_ACCEPTED_MAX],
            "lambda_ref_range": [DDPCR_LAMBDA_REF_MIN, DDPCR_LAMBDA_REF_MAX],
            "replicates": DDPCR_REPLICATES,
            "qx_manager_from": DDPCR_QX_MANAGER_FROM.isoformat(),
        },
        "files": trial.files,
    }


def clean_outputs() -> None:
    """Remove previously generated files so that stale runs never linger."""
    for sub in ("str", "qpcr", "ddpcr", "truth"):
        path = OUT_DIR / sub
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    for name in ("manifest.csv", "infusion_log.xlsx"):
        (OUT_DIR / name).unlink(missing_ok=True)


def main() -> None:
    """Generate every file of the sample trial."""
    clean_outputs()
    trial = build_trial()
    write_str_runs(trial)
    write_qpcr(trial)
    write_ddpcr(trial)
    write_manifest(trial)
    write_infusion_log(trial)
    write_truth(trial)
    total = sum(p.stat().st_size for p in OUT_DIR.rglob("*") if p.is_file())
    print(f"sample trial written to {OUT_DIR} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
