"""Applied Biosystems QuantStudio / StepOne / 7500 results exports -> ``QpcrWells`` (formats.md 5-7).

One reader for every container the lab drops: the TAB text export (``* key = value`` preamble,
``[Section]`` blocks, optional ``Key = Value`` footer), the same table re-saved by Excel as
``.csv`` (BOM, padded commas, no ``* ``; ``;`` + decimal comma under some locales) and the native
``.xls`` (BIFF) / ``.xlsx`` workbooks (sheet ``Results``). Only the ``[Results]`` table is used.

Completeness (issue 9.3): the last line must end with a line end (Excel re-saves excepted: then
the last row's fields decide), and a file ending inside another section is truncated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, NoReturn

import polars as pl

from chimera.detect import APPBIO_FORMATS, DecodedExport, is_appbio_results_header
from chimera.errors import (
    Problem,
    TruncatedExportError,
    UnrecognisedExportError,
    ValidationFailedError,
)
from chimera.parsers.common import (
    ParsedExport,
    frame_of,
    join_run_id,
    layout_fingerprint,
    number_reader,
    require_format,
    unreadable_on_error,
)
from chimera.parsers.completeness import check_last_line, truncated
from chimera.parsers.qpcr_cells import QPCR_COLUMNS, header_index, parse_ct
from chimera.textio import normalise_header, parse_number, pick_columns, uses_decimal_comma
from chimera.validation import validate_frame
from schemas.inputs import QpcrWells

_ALIASES: dict[str, tuple[str, ...]] = {
    "well": ("well",),
    "well_position": ("well position",),
    "omit": ("omit",),
    "sample": ("sample name", "sample"),
    "target": ("target name", "target", "detector name", "detector"),
    "task": ("task",),
    "reporter": ("reporter", "reporter dye", "dye"),
    "quantity": ("quantity",),
    "intercept": ("y-intercept", "y intercept", "intercept"),
    "r_squared": ("r(superscript 2)", "r2", "r^2", "r squared", "r-squared"),
    "slope": ("slope",),
    "efficiency": ("efficiency", "efficiency %", "efficiency (%)", "amp efficiency"),
}

_TASKS: dict[str, str] = {
    "unknown": "unknown",
    "standard": "standard",
    "ntc": "ntc",
    "negative control": "negative_control",
    "nac": "negative_control",
    "blocked ipc": "negative_control",
    "positive control": "positive_control",
    "ipc": "positive_control",
    "accuracy control": "positive_control",
}

_SOFTWARE = "Applied Biosystems"
_EXPECTED = "an Applied Biosystems (QuantStudio/StepOne/7500) results export"
_TRUE = frozenset({"true", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "no", "n", "0", "0.0", ""})
_WELL_POSITION = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")
_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
_RUN_TIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})\s+(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})"
    r"(?:\s*(?P<ampm>[AaPp][Mm]))?(?:\s+(?P<zone>[A-Za-z]{2,5}))?\s*$"
)
# Fixed offsets of the zone abbreviations AB software writes; others give ``run_ended_at = None``.
_ZONE_HOURS = {
    "UTC": 0, "GMT": 0, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5,
    "MST": -7, "MDT": -6, "PST": -8, "PDT": -7, "CET": 1, "CEST": 2,
}  # fmt: skip


@dataclass(frozen=True)
class AppbioMetadata:
    """Run information from an AB export's preamble and footer (``* key = value`` lines/cells)."""

    entries: Mapping[str, str] = field(default_factory=dict)
    """Every key/value pair, keys as written (trimmed)."""

    def get(self, key: str) -> str | None:
        """Return the value of ``key`` (matched after header normalisation), or None."""
        wanted = normalise_header(key)
        for name, value in self.entries.items():
            if normalise_header(name) == wanted:
                return value or None
        return None

    @property
    def instrument_type(self) -> str | None:
        """``Instrument Type`` (``QuantStudio(TM) 7 Flex System``, ``steponeplus``, ...)."""
        return self.get("Instrument Type")

    @property
    def experiment_type(self) -> str | None:
        """``Experiment Type`` (``Standard Curve``, ``Comparative Cт (ΔΔCт)``, ...)."""
        return self.get("Experiment Type")

    @property
    def block_type(self) -> str | None:
        """``Block Type`` (``96-Well Block (0.2mL)``, ``96well``, ``384-Well Block``, ...)."""
        return self.get("Block Type")

    @property
    def run_end_time(self) -> str | None:
        """``Experiment Run End Time`` exactly as written (e.g. ``2024-10-01 15:02:50 PM EST``)."""
        return self.get("Experiment Run End Time")

    @property
    def run_ended_at(self) -> datetime | None:
        """Run end as an aware datetime when the zone abbreviation is known, else None."""
        return parse_run_end_time(self.run_end_time)


