"""qPCR plates: a marker-screening plate per enrolment batch and follow-up plates per batch.

Every follow-up plate carries the same 100 % calibrator id (6 replicates per target), the same
product reference id (triplicates), each plate patient's baseline as a 0 % control, the HSCT
donor's DNA of three-genome patients (100 % for the HSCT marker) and NTCs; samples in triplicate.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from .controls import calibrator_for, product_reference
from .genetics import MARKERS, REFERENCE_GENE
from .model import Sample
from .protocol import germline_id, hsct_donor_id
from .qpcr_export import (
    EXPERIMENT_TYPE_DDCT,
    EXPERIMENT_TYPE_SCREEN,
    QPCR_CALIBRATOR_REPLICATES,
    QPCR_FAILED_GENOMES_PER_WELL,
    QPCR_GENOMES_PER_WELL,
    QPCR_PLATE_WELLS,
    QPCR_REPLICATES,
    TASK_NTC,
    QpcrWell,
    extract_wells,
    ntc_wells,
    omit_well,
    simulate_cts,
    write_cfx,
    write_quantstudio,
)
from .trial import Batching, FileRecord, Trial
from .vocab import Method, Role

SCREEN_TARGETS = (*MARKERS, REFERENCE_GENE)
FOLLOW_UP_RUN_DAY = 5
BUBBLE_CT_SHIFT_CYCLES = 2.5
LATE_NTC_CT = 39.4
REEXPORT_DELAY_DAYS = 2
SCREEN_BATCHING = Batching(days=7)
"""Baselines of one week share a marker-screening plate."""


class PlateBuilder:
    """Wells of one plate; each DNA extract gets one genome input for all its wells."""

    def __init__(self, trial: Trial, rng: random.Random) -> None:
        self.trial = trial
        self.rng = rng
        self.wells: list[QpcrWell] = []
        self._genomes: dict[str, float] = {}

    def add(self, sample: Sample, targets: list[str], replicates: int = QPCR_REPLICATES) -> None:
        """Replicate wells of ``sample`` for each target."""
        if sample.sample_id not in self._genomes:
            span = QPCR_FAILED_GENOMES_PER_WELL if sample.qc_failure else QPCR_GENOMES_PER_WELL
            self._genomes[sample.sample_id] = self.rng.uniform(*span)
        genomes = self._genomes[sample.sample_id]
        for target in targets:
            copies = self.trial.marker_copies(sample, target)
            self.wells += extract_wells(
                self.rng, sample.sample_id, target, copies, genomes, replicates
            )

    def ntc(self, name: str, targets: list[str]) -> None:
        """No-template wells."""
        self.wells += ntc_wells(name, targets)


def _record(
    trial: Trial, path: Path, fmt: str, plate: str, *, supersedes: str | None = None, note: str = ""
) -> str:
    relative = f"{path.parent.name}/{path.name}"
    record = FileRecord(relative, str(Method.QPCR), fmt, plate, supersedes=supersedes, note=note)
    trial.files.append(record)
    return relative


def _late_background(trial: Trial, plate: str, builder: PlateBuilder) -> None:
    events = trial.config.events
    for prefix, sample_id, target, ct in events.late_background_wells if events else ():
        if not plate.startswith(prefix):
            continue
        wells = [w for w in builder.wells if w.sample_name == sample_id and w.target == target]
        if wells:
            wells[1].ct = ct
            trial.log_event("late_background_well", plate=plate, sample_id=sample_id,
                            target=target, ct=ct)  # fmt: skip


def _screening_groups(trial: Trial) -> list[list[Sample]]:
    """Baselines collected in the same week share a screening plate."""
    groups: dict[str, list[Sample]] = {}
    for sample in trial.samples:
        if sample.role == Role.RECIPIENT_BASELINE and sample.collected_at is not None:
            groups.setdefault(SCREEN_BATCHING.key(sample.collected_at), []).append(sample)
    return [groups[key] for key in sorted(groups)]


def write_screening_plates(trial: Trial, out_dir: Path) -> None:
    """Product reference + each enrolled patient's genomes x every marker + RPP30, NTC."""
    rng = random.Random(f"{trial.config.seed}-qpcr-screen")
    wells_per_genome = len(SCREEN_TARGETS) * QPCR_REPLICATES
    per_plate = (QPCR_PLATE_WELLS - 2 * wells_per_genome) // (3 * wells_per_genome)
    for baselines in _screening_groups(trial):
        first = baselines[0].collected_at
        assert first is not None
        for number, start in enumerate(range(0, len(baselines), per_plate)):
            builder = PlateBuilder(trial, rng)
            builder.add(product_reference(), list(SCREEN_TARGETS))
            for baseline in baselines[start : start + per_plate]:
                pid = baseline.patient_id
                own = [baseline]
                if trial.patient[pid].three_genome:
                    own += [trial.sample(germline_id(pid)), trial.sample(hsct_donor_id(pid))]
                for sample in own:
                    builder.add(sample, list(SCREEN_TARGETS))
            builder.ntc("", list(SCREEN_TARGETS))
            simulate_cts(rng, builder.wells)
            ran = first + dt.timedelta(days=1, hours=6 + number)
            name = f"QS{ran:%y%m%d}{chr(65 + number)}"
            _late_background(trial, name, builder)
            path = out_dir / f"{ran.date().isoformat()}_{name}_marker_screen.txt"
            write_quantstudio(path, rng, builder.wells, name, EXPERIMENT_TYPE_SCREEN, ran)
            _record(trial, path, "quantstudio_text", name)


