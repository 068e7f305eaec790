"""Genomes: the STR panel (PowerPlex 16 names), genotypes, and the PCR marker panel.

Back-stutter ratios (stutter area / parent area) span 3-11 % by locus as Identifiler's do
(methods.md 2.6, Ann Clin Lab Sci 2008); forward (n+1) stutter is 0.5-1.5 %.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

Genotype = dict[str, tuple[str, str]]
AMEL = "AMEL"


@dataclass(frozen=True)
class Locus:
    """One STR locus: dye, size model, ladder range, allele frequencies and stutter ratios."""

    name: str
    dye: str
    offset_bp: float
    repeat_bp: int
    ladder_min: int
    ladder_max: int
    alleles: dict[str, float]
    back_stutter_ratio: float
    forward_stutter_ratio: float
    microvariant_bins: tuple[str, ...] = ()


LOCI = (
    Locus("D3S1358", "B", 64.2, 4, 12, 20, {"13": 3, "14": 12, "15": 26, "16": 25, "17": 20, "18": 12}, 0.095, 0.012),
    Locus("TH01", "B", 138.0, 4, 4, 13, {"6": 23, "7": 19, "8": 12, "9": 15, "9.3": 30, "10": 1}, 0.032, 0.005, ("9.3", "10.3")),
    Locus(
        "D21S11", "B", 103.2, 4, 24, 38,
        {"27": 4, "28": 16, "29": 20, "30": 25, "30.2": 3, "31": 7, "31.2": 9, "32.2": 11, "33.2": 5},
        0.085, 0.010, ("28.2", "29.2", "30.2", "31.2", "32.2", "33.2", "34.2"),
    ),
    Locus(
        "D18S51", "B", 249.0, 4, 8, 27,
        {"12": 12, "13": 13, "14": 16, "15": 15, "16": 12, "17": 12, "18": 8, "19": 5, "20": 4, "21": 3},
        0.105, 0.015,
    ),
    Locus(
        "Penta E", "B", 352.5, 5, 5, 24,
        {"5": 7, "7": 18, "10": 7, "11": 9, "12": 17, "13": 10, "14": 7, "15": 6, "16": 5, "17": 5, "18": 3},
        0.045, 0.006,
    ),
    Locus("D5S818", "G", 86.7, 4, 7, 16, {"9": 4, "10": 5, "11": 36, "12": 35, "13": 15, "14": 5}, 0.072, 0.009),
    Locus("D13S317", "G", 143.9, 4, 7, 15, {"8": 10, "9": 7, "10": 5, "11": 30, "12": 30, "13": 12, "14": 6}, 0.068, 0.008),
    Locus("D7S820", "G", 188.5, 4, 6, 14, {"8": 15, "9": 15, "10": 27, "11": 20, "12": 15, "13": 3, "14": 5}, 0.064, 0.008),
    Locus("D16S539", "G", 243.0, 4, 5, 15, {"9": 11, "10": 6, "11": 32, "12": 32, "13": 17, "14": 2}, 0.078, 0.010),
    Locus("CSF1PO", "G", 293.0, 4, 6, 15, {"9": 2, "10": 25, "11": 30, "12": 35, "13": 7, "14": 1}, 0.074, 0.009),
    Locus("Penta D", "G", 353.2, 5, 2, 17, {"8": 3, "9": 20, "10": 13, "11": 16, "12": 20, "13": 18, "14": 6, "15": 4}, 0.034, 0.005),
    Locus(AMEL, "Y", 0.0, 0, 0, 0, {"X": 1}, 0.0, 0.0),
    Locus("vWA", "Y", 82.3, 4, 10, 22, {"14": 10, "15": 11, "16": 20, "17": 26, "18": 20, "19": 10, "20": 3}, 0.088, 0.011),
    Locus("D8S1179", "Y", 174.2, 4, 7, 18, {"10": 10, "11": 8, "12": 14, "13": 30, "14": 20, "15": 10, "16": 5, "17": 3}, 0.076, 0.009),
    Locus("TPOX", "Y", 236.7, 4, 6, 13, {"8": 53, "9": 10, "10": 5, "11": 26, "12": 6}, 0.041, 0.005),
    Locus("FGA", "Y", 257.6, 4, 16, 46, {"19": 6, "20": 14, "21": 18, "22": 20, "22.2": 1, "23": 15, "24": 13, "25": 8, "26": 5}, 0.110, 0.013, ("22.2",)),
)  # fmt: skip
AUTOSOMAL_LOCI = tuple(locus for locus in LOCI if locus.name != AMEL)
LOCUS_BY_NAME = {locus.name: locus for locus in LOCI}
AMEL_SIZE_BP = {"X": 104.13, "Y": 109.95}
DYE_ORDER = ("B", "G", "Y")
STR_PANEL = "PowerPlex_16_v2"

PRODUCT_STR_GENOTYPE: Genotype = {
    "D3S1358": ("14", "17"), "TH01": ("7", "9.3"), "D21S11": ("29", "31.2"), "D18S51": ("13", "17"),
    "Penta E": ("11", "16"), "D5S818": ("11", "13"), "D13S317": ("9", "12"), "D7S820": ("8", "11"),
    "D16S539": ("9", "13"), "CSF1PO": ("10", "12"), "Penta D": ("9", "13"), "AMEL": ("X", "Y"),
    "vWA": ("15", "18"), "D8S1179": ("12", "14"), "TPOX": ("8", "11"), "FGA": ("21", "24"),
}  # fmt: skip
PRODUCT_SEX = "XY"

REFERENCE_GENE = "RPP30"
REFERENCE_GENE_COPIES = 2
TRANSGENE = "TG1"
MARKERS = ("S02", "S03", "S05", "S07", "S08", "S11", TRANSGENE)
"""Indel markers S.. (copies per genome 0/1/2) and the product's engineered transgene TG1."""
PRODUCT_MARKER_COPIES = {"S02": 1, "S03": 1, "S05": 2, "S07": 0, "S08": 1, "S11": 0, TRANSGENE: 3}
"""Copies per iNK genome; TG1 is a 3-copy transgene integration (issue 10: copy number k = 2/3)."""


