"""What every parser returns, and the steps they share that raise Chimera errors."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import polars as pl

from chimera.detect import DecodedExport, ExportFormat
from chimera.errors import ChimeraError, Problem, UnreadableFileError, WrongFormatError
from chimera.textio import parse_number

_POINT_DECIMAL = re.compile(r"^-?\d+\.(\d{1,2}|\d{4,})$")
_DOTTED_THOUSANDS = re.compile(r"^-?\d{1,3}(\.\d{3})+(,\d+)?$")

NO_CT_SENTINELS = frozenset({"", "undetermined", "nan", "n/a", "na", "no ct", "no cq", "-", "none"})
"""Texts meaning "no value" (for a Ct, "no threshold crossing", methods.md 3.4): never 0."""

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
    # Distinct rows in Python: a few thousand short keys, cheaper than a parallel unique().
    values = [_texts(frame.get_column(c).cast(pl.String)) for c in columns]
    rows = sorted(set(zip(*values, strict=True)))
    # One update with every row's bytes gives the digest of one update per row.
    return hashlib.sha256("".join("\x1f".join(row) + "\x1e" for row in rows).encode()).hexdigest()


def _texts(column: pl.Series) -> list[str]:
    """The cells of a String column, null as ``""``."""
    if not column.null_count():
        return column.to_list()
    return ["" if v is None else v for v in column.to_list()]


def frame_of(
    columns: Mapping[str, Sequence[object]], schema: Mapping[str, pl.DataType]
) -> pl.DataFrame:
    """``pl.DataFrame(columns, schema=schema)`` built one typed Series at a time.

    The same frame, with less per-column work than the general constructor does (a plate's
    table is a few hundred rows, so that work is a good part of building it).

    Examples
    --------
    >>> frame_of({"well": ["A1"], "ct": [None]}, {"well": pl.String(), "ct": pl.Float64()}).schema
    Schema([('well', String), ('ct', Float64)])
    """
    return pl.DataFrame(
        [pl.Series(name, columns[name], dtype=dtype) for name, dtype in schema.items()]
    )


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
