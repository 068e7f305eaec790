r"""Whole-column cell reading: polars string operations instead of a Python call per cell.

Each function gives exactly what the per-cell reader it replaces gives
(:func:`chimera.textio.clean_cell`, a parser's number reader): cells the polars operations
cannot be trusted with (non-ASCII text, anything but a plain decimal number) go to that reader
one by one, in file order, so that problems are listed as a reader over the rows lists them.

Examples
--------
>>> clean_columns({"well": [' "B1" ', "", "A2"]})["well"].to_list()
['B1', None, 'A2']
>>> values, done = plain_numbers({"ct": ["1.5", "", "n/a", "1e999"]})["ct"]
>>> values.to_list(), done.to_list()
([1.5, None, None, None], [True, True, False, False])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from chimera.textio import clean_cell

ASCII_BLANKS = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
"""The ASCII characters ``str.strip()`` removes."""
_NOT_ASCII = r"[^\x00-\x7f]"
_UNCLEAN = r'^[ \t\n\r\x0b\x0c\x1c-\x1f"]|[ \t\n\r\x0b\x0c\x1c-\x1f"]$|[^\x00-\x7f]'
"""A cell :func:`clean_columns` must clean: an ASCII blank or a quote at an end, or non-ASCII."""
Cells = Sequence[str] | pl.Series
"""One column's cells: a list of strings or a String series."""


def _is_ascii(name: str) -> pl.Expr:
    """True for each cell of plain ASCII text (polars and Python agree on its case and blanks)."""
    return ~pl.col(name).str.contains(_NOT_ASCII)


def _strings(columns: Mapping[str, Cells]) -> pl.DataFrame:
    return pl.DataFrame(
        [pl.Series(name, values, dtype=pl.String) for name, values in columns.items()]
    )


def _clean(name: str) -> pl.Expr:
    text = pl.col(name).str.strip_chars(ASCII_BLANKS)
    quoted = text.str.starts_with('"') | text.str.ends_with('"')
    unquoted = text.str.strip_chars('"').str.strip_chars(ASCII_BLANKS)
    return pl.when(quoted).then(unquoted).otherwise(text).replace("", None).alias(name)


def clean_columns(columns: Mapping[str, Cells]) -> dict[str, pl.Series]:
    """:func:`chimera.textio.clean_cell` of every cell: blanks and outer quotes off, empty = null.

    One polars pass finds the columns with a cell to clean (an ASCII blank or a quote at an
    end, or a non-ASCII character); the others only have their empty cells nulled. In the
    columns to clean ``str.strip`` removes exactly :data:`ASCII_BLANKS` from ASCII text; a
    cell with any other character is cleaned by :func:`clean_cell` itself.
    """
    frame = _strings(columns)
    names = list(columns)
    first = frame.select(
        *(pl.col(name).replace("", None).alias(f"clean {i}") for i, name in enumerate(names)),
        *(
            pl.col(name).str.contains(_UNCLEAN).any().alias(f"unclean {i}")
            for i, name in enumerate(names)
        ),
    )
    result = {name: first.get_column(f"clean {i}").alias(name) for i, name in enumerate(names)}
    unclean = [name for i, name in enumerate(names) if first.get_column(f"unclean {i}").any()]
    if unclean:
        result.update(_clean_columns({name: columns[name] for name in unclean}))
    return result


def _clean_columns(columns: Mapping[str, Cells]) -> dict[str, pl.Series]:
    """:func:`clean_columns` of columns with cells to clean, one polars pass over them."""
    frame = _strings(columns)
    names = list(columns)
    both = frame.select(
        *(_clean(name).alias(f"clean {i}") for i, name in enumerate(names)),
        *((~_is_ascii(name)).alias(f"other {i}") for i, name in enumerate(names)),
    )
    result: dict[str, pl.Series] = {}
    for i, (name, values) in enumerate(columns.items()):
        column = both.get_column(f"clean {i}").alias(name)
        other = both.get_column(f"other {i}")
        if other.any():
            rest = np.flatnonzero(other.to_numpy()).tolist()
            column = column.scatter(rest, [clean_cell(values[j]) for j in rest])
        result[name] = column
    return result


def plain_numbers(columns: Mapping[str, Cells]) -> dict[str, tuple[pl.Series, pl.Series]]:
    """Per column: Float64 of the plain finite numbers (else null), and which cells are done.

    Done = a finite number polars reads (blanks stripped), or an empty cell (which every
    number reader reads as None). Polars reads a subset of what Python's ``float`` reads
    (ASCII decimal numbers, no blanks, underscores or other digits), each to the same value,
    so no pattern needs checking first. Blanks are stripped only when some cell is not read
    as it is (a cell polars reads has none to strip).
    """
    frame = _strings(columns)
    read = _read_floats(frame, strip=False)
    if not all(read.get_column(f"done {i}").all() for i in range(len(columns))):
        read = _read_floats(frame, strip=True)
    return {
        name: (
            read.get_column(f"value {i}").alias(name),
            read.get_column(f"done {i}").alias(name),
        )
        for i, name in enumerate(columns)
    }


def _read_floats(frame: pl.DataFrame, *, strip: bool) -> pl.DataFrame:
    """``value i`` and ``done i`` of every column ``i`` of ``frame`` (:func:`plain_numbers`)."""
    exprs = []
    for i, name in enumerate(frame.columns):
        text = pl.col(name).str.strip_chars(ASCII_BLANKS) if strip else pl.col(name)
        number = text.cast(pl.Float64, strict=False)
        ok = number.is_finite().fill_null(value=False)
        exprs.append(pl.when(ok).then(number).alias(f"value {i}"))
        exprs.append((ok | (pl.col(name) == "")).alias(f"done {i}"))
    return frame.select(exprs)


Column = tuple[pl.Series, pl.Series, Callable[[int], object]]
"""Values read so far, which cells are done, and how to read cell ``i`` of the rest."""


def read_in_file_order(columns: Sequence[Column]) -> list[pl.Series]:
    """Fill in every column's cells that are not done, row by row and then column by column."""
    rest = sorted(
        (int(i), order)
        for order, (_, done, _) in enumerate(columns)
        for i in np.flatnonzero(~done.to_numpy())
    )
    filled: list[dict[int, object]] = [{} for _ in columns]
    for i, order in rest:
        filled[order][i] = columns[order][2](i)
    return [
        values.scatter(list(cells), list(cells.values())) if cells else values
        for (values, _, _), cells in zip(columns, filled, strict=True)
    ]