def shift_allele(locus: Locus, allele: str, repeats: int) -> str | None:
    """Allele ``repeats`` repeats longer (negative: shorter); microvariants keep their suffix."""
    if locus.name == AMEL:
        return None
    whole, _, fraction = allele.partition(".")
    shifted = int(whole) + repeats
    if shifted < 1:
        return None
    return f"{shifted}.{fraction}" if fraction else str(shifted)


def allele_size_bp(locus: Locus, allele: str) -> float:
    """Fragment size: locus offset + repeat x allele (+ microvariant bases)."""
    if locus.name == AMEL:
        return AMEL_SIZE_BP[allele]
    whole, _, fraction = allele.partition(".")
    return locus.offset_bp + locus.repeat_bp * int(whole) + (int(fraction) if fraction else 0)


def allele_label(locus: Locus, allele: str) -> str:
    """GeneMapper call: the allele when it falls in a ladder bin, ``OL`` otherwise."""
    if locus.name == AMEL:
        return allele
    whole, _, fraction = allele.partition(".")
    if fraction:
        return allele if allele in locus.microvariant_bins else "OL"
    return allele if locus.ladder_min <= int(whole) <= locus.ladder_max else "OL"


def random_genotype(rng: random.Random, sex: str) -> Genotype:
    """Draw a genotype from the panel's allele frequencies (no constraint on stutter positions)."""
    genotype: Genotype = {}
    for locus in LOCI:
        if locus.name == AMEL:
            genotype[AMEL] = ("X", "Y") if sex == "M" else ("X", "X")
            continue
        names, weights = list(locus.alleles), list(locus.alleles.values())
        pair = sorted(rng.choices(names, weights, k=2), key=lambda a: allele_size_bp(locus, a))
        genotype[locus.name] = (pair[0], pair[1])
    return genotype


def unique_allele_loci(genome: Genotype, others: list[Genotype]) -> list[str]:
    """Autosomal loci where ``genome`` has an allele that none of ``others`` carries."""
    found = []
    for locus in AUTOSOMAL_LOCI:
        theirs = {a for other in others for a in other[locus.name]}
        if set(genome[locus.name]) - theirs:
            found.append(locus.name)
    return found


def informative_loci(product: Genotype, patient_genomes: list[Genotype]) -> list[str]:
    """Loci where the product differs from the patient's genome(s) (two-genome rows 1-7, 9)."""
    return [
        locus.name
        for locus in AUTOSOMAL_LOCI
        if any(sorted(product[locus.name]) != sorted(g[locus.name]) for g in patient_genomes)
    ]


def stutter_position_loci(product: Genotype, patient_genomes: list[Genotype]) -> list[str]:
    """Loci where an iNK-only allele sits one repeat below (n-1) a patient allele.

    That allele collects the patient's back stutter: uncorrected, it reads too high (issue 9).
    """
    found = []
    for locus in AUTOSOMAL_LOCI:
        theirs = {a for g in patient_genomes for a in g[locus.name]}
        only_ink = set(product[locus.name]) - theirs
        below = {shift_allele(locus, a, -1) for a in theirs}
        if only_ink & below:
            found.append(locus.name)
    return found


def ink_markers(germline: dict[str, int], hsct_donor: dict[str, int] | None) -> list[str]:
    """Markers informative for iNK: the product carries them, the patient's genome(s) do not."""
    return [
        m
        for m in MARKERS
        if PRODUCT_MARKER_COPIES[m] > 0
        and germline[m] == 0
        and (hsct_donor is None or hsct_donor[m] == 0)
    ]


def hsct_markers(germline: dict[str, int], hsct_donor: dict[str, int] | None) -> list[str]:
    """Markers the HSCT donor carries and neither the product nor the germline does."""
    if hsct_donor is None:
        return []
    return [
        m
        for m in MARKERS
        if hsct_donor[m] > 0 and PRODUCT_MARKER_COPIES[m] == 0 and germline[m] == 0
    ]
