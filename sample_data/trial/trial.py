"""The trial object: configuration, batching of samples into runs, genomes, samples, file list."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from .genetics import (
    PRODUCT_MARKER_COPIES,
    PRODUCT_STR_GENOTYPE,
    Genotype,
    informative_loci,
    random_genotype,
    stutter_position_loci,
    unique_allele_loci,
)
from .model import Sample, build_samples, dose_times
from .protocol import (
    SPECIMEN_GERMLINE,
    SPECIMEN_HSCT_DONOR,
    PatientDesign,
    germline_id,
    hsct_donor_id,
    validate_design,
)
from .vocab import GenomeModel, Role

MIN_INFORMATIVE_LOCI = 8
MIN_THREE_GENOME_UNIQUE_LOCI = 5
THIRD_PARTY = "THIRD_PARTY"


@dataclass(frozen=True)
class Batching:
    """How samples are grouped into runs: by calendar month (``days=None``) or by N-day blocks."""

    days: int | None = None
    origin: dt.date = dt.date(2025, 1, 6)

    def key(self, moment: dt.datetime) -> str:
        """The batch a collection time belongs to (sortable text)."""
        if self.days is None:
            return moment.strftime("%Y-%m")
        index = (moment.date() - self.origin).days // self.days
        return f"{index:04d}"

    def start(self, key: str) -> dt.date:
        """First day of a batch."""
        if self.days is None:
            year, month = (int(x) for x in key.split("-"))
            return dt.date(year, month, 1)
        return self.origin + dt.timedelta(days=int(key) * self.days)

    def label(self, key: str) -> str:
        """Short text for plate ids: ``2506`` (month) or ``250602`` (block start)."""
        return self.start(key).strftime("%y%m" if self.days is None else "%y%m%d")

    def run_date(self, key: str, offset_days: int) -> dt.date:
        """The day the batch is run: ``offset_days`` into the following month / block."""
        start = self.start(key)
        if self.days is None:
            year, month = (
                (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
            )
            return dt.date(year, month, 1) + dt.timedelta(days=offset_days - 1)
        return start + dt.timedelta(days=self.days + offset_days - 1)


@dataclass(frozen=True)
class DesignedEvents:
    """The lab events of the committed trial that decide a file's fate (README: designed fates)."""

    reexported_qpcr_plate: str
    reanalysed_ddpcr_plate: str
    truncated_ddpcr_plate: str
    repeat_ddpcr_sample: str
    late_background_wells: tuple[tuple[str, str, str, float], ...]
    """(plate prefix, sample id, target, Ct) of baseline wells with a late background Ct."""
    ntc_late_ct_plates: tuple[str, ...]
    ntc_false_positive_droplets: tuple[tuple[str, int], ...]
    baseline_false_positive: tuple[str, str]
    cfx_plates: tuple[tuple[str, bool], ...]
    """(qPCR plate id, with run-information rows) written as Bio-Rad CFX exports."""


@dataclass(frozen=True)
class TrialConfig:
    """Everything that distinguishes the committed trial from a benchmark history."""

    name: str
    seed: int
    patients: list[PatientDesign]
    batching: Batching
    str_run_capacity: int = 400
    qpcr_reserved_wells: int = 64
    ddpcr_reserved_wells: int = 24
    genotypes_table_batches: tuple[str, ...] = ()
    fsa_names_from: dt.date = dt.date(2025, 10, 1)
    quantasoft_before: dt.date = dt.date(2025, 5, 1)
    events: DesignedEvents | None = None
    cfx_every: int = 0
    """History only: every n-th follow-up qPCR plate is a CFX export (0 = none)."""


@dataclass(frozen=True)
class FileRecord:
    """One written file and its designed fate."""

    path: str
    method: str
    export_format: str
    plate_id: str
    fate: str = "accepted"
    supersedes: str | None = None
    reason_contains: str | None = None
    note: str = ""


