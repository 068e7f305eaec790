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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import polars as pl

from chimera.detect import DecodedExport, ExportFormat
from chimera.errors import (
    NotChimerismAssayError,
    Problem,
    TruncatedExportError,
    ValidationFailedError,
)
from chimera.parsers.common import (
    ParsedExport,
    frame_of,
    join_run_id,
    layout_fingerprint,
    require_format,
    unreadable_on_error,
)
from chimera.parsers.completeness import check_last_line, check_layout, truncated
from chimera.parsers.droplet_cells import (
    COUNT_SUMS,
    NO_VALUE,
    QUADRANT_PARTS,
    REEXPORT,
    DropletNumbers,
    merged_members,
    roles,
    unbalanced,
)
from chimera.textio import (
    clean_cell,
    dedupe_header,
    match_aliases,
    normalise_header,
    pick_columns,
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
    "experiment": ("experiment",),
    "ch1+ch2+": ("ch1+ch2+",),
    "ch1+ch2-": ("ch1+ch2-",),
    "ch1-ch2+": ("ch1-ch2+",),
    "ch1-ch2-": ("ch1-ch2-",),
}
_LABELS = {"quantasoft": "QuantaSoft", "quantasoft_old": "QuantaSoft", "qx_manager": "QX Manager"}
# Experiment *type* codes QuantaSoft/QX Manager write in the ``Experiment`` column (not run names).
_EXPERIMENT_TYPES = frozenset(
    {"abs", "cnv", "dq", "red", "gex", "mut", "snp", "rar", "rare event detection"}
    | {"absolute quantification", "copy number variation", "direct quantification", "ratio"}
)
_REQUIRED = ("well", "target", "accepted", "positives")

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
    software: str
    header: list[str]
    rows: list[tuple[int, list[str]]]
    """(1-based source row, fields) of every non-blank line after the header."""
    decimal_comma: bool


def _read_table(export: DecodedExport) -> _Table:
    """The header found by detection and the non-blank rows below it (formats.md section 1)."""
    if export.format is ExportFormat.DDPCR_AMPLITUDE:
        reject_amplitude_file(export.file_name)
    require_format(export, _SOFTWARE, expected="a QuantaSoft or QX Manager well export")
    header = export.rows[export.header_row]
    body = [
        (row, fields)
        for row, fields in export.numbered(export.header_row + 1)
        if any(f.strip() for f in fields)
    ]
    decimal_comma = uses_decimal_comma([fields for _, fields in body], export.delimiter)
    return _Table(_SOFTWARE[export.format], header, body, decimal_comma)


def _column_map(header: list[str]) -> dict[str, str]:
    """Map canonical names to the file's own (deduplicated) header names."""
    normalised: dict[str, str] = {}
    for raw in dedupe_header(header):
        normalised.setdefault(normalise_header(raw), raw)
    return match_aliases(normalised, _ALIASES)