def parse_run_end_time(text: str | None) -> datetime | None:
    """Parse an AB run time such as ``2024-10-01 15:02:50 PM EST`` (formats.md section 5).

    AB writes a 24-hour clock *and* AM/PM; the hour is taken as written unless it can only be a
    12-hour clock (``03:02:50 PM`` -> 15:02:50, ``12:10:00 AM`` -> 00:10:00). Unknown zones give
    None rather than a naive datetime.

    Examples
    --------
    >>> parse_run_end_time("2024-10-01 15:02:50 PM EST").isoformat()
    '2024-10-01T15:02:50-05:00'
    >>> parse_run_end_time("2010-10-21 00:51:26 AM EDT").isoformat()
    '2010-10-21T00:51:26-04:00'
    """
    if not text:
        return None
    match = _RUN_TIME.match(text.strip())
    if match is None or (match["zone"] or "").upper() not in _ZONE_HOURS:
        return None
    hour = int(match["h"])
    ampm = (match["ampm"] or "").upper()
    if ampm == "PM" and hour < 12:
        hour += 12
    elif ampm == "AM" and hour == 12:
        hour = 0
    zone = timezone(timedelta(hours=_ZONE_HOURS[(match["zone"] or "").upper()]))
    try:
        day = datetime.fromisoformat(match["date"])
        return day.replace(hour=hour, minute=int(match["m"]), second=int(match["s"]), tzinfo=zone)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Table:
    """A located results table: header cells, data rows with their 1-based row numbers."""

    header: list[str]
    rows: list[tuple[int, list[str]]]
    delimiter: str
    metadata: AppbioMetadata


@lru_cache(maxsize=4096)
def well_position(well: str, *, plate_columns: int) -> str:
    """Return an ``A1``-style position from ``A1``/``A01`` or a 1-based index (``1``, ``1.0``).

    Examples
    --------
    >>> well_position("13", plate_columns=12), well_position("A01", plate_columns=12)
    ('B1', 'A1')
    """
    text = well.strip()
    match = _WELL_POSITION.match(text)
    if match:
        return f"{match[1].upper()}{int(match[2])}"
    number = parse_number(text)
    if number is not None and number.is_integer() and number >= 1:
        index = int(number) - 1
        row, column = divmod(index, plate_columns)
        if row < 26:
            return f"{chr(ord('A') + row)}{column + 1}"
    return text


def _plate_columns(metadata: AppbioMetadata, wells: Sequence[str]) -> int:
    block = (metadata.block_type or "").casefold()
    if "384" in block:
        return 24
    indexes = [parse_number(w) for w in wells]
    if any(i is not None and i > 96 for i in indexes) and "96" not in block:
        return 24
    return 12


def _stripped(cell: str) -> str:
    """``cell.strip().strip('"').strip()``, with one ``strip`` for a cell without quotes."""
    text = cell.strip()
    return text.strip('"').strip() if '"' in text else text


