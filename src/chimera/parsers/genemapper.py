"""GeneMapper STR exports (Sizing Table and Genotypes Table) to ``StrPeaks`` rows.

Layouts and quirks: formats.md sections 2 (Sizing Table, one row per peak) and 3 (Genotypes
Table, one row per sample x marker with ``Allele n``/``Size n``/``Height n``/``Peak Area n``
slot blocks). Alleles stay text (``10.10`` is not ``10.1``); ``source_row`` is the 1-based line
number in the file so that problems point at the line a lab user can open.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

import polars as pl

from chimera.detect import DecodedExport, ExportFormat
from chimera.errors import (
    Problem,
    TruncatedExportError,
    UnreadableFileError,
    ValidationFailedError,
    WrongFormatError,
)
from chimera.parsers.body import Body, data_rows, read_body
from chimera.parsers.columns import (
    ASCII_BLANKS,
    Column,
    clean_columns,
    plain_numbers,
    read_in_file_order,
)
from chimera.parsers.common import (
    ParsedExport,
    join_run_id,
    layout_fingerprint,
    unreadable_on_error,
)
from chimera.parsers.completeness import check_field_count, check_last_line, check_layout
from chimera.textio import (
    clean_cell,
    dedupe_header,
    normalise_header,
    parse_number,
    rows_to_records,
)
from chimera.validation import validate_frame
from schemas.inputs import StrPeaks

# Genotypes Table slot columns are blocks (Allele 1..N, Size 1..N, ...); N is a table setting
# (formats.md section 3). ``Area n`` is the GeneMapper ID-X alias of ``Peak Area n``.
_SLOT = re.compile(r"^(allele|size|height|peak area|area|data point|mutation|ae comment) (\d+)$")
_DYE = re.compile(r"^\s*([A-Za-z]+)\s*(?:,|$)")
_DECIMAL_POINT = re.compile(r"^-?\d+\.\d+$")
_ASCII_POINT = r"^-?[0-9]+\.[0-9]+$"
_ASCII_POINT_CELL = re.compile(r"-?[0-9]+\.[0-9]+")
"""``_ASCII_POINT`` for Python's ``fullmatch`` (the same cells: ASCII digits only)."""
_POINT_HEAD = 64
_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")
_THOUSANDS_COMMA = re.compile(r"^-?\d{1,3}(,\d{3})+$")
_THOUSANDS_DOT_DECIMAL_COMMA = re.compile(r"^-?\d{1,3}(\.\d{3})+(,\d+)?$")
_NOT_PLAIN = re.compile(r'[,"\u00a0]|\S\s+\S')
"""A number cell with a comma, a quote, a no-break space or an inner blank (general path)."""

_SIZING_SAMPLE_COLUMNS = ("sample file name", "sample file", "sample name")
_GENOTYPES_SAMPLE_COLUMNS = ("sample name", "sample file", "sample file name")

_PEAK_SCHEMA: dict[str, pl.DataType] = {
    "sample_id": pl.String(),
    "marker": pl.String(),
    "allele": pl.String(),
    "size_bp": pl.Float64(),
    "height_rfu": pl.Float64(),
    "area_rfu": pl.Float64(),
    "dye": pl.String(),
    "source_row": pl.Int32(),
}


class _Layout(StrEnum):
    SIZING = "Sizing Table"
    GENOTYPES = "Genotypes Table"


_LAYOUTS = {
    ExportFormat.GENEMAPPER_SIZING: _Layout.SIZING,
    ExportFormat.GENEMAPPER_GENOTYPES: _Layout.GENOTYPES,
}
_SOFTWARE = "GeneMapper"


@dataclass(frozen=True)
class _Header:
    layout: _Layout
    line_index: int
    delimiter: str
    names: list[str]