def parse_ddpcr(export: DecodedExport, *, droplet_volume_nl: Mapping[str, float]) -> ParsedExport:
    r"""Parse a QuantaSoft (1.7 or older) or QX Manager well export into ``DdpcrWells`` rows.

    One row per well per target (a duplex well gives two rows); QuantaSoft merged rows
    (``M01…``) are kept with ``is_merged`` and their member wells in ``merged_wells``, so that
    the calculation can pool either them or their members, never both (methods.md 5.4).

    Parameters
    ----------
    export
        The file as :func:`chimera.detect.detect` read it (comma, ``;`` with decimal comma, or
        TAB; BOM and CRLF/LF/CR fine).
    droplet_volume_nl
        Droplet volume per software (``quantasoft``, ``quantasoft_old``, ``qx_manager``) in nL;
        ``DdpcrSettings.droplet_volume_nl``.

    Raises
    ------
    NotChimerismAssayError
        For a per-droplet amplitude export.
    UnrecognisedExportError
        For another format.
    TruncatedExportError
        When the file ends mid-row, the last row's droplet counts do not add up, or the wells at
        the end lack a channel every other well has (:mod:`chimera.parsers.completeness`).
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
    >>> from chimera.detect import detect
    >>> parsed = parse_ddpcr(detect(csv, file_name="plate.csv"), droplet_volume_nl=volumes)
    >>> parsed.frame.select("well", "target", "channel", "positives", "software").row(0)
    ('A01', 'M1', 'Ch1', 20, 'quantasoft')
    """
    table = _read_table(export)
    software = table.software
    if software not in droplet_volume_nl:
        msg = f"no droplet volume configured for {software!r}; set ddpcr.droplet_volume_nl"
        raise ValueError(msg)
    columns = _column_map(table.header)
    missing = [name for name in _REQUIRED if name not in columns]
    if missing:
        msg = (
            f"{export.file_name}: the {software} export lacks column(s) {', '.join(missing)}; "
            "re-export the well data with all columns"
        )
        raise ValidationFailedError(
            msg, [Problem(rule="column_in_dataframe", message=msg, column=m) for m in missing]
        )
    if not table.rows:
        msg = (
            f"{export.file_name}: the {software} export has a header but no well rows: it is "
            "truncated or empty below its header; copy the file again or re-export the plate"
        )
        raise TruncatedExportError(msg)
    cells = _cells_by_name(table, columns)
    _check_complete(export, table, cells)
    with unreadable_on_error(export.file_name, f"{software} export"):
        frame = _frame(export, table, cells, float(droplet_volume_nl[software]))
    return ParsedExport(
        frame,
        export.format,
        run_id=_experiment(frame, cells),
        layout_fingerprint=layout_fingerprint(frame, ["well", "sample_id", "target"]),
    )


@dataclass(frozen=True)
class _Cells:
    """The rows' cells column by column, keyed by canonical names (``well``, ``ch1+ch2+``, ...)."""

    columns: Mapping[str, Sequence[str]]
    height: int

    def get(self, name: str) -> Sequence[str]:
        """The cells of ``name``; all ``""`` when the file has no such column."""
        return self.columns.get(name, ("",) * self.height)

    def row(self, index: int) -> dict[str, str]:
        """Row ``index`` keyed by the canonical names the file has."""
        return {name: cells[index] for name, cells in self.columns.items()}


def _cells_by_name(table: _Table, columns: Mapping[str, str]) -> _Cells:
    """Every column keyed by canonical names, transposed once (not a dict per row).

    ``columns`` maps canonical names to deduplicated header names (:func:`_column_map`); a
    row too short to reach a column has ``""`` there.
    """
    positions = {name: i for i, name in enumerate(dedupe_header(table.header))}
    wanted = {name: positions[column] for name, column in columns.items()}
    picked = pick_columns([fields for _, fields in table.rows], wanted.values())
    return _Cells({name: picked[i] for name, i in wanted.items()}, len(table.rows))


def _check_complete(export: DecodedExport, table: _Table, cells: _Cells) -> None:
    """Refuse a cut-off export (issue 9.3): last line, droplet-count sums, channels per well."""
    software = _LABELS[table.software]
    check_last_line(
        export,
        table.rows,
        software=software,
        writer_ends_lines=table.software != "qx_manager",
        short_by=1 if table.software == "quantasoft_old" else 0,
    )
    last_row = table.rows[-1][0]
    if last_row == len(export.lines) and not export.ends_with_newline:
        numbers = DropletNumbers(decimal_comma=table.decimal_comma)
        problem = numbers.counts_add_up(cells.row(-1), row=last_row)
        if problem is not None:
            raise truncated(export, problem.message + f" on line {last_row}", software=software)
    labels = list(zip(cells.get("target_type"), cells.get("dye"), cells.get("target"), strict=True))
    channel = {label: _channel_key(*label) for label in set(labels)}
    keys = [
        (well.strip().strip('"'), channel[label])
        for well, label in zip(cells.get("well"), labels, strict=True)
    ]
    check_layout(export, keys, software=software, what="channel")


