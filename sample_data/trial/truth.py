"""The truth files: ``truth/truth.csv`` (one row per patient sample) and ``truth/design.json``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .ddpcr_export import (
    DDPCR_ACCEPTED,
    DDPCR_DROPLET_VOLUME_UL,
    DDPCR_FAILED_ACCEPTED,
    DDPCR_LAMBDA_REF,
    DDPCR_RAIN_SHARE,
    DDPCR_REPLICATES,
)
from .genetics import (
    AUTOSOMAL_LOCI,
    PRODUCT_MARKER_COPIES,
    REFERENCE_GENE,
    informative_loci,
    stutter_position_loci,
    unique_allele_loci,
)
from .model import CD3_CONTAMINANT_NK_SHARE, CD3_PURITY_PCT, CD56_PURITY_PCT, CLEARANCE_FLOOR_PCT
from .protocol import (
    ALL_RULES,
    BASELINE_DAY,
    CALIBRATORS,
    CELL_BANK,
    COHORT_DOSE_CELLS,
    DOSE_DAYS,
    FOLLOW_UP_DAYS,
    LOT_RELEASES,
    PRODUCT_REFERENCE_ID,
    Q4W_EXTRA_DAYS,
    lot_on,
)
from .qpcr_export import (
    QPCR_ASSAYS,
    QPCR_CALIBRATOR_REPLICATES,
    QPCR_CT_NOISE_SD_CYCLES,
    QPCR_FAILED_GENOMES_PER_WELL,
    QPCR_GENOMES_PER_WELL,
    QPCR_REPLICATES,
)
from .rand import iso_z
from .runs import STR_CONTAMINATION_FRACTION
from .str_export import (
    STR_ANALYSIS_THRESHOLD_RFU,
    STR_AREA_NOISE_SD_LOG,
    STR_BACK_STUTTER_NOISE_SD_LOG,
    STR_FORWARD_STUTTER_NOISE_SD_LOG,
    STR_HET_IMBALANCE_SD_LOG,
    STR_TOTAL_SIGNAL_RFU,
)
from .trial import THIRD_PARTY, Trial

TRUTH_COLUMNS = [
    "sample_id",
    "patient_id",
    "role",
    "specimen",
    "specimen_normalised",
    "fraction",
    "genome_model",
    "study_day",
    "collected_at",
    "timepoint",
    "last_dose_number",
    "pct_ink",
    "pct_hsct_donor",
    "pct_recipient",
    "pct_ink_whole_blood",
    "purity_pct",
    "pct_ink_purity_corrected",
    "wbc_per_ul",
    "methods",
    "files",
    "qpcr_markers",
    "ddpcr_marker",
    "hsct_marker",
    "expected_qc_failure",
    "str_contaminated",
    "repeat_measurement",
]


def _pct(value: float | None) -> str:
    """Exactly ``0`` for true zeros, else up to 5 significant digits; empty for None."""
    if value is None:
        return ""
    return "0" if value == 0 else f"{value:.5g}"


def truth_rows(trial: Trial) -> list[list[str]]:
    """One row per patient-derived sample (baselines, germline, HSCT donor, post-dose, sorted)."""
    repeated = {str(e["sample_id"]) for e in trial.events.get("repeat_measurement", [])}
    rows = []
    for s in trial.samples:
        design = trial.patient[s.patient_id]
        hsct = design.hsct_marker() if design.three_genome else None
        rows.append(
            [
                s.sample_id,
                s.patient_id,
                s.role,
                s.specimen,
                s.specimen_normalised,
                s.fraction or "",
                s.genome_model,
                "" if s.study_day is None else str(s.study_day),
                iso_z(s.collected_at),
                s.timepoint,
                str(s.dose_before),
                _pct(s.pct_ink),
                _pct(s.pct_hsct_donor),
                _pct(s.pct_recipient),
                _pct(s.pct_ink_blood),
                _pct(s.purity_pct),
                _pct(s.pct_ink_purity_corrected),
                "" if s.wbc_per_ul is None else str(s.wbc_per_ul),
                ";".join(s.methods),
                ";".join(s.files),
                ";".join(design.qpcr_markers()),
                design.ddpcr_ink_marker(),
                hsct or "",
                "qPCR;ddPCR" if s.qc_failure else "",
                "true" if s.str_contaminated else "false",
                "ddPCR" if s.sample_id in repeated else "",
            ]
        )
    return rows


def _patient_doc(trial: Trial, pid: str) -> dict[str, object]:
    p = trial.patient[pid]
    product = trial.genotypes["product"]
    germline = trial.genotypes[f"{pid}:germline"]
    genomes = [germline]
    doc: dict[str, object] = {
        "scenario": p.scenario,
        "cohort": p.cohort,
        "note": p.note,
        "sex": p.sex,
        "genome_model": "three_genome" if p.three_genome else "two_genome",
        "must_fire": list(p.must_fire),
        "must_not_fire": list(p.must_not_fire),
        "unconstrained": list(p.unconstrained),
        "first_infusion": iso_z(p.first_infusion),
        "half_life_days": p.half_life_days,
        "cmax_per_1e9_cells_pct": list(p.cmax_per_1e9_pct),
        "dose_cells": [p.dose_cells(n) for n in range(1, len(DOSE_DAYS) + 1)],
        "dose_lots": [lot_on(t.date()) for t in trial.doses[pid]],
        "infused_at": [iso_z(t) for t in trial.doses[pid]],
        "rejected_from_dose": p.rejected_from_dose,
        "expansion_anchors_day_pct": [list(a) for a in p.expansion_anchors],
        "recipient_share_anchors_day_pct": [list(a) for a in p.recipient_share_anchors],
        "dilution_by_relapse": p.dilution_by_relapse,
        "qc_failure_samples": list(p.qc_failure_samples),
        "str_contaminated_sample": p.str_contaminated_sample,
        "missed_samples": list(p.missed_samples),
        "sorted_fraction_days": list(p.sorted_fraction_days),
        "blood_specimen_spelling": p.blood_specimen,
        "sorted_specimen_spellings": list(p.sorted_specimens),
        "wbc_baseline_per_ul": p.wbc_baseline_per_ul,
        "wbc_log_step_sd": p.wbc_log_step_sd,
        "nk_share_of_leukocytes": p.nk_share,
        "germline_str_genotype": {k: list(v) for k, v in germline.items()},
        "germline_marker_copies": p.germline_markers,
        "qpcr_markers": p.qpcr_markers(),
        "ddpcr_marker": p.ddpcr_ink_marker(),
    }
    if p.three_genome:
        hsct = trial.genotypes[f"{pid}:hsct_donor"]
        genomes.append(hsct)
        doc |= {
            "hsct_donor_str_genotype": {k: list(v) for k, v in hsct.items()},
            "hsct_donor_marker_copies": p.hsct_donor_markers,
            "hsct_marker": p.hsct_marker(),
            "str_loci_with_ink_only_alleles": unique_allele_loci(product, genomes),
            "str_loci_with_hsct_only_alleles": unique_allele_loci(hsct, [product, germline]),
        }
    doc["str_informative_loci"] = informative_loci(product, genomes)
    doc["str_ink_allele_at_patient_stutter_position"] = stutter_position_loci(product, genomes)
    return doc


def _models() -> dict[str, object]:
    return {
        "kinetics": {
            "bolus": "Cmax_n = cmax_per_1e9 x cells/1e9 for the first day after dose n, then "
            "exp(-ln2 (tau-1)/t_half); summed over doses; + expansion; / relapse dilution",
            "clearance_floor_pct": CLEARANCE_FLOOR_PCT,
            "relapse_dilution": "WBC and iNK % scale with D = (1 - r0)/(1 - r(t)), r = recipient "
            "share of the non-iNK cells (HSCT-donor cells constant)",
        },
        "sorted_fractions": {
            "cd56": "observed = purity x a, a = f/(f + (1-f) q) (iNK share among NK cells); "
            "pct_ink_purity_corrected = 100 a; nk_per_ul = WBC (f + (1-f) q)",
            "cd3": "observed = (1 - purity) x contaminant NK share x a",
            "cd56_purity_pct": list(CD56_PURITY_PCT),
            "cd3_purity_pct": list(CD3_PURITY_PCT),
            "cd3_contaminant_nk_share": CD3_CONTAMINANT_NK_SHARE,
        },
        "str": {
            "analysis_threshold_rfu": STR_ANALYSIS_THRESHOLD_RFU,
            "total_signal_rfu": list(STR_TOTAL_SIGNAL_RFU),
            "area_noise_sd_log": STR_AREA_NOISE_SD_LOG,
            "het_imbalance_sd_log": STR_HET_IMBALANCE_SD_LOG,
            "back_stutter_ratio_by_locus": {l.name: l.back_stutter_ratio for l in AUTOSOMAL_LOCI},
            "forward_stutter_ratio_by_locus": {
                l.name: l.forward_stutter_ratio for l in AUTOSOMAL_LOCI
            },
            "back_stutter_noise_sd_log": STR_BACK_STUTTER_NOISE_SD_LOG,
            "forward_stutter_noise_sd_log": STR_FORWARD_STUTTER_NOISE_SD_LOG,
            "stutter_model": "additive: every true allele adds ratio x its area at n-1 (back) and "
            "n+1 (forward), wherever that falls (also on informative alleles)",
            "contamination_fraction": STR_CONTAMINATION_FRACTION,
        },
        "qpcr": {
            "assays_intercept_slope_reporter_threshold": {
                k: list(v) for k, v in QPCR_ASSAYS.items()
            },
            "genomes_per_well": list(QPCR_GENOMES_PER_WELL),
            "failed_genomes_per_well": list(QPCR_FAILED_GENOMES_PER_WELL),
            "ct_noise_sd_cycles": QPCR_CT_NOISE_SD_CYCLES,
            "replicates": QPCR_REPLICATES,
            "calibrator_replicates": QPCR_CALIBRATOR_REPLICATES,
            "reference_gene": REFERENCE_GENE,
        },
        "ddpcr": {
            "droplet_volume_nl": DDPCR_DROPLET_VOLUME_UL * 1000,
            "accepted_mean_sd_min": list(DDPCR_ACCEPTED),
            "failed_accepted_range": list(DDPCR_FAILED_ACCEPTED),
            "lambda_ref_range": list(DDPCR_LAMBDA_REF),
            "replicates": DDPCR_REPLICATES,
            "reanalysis_rain_share": DDPCR_RAIN_SHARE,
        },
    }


def design_document(trial: Trial) -> dict[str, object]:
    """Scenarios, per-patient rules, every model parameter, designed events and file fates."""
    spellings = {s.specimen: s.specimen_normalised for s in trial.samples if s.is_patient_blood}
    fates = [
        {
            "path": f.path,
            "method": f.method,
            "format": f.export_format,
            "plate_id": f.plate_id,
            "fate": f.fate,
            "supersedes": f.supersedes,
            "reason_contains": f.reason_contains,
            "note": f.note,
        }
        for f in trial.files
    ]
    return {
        "trial": trial.config.name,
        "seed": trial.config.seed,
        "protocol": {
            "dose_days": list(DOSE_DAYS),
            "cohort_dose_cells": COHORT_DOSE_CELLS,
            "monthly_dose_cells": 1e9,
            "baseline_day": BASELINE_DAY,
            "q4w_extra_days_after_dose": list(Q4W_EXTRA_DAYS),
            "follow_up_days": list(FOLLOW_UP_DAYS),
        },
        "product": {
            "cell_bank": CELL_BANK,
            "lots": [{"lot": lot, "first_infused": d.isoformat()} for lot, d in LOT_RELEASES],
            "reference_sample_id": PRODUCT_REFERENCE_ID,
            "calibrators": [
                {"sample_id": s, "lot": lot, "used_from": d.isoformat()}
                for s, lot, d in CALIBRATORS
            ],
            "str_genotype": {k: list(v) for k, v in trial.genotypes["product"].items()},
            "marker_copies_per_genome": PRODUCT_MARKER_COPIES,
        },
        "third_party_contaminant_str_genotype": {
            k: list(v) for k, v in trial.genotypes[THIRD_PARTY].items()
        },
        "alert_rules": [str(r) for r in ALL_RULES],
        "patients": {p.patient_id: _patient_doc(trial, p.patient_id) for p in trial.patients},
        "specimen_spellings": dict(sorted(spellings.items())),
        "designed_events": trial.events,
        "models": _models(),
        "files": fates,
        "file_counts": {
            "total": len(trial.files),
            "accepted": sum(f.fate == "accepted" for f in trial.files),
            "quarantined": sum(f.fate == "quarantined" for f in trial.files),
            "superseding": sum(f.supersedes is not None for f in trial.files),
        },
    }


def write_truth(trial: Trial, out_dir: Path) -> None:
    """Write ``truth.csv`` and ``design.json`` into ``out_dir``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRUTH_COLUMNS)
    writer.writerows(truth_rows(trial))
    (out_dir / "truth.csv").write_text(out.getvalue(), encoding="utf-8")
    design = json.dumps(design_document(trial), indent=1, default=str) + "\n"
    (out_dir / "design.json").write_text(design, encoding="utf-8")
