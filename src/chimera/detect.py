"""Which export is this? Decided from content, never from the file name.

Magic bytes, first lines and header names decide (formats.md section 1, sniffing table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from chimera.textio import (
    Container,
    decode_text,
    normalise_header,
    read_excel_rows,
    sniff_container,
    sniff_delimiter,
    split_lines,
)

_SNIFF_LINES = 60


class ExportFormat(StrEnum):
    """Every input layout Chimera reads."""

    MANIFEST = "manifest"
    INFUSION_LOG = "infusion_log"
    GENEMAPPER_SIZING = "genemapper_sizing"
    GENEMAPPER_GENOTYPES = "genemapper_genotypes"
    APPBIO_TEXT = "appbio_text"
    APPBIO_CSV = "appbio_csv"
    APPBIO_EXCEL = "appbio_excel"
    CFX_CSV = "cfx_csv"
    QUANTASOFT = "quantasoft"
    QUANTASOFT_OLD = "quantasoft_old"
    QX_MANAGER = "qx_manager"
    DDPCR_AMPLITUDE = "ddpcr_amplitude"


class Assay(StrEnum):
    """What a format carries."""

    REGISTRY = "registry"
    STR = "STR"
    QPCR = "qPCR"
    DDPCR = "ddPCR"
    NONE = "none"


ASSAY_OF: dict[ExportFormat, Assay] = {
    ExportFormat.MANIFEST: Assay.REGISTRY,
    ExportFormat.INFUSION_LOG: Assay.REGISTRY,
    ExportFormat.GENEMAPPER_SIZING: Assay.STR,
    ExportFormat.GENEMAPPER_GENOTYPES: Assay.STR,
    ExportFormat.APPBIO_TEXT: Assay.QPCR,
    ExportFormat.APPBIO_CSV: Assay.QPCR,
    ExportFormat.APPBIO_EXCEL: Assay.QPCR,
    ExportFormat.CFX_CSV: Assay.QPCR,
    ExportFormat.QUANTASOFT: Assay.DDPCR,
    ExportFormat.QUANTASOFT_OLD: Assay.DDPCR,
    ExportFormat.QX_MANAGER: Assay.DDPCR,
    ExportFormat.DDPCR_AMPLITUDE: Assay.NONE,
}

MANIFEST_COLUMNS = frozenset({"sample_id", "patient_id", "role"})
INFUSION_COLUMNS = frozenset({"patient_id", "dose_number", "infused_at"})


@dataclass(frozen=True)
class Detection:
    """A recognised format and, for text, the line where its table header starts (0-based)."""

    format: ExportFormat
    header_line: int | None = None

    @property
    def assay(self) -> Assay:
        """What the file carries (registry rows, STR, qPCR, ddPCR, or nothing usable)."""
        return ASSAY_OF[self.format]


def _cells(line: str) -> list[str]:
    delimiter = sniff_delimiter(line)
    return [normalise_header(c.strip().strip('"')) for c in line.split(delimiter)]


def detect_rows(rows: list[list[str]]) -> Detection | None:
    """Detect a format from already-split rows (text lines or spreadsheet rows)."""
    for index, raw in enumerate(rows[:_SNIFF_LINES]):
        cells = [normalise_header(c.strip().strip('"')) for c in raw]
        found = _detect_header(cells, index)
        if found is not None:
            return found
    return None


def _detect_header(cells: list[str], index: int) -> Detection | None:
    names = set(cells) - {""}
    first = next((c for c in cells if c), "")
    if (
        cells[:2] == ["dye/sample peak", "sample file name"]
        or {
            "dye/sample peak",
            "marker",
            "allele",
        }
        <= names
    ):
        return Detection(ExportFormat.GENEMAPPER_SIZING, index)
    if "marker" in names and any(re.fullmatch(r"allele \d+", c) for c in names):
        return Detection(ExportFormat.GENEMAPPER_GENOTYPES, index)
    if names >= MANIFEST_COLUMNS:
        return Detection(ExportFormat.MANIFEST, index)
    if names >= INFUSION_COLUMNS:
        return Detection(ExportFormat.INFUSION_LOG, index)
    if first.startswith("* block type") or (first.startswith("* ") and " = " in first):
        return Detection(ExportFormat.APPBIO_TEXT, None)
    if first == "block type":
        return Detection(ExportFormat.APPBIO_CSV, None)
    if cells and cells[0] == "" and {"well", "fluor", "cq"} <= names:
        return Detection(ExportFormat.CFX_CSV, index)
    if {"well", "fluor", "content", "sample", "cq"} <= names:
        return Detection(ExportFormat.CFX_CSV, index)
    if {"well", "targettype", "target", "acceptedDroplets".casefold()} <= names:
        return Detection(ExportFormat.QUANTASOFT, index)
    if {"well", "typeassay", "assay", "positives"} <= names:
        return Detection(ExportFormat.QUANTASOFT_OLD, index)
    if {"well", "target", "accepted droplets", "positives"} <= names:
        return Detection(ExportFormat.QX_MANAGER, index)
    if first.startswith("target value of") or {"ch1amplitude", "ch2amplitude"} <= names:
        return Detection(ExportFormat.DDPCR_AMPLITUDE, index)
    if {"assay1 amplitude", "cluster"} <= names or {"ch1 amplitude", "cluster"} <= names:
        return Detection(ExportFormat.DDPCR_AMPLITUDE, index)
    return None


def detect_format(data: bytes) -> Detection | None:
    r"""Return the format of an export from its bytes, or None when nothing matches.

    Examples
    --------
    >>> detect_format(b"sample_id,patient_id,role,collected_at,specimen\\n").format.value
    'manifest'
    >>> detect_format(b"hello\\n") is None
    True
    """
    container = sniff_container(data)
    if container is Container.BINARY:
        return None
    if container in (Container.XLS, Container.XLSX):
        try:
            sheets = read_excel_rows(data)
        except Exception:  # noqa: BLE001 - a corrupt workbook is simply "not recognised"
            return None
        for rows in sheets.values():
            found = detect_rows(rows)
            if found is None:
                continue
            if found.format in (ExportFormat.APPBIO_TEXT, ExportFormat.APPBIO_CSV):
                return Detection(ExportFormat.APPBIO_EXCEL, None)
            return found
        return None
    lines = split_lines(decode_text(data[:65536]))
    return detect_rows([line.split(sniff_delimiter(line)) for line in lines])
