"""True composition of every sample: iNK kinetics, relapse, sorted fractions, blood counts.

True % iNK in whole blood at a draw = sum over earlier doses n of Cmax_n * g(tau) (+ expansion),
Cmax_n = designed Cmax per 1e9 cells x cells given / 1e9, g = 1 for the first day after the
infusion and exp(-ln2 (tau - 1)/t_half) afterwards. Values below 0.01 % are exactly 0 (cleared).
In a relapsing three-genome patient the recipient's cells are added on top of an unchanged HSCT
donor compartment, so WBC rises by D = (1 - r0)/(1 - r) and iNK % falls by the same factor.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from dataclasses import dataclass, field

from .protocol import (
    BASELINE_DAY,
    CELLS_PER_NORMALISED_DOSE,
    DOSE_DAYS,
    FOLLOW_UP_DAYS,
    FRACTION_CD3,
    FRACTION_CD56,
    Q4W_EXTRA_DAYS,
    TWICE_WEEKLY_DOSES,
    PatientDesign,
    baseline_id,
    lot_on,
)
from .rand import UTC, round_sig
from .vocab import GenomeModel, Role, Specimen

BOLUS_PLATEAU_DAYS = 1.0
CLEARANCE_FLOOR_PCT = 0.01
PCT_SIGNIFICANT_DIGITS = 5
CD56_PURITY_PCT = (90.0, 98.0)
CD3_PURITY_PCT = (95.0, 99.0)
CD3_CONTAMINANT_NK_SHARE = 0.3
"""Share of the cells contaminating a CD3+ sort that are NK cells (the only iNK in CD3+)."""
WBC_PER_UL_RANGE = (500.0, 6000.0)
DAY_SECONDS = 86_400.0


@dataclass
class Sample:
    """One manifest row plus the simulation truth attached to it."""

    sample_id: str
    patient_id: str
    role: str
    collected_at: dt.datetime | None = None
    specimen: str = ""
    specimen_normalised: str = ""
    fraction: str | None = None
    study_day: int | None = None
    timepoint: str = ""
    dose_before: int = 0
    genome_model: str = str(GenomeModel.TWO_GENOME)
    pct_ink: float = 0.0
    pct_hsct_donor: float = 0.0
    pct_recipient: float = 100.0
    pct_ink_blood: float | None = None
    purity_pct: float | None = None
    pct_ink_purity_corrected: float | None = None
    wbc_per_ul: int | None = None
    lymphocytes_per_ul: int | None = None
    nk_per_ul: int | None = None
    product_lot: str | None = None
    cell_bank: str | None = None
    qc_failure: bool = False
    str_contaminated: bool = False
    methods: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def is_patient_blood(self) -> bool:
        """Blood of a patient (baseline or post-dose): what the PCR plates and STR runs measure."""
        return self.role in (Role.POST_DOSE, Role.RECIPIENT_BASELINE)

    def composition(self) -> tuple[float, float, float]:
        """DNA fractions (iNK, HSCT donor, recipient), summing to 1."""
        total = self.pct_ink + self.pct_hsct_donor + self.pct_recipient
        return self.pct_ink / total, self.pct_hsct_donor / total, self.pct_recipient / total


def dose_times(rng: random.Random, patient: PatientDesign) -> list[dt.datetime]:
    """Administration times: protocol days, infusions between 08:30 and 14:00 UTC."""
    first_date = patient.first_infusion.date()
    times = [patient.first_infusion]
    for day in DOSE_DAYS[1:]:
        minute_of_day = rng.randrange(8 * 60 + 30, 14 * 60, 5)
        date = first_date + dt.timedelta(days=day)
        times.append(
            dt.datetime(date.year, date.month, date.day, tzinfo=UTC)
            + dt.timedelta(minutes=minute_of_day)
        )
    return times


def _morning_draw(rng: random.Random, date: dt.date) -> dt.datetime:
    minute_of_day = rng.randrange(7 * 60, 11 * 60, 5)
    midnight = dt.datetime(date.year, date.month, date.day, tzinfo=UTC)
    return midnight + dt.timedelta(minutes=minute_of_day)


def _log_linear(anchors: tuple[tuple[float, float], ...], day: float) -> float:
    """Log-linear interpolation between (day, value) anchors; flat outside them."""
    if day <= anchors[0][0]:
        return anchors[0][1]
    for (d1, v1), (d2, v2) in itertools.pairwise(anchors):
        if d1 <= day <= d2:
            weight = (day - d1) / (d2 - d1)
            return math.exp(math.log(v1) + weight * (math.log(v2) - math.log(v1)))
    return anchors[-1][1]


def recipient_share(patient: PatientDesign, day: float) -> float:
    """Share (0-1) of the non-iNK cells that are the recipient's own (three-genome patients)."""
    if not patient.three_genome:
        return 1.0
    return _log_linear(patient.recipient_share_anchors, day) / 100.0


