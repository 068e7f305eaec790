"""Text that leaves Chimera for a spreadsheet: formula injection neutralised (issue 13).

A spreadsheet program runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula, and
TAB or CR can hide such a start (OWASP "CSV Injection"). Every CSV/XLSX Chimera writes passes its
text cells through :func:`neutralise_frame`, which prefixes a ``'`` so the cell reads as text.
Numbers stay numbers: only string columns are touched.
"""

from __future__ import annotations

import json

import polars as pl

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""Characters that make a spreadsheet treat a text cell as a formula (OWASP CSV Injection)."""


def neutralise_text(text: str) -> str:
    """Return ``text`` with a leading ``'`` when a spreadsheet would run it as a formula.

    Examples
    --------
    >>> neutralise_text("=HYPERLINK(1)")
    "'=HYPERLINK(1)"
    >>> neutralise_text("P01-D004")
    'P01-D004'
    """
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _neutralised(column: str) -> pl.Expr:
    value = pl.col(column)
    risky = pl.lit(False)
    for start in FORMULA_STARTS:
        risky = risky | value.str.starts_with(start)
    return pl.when(risky).then(pl.lit("'") + value).otherwise(value).alias(column)


def neutralise_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Neutralise every text cell of ``frame`` (string and categorical columns; others untouched).

    Examples
    --------
    >>> frame = pl.DataFrame({"sample_id": ["-1+1", "P01"], "pct_ink": [-1.0, 2.0]})
    >>> neutralise_frame(frame).rows()
    [("'-1+1", -1.0), ('P01', 2.0)]
    """
    text = [
        name
        for name, dtype in frame.schema.items()
        if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
    ]
    if not text:
        return frame
    return frame.with_columns(pl.col(text).cast(pl.String)).with_columns(
        [_neutralised(name) for name in text]
    )


def safe_csv(frame: pl.DataFrame) -> str:
    """The frame as CSV text with formula injection neutralised (nested columns as JSON)."""
    nested = [
        name for name, dtype in frame.schema.items() if isinstance(dtype, pl.List | pl.Struct)
    ]
    if nested:
        frame = frame.with_columns(pl.col(nested).map_elements(_json, return_dtype=pl.String))
    return neutralise_frame(frame).write_csv()


def _json(value: object) -> str:
    if isinstance(value, pl.Series):
        value = value.to_list()
    return json.dumps(value, default=str)