def _channel_key(*labels: str) -> str:
    """What tells a well's rows apart: ``TargetType`` (``Ch1Unknown``, ``Reference``) or dye."""
    for label in labels:
        value = clean_cell(label)
        if value is not None:
            return value
    return ""


def _frame(
    export: DecodedExport,
    table: _Table,
    cells: _Cells,
    volume: float,
) -> pl.DataFrame:
    by_column = _wells_by_column(table, cells, volume)
    if by_column is None:
        frame = pl.DataFrame(_wells_by_row(export, table, cells, volume), schema=_WELL_SCHEMA)
    else:
        frame = frame_of(by_column, _WELL_SCHEMA)
    return validate_frame(frame, DdpcrWells, file_name=export.file_name)


def _wells_by_column(table: _Table, cells: _Cells, volume: float) -> dict[str, list[Any]] | None:
    """The well rows column by column, each distinct cell read once.

    Cells are read by the very readers :func:`_wells_by_row` uses; None when any cell or count
    sum is a problem, so that :func:`_wells_by_row` lists the problems with their rows.
    """
    numbers = DropletNumbers(decimal_comma=table.decimal_comma)

    def column(name: str, read: Callable[[str], Any] = clean_cell) -> list[Any]:
        texts = cells.get(name)
        distinct = {cell: read(cell) for cell in set(texts)}
        return [distinct[cell] for cell in texts]

    def count(cell: str) -> int | None:
        return numbers.count(cell, column="", row=0)

    positives, accepted, negatives = (
        column("positives", count),
        column("accepted", count),
        column("negatives", count),
    )
    concentration = column("concentration", lambda cell: numbers.real(cell, column="", row=0))
    no_positives = column("positives", _no_count)
    quadrants = {name: column(name, numbers.sum_part) for name in QUADRANT_PARTS}
    if (
        numbers.problems
        or any(a is not None and empty for a, empty in zip(accepted, no_positives, strict=True))
        or (
            # Without any quadrant column every quadrant part is None: nothing to add up.
            any(name in cells.columns for name in COUNT_SUMS[1][1]) and _quadrants_break(quadrants)
        )
    ):
        return None
    completed = [_completed(*c) for c in zip(accepted, positives, negatives, strict=True)]
    labels = list(zip(column("target_type"), column("dye"), column("sample_type"), strict=True))
    by_label = {label: roles(*label, software=table.software) for label in set(labels)}
    channels = [by_label[label] for label in labels]
    merged = column("merged", merged_members)
    return {
        "sample_id": column("sample"),
        "well": column("well"),
        "target": column("target"),
        "channel": [c for c, _, _ in channels],
        "target_role": [r for _, r, _ in channels],
        "sample_type": [s for _, _, s in channels],
        "status": column("status"),
        "accepted_droplets": [a for a, _ in completed],
        "positives": positives,
        "negatives": [n for _, n in completed],
        "concentration_copies_per_ul": concentration,
        "droplet_volume_nl": [volume] * cells.height,
        "merged_wells": merged,
        "is_merged": [m is not None for m in merged],
        "software": [table.software] * cells.height,
        "source_row": [row for row, _ in table.rows],
    }


def _quadrants_break(quadrants: Mapping[str, Sequence[float | None]]) -> bool:
    """Some row's Ch1/Ch2 quadrant counts do not add up to its accepted droplets (unbalanced).

    A row without accepted droplets, or whose four quadrants are filled and add up to them
    (``unbalanced`` adds them in the same order), needs no call to :func:`unbalanced`.
    """
    first, second, third, fourth = (quadrants[name] for name in COUNT_SUMS[1][1])
    rows = zip(quadrants["accepted"], first, second, third, fourth, strict=True)
    for index, (total, a, b, c, d) in enumerate(rows):
        if total is None or (
            a is not None
            and b is not None
            and c is not None
            and d is not None
            and a + b + c + d == total
        ):
            continue
        counts = {name: parts[index] for name, parts in quadrants.items()}
        if unbalanced(counts, row=0, sums=COUNT_SUMS[1:]) is not None:
            return True
    return False


