"""Bio-Rad CFX Maestro / CFX Manager "Quantification Cq Results" -> ``QpcrWells`` (formats.md 8).

One row per well and fluorophore. The instrument's ``Cq Mean``/``Cq Std. Dev``/``SQ Mean`` are
ignored: they are ``0`` on no-Cq rows and cover amplified wells only (methods.md 3.3); the
calculation recomputes every summary from per-well ``Cq``.
"""

from __future__ import annotations

import re

import polars as pl

from chimera.errors import (
    Problem,
    UnreadableFileError,
    UnrecognisedExportError,
    ValidationFailedError,
)
from chimera.parsers.common import open_workbook, unreadable_on_error
from chimera.parsers.quantstudio import QPCR_COLUMNS, header_index, number_reader, parse_ct
from chimera.textio import (
    Container,
    decode_text,
    normalise_header,
    numbered_text_rows,
    sniff_container,
    split_lines,
    uses_decimal_comma,
)
from chimera.validation import validate_frame
from schemas.inputs import QpcrWells

_ALIASES: dict[str, tuple[str, ...]] = {
    "well": ("well",),
    "fluor": ("fluor", "fluorophore", "dye"),
    "target": ("target",),
    "content": ("content",),
    "sample": ("sample", "sample name"),
    "biological_set": ("biological set name", "biological set"),
    "quantity": ("starting quantity (sq)", "starting quantity", "sq"),
}

# CFX content codes: ``Unkn-01`` -> ``unkn`` (replicate-group suffix dropped).
_CONTENT: dict[str, str] = {
    "unkn": "unknown",
    "unknown": "unknown",
    "std": "standard",
    "standard": "standard",
    "ntc": "ntc",
    "pos ctrl": "positive_control",
    "positive control": "positive_control",
    "neg ctrl": "negative_control",
    "negative control": "negative_control",
    "nrt": "negative_control",
}
_GROUP_SUFFIX = re.compile(r"[-_ ]*\d+$")


def map_content(text: str) -> str:
    """Map a CFX ``Content`` code (``Unkn-01``, ``NTC-01``, ``Std-03``, ``Pos Ctrl``) to a task.

    Examples
    --------
    >>> map_content("Unkn-01"), map_content("NTC-01"), map_content("Pos Ctrl"), map_content("")
    ('unknown', 'ntc', 'positive_control', 'other')
    """
    code = _GROUP_SUFFIX.sub("", normalise_header(text))
    return _CONTENT.get(code, "other")


def _is_header(cells: list[str]) -> bool:
    names = {normalise_header(c.strip().strip('"')) for c in cells}
    return {"well", "cq"} <= names and bool(names & {"fluor", "content", "sample", "target"})


def _rows(data: bytes, *, file_name: str) -> tuple[list[tuple[int, list[str]]], str]:
    container = sniff_container(data)
    if container in (Container.XLS, Container.XLSX):
        sheets = open_workbook(data, file_name=file_name, advice="export it again")
        for sheet in sheets.values():
            if any(_is_header(row) for row in sheet):
                return [(n, row) for n, row in enumerate(sheet, start=1)], ""
        return [], ""
    if container is Container.BINARY:
        return [], ""
    return numbered_text_rows(split_lines(decode_text(data)), _is_header)


def parse_cfx(data: bytes, *, file_name: str) -> pl.DataFrame:
    """Parse a CFX "Quantification Cq Results" export into a validated ``QpcrWells`` frame.

    Run-information ``key,value`` rows before the table are skipped (the header is found by
    content); the nameless leading column is ignored; ``NaN`` Cq is no amplification (null);
    ``Fluor`` becomes ``reporter``; ``Sample`` (else ``Biological Set Name``) the sample id.

    Raises
    ------
    UnrecognisedExportError
        No header with ``Well``, ``Cq`` and ``Fluor``/``Content`` was found.
    UnreadableFileError
        Empty file, corrupt workbook or a table without wells.
    ValidationFailedError
        Values that cannot be read or break the ``QpcrWells`` contract.
    """
    if not data.strip():
        msg = f"{file_name}: the file is empty; export the Quantification Cq Results again"
        raise UnreadableFileError(msg)
    with unreadable_on_error(file_name, "CFX export"):
        return _parse(data, file_name=file_name)


def _parse(data: bytes, *, file_name: str) -> pl.DataFrame:
    rows, delimiter = _rows(data, file_name=file_name)
    start = next((i for i, (_, cells) in enumerate(rows) if _is_header(cells)), None)
    if start is None:
        msg = (
            f"{file_name}: no CFX Quantification Cq Results table found (looked for a header with "
            "'Well', 'Fluor', 'Content' and 'Cq'); export 'Quantification Cq Results' as CSV"
        )
        raise UnrecognisedExportError(msg)
    header = rows[start][1]
    columns = header_index(header, _ALIASES)
    body: list[tuple[int, list[str]]] = []
    for number, cells in rows[start + 1 :]:
        if not any(c.strip() for c in cells):
            break
        body.append((number, cells + [""] * (len(header) - len(cells))))
    if not body:
        msg = f"{file_name}: the Cq results table has a header but no wells"
        raise UnreadableFileError(msg)
    problems: list[Problem] = []
    read = number_reader(
        decimal_comma=uses_decimal_comma([c for _, c in body], delimiter), problems=problems
    )

    def cell(cells: list[str], key: str) -> str:
        index = columns.get(key)
        return "" if index is None else cells[index].strip().strip('"').strip()

    records: list[dict[str, object]] = []
    for number, cells in body:
        records.append(
            {
                "sample_id": cell(cells, "sample") or cell(cells, "biological_set") or None,
                "well": cell(cells, "well"),
                "target": cell(cells, "target") or None,
                "task": map_content(cell(cells, "content")),
                "reporter": cell(cells, "fluor") or None,
                "ct": parse_ct(cells[columns["ct"]], row=number, read=read, column="Cq"),
                "omitted": False,
                "quantity": read(cell(cells, "quantity"), number, "Starting Quantity (SQ)"),
                "slope": None,
                "intercept": None,
                "r_squared": None,
                "efficiency_pct": None,
                "source_row": number,
            }
        )
    if problems:
        msg = f"{file_name}: {len(problems)} value(s) in the Cq results table cannot be read"
        raise ValidationFailedError(msg, problems)
    frame = pl.DataFrame(records, schema=QPCR_COLUMNS)
    return validate_frame(frame, QpcrWells, file_name=file_name)
