"""Applied Biosystems exports (formats.md 5-7) -> QpcrWells, from the real files and variants."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from export_helpers import read_export, single_row

from chimera.detect import detect
from chimera.errors import (
    ChimeraError,
    UnreadableFileError,
    UnrecognisedExportError,
    ValidationFailedError,
)
from chimera.parsers.qpcr_cells import header_index
from chimera.parsers.quantstudio import (
    _ALIASES,
    _frame_by_column,
    _frame_by_row,
    _locate_table,
    _plate_columns,
    map_task,
    parse_appbio,
    parse_run_end_time,
    read_appbio_metadata,
    well_position,
)
from chimera.textio import decode_text

RESULTS_ONLY = "quantstudio7flex_results_only_standard_curve.txt"
RNASEP_FULL = "quantstudio7flex_rnasep_standard_curve_full.txt"
FAST96_XLSX = "quantstudio_fast96_relative_quant_results.xlsx"
STEPONE_XLS = "stepOnePlus_results_native_export.xls"
STEPONE_CSV = "stepOnePlus_results_excel_resaved.csv"


def _read(real_exports: Path, name: str) -> bytes:
    return read_export(real_exports, "qpcr_appbio", name)


def _parse(real_exports: Path, name: str) -> pl.DataFrame:
    return parse_appbio(detect(_read(real_exports, name), file_name=name)).frame


def _well(frame: pl.DataFrame, well: str, target: str | None = None) -> dict[str, object]:
    return single_row(frame, well=well, target=target)


@pytest.mark.parametrize(
    ("name", "rows", "wells", "targets", "undetermined"),
    [
        (RESULTS_ONLY, 93, 93, {"3'UTR"}, 6),
        (RNASEP_FULL, 95, 95, {"RNase P"}, 4),
        (FAST96_XLSX, 36, 18, None, 0),
        (STEPONE_XLS, 96, 96, {"O.kitsuch"}, None),
        (STEPONE_CSV, 96, 96, {"O.kisutch"}, None),
    ],
)
def test_real_export_counts(
    real_exports: Path,
    name: str,
    rows: int,
    wells: int,
    targets: set[str] | None,
    undetermined: int | None,
) -> None:
    """Each real export gives the documented number of rows, wells and targets."""
    frame = _parse(real_exports, name)
    assert frame.height == rows
    assert frame["well"].n_unique() == wells
    if targets is not None:
        assert set(frame["target"]) == targets
    if undetermined is not None:
        assert frame["ct"].null_count() == undetermined
    assert frame["source_row"].min() >= 1
    assert frame["source_row"].is_unique().all()


def test_results_only_missing_wells_and_positions(real_exports: Path) -> None:
    """H1-H3 are absent; Well index 1..96 becomes Well Position A1..H12."""
    frame = _parse(real_exports, RESULTS_ONLY)
    assert not {"H1", "H2", "H3"} & set(frame["well"])
    a4 = _well(frame, "A4")
    assert a4["sample_id"] == "5000018696625"  # long numeric id kept as text
    assert a4["ct"] == pytest.approx(25.711)
    assert a4["quantity"] == pytest.approx(118_248.2)  # comma thousands separators
    assert a4["slope"] == pytest.approx(-3.196)
    assert a4["intercept"] == pytest.approx(41.924)
    assert a4["r_squared"] == pytest.approx(0.999)
    assert a4["efficiency_pct"] == pytest.approx(105.533)
    assert a4["source_row"] == 23  # line 23 of the file (header on line 19)
    assert _well(frame, "A1")["quantity"] == pytest.approx(100_000_000.0)


def test_results_only_undetermined_and_duplicate_headers(real_exports: Path) -> None:
    """Undetermined Ct is null; the first of the duplicated Target Name/Task columns is used."""
    frame = _parse(real_exports, RESULTS_ONLY)
    undetermined = frame.filter(pl.col("ct").is_null())
    assert sorted(undetermined["well"]) == sorted(["G10", "G11", "G12", "H10", "H11", "H12"])
    ntc = frame.filter(pl.col("task") == "ntc")
    assert ntc.height == 6
    assert ntc["ct"].null_count() == 6
    counts = dict(frame["task"].value_counts().iter_rows())
    assert counts == {"standard": 18, "unknown": 66, "ntc": 6, "positive_control": 3}
    assert not frame["omitted"].any()


def test_rnasep_full_skips_other_sections(real_exports: Path) -> None:
    """Sample Setup and Amplification Data are skipped; well 95 (H11) is absent; NTC names empty."""
    frame = _parse(real_exports, RNASEP_FULL)
    assert "H11" not in set(frame["well"])
    ntc = frame.filter(pl.col("task") == "ntc")
    assert ntc.height == 4
    assert ntc["sample_id"].null_count() == 4
    assert ntc["ct"].null_count() == 4
    assert frame["source_row"].min() == 3983  # first data line after [Results] at 3981
    assert _well(frame, "A1")["quantity"] == pytest.approx(5720.562)


def test_metadata_from_the_text_preamble(real_exports: Path) -> None:
    """Instrument, experiment type and run end come from the ``* key = value`` preamble."""
    meta = read_appbio_metadata(detect(_read(real_exports, RNASEP_FULL), file_name="x"))
    assert meta.instrument_type == "QuantStudio(TM) 7 Flex System"
    assert meta.experiment_type == "Standard Curve"
    assert meta.run_end_time == "2010-10-21 00:51:26 AM EDT"
    assert meta.run_ended_at is not None
    assert meta.run_ended_at.isoformat() == "2010-10-21T00:51:26-04:00"
    assert meta.get("Calibration Background is expired") == "Yes"  # two spaces before '='
    assert meta.get("Experiment Barcode") == "NA"


def test_xlsx_results_sheet_two_targets_per_well(real_exports: Path) -> None:
    """The xlsx Results sheet: 18 wells x 2 targets, CRT column, footer read as metadata."""
    frame = _parse(real_exports, FAST96_XLSX)
    per_well = frame.group_by("well").len()
    assert per_well["len"].to_list() == [2] * 18
    assert _well(frame, "C5", "ANPEP-Human")["ct"] == pytest.approx(31.051958, abs=1e-6)
    assert _well(frame, "C5", "18S")["ct"] == pytest.approx(14.079124, abs=1e-6)
    assert _well(frame, "C5", "18S")["reporter"] == "VIC"
    assert frame["source_row"].min() == 44
    assert frame["source_row"].max() == 79
    meta = read_appbio_metadata(detect(_read(real_exports, FAST96_XLSX), file_name="x"))
    assert meta.get("Reference Sample") == "13Jul2022-Hs-1"
    assert meta.get("Endogenous Control") == "18S"
    assert "ΔΔC" in (meta.experiment_type or "")


def test_stepone_xls_and_resaved_csv(real_exports: Path) -> None:
    """StepOne: Well is already A1; Cт (Cyrillic) header; sibling means on Undetermined ignored."""
    xls = _parse(real_exports, STEPONE_XLS)
    assert _well(xls, "A4")["ct"] is None
    assert _well(xls, "A1")["ct"] == pytest.approx(20.371641159)
    assert _well(xls, "D4")["ct"] is None  # Cт Mean 39.33 on this row must not leak in
    csv = _parse(real_exports, STEPONE_CSV)
    assert _well(csv, "E9")["ct"] is None
    assert _well(csv, "E9")["sample_id"] == "SCr-817-1:5"
    assert _well(csv, "A1")["ct"] == pytest.approx(20.21873093)
    assert _well(csv, "A1")["source_row"] == 9
    meta = read_appbio_metadata(detect(_read(real_exports, STEPONE_CSV), file_name="x"))
    assert meta.instrument_type == "steponeplus"


def _decimal_comma_variant(text: str) -> str:
    """Re-save like Excel under a decimal-comma locale: ``;`` separator, ``1.234,5`` numbers."""

    def convert(cell: str) -> str:
        if re.fullmatch(r"-?[\d,]+\.\d+", cell):
            return cell.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
        return cell

    out = []
    for line in text.split("\r\n"):
        cells = line.split("\t")
        out.append(";".join(convert(c) for c in cells))
    return "\r\n".join(out)


def test_semicolon_decimal_comma_variant(real_exports: Path) -> None:
    """A ``;``/decimal-comma re-save of the MIT results file parses to the same values."""
    original = _parse(real_exports, RESULTS_ONLY)
    text = decode_text(_read(real_exports, RESULTS_ONLY))
    variant_text = _decimal_comma_variant(text)
    assert "118.248,200" in variant_text
    variant = parse_appbio(
        detect(b"\xef\xbb\xbf" + variant_text.encode("utf-8"), file_name="v.csv")
    ).frame
    assert variant.drop("source_row").equals(original.drop("source_row"))


def test_excel_resave_without_star_prefix(real_exports: Path) -> None:
    """The text export re-saved as comma CSV (no ``* ``) reads the same wells."""
    original = _parse(real_exports, RNASEP_FULL)
    lines = decode_text(_read(real_exports, RNASEP_FULL)).split("\r\n")
    start = lines.index("[Results]")
    resaved = [ln.removeprefix("* ").replace(" = ", ",", 1) for ln in lines[:35]] + [""]
    for line in lines[start + 1 :]:
        cells = line.split("\t")
        resaved.append(",".join(f'"{c}"' if "," in c else c for c in cells))
    frame = parse_appbio(detect("\r\n".join(resaved).encode(), file_name="resaved.csv")).frame
    assert frame.drop("source_row").equals(original.drop("source_row"))


SYNTHETIC = (
    "* Block Type = 96-Well Block (0.2mL)\n"
    "* Experiment Run End Time = 2025-03-04 09:10:11 AM CET\n"
    "* Experiment Type = Comparative Cт (ΔΔCт)\n"
    "* Instrument Type = QuantStudio(TM) 5 System\n"
    "\n"
    "[Results]\n"
    "Well\tWell Position\tSample Name\tTarget Name\tTask\tReporter\tCт\n"
    "1\tA1\tP01-D1\tRPP30\tUNKNOWN\tVIC\t25.100\n"
    "2\tA2\tP01-D1\tS04\tUNKNOWN\tFAM\tUndetermined\n"
    "13\tB1\t\tS04\tNTC\tFAM\tUndetermined\n"
    "\n"
    "Analysis Type = Singleplex\n"
    "Reference Sample = CAL-1\n"
)


def test_generator_style_minimal_export() -> None:
    """A minimal generator-style export (few columns, no Omit) parses and keeps the footer."""
    frame = parse_appbio(detect(SYNTHETIC.encode(), file_name="synthetic.txt")).frame
    assert frame["well"].to_list() == ["A1", "A2", "B1"]
    assert frame["task"].to_list() == ["unknown", "unknown", "ntc"]
    assert frame["ct"].to_list() == [25.1, None, None]
    assert frame["sample_id"].to_list() == ["P01-D1", "P01-D1", None]
    assert not frame["omitted"].any()
    assert frame["source_row"].to_list() == [8, 9, 10]
    meta = read_appbio_metadata(detect(SYNTHETIC.encode(), file_name="x"))
    assert meta.get("Reference Sample") == "CAL-1"
    assert meta.run_ended_at is not None
    assert meta.run_ended_at.utcoffset() is not None


@pytest.mark.parametrize("ct_header", ["CT", "Ct", "Cт", "CRT", "Crt", "Cq"])
def test_ct_header_variants(ct_header: str) -> None:
    """Every Ct column spelling is read as ``ct``."""
    data = SYNTHETIC.replace("\tCт\n", f"\t{ct_header}\n").encode()
    assert parse_appbio(detect(data, file_name="x.txt")).frame["ct"].to_list() == [25.1, None, None]


def test_index_only_well_column_becomes_position() -> None:
    """Without Well Position the 1-based index maps to A1..H12 (96-well block)."""
    text = SYNTHETIC.replace("Well\tWell Position\t", "Well\t").replace("\tA1\t", "\t")
    text = text.replace("\tA2\t", "\t").replace("\tB1\t", "\t")
    frame = parse_appbio(detect(text.encode(), file_name="x.txt")).frame
    assert frame["well"].to_list() == ["A1", "A2", "B1"]


def test_omit_booleans_any_case() -> None:
    """Omit true/TRUE/false/FALSE map to booleans."""
    text = SYNTHETIC.replace("Well Position\t", "Well Position\tOmit\t")
    text = text.replace("\tA1\t", "\tA1\tTRUE\t").replace("\tA2\t", "\tA2\tfalse\t")
    text = text.replace("\tB1\t", "\tB1\ttrue\t")
    frame = parse_appbio(detect(text.encode(), file_name="x.txt")).frame
    assert frame["omitted"].to_list() == [True, False, True]


def test_bad_ct_value_is_reported_with_its_line() -> None:
    """A Ct that is neither a number nor a no-amplification sentinel is a listed problem."""
    data = SYNTHETIC.replace("25.100", "twenty").encode()
    with pytest.raises(ValidationFailedError) as info:
        parse_appbio(detect(data, file_name="bad.txt"))
    problem = info.value.problems[0]
    assert problem.row == 8
    assert problem.value == "twenty"


def test_bad_omit_value_is_reported() -> None:
    """An Omit value other than true/false is a listed problem."""
    text = SYNTHETIC.replace("Well Position\t", "Well Position\tOmit\t")
    text = (
        text.replace("\tA1\t", "\tA1\tmaybe\t")
        .replace("\tA2\t", "\tA2\t\t")
        .replace("\tB1\t", "\tB1\t\t")
    )
    with pytest.raises(ValidationFailedError, match="cannot be read"):
        parse_appbio(detect(text.encode(), file_name="bad.txt"))


def test_negative_ct_breaks_the_contract() -> None:
    """A negative Ct fails QpcrWells validation (not a raw traceback)."""
    with pytest.raises(ValidationFailedError):
        parse_appbio(detect(SYNTHETIC.replace("25.100", "-3").encode(), file_name="bad.txt"))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", UnreadableFileError),
        (b"   \r\n", UnreadableFileError),
        (b"hello world\nnothing here\n", UnrecognisedExportError),
        (b"PK\x03\x04not really a zip", UnreadableFileError),
        (b"\xd0\xcf\x11\xe0broken", UnreadableFileError),
        (b"\x00\x01\x02binary", UnrecognisedExportError),
        (b"[Results]\nWell\tWell Position\tCT\n\n", UnreadableFileError),
    ],
)
def test_bad_files_raise_chimera_errors(data: bytes, error: type[ChimeraError]) -> None:
    """Empty, foreign, corrupt and header-only files raise a readable ChimeraError."""
    with pytest.raises(error, match=r"x\.txt"):
        parse_appbio(detect(data, file_name="x.txt"))


def test_mixed_decimal_conventions_are_refused() -> None:
    """A ``;`` file mixing ``25,1`` and ``25.13`` is refused rather than guessed."""
    text = (
        SYNTHETIC.replace("\t", ";")
        .replace("25.100", "25,1")
        .replace("Undetermined\n", "25.13\n", 1)
    )
    with pytest.raises(ValidationFailedError) as info:
        parse_appbio(detect(text.encode(), file_name="mixed.csv"))
    assert info.value.problems[0].rule == "mixed_decimal_convention"


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("UNKNOWN", "unknown"),
        ("STANDARD", "standard"),
        ("NTC", "ntc"),
        ("", "other"),
        ("IPC", "positive_control"),
    ],
)
def test_task_mapping(task: str, expected: str) -> None:
    """AB Task values map onto the QpcrWells vocabulary."""
    assert map_task(task) == expected


def test_well_position_helper() -> None:
    """Index, zero-padded and plain positions all normalise; 384-well indexes use 24 columns."""
    assert well_position("1.0", plate_columns=12) == "A1"
    assert well_position("96", plate_columns=12) == "H12"
    assert well_position("25", plate_columns=24) == "B1"
    assert well_position("a01", plate_columns=12) == "A1"


def test_run_end_time_parsing() -> None:
    """24-hour clock with AM/PM is taken as written; unknown zones give None."""
    parsed = parse_run_end_time("2024-10-01 15:02:50 PM EST")
    assert parsed is not None
    assert parsed.isoformat() == "2024-10-01T15:02:50-05:00"
    twelve_hour = parse_run_end_time("2024-10-01 03:02:50 PM PDT")
    assert twelve_hour is not None
    assert twelve_hour.hour == 15
    assert parse_run_end_time("2024-10-01 15:02:50 PM XYZ") is None
    assert parse_run_end_time(None) is None


@pytest.mark.parametrize("name", [RESULTS_ONLY, RNASEP_FULL, FAST96_XLSX, STEPONE_XLS, STEPONE_CSV])
def test_column_reader_equals_row_reader(real_exports: Path, name: str) -> None:
    """The column-by-column reader gives the row-by-row reader's frame, cell for cell."""
    export = detect(_read(real_exports, name), file_name=name)
    table = _locate_table(export)
    columns = header_index(table.header, _ALIASES)
    wells = [cells[columns["well"]].strip() for _, cells in table.rows]
    plate = _plate_columns(table.metadata, wells)
    by_column = _frame_by_column(table, columns, plate)
    assert by_column is not None
    by_row = _frame_by_row(table, columns, plate, decimal_comma=False, file_name=name)
    assert by_column.equals(by_row, null_equal=True)
    assert by_column.schema == by_row.schema


def test_a_problem_sends_the_table_to_the_row_reader() -> None:
    """A cell the reader refuses makes the column reader step aside (problems keep rows)."""
    text = (
        "[Results]\r\nWell\tSample Name\tTarget Name\tTask\tCт\tQuantity\r\n"
        "1\tS1\tRPP30\tUNKNOWN\t23.1\t\r\n2\tS1\tRPP30\tUNKNOWN\t23.2\tlots\r\n"
    )
    table = _locate_table(detect(text.encode(), file_name="x.txt"))
    columns = header_index(table.header, _ALIASES)
    assert _frame_by_column(table, columns, 12) is None
    with pytest.raises(ValidationFailedError) as caught:
        parse_appbio(detect(text.encode(), file_name="x.txt"))
    assert [(p.row, p.column) for p in caught.value.problems] == [(4, "Quantity")]
