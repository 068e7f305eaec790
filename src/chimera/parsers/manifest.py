"""Sample manifests and infusion logs (CSV, TSV, ``;``-CSV or Excel), matched by column name.

Timestamps without a zone are taken as UTC; a date alone means midnight UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import polars as pl

from chimera.errors import Problem, UnreadableFileError, ValidationFailedError
from chimera.parsers.common import open_workbook
from chimera.textio import (
    Container,
    decode_text,
    normalise_header,
    parse_number,
    read_rows,
    sniff_container,
    sniff_delimiter,
    split_lines,
    uses_decimal_comma,
)
from chimera.validation import validate_frame
from schemas.inputs import ROLES, InfusionLog, Manifest

_ALIASES = {
    "sample": "sample_id",
    "sample id": "sample_id",
    "sample name": "sample_id",
    "patient": "patient_id",
    "patient id": "patient_id",
    "subject_id": "patient_id",
    "collection time": "collected_at",
    "collected": "collected_at",
    "collection_date": "collected_at",
    "wbc": "wbc_per_ul",
    "wbc_per_ul": "wbc_per_ul",
    "lymphocytes": "lymphocytes_per_ul",
    "nominal": "nominal_pct",
    "expected_pct": "nominal_pct",
    "nominal_pct_ink": "nominal_pct",
    "lot": "product_lot",
    "product lot": "product_lot",
    "dose": "dose_number",
    "dose number": "dose_number",
    "infusion time": "infused_at",
    "cell_dose": "cells",
}
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


def parse_timestamp(text: str | None) -> datetime | None:
    """Parse an ISO-like timestamp to an aware UTC datetime; a naive value is read as UTC.

    Examples
    --------
    >>> parse_timestamp("2025-03-03T09:30:00Z").isoformat()
    '2025-03-03T09:30:00+00:00'
    >>> parse_timestamp("2025-03-03").isoformat()
    '2025-03-03T00:00:00+00:00'
    """
    if text is None or not text.strip():
        return None
    value = text.strip().replace("Z", "+00:00")
    value = re.sub(r"([+-]\d\d):(\d\d)$", r"\1\2", value)
    for fmt in _FORMATS:
        try:
            parsed = datetime.strptime(value, fmt)  # noqa: DTZ007 - zone added below when absent
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    return None


def _table_rows(data: bytes, file_name: str) -> tuple[list[str], list[list[str]], int, bool]:
    """Return header, data rows, the 1-based line of the header, and the decimal-comma flag."""
    container = sniff_container(data)
    if container in (Container.XLS, Container.XLSX):
        sheets = open_workbook(data, file_name=file_name, advice="re-save it as .xlsx or CSV")
        rows = next(iter(sheets.values()), [])
        decimal_comma = False
    else:
        lines = split_lines(decode_text(data))
        if not any(line.strip() for line in lines):
            msg = f"{file_name}: the file is empty"
            raise UnreadableFileError(msg)
        first = next(line for line in lines if line.strip())
        delimiter = sniff_delimiter(first)
        rows = read_rows(lines, delimiter)
        decimal_comma = uses_decimal_comma(rows, delimiter)
    for index, row in enumerate(rows):
        if any(cell.strip() for cell in row):
            return row, rows[index + 1 :], index + 1, decimal_comma
    msg = f"{file_name}: no header row found"
    raise UnreadableFileError(msg)


def _records(data: bytes, file_name: str) -> tuple[list[dict[str, str]], list[int], bool]:
    header, rows, header_line, decimal_comma = _table_rows(data, file_name)
    names = []
    for raw in header:
        name = normalise_header(raw)
        names.append(_ALIASES.get(name, name.replace(" ", "_")))
    records, lines = [], []
    for offset, row in enumerate(rows, start=1):
        if not any(cell.strip() for cell in row):
            continue
        padded = row + [""] * (len(names) - len(row))
        records.append({n: padded[i].strip() for i, n in enumerate(names) if n})
        lines.append(header_line + offset)
    return records, lines, decimal_comma


def _require(records: list[dict[str, str]], columns: list[str], file_name: str) -> None:
    present = set(records[0]) if records else set()
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
        msg = f"{file_name}: missing column(s) {', '.join(missing)}"
        raise ValidationFailedError(msg, problems)
    if not records:
        msg = f"{file_name}: the table has a header but no rows"
        raise ValidationFailedError(msg, [Problem(rule="not_empty", message="no data rows")])


def _timestamps(
    records: list[dict[str, str]], lines: list[int], column: str, file_name: str
) -> list[datetime | None]:
    values, problems = [], []
    for record, line in zip(records, lines, strict=True):
        raw = record.get(column, "")
        parsed = parse_timestamp(raw)
        if raw and parsed is None:
            problems.append(
                Problem(
                    rule="timestamp_format",
                    message=f"{column!r} is not a date/time Chimera can read",
                    row=line,
                    column=column,
                    value=raw,
                    fix="write it as 2025-03-03T09:30:00Z (ISO 8601, UTC) or 2025-03-03 09:30",
                )
            )
        values.append(parsed)
    if problems:
        msg = f"{file_name}: {len(problems)} unreadable date/time value(s) in {column!r}"
        raise ValidationFailedError(msg, problems)
    return values


def _numbers(
    records: list[dict[str, str]], column: str, *, decimal_comma: bool
) -> list[float | None]:
    return [parse_number(r.get(column), decimal_comma=decimal_comma) for r in records]


def _text(records: list[dict[str, str]], column: str) -> list[str | None]:
    return [r.get(column) or None for r in records]


_ROLE_SYNONYMS = {
    "baseline": "recipient_baseline",
    "pre_dose_baseline": "recipient_baseline",
    "recipient": "recipient_baseline",
    "product": "donor_reference",
    "ink_product": "donor_reference",
    "donor": "donor_reference",
    "follow_up": "post_dose",
    "ntc": "negative_control",
    "blank": "negative_control",
}


def normalise_role(text: str | None) -> str | None:
    """Spell a role the contract's way: case, spaces and hyphens are forgiven, a few synonyms mapped.

    Examples
    --------
    >>> normalise_role(" Post-Dose "), normalise_role("Recipient Baseline"), normalise_role("NTC")
    ('post_dose', 'recipient_baseline', 'negative_control')
    """
    if text is None or not text.strip():
        return None
    role = re.sub(r"[\s\-]+", "_", text.strip().lower())
    role = _ROLE_SYNONYMS.get(role, role)
    # An unknown role keeps the lab's own spelling, so the problem report quotes it as written.
    return role if role in ROLES else text.strip()


def parse_manifest(data: bytes, *, file_name: str) -> pl.DataFrame:
    """Read a sample manifest into the :class:`schemas.inputs.Manifest` contract.

    Required columns: ``sample_id, patient_id, role``; ``collected_at`` is required for
    ``post_dose`` rows; ``specimen``, ``wbc_per_ul``, ``lymphocytes_per_ul`` (cells/µL) and
    ``product_lot`` are optional.
    """
    records, lines, decimal_comma = _records(data, file_name)
    _require(records, ["sample_id", "patient_id", "role"], file_name)
    frame = pl.DataFrame(
        {
            "sample_id": _text(records, "sample_id"),
            "patient_id": _text(records, "patient_id"),
            "role": [normalise_role(r.get("role")) for r in records],
            "collected_at": _timestamps(records, lines, "collected_at", file_name),
            "specimen": _text(records, "specimen"),
            "wbc_per_ul": _numbers(records, "wbc_per_ul", decimal_comma=decimal_comma),
            "lymphocytes_per_ul": _numbers(
                records, "lymphocytes_per_ul", decimal_comma=decimal_comma
            ),
            "product_lot": _text(records, "product_lot"),
            "nominal_pct": _numbers(records, "nominal_pct", decimal_comma=decimal_comma),
        },
        schema_overrides={"collected_at": pl.Datetime("us", "UTC")},
    )
    return validate_frame(frame, Manifest, file_name=file_name, source_rows=lines)


def parse_infusion_log(data: bytes, *, file_name: str) -> pl.DataFrame:
    """Read an infusion log into the :class:`schemas.inputs.InfusionLog` contract.

    Required columns: ``patient_id, dose_number, infused_at``; ``cells`` and ``product_lot``
    are optional.
    """
    records, lines, decimal_comma = _records(data, file_name)
    _require(records, ["patient_id", "dose_number", "infused_at"], file_name)
    doses = _numbers(records, "dose_number", decimal_comma=decimal_comma)
    frame = pl.DataFrame(
        {
            "patient_id": _text(records, "patient_id"),
            "dose_number": [None if d is None else int(d) for d in doses],
            "infused_at": _timestamps(records, lines, "infused_at", file_name),
            "cells": _numbers(records, "cells", decimal_comma=decimal_comma),
            "product_lot": _text(records, "product_lot"),
        },
        schema_overrides={"infused_at": pl.Datetime("us", "UTC"), "dose_number": pl.Int32},
    )
    return validate_frame(frame, InfusionLog, file_name=file_name, source_rows=lines)
