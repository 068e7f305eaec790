"""qPCR: Ct simulation and the QuantStudio 7 Flex text / Bio-Rad CFX Cq-results exports.

Singleplex wells (marker FAM, RPP30 VIC). Copies in a well ~ Poisson(genomes x copies per
genome x fraction); Ct = intercept + slope log10(copies) + N(0, 0.08); 0 copies = no Ct.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path

from .genetics import REFERENCE_GENE
from .rand import poisson, sample_sd

QPCR_GENOMES_PER_WELL = (15_000.0, 30_000.0)
QPCR_FAILED_GENOMES_PER_WELL = (3.0, 6.0)
QPCR_CT_NOISE_SD_CYCLES = 0.08
QPCR_PIPETTING_SD_LOG = 0.03
QPCR_MAX_CYCLES = 40.0
QPCR_REPLICATES = 3
QPCR_CALIBRATOR_REPLICATES = 6
QPCR_NTC_REPLICATES = 2
QPCR_PLATE_WELLS = 384
QPCR_PLATE_COLUMNS = 24
QPCR_ASSAYS = {
    REFERENCE_GENE: (37.6, -3.32, "VIC", 0.180),
    "S02": (37.9, -3.31, "FAM", 0.150),
    "S03": (37.7, -3.34, "FAM", 0.150),
    "S05": (38.0, -3.33, "FAM", 0.140),
    "S07": (37.8, -3.30, "FAM", 0.150),
    "S08": (37.8, -3.32, "FAM", 0.160),
    "S11": (37.7, -3.30, "FAM", 0.150),
    "TG1": (38.1, -3.35, "FAM", 0.170),
}
"""target -> (Ct at 1 copy, slope cycles/decade, reporter, Ct threshold dRn)."""
TASK_UNKNOWN = "UNKNOWN"
TASK_NTC = "NTC"
EXPERIMENT_TYPE_DDCT = "Comparative C\u0442 (\u0394\u0394C\u0442)"
EXPERIMENT_TYPE_SCREEN = "Standard Curve"


@dataclass
class QpcrWell:
    """One qPCR well: what is in it and, once simulated, its Ct (None = no amplification)."""

    sample_name: str
    target: str
    task: str
    copies_per_genome: float
    genomes: float
    ct: float | None = None
    omitted: bool = False


def extract_wells(
    rng: random.Random,
    name: str,
    target: str,
    copies_per_genome: float,
    genomes: float,
    replicates: int = QPCR_REPLICATES,
) -> list[QpcrWell]:
    """Replicate wells of one DNA extract (well-to-well pipetting CV 3 %)."""
    return [
        QpcrWell(
            name,
            target,
            TASK_UNKNOWN,
            copies_per_genome,
            genomes * math.exp(rng.gauss(0.0, QPCR_PIPETTING_SD_LOG)),
        )
        for _ in range(replicates)
    ]


def ntc_wells(name: str, targets: list[str]) -> list[QpcrWell]:
    """No-template wells (water) for each target."""
    return [
        QpcrWell(name, t, TASK_NTC, 0.0, 0.0) for t in targets for _ in range(QPCR_NTC_REPLICATES)
    ]


def simulate_cts(rng: random.Random, wells: list[QpcrWell]) -> None:
    """Ct of every well: Poisson copies, log-linear Ct, Gaussian noise; >= 40 cycles = none."""
    for well in wells:
        intercept, slope, _, _ = QPCR_ASSAYS[well.target]
        copies = poisson(rng, well.genomes * well.copies_per_genome)
        if copies == 0:
            well.ct = None
            continue
        ct = intercept + slope * math.log10(copies) + rng.gauss(0.0, QPCR_CT_NOISE_SD_CYCLES)
        well.ct = None if ct >= QPCR_MAX_CYCLES else ct


def _group_stats(wells: list[QpcrWell]) -> dict[tuple[str, str], list[float]]:
    groups: dict[tuple[str, str], list[float]] = {}
    for well in wells:
        if well.ct is not None and not well.omitted:
            groups.setdefault((well.sample_name, well.target), []).append(well.ct)
    return groups


def _clock_text(moment: dt.datetime) -> str:
    """QuantStudio's 24-hour time with an AM/PM suffix (``2025-04-05 15:02:50 PM UTC``)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" PM" if moment.hour >= 12 else " AM") + " UTC"


QUANTSTUDIO_HEADER = [
    "Well",
    "Well Position",
    "Omit",
    "Sample Name",
    "Target Name",
    "Task",
    "Reporter",
    "Quencher",
    "CT",
    "Ct Mean",
    "Ct SD",
    "Quantity",
    "Quantity Mean",
    "Quantity SD",
    "Automatic Ct Threshold",
    "Ct Threshold",
    "Automatic Baseline",
    "Baseline Start",
    "Baseline End",
    "Comments",
    "Y-Intercept",
    "R(superscript 2)",
    "Slope",
    "Efficiency",
    "Amp Score",
    "Cq Conf",
]


