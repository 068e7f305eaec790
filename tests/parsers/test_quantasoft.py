"""QuantaSoft 1.7, old QuantaSoft and QX Manager well exports -> DdpcrWells rows."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import polars as pl
import pytest
from export_helpers import read_export
from hypothesis import given
from hypothesis import strategies as st

from chimera.calculate.ddpcr import assert_chimerism_plate, copies_per_ul, poisson_lambda
from chimera.detect import detect
from chimera.errors import (
    ChimeraError,
    NotChimerismAssayError,
    Problem,
    RejectReason,
    UnrecognisedExportError,
    ValidationFailedError,
)
from chimera.parsers.quantasoft import (
    _WELL_SCHEMA,
    _cells_by_name,
    _column_map,
    _read_table,
    _wells_by_column,
    _wells_by_row,
    parse_ddpcr,
    reject_amplitude_file,
)
from chimera.settings import DdpcrSettings

SETTINGS = DdpcrSettings()
VOLUMES = SETTINGS.droplet_volume_nl
QS17 = "quantasoft_v1.7_merged_wells_20-0109.csv"
QS_OLD = "quantasoft_old_small.csv"
QX = "qxmanager_cnv_SMN2v2_20220630_162335_752.csv"
QX_AMPLITUDE = "qxmanager_cnv_SMN2v2_20220630_162335_752_A01_Amplitude.csv"


def _parse(data: bytes, name: str = "plate.csv") -> pl.DataFrame:
    return parse_ddpcr(detect(data, file_name=name), droplet_volume_nl=VOLUMES).frame


def _outcome(data: bytes) -> pl.DataFrame | ChimeraError:
    try:
        return _parse(data)
    except ChimeraError as err:
        return err


def _problems(data: bytes) -> list[Problem]:
    with pytest.raises(ValidationFailedError) as info:
        _parse(data)
    return info.value.problems


def _read(real_exports: Path, name: str) -> bytes:
    return read_export(real_exports, "ddpcr_biorad", name)


def test_quantasoft_17_rows_targets_and_merged_rows(real_exports: Path) -> None:
    """It reads all 106 QuantaSoft 1.7 rows, 12 of them merged rows M01-M06."""
    frame = _parse(_read(real_exports, QS17), QS17)
    assert frame.height == 106
    assert frame["software"].unique().to_list() == ["quantasoft"]
    assert frame["droplet_volume_nl"].unique().to_list() == [0.85]
    assert set(frame["target"]) == {"HbS", "HbA", "ZFY", "ZFX"}
    assert set(frame["channel"]) == {"Ch1", "Ch2"}
    assert frame["target_role"].null_count() == 106
    merged = frame.filter(pl.col("is_merged"))
    assert merged.height == 12
    assert sorted(set(merged["well"])) == [f"M0{i}" for i in range(1, 7)]
    assert merged["status"].null_count() == 12
    assert set(frame.filter(~pl.col("is_merged"))["status"]) == {"Manual", "Multi"}
    assert frame["source_row"].to_list() == list(range(2, 108))
    m01 = merged.filter((pl.col("well") == "M01") & (pl.col("target") == "HbS")).row(0, named=True)
    assert (m01["positives"], m01["accepted_droplets"]) == (2476, 319_765)
    assert m01["merged_wells"].split(",")[:3] == ["A01", "B01", "C01"]
    assert len(m01["merged_wells"].split(",")) == 16


def test_quantasoft_17_merged_counts_are_sums_of_member_wells(real_exports: Path) -> None:
    """Every merged row's counts equal the sums over its member wells (methods.md 5.4)."""
    frame = _parse(_read(real_exports, QS17), QS17)
    members = frame.filter(~pl.col("is_merged"))
    merged = frame.filter(pl.col("is_merged"))
    assert merged.height == 12
    for row in merged.iter_rows(named=True):
        wells = row["merged_wells"].split(",")
        part = members.filter(pl.col("well").is_in(wells) & (pl.col("target") == row["target"]))
        assert part.height == len(wells)
        assert part["positives"].sum() == row["positives"]
        assert part["accepted_droplets"].sum() == row["accepted_droplets"]
        assert part["negatives"].sum() == row["negatives"]