def dilution_factor(patient: PatientDesign, day: float) -> float:
    """WBC growth from relapse: HSCT-donor cells constant, recipient cells added on top."""
    if not patient.dilution_by_relapse:
        return 1.0
    start = recipient_share(patient, BASELINE_DAY)
    return (1.0 - start) / (1.0 - recipient_share(patient, day))


def ink_blood_pct(patient: PatientDesign, doses: list[dt.datetime], moment: dt.datetime) -> float:
    """True whole-blood % iNK: per-dose boluses, expansion, dilution; floored, 5 digits."""
    if patient.rejected_from_dose is not None and moment > doses[patient.rejected_from_dose - 1]:
        return 0.0
    day = (moment - doses[0]).total_seconds() / DAY_SECONDS
    total = 0.0
    decay_per_day = math.log(2.0) / patient.half_life_days
    for number, (dose_time, cmax) in enumerate(zip(doses, patient.cmax_per_1e9_pct, strict=True)):
        tau_days = (moment - dose_time).total_seconds() / DAY_SECONDS
        if tau_days <= 0:
            continue
        bolus = cmax * patient.dose_cells(number + 1) / CELLS_PER_NORMALISED_DOSE
        total += bolus * math.exp(-decay_per_day * max(tau_days - BOLUS_PLATEAU_DAYS, 0.0))
    if patient.expansion_anchors and day >= patient.expansion_anchors[0][0]:
        total += _log_linear(patient.expansion_anchors, day)
    total /= dilution_factor(patient, day)
    if total < CLEARANCE_FLOOR_PCT:
        return 0.0
    return round_sig(total, PCT_SIGNIFICANT_DIGITS)


def set_blood_composition(sample: Sample, patient: PatientDesign, ink_pct: float) -> None:
    """Fill % iNK / HSCT donor / recipient of a whole-blood sample."""
    sample.pct_ink = ink_pct
    day = float(sample.study_day or 0)
    if patient.three_genome:
        sample.genome_model = str(GenomeModel.THREE_GENOME)
        rest = 100.0 - ink_pct
        sample.pct_recipient = round_sig(
            rest * recipient_share(patient, day), PCT_SIGNIFICANT_DIGITS
        )
        sample.pct_hsct_donor = round_sig(rest - sample.pct_recipient, PCT_SIGNIFICANT_DIGITS)
    else:
        sample.pct_recipient = round_sig(100.0 - ink_pct, PCT_SIGNIFICANT_DIGITS)
        sample.pct_hsct_donor = 0.0


def _draw_schedule(
    patient: PatientDesign, doses: list[dt.datetime], rng: random.Random
) -> list[Sample]:
    """Baseline, pre-dose troughs, post-dose and follow-up draws of one patient."""
    pid = patient.patient_id
    day0 = patient.first_infusion.date()
    post = str(Role.POST_DOSE)
    samples = [
        Sample(
            baseline_id(pid),
            pid,
            str(Role.RECIPIENT_BASELINE),
            _morning_draw(rng, day0 + dt.timedelta(days=BASELINE_DAY)),
            study_day=BASELINE_DAY,
            timepoint="baseline",
        )
    ]
    for number, (day, dose_time) in enumerate(zip(DOSE_DAYS, doses, strict=True), start=1):
        if number > 1:
            before = dose_time - dt.timedelta(minutes=rng.randrange(30, 115, 5))
            samples.append(
                Sample(
                    f"{pid}-D{day:03d}-PRE",
                    pid,
                    post,
                    before,
                    study_day=day,
                    timepoint=f"pre-dose {number}",
                    dose_before=number - 1,
                )
            )
        offsets = (1, *Q4W_EXTRA_DAYS) if number > TWICE_WEEKLY_DOSES else (1,)
        for offset in offsets:
            moment = _morning_draw(rng, dose_time.date() + dt.timedelta(days=offset))
            samples.append(
                Sample(
                    f"{pid}-D{day + offset:03d}",
                    pid,
                    post,
                    moment,
                    study_day=day + offset,
                    timepoint=f"dose {number} +{offset}d",
                    dose_before=number,
                )
            )
    for day in FOLLOW_UP_DAYS:
        moment = _morning_draw(rng, day0 + dt.timedelta(days=day))
        samples.append(
            Sample(
                f"{pid}-D{day:03d}",
                pid,
                post,
                moment,
                study_day=day,
                timepoint="follow-up",
                dose_before=len(DOSE_DAYS),
            )
        )
    kept = [s for s in samples if s.sample_id not in patient.missed_samples]
    if patient.enrolment_end is not None:
        kept = [
            s for s in kept if s.collected_at and s.collected_at.date() <= patient.enrolment_end
        ]
    return kept