def _is_blank(row: Sequence[str]) -> bool:
    if "".join(row).replace('"', "").strip():
        return False  # some cell holds a character that is neither a blank nor a quote
    return not any(cell.strip().strip('"') for cell in row)


def _split_key_value(text: str) -> tuple[str, str] | None:
    """``* Key = Value`` (a preamble or footer line) as ``(key, value)``; None without ``=``."""
    key, equals, value = text.partition("=")
    key = key.strip().removeprefix("*").strip()
    return (key, value.strip()) if equals and key else None


def _key_value(cells: Sequence[str]) -> tuple[str, str] | None:
    """Return a preamble/footer pair from ``* key = value`` text or ``key | value`` cells."""
    filled = [c.strip() for c in cells if c.strip()]
    if not filled:
        return None
    if len(filled) == 1:
        return _split_key_value(filled[0]) or (filled[0].lstrip("* ").strip(), "")
    if len(filled) == 2:
        return filled[0].lstrip("* ").strip(), filled[1]
    return None


def _locate_table(export: DecodedExport) -> _Table:
    """Find the results header by content; collect preamble, data rows and footer."""
    rows = export.numbered()
    entries: dict[str, str] = {}
    header_at: int | None = None
    section: str | None = None
    for position, (_, cells) in enumerate(rows):
        if len(cells) == 1 and (match := _SECTION.match(cells[0])):
            section = match["name"].strip().casefold()
            continue
        if section is None or section == "results":
            if is_appbio_results_header(cells):
                header_at = position
                break
            if section is None and (pair := _key_value(cells)) is not None:
                entries[pair[0]] = pair[1]
    if header_at is None:
        _no_results_table(export, section)
    header = rows[header_at][1]
    data: list[tuple[int, list[str]]] = []
    position = header_at + 1
    while position < len(rows):
        number, cells = rows[position]
        if _is_blank(cells) or (len(cells) == 1 and _SECTION.match(cells[0])):
            break
        if len(cells) == 1 and _split_key_value(cells[0]) is not None:
            break  # a text footer directly after the table
        data.append((number, cells))
        position += 1
    for _, cells in rows[position:]:
        if len(cells) == 1 and _SECTION.match(cells[0]):
            break
        if (pair := _key_value(cells)) is not None and pair[0]:
            entries.setdefault(pair[0], pair[1])
    return _Table(header, data, export.delimiter, AppbioMetadata(entries))


def _no_results_table(export: DecodedExport, section: str | None) -> NoReturn:
    """Refuse a file without a results header: truncated when it ends inside a section.

    Each section of an AB text export ends with a blank line before the next one (formats.md 5);
    a file whose last line is not blank and whose last section is not ``[Results]`` was cut off.
    """
    if section is not None and export.lines and export.lines[-1].strip():
        where = f"inside the [{section}] section" if section != "results" else "after [Results]"
        detail = f"the file ends {where}, before the results table"
        raise truncated(export, detail, software=_SOFTWARE)
    msg = (
        f"{export.file_name}: no Applied Biosystems results table found (looked for a header row "
        "with 'Well' and a Ct column named CT, Ct, Cт, CRT or Cq); re-export the Results "
        "from QuantStudio/StepOne software"
    )
    raise UnrecognisedExportError(msg)


def read_appbio_metadata(export: DecodedExport) -> AppbioMetadata:
    """Return the preamble/footer run information of an AB export (instrument, type, run end)."""
    require_format(export, APPBIO_FORMATS, expected=_EXPECTED)
    return _locate_table(export).metadata


def appbio_run_id(metadata: AppbioMetadata) -> str | None:
    """Run identity from the preamble: ``Experiment Name``, barcode and run end (formats.md 5)."""
    keys = ("Experiment Name", "Experiment Barcode", "Experiment Run End Time")
    return join_run_id([(key, metadata.get(key)) for key in keys])


