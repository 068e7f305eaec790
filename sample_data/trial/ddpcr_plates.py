"""ddPCR plates per batch: duplex marker + RPP30 wells, controls recurring on every plate.

Every plate: the product reference (PosCtrl, 2 wells per marker), the current calibrator
(PosCtrl, 1 well per marker), each plate patient's baseline (NegCtrl), the HSCT donor's DNA of
three-genome patients (PosCtrl on the HSCT marker) and water NTCs. QuantaSoft 1.7 before May
2025, QX Manager afterwards.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from .controls import calibrator_for, product_reference
from .ddpcr_export import (
    DDPCR_PLATE_WELLS,
    DDPCR_REPLICATES,
    SAMPLE_TYPE_NEGATIVE,
    SAMPLE_TYPE_NTC,
    SAMPLE_TYPE_POSITIVE,
    SAMPLE_TYPE_UNKNOWN,
    DdpcrWell,
    export_bytes,
    plan_wells,
    reanalysed,
    simulate_droplets,
    truncated_copy,
)
from .model import Sample
from .protocol import hsct_donor_id
from .str_export import well_name
from .trial import FileRecord, Trial
from .vocab import Method, Role

DDPCR_RUN_DAY = 7
REANALYSIS_DELAY_DAYS = 2
TRUNCATED_SHARE = 0.55


def _patient_markers(trial: Trial, pid: str) -> list[str]:
    design = trial.patient[pid]
    hsct = design.hsct_marker()
    return [design.ddpcr_ink_marker(), *([hsct] if hsct else [])]


def _plates(trial: Trial, samples: list[Sample]) -> list[list[Sample]]:
    capacity = DDPCR_PLATE_WELLS - trial.config.ddpcr_reserved_wells
    plates: list[list[Sample]] = [[]]
    used, seen = 0, set()
    for sample in samples:
        per = DDPCR_REPLICATES * len(_patient_markers(trial, sample.patient_id))
        need = per * (2 if sample.patient_id not in seen else 1)
        if used + need > capacity and plates[-1]:
            plates.append([])
            used, seen, need = 0, set(), 2 * per
        plates[-1].append(sample)
        seen.add(sample.patient_id)
        used += need
    return plates


def _extract(
    trial: Trial,
    rng: random.Random,
    sample: Sample,
    sample_type: str,
    marker: str,
    replicates: int = DDPCR_REPLICATES,
) -> list[DdpcrWell]:
    """Replicate wells of one sample's extract on one marker."""
    copies = trial.marker_copies(sample, marker)
    return plan_wells(rng, sample.sample_id, sample_type, marker, copies,
                      failed=sample.qc_failure, replicates=replicates)  # fmt: skip


def _plan_plate(
    trial: Trial, rng: random.Random, plate: str, plate_samples: list[Sample], ran: dt.date
) -> list[DdpcrWell]:
    """Controls first (product, calibrator, baselines, HSCT donors), then samples, then NTCs."""
    patients = sorted({s.patient_id for s in plate_samples})
    ink_markers = sorted({trial.patient[pid].ddpcr_ink_marker() for pid in patients})
    wells: list[DdpcrWell] = []
    reference, calibrator = product_reference(), calibrator_for(ran)
    for marker in ink_markers:
        wells += _extract(trial, rng, reference, SAMPLE_TYPE_POSITIVE, marker)
        wells += _extract(trial, rng, calibrator, SAMPLE_TYPE_POSITIVE, marker, replicates=1)
    for pid in patients:
        baseline = trial.sample(f"{pid}-BL")
        for marker in _patient_markers(trial, pid):
            wells += _extract(trial, rng, baseline, SAMPLE_TYPE_NEGATIVE, marker)
        hsct = trial.patient[pid].hsct_marker()
        if hsct:
            wells += _extract(
                trial, rng, trial.sample(hsct_donor_id(pid)), SAMPLE_TYPE_POSITIVE, hsct
            )
    for sample in plate_samples:
        for marker in _patient_markers(trial, sample.patient_id):
            wells += _extract(trial, rng, sample, SAMPLE_TYPE_UNKNOWN, marker)
    for marker in ink_markers if len(ink_markers) > 1 else ink_markers * 2:
        wells += plan_wells(rng, "NTC", SAMPLE_TYPE_NTC, marker, 0.0, replicates=1)
    if trial.config.events is not None:
        _false_positives(trial, plate, wells)
    return wells


