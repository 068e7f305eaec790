"""Cells every qPCR results table shares: the Ct, column positions, the row shape.

Used by the Applied Biosystems (formats.md 5-7) and CFX (formats.md 8) readers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import polars as pl

from chimera.detect import CT_ALIASES
from chimera.parsers.common import NO_CT_SENTINELS
from chimera.textio import match_aliases, normalise_header

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


def parse_ct(
    text: str, *, row: int, read: Callable[[str, int, str], float | None], column: str = "Ct"
) -> float | None:
    """Return the Ct of one well; ``Undetermined``/``NaN``/blank (no amplification) give None."""
    if text.strip().strip('"').casefold() in NO_CT_SENTINELS:
        return None
    return read(text, row, column)
