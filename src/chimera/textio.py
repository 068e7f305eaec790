"""Bytes to rows: the reading steps every text export shares (formats.md section 1).

Order: size check -> container sniff (and workbook integrity) -> decode -> split lines ->
delimiter sniff -> quote-aware split -> header normalisation. :mod:`chimera.detect` runs these
steps once per file; parsers find their header row by content and map aliases themselves.
"""

from __future__ import annotations

import csv
import io
import math
import re
import struct
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import TypeVar

from chimera.errors import (
    BinaryContentError,
    FileTooLargeError,
    TruncatedExportError,
    UnreadableFileError,
)

_BOM = b"\xef\xbb\xbf"
# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS: tuple[tuple[bytes, str, str], ...] = (
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32 LE"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32 BE"),
    (_BOM, "utf-8", "UTF-8"),
    (b"\xff\xfe", "utf-16-le", "UTF-16 LE"),
    (b"\xfe\xff", "utf-16-be", "UTF-16 BE"),
)
_SNIFF_BYTES = 4096
_MAX_CONTROL_SHARE = 0.01
"""Text whose first 4 KiB hold more control characters than this share is binary, not an export."""
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_NUMBER_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+([eE][-+]?\d+)?$")
_NUMBER_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")
_QUOTED = re.compile(r'"[^"]*(?:"|$)')
"""A double-quoted stretch of a line (an unclosed quote runs to the line's end)."""
_T = TypeVar("_T")


class Container(StrEnum):
    """What kind of byte container a file is (magic bytes, never the extension)."""

    XLS = "xls"
    XLSX = "xlsx"
    TEXT = "text"
    BINARY = "binary"


def sniff_container(data: bytes) -> Container:
    r"""Return the container type from the file's magic bytes.

    BOM-marked or BOM-less UTF-16 text is ``TEXT``; other bytes with NULs are ``BINARY``.

    Examples
    --------
    >>> sniff_container(b"PK\x03\x04rest").value
    'xlsx'
    >>> sniff_container(b"Well,Sample\\n").value
    'text'
    >>> sniff_container("Well".encode("utf-16-le")).value
    'text'
    """
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        return Container.XLS
    if data.startswith(b"PK\x03\x04"):
        return Container.XLSX
    if any(data.startswith(bom) for bom, _, _ in _BOMS) or _bomless_utf16(data) is not None:
        return Container.TEXT
    if b"\x00" in data[:_SNIFF_BYTES]:
        return Container.BINARY
    return Container.TEXT


def _bomless_utf16(data: bytes) -> str | None:
    """``utf-16-le``/``-be`` when ASCII-range text alternates with NUL bytes, else None."""
    head = data[: _SNIFF_BYTES - _SNIFF_BYTES % 2]
    if len(head) < 4:
        return None
    even, odd = head[0::2], head[1::2]
    for codec, zeros, text in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
        if zeros.count(0) >= 0.9 * len(zeros) and text.count(0) <= 0.1 * len(text):
            return codec
    return None


@dataclass(frozen=True)
class DecodedText:
    """A text export's characters and how they were written."""

    text: str
    encoding: str
    """Codec used: ``utf-8``, ``utf-16-le``, ``utf-16-be``, ``cp1252`` or ``latin-1``."""
    bom: bool
    """The file started with a byte-order mark (Excel's "CSV UTF-8" and QX Manager write one)."""


