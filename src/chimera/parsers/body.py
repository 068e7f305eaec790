"""The data rows below a table header, read column by column (issue 12).

A table whose double quotes only wrap whole fields (``"B,1"``) and never hold the delimiter is
split by polars, all lines at once: removing its quotes and splitting on the delimiter gives
exactly the fields the quote-aware reader (:func:`chimera.textio.split_line`) gives. Any other
table is split by that reader, line by line. Both give the same :class:`Body`.

Blank lines (no text in any field) and repeated header lines (two exports pasted together)
are not data rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest

import polars as pl

from chimera.detect import DecodedExport
from chimera.textio import dedupe_header, normalise_header, split_line

_BLANKS = r"\s\x1c-\x1f"
"""The characters ``str.strip()`` removes (Python's ``isspace`` set, checked code point by code
point against this regex class)."""


@dataclass(frozen=True)
class Body:
    """Data rows: their 1-based line numbers, field counts and cells by header column.

    ``cells`` has one String column per deduplicated header name (:func:`dedupe_header`),
    ``""`` where a row is too short to reach it.
    """

    lines: pl.Series
    counts: pl.Series
    cells: pl.DataFrame

    def __len__(self) -> int:
        """Number of data rows."""
        return self.cells.height

    def last_row(self) -> tuple[int, int, int | None]:
        """Line number and field count of the last row, and the fewest fields of the others."""
        others = self.counts.head(-1).to_list()
        return int(self.lines[-1]), int(self.counts[-1]), min(others) if others else None

    def column(self, key: str | None) -> pl.Series:
        """The cells of header key ``key`` (all ``""`` for None or a key not in the header)."""
        if key is None or key not in self.cells.columns:
            return pl.Series(key or "", [""] * len(self), dtype=pl.String)
        return self.cells.get_column(key)


def _repeats_header(cells: Sequence[str], header_key: Sequence[str]) -> bool:
    return (
        normalise_header(cells[0]) == header_key[0]
        and [normalise_header(cell) for cell in cells[: len(header_key)]] == header_key
    )


def data_rows(export: DecodedExport, names: Sequence[str]) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of every data row below the header ``names``, row by row."""
    header_key = [normalise_header(name) for name in names]
    return [
        (number, cells)
        for number, cells in export.numbered(export.header_row + 1)
        if "".join(cells).strip() and not _repeats_header(cells, header_key)
    ]


def read_body(export: DecodedExport, names: Sequence[str]) -> Body:
    """The data rows below the header ``names`` of a text export, column by column."""
    body = _split_at_once(export, names)
    return body if body is not None else _split_by_line(export, names)


def _split_by_line(export: DecodedExport, names: Sequence[str]) -> Body:
    """:func:`read_body` by the quote-aware reader, line by line (any table)."""
    rows = data_rows(export, names)
    keys = dedupe_header(names)
    transposed = list(zip_longest(*(cells for _, cells in rows), fillvalue=""))
    empty = [""] * len(rows)
    return Body(
        pl.Series([number for number, _ in rows], dtype=pl.Int64),
        pl.Series([len(cells) for _, cells in rows], dtype=pl.Int64),
        pl.DataFrame(
            {
                key: pl.Series(transposed[i] if i < len(transposed) else empty, dtype=pl.String)
                for i, key in enumerate(keys)
            }
        ),
    )


def _blank(delimiter: str) -> str:
    """A line of blanks, quotes and delimiters only: no text in any field."""
    return rf'^[{_BLANKS}"{re.escape(delimiter)}]*$'


def _whole_field_quotes(delimiter: str) -> str:
    """A line whose every field is unquoted or one ``"..."`` (no quote or delimiter inside)."""
    d = re.escape(delimiter)
    field = rf'(?:[^"{d}]*|"[^"{d}]*")'
    return rf"^{field}(?:{d}{field})*$"


def _split_at_once(export: DecodedExport, names: Sequence[str]) -> Body | None:
    """:func:`read_body` by polars, or None when quotes are not whole-field wrappers only.

    One query splits every line, drops blank ones and picks the header columns; a line
    without quotes always matches :func:`_whole_field_quotes`.
    """
    delimiter = export.delimiter
    start = export.header_row + 1
    tail = export.lines[start:]
    if export.is_workbook or not delimiter or not tail:
        return None
    raw = pl.DataFrame({"raw": tail}, schema={"raw": pl.String})
    text = pl.col("raw")
    if not raw.select(text.str.contains(_whole_field_quotes(delimiter)).all()).item():
        return None
    fields = pl.col("fields")
    keys = dedupe_header(names)
    frame = (
        raw.lazy()
        .select(
            pl.int_range(start + 1, start + 1 + len(tail), dtype=pl.Int64).alias("line"),
            text.str.replace_all('"', "", literal=True).str.split(delimiter).alias("fields"),
            text.str.contains(_blank(delimiter)).alias("blank"),
        )
        .filter(~pl.col("blank"))
        .select(
            "line",
            fields.list.len().cast(pl.Int64).alias("count"),
            fields.list.first().alias("first"),
            *(
                fields.list.get(i, null_on_oob=True).fill_null("").alias(f"{i}")
                for i in range(len(keys))
            ),
        )
        .collect()
    )
    repeated = _repeated_header(frame, export, names)
    if repeated.any():
        frame = frame.filter(~repeated)
    return Body(
        frame.get_column("line"),
        frame.get_column("count").alias("fields"),
        pl.DataFrame({key: frame.get_column(f"{i}") for i, key in enumerate(keys)}),
    )


def _repeated_header(frame: pl.DataFrame, export: DecodedExport, names: Sequence[str]) -> pl.Series:
    """True for rows repeating the header (first cell checked per distinct value, then whole)."""
    header_key = [normalise_header(name) for name in names]
    first = frame.get_column("first")
    candidates = [v for v in first.unique().to_list() if normalise_header(v) == header_key[0]]
    repeated = first.is_in(candidates)
    if not repeated.any():
        return repeated
    lines = frame.get_column("line").to_list()
    flags = [
        bool(flag)
        and _repeats_header(split_line(export.lines[line - 1], export.delimiter), header_key)
        for flag, line in zip(repeated.to_list(), lines, strict=True)
    ]
    return pl.Series(flags, dtype=pl.Boolean)
