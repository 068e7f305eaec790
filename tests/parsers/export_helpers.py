"""Helpers the parser tests share (imported by name, like ``tests/flows/flow_builders.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

REAL_EXPORTS = Path(
    os.environ.get(
        "CHIMERA_REAL_EXPORTS", Path(__file__).resolve().parents[3] / "shared" / "real-exports"
    )
)
"""The folder of ``tests/conftest.py``'s ``real_exports``, for module-level use (fuzz seeds)."""


def read_export(real_exports: Path, folder: str, name: str) -> bytes:
    """Return the bytes of the real export ``folder/name``."""
    return (real_exports / folder / name).read_bytes()


def single_row(frame: pl.DataFrame, **equals: str | None) -> dict[str, object]:
    """Return the one row whose columns equal ``equals`` (a None value matches any)."""
    rows = frame
    for column, value in equals.items():
        if value is not None:
            rows = rows.filter(pl.col(column) == value)
    assert rows.height == 1
    return rows.row(0, named=True)
