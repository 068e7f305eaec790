"""Steps every instrument parser shares that raise Chimera errors (the plain reading is textio)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl

from chimera.errors import ChimeraError, UnreadableFileError
from chimera.textio import read_excel_rows

READ_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    UnicodeError,
    pl.exceptions.PolarsError,
)
"""What a malformed export makes the reading code raise, as opposed to a bug elsewhere."""


def open_workbook(data: bytes, *, file_name: str, advice: str) -> dict[str, list[list[str]]]:
    """Return every sheet of a workbook as rows; a corrupt one raises ``UnreadableFileError``.

    ``advice`` ends the message and says what to do (e.g. ``"re-export as CSV"``).
    """
    try:
        return read_excel_rows(data)
    except Exception as err:  # noqa: BLE001 - fastexcel raises its own types for corrupt workbooks
        msg = f"{file_name}: the workbook cannot be opened ({err}); {advice}"
        raise UnreadableFileError(msg) from None


@contextmanager
def unreadable_on_error(file_name: str, export: str) -> Iterator[None]:
    """Turn a :data:`READ_ERRORS` exception into ``UnreadableFileError`` naming ``export``.

    Chimera's own errors pass through unchanged.
    """
    try:
        yield
    except ChimeraError:
        raise
    except READ_ERRORS as err:
        msg = f"{file_name}: could not read the {export} ({err})"
        raise UnreadableFileError(msg) from None