def _attach_blood_counts(patient: PatientDesign, samples: list[Sample], rng: random.Random) -> None:
    """WBC as a mean-reverting log random walk (x relapse growth); lymphocytes 15-45 % of WBC."""
    base = math.log(patient.wbc_baseline_per_ul)
    level = base
    for sample in samples:
        step = min(max(rng.gauss(0.0, patient.wbc_log_step_sd), -0.5), 0.5)
        level = base + 0.6 * (level - base) + step
        wbc = min(max(math.exp(level), WBC_PER_UL_RANGE[0]), WBC_PER_UL_RANGE[1])
        wbc *= dilution_factor(patient, float(sample.study_day or 0))
        sample.wbc_per_ul = round(wbc)
        sample.lymphocytes_per_ul = round(wbc * rng.uniform(0.15, 0.45))


def sorted_fractions(sample: Sample, patient: PatientDesign, rng: random.Random) -> list[Sample]:
    """CD56+ (NK) and CD3+ (T) fractions sorted from one whole-blood draw.

    Among CD56+ cells the iNK share is a = f/(f + (1 - f) q) (q = endogenous NK share of the
    patient's leukocytes); a sort of purity P reads P x a (contaminants carry no iNK), so
    a = observed / P is the purity-corrected value. CD3+ holds iNK only through NK cells among
    its (1 - P3) contaminants: (1 - P3) x 0.3 x a, always below 1.5 %.
    """
    f = sample.pct_ink / 100.0
    among_nk = f / (f + (1.0 - f) * patient.nk_share) if f > 0 else 0.0
    out = []
    for fraction, spelling, purity_range in (
        (FRACTION_CD56, patient.sorted_specimens[0], CD56_PURITY_PCT),
        (FRACTION_CD3, patient.sorted_specimens[1], CD3_PURITY_PCT),
    ):
        purity = round(rng.uniform(*purity_range), 1)
        if fraction == FRACTION_CD56:
            observed = purity / 100.0 * among_nk
            normalised = str(Specimen.PB_CD56)
        else:
            observed = (1.0 - purity / 100.0) * CD3_CONTAMINANT_NK_SHARE * among_nk
            normalised = str(Specimen.PB_CD3)
        pct = round_sig(100.0 * observed, PCT_SIGNIFICANT_DIGITS)
        pct = 0.0 if pct < CLEARANCE_FLOOR_PCT else pct
        child = Sample(
            f"{sample.sample_id}-{fraction}",
            sample.patient_id,
            sample.role,
            sample.collected_at,
            specimen=spelling,
            specimen_normalised=normalised,
            fraction=fraction,
            study_day=sample.study_day,
            timepoint=sample.timepoint,
            dose_before=sample.dose_before,
            pct_ink=pct,
            pct_recipient=round_sig(100.0 - pct, PCT_SIGNIFICANT_DIGITS),
            pct_ink_blood=sample.pct_ink,
            purity_pct=purity,
            wbc_per_ul=sample.wbc_per_ul,
            lymphocytes_per_ul=sample.lymphocytes_per_ul,
        )
        if fraction == FRACTION_CD56:
            child.pct_ink_purity_corrected = round_sig(100.0 * among_nk, PCT_SIGNIFICANT_DIGITS)
            nk_cells = (sample.wbc_per_ul or 0) * (f + (1.0 - f) * patient.nk_share)
            child.nk_per_ul = round(nk_cells)
        out.append(child)
    return out


def build_samples(
    patient: PatientDesign, doses: list[dt.datetime], rng: random.Random
) -> list[Sample]:
    """Every sample of one patient with its truth, in time order (sorted fractions follow PB)."""
    samples = _draw_schedule(patient, doses, rng)
    _attach_blood_counts(patient, samples, rng)
    out: list[Sample] = []
    for sample in samples:
        sample.specimen = patient.blood_specimen
        sample.specimen_normalised = str(Specimen.PB)
        moment = sample.collected_at
        ink = (
            0.0
            if sample.role != Role.POST_DOSE or moment is None
            else ink_blood_pct(patient, doses, moment)
        )
        set_blood_composition(sample, patient, ink)
        sample.qc_failure = sample.sample_id in patient.qc_failure_samples
        sample.str_contaminated = sample.sample_id == patient.str_contaminated_sample
        out.append(sample)
        sorted_draw = (
            sample.role == Role.POST_DOSE
            and sample.study_day in patient.sorted_fraction_days
            and not sample.timepoint.startswith("pre-dose")
        )
        if sorted_draw:
            out.extend(sorted_fractions(sample, patient, rng))
    return out


def dose_lots(doses: list[dt.datetime]) -> list[str]:
    """The product lot infused at each dose."""
    return [lot_on(moment.date()) for moment in doses]