def decode_bytes(data: bytes, *, file_name: str = "export") -> DecodedText:
    """Decode export bytes (formats.md section 1): BOM first, then UTF-16, UTF-8, cp1252, Latin-1.

    Raises
    ------
    UnreadableFileError
        Bytes that are invalid in the encoding their BOM or NUL pattern declares, or binary
        content (NULs or many control characters); the message names the encoding.
    """
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            return DecodedText(_strict(data[len(bom) :], codec, label, file_name), codec, bom=True)
    codec16 = _bomless_utf16(data)
    if codec16 is not None:
        return DecodedText(_strict(data, codec16, codec16.upper(), file_name), codec16, bom=False)
    if b"\x00" in data:
        msg = (
            f"{file_name}: binary content (NUL bytes), not a text export or a workbook; "
            "export the table again as text, CSV or Excel"
        )
        raise BinaryContentError(msg)
    for codec in ("utf-8", "cp1252"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        return DecodedText(_not_binary(text, file_name), codec, bom=False)
    return DecodedText(_not_binary(data.decode("latin-1"), file_name), "latin-1", bom=False)


def _strict(data: bytes, codec: str, label: str, file_name: str) -> str:
    unit = 4 if codec.startswith("utf-32") else 2 if codec.startswith("utf-16") else 1
    if len(data) % unit:
        msg = (
            f"{file_name}: {label} text has {unit} bytes per character but the file ends with "
            f"{len(data) % unit} extra byte(s): it is truncated; copy the file again or export "
            "it again (UTF-8 is safest)"
        )
        raise TruncatedExportError(msg)
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as err:
        msg = (
            f"{file_name}: the file declares {label} text but byte {err.start} is not valid "
            f"{label}; export it again (UTF-8 is safest)"
        )
        raise UnreadableFileError(msg) from None
    return _not_binary(text, file_name)


def _not_binary(text: str, file_name: str) -> str:
    head = text[:_SNIFF_BYTES]
    if "\x00" in text or (head and len(_CONTROL.findall(head)) > _MAX_CONTROL_SHARE * len(head)):
        msg = (
            f"{file_name}: binary content (control characters), not a text export or a "
            "workbook; export the table again as text, CSV or Excel"
        )
        raise BinaryContentError(msg)
    return text


def decode_text(data: bytes) -> str:
    """Return the text of export bytes decoded by :func:`decode_bytes` (BOM stripped)."""
    return decode_bytes(data).text


def split_lines(text: str) -> list[str]:
    """Split on CRLF, LF or bare CR; a missing final newline is normal."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def sniff_delimiter(line: str) -> str:
    r"""Return TAB, ``;`` or ``,``: whichever occurs most outside quotes in a header line.

    Examples
    --------
    >>> sniff_delimiter('"a;b",c,d'), sniff_delimiter("a;b\tc;d"), sniff_delimiter("abc")
    (',', ';', ',')
    """
    outside = _QUOTED.sub("", line) if '"' in line else line
    tabs, semicolons, commas = outside.count("\t"), outside.count(";"), outside.count(",")
    if tabs and tabs >= semicolons and tabs >= commas:
        return "\t"  # a tie goes to TAB
    return ";" if semicolons and semicolons >= commas else ","


def read_rows(lines: list[str], delimiter: str) -> list[list[str]]:
    """Split lines into fields with a quote-aware reader (``"B,1"`` stays one field).

    Raises
    ------
    UnreadableFileError
        When a field is longer than the csv module's limit (128 KiB): no export writes one.
    """
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter, quotechar='"')
    try:
        return [list(row) for row in reader]
    except csv.Error as err:
        msg = f"a line cannot be split into fields ({err}); export the table again"
        raise UnreadableFileError(msg) from None


def split_line(line: str, delimiter: str) -> list[str]:
    """Split one line into fields with :func:`read_rows`; a blank line gives no fields."""
    if not line.strip():
        return []
    if '"' not in line:
        return line.split(delimiter)
    rows = read_rows([line], delimiter)
    return rows[0] if rows else []


def split_rows(lines: Sequence[str], delimiter: str) -> list[list[str]]:
    """Split every line into fields, one row per line (:func:`split_line`, in one pass).

    One csv reader over all lines splits them in C; when a quoted field would run on into the
    next line (the rows no longer match the lines one to one) or a field is too long for the
    csv module, each line is split on its own.
    """
    try:
        rows = list(csv.reader(lines, delimiter=delimiter, quotechar='"'))
    except csv.Error:
        rows = []
    if len(rows) == len(lines):
        return [row if line.strip() else [] for row, line in zip(rows, lines, strict=True)]
    return [split_line(line, delimiter) for line in lines]


def pick_columns(rows: Sequence[Sequence[str]], indexes: Iterable[int]) -> dict[int, Sequence[str]]:
    """The cells of each column in ``indexes``, row by row (``""`` where a row is too short).

    Only the columns asked for are transposed: a table's rows often have dozens of fields
    the caller never reads.

    Examples
    --------
    >>> pick_columns([["a", "b", "c"], ["d"]], [2, 0])
    {2: ('c', ''), 0: ('a', 'd')}
    """
    wanted = list(dict.fromkeys(indexes))
    if len(wanted) > 1 and rows and max(wanted) < min(map(len, rows)):
        return dict(zip(wanted, zip(*map(itemgetter(*wanted), rows), strict=True), strict=True))
    return {i: tuple(row[i] if i < len(row) else "" for row in rows) for i in wanted}


def has_open_quote(line: str) -> bool:
    """True when a line ends inside a double-quoted field (an odd number of quotes).

    Examples
    --------
    >>> has_open_quote('"M01","(A01,B01'), has_open_quote('"M01","(A01,B01)"')
    (True, False)
    """
    return line.count('"') % 2 == 1


@lru_cache(maxsize=8192)
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
    if not value:
        return None
    text = value.strip()
    if text[:1] == '"' or text[-1:] == '"':
        text = text.strip('"').strip()
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
    try:
        # What float() reads has no quote or comma, so the cleaning below would not change it.
        number = float(value)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) else None
    text = value.strip().strip('"').replace("\u00a0", "")
    if not text:
        return None
    if "," in text:  # both patterns need one
        if decimal_comma and _NUMBER_DECIMAL_COMMA.match(text):
            text = text.replace(",", ".")
        elif _NUMBER_THOUSANDS.match(text):
            text = text.replace(",", "")
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):  # NaN is a CFX sentinel for "no value"; inf is no measurement
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


_ZIP_END = b"PK\x05\x06"
_ZIP_END_SIZE = 22
_OLE_FREE = 0xFFFFFFFF
_OLE_SPECIAL = 0xFFFFFFFA
"""FAT entries at or above this are markers (end of chain, free, FAT/DIFAT sector), not sectors."""


def workbook_is_truncated(data: bytes) -> bool:
    r"""True when a zip (``.xlsx``) or OLE2 (``.xls``) container ends before its own structure does.

    A zip ends with its central directory; a cut file has no end record, or one that points
    past the bytes present. An OLE2 file is whole sectors, and its allocation table (FAT) names
    every sector in use; a cut file is short of a sector or of a sector the FAT names.

    Examples
    --------
    >>> workbook_is_truncated(b"PK\x03\x04only the first entry")
    True
    """
    if data.startswith(b"PK\x03\x04"):
        return _zip_is_truncated(data)
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        return _ole_is_truncated(data)
    return False


def _zip_is_truncated(data: bytes) -> bool:
    end = data.rfind(_ZIP_END, max(0, len(data) - 65_557))
    if end < 0 or end + _ZIP_END_SIZE > len(data):
        return True
    directory_size, directory_offset = struct.unpack_from("<II", data, end + 12)
    return bool(directory_offset + directory_size > end)


def _ole_is_truncated(data: bytes) -> bool:
    if len(data) < 512:
        return True
    sector_size = 1 << int(struct.unpack_from("<H", data, 30)[0])
    if sector_size not in (512, 4096) or (len(data) - sector_size) % sector_size:
        return True
    sectors = (len(data) - sector_size) // sector_size
    n_fat = int(struct.unpack_from("<I", data, 44)[0])
    fat_sectors = [int(s) for s in struct.unpack_from("<109I", data, 76) if s < _OLE_SPECIAL]
    if len(fat_sectors) < min(n_fat, 109) or any(s >= sectors for s in fat_sectors):
        return True
    per_sector = sector_size // 4
    used = 0
    for position, sector in enumerate(fat_sectors):
        entries = struct.unpack_from(f"<{per_sector}I", data, sector_size * (sector + 1))
        last = max((i for i, e in enumerate(entries) if e != _OLE_FREE), default=-1)
        used = max(used, position * per_sector + last + 1)
    return bool(used > sectors)


def check_size(path: Path, limit: int | None) -> int:
    """Return the file's size from ``stat`` without reading it; refuse one above ``limit`` bytes.

    Call before reading a file whole: ``check_size(path, settings.inbox_rules.max_file_bytes)``.
    ``limit = None`` disables the check.

    Raises
    ------
    FileTooLargeError
        When the file is larger than ``limit``; the message gives both sizes.
    """
    size = path.stat().st_size
    if limit is not None and size > limit:
        msg = (
            f"{path.name}: {size / 1e6:.1f} MB is larger than the {limit / 1e6:.1f} MB limit "
            "(inbox_rules.max_file_bytes), so it was not read; check it is the right file, "
            "or export fewer sections (the Results table is enough) or raise the limit"
        )
        raise FileTooLargeError(msg)
    return size