def parse_genemapper(export: DecodedExport) -> ParsedExport:
    r"""Parse a GeneMapper Sizing Table or Genotypes Table export into ``StrPeaks`` rows.

    One output row per peak: a sizing-table line, or a filled allele slot of a genotypes-table
    row (a homozygote is one filled slot; an empty marker row gives no peaks).

    Parameters
    ----------
    export
        The file as :func:`chimera.detect.detect` read it (TAB, ``;`` or ``,`` separated).

    Returns
    -------
    ParsedExport
        ``frame`` validated against :class:`schemas.inputs.StrPeaks`; ``run_id`` from the
        Genotypes Table ``Run Name``; the fingerprint covers (sample, marker).

    Raises
    ------
    UnreadableFileError
        A spreadsheet container, another format, or no peaks below the header.
    TruncatedExportError
        The file ends mid-line, or the last sample of a Genotypes Table lacks markers.
    ValidationFailedError
        Required columns missing, unreadable numbers, or rows breaking the ``StrPeaks`` contract.

    Examples
    --------
    >>> from chimera.detect import detect
    >>> text = 'Dye/Sample Peak\tSample File Name\tMarker\tAllele\tSize\tHeight\tArea\t\r\n'
    >>> text += '"B,3"\tS1\tD3S1358\t14\t120.33\t941\t5862\t\r\n'
    >>> parse_genemapper(detect(text.encode(), file_name="x.txt")).frame.row(0)
    ('S1', 'D3S1358', '14', 120.33, 941.0, 5862.0, 'B', 2)
    """
    with unreadable_on_error(export.file_name, "GeneMapper export"):
        return _parse(export)


def _parse(export: DecodedExport) -> ParsedExport:
    file_name = export.file_name
    if export.is_workbook:
        msg = (
            f"{file_name}: expected a tab-delimited GeneMapper text export, found a "
            f"{export.container.value} file; export the table from GeneMapper as text (.txt)"
        )
        raise UnreadableFileError(msg)
    layout = _LAYOUTS.get(export.format)
    if layout is None:
        msg = (
            f"{file_name}: no GeneMapper header found (the content is a {export.format.value} "
            "export); expected a line with 'Dye/Sample Peak', 'Marker', 'Allele', 'Size', "
            "'Height', 'Area' (Sizing Table) or 'Sample Name', 'Marker', 'Allele 1', "
            "'Allele 2', ... (Genotypes Table)"
        )
        raise WrongFormatError(msg)
    header = _Header(layout, export.header_row, export.delimiter, _header_names(export))
    if header.layout is _Layout.SIZING:
        sizing = read_body(export, header.names)
        check_last_line(export, [], software=_SOFTWARE)
        if len(sizing):
            check_field_count(export, *sizing.last_row(), software=_SOFTWARE)
        peaks = _sizing_frame(header, sizing, file_name=file_name)
        run_id = _run_name(header, sizing.column(_column_lookup(header.names).get("run name")))
    else:
        body = data_rows(export, header.names)
        check_last_line(export, body, software=_SOFTWARE, short_by=None)
        keys = [(str(sample), str(marker)) for sample, marker in _marker_rows(header, body)]
        check_layout(export, keys, software=_SOFTWARE, what="marker")
        rows = _genotype_rows(header, body, file_name=file_name)
        peaks = pl.DataFrame(rows, schema=_PEAK_SCHEMA, orient="row")
        run_id = _run_name(header, _record_column(header, body, "run name"))
    if peaks.is_empty():
        msg = (
            f"{file_name}: the GeneMapper {header.layout.value} has a header on line "
            f"{header.line_index + 1} but no peaks below it: truncated, or the export selected "
            "no samples; copy the file again or export it again"
        )
        raise TruncatedExportError(msg)
    frame = validate_frame(peaks, StrPeaks, file_name=file_name)
    return ParsedExport(
        frame,
        export.format,
        run_id=run_id,
        layout_fingerprint=layout_fingerprint(frame, ["sample_id", "marker"]),
    )


def _header_names(export: DecodedExport) -> list[str]:
    return [cell.strip() for cell in export.row(export.header_row)]