def write_quantstudio(
    path: Path,
    rng: random.Random,
    wells: list[QpcrWell],
    experiment: str,
    experiment_type: str,
    run_end: dt.datetime,
    exported: dt.datetime | None = None,
) -> None:
    """A QuantStudio 7 Flex ``[Results]`` text export (CRLF, TAB) of simulated wells.

    ``Ct Mean``/``Ct SD`` cover the amplified, non-omitted replicates and are printed on the
    ``Undetermined`` rows of a partly amplified group too (the StepOne quirk).
    """
    groups = _group_stats(wells)
    created = run_end - dt.timedelta(hours=3)
    preamble = [
        ("Block Type", "384-Well Block"),
        ("Chemistry", "TAQMAN"),
        ("Date Created", _clock_text(created)),
        ("Experiment Barcode", ""),
        ("Experiment Comment", "" if exported is None else f"re-analysed {exported:%Y-%m-%d}"),
        ("Experiment File Name", f"D:\\Chimera\\qPCR\\{experiment}.eds"),
        ("Experiment Name", experiment),
        ("Experiment Run End Time", _clock_text(run_end)),
        ("Experiment Type", experiment_type),
        ("Instrument Name", "278885512"),
        ("Instrument Serial Number", "278885512"),
        ("Instrument Type", "QuantStudio(TM) 7 Flex System"),
        ("Passive Reference", "ROX"),
        ("Quantification Cycle Method", "Ct"),
        ("Signal Smoothing On", "true"),
        ("Stage/ Cycle where Analysis is performed", "Stage 2, Step 2"),
        ("User Name", "chimera-lab"),
    ]
    lines = [f"* {key} = {value}" for key, value in preamble]
    lines += ["", "[Results]", "\t".join(QUANTSTUDIO_HEADER)]
    for index, well in enumerate(wells):
        position = (
            f"{'ABCDEFGHIJKLMNOP'[index // QPCR_PLATE_COLUMNS]}{index % QPCR_PLATE_COLUMNS + 1}"
        )
        _, _, reporter, threshold = QPCR_ASSAYS[well.target]
        group = groups.get((well.sample_name, well.target), [])
        mean = f"{sum(group) / len(group):.3f}" if group else ""
        sd = f"{sample_sd(group):.3f}" if len(group) >= 2 else ""
        if well.ct is None:
            ct_text, baseline_end, amp, conf = "Undetermined", "39", "0.000", "0.000"
        else:
            ct_text, baseline_end = f"{well.ct:.3f}", str(max(3, math.floor(well.ct) - 4))
            amp, conf = f"{rng.uniform(1.10, 1.30):.3f}", f"{rng.uniform(0.95, 0.995):.3f}"
        row = [
            str(index + 1),
            position,
            "true" if well.omitted else "false",
            well.sample_name,
            well.target,
            well.task,
            reporter,
            "NFQ-MGB",
            ct_text,
            mean,
            sd,
            "",
            "",
            "",
            "true",
            f"{threshold:.3f}",
            "true",
            "3",
            baseline_end,
            "",
            "",
            "",
            "",
            "",
            amp,
            conf,
        ]
        lines.append("\t".join(row))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))


def omit_well(wells: list[QpcrWell], index: int) -> list[QpcrWell]:
    """The same plate with one well marked omitted (a re-analysis after a bad well)."""
    return [replace(w, omitted=True) if i == index else replace(w) for i, w in enumerate(wells)]


CFX_HEADER = [
    "",
    "Well",
    "Fluor",
    "Target",
    "Content",
    "Sample",
    "Biological Set Name",
    "Cq",
    "Cq Mean",
    "Cq Std. Dev",
    "Starting Quantity (SQ)",
    "Log Starting Quantity",
    "SQ Mean",
    "SQ Std. Dev",
    "Set Point",
    "Well Note",
]


def write_cfx(
    path: Path, wells: list[QpcrWell], run_info: list[tuple[str, str]] | None = None
) -> None:
    """A Bio-Rad CFX "Quantification Cq Results" CSV (CRLF, leading empty column, ``NaN`` Cq).

    ``Content`` numbers replicate groups (``Unkn-01``, ``NTC-01``); ``Cq Mean``/``Cq Std. Dev``
    are over the amplified wells of the group and ``0`` on ``NaN`` rows (CFX's own quirks).
    ``run_info`` writes the optional run-information rows before the table.
    """
    groups = _group_stats(wells)
    numbers: dict[tuple[str, str], int] = {}
    lines = [f"{key},{value}" for key, value in run_info or []]
    if run_info:
        lines.append("")
    lines.append(",".join(CFX_HEADER))
    for index, well in enumerate(wells):
        position = (
            f"{'ABCDEFGHIJKLMNOP'[index // QPCR_PLATE_COLUMNS]}{index % QPCR_PLATE_COLUMNS + 1:02d}"
        )
        kind = "NTC" if well.task == TASK_NTC else "Unkn"
        number = numbers.setdefault(
            (kind, well.sample_name), 1 + sum(k == kind for k, _ in numbers)
        )
        group = groups.get((well.sample_name, well.target), [])
        if well.ct is None:
            cq, mean, sd, quantity = "NaN", "0", "0", ("NaN", "NaN", "0", "0")
        else:
            mean_value = sum(group) / len(group)
            sd_value = sample_sd(group) if len(group) >= 2 else 0.0
            cq, mean, sd = f"{well.ct:.13g}", f"{mean_value:.15g}", f"{sd_value:.15g}"
            quantity = ("NaN", "NaN", "NaN", "NaN")
        _, _, reporter, _ = QPCR_ASSAYS[well.target]
        fluor = "HEX" if reporter == "VIC" else reporter
        row = [
            "",
            position,
            fluor,
            well.target,
            f"{kind}-{number:02d}",
            well.sample_name,
            "",
            cq,
            mean,
            sd,
            *quantity,
            "60",
            "",
        ]
        lines.append(",".join(row))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))