def _boolean(text: str, *, row: int, column: str, problems: list[Problem]) -> bool:
    value = text.strip().strip('"').casefold()
    if value in _TRUE:
        return True
    if value not in _FALSE:
        problems.append(
            Problem(
                rule="not_a_boolean",
                message=f"{column!r} must be true or false",
                row=row,
                column=column,
                value=text,
                fix="use true/false (any case).",
            )
        )
    return False


def map_task(text: str) -> str:
    """Map an AB ``Task`` (``UNKNOWN``, ``STANDARD``, ``NTC``, ...) to the ``QpcrWells`` task."""
    return _TASKS.get(normalise_header(text.replace("_", " ")), "other")


def parse_appbio(export: DecodedExport) -> ParsedExport:
    """Parse an Applied Biosystems results export into a validated ``QpcrWells`` frame.

    Reads ``.txt`` (``* key = value`` preamble, ``[Results]`` section), Excel-re-saved ``.csv``
    (also ``;`` with decimal commas) and ``.xls``/``.xlsx`` (sheet ``Results``).
    ``source_row`` is the 1-based line (text) or sheet row (Excel). ``run_id`` comes from the
    preamble (:func:`appbio_run_id`); the fingerprint covers (well, sample, target).

    Raises
    ------
    UnrecognisedExportError
        No results header (``Well`` + a Ct column) was found, or another format.
    TruncatedExportError
        The file ends mid-line, or inside a section before the results table.
    UnreadableFileError
        A results table without wells.
    ValidationFailedError
        Values that cannot be read or break the ``QpcrWells`` contract.
    """
    require_format(export, APPBIO_FORMATS, expected=_EXPECTED)
    with unreadable_on_error(export.file_name, "Applied Biosystems export"):
        table = _locate_table(export)
        check_last_line(export, table.rows, software=_SOFTWARE)
        frame = _to_frame(table, file_name=export.file_name)
    return ParsedExport(
        frame,
        export.format,
        run_id=appbio_run_id(table.metadata),
        layout_fingerprint=layout_fingerprint(frame, ["well", "sample_id", "target"]),
    )


def _to_frame(table: _Table, *, file_name: str) -> pl.DataFrame:
    columns = header_index(table.header, _ALIASES)
    if "well" not in columns and "well_position" not in columns:
        msg = f"{file_name}: the results table has no 'Well' or 'Well Position' column"
        raise UnrecognisedExportError(msg)
    if not table.rows:
        msg = (
            f"{file_name}: the results table has a header but no wells: the export is truncated "
            "or empty below its header; copy the file again or export the Results again"
        )
        raise TruncatedExportError(msg)
    decimal_comma = uses_decimal_comma([cells for _, cells in table.rows], table.delimiter)
    well = columns.get("well")
    raw_wells = [
        cells[well].strip().strip('"').strip() if well is not None and well < len(cells) else ""
        for _, cells in table.rows
    ]
    plate_columns = _plate_columns(table.metadata, raw_wells)
    frame = None if decimal_comma else _frame_by_column(table, columns, plate_columns)
    if frame is None:
        frame = _frame_by_row(
            table, columns, plate_columns, decimal_comma=decimal_comma, file_name=file_name
        )
    return validate_frame(frame, QpcrWells, file_name=file_name)


_NUMBERS = {
    "quantity": "quantity",
    "slope": "slope",
    "intercept": "intercept",
    "r_squared": "r_squared",
}
"""``QpcrWells`` number column -> the canonical header name it is read from."""