def _marker_rows(
    header: _Header, body: list[tuple[int, list[str]]]
) -> list[tuple[str | None, str | None]]:
    """(sample, marker) of every Genotypes Table row, in file order."""
    lookup = _column_lookup(header.names)
    sample_keys = [lookup.get(name) for name in _GENOTYPES_SAMPLE_COLUMNS]
    marker_key = lookup.get("marker")
    records = rows_to_records(header.names, [cells for _, cells in body])
    return [
        (_first_value(record, sample_keys), clean_cell(record.get(marker_key or "")))
        for record in records
    ]


def _record_column(header: _Header, body: list[tuple[int, list[str]]], name: str) -> list[str]:
    """Cells of the (normalised) column ``name`` of every row; empty when there is none."""
    key = _column_lookup(header.names).get(name)
    if key is None:
        return []
    records = rows_to_records(header.names, [cells for _, cells in body])
    return [record[key] for record in records]


def _run_name(header: _Header, cells: Sequence[str] | pl.Series) -> str | None:
    """The Genotypes Table ``Run Name`` value(s) (formats.md 3); None without the column."""
    if "run name" not in _column_lookup(header.names):
        return None
    names = sorted({value for cell in cells if (value := clean_cell(cell)) is not None})
    return join_run_id([("Run Name", ", ".join(names))])


def _column_lookup(names: Sequence[str]) -> dict[str, str]:
    """Map normalised header names to the raw (deduplicated) record keys."""
    lookup: dict[str, str] = {}
    for raw, key in zip(names, dedupe_header(names), strict=True):
        lookup.setdefault(normalise_header(raw), key)
    return lookup


def _missing_columns(missing: list[str], *, layout: _Layout, file_name: str) -> None:
    if not missing:
        return
    problems = [
        Problem(
            rule="column_in_dataframe",
            message=f"required column {name!r} is missing",
            row=1,
            column=name,
            fix="re-export the table from GeneMapper with this column shown.",
        )
        for name in missing
    ]
    msg = (
        f"{file_name}: the GeneMapper {layout.value} lacks required column(s) "
        f"{', '.join(repr(m) for m in missing)}"
    )
    raise ValidationFailedError(msg, problems)


class _NumberReader:
    """Cell-to-float converter for one file's decimal convention; collects bad cells.

    Decimal comma is assumed only when no cell uses a decimal point and some cell looks like
    ``228,25`` (not a thousands group), or the file is ``;``-separated (Excel, comma locale).
    """

    def __init__(self, values: Sequence[str], *, delimiter: str, point_seen: bool = False) -> None:
        cells = (v.strip() for v in values if v)
        # Stops at the first decimal point: then no cell needs looking at for a comma.
        has_point = point_seen or any(_DECIMAL_POINT.match(v) for v in cells if v)
        comma_like = (
            [] if has_point else [c for v in values if v and _DECIMAL_COMMA.match(c := v.strip())]
        )
        self.decimal_comma = not has_point and (
            any(not _THOUSANDS_COMMA.match(v) for v in comma_like)
            or (delimiter == ";" and bool(comma_like))
        )
        self.problems: list[Problem] = []

    def __call__(self, cell: str | None, row: int, column: str) -> float | None:
        """Return the cell as a float, None when empty; record a problem when unreadable."""
        if cell and not self.decimal_comma and not _NOT_PLAIN.search(cell):
            # A cell with no comma, quote or inner blank reads exactly as the general path
            # below would read it (no separators to remove): one float() call.
            text = cell.strip()
            try:
                number: float | None = float(text) if text else None
            except ValueError:
                number = None
            if number is not None and math.isfinite(number):
                return number
            if not text:
                return None
        text = (cell or "").strip().strip('"').replace("\u00a0", "").replace(" ", "")
        if not text:
            return None
        if self.decimal_comma and _THOUSANDS_DOT_DECIMAL_COMMA.match(text):
            text = text.replace(".", "")
        number = parse_number(text, decimal_comma=self.decimal_comma)
        if number is not None and not math.isfinite(number):
            number = None  # "inf" parses as a float but is no peak measurement
        if number is None:
            self.problems.append(
                Problem(
                    rule="number",
                    message=f"{column!r} must be a number",
                    row=row,
                    column=column,
                    value=cell,
                    fix="correct the value or clear the cell, then export again.",
                )
            )
        return number

    def raise_problems(self, *, file_name: str) -> None:
        """Raise one error listing every cell that should hold a number and does not."""
        if self.problems:
            msg = (
                f"{file_name}: {len(self.problems)} cell(s) that must hold numbers do not; "
                "see the list below"
            )
            raise ValidationFailedError(msg, self.problems)