def _patient_targets(trial: Trial, pid: str) -> list[str]:
    design = trial.patient[pid]
    hsct = design.hsct_marker()
    return [*design.qpcr_markers(), *([hsct] if hsct else [])]


def _wells_needed(trial: Trial, sample: Sample, *, new_patient: bool) -> int:
    per_sample = QPCR_REPLICATES * (len(_patient_targets(trial, sample.patient_id)) + 1)
    return per_sample * (3 if new_patient else 1)


def follow_up_plates(trial: Trial, samples: list[Sample]) -> list[list[Sample]]:
    """Split a batch's samples over 384-well plates (patient controls counted per plate)."""
    capacity = QPCR_PLATE_WELLS - trial.config.qpcr_reserved_wells
    plates: list[list[Sample]] = [[]]
    used, seen = 0, set()
    for sample in samples:
        need = _wells_needed(trial, sample, new_patient=sample.patient_id not in seen)
        if used + need > capacity and plates[-1]:
            plates.append([])
            used, seen = 0, set()
            need = _wells_needed(trial, sample, new_patient=True)
        plates[-1].append(sample)
        seen.add(sample.patient_id)
        used += need
    return plates


def _build_follow_up(
    trial: Trial, rng: random.Random, plate_samples: list[Sample], ran: dt.date, ntc_name: str
) -> PlateBuilder:
    patients = sorted({s.patient_id for s in plate_samples})
    ink_targets = sorted({m for pid in patients for m in trial.patient[pid].qpcr_markers()})
    all_targets = sorted({t for pid in patients for t in _patient_targets(trial, pid)})
    builder = PlateBuilder(trial, rng)
    builder.add(calibrator_for(ran), [*ink_targets, REFERENCE_GENE], QPCR_CALIBRATOR_REPLICATES)
    builder.add(product_reference(), [*ink_targets, REFERENCE_GENE])
    for pid in patients:
        builder.add(trial.sample(f"{pid}-BL"), [*_patient_targets(trial, pid), REFERENCE_GENE])
        hsct = trial.patient[pid].hsct_marker()
        if hsct:
            builder.add(trial.sample(hsct_donor_id(pid)), [hsct, REFERENCE_GENE])
    for sample in plate_samples:
        builder.add(sample, [*_patient_targets(trial, sample.patient_id), REFERENCE_GENE])
    builder.ntc(ntc_name, [*all_targets, REFERENCE_GENE])
    simulate_cts(rng, builder.wells)
    return builder


def _bubble_well(trial: Trial, builder: PlateBuilder) -> int:
    """Index of the second marker replicate of the first post-dose sample >= 1 % on the plate."""
    for index, well in enumerate(builder.wells):
        sample = trial.find(well.sample_name)
        if sample is None or sample.role != Role.POST_DOSE or sample.pct_ink < 1.0:
            continue
        if well.target != REFERENCE_GENE:
            return index + 1
    msg = "the re-exported plate holds no post-dose sample >= 1 %"
    raise ValueError(msg)