def _frame_by_column(
    table: _Table, columns: Mapping[str, int], plate_columns: int
) -> pl.DataFrame | None:
    """The wells column by column, each distinct cell read once (dot-decimal tables).

    Cells are read by the very readers :func:`_frame_by_row` uses; None when any cell is a
    problem, so that :func:`_frame_by_row` lists the problems with their rows.
    """
    picked = pick_columns([cells for _, cells in table.rows], columns.values())
    blank = [""] * len(table.rows)
    problems: list[Problem] = []
    read = number_reader(decimal_comma=False, problems=problems)

    def column(key: str, reader: Callable[[str], object] = _stripped) -> list[Any]:
        index = columns.get(key)
        cells = picked[index] if index is not None else blank
        distinct = {cell: reader(cell) for cell in set(cells)}
        return [distinct[cell] for cell in cells]

    def number(cell: str) -> float | None:
        return read(_stripped(cell), 0, "")

    def omitted(cell: str) -> bool:
        return _boolean(_stripped(cell), row=0, column="", problems=problems)

    readings = {
        "ct": column("ct", lambda cell: parse_ct(cell, row=0, read=read)),
        "omitted": column("omit", omitted),
        **{name: column(key, number) for name, key in _NUMBERS.items()},
        "efficiency_pct": column("efficiency", lambda cell: read(_efficiency(cell), 0, "")),
    }
    if problems or "ct" not in columns:
        return None
    positions = [p or w for p, w in zip(column("well_position"), column("well"), strict=True)]
    wells = {p: well_position(p, plate_columns=plate_columns) if p else "" for p in set(positions)}
    return frame_of(
        {
            "sample_id": [cell or None for cell in column("sample")],
            "well": [wells[p] for p in positions],
            "target": [cell or None for cell in column("target")],
            "task": column("task", lambda cell: map_task(t) if (t := _stripped(cell)) else "other"),
            "reporter": [cell or None for cell in column("reporter")],
            **readings,
            "source_row": [number for number, _ in table.rows],
        },
        QPCR_COLUMNS,
    )


def _efficiency(cell: str) -> str:
    """An Efficiency cell without its ``%`` sign."""
    return _stripped(cell).rstrip("%").strip()


def _frame_by_row(
    table: _Table,
    columns: Mapping[str, int],
    plate_columns: int,
    *,
    decimal_comma: bool,
    file_name: str,
) -> pl.DataFrame:
    """The wells row by row, every unreadable cell listed as a problem in file order."""
    problems: list[Problem] = []
    read = number_reader(decimal_comma=decimal_comma, problems=problems)
    width = len(table.header)

    named = {key: index for key, index in columns.items() if key != "ct"}

    def cells_of(cells: list[str]) -> dict[str, str]:
        """Each named column's cell (the Ct is read as written), blanks and quotes stripped."""
        return {key: _stripped(cells[index]) for key, index in named.items()}

    ct_name = table.header[columns["ct"]].strip()
    records: list[dict[str, object]] = []
    for number, raw in table.rows:
        cells = raw + [""] * (width - len(raw))
        value = cells_of(cells)
        position = value.get("well_position") or value.get("well", "")
        efficiency = value.get("efficiency", "").rstrip("%").strip()
        task = value.get("task", "")
        records.append(
            {
                "sample_id": value.get("sample") or None,
                "well": well_position(position, plate_columns=plate_columns) if position else "",
                "target": value.get("target") or None,
                "task": map_task(task) if task else "other",
                "reporter": value.get("reporter") or None,
                "ct": parse_ct(cells[columns["ct"]], row=number, read=read, column=ct_name),
                "omitted": _boolean(
                    value.get("omit", ""), row=number, column="Omit", problems=problems
                ),
                "quantity": read(value.get("quantity", ""), number, "Quantity"),
                "slope": read(value.get("slope", ""), number, "Slope"),
                "intercept": read(value.get("intercept", ""), number, "Y-Intercept"),
                "r_squared": read(value.get("r_squared", ""), number, "R2"),
                "efficiency_pct": read(efficiency, number, "Efficiency"),
                "source_row": number,
            }
        )
    if problems:
        msg = f"{file_name}: {len(problems)} value(s) in the results table cannot be read"
        raise ValidationFailedError(msg, problems)
    return pl.DataFrame(records, schema=QPCR_COLUMNS)
