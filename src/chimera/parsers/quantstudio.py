"""Applied Biosystems QuantStudio / StepOne / 7500 results exports -> ``QpcrWells`` (formats.md 5-7).

One reader for every container the lab drops: the TAB text export (``* key = value`` preamble,
``[Section]`` blocks, optional ``Key = Value`` footer), the same table re-saved by Excel as
``.csv`` (BOM, padded commas, no ``* ``; ``;`` + decimal comma under some locales) and the native
``.xls`` (BIFF) / ``.xlsx`` workbooks (sheet ``Results``). Only the ``[Results]`` table is used.

The helpers ``header_index``, ``number_reader`` and ``parse_ct`` are shared with the CFX reader.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import polars as pl

from chimera.errors import (
    Problem,
    UnreadableFileError,
    UnrecognisedExportError,
    ValidationFailedError,
)
from chimera.parsers.common import open_workbook, unreadable_on_error
from chimera.textio import (
    Container,
    decode_text,
    match_aliases,
    normalise_header,
    numbered_text_rows,
    parse_number,
    sniff_container,
    split_lines,
    uses_decimal_comma,
)
from chimera.validation import validate_frame
from schemas.inputs import QpcrWells

CT_ALIASES = frozenset({"ct", "crt", "cq"})
"""Normalised names of the per-well Ct column (``CT``, ``Ct``, ``Cт``, ``CRT``, ``Crt``, ``Cq``)."""

NO_CT_SENTINELS = frozenset({"", "undetermined", "nan", "n/a", "na", "no ct", "no cq", "-", "none"})
"""Ct texts meaning "no threshold crossing" (methods.md 3.4): a censored value, never 0."""

QPCR_COLUMNS: dict[str, pl.DataType] = {
    "sample_id": pl.String(),
    "well": pl.String(),
    "target": pl.String(),
    "task": pl.String(),
    "reporter": pl.String(),
    "ct": pl.Float64(),
    "omitted": pl.Boolean(),
    "quantity": pl.Float64(),
    "slope": pl.Float64(),
    "intercept": pl.Float64(),
    "r_squared": pl.Float64(),
    "efficiency_pct": pl.Float64(),
    "source_row": pl.Int32(),
}

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

_TRUE = frozenset({"true", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "no", "n", "0", "0.0", ""})
_WELL_POSITION = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")
_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")
_KEY_VALUE = re.compile(r"^\s*(?:\*\s*)?(?P<key>[^=]+?)\s*=\s*(?P<value>.*?)\s*$")
_POINT_DECIMAL = re.compile(r"^-?\d+\.(\d{1,2}|\d{4,})$")
_DOTTED_THOUSANDS = re.compile(r"^-?\d{1,3}(\.\d{3})+(,\d+)?$")
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


def header_index(header: Sequence[str], aliases: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Map canonical names to column positions; the first of duplicate header names wins."""
    positions: dict[str, int] = {}
    for index, raw in enumerate(header):
        name = normalise_header(raw.strip().strip('"'))
        positions.setdefault(name, index)
    found = match_aliases(positions, aliases)
    ct = next((i for i, raw in enumerate(header) if normalise_header(raw) in CT_ALIASES), None)
    if ct is not None:
        found["ct"] = ct
    return found


def number_reader(
    *, decimal_comma: bool, problems: list[Problem]
) -> Callable[[str, int, str], float | None]:
    """Return ``read(text, row, column)`` parsing instrument numbers and recording bad ones.

    Handles ``118,248.200`` (thousands commas), and with ``decimal_comma`` ``0,85`` and
    ``118.248,2``; a decimal point in a decimal-comma file is a mixed convention (formats.md 7).
    """

    def read(text: str, row: int, column: str) -> float | None:
        value = text.strip().strip('"').replace("\u00a0", "")
        if not value:
            return None
        if decimal_comma:
            if _DOTTED_THOUSANDS.match(value):
                value = value.replace(".", "").replace(",", ".")
            elif _POINT_DECIMAL.match(value):
                problems.append(
                    Problem(
                        rule="mixed_decimal_convention",
                        message=f"{column!r} uses a decimal point in a decimal-comma file",
                        row=row,
                        column=column,
                        value=text,
                        fix="re-export with one regional number format (e.g. dot decimals).",
                    )
                )
                return None
        number = parse_number(value, decimal_comma=decimal_comma)
        if number is None and value.casefold() not in NO_CT_SENTINELS:
            problems.append(
                Problem(
                    rule="not_a_number",
                    message=f"{column!r} must be a number",
                    row=row,
                    column=column,
                    value=text,
                    fix="correct the value or re-export from the instrument software.",
                )
            )
        return number

    return read


