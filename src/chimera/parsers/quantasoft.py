"""Bio-Rad ddPCR well exports (QuantaSoft 1.7, older QuantaSoft, QX Manager) to ``DdpcrWells``.

Layouts and quirks: formats.md sections 9 (QuantaSoft: one row per well per channel, merged rows
``M01…`` with a quoted ``MergedWells`` list, trailing comma, short rows in the old export), 10
(QX Manager: BOM, ``µ`` in headers, ``TargetType`` ``Unknown``/``Reference``, ``No Call``
concentrations with counts present) and 11 (droplet amplitude files, refused). Counts are kept
as exported; λ and ratios are recomputed from them by :mod:`chimera.calculate.ddpcr`.

The parser is instrument-only: ``target_role`` comes from the export's own labels (QX Manager
``Reference`` → ``reference``, ``Unknown`` → ``marker``; QuantaSoft ``Ch2Reference`` →
``reference``, otherwise null). Reference genes are recognised by name in the calculation.
``source_row`` is the 1-based line (or spreadsheet row) in the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

import polars as pl

from chimera.detect import Detection, ExportFormat, detect_rows
from chimera.errors import (
    NotChimerismAssayError,
    Problem,
    UnreadableFileError,
    UnrecognisedExportError,
    ValidationFailedError,
)
from chimera.parsers.common import open_workbook
from chimera.textio import (
    Container,
    clean_cell,
    decode_text,
    dedupe_header,
    match_aliases,
    normalise_header,
    parse_number,
    rows_to_records,
    sniff_container,
    sniff_delimiter,
    split_line,
    split_lines,
    uses_decimal_comma,
)
from chimera.validation import validate_frame
from schemas.inputs import DdpcrWells

_SOFTWARE = {
    ExportFormat.QUANTASOFT: "quantasoft",
    ExportFormat.QUANTASOFT_OLD: "quantasoft_old",
    ExportFormat.QX_MANAGER: "qx_manager",
}

# Normalised header aliases (formats.md section 12), first match wins.
_ALIASES: dict[str, tuple[str, ...]] = {
    "well": ("well",),
    "sample": ("sample description 1", "sample", "sample name"),
    "target": ("target", "assay"),
    "target_type": ("targettype", "target type", "typeassay"),
    "dye": ("dyename(s)", "dye name(s)", "dyename", "dye"),
    "sample_type": ("sampletype", "sample type"),
    "status": ("status",),
    "accepted": ("accepteddroplets", "accepted droplets"),
    "positives": ("positives",),
    "negatives": ("negatives",),
    "concentration": ("concentration", "conc(copies/ul)"),
    "merged": ("mergedwells", "merged wells"),
}
_REQUIRED = ("well", "target", "accepted", "positives")

_CHANNEL_PREFIX = re.compile(r"^\s*(ch\s*\d+)\s*(.*)$", re.IGNORECASE)
_SAMPLE_TYPES = {
    "unknown": "unknown",
    "reference": "unknown",
    "ntc": "ntc",
    "no template control": "ntc",
    "posctrl": "positive_control",
    "positive control": "positive_control",
    "poscontrol": "positive_control",
    "negctrl": "negative_control",
    "negative control": "negative_control",
    "negcontrol": "negative_control",
    "blank": "blank",
}
# Written in number columns to mean "no value" (formats.md section 13); never parsed as 0.
_SENTINELS = frozenset({"no call", "nan", "n/a", "na", "undetermined", "-", "--", "none"})
_DOT_DECIMAL = re.compile(r"^-?\d+\.\d+$")
_REEXPORT = "re-export the plate from the instrument software; do not edit the CSV."

_WELL_SCHEMA: dict[str, pl.DataType] = {
    "sample_id": pl.String(),
    "well": pl.String(),
    "target": pl.String(),
    "channel": pl.String(),
    "target_role": pl.String(),
    "sample_type": pl.String(),
    "status": pl.String(),
    "accepted_droplets": pl.Int64(),
    "positives": pl.Int64(),
    "negatives": pl.Int64(),
    "concentration_copies_per_ul": pl.Float64(),
    "droplet_volume_nl": pl.Float64(),
    "merged_wells": pl.String(),
    "is_merged": pl.Boolean(),
    "software": pl.String(),
    "source_row": pl.Int32(),
}


def reject_amplitude_file(file_name: str) -> NoReturn:
    """Refuse a per-droplet amplitude export (formats.md section 11): it is not a well result.

    Raises
    ------
    NotChimerismAssayError
        Always, with what to export instead.
    """
    msg = (
        f"{file_name}: this is a per-droplet amplitude export of one well (used only to audit "
        "droplet thresholds), not a well result; export the well-level CSV (QuantaSoft "
        "'Export CSV' / QX Manager 'Export well data') instead and drop that file in the inbox."
    )
    raise NotChimerismAssayError(msg)


@dataclass(frozen=True)
class _Table:
    detection: Detection
    header: list[str]
    rows: list[tuple[int, list[str]]]
    """(1-based source row, fields) of every non-blank line after the header."""
    decimal_comma: bool


def _read_table(data: bytes, *, file_name: str) -> _Table:
    """Find the header by content and split the rows (formats.md section 1)."""
    container = sniff_container(data)
    if container is Container.BINARY:
        msg = f"{file_name}: binary file; expected a QuantaSoft or QX Manager CSV export"
        raise UnrecognisedExportError(msg)
    numbered: list[tuple[int, list[str]]]
    delimiter = ","
    lines: list[str] = []
    if container in (Container.XLS, Container.XLSX):
        sheets = open_workbook(data, file_name=file_name, advice="re-export as CSV")
        numbered = []
        for rows in sheets.values():
            if detect_rows(rows) is not None:
                numbered = [(i + 1, row) for i, row in enumerate(rows)]
                break
    else:
        try:
            text = decode_text(data)
        except UnicodeDecodeError:  # pragma: no cover - cp1252 decodes almost everything
            msg = f"{file_name}: cannot be decoded as UTF-8 or cp1252 text; re-export the CSV"
            raise UnreadableFileError(msg) from None
        numbered = []
        lines = split_lines(text)
        for index, line in enumerate(lines):
            numbered.append((index + 1, split_line(line, sniff_delimiter(line))))
    detection = detect_rows([fields for _, fields in numbered])
    if detection is None or detection.header_line is None:
        msg = (
            f"{file_name}: expected a QuantaSoft or QX Manager well export (header with Well, "
            "Target/Assay, AcceptedDroplets/Accepted Droplets, Positives); found no such header "
            "in the first 60 lines. Re-export with QuantaSoft 'Export CSV' or QX Manager "
            "'Export well data'."
        )
        raise UnrecognisedExportError(msg)
    if detection.format is ExportFormat.DDPCR_AMPLITUDE:
        reject_amplitude_file(file_name)
    if detection.format not in _SOFTWARE:
        msg = (
            f"{file_name}: expected a ddPCR well export (QuantaSoft, QX Manager), found a "
            f"{detection.format.value} export; send it to the matching reader"
        )
        raise UnrecognisedExportError(msg)
    header_index = detection.header_line
    header = numbered[header_index][1]
    if lines:
        delimiter = sniff_delimiter(lines[header_index])
    body = [
        (row, fields)
        for row, fields in numbered[header_index + 1 :]
        if any(f.strip() for f in fields)
    ]
    decimal_comma = uses_decimal_comma([fields for _, fields in body], delimiter)
    return _Table(detection, header, body, decimal_comma)


def _column_map(header: list[str]) -> dict[str, str]:
    """Map canonical names to the file's own (deduplicated) header names."""
    normalised: dict[str, str] = {}
    for raw in dedupe_header(header):
        normalised.setdefault(normalise_header(raw), raw)
    return match_aliases(normalised, _ALIASES)


