"""STR fragment analysis: peak areas of a DNA mixture and GeneMapper Sizing/Genotypes tables.

Per locus s(x) = T * sum_G w_G d_G(x)/2 (methods.md 2.1) with heterozygote imbalance and area
noise; every true allele then throws back stutter at n-1 (locus ratio x lognormal noise) and a
little forward stutter at n+1, which add to whatever sits there (composite peaks, also on
informative alleles). Peaks below the 50 RFU analysis threshold are not exported.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .genetics import (
    AMEL,
    AUTOSOMAL_LOCI,
    DYE_ORDER,
    LOCI,
    STR_PANEL,
    Genotype,
    Locus,
    allele_label,
    allele_size_bp,
    shift_allele,
)
from .rand import lognormal_factor

STR_ANALYSIS_THRESHOLD_RFU = 50
STR_TOTAL_SIGNAL_RFU = (22_000.0, 42_000.0)
"""T: summed peak area per locus before the size-dependent degradation factor."""
STR_REFERENCE_SIGNAL_RFU = (25_000.0, 35_000.0)
STR_AREA_NOISE_SD_LOG = 0.05
STR_HET_IMBALANCE_SD_LOG = 0.03
STR_LOCUS_SIGNAL_SD_LOG = 0.08
STR_BACK_STUTTER_NOISE_SD_LOG = 0.12
STR_FORWARD_STUTTER_NOISE_SD_LOG = 0.25
STR_AREA_PER_HEIGHT = (6.0, 8.0)
STR_SIZE_JITTER_SD_BP = 0.08
STR_GENOTYPES_TABLE_SLOTS = 8


@dataclass
class Peak:
    """One exported GeneMapper peak."""

    dye: str
    marker: str
    allele: str
    size_bp: float
    height_rfu: int
    area_rfu: int


def _locus_areas(
    rng: random.Random, locus: Locus, mixture: list[tuple[Genotype, float]], signal_rfu: float
) -> dict[str, float]:
    """True allele areas of one locus plus their back (n-1) and forward (n+1) stutter."""
    dosage: dict[str, float] = {}
    for genotype, weight in mixture:
        for allele in genotype[locus.name]:
            dosage[allele] = dosage.get(allele, 0.0) + weight / 2.0
    parents: dict[str, float] = {}
    for allele, share in dosage.items():
        if share <= 0:
            continue
        area = signal_rfu * share * lognormal_factor(rng, STR_HET_IMBALANCE_SD_LOG)
        parents[allele] = area * lognormal_factor(rng, STR_AREA_NOISE_SD_LOG)
    areas = dict(parents)
    if locus.name == AMEL:
        return areas
    for allele, area in parents.items():
        for repeats, ratio, noise in (
            (-1, locus.back_stutter_ratio, STR_BACK_STUTTER_NOISE_SD_LOG),
            (1, locus.forward_stutter_ratio, STR_FORWARD_STUTTER_NOISE_SD_LOG),
        ):
            position = shift_allele(locus, allele, repeats)
            if position is not None:
                stutter = area * ratio * lognormal_factor(rng, noise)
                areas[position] = areas.get(position, 0.0) + stutter
    return areas


def simulate_str_peaks(
    rng: random.Random, mixture: list[tuple[Genotype, float]], total_signal_rfu: float
) -> list[Peak]:
    """Exported peaks of one sample (alleles, stutter, off-ladder and unbinned noise peaks)."""
    peaks: list[Peak] = []
    occupied: list[tuple[str, float]] = []
    for locus in LOCI:
        midpoint = allele_size_bp(locus, next(iter(locus.alleles)))
        degradation = 1.15 - 0.3 * min(max((midpoint - 100.0) / 300.0, 0.0), 1.0)
        signal = total_signal_rfu * degradation * lognormal_factor(rng, STR_LOCUS_SIGNAL_SD_LOG)
        for allele, area in sorted(_locus_areas(rng, locus, mixture, signal).items()):
            height = area / rng.uniform(*STR_AREA_PER_HEIGHT)
            if height < STR_ANALYSIS_THRESHOLD_RFU:
                continue
            size = allele_size_bp(locus, allele) + rng.gauss(0.0, STR_SIZE_JITTER_SD_BP)
            peaks.append(
                Peak(
                    locus.dye,
                    locus.name,
                    allele_label(locus, allele),
                    round(size, 2),
                    round(height),
                    round(area),
                )
            )
            occupied.append((locus.dye, size))
    peaks.extend(_noise_peaks(rng, occupied))
    return peaks


def _noise_peaks(rng: random.Random, occupied: list[tuple[str, float]]) -> list[Peak]:
    """A few off-ladder (``OL``) peaks inside marker ranges and unbinned peaks outside them."""
    noise: list[Peak] = []

    def free(dye: str, size: float) -> bool:
        return all(d != dye or abs(s - size) > 2.0 for d, s in occupied)

    for _ in range(rng.randint(0, 2)):
        locus = rng.choice(AUTOSOMAL_LOCI)
        low = allele_size_bp(locus, str(locus.ladder_min))
        high = allele_size_bp(locus, str(locus.ladder_max))
        size = rng.uniform(low, high)
        if free(locus.dye, size):
            area = rng.uniform(350.0, 900.0)
            noise.append(
                Peak(
                    locus.dye,
                    locus.name,
                    "OL",
                    round(size, 2),
                    round(area / rng.uniform(6.0, 8.0)),
                    round(area),
                )
            )
            occupied.append((locus.dye, size))
    for _ in range(rng.randint(1, 3)):
        dye = rng.choice(DYE_ORDER)
        size = rng.uniform(60.0, 110.0) if rng.random() < 0.5 else rng.uniform(110.0, 450.0)
        if free(dye, size) and not _inside_marker(dye, size):
            area = rng.uniform(400.0, 2200.0)
            noise.append(
                Peak(dye, "", "", round(size, 2), round(area / rng.uniform(6.0, 10.0)), round(area))
            )
            occupied.append((dye, size))
    return noise


def _inside_marker(dye: str, size: float) -> bool:
    for locus in AUTOSOMAL_LOCI:
        if locus.dye != dye:
            continue
        low = allele_size_bp(locus, str(locus.ladder_min)) - 2.0
        high = allele_size_bp(locus, str(locus.ladder_max)) + 2.0
        if low <= size <= high:
            return True
    return dye == "Y" and 100.0 <= size <= 114.0


def data_point(rng: random.Random, size_bp: float) -> int:
    """Scan number of a peak (linear size calibration fitted to the real sizing tables)."""
    return round(865.0 + 9.69 * size_bp + rng.gauss(0.0, 1.5))


def _size_text(size_bp: float) -> str:
    text = f"{size_bp:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def well_name(index: int) -> str:
    """96-well position, column-major (A01, B01, ..., H01, A02, ...)."""
    return f"{'ABCDEFGH'[index % 8]}{index // 8 + 1:02d}"


def write_sizing_table(
    path: Path, entries: list[tuple[str, list[Peak]]], rng: random.Random, *, fsa_names: bool
) -> None:
    """GeneMapper Sizing Table: TAB, CRLF, trailing TAB, ``"B,1"`` dye/peak ids, per sample.

    ``fsa_names``: the ``Sample File Name`` is the run file (``A01_P01-D004.fsa``), else the id.
    """
    header = [
        "Dye/Sample Peak",
        "Sample File Name",
        "Marker",
        "Allele",
        "Size",
        "Height",
        "Area",
        "Data Point",
    ]
    lines = ["\t".join(header) + "\t"]
    for index, (sample_id, peaks) in enumerate(entries):
        name = f"{well_name(index)}_{sample_id}.fsa" if fsa_names else sample_id
        for dye in DYE_ORDER:
            dye_peaks = sorted((p for p in peaks if p.dye == dye), key=lambda p: p.size_bp)
            for number, peak in enumerate(dye_peaks, start=1):
                row = [
                    f'"{dye},{number}"',
                    name,
                    peak.marker,
                    peak.allele,
                    _size_text(peak.size_bp),
                    str(peak.height_rfu),
                    str(peak.area_rfu),
                    str(data_point(rng, peak.size_bp)),
                ]
                lines.append("\t".join(row) + "\t")
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))


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
    for index, (sample_id, peaks) in enumerate(entries):
        for locus in LOCI:
            called = [p for p in peaks if p.marker == locus.name]
            called = sorted(called, key=lambda p: -p.height_rfu)[:STR_GENOTYPES_TABLE_SLOTS]
            called.sort(key=lambda p: p.size_bp)
            pad = [""] * (STR_GENOTYPES_TABLE_SLOTS - len(called))
            row = [
                f"{run_name}_{sample_id}_{well_name(index)}.fsa",
                sample_id,
                run_name,
                STR_PANEL,
                locus.name,
                locus.dye,
                "",
            ]
            row += [p.allele for p in called] + pad
            row += [_size_text(p.size_bp) for p in called] + pad
            row += [str(p.height_rfu) for p in called] + pad
            row += [f"{float(p.area_rfu):.1f}" for p in called] + pad
            row += [str(data_point(rng, p.size_bp)) for p in called] + pad
            row += [""] * (2 * STR_GENOTYPES_TABLE_SLOTS)
            many = len([p for p in called if p.allele not in ("OL", "X", "Y")]) > 2
            quality = rng.uniform(0.35, 0.6) if many else rng.uniform(0.85, 0.99)
            row += [
                "",
                "false",
                "false",
                "false",
                "0.0",
                "0.0",
                "0.0",
                "0.0",
                "0.0",
                "0.0",
                "0.0",
                "0.0",
                "0.0",
                "1.0" if many else "0.0",
                "0.0",
                "-2.0",
                "-2.0",
                "-2.0",
                "-2.0",
                "0.0",
                f"{quality:.4f}",
                "",
                "",
                "",
                "",
            ]
            lines.append("\t".join(row) + "\t")
    path.write_bytes(("\n".join(lines) + "\n").encode("ascii"))