def _printed_concentrations(data: bytes) -> dict[int, str]:
    """The ``Concentration`` text of every line, by 1-based line number (the header is 1)."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    column = rows[0].index("Concentration")
    return {line: row[column] for line, row in enumerate(rows, start=1) if line > 1}


def _half_unit(printed: str) -> float:
    """Half a unit in the last printed digit: the rounding error of ``9.15`` is at most 0.005."""
    decimals = len(printed.partition(".")[2])
    return 0.5 * 10.0**-decimals


def _assert_concentrations_to_printed_precision(
    frame: pl.DataFrame, data: bytes, volume_nl: float
) -> int:
    """λ/V_d of every row rounds to the concentration the software printed; rows checked."""
    printed = _printed_concentrations(data)
    checked = 0
    for row in frame.iter_rows(named=True):
        text = printed[row["source_row"]]
        if not text or row["accepted_droplets"] == 0:
            continue
        assert row["droplet_volume_nl"] == volume_nl
        lam = poisson_lambda(row["positives"], row["accepted_droplets"])
        error = abs(copies_per_ul(lam, volume_nl) - float(text))
        assert error <= _half_unit(text), (row["well"], row["target"], text)
        checked += 1
    return checked


def test_quantasoft_17_concentration_recomputes_with_085_nl(real_exports: Path) -> None:
    """Every printed concentration (merged rows too) is λ/0.85 nL rounded to its printed digits."""
    data = _read(real_exports, QS17)
    frame = _parse(data, QS17)
    assert (
        _assert_concentrations_to_printed_precision(frame, data, 0.85)
        == frame.filter(pl.col("concentration_copies_per_ul").is_not_null()).height
    )


def test_quantasoft_old_short_rows(real_exports: Path) -> None:
    """The old 44-column export with 43-field rows gives 10 rows at 0.91 nL."""
    frame = _parse(_read(real_exports, QS_OLD), QS_OLD)
    assert frame.height == 10
    assert frame["software"].unique().to_list() == ["quantasoft_old"]
    assert set(frame["target"]) == {"Consensus_FAM", "WTspecific_HEX"}
    assert frame["merged_wells"].null_count() == 10
    assert not frame["is_merged"].any()
    a01 = frame.filter((pl.col("well") == "A01") & (pl.col("channel") == "Ch1")).row(0, named=True)
    assert (a01["sample_id"], a01["positives"], a01["accepted_droplets"]) == ("Dean", 1901, 15_820)
    data = _read(real_exports, QS_OLD)
    assert _assert_concentrations_to_printed_precision(frame, data, 0.91) == 10


def test_qx_manager_rows_no_call_and_micro_headers(real_exports: Path) -> None:
    """QX Manager: 16 wells x 2 targets; No Call rows keep their counts; µ headers are read."""
    frame = _parse(_read(real_exports, QX), QX)
    assert frame.height == 32
    assert frame["well"].n_unique() == 16
    assert frame["software"].unique().to_list() == ["qx_manager"]
    assert frame.group_by("target_role").len().sort("target_role").rows() == [
        ("marker", 16),
        ("reference", 16),
    ]
    assert set(frame["channel"]) == {"FAM", "HEX"}
    e02 = frame.filter((pl.col("well") == "E02") & (pl.col("target") == "1")).row(0, named=True)
    assert e02["concentration_copies_per_ul"] is None
    assert (e02["positives"], e02["accepted_droplets"]) == (0, 19_862)
    assert (e02["status"], e02["sample_type"], e02["sample_id"]) == ("CHECK", "ntc", "NTC")
    no_call = frame.filter(pl.col("concentration_copies_per_ul").is_null())
    assert no_call.height == 8  # NTC wells E02-H02 x 2 targets (formats.md 10)
    assert set(no_call["well"]) == {"E02", "F02", "G02", "H02"}
    assert no_call["accepted_droplets"].null_count() == 0
    a01 = frame.filter(pl.col("well") == "A01").sort("target")
    assert a01["sample_type"].to_list() == ["positive_control"] * 2
    assert a01["sample_id"].to_list() == ["SMN2 Control 2 copies"] * 2
    called = frame.filter(pl.col("concentration_copies_per_ul").is_not_null())
    assert called.height == 24  # methods.md 5.3: "all 24 called rows"
    for row in called.iter_rows(named=True):
        lam = poisson_lambda(row["positives"], row["accepted_droplets"])
        assert copies_per_ul(lam, 0.85) == pytest.approx(
            row["concentration_copies_per_ul"], rel=1e-6
        )


def test_qx_amplitude_file_is_refused(real_exports: Path) -> None:
    """A per-droplet amplitude export is refused with what to export instead."""
    with pytest.raises(NotChimerismAssayError, match="per-droplet amplitude export") as info:
        _parse(_read(real_exports, QX_AMPLITUDE), QX_AMPLITUDE)
    assert "Export well data" in str(info.value)
    assert QX_AMPLITUDE in str(info.value)


def test_quantasoft_amplitude_file_is_refused() -> None:
    """A QuantaSoft amplitude export (Assay1 Amplitude, ..., Cluster) is refused too."""
    data = b"Assay1 Amplitude,Assay2 Amplitude,Cluster\n8123.1,2011.5,1\n1201.2,1901.4,0\n"
    with pytest.raises(NotChimerismAssayError, match="Export CSV"):
        _parse(data, "A01_Amplitude.csv")


def test_reject_amplitude_file_always_raises() -> None:
    """The rejection helper raises the chimerism-assay error."""
    with pytest.raises(NotChimerismAssayError, match=r"x\.csv"):
        reject_amplitude_file("x.csv")


@pytest.mark.parametrize("name", [QS17, QS_OLD, QX])
def test_real_exports_are_not_chimerism_assays(real_exports: Path, name: str) -> None:
    """NIPD, CNV and the old demo plate parse, then fail the chimerism-plate check."""
    frame = _parse(_read(real_exports, name), name)
    with pytest.raises(NotChimerismAssayError, match="not a ddPCR chimerism assay"):
        assert_chimerism_plate(frame, settings=SETTINGS, file_name=name)


def test_qx_labelled_reference_without_gene_name_is_explained(real_exports: Path) -> None:
    """A target labelled Reference but not named as a reference gene gets a naming hint."""
    frame = _parse(_read(real_exports, QX), QX)
    with pytest.raises(NotChimerismAssayError, match="labels 2 as Reference"):
        assert_chimerism_plate(frame, settings=SETTINGS, file_name=QX)


def test_renamed_reference_makes_a_chimerism_plate(real_exports: Path) -> None:
    """The same QX plate with the reference named RPP30 passes the check; only the name differs.

    The check turns on the name alone: target ``2`` (labelled Reference) is refused, the same
    16 wells named RPP30 are accepted, and the two frames differ in no other column.
    """
    original = _parse(_read(real_exports, QX), QX)
    renamed = original.with_columns(
        pl.when(pl.col("target") == "2").then(pl.lit("RPP30")).otherwise("target").alias("target")
    )
    with pytest.raises(NotChimerismAssayError, match="labels 2 as Reference"):
        assert_chimerism_plate(original, settings=SETTINGS, file_name=QX)
    assert_chimerism_plate(renamed, settings=SETTINGS, file_name=QX)
    assert renamed.filter(pl.col("target") == "RPP30").height == 16
    assert renamed.drop("target").equals(original.drop("target"))


def _to_decimal_comma(data: bytes) -> bytes:
    """Rewrite a comma-separated export as Excel under a decimal-comma locale would."""
    text = data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    for row in rows:
        writer.writerow([re.sub(r"^(-?\d+)\.(\d+)$", r"\1,\2", cell) for cell in row])
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")


def test_semicolon_decimal_comma_variant(real_exports: Path) -> None:
    """A ';'-separated, decimal-comma copy of the QX file parses to the same values."""
    original = _parse(_read(real_exports, QX), QX)
    variant_bytes = _to_decimal_comma(_read(real_exports, QX))
    assert b";898,375854492188;" in variant_bytes
    variant = _parse(variant_bytes, "semicolon.csv")
    assert variant.equals(original)


def test_semicolon_decimal_comma_quantasoft_merged(real_exports: Path) -> None:
    """The QuantaSoft merged list survives a ';' re-save and decimals are read."""
    original = _parse(_read(real_exports, QS17), QS17)
    variant = _parse(_to_decimal_comma(_read(real_exports, QS17)), "semicolon.csv")
    assert variant.equals(original)


def test_mixed_decimal_marks_are_refused() -> None:
    """A ';' file mixing 1,5 and 1.5 is refused with the row of the odd cell."""
    data = (
        b"Well;Sample;TargetType;Target;Concentration;Positives;Negatives;AcceptedDroplets\n"
        b"A01;S1;Ch1Unknown;M1;1,5;20;16000;16020\n"
        b"A01;S1;Ch2Unknown;RPP30;1.5;20;16000;16020\n"
    )
    assert [(p.rule, p.row) for p in _problems(data)] == [("mixed_decimal_marks", 3)]


def test_non_numeric_count_is_a_problem_with_its_line() -> None:
    """A count cell holding text is reported with its line number, not silently dropped."""
    data = (
        b"Well,Sample,TargetType,Target,Concentration,Positives,Negatives,AcceptedDroplets\n"
        b"\n"
        b"A01,S1,Ch1Unknown,M1,1.5,twenty,16000,16020\n"
    )
    assert [(p.rule, p.row, p.value) for p in _problems(data)] == [("not_a_number", 3, "twenty")]


def test_positives_above_accepted_break_the_contract() -> None:
    """More positives than accepted droplets breaks the DdpcrWells contract."""
    data = (
        b"Well,Sample,TargetType,Target,Concentration,Positives,Negatives,AcceptedDroplets\n"
        b"A01,S1,Ch1Unknown,M1,1.5,30000,0,20000\n"
    )
    with pytest.raises(ValidationFailedError, match="DdpcrWells"):
        _parse(data)


def test_line_endings_do_not_matter(real_exports: Path) -> None:
    """CRLF and bare-CR copies give the same rows as the LF original."""
    data = _read(real_exports, QS17)
    original = _parse(data)
    assert _parse(data.replace(b"\n", b"\r\n")).equals(original)
    assert _parse(data.replace(b"\n", b"\r")).equals(original)


def test_unrecognised_text_is_refused() -> None:
    """A CSV that is no ddPCR export is refused as unrecognised."""
    with pytest.raises(UnrecognisedExportError, match="QuantaSoft or QX Manager"):
        _parse(b"a,b,c\n1,2,3\n")


def test_other_known_format_is_sent_elsewhere() -> None:
    """A recognised non-ddPCR export names its own format."""
    with pytest.raises(UnrecognisedExportError, match="manifest"):
        _parse(b"sample_id,patient_id,role\nS1,P1,post_dose\n")


def test_header_without_rows_is_unreadable() -> None:
    """A header with no well rows is refused."""
    with pytest.raises(ChimeraError, match="no well rows"):
        _parse(b"Well,TargetType,Target,AcceptedDroplets,Positives\n")


_DAMAGE_BASE = (
    b"\xef\xbb\xbfWell,Sample description 1,Target,Conc(copies/\xc2\xb5L),Status,SampleType,"
    b"TargetType,DyeName(s),Accepted Droplets,Positives,Negatives,MergedWells\r\n"
    + b"A01,S1,M1,12.5,OK,Unknown,Unknown,FAM,20000,250,19750,\r\n" * 40
    + b"A01,S1,RPP30,900.1,OK,Unknown,Reference,HEX,20000,10000,10000,\r\n" * 40
)


@given(cut=st.integers(min_value=0, max_value=len(_DAMAGE_BASE)))
def test_cut_export_is_refused_or_an_exact_prefix(cut: int) -> None:
    """A cut inside a row is refused as truncated; an accepted cut holds exactly its whole rows.

    The BOM marks an Excel "CSV UTF-8" re-save, which writes no final line end, so a cut that
    keeps every field of its last row is the documented blind spot: it reads as that many rows,
    each equal to the intact file's row.
    """
    data = _DAMAGE_BASE[:cut]
    lines = data.rstrip(b"\r\n").split(b"\n")
    last_is_whole = lines[-1].count(b",") == 11
    outcome = _outcome(data)
    if isinstance(outcome, ChimeraError):
        if len(lines) > 1 and not last_is_whole:
            assert outcome.reason is RejectReason.TRUNCATED, (cut, outcome)
        return
    frame = outcome
    data_rows = len(lines) - 1 if last_is_whole else len(lines) - 2
    intact = _parse(_DAMAGE_BASE).sort("source_row")
    assert frame.height == data_rows > 0
    assert frame.sort("source_row").equals(intact.head(frame.height))


@given(cut=st.integers(min_value=0, max_value=len(_DAMAGE_BASE)), flip=st.integers(0, 255))
def test_damaged_exports_raise_only_chimera_errors(cut: int, flip: int) -> None:
    """A truncated and corrupted export gives rows or a ChimeraError, never another exception;
    rows it gives keep the contract (positives <= accepted droplets) and never outnumber the
    rows in the bytes."""
    data = bytearray(_DAMAGE_BASE[:cut])
    if data:
        data[flip % len(data)] = flip
    try:
        frame = _parse(bytes(data))
    except ChimeraError:
        return
    assert 0 < frame.height <= bytes(data).count(b"\n")
    assert (frame["positives"] <= frame["accepted_droplets"]).all()


@pytest.mark.parametrize("name", [QS_OLD, QX, "quantasoft_v1.7_merged_wells_20-0109.csv"])
def test_column_reader_equals_row_reader(real_exports: Path, name: str) -> None:
    """The column-by-column well reader gives the row-by-row reader's rows, cell for cell."""
    export = detect(_read(real_exports, name), file_name=name)
    table = _read_table(export)
    records = _cells_by_name(table, _column_map(table.header))
    by_column = _wells_by_column(table, records, 0.85)
    assert by_column is not None
    by_row = pl.DataFrame(_wells_by_row(export, table, records, 0.85), schema=_WELL_SCHEMA)
    assert pl.DataFrame(by_column, schema=_WELL_SCHEMA).equals(by_row, null_equal=True)


def test_a_count_that_does_not_add_up_sends_the_plate_to_the_row_reader(
    real_exports: Path,
) -> None:
    """A quadrant sum that breaks makes the column reader step aside (the problem keeps its row)."""
    lines = _read(real_exports, QX).decode("utf-8-sig").splitlines()
    header = next(csv.reader([lines[0]]))
    fields = next(csv.reader([lines[1]]))
    fields[header.index("Ch1+Ch2+")] = str(int(fields[header.index("Ch1+Ch2+")]) + 1)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(fields)
    data = "\r\n".join([lines[0], buffer.getvalue().rstrip(), *lines[2:]]).encode()
    export = detect(data, file_name=QX)
    table = _read_table(export)
    assert _wells_by_column(table, _cells_by_name(table, _column_map(table.header)), 0.85) is None
    with pytest.raises(ValidationFailedError) as caught:
        parse_ddpcr(export, droplet_volume_nl=VOLUMES)
    assert [p.row for p in caught.value.problems if p.rule == "droplet_counts_add_up"] == [2]
