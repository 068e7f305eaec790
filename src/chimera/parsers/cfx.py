"""Bio-Rad CFX Maestro / CFX Manager "Quantification Cq Results" -> ``QpcrWells`` (formats.md 8).

One row per well and fluorophore. The instrument's ``Cq Mean``/``Cq Std. Dev``/``SQ Mean`` are
ignored: they are ``0`` on no-Cq rows and cover amplified wells only (methods.md 3.3); the
calculation recomputes every summary from per-well ``Cq``.
"""

from __future__ import annotations

import re

import polars as pl

from chimera.detect import DecodedExport, ExportFormat
from chimera.errors import Problem, TruncatedExportError, ValidationFailedError
from chimera.parsers.common import (
    ParsedExport,
    join_run_id,
    layout_fingerprint,
    number_reader,
    require_format,
    unreadable_on_error,
)
from chimera.parsers.completeness import check_last_line
from chimera.parsers.qpcr_cells import QPCR_COLUMNS, header_index, parse_ct
from chimera.textio import normalise_header, uses_decimal_comma
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
_RUN_KEYS = ("File Name", "Run Started", "Run Ended", "Base Serial Number")


def map_content(text: str) -> str:
    """Map a CFX ``Content`` code (``Unkn-01``, ``NTC-01``, ``Std-03``, ``Pos Ctrl``) to a task.

    Examples
    --------
    >>> map_content("Unkn-01"), map_content("NTC-01"), map_content("Pos Ctrl"), map_content("")
    ('unknown', 'ntc', 'positive_control', 'other')
    """
    code = _GROUP_SUFFIX.sub("", normalise_header(text))
    return _CONTENT.get(code, "other")


def _run_information(rows: list[list[str]]) -> str | None:
    """Run identity from the run-information ``key,value`` rows above the table (formats.md 8)."""
    entries: dict[str, str] = {}
    for cells in rows:
        filled = [c.strip() for c in cells if c.strip()]
        if len(filled) == 2:
            entries.setdefault(normalise_header(filled[0]), filled[1])
    return join_run_id([(key, entries.get(normalise_header(key))) for key in _RUN_KEYS])


def parse_cfx(export: DecodedExport) -> ParsedExport:
    """Parse a CFX "Quantification Cq Results" export into a validated ``QpcrWells`` frame.

    Run-information ``key,value`` rows before the table are skipped (the header is found by
    content) and give ``run_id`` (``File Name``, ``Run Started``, ...); the nameless leading
    column is ignored; ``NaN`` Cq is no amplification (null); ``Fluor`` becomes ``reporter``;
    ``Sample`` (else ``Biological Set Name``) the sample id.

    Raises
    ------
    UnrecognisedExportError
        Another format.
    TruncatedExportError
        The file ends mid-line, or has a header but no wells.
    ValidationFailedError
        Values that cannot be read or break the ``QpcrWells`` contract.
    """
    require_format(
        export, {ExportFormat.CFX_CSV}, expected="a CFX Quantification Cq Results export"
    )
    with unreadable_on_error(export.file_name, "CFX export"):
        frame = _parse(export)
    return ParsedExport(
        frame,
        export.format,
        run_id=_run_information(export.rows[: export.header_row]),
        layout_fingerprint=layout_fingerprint(frame, ["well", "sample_id", "target", "reporter"]),
    )


def _parse(export: DecodedExport) -> pl.DataFrame:
    file_name = export.file_name
    rows = export.numbered()
    start = export.header_row
    header = rows[start][1]
    columns = header_index(header, _ALIASES)
    raw: list[tuple[int, list[str]]] = []
    for number, cells in rows[start + 1 :]:
        if not any(c.strip() for c in cells):
            break
        raw.append((number, cells))
    if not raw:
        msg = (
            f"{file_name}: the Cq results table has a header but no wells: the export is "
            "truncated or empty below its header; copy the file again or export it again"
        )
        raise TruncatedExportError(msg)
    check_last_line(export, raw, software="CFX Maestro")
    body = [(number, cells + [""] * (len(header) - len(cells))) for number, cells in raw]
    problems: list[Problem] = []
    read = number_reader(
        decimal_comma=uses_decimal_comma([c for _, c in body], export.delimiter), problems=problems
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
