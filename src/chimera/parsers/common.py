"""What every parser returns, and the steps they share that raise Chimera errors."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import polars as pl

from chimera.detect import DecodedExport, ExportFormat
from chimera.errors import ChimeraError, UnreadableFileError, WrongFormatError

READ_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    UnicodeError,
    OverflowError,
    pl.exceptions.PolarsError,
)
"""What a malformed export makes the reading code raise, as opposed to a bug elsewhere."""


@dataclass(frozen=True)
class ParsedExport:
    """A validated tidy frame and what the file itself says about the run it came from."""

    frame: pl.DataFrame
    format: ExportFormat
    run_id: str | None = None
    """Run or plate identity from the file's own header (AB ``Experiment Name``/barcode/run end,
    CFX run information, GeneMapper ``Run Name``); None when the file carries none."""
    layout_fingerprint: str | None = None
    """sha256 of the sorted set of (well, sample, target) rows (STR: (sample, marker)): equal for
    a re-export or re-analysis of one plate, different for another plate with the same controls."""
    notes: tuple[str, ...] = ()
    """Plain-language remarks for the ledger reason (e.g. specimens kept as written)."""


def layout_fingerprint(frame: pl.DataFrame, columns: Sequence[str]) -> str:
    """Return the sha256 (hex) of the frame's distinct ``columns`` rows, order-independent.

    Examples
    --------
    >>> a = pl.DataFrame({"well": ["A1", "B1"], "sample_id": ["S1", None]})
    >>> layout_fingerprint(a, ["well", "sample_id"]) == layout_fingerprint(a.reverse(), ["well", "sample_id"])
    True
    """
    keys = frame.select(pl.col(c).cast(pl.String).fill_null("") for c in columns).unique()
    digest = hashlib.sha256()
    for row in sorted(keys.iter_rows()):
        digest.update(("\x1f".join(row) + "\x1e").encode())
    return digest.hexdigest()


def join_run_id(parts: Sequence[tuple[str, str | None]]) -> str | None:
    """``"key: value; key: value"`` of the parts with a value (``NA`` and blanks dropped)."""
    kept = [
        f"{key}: {value.strip()}"
        for key, value in parts
        if value and value.strip() not in ("", "NA")
    ]
    return "; ".join(kept) or None


def require_format(
    export: DecodedExport, formats: Collection[ExportFormat], *, expected: str
) -> None:
    """Refuse an export that detection recognised as another format.

    Raises
    ------
    WrongFormatError
        Naming the expected and the found format.
    """
    if export.format not in formats:
        msg = (
            f"{export.file_name}: expected {expected}, found a {export.format.value} export; "
            "send it to the matching reader"
        )
        raise WrongFormatError(msg)


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