class _Numbers:
    """Convert number cells, collecting a problem for every cell that is not a number."""

    def __init__(self, *, decimal_comma: bool) -> None:
        self.decimal_comma = decimal_comma
        self.problems: list[Problem] = []

    def _reject(
        self, rule: str, message: str, *, column: str, row: int, value: str, fix: str = _REEXPORT
    ) -> None:
        """Record one cell that cannot be read."""
        self.problems.append(
            Problem(rule=rule, message=message, row=row, column=column, value=value, fix=fix)
        )

    def real(self, value: str, *, column: str, row: int) -> float | None:
        text = value.strip()
        if not text or text.casefold() in _SENTINELS:
            return None
        if self.decimal_comma and _DOT_DECIMAL.match(text):
            self._reject(
                "mixed_decimal_marks",
                "this ';'-separated file writes decimals with a comma elsewhere",
                column=column,
                row=row,
                value=text,
                fix="re-export with one decimal convention (a dot decimal sign is safest).",
            )
            return None
        number = parse_number(text, decimal_comma=self.decimal_comma)
        if number is None:
            self._reject(
                "not_a_number",
                f"{column!r} must be a number or empty",
                column=column,
                row=row,
                value=text,
            )
        return number

    def count(self, value: str, *, column: str, row: int) -> int | None:
        number = self.real(value, column=column, row=row)
        if number is None:
            return None
        if not number.is_integer():
            self._reject(
                "not_a_count",
                f"{column!r} must be a whole number of droplets",
                column=column,
                row=row,
                value=value.strip(),
            )
            return None
        return int(number)


