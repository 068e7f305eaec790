"""Bytes to rows: the reading steps every text export shares (formats.md section 1).

Order: container sniff -> decode -> split lines -> delimiter sniff -> quote-aware split ->
header normalisation. Parsers find their header row by content and map aliases themselves.
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import TypeVar

_BOM = b"\xef\xbb\xbf"
_NUMBER_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")
_NUMBER_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")
_ANY_DELIMITER = re.compile(r"[\t;,]")
_T = TypeVar("_T")


class Container(StrEnum):
    """What kind of byte container a file is (magic bytes, never the extension)."""

    XLS = "xls"
    XLSX = "xlsx"
    TEXT = "text"
    BINARY = "binary"


def sniff_container(data: bytes) -> Container:
    r"""Return the container type from the file's magic bytes.

    Examples
    --------
    >>> sniff_container(b"PK\x03\x04rest").value
    'xlsx'
    >>> sniff_container(b"Well,Sample\\n").value
    'text'
    """
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        return Container.XLS
    if data.startswith(b"PK\x03\x04"):
        return Container.XLSX
    if b"\x00" in data[:4096]:
        return Container.BINARY
    return Container.TEXT


def decode_text(data: bytes) -> str:
    """Decode export bytes: strip a UTF-8 BOM, try UTF-8, fall back to cp1252."""
    data = data.removeprefix(_BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252")


def split_lines(text: str) -> list[str]:
    """Split on CRLF, LF or bare CR; a missing final newline is normal."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def sniff_delimiter(line: str) -> str:
    """Return TAB, ``;`` or ``,``: whichever occurs most outside quotes in a header line."""
    counts = {"\t": 0, ";": 0, ",": 0}
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=lambda k: (counts[k], k == "\t"))
    return best if counts[best] else ","


def read_rows(lines: list[str], delimiter: str) -> list[list[str]]:
    """Split lines into fields with a quote-aware reader (``"B,1"`` stays one field)."""
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter, quotechar='"')
    return [list(row) for row in reader]


def split_line(line: str, delimiter: str) -> list[str]:
    """Split one line into fields with :func:`read_rows`; a blank line gives no fields."""
    rows = read_rows([line], delimiter) if line.strip() else []
    return rows[0] if rows else []


def numbered_text_rows(
    lines: Sequence[str], is_header: Callable[[list[str]], bool], *, default_header: str = ""
) -> tuple[list[tuple[int, list[str]]], str]:
    """Split every line on its own into ``(1-based line number, fields)``; a blank line is ``[""]``.

    The delimiter is sniffed on the first line that ``is_header`` accepts when split on any of
    TAB, ``;`` and ``,`` (else on ``default_header``); it is returned with the rows.
    """
    header_line = next(
        (line for line in lines if is_header(_ANY_DELIMITER.split(line))), default_header
    )
    delimiter = sniff_delimiter(header_line)
    rows = [(number, split_line(line, delimiter) or [""]) for number, line in enumerate(lines, 1)]
    return rows, delimiter


def normalise_header(name: str) -> str:
    """Normalise a column name for alias matching (formats.md section 1).

    NFKC, trim, casefold, Cyrillic ``т`` -> ``t``, ``µ``/``μ``/``Âµ`` -> ``u``, squeeze spaces.

    Examples
    --------
    >>> normalise_header(" Conc(copies/µL) ")
    'conc(copies/ul)'
    >>> normalise_header("Cт Mean")
    'ct mean'
    """
    text = name.replace("Âµ", "u").replace("µ", "u").replace("μ", "u")
    text = unicodedata.normalize("NFKC", text).replace("т", "t").replace("Т", "T")
    text = text.replace("\ufeff", "").strip().casefold()
    return re.sub(r"\s+", " ", text)


def dedupe_header(header: Sequence[str]) -> list[str]:
    """Return the header names with later copies of a name suffixed ``#2``, ``#3``, ...

    Examples
    --------
    >>> dedupe_header(["Well", "Ct", "Well"])
    ['Well', 'Ct', 'Well#2']
    """
    names: list[str] = []
    seen: dict[str, int] = {}
    for raw in header:
        seen[raw] = seen.get(raw, 0) + 1
        names.append(raw if seen[raw] == 1 else f"{raw}#{seen[raw]}")
    return names


def match_aliases(
    available: Mapping[str, _T], aliases: Mapping[str, Sequence[str]]
) -> dict[str, _T]:
    """Map each canonical name to ``available[alias]`` for its first alias present, if any."""
    found: dict[str, _T] = {}
    for canonical, names in aliases.items():
        for name in names:
            if name in available:
                found[canonical] = available[name]
                break
    return found


def clean_cell(value: str | None) -> str | None:
    """Return a cell without surrounding blanks and double quotes; empty or None gives None."""
    text = (value or "").strip().strip('"').strip()
    return text or None


def rows_to_records(header: list[str], rows: list[list[str]]) -> list[dict[str, str]]:
    """Pair ragged rows with a header: pad short rows, drop surplus empty trailing fields.

    Duplicate header names keep the first; later copies get a ``#2``, ``#3`` suffix.
    """
    names = dedupe_header(header)
    records = []
    for row in rows:
        padded = row[: len(names)] + [""] * (len(names) - len(row))
        records.append(dict(zip(names, padded, strict=True)))
    return records


def parse_number(value: str | None, *, decimal_comma: bool = False) -> float | None:
    """Parse an instrument number; empty and sentinel strings give None.

    Accepts thousands separators (``118,248.200``) and, when ``decimal_comma``, ``0,85``.

    Examples
    --------
    >>> parse_number("118,248.200")
    118248.2
    >>> parse_number("0,85", decimal_comma=True)
    0.85
    >>> parse_number("Undetermined") is None
    True
    """
    if value is None:
        return None
    text = value.strip().strip('"').replace("\u00a0", "")
    if not text:
        return None
    if decimal_comma and _NUMBER_DECIMAL_COMMA.match(text):
        text = text.replace(",", ".")
    elif _NUMBER_THOUSANDS.match(text):
        text = text.replace(",", "")
    try:
        number = float(text)
    except ValueError:
        return None
    if math.isnan(number):  # NaN is a CFX sentinel for "no value"
        return None
    return number


def uses_decimal_comma(rows: list[list[str]], delimiter: str) -> bool:
    """Return True when a ``;``-separated table writes numbers with a decimal comma."""
    if delimiter != ";":
        return False
    return any(_NUMBER_DECIMAL_COMMA.match(cell.strip()) for row in rows for cell in row)


def read_excel_rows(data: bytes) -> dict[str, list[list[str]]]:
    """Read every sheet of an ``.xlsx`` or BIFF ``.xls`` workbook as rows of strings.

    Uses fastexcel (calamine), which reads both containers; empty cells become ``""``.
    """
    import fastexcel  # noqa: PLC0415 - heavy import kept off the text-only path

    reader = fastexcel.read_excel(data)
    sheets: dict[str, list[list[str]]] = {}
    for name in reader.sheet_names:
        frame = reader.load_sheet(name, header_row=None, dtypes="string").to_polars()
        sheets[name] = [
            ["" if cell is None else str(cell) for cell in row] for row in frame.iter_rows()
        ]
    return sheets


def first_nonempty_row(rows: list[list[str]]) -> list[str]:
    """Return the first row with any non-blank cell, or an empty list."""
    for row in rows:
        if any(cell.strip() for cell in row):
            return row
    return []
