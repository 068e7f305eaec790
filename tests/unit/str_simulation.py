"""A seeded STR mixture simulator and peak builders for the STR tests (methods.md 2.1, 2.6).

Independent of ``sample_data/`` (and of the code under test): genotypes are drawn from peaked
allele distributions, so genomes often hold neighbouring alleles and back stutter lands on
informative alleles as in real runs. Each sample's peaks follow the signal model
s(x) = T_L * Σ_G w_G * d_G(x) / 2 with locus-to-locus amplification noise, heterozygote
imbalance, per-locus back stutter of 3-11 % at n-1 (varying from peak to peak), a little
forward stutter at n+1, measurement noise and a 50 RFU analytical threshold.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from chimera.detect import detect
from chimera.parsers.genemapper import parse_genemapper
from schemas.vocab import Role

THRESHOLD_RFU = 50.0
AREA_PER_HEIGHT = 6.5
LOCUS_NOISE = 0.15
IMBALANCE = 0.06
STUTTER_NOISE = 0.2
FORWARD_RATIO = 0.01
MEASUREMENT_NOISE = 0.03


@dataclass(frozen=True)
class SimLocus:
    """One simulated locus: allele ladder, allele weights and mean back-stutter ratio."""

    name: str
    alleles: tuple[str, ...]
    back_stutter: float
    start_bp: float
    repeat_bp: int


def _ladder(low: int, high: int, extra: Sequence[str] = ()) -> tuple[str, ...]:
    alleles = [str(a) for a in range(low, high + 1)] + list(extra)
    return tuple(sorted(alleles, key=float))


_PANEL = [
    ("D3S1358", _ladder(12, 19), 115.0, 4),
    ("TH01", _ladder(5, 10, ["9.3"]), 155.0, 4),
    ("D21S11", _ladder(27, 33, ["30.2", "31.2"]), 205.0, 4),
    ("D18S51", _ladder(12, 20), 290.0, 4),
    ("Penta E", _ladder(5, 17), 380.0, 5),
    ("D5S818", _ladder(9, 14), 120.0, 4),
    ("D13S317", _ladder(8, 14), 170.0, 4),
    ("D7S820", _ladder(7, 13), 215.0, 4),
    ("D16S539", _ladder(8, 14), 265.0, 4),
    ("CSF1PO", _ladder(9, 13), 320.0, 4),
    ("Penta D", _ladder(8, 14), 390.0, 5),
    ("vWA", _ladder(14, 19), 125.0, 4),
    ("D8S1179", _ladder(10, 16), 205.0, 4),
    ("TPOX", _ladder(8, 11), 265.0, 4),
    ("FGA", _ladder(19, 26), 320.0, 4),
]


def make_loci(rng: random.Random) -> list[SimLocus]:
    """The 15 autosomal PowerPlex 16 loci with a back-stutter ratio drawn from 3-11 % each."""
    return [
        SimLocus(name, alleles, rng.uniform(0.03, 0.11), start, repeat)
        for name, alleles, start, repeat in _PANEL
    ]


Genotype = dict[str, tuple[str, str]]


def draw_genotype(rng: random.Random, loci: Sequence[SimLocus]) -> Genotype:
    """Two alleles per locus from a peaked distribution (neighbouring alleles are common)."""
    genotype = {}
    for locus in loci:
        centre = (len(locus.alleles) - 1) / 2
        weights = [math.exp(-(((i - centre) / 1.6) ** 2) / 2) for i in range(len(locus.alleles))]
        pair = rng.choices(locus.alleles, weights=weights, k=2)
        genotype[locus.name] = (pair[0], pair[1])
    return genotype


def _shift(allele: str, repeats: int) -> str:
    whole, dot, suffix = allele.partition(".")
    return f"{int(whole) + repeats}{dot}{suffix}"


def _lognormal(rng: random.Random, sd: float) -> float:
    return math.exp(rng.gauss(0.0, sd))


def simulate_peaks(
    rng: random.Random,
    sample_id: str,
    loci: Sequence[SimLocus],
    mixture: Sequence[tuple[float, Genotype]],
    *,
    total: float = 40_000.0,
) -> list[dict[str, object]]:
    """Peak rows (``StrPeaks`` columns) of one sample: genome weights ``w_G`` with genotypes."""
    rows: list[dict[str, object]] = []
    for index, locus in enumerate(loci):
        locus_total = total * math.exp(-0.05 * index) * _lognormal(rng, LOCUS_NOISE)
        amount: dict[str, float] = {}
        for weight, genotype in mixture:
            for allele in genotype[locus.name]:  # each copy carries half the genome's signal
                amount[allele] = amount.get(allele, 0.0) + weight * locus_total / 2
        for allele in amount:  # heterozygote imbalance: each amplicon amplifies a little apart
            amount[allele] *= _lognormal(rng, IMBALANCE)
        signal = dict(amount)
        for allele, value in amount.items():
            back = value * locus.back_stutter * _lognormal(rng, STUTTER_NOISE)
            signal[_shift(allele, -1)] = signal.get(_shift(allele, -1), 0.0) + back
            forward = value * FORWARD_RATIO * _lognormal(rng, STUTTER_NOISE)
            signal[_shift(allele, 1)] = signal.get(_shift(allele, 1), 0.0) + forward
        for allele, value in signal.items():
            area = value * _lognormal(rng, MEASUREMENT_NOISE)
            height = area / AREA_PER_HEIGHT * _lognormal(rng, 0.02)
            if height < THRESHOLD_RFU:
                continue
            repeats = float(allele) - float(locus.alleles[0])
            rows.append(
                {
                    "sample_id": sample_id,
                    "marker": locus.name,
                    "allele": allele,
                    "size_bp": locus.start_bp + locus.repeat_bp * repeats,
                    "height_rfu": height,
                    "area_rfu": area,
                    "dye": "B",
                }
            )
    return rows


@dataclass(frozen=True)
class SimTrial:
    """Peaks and manifest rows of a simulated two-genome trial, with the truth per sample."""

    peaks: pl.DataFrame
    samples: pl.DataFrame
    truth_pct: Mapping[str, float]


LEVELS_PCT = (0.0, 0.0, 1.0, 2.0, 3.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0)


def simulate_trial(
    seed: int,
    *,
    patients: int = 10,
    levels_pct: Sequence[float] = LEVELS_PCT,
    reference_runs: int = 3,
) -> SimTrial:
    """One product genome, ``patients`` patients with a baseline and one sample per level.

    The product reference is re-run on ``reference_runs`` runs under the same sample id (as
    labs do); every run is its own file (``source_sha256``).
    """
    rng = random.Random(seed)
    loci = make_loci(rng)
    product = draw_genotype(rng, loci)
    rows: list[dict[str, object]] = []
    manifest: list[tuple[str, str, str, str]] = [("INK-REF", "LOT1", "donor_reference", "LOT1")]
    truth: dict[str, float] = {}
    for run in range(reference_runs):
        for row in simulate_peaks(rng, "INK-REF", loci, [(1.0, product)]):
            rows.append({**row, "source_sha256": f"run{run:02d}"})
    for p in range(patients):
        patient = f"P{p + 1:02d}"
        genotype = draw_genotype(rng, loci)
        manifest.append((f"{patient}-BL", patient, "recipient_baseline", "LOT1"))
        for row in simulate_peaks(rng, f"{patient}-BL", loci, [(1.0, genotype)]):
            rows.append({**row, "source_sha256": f"run{p % reference_runs:02d}"})
        for i, pct in enumerate(levels_pct):
            sample_id = f"{patient}-S{i + 1:02d}"
            manifest.append((sample_id, patient, "post_dose", "LOT1"))
            truth[sample_id] = pct
            mixture = [(pct / 100, product), (1 - pct / 100, genotype)]
            for row in simulate_peaks(rng, sample_id, loci, mixture):
                rows.append({**row, "source_sha256": f"run{(p + i) % reference_runs:02d}"})
    peaks = pl.DataFrame(rows).with_columns(
        source_row=pl.int_range(1, pl.len() + 1, dtype=pl.Int32)
    )
    samples = pl.DataFrame(
        manifest, schema=["sample_id", "patient_id", "role", "product_lot"], orient="row"
    )
    return SimTrial(peaks, samples, truth)


@dataclass(frozen=True)
class Accuracy:
    """Accuracy of results against simulated truth for samples at or above a level."""

    n: int
    median_bias_pp: float
    within_1pp: float
    worst_pp: float


def accuracy(results: pl.DataFrame, truth: Mapping[str, float], *, min_pct: float) -> Accuracy:
    """Median bias and share within 1 pp of truth; a missing value counts as a miss."""
    errors = []
    values = dict(zip(results["sample_id"], results["pct_ink"], strict=True))
    for sample_id, true in truth.items():
        if true < min_pct:
            continue
        value = values.get(sample_id)
        errors.append(math.inf if value is None else value - true)
    finite = sorted(e for e in errors if math.isfinite(e))
    median = statistics.median(finite) if finite else math.inf
    within = sum(abs(e) <= 1.0 for e in errors) / len(errors)
    return Accuracy(len(errors), median, within, max(abs(e) for e in errors))


def profile_peaks(
    sample_id: str, loci: Mapping[str, Mapping[str, float]], *, source: str = "run01"
) -> pl.DataFrame:
    """``StrPeaks`` rows (+ ``source_sha256``) with the given areas; height = area / 6.5."""
    rows = [
        {
            "sample_id": sample_id,
            "marker": marker,
            "allele": allele,
            "size_bp": 100.0 + i,
            "height_rfu": area / AREA_PER_HEIGHT,
            "area_rfu": area,
            "dye": "B",
            "source_row": i + 1,
            "source_sha256": source,
        }
        for i, (marker, allele, area) in enumerate(
            (m, a, v) for m, alleles in loci.items() for a, v in alleles.items()
        )
    ]
    return pl.DataFrame(rows).with_columns(pl.col("source_row").cast(pl.Int32))


def manifest(rows: Sequence[tuple[str, str, str, str]]) -> pl.DataFrame:
    """Samples frame from (sample_id, patient_id, role, product_lot) rows."""
    return pl.DataFrame(
        list(rows), schema=["sample_id", "patient_id", "role", "product_lot"], orient="row"
    )


def real_profile(real_exports: Path, name: str, sample_id: str) -> pl.DataFrame:
    """A real GeneMapper export (``real-exports/genemapper/<name>``) as one sample's peaks."""
    data = (real_exports / "genemapper" / name).read_bytes()
    return parse_genemapper(detect(data, file_name=name)).frame.with_columns(
        sample_id=pl.lit(sample_id), source_sha256=pl.lit(name)
    )


SINGLE_DONOR_SAMPLES = manifest(
    [
        ("INK", "LOT1", Role.DONOR_REFERENCE, "LOT1"),
        ("PRE", "P1", Role.RECIPIENT_BASELINE, "LOT1"),
        ("S1", "P1", Role.POST_DOSE, "LOT1"),
    ]
)
"""Product reference INK, patient baseline PRE and post-dose S1 of one two-genome patient."""