def _false_positives(trial: Trial, plate: str, wells: list[DdpcrWell]) -> None:
    """Designed background: 1-2 marker droplets in an NTC, 1 in a baseline (below the LoB)."""
    events = trial.config.events
    assert events is not None
    for name, count in events.ntc_false_positive_droplets:
        if name == plate:
            ntc = next(w for w in wells if w.sample_type == SAMPLE_TYPE_NTC)
            ntc.false_positive_marker = count
            trial.log_event("ntc_false_positive_droplets", plate=plate, marker_droplets=count)
    name, sample_id = events.baseline_false_positive
    if name == plate:
        baseline = next(w for w in wells if w.sample_name == sample_id)
        baseline.false_positive_marker = 1
        trial.log_event("baseline_false_positive", plate=plate, sample_id=sample_id,
                        marker_droplets=1)  # fmt: skip


def _batches(trial: Trial) -> dict[str, list[Sample]]:
    batching = trial.config.batching
    by_batch: dict[str, list[Sample]] = {}
    for sample in trial.samples:
        if sample.role == Role.POST_DOSE and sample.collected_at is not None:
            by_batch.setdefault(batching.key(sample.collected_at), []).append(sample)
    events = trial.config.events
    if events is not None:
        repeat = trial.sample(events.repeat_ddpcr_sample)
        assert repeat.collected_at is not None
        keys = sorted(by_batch)
        later = keys[keys.index(batching.key(repeat.collected_at)) + 1]
        by_batch[later].append(repeat)
        trial.log_event("repeat_measurement", sample_id=repeat.sample_id, method=str(Method.DDPCR),
                        first_batch=batching.key(repeat.collected_at), repeated_in=later)  # fmt: skip
    return by_batch


def write_ddpcr_plates(trial: Trial, out_dir: Path) -> None:
    """Every batch's plates, plus the designed re-analysis and truncated copy."""
    rng = random.Random(f"{trial.config.seed}-ddpcr")
    config = trial.config
    for key, samples in sorted(_batches(trial).items()):
        ran = config.batching.run_date(key, DDPCR_RUN_DAY)
        for index, plate_samples in enumerate(_plates(trial, samples)):
            plate = f"DP{config.batching.label(key)}{chr(65 + index)}"
            wells = _plan_plate(trial, rng, plate, plate_samples, ran)
            for well in wells:
                simulate_droplets(rng, well)
            relative = _write(trial, rng, out_dir, plate, ran, wells, "")
            for sample in plate_samples:
                if str(Method.DDPCR) not in sample.methods:
                    sample.methods.append(str(Method.DDPCR))
                sample.files.append(relative)
            _designed_copies(trial, rng, out_dir, plate, ran, wells, relative)


def _write(
    trial: Trial,
    rng: random.Random,
    out_dir: Path,
    plate: str,
    ran: dt.date,
    wells: list[DdpcrWell],
    suffix: str = "",
    *,
    supersedes: str | None = None,
    note: str = "",
) -> str:
    """Write one export (QuantaSoft before May 2025, QX Manager after) and record it."""
    qx = ran >= trial.config.quantasoft_before
    positioned = [(well_name(i), w) for i, w in enumerate(wells)]
    data = export_bytes(rng, positioned, qx_manager=qx)
    software = "qxmanager" if qx else "quantasoft"
    path = out_dir / f"{ran.isoformat()}_{plate}_{software}{suffix}.csv"
    path.write_bytes(data)
    relative = f"{out_dir.name}/{path.name}"
    fmt = "qx_manager" if qx else "quantasoft"
    record = FileRecord(relative, str(Method.DDPCR), fmt, plate, supersedes=supersedes, note=note)
    trial.files.append(record)
    return relative


def _designed_copies(
    trial: Trial,
    rng: random.Random,
    out_dir: Path,
    plate: str,
    ran: dt.date,
    wells: list[DdpcrWell],
    original: str,
) -> None:
    events = trial.config.events
    if events is None:
        return
    if plate == events.reanalysed_ddpcr_plate:
        later = ran + dt.timedelta(days=REANALYSIS_DELAY_DAYS)
        again = reanalysed(rng, wells)
        relative = _write(
            trial,
            rng,
            out_dir,
            plate,
            later,
            again,
            "_reanalysed",
            supersedes=original,
            note="the same plate re-analysed with lower thresholds (rain included)",
        )
        for sample in trial.samples:
            if original in sample.files:
                sample.files.append(relative)
    if plate == events.truncated_ddpcr_plate:
        data = (out_dir / Path(original).name).read_bytes()
        path = out_dir / f"{ran.isoformat()}_{plate}_qxmanager_copy.csv"
        path.write_bytes(truncated_copy(data, TRUNCATED_SHARE))
        trial.files.append(
            FileRecord(
                f"{out_dir.name}/{path.name}",
                str(Method.DDPCR),
                "qx_manager",
                plate,
                fate="quarantined",
                reason_contains="truncated",
                note="an interrupted copy of the plate, cut mid-row",
            )
        )