def _designed_wells(trial: Trial, plate: str, builder: PlateBuilder) -> int | None:
    """Apply the plate's designed events; return the index of a bubble well, if any."""
    events = trial.config.events
    _late_background(trial, plate, builder)
    if events and plate in events.ntc_late_ct_plates:
        ntc = next(w for w in builder.wells if w.task == TASK_NTC and w.target == REFERENCE_GENE)
        ntc.ct = LATE_NTC_CT
        trial.log_event("ntc_late_ct", plate=plate, target=REFERENCE_GENE, ct=LATE_NTC_CT)
    if not events or plate != events.reexported_qpcr_plate:
        return None
    index = _bubble_well(trial, builder)
    well = builder.wells[index]
    assert well.ct is not None
    well.ct += BUBBLE_CT_SHIFT_CYCLES
    trial.log_event("bubble_well", plate=plate, sample_id=well.sample_name, target=well.target,
                    well_number=index + 1, ct_shift_cycles=BUBBLE_CT_SHIFT_CYCLES)  # fmt: skip
    return index


def write_follow_up_plates(trial: Trial, out_dir: Path) -> None:
    """Follow-up plates per batch: QuantStudio text, a few Bio-Rad CFX exports, one re-export."""
    rng = random.Random(f"{trial.config.seed}-qpcr")
    config = trial.config
    events = config.events
    cfx = dict(events.cfx_plates) if events else {}
    by_batch: dict[str, list[Sample]] = {}
    for sample in trial.samples:
        if sample.role == Role.POST_DOSE and sample.fraction is None and sample.collected_at:
            by_batch.setdefault(config.batching.key(sample.collected_at), []).append(sample)
    count = 0
    for key in sorted(by_batch):
        for index, plate_samples in enumerate(follow_up_plates(trial, by_batch[key])):
            plate = f"QP{config.batching.label(key)}{chr(65 + index)}"
            ran = config.batching.run_date(key, FOLLOW_UP_RUN_DAY)
            builder = _build_follow_up(
                trial, rng, plate_samples, ran, "NTC" if count % 3 else "H2O"
            )
            bubble = _designed_wells(trial, plate, builder)
            run_end = dt.datetime.combine(ran, dt.time(15, 2, 50), tzinfo=dt.UTC) + dt.timedelta(
                hours=2 * index
            )
            count += 1
            as_cfx = plate in cfx or (config.cfx_every and count % config.cfx_every == 0)
            if as_cfx:
                path = out_dir / f"{ran.isoformat()}_{plate}_cfx_quantification_cq_results.csv"
                write_cfx(
                    path, builder.wells, _run_info(plate, run_end) if cfx.get(plate) else None
                )
                relative = _record(trial, path, "cfx_csv", plate)
            else:
                path = out_dir / f"{ran.isoformat()}_{plate}_followup.txt"
                write_quantstudio(path, rng, builder.wells, plate, EXPERIMENT_TYPE_DDCT, run_end)
                relative = _record(trial, path, "quantstudio_text", plate)
            for sample in plate_samples:
                sample.methods.append(str(Method.QPCR))
                sample.files.append(relative)
            if bubble is not None:
                _write_reexport(trial, rng, out_dir, plate, builder, bubble, run_end, relative)


def _write_reexport(
    trial: Trial,
    rng: random.Random,
    out_dir: Path,
    plate: str,
    builder: PlateBuilder,
    bubble: int,
    run_end: dt.datetime,
    original: str,
) -> None:
    """The same plate exported again after the analyst omitted the bubble well."""
    exported = run_end + dt.timedelta(days=REEXPORT_DELAY_DAYS)
    path = out_dir / f"{exported.date().isoformat()}_{plate}_followup_reexport.txt"
    wells = omit_well(builder.wells, bubble)
    write_quantstudio(path, rng, wells, plate, EXPERIMENT_TYPE_DDCT, run_end, exported=exported)
    relative = _record(
        trial,
        path,
        "quantstudio_text",
        plate,
        supersedes=original,
        note="re-export of the same experiment after omitting one bubble well",
    )
    for sample in trial.samples:
        if original in sample.files:
            sample.files.append(relative)


def _run_info(plate: str, run_end: dt.datetime) -> list[tuple[str, str]]:
    started = run_end - dt.timedelta(hours=1, minutes=38)
    return [
        ("File Name", f"{plate}.pcrd"),
        ("Created By User", "chimera-lab"),
        ("Notes", ""),
        ("ID", plate),
        ("Run Started", started.strftime("%m/%d/%Y %H:%M:%S UTC")),
        ("Run Ended", run_end.strftime("%m/%d/%Y %H:%M:%S UTC")),
        ("Sample Vol", "20"),
        ("Lid Temp", "105"),
        ("Protocol File Name", "Chimera_indel_qPCR.prcl"),
        ("Plate Setup File Name", f"{plate}.pltd"),
        ("Base Serial Number", "CT012345"),
        ("Optical Head Serial Number", "785BR12345"),
        ("CFX Maestro Version", "2.3.0.0001"),
    ]
