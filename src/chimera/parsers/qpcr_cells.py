"""Cells every qPCR results table shares: Ct sentinels, numbers, column positions, the row shape.

Used by the Applied Biosystems (formats.md 5-7) and CFX (formats.md 8) readers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import polars as pl

from chimera.detect import CT_ALIASES
from chimera.errors import Problem
from chimera.textio import match_aliases, normalise_header, parse_number

_POINT_DECIMAL = re.compile(r"^-?\d+\.(\d{1,2}|\d{4,})$")
_DOTTED_THOUSANDS = re.compile(r"^-?\d{1,3}(\.\d{3})+(,\d+)?$")

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
