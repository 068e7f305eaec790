"""Which export is this? Decided from content, never from the file name, reading the file once.

:func:`detect` sniffs the container, decodes the bytes, splits the lines and finds the table
header by content (formats.md section 1, sniffing table). What it returns, a
:class:`DecodedExport`, is what every parser takes: no parser decodes or detects again.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from itertools import islice

from chimera.errors import (
    BinaryContentError,
    ChimeraError,
    EmptyFileError,
    TruncatedExportError,
    UnreadableFileError,
    UnrecognisedExportError,
)
from chimera.textio import (
    Container,
    decode_bytes,
    normalise_header,
    read_excel_rows,
    sniff_container,
    sniff_delimiter,
    split_line,
    split_lines,
    split_rows,
    workbook_is_truncated,
)

_SNIFF_LINES = 60
_ANY_DELIMITER = re.compile(r"[\t;,]")
_SECTION = re.compile(r"\[[a-z][a-z0-9 /()-]*\]")
_CT_WORD = re.compile(r"(^|[\t;,\"])\s*c(t|т|rt|q)\s*($|[\t;,\"])")
CT_ALIASES = frozenset({"ct", "crt", "cq"})
"""Normalised names of a per-well Ct column (``CT``, ``Ct``, ``Cт``, ``CRT``, ``Crt``, ``Cq``)."""

UNRECOGNISED = (
    "the content matches no known export (GeneMapper Sizing/Genotypes Table, QuantStudio/StepOne"
    "/7500 results, CFX Cq results, QuantaSoft or QX Manager well data, sample manifest, "
    "infusion log); re-export with the software's standard table export or check the file is "
    "the right one"
)


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

APPBIO_FORMATS = frozenset(
    {ExportFormat.APPBIO_TEXT, ExportFormat.APPBIO_CSV, ExportFormat.APPBIO_EXCEL}
)
REGISTRY_ALIASES = {
    "sample": "sample_id",
    "sample id": "sample_id",
    "sample name": "sample_id",
    "patient": "patient_id",
    "patient id": "patient_id",
    "subject_id": "patient_id",
    "collection time": "collected_at",
    "collected": "collected_at",
    "collection_date": "collected_at",
    "wbc": "wbc_per_ul",
    "wbc/ul": "wbc_per_ul",
    "lymphocytes": "lymphocytes_per_ul",
    "lymphocytes/ul": "lymphocytes_per_ul",
    "nk": "nk_per_ul",
    "nk cells": "nk_per_ul",
    "nk/ul": "nk_per_ul",
    "nk cells/ul": "nk_per_ul",
    "purity": "purity_pct",
    "purity %": "purity_pct",
    "purity (%)": "purity_pct",
    "sort purity": "purity_pct",
    "cell bank": "cell_bank",
    "master cell bank": "cell_bank",
    "mcb": "cell_bank",
    "nominal": "nominal_pct",
    "expected_pct": "nominal_pct",
    "nominal_pct_ink": "nominal_pct",
    "lot": "product_lot",
    "product lot": "product_lot",
    "dose": "dose_number",
    "dose number": "dose_number",
    "infusion time": "infused_at",
    "cell_dose": "cells",
}
"""Normalised manifest / infusion-log header names -> contract column names."""
MANIFEST_COLUMNS = frozenset({"sample_id", "patient_id", "role"})
"""A header with ``sample_id`` and one more of these is a manifest (the parser names the rest)."""
INFUSION_COLUMNS = frozenset({"patient_id", "dose_number", "infused_at"})
"""A header with ``patient_id`` and one more of these is an infusion log."""


@dataclass(frozen=True)
class Detection:
    """A recognised format and the row where its table header starts (0-based)."""

    format: ExportFormat
    header_line: int | None = None

    @property
    def assay(self) -> Assay:
        """What the file carries (registry rows, STR, qPCR, ddPCR, or nothing usable)."""
        return ASSAY_OF[self.format]


@dataclass(frozen=True)
class DecodedExport:
    """One file, read and decoded once: what :func:`detect` found and every parser takes.

    ``rows[i]`` is line ``i + 1`` of a text file (split on ``delimiter``, quote-aware; a blank
    line is ``[]``) or row ``i + 1`` of the workbook sheet ``sheet``. A text file's lines are
    split only when a parser asks for ``rows`` (a parser reading whole columns never does).
    """

    file_name: str
    format: ExportFormat
    container: Container
    header_row: int
    """0-based index in ``rows`` of the table header (AB: the results header, found by content)."""
    delimiter: str = ""
    encoding: str | None = None
    """Text codec (``utf-8``, ``utf-16-le``, ``cp1252``, ...); None for workbooks."""
    bom: bool = False
    ends_with_newline: bool = True
    """The last line of a text file has a line end (always True for workbooks)."""
    lines: list[str] = field(default_factory=list)
    """The decoded text lines (empty for workbooks); ``lines[i]`` was split into ``rows[i]``."""
    sheet: str | None = None
    sheets: Mapping[str, list[list[str]]] = field(default_factory=dict)
    size_bytes: int = 0

    @cached_property
    def rows(self) -> list[list[str]]:
        """Every line split into fields (text) or the rows of the sheet ``sheet`` (workbook)."""
        if self.sheet is not None:
            return self.sheets[self.sheet]
        return split_rows(self.lines, self.delimiter)

    def row(self, index: int) -> list[str]:
        """``rows[index]`` alone: for a text file, one line split (no other line is)."""
        if self.sheet is not None or "rows" in self.__dict__:
            return self.rows[index]
        return split_line(self.lines[index], self.delimiter)

    @property
    def assay(self) -> Assay:
        """What the file carries (registry rows, STR, qPCR, ddPCR, or nothing usable)."""
        return ASSAY_OF[self.format]

    @property
    def detection(self) -> Detection:
        """The format and header position alone."""
        return Detection(self.format, self.header_row)

    @property
    def is_workbook(self) -> bool:
        """True for ``.xls``/``.xlsx`` content."""
        return self.container in (Container.XLS, Container.XLSX)

    def numbered(self, start: int = 0) -> list[tuple[int, list[str]]]:
        """``(1-based line or sheet row, fields)`` for every row from index ``start`` on."""
        return [(index + 1, self.rows[index]) for index in range(start, len(self.rows))]


def _cells(raw: Sequence[str]) -> list[str]:
    return [normalise_header(c.strip().strip('"')) for c in raw]


def detect_rows(rows: Iterable[Sequence[str]]) -> Detection | None:
    """Detect a format from already-split rows (text lines or spreadsheet rows).

    Rows after the header are not looked at: a generator splits only the lines up to it.
    """
    for index, raw in enumerate(islice(rows, _SNIFF_LINES)):
        found = _detect_header(_cells(raw), index)
        if found is not None:
            return found
    return None


def is_appbio_results_header(raw: Sequence[str]) -> bool:
    """True for an AB ``[Results]`` header: a ``Well`` column and a Ct column (formats.md 5)."""
    names = set(_cells(raw))
    return bool(names & CT_ALIASES) and "well" in names


def _results_header_line(line: str) -> bool:
    """:func:`is_appbio_results_header` for a text line, with a cheap test first."""
    low = line.casefold()
    if "well" not in low or not _CT_WORD.search(low):
        return False
    return is_appbio_results_header(_ANY_DELIMITER.split(line))


def _detect_header(cells: list[str], index: int) -> Detection | None:
    names = set(cells) - {""}
    first = next((c for c in cells if c), "")
    if cells[:2] == ["dye/sample peak", "sample file name"] or (
        {"marker", "allele"} <= names
        and bool(names & {"dye/sample peak", "sample file name", "sample file", "sample name"})
    ):
        return Detection(ExportFormat.GENEMAPPER_SIZING, index)
    if "marker" in names and any(re.fullmatch(r"allele \d+", c) for c in names):
        return Detection(ExportFormat.GENEMAPPER_GENOTYPES, index)
    columns = {REGISTRY_ALIASES.get(name, name.replace(" ", "_")) for name in names}
    if len(columns & MANIFEST_COLUMNS) >= 2 and "sample_id" in columns:
        return Detection(ExportFormat.MANIFEST, index)
    if len(columns & INFUSION_COLUMNS) >= 2 and "patient_id" in columns:
        return Detection(ExportFormat.INFUSION_LOG, index)
    if first.startswith("* block type") or (first.startswith("* ") and " = " in first):
        return Detection(ExportFormat.APPBIO_TEXT, None)
    if first == "block type":
        return Detection(ExportFormat.APPBIO_CSV, None)
    if cells and cells[0] == "" and {"well", "fluor", "cq"} <= names:
        return Detection(ExportFormat.CFX_CSV, index)
    if {"well", "cq"} <= names and bool(names & {"fluor", "content"}):
        return Detection(ExportFormat.CFX_CSV, index)
    if {"well", "targettype", "target", "accepteddroplets"} <= names:
        return Detection(ExportFormat.QUANTASOFT, index)
    if {"well", "typeassay", "assay", "positives"} <= names:
        return Detection(ExportFormat.QUANTASOFT_OLD, index)
    if {"well", "target", "accepted droplets", "positives"} <= names:
        return Detection(ExportFormat.QX_MANAGER, index)
    if first.startswith("target value of") or {"ch1amplitude", "ch2amplitude"} <= names:
        return Detection(ExportFormat.DDPCR_AMPLITUDE, index)
    if {"assay1 amplitude", "cluster"} <= names or {"ch1 amplitude", "cluster"} <= names:
        return Detection(ExportFormat.DDPCR_AMPLITUDE, index)
    if (len(names) == 1 and _SECTION.fullmatch(first)) or (names & CT_ALIASES and "well" in names):
        return Detection(ExportFormat.APPBIO_TEXT, None)
    return None


def detect(data: bytes, *, file_name: str) -> DecodedExport:
    r"""Read an export's bytes once: container, decoded rows, header position and format.

    Raises
    ------
    EmptyFileError
        No bytes, or only blanks and line ends.
    TruncatedExportError
        A workbook whose zip or OLE2 structure ends early.
    UnreadableFileError
        A workbook that cannot be opened, or text invalid in its declared encoding.
    UnrecognisedExportError
        Binary content, or text/sheets that match no supported layout.

    Examples
    --------
    >>> found = detect(b"sample_id,patient_id,role\nS1,P1,post_dose\n", file_name="m.csv")
    >>> found.format.value, found.header_row, found.rows[1]
    ('manifest', 0, ['S1', 'P1', 'post_dose'])
    """
    if not data.strip():
        msg = f"{file_name}: the file is empty; export it again and drop the new file"
        raise EmptyFileError(msg)
    container = sniff_container(data)
    if container is Container.BINARY:
        msg = (
            f"{file_name}: binary content that is neither a workbook (.xls/.xlsx) nor a text "
            "export; export the table again as text, CSV or Excel"
        )
        raise BinaryContentError(msg)
    if container in (Container.XLS, Container.XLSX):
        return _detect_workbook(data, container, file_name=file_name)
    return _detect_text(data, file_name=file_name)


def _detect_text(data: bytes, *, file_name: str) -> DecodedExport:
    decoded = decode_bytes(data, file_name=file_name)
    lines = split_lines(decoded.text)
    ends_with_newline = len(lines) > 1 and lines[-1] == ""
    if ends_with_newline:
        lines.pop()
    if not any(line.strip() for line in lines):
        msg = f"{file_name}: the file holds only blanks; export it again and drop the new file"
        raise EmptyFileError(msg)
    head = lines[:_SNIFF_LINES]
    rows: Iterable[list[str]] = (split_line(line, sniff_delimiter(line)) for line in head)
    if max(map(len, head)) > csv.field_size_limit():
        rows = list(rows)  # a field too long for the csv reader refuses the file, at any line
    sniffed = detect_rows(rows)
    if sniffed is None:
        msg = f"{file_name}: {UNRECOGNISED}"
        raise UnrecognisedExportError(msg)
    header = sniffed.header_line
    if header is None:
        header = next((i for i, ln in enumerate(lines) if _results_header_line(ln)), 0)
    delimiter = sniff_delimiter(lines[header])
    fmt = sniffed.format
    if fmt in APPBIO_FORMATS:
        fmt = ExportFormat.APPBIO_TEXT if delimiter == "\t" else ExportFormat.APPBIO_CSV
    return DecodedExport(
        file_name=file_name,
        format=fmt,
        container=Container.TEXT,
        header_row=header,
        delimiter=delimiter,
        encoding=decoded.encoding,
        bom=decoded.bom,
        ends_with_newline=ends_with_newline,
        lines=lines,
        size_bytes=len(data),
    )


def _detect_workbook(data: bytes, container: Container, *, file_name: str) -> DecodedExport:
    kind = "xlsx (zip)" if container is Container.XLSX else "xls (OLE2)"
    if workbook_is_truncated(data):
        msg = (
            f"{file_name}: the {kind} workbook is truncated (its file structure ends early): the "
            "copy was cut off; copy the file again, or export it again (as Excel or as text)"
        )
        raise TruncatedExportError(msg)
    try:
        sheets = read_excel_rows(data)
    except Exception as err:  # noqa: BLE001 - calamine raises its own types for corrupt workbooks
        msg = f"{file_name}: the {kind} workbook cannot be opened ({err}); save or export it again"
        raise UnreadableFileError(msg) from None
    found = _sheet_detection(sheets)
    if found is None:
        names = ", ".join(sheets)
        msg = f"{file_name}: no sheet of the workbook ({names}) holds a known table; {UNRECOGNISED}"
        raise UnrecognisedExportError(msg)
    name, detection = found
    return DecodedExport(
        file_name=file_name,
        format=detection.format,
        container=container,
        header_row=detection.header_line or 0,
        sheet=name,
        sheets=sheets,
        size_bytes=len(data),
    )


def _sheet_detection(sheets: Mapping[str, list[list[str]]]) -> tuple[str, Detection] | None:
    """The sheet holding the table: for AB workbooks the ``Results`` sheet (formats.md 6)."""
    for name, rows in sheets.items():
        found = detect_rows(rows)
        if found is None:
            continue
        if found.format not in APPBIO_FORMATS:
            return name, found
        ordered = sorted(sheets, key=lambda sheet: sheet.strip().casefold() != "results")
        for sheet in ordered:
            header = next(
                (i for i, row in enumerate(sheets[sheet]) if is_appbio_results_header(row)), None
            )
            if header is not None:
                return sheet, Detection(ExportFormat.APPBIO_EXCEL, header)
        return name, Detection(ExportFormat.APPBIO_EXCEL, 0)
    return None


def detect_format(data: bytes) -> Detection | None:
    r"""Return the format of an export from its bytes, or None when nothing matches.

    Examples
    --------
    >>> detect_format(b"sample_id,patient_id,role,collected_at,specimen\n").format.value
    'manifest'
    >>> detect_format(b"hello\n") is None
    True
    """
    try:
        return detect(data, file_name="export").detection
    except ChimeraError:
        return None