@dataclass
class Trial:
    """Everything generated: patients, genomes, doses, samples and the files written."""

    config: TrialConfig
    patients: list[PatientDesign]
    genotypes: dict[str, Genotype]
    doses: dict[str, list[dt.datetime]]
    samples: list[Sample]
    files: list[FileRecord] = field(default_factory=list)
    events: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    """Designed lab events as they were applied (design.json ``designed_events``)."""
    patient: dict[str, PatientDesign] = field(init=False)
    """Designs by patient id."""
    _by_id: dict[str, Sample] = field(init=False)

    def __post_init__(self) -> None:
        self.patient = {p.patient_id: p for p in self.patients}
        self._by_id = {s.sample_id: s for s in self.samples}

    def log_event(self, kind: str, **record: object) -> None:
        """Record one applied designed event."""
        self.events.setdefault(kind, []).append(record)

    def sample(self, sample_id: str) -> Sample:
        """A sample by id."""
        return self._by_id[sample_id]

    def find(self, sample_id: str) -> Sample | None:
        """A sample by id, None when the id is not a trial sample (controls, NTC)."""
        return self._by_id.get(sample_id)

    def genomes_of(self, sample: Sample) -> list[tuple[str, Genotype, float]]:
        """(genome name, STR genotype, DNA fraction) of a sample's genomes."""
        ink, hsct, recipient = sample.composition()
        pid = sample.patient_id
        out = [("product", self.genotypes["product"], ink)]
        if hsct > 0:
            out.append(("hsct_donor", self.genotypes[f"{pid}:hsct_donor"], hsct))
        if recipient > 0:
            out.append(("recipient", self.genotypes[f"{pid}:germline"], recipient))
        return [g for g in out if g[2] > 0]

    def marker_copies(self, sample: Sample, target: str) -> float:
        """Mean copies of ``target`` per genome of the sample's DNA (reference gene: 2)."""
        if target not in PRODUCT_MARKER_COPIES:
            return 2.0
        ink, hsct, recipient = sample.composition()
        copies = ink * PRODUCT_MARKER_COPIES[target]
        if sample.patient_id in self.patient:
            design = self.patient[sample.patient_id]
            copies += recipient * design.germline_markers[target]
            if design.hsct_donor_markers is not None:
                copies += hsct * design.hsct_donor_markers[target]
        return copies


def _genotypes(rng: random.Random, patient: PatientDesign) -> dict[str, Genotype]:
    """Germline (and HSCT donor) STR genotypes with enough informative loci.

    No constraint keeps stutter away from informative alleles; every patient must instead have
    at least one locus where an iNK-only allele sits at the n-1 stutter position of a patient
    allele (the case stutter correction must handle).
    """
    product = PRODUCT_STR_GENOTYPE
    donor_sex = "F" if patient.sex == "M" else "M"
    while True:
        germline = random_genotype(rng, patient.sex)
        genomes = [germline]
        if patient.three_genome:
            genomes.append(random_genotype(rng, donor_sex))
            enough = (
                len(unique_allele_loci(product, genomes)) >= MIN_INFORMATIVE_LOCI - 2
                and len(unique_allele_loci(genomes[1], [product, germline]))
                >= MIN_THREE_GENOME_UNIQUE_LOCI
            )
        else:
            enough = len(informative_loci(product, genomes)) >= MIN_INFORMATIVE_LOCI
        if enough and stutter_position_loci(product, genomes):
            break
    found = {f"{patient.patient_id}:germline": germline}
    if patient.three_genome:
        found[f"{patient.patient_id}:hsct_donor"] = genomes[1]
    return found


def _source_genomes(patient: PatientDesign, baseline: Sample) -> list[Sample]:
    """The buccal-swab germline and the archived HSCT-donor DNA of a three-genome patient."""
    pid = patient.patient_id
    model = str(GenomeModel.THREE_GENOME)
    germline = Sample(
        germline_id(pid),
        pid,
        str(Role.RECIPIENT_GERMLINE),
        baseline.collected_at,
        specimen=SPECIMEN_GERMLINE,
        specimen_normalised=SPECIMEN_GERMLINE,
        study_day=baseline.study_day,
        timepoint="screening",
        genome_model=model,
        pct_recipient=100.0,
    )
    donor = Sample(
        hsct_donor_id(pid),
        pid,
        str(Role.HSCT_DONOR),
        None,
        specimen=SPECIMEN_HSCT_DONOR,
        specimen_normalised=SPECIMEN_HSCT_DONOR,
        timepoint="screening",
        genome_model=model,
        pct_hsct_donor=100.0,
        pct_recipient=0.0,
    )
    return [germline, donor]


def build_trial(config: TrialConfig) -> Trial:
    """Patients, genomes, dose times and every sample with its truth."""
    rng_genomes = random.Random(f"{config.seed}-genotypes")
    rng_schedule = random.Random(f"{config.seed}-schedule")
    genotypes: dict[str, Genotype] = {"product": dict(PRODUCT_STR_GENOTYPE)}
    doses: dict[str, list[dt.datetime]] = {}
    samples: list[Sample] = []
    for patient in config.patients:
        validate_design(patient)
        genotypes |= _genotypes(rng_genomes, patient)
        doses[patient.patient_id] = dose_times(rng_schedule, patient)
        own = build_samples(patient, doses[patient.patient_id], rng_schedule)
        if patient.three_genome:
            own[1:1] = _source_genomes(patient, own[0])
        samples.extend(own)
    genotypes[THIRD_PARTY] = random_genotype(rng_genomes, "M")
    return Trial(config, config.patients, genotypes, doses, samples)
