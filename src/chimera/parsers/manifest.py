"""Sample manifests and infusion logs (CSV, TSV, ``;``-CSV or Excel), matched by column name.

Timestamps without a zone are taken as UTC; a date alone means midnight UTC. Roles use
:class:`schemas.vocab.Role`; specimens are normalised by :mod:`chimera.parsers.specimen`.
Columns that look like direct identifiers (names, dates of birth, MRNs, contacts) refuse the
whole file (issue 13); a date after the ingest's ``now`` is impossible and refused too.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import polars as pl

from chimera.detect import REGISTRY_ALIASES, DecodedExport, ExportFormat
from chimera.errors import DirectIdentifierError, Problem, ValidationFailedError
from chimera.parsers.common import (
    ParsedExport,
    layout_fingerprint,
    number_reader,
    require_format,
)
from chimera.parsers.completeness import check_last_line, truncated
from chimera.parsers.specimen import normalise_specimen
from chimera.textio import normalise_header, pick_columns, uses_decimal_comma
from chimera.validation import validate_frame
from schemas.base import polars_schema
from schemas.inputs import InfusionLog, Manifest, direct_identifier_columns
from schemas.vocab import Role, Specimen

_FORMATS = (
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M%z",
    "%Y-%m-%d %H:%M:%S.%f%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%d %H:%M%z",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
)
_ISO_UTC = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")
"""The one form whose first matching format (``%Y-%m-%dT%H:%M:%S%z``) reads it field by field:
ASCII digits only (``strptime`` also takes other digits and a lower-case ``t``: left to it)."""
_WRITER = "spreadsheet"
_REDO = "save it again from the spreadsheet or LIMS"
_FUTURE_GRACE = timedelta(days=1)
"""A date up to a day after ``now`` is a time-zone slip, not an impossible date."""
_ROLE_SYNONYMS = {
    "baseline": Role.RECIPIENT_BASELINE,
    "pre_dose_baseline": Role.RECIPIENT_BASELINE,
    "recipient": Role.RECIPIENT_BASELINE,
    "germline": Role.RECIPIENT_GERMLINE,
    "recipient_germline_dna": Role.RECIPIENT_GERMLINE,
    "product": Role.DONOR_REFERENCE,
    "ink_product": Role.DONOR_REFERENCE,
    "donor": Role.DONOR_REFERENCE,
    "transplant_donor": Role.HSCT_DONOR,
    "hsct": Role.HSCT_DONOR,
    "allo_donor": Role.HSCT_DONOR,
    "prior_donor": Role.HSCT_DONOR,
    "follow_up": Role.POST_DOSE,
    "ntc": Role.NEGATIVE_CONTROL,
    "blank": Role.NEGATIVE_CONTROL,
}


def parse_timestamp(text: str | None) -> datetime | None:
    """Parse an ISO-like timestamp to an aware UTC datetime; a naive value is read as UTC.

    ``2025-03-03T09:30:00Z`` (what LIMS exports write) is read by :data:`_ISO_UTC` without
    trying the formats; any other text, or a date that does not exist, goes through them.

    Examples
    --------
    >>> parse_timestamp("2025-03-03T09:30:00Z").isoformat()
    '2025-03-03T09:30:00+00:00'
    >>> parse_timestamp("2025-03-03").isoformat()
    '2025-03-03T00:00:00+00:00'
    """
    if text is None or not text.strip():
        return None
    if (match := _ISO_UTC.fullmatch(text.strip())) is not None:
        year, month, day, hour, minute, second = map(int, match.groups())
        with contextlib.suppress(ValueError):
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    value = text.strip().replace("Z", "+00:00")
    value = re.sub(r"([+-]\d\d):(\d\d)$", r"\1\2", value)
    for fmt in _FORMATS:
        try:
            parsed = datetime.strptime(value, fmt)  # noqa: DTZ007 - zone added below when absent
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            return None
    return None


@lru_cache(maxsize=1024)
def normalise_role(text: str | None) -> str | None:
    """Spell a role the contract's way: case, spaces and hyphens are forgiven, a few synonyms mapped.

    Examples
    --------
    >>> normalise_role(" Post-Dose "), normalise_role("Recipient Baseline"), normalise_role("NTC")
    ('post_dose', 'recipient_baseline', 'negative_control')
    >>> normalise_role("HSCT donor"), normalise_role("Recipient germline")
    ('hsct_donor', 'recipient_germline')
    """
    if text is None or not text.strip():
        return None
    role = re.sub(r"[\s\-]+", "_", text.strip().lower())
    role = _ROLE_SYNONYMS.get(role, role)
    # An unknown role keeps the lab's own spelling, so the problem report quotes it as written.
    return str(role) if role in list(Role) else text.strip()


@dataclass(frozen=True)
class _Table:
    """A registry table: the cells of each contract column (stripped), with their file rows."""

    columns: dict[str, Sequence[str]]
    """Cells by contract column name; of two columns with one name, the last."""
    rows: list[int]
    decimal_comma: bool
    file_name: str

    def cells(self, column: str) -> Sequence[str]:
        """The stripped cells of ``column``; all ``""`` when the file has no such column."""
        return self.columns.get(column, ("",) * len(self.rows))

    def text(self, column: str) -> list[str | None]:
        return [cell or None for cell in self.cells(column)]

    def numbers(self, column: str) -> list[float | None]:
        """Numbers of ``column``; a cell that is neither empty, ``NaN`` nor a number is refused.

        Each distinct cell is read once; with any unreadable one, every row is read again so
        that the problems name their rows in file order.
        """
        cells = self.cells(column)
        problems: list[Problem] = []
        read = number_reader(decimal_comma=self.decimal_comma, problems=problems)
        distinct = {cell: read(cell, 0, column) for cell in set(cells)}
        if problems:
            problems.clear()
            values = [read(cell, row, column) for cell, row in zip(cells, self.rows, strict=True)]
        else:
            values = [distinct[cell] for cell in cells]
        _raise(problems, f"{self.file_name}: {len(problems)} unreadable number(s) in {column!r}")
        return values

    def timestamps(self, column: str, *, now: datetime | None) -> list[datetime | None]:
        """Timestamps of ``column``; unreadable ones, and ones after ``now``, are refused."""
        values, problems = [], []
        cells = self.cells(column)
        parsed_cells = {raw: parse_timestamp(raw) for raw in set(cells)}
        for raw, row in zip(cells, self.rows, strict=True):
            parsed = parsed_cells[raw]
            if raw and parsed is None:
                rule, message, fix = "timestamp_format", f"{column!r} is not a date/time", _TIME_FIX
            elif parsed is not None and now is not None and parsed > now + _FUTURE_GRACE:
                rule = "timestamp_in_future"
                message = f"{column!r} is in the future (after {now:%Y-%m-%d %H:%M} UTC)"
                fix = "correct the date (day, month and year) and drop the file again"
            else:
                values.append(parsed)
                continue
            problems.append(Problem(rule, message, row=row, column=column, value=raw, fix=fix))
            values.append(None)
        _raise(problems, f"{self.file_name}: {len(problems)} impossible date/time(s) in {column!r}")
        return values


_TIME_FIX = "write it as 2025-03-03T09:30:00Z (ISO 8601, UTC) or 2025-03-03 09:30"


def _raise(problems: list[Problem], message: str) -> None:
    if problems:
        raise ValidationFailedError(message, problems)


def _read_table(export: DecodedExport, required: Sequence[str]) -> _Table:
    """Header names mapped to contract columns, rows checked whole, identifiers refused."""
    header = export.rows[export.header_row]
    identifiers = direct_identifier_columns(header)
    if identifiers:
        shown = ", ".join(repr(name) for name in identifiers)
        msg = (
            f"{export.file_name}: remove column {shown}: Chimera stores only pseudonymised ids "
            "(no names, dates of birth, record numbers, addresses, phone numbers or e-mail); "
            "delete the column(s) and drop the file again"
        )
        problems = [
            Problem("direct_identifier", "direct identifiers are not accepted", column=name)
            for name in identifiers
        ]
        raise DirectIdentifierError(msg, problems)
    body = [(n, r) for n, r in export.numbered(export.header_row + 1) if any(c.strip() for c in r)]
    check_last_line(export, body, software=_WRITER, redo=_REDO)
    names = []
    for raw in header:
        name = normalise_header(raw)
        names.append(REGISTRY_ALIASES.get(name, name.replace(" ", "_")))
    positions = {name: i for i, name in enumerate(names) if name}
    picked = pick_columns([row for _, row in body], positions.values())
    table = _Table(
        {name: [cell.strip() for cell in picked[i]] for name, i in positions.items()},
        [n for n, _ in body],
        uses_decimal_comma([r for _, r in body], export.delimiter),
        export.file_name,
    )
    _require(export, table, list(required), present=set(names))
    return table


def _require(
    export: DecodedExport, table: _Table, columns: list[str], *, present: set[str]
) -> None:
    missing = [c for c in columns if c not in present]
    if missing:
        problems = [
            Problem(
                rule="column_in_dataframe",
                message=f"required column {c!r} is missing",
                column=c,
                fix="add the column (spelled as shown) and drop the file again",
            )
            for c in missing
        ]
        msg = f"{table.file_name}: missing column(s) {', '.join(missing)}"
        raise ValidationFailedError(msg, problems)
    if not table.rows:
        raise truncated(export, "it has a header but no rows", software=_WRITER, redo=_REDO)


def _specimens(table: _Table) -> tuple[list[str | None], list[str | None], list[str]]:
    """(normalised specimen, as written, notes on values kept as written)."""
    raw = table.text("specimen")
    normalised, unknown = [], Counter[str]()
    for value in raw:
        specimen, known = normalise_specimen(value)
        normalised.append(specimen)
        if not known and specimen is not None:
            unknown[specimen] += 1
    vocabulary = ", ".join(s.value for s in Specimen)
    notes = [
        f"specimen {value!r} ({count} row(s)) is not one of {vocabulary}; kept as written"
        for value, count in sorted(unknown.items())
    ]
    return normalised, raw, notes


def parse_manifest(export: DecodedExport, *, now: datetime | None = None) -> ParsedExport:
    """Read a sample manifest into the :class:`schemas.inputs.Manifest` contract.

    Required columns: ``sample_id, patient_id, role``; ``collected_at`` is required for
    ``post_dose`` rows; optional ``specimen``, ``wbc_per_ul``, ``lymphocytes_per_ul``,
    ``nk_per_ul`` (cells/µL), ``purity_pct`` (sorted fractions, %), ``product_lot``,
    ``cell_bank`` and ``nominal_pct``. ``now`` (the ingest's clock) refuses future dates.
    ``notes`` lists specimens kept as written.

    Raises
    ------
    DirectIdentifierError
        A column looks like a direct identifier.
    TruncatedExportError
        The last line was cut off, or no rows below the header.
    ValidationFailedError
        Missing columns, unreadable or impossible values, rows breaking the contract.
    """
    require_format(export, {ExportFormat.MANIFEST}, expected="a sample manifest")
    table = _read_table(export, ["sample_id", "patient_id", "role"])
    specimen, specimen_raw, notes = _specimens(table)
    frame = pl.DataFrame(
        {
            "sample_id": table.text("sample_id"),
            "patient_id": table.text("patient_id"),
            "role": [normalise_role(cell) for cell in table.cells("role")],
            "collected_at": table.timestamps("collected_at", now=now),
            "specimen": specimen,
            "specimen_raw": specimen_raw,
            "wbc_per_ul": table.numbers("wbc_per_ul"),
            "lymphocytes_per_ul": table.numbers("lymphocytes_per_ul"),
            "nk_per_ul": table.numbers("nk_per_ul"),
            "purity_pct": table.numbers("purity_pct"),
            "product_lot": table.text("product_lot"),
            "cell_bank": table.text("cell_bank"),
            "nominal_pct": table.numbers("nominal_pct"),
        },
        schema_overrides=polars_schema(Manifest),
    )
    frame = validate_frame(frame, Manifest, file_name=export.file_name, source_rows=table.rows)
    purity = frame["purity_pct"].drop_nulls()
    if purity.len() and bool((purity <= 1).all()):
        notes.append("every purity_pct is at most 1: if these are fractions, write them as %")
    return ParsedExport(
        frame,
        export.format,
        layout_fingerprint=layout_fingerprint(frame, ["sample_id"]),
        notes=tuple(notes),
    )


def parse_infusion_log(export: DecodedExport, *, now: datetime | None = None) -> ParsedExport:
    """Read an infusion log into the :class:`schemas.inputs.InfusionLog` contract.

    Required columns: ``patient_id, dose_number, infused_at``; ``cells`` and ``product_lot``
    are optional. ``now`` (the ingest's clock) refuses infusions in the future.

    Raises
    ------
    DirectIdentifierError
        A column looks like a direct identifier.
    TruncatedExportError
        The last line was cut off, or no rows below the header.
    ValidationFailedError
        Missing columns, unreadable or impossible values, rows breaking the contract.
    """
    require_format(export, {ExportFormat.INFUSION_LOG}, expected="an infusion log")
    table = _read_table(export, ["patient_id", "dose_number", "infused_at"])
    frame = pl.DataFrame(
        {
            "patient_id": table.text("patient_id"),
            "dose_number": _dose_numbers(table),
            "infused_at": table.timestamps("infused_at", now=now),
            "cells": table.numbers("cells"),
            "product_lot": table.text("product_lot"),
        },
        schema_overrides=polars_schema(InfusionLog),
    )
    frame = validate_frame(frame, InfusionLog, file_name=export.file_name, source_rows=table.rows)
    return ParsedExport(
        frame, export.format, layout_fingerprint=layout_fingerprint(frame, ["patient_id"])
    )


def _dose_numbers(table: _Table) -> list[int | None]:
    """Dose numbers as whole numbers from 1 to 1000; ``2.5`` or ``1e12`` is refused."""
    doses, problems = [], []
    for value, row in zip(table.numbers("dose_number"), table.rows, strict=True):
        if value is None or (math.isfinite(value) and value.is_integer() and 1 <= value <= 1000):
            doses.append(None if value is None else int(value))
            continue
        problems.append(
            Problem(
                "dose_number",
                "'dose_number' must be a whole number from 1 to 1000",
                row=row,
                column="dose_number",
                value=str(value),
            )
        )
        doses.append(None)
    _raise(problems, f"{table.file_name}: {len(problems)} impossible dose number(s)")
    return doses