def parse_ct(
    text: str, *, row: int, read: Callable[[str, int, str], float | None], column: str = "Ct"
) -> float | None:
    """Return the Ct of one well; ``Undetermined``/``NaN``/blank (no amplification) give None."""
    if text.strip().strip('"').casefold() in NO_CT_SENTINELS:
        return None
    return read(text, row, column)


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


def _is_blank(row: Sequence[str]) -> bool:
    return not any(cell.strip().strip('"') for cell in row)


def _is_header(cells: Sequence[str]) -> bool:
    names = {normalise_header(c.strip().strip('"')) for c in cells}
    return bool(names & CT_ALIASES) and "well" in names


def _key_value(cells: Sequence[str]) -> tuple[str, str] | None:
    """Return a preamble/footer pair from ``* key = value`` text or ``key | value`` cells."""
    filled = [c.strip() for c in cells if c.strip()]
    if not filled:
        return None
    if len(filled) == 1:
        match = _KEY_VALUE.match(filled[0])
        if match:
            return match["key"].strip(), match["value"]
        return filled[0].lstrip("* ").strip(), ""
    if len(filled) == 2:
        return filled[0].lstrip("* ").strip(), filled[1]
    return None


def _locate_table(
    rows: Sequence[tuple[int, list[str]]], *, delimiter: str, file_name: str
) -> _Table:
    """Find the results header by content; collect preamble, data rows and footer."""
    entries: dict[str, str] = {}
    header_at: int | None = None
    section: str | None = None
    for position, (_, cells) in enumerate(rows):
        if len(cells) == 1 and (match := _SECTION.match(cells[0])):
            section = match["name"].strip().casefold()
            continue
        if section is None or section == "results":
            if _is_header(cells):
                header_at = position
                break
            if section is None and (pair := _key_value(cells)) is not None:
                entries[pair[0]] = pair[1]
    if header_at is None:
        msg = (
            f"{file_name}: no Applied Biosystems results table found (looked for a header row "
            "with 'Well' and a Ct column named CT, Ct, Cт, CRT or Cq); re-export the Results "
            "from QuantStudio/StepOne software"
        )
        raise UnrecognisedExportError(msg)
    header = rows[header_at][1]
    data: list[tuple[int, list[str]]] = []
    position = header_at + 1
    while position < len(rows):
        number, cells = rows[position]
        if _is_blank(cells) or (len(cells) == 1 and _SECTION.match(cells[0])):
            break
        if len(cells) == 1 and _KEY_VALUE.match(cells[0]) and "=" in cells[0]:
            break  # a text footer directly after the table
        data.append((number, cells))
        position += 1
    for _, cells in rows[position:]:
        if len(cells) == 1 and _SECTION.match(cells[0]):
            break
        if (pair := _key_value(cells)) is not None and pair[0]:
            entries.setdefault(pair[0], pair[1])
    return _Table(header, data, delimiter, AppbioMetadata(entries))


def _text_rows(data: bytes) -> tuple[list[tuple[int, list[str]]], str]:
    """Split a text export into numbered rows, with the delimiter sniffed on the header line."""
    lines = split_lines(decode_text(data))
    return numbered_text_rows(lines, _is_header, default_header=lines[0] if lines else "")


def _excel_rows(data: bytes, *, file_name: str) -> list[tuple[int, list[str]]]:
    sheets = open_workbook(data, file_name=file_name, advice="re-export it or save it again")
    by_name = {name.strip().casefold(): rows for name, rows in sheets.items()}
    candidates = [by_name["results"]] if "results" in by_name else list(sheets.values())
    for rows in candidates:
        if any(_is_header(row) for row in rows):
            return [(number, row) for number, row in enumerate(rows, start=1)]
    msg = (
        f"{file_name}: no sheet holds an Applied Biosystems results table (expected sheet "
        f"'Results' with a 'Well' and a Ct column); found sheets {sorted(sheets)}"
    )
    raise UnrecognisedExportError(msg)