@lru_cache(maxsize=4096)
def _dye_letter(value: str | None) -> str | None:
    """Dye letter from ``Dye/Sample Peak`` (``"B,1"`` -> ``B``) or a plain ``Dye`` cell."""
    text = clean_cell(value)
    if text is None:
        return None
    match = _DYE.match(text)
    return match.group(1).upper() if match else text


def _first_value(record: dict[str, str], keys: Sequence[str | None]) -> str | None:
    for key in keys:
        if key is not None and (value := clean_cell(record.get(key))) is not None:
            return value
    return None


def _sizing_frame(header: _Header, body: Body, *, file_name: str) -> pl.DataFrame:
    """One row per peak (formats.md section 2); empty Marker/Allele = peak outside every bin.

    Cells are cleaned and read column by column (:mod:`chimera.parsers.columns`); only cells
    that are not plain ASCII numbers go through :class:`_NumberReader` one by one.
    """
    lookup = _column_lookup(header.names)
    sample_keys = [lookup.get(name) for name in _SIZING_SAMPLE_COLUMNS]
    missing = [name for name in ("Marker", "Allele") if name.casefold() not in lookup]
    if all(key is None for key in sample_keys):
        missing.append("Sample File Name")
    if not {"size", "height", "area"} & lookup.keys():
        missing.append("Height or Area")
    _missing_columns(missing, layout=header.layout, file_name=file_name)
    numeric = {n: body.column(lookup.get(n)) for n in ("size", "height", "area")}
    shown = [numeric[n] for n in numeric if n in lookup]
    # An ASCII decimal-point cell settles the convention (the reader would stop there too).
    point_seen = _point_seen(shown)
    reader = _NumberReader(
        [] if point_seen else pl.concat(shown).to_list(),
        delimiter=header.delimiter,
        point_seen=point_seen,
    )
    samples = {f"sample {i}": key for i, key in enumerate(sample_keys) if key is not None}
    text = clean_columns(
        {
            **{name: body.column(key) for name, key in samples.items()},
            "marker": body.column(lookup["marker"]),
            "allele": body.column(lookup["allele"]),
        }
    )
    frame = pl.DataFrame(
        {
            "sample_id": pl.select(pl.coalesce([text[name] for name in samples])).to_series(),
            "marker": text["marker"],
            "allele": text["allele"],
            **_read_numbers(reader, numeric, body.lines),
            "dye": _dye_letters(body, lookup.get("dye/sample peak") or lookup.get("dye")),
            "source_row": body.lines.cast(pl.Int32),
        },
        schema=_PEAK_SCHEMA,
    )
    reader.raise_problems(file_name=file_name)
    return frame


def _point_seen(columns: Sequence[pl.Series]) -> bool:
    """Some cell of ``columns`` (blanks stripped) is an ASCII decimal-point number.

    The first cells of each column are looked at in Python first: a sizing table's first
    Size cell usually settles it without a pass over every cell.
    """
    for column in columns:
        head = column.head(_POINT_HEAD).to_list()
        if any(_ASCII_POINT_CELL.fullmatch(cell.strip(ASCII_BLANKS)) for cell in head):
            return True
    cells = pl.concat(columns)
    return bool(cells.str.strip_chars(ASCII_BLANKS).str.contains(_ASCII_POINT).any())


