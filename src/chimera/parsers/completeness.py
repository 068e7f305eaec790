"""Is the export whole? A truncated or partial export is never accepted (issue 9, section 3).

Each rule uses what a format guarantees (formats.md sections 2-10):

* **Line end.** Instrument software ends every line, the last one too (GeneMapper, AB text,
  CFX, QuantaSoft; every real file does). A file whose last line has no line end was cut off,
  unless it carries an Excel re-save signature (UTF-8 BOM or ``;`` separator): Excel's
  "CSV UTF-8" writes no final line end, so there the last row is judged by its fields.
* **Open quote.** A last line that ends inside a double-quoted field was cut inside it.
* **Field count.** The last data row has fewer fields than every other row (or, alone, than the
  header minus one): it was cut before its last delimiter.
* **Empty last field.** Without a final line end, a last row whose final field is empty where
  every other row has a value was cut inside that field.
* **Layout** (per format, via :func:`incomplete_tail`): the wells (or samples) at the end of the
  file lack a channel (or marker) every other well has: the file was cut at a line boundary.

A cut exactly at a line boundary of a file with no count information (a sizing table, a
one-target qPCR plate, a manifest) cannot be told from a complete file; README says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from chimera.detect import DecodedExport
from chimera.errors import TruncatedExportError
from chimera.textio import has_open_quote

Rows = Sequence[tuple[int, list[str]]]


def truncated(
    export: DecodedExport, detail: str, *, software: str, redo: str | None = None
) -> TruncatedExportError:
    """The error for a cut-off export: says "truncated", what gave it away, and what to do.

    ``redo`` says how to make the file again (default: export it again from ``software``).
    """
    again = redo or f"export it again from {software}"
    msg = (
        f"{export.file_name}: the {software} file is truncated ({detail}); the copy was cut off "
        f"or is still being written: copy the file again, or {again}"
    )
    return TruncatedExportError(msg)


def excel_resaved(export: DecodedExport) -> bool:
    """True for text with an Excel re-save signature: a UTF-8 BOM or ``;`` separators."""
    return (export.bom and export.encoding == "utf-8") or export.delimiter == ";"


def check_last_line(
    export: DecodedExport,
    body: Rows,
    *,
    software: str,
    writer_ends_lines: bool = True,
    short_by: int | None = 0,
    redo: str | None = None,
) -> None:
    """Refuse a text export whose last line or last data row is incomplete.

    ``body`` holds the table's data rows as ``(1-based line, fields)``; ``writer_ends_lines``
    says the software always ends the last line (False for QX Manager, formats.md 10);
    ``redo`` is passed to :func:`truncated`; ``short_by`` is how many fields fewer than the
    header a lone complete row may have (None: ragged rows are normal, as in the GeneMapper
    Genotypes Table, so fields are not counted).

    Raises
    ------
    TruncatedExportError
        When a rule of the module docstring finds the file cut off.
    """
    if export.is_workbook or not export.lines:
        return
    if has_open_quote(export.lines[-1]):
        raise truncated(
            export, "its last line ends inside a quoted field", software=software, redo=redo
        )
    if writer_ends_lines and not export.ends_with_newline and not excel_resaved(export):
        detail = f"line {len(export.lines)}, the last, has no line end"
        raise truncated(export, detail, software=software, redo=redo)
    if not body or short_by is None:
        return
    number, cells = body[-1]
    others = [fields for _, fields in body[:-1]]
    fewest = min(len(fields) for fields in others) if others else None
    check_field_count(
        export, number, len(cells), fewest, software=software, short_by=short_by, redo=redo
    )
    at_end = number == len(export.lines) and not export.ends_with_newline
    position = len(cells) - 1
    if (
        at_end
        and others
        and not cells[position].strip()
        and all(len(fields) > position and fields[position].strip() for fields in others)
    ):
        detail = f"the last field of line {number} is empty where every other row has a value"
        raise truncated(export, detail, software=software, redo=redo)


def check_field_count(
    export: DecodedExport,
    number: int,
    count: int,
    fewest: int | None,
    *,
    software: str,
    short_by: int = 0,
    redo: str | None = None,
) -> None:
    """Refuse a last data row (line ``number``, ``count`` fields) shorter than the others.

    ``fewest`` is the least field count of the other data rows (None when it is alone: then
    the header, less ``short_by`` fields, is the measure).

    Raises
    ------
    TruncatedExportError
        When the last row has fewer fields.
    """
    expected = fewest if fewest is not None else len(export.row(export.header_row)) - short_by
    if count < expected:
        detail = f"line {number} has {count} fields where the other rows have {expected}"
        raise truncated(export, detail, software=software, redo=redo)


def incomplete_tail(keys: Sequence[tuple[str, str]]) -> list[str]:
    """Groups at the end of the file that lack a member every complete group has.

    ``keys`` are ``(group, member)`` in file order, e.g. ``(well, channel)`` or
    ``(sample, marker)``. A file cut at a line boundary leaves the groups it reaches last
    incomplete; an incomplete group followed by complete ones is a layout, not a cut.

    Examples
    --------
    >>> incomplete_tail([("A01", "Ch1"), ("B01", "Ch1"), ("A01", "Ch2")])
    ['B01']
    >>> incomplete_tail([("A01", "Ch1"), ("B01", "Ch1"), ("B01", "Ch2")])
    []
    """
    members: dict[str, set[str]] = {}
    for group, member in keys:
        members.setdefault(group, set()).add(member)
    if not members:
        return []
    full = set().union(*members.values())
    order = list(members)
    incomplete = [group for group in order if members[group] != full]
    if not incomplete or len(incomplete) == len(order):
        return []
    return incomplete if order[-len(incomplete) :] == incomplete else []


def check_layout(
    export: DecodedExport, keys: Sequence[tuple[str, str]], *, software: str, what: str
) -> None:
    """Refuse a text export whose last groups lack rows the others have (:func:`incomplete_tail`).

    ``what`` names a member in the message (``"channel"``, ``"marker"``).

    Raises
    ------
    TruncatedExportError
        When groups at the end of the file are incomplete.
    """
    if export.is_workbook:
        return
    tail = incomplete_tail(keys)
    if tail:
        shown = ", ".join(tail[:6]) + (f" and {len(tail) - 6} more" if len(tail) > 6 else "")
        detail = f"{shown} at the end of the file lack a {what} row that every other one has"
        raise truncated(export, detail, software=software)
