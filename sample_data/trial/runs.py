"""STR runs: one GeneMapper export per batch, the product reference on every run.

Each run holds the product reference, the enrolment references of patients whose baseline falls
in the batch (baseline; buccal-swab germline and HSCT-donor DNA for three-genome patients) and
the batch's blood samples and sorted fractions. DNA-input failures are not STR-typed.
"""

from __future__ import annotations

import random
from pathlib import Path

from .controls import product_reference
from .genetics import Genotype
from .model import Sample
from .str_export import (
    STR_REFERENCE_SIGNAL_RFU,
    STR_TOTAL_SIGNAL_RFU,
    Peak,
    simulate_str_peaks,
    write_genotypes_table,
    write_sizing_table,
)
from .trial import THIRD_PARTY, FileRecord, Trial
from .vocab import Method, Role

STR_CONTAMINATION_FRACTION = 0.25
STR_RUN_DAY = 3
REFERENCE_ROLES = (Role.RECIPIENT_BASELINE, Role.RECIPIENT_GERMLINE, Role.HSCT_DONOR)


def mixture(trial: Trial, sample: Sample) -> list[tuple[Genotype, float]]:
    """The genomes in a sample's DNA and their fractions (+ third-party DNA if contaminated)."""
    if sample.role in (Role.DONOR_REFERENCE, Role.CALIBRATOR):
        return [(trial.genotypes["product"], 1.0)]
    genomes = [(genotype, share) for _, genotype, share in trial.genomes_of(sample)]
    if sample.str_contaminated:
        c = STR_CONTAMINATION_FRACTION
        genomes = [(g, share * (1 - c)) for g, share in genomes]
        genomes.append((trial.genotypes[THIRD_PARTY], c))
    return genomes


def _batches(trial: Trial) -> dict[str, list[Sample]]:
    batching = trial.config.batching
    by_batch: dict[str, list[Sample]] = {}
    baselines = {s.patient_id: s for s in trial.samples if s.role == Role.RECIPIENT_BASELINE}
    for sample in trial.samples:
        if sample.qc_failure:
            continue
        anchor = baselines[sample.patient_id] if sample.collected_at is None else sample
        if anchor.collected_at is None:
            continue
        by_batch.setdefault(batching.key(anchor.collected_at), []).append(sample)
    for members in by_batch.values():
        members.sort(key=lambda s: (s.role not in REFERENCE_ROLES, s.patient_id))
    return by_batch


def write_str_runs(trial: Trial, out_dir: Path) -> None:
    """One GeneMapper export per batch (split at the run capacity)."""
    rng = random.Random(f"{trial.config.seed}-str")
    config = trial.config
    reference = product_reference()
    for key, members in sorted(_batches(trial).items()):
        capacity = config.str_run_capacity
        chunks = [members[i : i + capacity] for i in range(0, len(members), capacity)]
        for index, chunk in enumerate(chunks):
            run_name = (
                f"GM{config.batching.label(key)}{'' if len(chunks) == 1 else chr(65 + index)}"
            )
            entries: list[tuple[str, list[Peak]]] = [
                (
                    reference.sample_id,
                    simulate_str_peaks(
                        rng, mixture(trial, reference), rng.uniform(*STR_REFERENCE_SIGNAL_RFU)
                    ),
                )
            ]
            for sample in chunk:
                signal = rng.uniform(*STR_TOTAL_SIGNAL_RFU)
                entries.append(
                    (sample.sample_id, simulate_str_peaks(rng, mixture(trial, sample), signal))
                )
            ran = config.batching.run_date(key, STR_RUN_DAY)
            genotypes = key in config.genotypes_table_batches
            kind = "genotypes" if genotypes else "sizing"
            path = out_dir / f"{ran.isoformat()}_{run_name}_{kind}.txt"
            if genotypes:
                write_genotypes_table(path, run_name, entries, rng)
            else:
                write_sizing_table(path, entries, rng, fsa_names=ran >= config.fsa_names_from)
            relative = f"{out_dir.name}/{path.name}"
            trial.files.append(
                FileRecord(relative, str(Method.STR), f"genemapper_{kind}", run_name)
            )
            for sample in chunk:
                sample.methods.append(str(Method.STR))
                sample.files.append(relative)