def _read_table(data: bytes, *, file_name: str) -> _Table:
    if not data.strip():
        msg = f"{file_name}: the file is empty; export the Results again and drop the new file"
        raise UnreadableFileError(msg)
    container = sniff_container(data)
    if container is Container.BINARY:
        msg = f"{file_name}: binary content that is neither .xls nor .xlsx; export as text or Excel"
        raise UnrecognisedExportError(msg)
    if container in (Container.XLS, Container.XLSX):
        return _locate_table(
            _excel_rows(data, file_name=file_name), delimiter="", file_name=file_name
        )
    rows, delimiter = _text_rows(data)
    return _locate_table(rows, delimiter=delimiter, file_name=file_name)


def read_appbio_metadata(data: bytes, *, file_name: str = "export") -> AppbioMetadata:
    """Return the preamble/footer run information of an AB export (instrument, type, run end)."""
    return _read_table(data, file_name=file_name).metadata


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


def parse_appbio(data: bytes, *, file_name: str) -> pl.DataFrame:
    """Parse an Applied Biosystems results export into a validated ``QpcrWells`` frame.

    Reads ``.txt`` (``* key = value`` preamble, ``[Results]`` section), Excel-re-saved ``.csv``
    (also ``;`` with decimal commas) and ``.xls``/``.xlsx`` (sheet ``Results``); the container is
    sniffed from the bytes. ``source_row`` is the 1-based line (text) or sheet row (Excel).

    Raises
    ------
    UnrecognisedExportError
        No results header (``Well`` + a Ct column) was found.
    UnreadableFileError
        Empty file, corrupt workbook or a results table without wells.
    ValidationFailedError
        Values that cannot be read or break the ``QpcrWells`` contract.
    """
    with unreadable_on_error(file_name, "Applied Biosystems export"):
        table = _read_table(data, file_name=file_name)
        return _to_frame(table, file_name=file_name)


def _to_frame(table: _Table, *, file_name: str) -> pl.DataFrame:
    columns = header_index(table.header, _ALIASES)
    if "well" not in columns and "well_position" not in columns:
        msg = f"{file_name}: the results table has no 'Well' or 'Well Position' column"
        raise UnrecognisedExportError(msg)
    if not table.rows:
        msg = f"{file_name}: the results table has a header but no wells"
        raise UnreadableFileError(msg)
    decimal_comma = uses_decimal_comma([cells for _, cells in table.rows], table.delimiter)
    problems: list[Problem] = []
    read = number_reader(decimal_comma=decimal_comma, problems=problems)
    width = len(table.header)

    def cell(cells: list[str], key: str) -> str:
        index = columns.get(key)
        if index is None or index >= len(cells):
            return ""
        return cells[index].strip().strip('"').strip()

    raw_wells = [cell(cells, "well") for _, cells in table.rows]
    plate_columns = _plate_columns(table.metadata, raw_wells)
    ct_name = table.header[columns["ct"]].strip()
    records: list[dict[str, object]] = []
    for number, raw in table.rows:
        cells = raw + [""] * (width - len(raw))
        position = cell(cells, "well_position") or cell(cells, "well")
        efficiency = cell(cells, "efficiency").rstrip("%").strip()
        records.append(
            {
                "sample_id": cell(cells, "sample") or None,
                "well": well_position(position, plate_columns=plate_columns) if position else "",
                "target": cell(cells, "target") or None,
                "task": map_task(cell(cells, "task")) if cell(cells, "task") else "other",
                "reporter": cell(cells, "reporter") or None,
                "ct": parse_ct(cells[columns["ct"]], row=number, read=read, column=ct_name),
                "omitted": _boolean(
                    cell(cells, "omit"), row=number, column="Omit", problems=problems
                ),
                "quantity": read(cell(cells, "quantity"), number, "Quantity"),
                "slope": read(cell(cells, "slope"), number, "Slope"),
                "intercept": read(cell(cells, "intercept"), number, "Y-Intercept"),
                "r_squared": read(cell(cells, "r_squared"), number, "R2"),
                "efficiency_pct": read(efficiency, number, "Efficiency"),
                "source_row": number,
            }
        )
    if problems:
        msg = f"{file_name}: {len(problems)} value(s) in the results table cannot be read"
        raise ValidationFailedError(msg, problems)
    frame = pl.DataFrame(records, schema=QPCR_COLUMNS)
    return validate_frame(frame, QpcrWells, file_name=file_name)
