"""The ten designed patients of the committed trial, one function each (README: scenarios).

Cohort 1 (P01-P05) receives 5e8 cells per twice-weekly dose, cohort 2 (P06-P10) 1e9; all
receive 1e9 every 4 weeks. Each design names the alert rules that must fire; every other rule
must not, except those listed as unconstrained.
"""

from __future__ import annotations

import datetime as dt
import random

from .genetics import MARKERS, TRANSGENE
from .protocol import DOSE_DAYS, SEED, PatientDesign, typical_cmax
from .rand import UTC
from .vocab import AlertRuleId


def _markers(s02: int, s03: int, s05: int, s07: int, s08: int, s11: int) -> dict[str, int]:
    """Copies per genome of the indel markers (the transgene TG1 is product-only)."""
    return dict(zip(MARKERS, (s02, s03, s05, s07, s08, s11, 0), strict=True))


def _start(month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(2025, month, day, hour, minute, tzinfo=UTC)


def _rules(*rules: AlertRuleId) -> tuple[str, ...]:
    return tuple(str(r) for r in rules)


def p01(rng: random.Random) -> PatientDesign:
    """Transient; sorted fractions; a contaminated STR aliquot; a late background baseline well."""
    return PatientDesign(
        patient_id="P01", scenario="typical_transient", cohort=1,
        first_infusion=_start(3, 4, 9, 40), half_life_days=1.0,
        cmax_per_1e9_pct=typical_cmax(rng, 18.0), sex="M",
        germline_markers=_markers(0, 1, 1, 1, 1, 0), wbc_baseline_per_ul=2500,
        blood_specimen="Peripheral blood",
        note="transient; sorted fractions; one STR aliquot contaminated with third-party DNA; "
        "one late (Ct 39.2) background well in its baseline's S02 wells on the screening plate",
        str_contaminated_sample="P01-D015", sorted_fraction_days=(1, 11, 25, 53, 165),
        ddpcr_marker="S02",
    )  # fmt: skip


def p02(rng: random.Random) -> PatientDesign:
    """Transient; the +1 d draw after dose 4 was missed."""
    return PatientDesign(
        patient_id="P02", scenario="typical_transient", cohort=1,
        first_infusion=_start(3, 25, 10, 15), half_life_days=1.2,
        cmax_per_1e9_pct=typical_cmax(rng, 14.0), sex="F",
        germline_markers=_markers(1, 0, 0, 0, 1, 1), wbc_baseline_per_ul=1200,
        blood_specimen="PB",
        note="transient; the +1 d draw after dose 4 was missed (no sample, no manifest row)",
        missed_samples=("P02-D011",), ddpcr_marker="S05",
    )  # fmt: skip


def p03() -> PatientDesign:
    """Slow clearance: troughs accumulate, quantified long after the last dose."""
    return PatientDesign(
        patient_id="P03", scenario="accumulating_persistent", cohort=1,
        first_infusion=_start(4, 15, 8, 55), half_life_days=20.0,
        cmax_per_1e9_pct=(5.0,) * len(DOSE_DAYS), sex="F",
        germline_markers=_markers(1, 1, 0, 1, 0, 1), wbc_baseline_per_ul=3800,
        blood_specimen="PBMC",
        note="slow clearance (t1/2 20 d): troughs accumulate over the twice-weekly doses "
        "(R_ac ~5), quantified until ~day 304; stable WBC; sorted fractions",
        must_fire=_rules(AlertRuleId.PERSISTENCE, AlertRuleId.ACCUMULATION),
        wbc_log_step_sd=0.01, sorted_fraction_days=(1, 25, 53, 165, 192, 248),
        sorted_specimens=("PB CD56+", "CD3+ sorted PB"), ddpcr_marker="S08",
    )  # fmt: skip


def p04() -> PatientDesign:
    """Falling exposure per cell, hidden in the raw values by the 5e8 -> 1e9 step at dose 9."""
    return PatientDesign(
        patient_id="P04", scenario="falling_exposure", cohort=1,
        first_infusion=_start(5, 6, 11, 20), half_life_days=1.0,
        cmax_per_1e9_pct=(24.0, 20.0, 16.0, 12.0, 9.0, 7.0, 6.0, 5.0, 4.0, 3.5, 3.0, 3.0, 2.8),
        sex="M", germline_markers=_markers(0, 0, 1, 0, 1, 1), wbc_baseline_per_ul=900,
        blood_specimen="peripheral blood",
        note="dose-normalised Cmax falls 24 -> 2.8 % per 1e9 cells; the raw +1 d value rises at "
        "dose 9 (5e8 -> 1e9 cells) although exposure per cell keeps falling",
        must_fire=_rules(AlertRuleId.FALLING_EXPOSURE),
        unconstrained=_rules(AlertRuleId.EARLY_LOSS), ddpcr_marker="S03",
    )  # fmt: skip


def p05(rng: random.Random) -> PatientDesign:
    """Typical during dosing, then expansion with no dose."""
    return PatientDesign(
        patient_id="P05", scenario="unexpected_expansion", cohort=1,
        first_infusion=_start(5, 27, 9, 5), half_life_days=1.2,
        cmax_per_1e9_pct=typical_cmax(rng, 20.0), sex="F",
        germline_markers=_markers(1, 1, 1, 1, 0, 0), wbc_baseline_per_ul=2000,
        blood_specimen="Whole blood",
        note="typical until day 178, then dose-independent expansion to 17.5 % (no dose after "
        "day 164); sorted fractions; ddPCR on the 3-copy transgene TG1",
        must_fire=_rules(AlertRuleId.UNEXPECTED_EXPANSION),
        unconstrained=_rules(AlertRuleId.PERSISTENCE), wbc_log_step_sd=0.08,
        expansion_anchors=((181.0, 0.03), (192.0, 0.2), (220.0, 1.0), (248.0, 4.0),
                           (276.0, 12.0), (304.0, 15.0), (335.0, 16.5), (365.0, 17.5)),
        sorted_fraction_days=(1, 25, 165, 220, 276, 335), ddpcr_marker=TRANSGENE,
    )  # fmt: skip


def p06() -> PatientDesign:
    """Rejection after dose 2: time-matched +1 d values vanish."""
    return PatientDesign(
        patient_id="P06", scenario="early_loss", cohort=2,
        first_infusion=_start(6, 17, 13, 30), half_life_days=1.0,
        cmax_per_1e9_pct=(14.0, 5.0) + (14.0,) * (len(DOSE_DAYS) - 2), sex="M",
        germline_markers=_markers(0, 1, 0, 1, 1, 1), wbc_baseline_per_ul=4500,
        blood_specimen="Peripheral blood",
        note="rejection: +1 d after dose 1 14 %, after dose 2 ~7 %, nothing from dose 3 on "
        "(compare +1 d after dose k with +1 d after dose 1)",
        must_fire=_rules(AlertRuleId.EARLY_LOSS),
        unconstrained=_rules(AlertRuleId.FALLING_EXPOSURE), rejected_from_dose=3,
        ddpcr_marker="S02",
    )  # fmt: skip


def p07(rng: random.Random) -> PatientDesign:
    """Typical kinetics, three DNA-input failures."""
    return PatientDesign(
        patient_id="P07", scenario="repeated_qc_failure", cohort=2,
        first_infusion=_start(7, 8, 10, 45), half_life_days=1.2,
        cmax_per_1e9_pct=typical_cmax(rng, 13.0), sex="F",
        germline_markers=_markers(1, 0, 1, 0, 0, 0), wbc_baseline_per_ul=1800,
        blood_specimen="PB",
        note="typical kinetics; three samples with too little DNA (qPCR and ddPCR fail, not "
        "STR-typed), one of them the +1 d sample after dose 3",
        must_fire=_rules(AlertRuleId.REPEATED_QC_FAILURE),
        qc_failure_samples=("P07-D008", "P07-D083", "P07-D220"), ddpcr_marker="S08",
    )  # fmt: skip


def p08() -> PatientDesign:
    """Primary non-engraftment: never detected."""
    return PatientDesign(
        patient_id="P08", scenario="never_engrafting", cohort=2,
        first_infusion=_start(7, 29, 12, 10), half_life_days=1.0,
        cmax_per_1e9_pct=(0.0,) * len(DOSE_DAYS), sex="M",
        germline_markers=_markers(0, 1, 1, 1, 0, 1), wbc_baseline_per_ul=3000,
        blood_specimen="Peripheral Blood",
        note="primary non-engraftment (pre-existing donor-specific antibodies): iNK never "
        "detected after any dose; volatile WBC",
        must_fire=_rules(AlertRuleId.NEVER_DETECTED), wbc_log_step_sd=0.35, ddpcr_marker="S02",
    )  # fmt: skip


def p09(rng: random.Random) -> PatientDesign:
    """Prior HSCT, relapsing: the recipient's own share rises and dilutes iNK."""
    return PatientDesign(
        patient_id="P09", scenario="relapse_three_genome", cohort=2,
        first_infusion=_start(8, 19, 9, 25), half_life_days=1.0,
        cmax_per_1e9_pct=typical_cmax(rng, 12.0), sex="F",
        germline_markers=_markers(1, 0, 1, 0, 1, 0), wbc_baseline_per_ul=2600,
        blood_specimen="PBMC",
        note="relapse after a prior allogeneic HSCT: the recipient's share of the non-iNK cells "
        "rises 2 % -> 30 % (day 136) -> 60 %; WBC rises with it and dilutes iNK % (iNK cells/uL "
        "unchanged); ddPCR on the transgene TG1",
        must_fire=_rules(AlertRuleId.RECIPIENT_RISING),
        hsct_donor_markers=_markers(0, 0, 1, 1, 0, 1),
        recipient_share_anchors=((-7.0, 2.0), (50.0, 2.0), (80.0, 6.0), (108.0, 14.0),
                                 (136.0, 30.0), (164.0, 45.0), (220.0, 55.0), (365.0, 60.0)),
        dilution_by_relapse=True, ddpcr_marker=TRANSGENE,
    )  # fmt: skip


def p10(rng: random.Random) -> PatientDesign:
    """Prior HSCT, stable mixed chimerism; three doses reduced after an infusion reaction."""
    return PatientDesign(
        patient_id="P10", scenario="stable_three_genome", cohort=2,
        first_infusion=_start(9, 9, 8, 35), half_life_days=1.0,
        cmax_per_1e9_pct=typical_cmax(rng, 14.0), sex="M",
        germline_markers=_markers(0, 1, 1, 1, 0, 0), wbc_baseline_per_ul=4200,
        blood_specimen="peripheral blood",
        note="prior allogeneic HSCT, stable mixed chimerism (recipient 4 %); doses 6-8 reduced "
        "to 5e8 cells after an infusion reaction (raw Cmax halves, dose-normalised Cmax does "
        "not); received lot L02 only",
        hsct_donor_markers=_markers(0, 1, 0, 0, 1, 1),
        recipient_share_anchors=((-7.0, 4.0), (365.0, 4.0)),
        dose_cells_override={6: 5e8, 7: 5e8, 8: 5e8}, ddpcr_marker="S02",
    )  # fmt: skip


def sample_trial_patients() -> list[PatientDesign]:
    """The ten designed patients, drawn in a fixed order from one seeded stream."""
    rng = random.Random(f"{SEED}-patients")
    return [p01(rng), p02(rng), p03(), p04(), p05(rng), p06(), p07(rng), p08(), p09(rng), p10(rng)]
