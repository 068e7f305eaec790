"""Bio-Rad CFX "Quantification Cq Results" (formats.md 8) -> QpcrWells."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from export_helpers import read_export, single_row

from chimera.detect import detect
from chimera.errors import ChimeraError, UnreadableFileError, UnrecognisedExportError
from chimera.parsers.cfx import map_content, parse_cfx

CFX96 = "cfx96_sybr_quantification_cq_results.csv"
CONNECT = "cfx_connect_sybr_two_targets_quantification_cq_results.csv"
ALLOTROPY = "allotropy_cfxmaestro_example01.csv"

HEADER = (
    ",Well,Fluor,Target,Content,Sample,Biological Set Name,Cq,Cq Mean,Cq Std. Dev,"
    "Starting Quantity (SQ),Log Starting Quantity,SQ Mean,SQ Std. Dev,Set Point,Well Note"
)


def _read(real_exports: Path, name: str) -> bytes:
    return read_export(real_exports, "qpcr_biorad_cfx", name)


def _parse(real_exports: Path, name: str) -> pl.DataFrame:
    return parse_cfx(detect(_read(real_exports, name), file_name=name)).frame


def _well(frame: pl.DataFrame, well: str, fluor: str | None = None) -> dict[str, object]:
    return single_row(frame, well=well, reporter=fluor)


@pytest.mark.parametrize(
    ("name", "rows", "targets", "no_cq"),
    [
        (CFX96, 78, {"Cg_GAPDH_205_F-355_R (SR IDs: 1172/3)"}, 5),
        (CONNECT, 68, {"ATPsynthase", "HSP70"}, 4),
        (ALLOTROPY, 192, {None}, 84),
    ],
)
def test_real_export_counts(
    real_exports: Path, name: str, rows: int, targets: set[str | None], no_cq: int
) -> None:
    """Each real CFX export gives the documented rows, targets and NaN-Cq count."""
    frame = _parse(real_exports, name)
    assert frame.height == rows
    assert set(frame["target"]) == targets
    assert frame["ct"].null_count() == no_cq
    assert frame["source_row"].min() == 2
    assert not frame["omitted"].any()


def test_cfx96_replicates_ntc_and_nan(real_exports: Path) -> None:
    """26 groups of 3 incl. NTC-01; NaN Cq is null and the instrument Cq Mean is not used."""
    frame = _parse(real_exports, CFX96)
    groups = frame.group_by("sample_id").len()
    assert groups.height == 26
    assert set(groups["len"]) == {3}
    ntc = frame.filter(pl.col("task") == "ntc")
    assert ntc.height == 3
    assert ntc["sample_id"].null_count() == 3
    assert _well(frame, "G05")["ct"] == pytest.approx(39.2145468666273)  # NTC amplifies (SYBR)
    assert _well(frame, "A04")["ct"] is None  # Cq NaN, Cq Mean 0
    assert _well(frame, "A06")["ct"] == pytest.approx(39.2943845656756)
    assert _well(frame, "A01")["sample_id"] == "12"
    assert _well(frame, "A01")["reporter"] == "SYBR"


def test_cfx_connect_two_targets(real_exports: Path) -> None:
    """Two targets in duplicate; NTC-02 content maps to ntc."""
    frame = _parse(real_exports, CONNECT)
    assert dict(frame["target"].value_counts().iter_rows()) == {"ATPsynthase": 34, "HSP70": 34}
    assert frame.filter(pl.col("task") == "ntc").height == 4


def test_allotropy_fam_and_vic_rows(real_exports: Path) -> None:
    """96 wells x FAM and VIC; the Sample column is preferred to Biological Set Name."""
    frame = _parse(real_exports, ALLOTROPY)
    assert dict(frame["reporter"].value_counts().iter_rows()) == {"FAM": 96, "VIC": 96}
    a01 = _well(frame, "A01", "FAM")
    assert a01["sample_id"] == "M3905 R Ctx"
    assert a01["ct"] == pytest.approx(21.1877528266099)


def test_run_information_header_and_biological_set(real_exports: Path) -> None:
    """Key,value run-information rows before the table are skipped; source_row stays true."""
    original = _parse(real_exports, CONNECT)
    preamble = (
        "File Name,sam_2024-03-25.pcrd\r\nCreated By User,sam\r\n"
        "Run Started,03/25/2024 06:10:54 UTC\r\nCFX Maestro Version,2.3\r\n\r\n"
    )
    frame = parse_cfx(
        detect(preamble.encode() + _read(real_exports, CONNECT), file_name="info.csv")
    ).frame
    assert frame.drop("source_row").equals(original.drop("source_row"))
    assert (frame["source_row"] - original["source_row"]).to_list() == [5] * original.height


def test_semicolon_decimal_comma_variant() -> None:
    """A ``;`` export with decimal commas reads the same numbers."""
    body = (
        HEADER.replace(",", ";") + "\r\n" + ";A01;FAM;S04;Unkn-01;P01-D1;;31,25;0;0;NaN;NaN;0;0;60;"
    )
    frame = parse_cfx(detect(body.encode(), file_name="semi.csv")).frame
    assert frame["ct"].to_list() == [31.25]
    assert frame["target"].to_list() == ["S04"]


def test_biological_set_name_used_when_sample_empty() -> None:
    """Without a Sample value the Biological Set Name identifies the sample."""
    body = HEADER + "\r\n,B02,HEX,RPP30,Std-03,,CAL-1,24.5,24.5,0,1000,3,1000,0,60,\r\n"
    frame = parse_cfx(detect(body.encode(), file_name="bio.csv")).frame
    row = frame.row(0, named=True)
    assert row["sample_id"] == "CAL-1"
    assert row["task"] == "standard"
    assert row["quantity"] == pytest.approx(1000.0)
    assert row["reporter"] == "HEX"


@pytest.mark.parametrize(
    ("content", "task"),
    [
        ("Unkn", "unknown"),
        ("Unkn-12", "unknown"),
        ("NTC-01", "ntc"),
        ("Std-05", "standard"),
        ("Pos Ctrl", "positive_control"),
        ("Neg Ctrl-02", "negative_control"),
        ("NRT", "negative_control"),
        ("Something", "other"),
    ],
)
def test_content_mapping(content: str, task: str) -> None:
    """CFX content codes map onto the QpcrWells task vocabulary."""
    assert map_content(content) == task


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", UnreadableFileError),
        (b"Well,Sample,Value\r\nA1,x,1\r\n", UnrecognisedExportError),
        ((HEADER + "\r\n").encode(), UnreadableFileError),
        (b"PK\x03\x04garbage", UnreadableFileError),
    ],
)
def test_bad_files_raise_chimera_errors(data: bytes, error: type[ChimeraError]) -> None:
    """Empty, foreign, header-only and corrupt files raise a readable ChimeraError."""
    with pytest.raises(error, match=r"c\.csv"):
        parse_cfx(detect(data, file_name="c.csv"))


def test_unreadable_cq_is_listed() -> None:
    """A Cq that is not a number names its row."""
    body = HEADER + "\r\n,A01,FAM,S04,Unkn-01,P1,,abc,0,0,NaN,NaN,0,0,60,\r\n"
    with pytest.raises(ChimeraError) as info:
        parse_cfx(detect(body.encode(), file_name="c.csv"))
    assert info.value.problems[0].row == 2