def _merged_members(value: str | None) -> str | None:
    """``"(A01,B01,C01)"`` → ``"A01,B01,C01"``; empty → None."""
    text = clean_cell(value)
    if text is None:
        return None
    members = [m.strip() for m in re.split(r"[,;\s]+", text.strip("()[] ")) if m.strip()]
    return ",".join(members) or None


def _roles(
    target_type: str | None, dye: str | None, sample_type: str | None, *, software: str
) -> tuple[str | None, str | None, str | None]:
    """Return (channel, target_role, sample_type) from the export's own labels."""
    channel: str | None = None
    kind = (target_type or "").strip()
    match = _CHANNEL_PREFIX.match(kind)
    if match:
        channel = match.group(1).replace(" ", "").capitalize()
        kind = match.group(2)
    kind = kind.strip().casefold()
    channel = dye or channel
    role: str | None = None
    if kind == "reference":
        role = "reference"
    elif kind == "unknown" and software == "qx_manager":
        role = "marker"
    label = (sample_type or "").strip().casefold()
    resolved: str | None
    if label:
        resolved = _SAMPLE_TYPES.get(label, label)
    else:
        resolved = _SAMPLE_TYPES.get(kind) if kind else None
    return channel, role, resolved


def parse_ddpcr(
    data: bytes, *, file_name: str, droplet_volume_nl: Mapping[str, float]
) -> pl.DataFrame:
    r"""Parse a QuantaSoft (1.7 or older) or QX Manager well export into ``DdpcrWells`` rows.

    One row per well per target (a duplex well gives two rows); QuantaSoft merged rows
    (``M01…``) are kept with ``is_merged`` and their member wells in ``merged_wells``, so that
    the calculation can pool either them or their members, never both (methods.md 5.4).

    Parameters
    ----------
    data
        The export's bytes (comma, ``;`` with decimal comma, or TAB; BOM and CRLF/LF/CR fine).
    file_name
        Used in messages only.
    droplet_volume_nl
        Droplet volume per software (``quantasoft``, ``quantasoft_old``, ``qx_manager``) in nL;
        ``DdpcrSettings.droplet_volume_nl``.

    Raises
    ------
    NotChimerismAssayError
        For a per-droplet amplitude export.
    UnrecognisedExportError
        When no ddPCR well-export header is found.
    ValidationFailedError
        When cells are not numbers or rows break the ``DdpcrWells`` contract.

    Examples
    --------
    >>> csv = (
    ...     b"Well,ExptType,Experiment,Sample,TargetType,Target,Status,Concentration,"
    ...     b"Positives,Negatives,AcceptedDroplets,MergedWells\n"
    ...     b'"A01",Absolute Quantification,"","P1-D8",Ch1Unknown,"M1",,1.2,20,16000,16020,""\n'
    ... )
    >>> volumes = {"quantasoft": 0.85, "quantasoft_old": 0.91, "qx_manager": 0.85}
    >>> frame = parse_ddpcr(csv, file_name="plate.csv", droplet_volume_nl=volumes)
    >>> frame.select("well", "target", "channel", "positives", "software").row(0)
    ('A01', 'M1', 'Ch1', 20, 'quantasoft')
    """
    table = _read_table(data, file_name=file_name)
    software = _SOFTWARE[table.detection.format]
    if software not in droplet_volume_nl:
        msg = f"no droplet volume configured for {software!r}; set ddpcr.droplet_volume_nl"
        raise ValueError(msg)
    volume = float(droplet_volume_nl[software])
    columns = _column_map(table.header)
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        msg = (
            f"{file_name}: the {software} export lacks column(s) {', '.join(missing)}; "
            "re-export the well data with all columns"
        )
        raise ValidationFailedError(
            msg, [Problem(rule="column_in_dataframe", message=msg, column=m) for m in missing]
        )
    numbers = _Numbers(decimal_comma=table.decimal_comma)
    records = rows_to_records(table.header, [fields for _, fields in table.rows])
    out: list[dict[str, object]] = []
    for (row, _fields), record in zip(table.rows, records, strict=True):

        def cell(name: str, record: dict[str, str] = record) -> str | None:
            column = columns.get(name)
            return None if column is None else record.get(column)

        positives = numbers.count(cell("positives") or "", column="Positives", row=row)
        accepted = numbers.count(cell("accepted") or "", column="AcceptedDroplets", row=row)
        negatives = numbers.count(cell("negatives") or "", column="Negatives", row=row)
        if accepted is None and positives is not None and negatives is not None:
            accepted = positives + negatives
        if negatives is None and positives is not None and accepted is not None:
            negatives = accepted - positives
        channel, role, sample_type = _roles(
            clean_cell(cell("target_type")),
            clean_cell(cell("dye")),
            clean_cell(cell("sample_type")),
            software=software,
        )
        members = _merged_members(cell("merged"))
        out.append(
            {
                "sample_id": clean_cell(cell("sample")),
                "well": clean_cell(cell("well")),
                "target": clean_cell(cell("target")),
                "channel": channel,
                "target_role": role,
                "sample_type": sample_type,
                "status": clean_cell(cell("status")),
                "accepted_droplets": accepted,
                "positives": positives,
                "negatives": negatives,
                "concentration_copies_per_ul": numbers.real(
                    cell("concentration") or "", column="Concentration", row=row
                ),
                "droplet_volume_nl": volume,
                "merged_wells": members,
                "is_merged": members is not None,
                "software": software,
                "source_row": row,
            }
        )
    if numbers.problems:
        msg = (
            f"{file_name}: {len(numbers.problems)} cell(s) of the {software} export are not "
            "valid numbers; see the list below"
        )
        raise ValidationFailedError(msg, numbers.problems)
    if not out:
        msg = (
            f"{file_name}: the {software} export has a header but no well rows; re-export the plate"
        )
        raise UnreadableFileError(msg)
    frame = pl.DataFrame(out, schema=_WELL_SCHEMA)
    return validate_frame(frame, DdpcrWells, file_name=file_name)