def _dye_letters(body: Body, key: str | None) -> pl.Series:
    """:func:`_dye_letter` of every row's dye cell, once per distinct cell."""
    if key is None:
        return pl.Series([None] * len(body), dtype=pl.String)
    cells = body.column(key)
    distinct = cells.unique().to_list()
    letters = [_dye_letter(value) for value in distinct]
    return cells.replace_strict(distinct, letters, return_dtype=pl.String)


def _read_numbers(
    reader: _NumberReader, numeric: dict[str, pl.Series], lines: pl.Series
) -> dict[str, pl.Series]:
    """Size, height and area columns: plain numbers cast at once, the rest read by ``reader``."""
    labels = {"size": "Size", "height": "Height", "area": "Area"}
    names = {"size": "size_bp", "height": "height_rfu", "area": "area_rfu"}
    plain = plain_numbers(numeric)
    columns: list[Column] = []
    for key, cells in numeric.items():
        values, done = plain[key]
        if reader.decimal_comma:
            values, done = values.clear(len(cells)), cells == ""
        columns.append((values, done, _cell_reader(reader, cells, lines, labels[key])))
    return dict(zip((names[k] for k in numeric), read_in_file_order(columns), strict=True))


def _cell_reader(
    reader: _NumberReader, cells: pl.Series, lines: pl.Series, label: str
) -> Callable[[int], float | None]:
    return lambda i: reader(cells[i], lines[i], label)


def _slot_columns(names: Sequence[str]) -> dict[int, dict[str, str]]:
    """Slot number -> field (allele/size/height/area) -> record key, for any N."""
    lookup = _column_lookup(names)
    slots: dict[int, dict[str, str]] = {}
    for normalised, key in lookup.items():
        match = _SLOT.match(normalised)
        if match is None:
            continue
        field, number = match.group(1), int(match.group(2))
        entry = slots.setdefault(number, {})
        if field == "peak area" or (field == "area" and "area" not in entry):
            entry["area"] = key
        elif field in ("allele", "size", "height"):
            entry[field] = key
    return {n: entry for n, entry in sorted(slots.items()) if "allele" in entry}


def _genotype_rows(
    header: _Header, body: list[tuple[int, list[str]]], *, file_name: str
) -> list[tuple[object, ...]]:
    """One row per filled allele slot (formats.md section 3); ragged rows padded or truncated."""
    lookup = _column_lookup(header.names)
    sample_keys = [lookup.get(name) for name in _GENOTYPES_SAMPLE_COLUMNS]
    missing = [] if "marker" in lookup else ["Marker"]
    if all(key is None for key in sample_keys):
        missing.append("Sample Name")
    _missing_columns(missing, layout=header.layout, file_name=file_name)
    slots = _slot_columns(header.names)
    records = rows_to_records(header.names, [cells for _, cells in body])
    numeric_keys = [k for slot in slots.values() for f, k in slot.items() if f != "allele"]
    reader = _NumberReader(
        [r.get(k, "") for r in records for k in numeric_keys], delimiter=header.delimiter
    )
    dye_key = lookup.get("dye")
    rows: list[tuple[object, ...]] = []
    for (line_no, _), record in zip(body, records, strict=True):
        sample_id = _first_value(record, sample_keys)
        marker = clean_cell(record.get(lookup["marker"]))
        dye = _dye_letter(record.get(dye_key)) if dye_key else None
        for number, slot in slots.items():
            cells = {field: record.get(key, "") for field, key in slot.items()}
            if not any((value or "").strip() for value in cells.values()):
                continue  # empty slot: homozygote's second slot, or no peaks at this marker
            rows.append(
                (
                    sample_id,
                    marker,
                    clean_cell(cells.get("allele")),
                    reader(cells.get("size"), line_no, f"Size {number}"),
                    reader(cells.get("height"), line_no, f"Height {number}"),
                    reader(cells.get("area"), line_no, f"Peak Area {number}"),
                    dye,
                    line_no,
                )
            )
    reader.raise_problems(file_name=file_name)
    return rows