def _completed(
    accepted: int | None, positives: int | None, negatives: int | None
) -> tuple[int | None, int | None]:
    """Accepted and negative droplets, one computed from the others when it alone is empty."""
    if accepted is None and positives is not None and negatives is not None:
        accepted = positives + negatives
    if negatives is None and positives is not None and accepted is not None:
        negatives = accepted - positives
    return accepted, negatives


def _no_count(cell: str) -> bool:
    """A Positives cell that is empty or a no-value word."""
    text = cell.strip().strip('"').casefold()
    return not text or text in NO_VALUE


def _wells_by_row(
    export: DecodedExport,
    table: _Table,
    records: _Cells,
    volume: float,
) -> list[dict[str, object]]:
    """The well rows one by one, every unreadable cell or count sum listed as a problem."""
    numbers = DropletNumbers(decimal_comma=table.decimal_comma)
    software = table.software
    out: list[dict[str, object]] = []
    for index, (row, _fields) in enumerate(table.rows):
        cells = records.row(index)
        positives = numbers.count(cells.get("positives", ""), column="Positives", row=row)
        accepted = numbers.count(cells.get("accepted", ""), column="AcceptedDroplets", row=row)
        negatives = numbers.count(cells.get("negatives", ""), column="Negatives", row=row)
        # Positives + Negatives = Accepted is a DdpcrWells rule; the quadrants are checked here.
        if (problem := numbers.counts_add_up(cells, row=row, sums=COUNT_SUMS[1:])) is not None:
            numbers.problems.append(problem)
        if accepted is not None and _no_count(cells.get("positives", "")):
            numbers.problems.append(
                Problem(
                    rule="droplet_counts_add_up",
                    message=f"'Positives' is empty or not a count while {accepted} droplets "
                    "were accepted",
                    row=row,
                    column="Positives",
                    fix=REEXPORT,
                )
            )
        accepted, negatives = _completed(accepted, positives, negatives)
        channel, role, sample_type = roles(
            clean_cell(cells.get("target_type")),
            clean_cell(cells.get("dye")),
            clean_cell(cells.get("sample_type")),
            software=software,
        )
        members = merged_members(cells.get("merged"))
        out.append(
            {
                "sample_id": clean_cell(cells.get("sample")),
                "well": clean_cell(cells.get("well")),
                "target": clean_cell(cells.get("target")),
                "channel": channel,
                "target_role": role,
                "sample_type": sample_type,
                "status": clean_cell(cells.get("status")),
                "accepted_droplets": accepted,
                "positives": positives,
                "negatives": negatives,
                "concentration_copies_per_ul": numbers.real(
                    cells.get("concentration", ""), column="Concentration", row=row
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
            f"{export.file_name}: {len(numbers.problems)} cell(s) of the {software} export are "
            "not valid numbers or counts that add up; see the list below"
        )
        raise ValidationFailedError(msg, numbers.problems)
    return out


def _experiment(frame: pl.DataFrame, cells: _Cells) -> str | None:
    """Run identity from the ``Experiment`` column when it holds a name, not a type code.

    QuantaSoft and QX Manager write the experiment *type* there (``ABS``, ``CNV``, ``DQ``, ...;
    formats.md 9-10), which two different plates share, so such codes identify nothing.
    """
    if frame.is_empty() or not cells.height or "experiment" not in cells.columns:
        return None
    names = {
        value for cell in set(cells.get("experiment")) if (value := clean_cell(cell)) is not None
    }
    names = {n for n in names if n.casefold() not in _EXPERIMENT_TYPES}
    return join_run_id([("Experiment", ", ".join(sorted(names)))])
