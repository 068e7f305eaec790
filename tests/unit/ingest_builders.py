"""Small warehouses built through the real ingest path: exports written as the instruments do.

``LabTrial`` drops files into a folder and ingests them (``chimera.poll.ingest_paths`` or
``chimera.ingest.ingest_source``) into a fresh warehouse. The export writers render the plates of
``pcr_builders`` (QuantStudio text with its ``*`` preamble, QuantaSoft 1.7 CSV) and GeneMapper
Sizing Tables of two or three genomes mixed in known shares. Every STR allele sits at least
three repeats from every other allele of its locus, so these tables carry no stutter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from pcr_builders import REFERENCE, DdpcrPlate, QpcrPlate

from chimera.ingest import FileOutcome, ingest_source
from chimera.poll import ingest_paths
from chimera.registry import read_ledger
from chimera.settings import Settings
from chimera.warehouse import CHIMERISM, MARKERS, STUTTER_RATIOS, Warehouse
from schemas.vocab import Role

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
FIRST_DOSE = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
MANIFEST_HEADER = (
    "sample_id",
    "patient_id",
    "role",
    "collected_at",
    "specimen",
    "wbc_per_ul",
    "nk_per_ul",
    "purity_pct",
    "product_lot",
    "cell_bank",
)


def day(n: float) -> str:
    """ISO time ``n`` days after the first dose."""
    return f"{FIRST_DOSE + timedelta(days=n):%Y-%m-%dT%H:%M:%SZ}"


def manifest_csv(rows: Sequence[Mapping[str, object]]) -> bytes:
    """A manifest with the ``MANIFEST_HEADER`` columns; missing keys are empty."""
    lines = [",".join(MANIFEST_HEADER)]
    for row in rows:
        lines.append(",".join("" if row.get(c) is None else str(row[c]) for c in MANIFEST_HEADER))
    return ("\n".join(lines) + "\n").encode()


def sample(
    sample_id: str, patient_id: str, role: str, *, at: float | None = None, **more: object
) -> dict[str, object]:
    """One manifest row (``at`` = days after the first dose; whole blood unless ``specimen``)."""
    row: dict[str, object] = {
        "sample_id": sample_id,
        "patient_id": patient_id,
        "role": role,
        "collected_at": None if at is None else day(at),
        "specimen": "PB",
    }
    row.update(more)
    return row


def bank_manifest(patients: Sequence[str]) -> bytes:
    """The product's registered reference and calibrator (lot LOT1) and, per patient, a
    baseline (day -3) and one post-dose sample (day 2)."""
    rows = [
        sample("INK-REF", "LOT1", Role.DONOR_REFERENCE, product_lot="LOT1", specimen="iNK"),
        sample("INK-CAL", "LOT1", Role.CALIBRATOR, product_lot="LOT1", specimen="iNK"),
    ]
    for patient in patients:
        rows += [
            sample(f"{patient}-BL", patient, Role.RECIPIENT_BASELINE, at=-3, wbc_per_ul=3000),
            sample(f"{patient}-D1", patient, Role.POST_DOSE, at=2, wbc_per_ul=2000),
        ]
    return manifest_csv(rows)


def infusion_csv(doses: Sequence[tuple[str, int, float, str | None]]) -> bytes:
    """An infusion log of ``(patient_id, dose_number, day, product_lot)``."""
    lines = ["patient_id,dose_number,infused_at,cells,product_lot"]
    for patient, number, when, lot in doses:
        lines.append(f"{patient},{number},{day(when)},1.0e9,{lot or ''}")
    return ("\n".join(lines) + "\n").encode()


def appbio_text(plate: QpcrPlate, *, experiment: str | None, run_end: str | None) -> bytes:
    """A QuantStudio text export of ``plate`` (formats.md 5), with or without its run header."""
    lines = ["* Block Type = 384-Well Block", "* Instrument Type = QuantStudio(TM) 7 Flex System"]
    if experiment is not None:
        lines.append(f"* Experiment Name = {experiment}")
    if run_end is not None:
        lines.append(f"* Experiment Run End Time = {run_end}")
    lines += [
        "",
        "[Results]",
        "Well\tWell Position\tOmit\tSample Name\tTarget Name\tTask\tReporter\tCT",
    ]
    for index, row in enumerate(plate.rows, start=1):
        ct = row["ct"]
        lines.append(
            "\t".join(
                [
                    str(index),
                    str(row["well"]),
                    "true" if row["omitted"] else "false",
                    str(row["sample_id"] or "NTC"),
                    str(row["target"]),
                    "NTC" if row["task"] == "ntc" else "UNKNOWN",
                    "VIC" if row["target"] == REFERENCE else "FAM",
                    "Undetermined" if ct is None else f"{ct:.3f}",
                ]
            )
        )
    return ("\r\n".join(lines) + "\r\n").encode()


def quantasoft_csv(plate: DdpcrPlate, *, experiment: str = "ABS") -> bytes:
    """A QuantaSoft 1.7 export of a duplex ``plate`` (formats.md 9): one row per well x channel.

    Quadrant counts assume the two targets fall into droplets independently. An ``experiment``
    that is not a type code (ABS, CNV, ...) is the file's run id.
    """
    header = (
        "Well,ExptType,Experiment,Sample,TargetType,Target,Status,Concentration,Positives,"
        "Negatives,Ch1+Ch2+,Ch1+Ch2-,Ch1-Ch2+,Ch1-Ch2-,AcceptedDroplets,MergedWells"
    )
    by_well: dict[str, dict[str, dict[str, object]]] = {}
    for row in plate.rows:
        by_well.setdefault(str(row["well"]), {})[str(row["target"])] = row
    lines = [header]
    for well, targets in by_well.items():
        reference = targets[REFERENCE]
        marker = next(r for t, r in targets.items() if t != REFERENCE)
        n = int(str(reference["accepted_droplets"]))
        m, r = int(str(marker["positives"])), int(str(reference["positives"]))
        both = round(m * r / n)
        quadrants = f"{both},{m - both},{r - both},{n - m - r + both}"
        for channel, row in (("Ch1Unknown", marker), ("Ch2Unknown", reference)):
            name = row["sample_id"] or "NTC"
            lines.append(
                f'"{well}",Absolute Quantification,"{experiment}","{name}",{channel},'
                f'"{row["target"]}",Manual,1.0,{row["positives"]},{n - int(str(row["positives"]))},'
                f'{quadrants},{n},"",'
            )
    return ("\n".join(lines) + "\n").encode()


STR_LOCI: dict[str, dict[str, tuple[str, str]]] = {
    "D3S1358": {"ink": ("11", "14"), "patient": ("17", "20"), "hsct": ("23", "26")},
    "D8S1179": {"ink": ("8", "11"), "patient": ("14", "17"), "hsct": ("20", "23")},
    "D21S11": {"ink": ("24", "27"), "patient": ("30", "33"), "hsct": ("36", "39")},
    "D18S51": {"ink": ("10", "13"), "patient": ("16", "19"), "hsct": ("22", "25")},
    "vWA": {"ink": ("11", "14"), "patient": ("17", "20"), "hsct": ("23", "26")},
    "D5S818": {"ink": ("6", "9"), "patient": ("12", "15"), "hsct": ("18", "21")},
    "D13S317": {"ink": ("5", "8"), "patient": ("11", "14"), "hsct": ("17", "20")},
    "D7S820": {"ink": ("6", "9"), "patient": ("12", "15"), "hsct": ("18", "21")},
}
"""Heterozygous genotypes of the product, the patient and a prior HSCT donor (all distinct)."""
_OFFSET = {marker: 100.0 + 60.0 * i for i, marker in enumerate(STR_LOCI)}


def sizing_table(
    samples: Sequence[tuple[str, Mapping[str, float]]], *, scale: float = 1.0
) -> bytes:
    """A GeneMapper Sizing Table of ``(sample_id, {genome: share})`` mixtures (shares sum to 1).

    Each allele's area = 20,000 x scale x Σ share x copies / 2 (methods.md 2.1 signal model).
    """
    header = "Dye/Sample Peak\tSample File Name\tMarker\tAllele\tSize\tHeight\tArea\tData Point\t"
    lines = [header]
    for sample_id, mix in samples:
        n = 0
        for marker, genomes in STR_LOCI.items():
            areas: dict[str, float] = {}
            for genome, share in mix.items():
                for allele in genomes[genome]:
                    areas[allele] = areas.get(allele, 0.0) + 20_000 * scale * share / 2
            for allele, area in sorted(areas.items(), key=lambda a: float(a[0])):
                if area < 300:
                    continue
                n += 1
                size = _OFFSET[marker] + 4 * float(allele)
                lines.append(
                    f'"B,{n}"\t{sample_id}\t{marker}\t{allele}\t{size:.2f}\t{round(area / 6)}\t'
                    f"{round(area)}\t{1000 + n}\t"
                )
    return ("\r\n".join(lines) + "\r\n").encode()


class LabTrial:
    """A drop folder and a warehouse; files are ingested the way ``chimera ingest`` does."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "drop"
        self.folder.mkdir(parents=True)
        self.settings = Settings().with_home(root / "home")
        self.now = T0

    def clock(self) -> datetime:
        """The next second (a deterministic ledger order)."""
        self.now += timedelta(seconds=1)
        return self.now

    def drop(self, name: str, data: bytes) -> Path:
        """Write one file into the drop folder."""
        path = self.folder / name
        path.write_bytes(data)
        return path

    def ingest(self, *paths: Path) -> list[FileOutcome]:
        """Ingest files as one batch (dependency order, one rebuild at the end)."""
        return ingest_paths(list(paths), settings=self.settings, clock=self.clock, move=False)

    def ingest_one(self, path: Path) -> FileOutcome:
        """Ingest one file now (its patients rebuilt at once)."""
        return ingest_source(path, settings=self.settings, now=self.clock(), move=False)

    @property
    def warehouse(self) -> Warehouse:
        """The trial's warehouse."""
        return Warehouse(self.settings.warehouse)

    def chimerism(self) -> pl.DataFrame:
        """Every chimerism row (current and superseded)."""
        return self.warehouse.read(CHIMERISM)

    def markers(self) -> pl.DataFrame:
        """Every marker row."""
        return self.warehouse.read(MARKERS)

    def stutter(self) -> pl.DataFrame:
        """The warehouse stutter table."""
        return self.warehouse.read(STUTTER_RATIOS)

    def ledger(self) -> pl.DataFrame:
        """The ledger, oldest first."""
        return read_ledger(self.warehouse)
