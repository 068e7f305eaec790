"""GeneMapper Sizing Table and Genotypes Table parsing (formats.md sections 2-3)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chimera.detect import detect
from chimera.errors import ChimeraError, UnreadableFileError, ValidationFailedError
from chimera.parsers.genemapper import parse_genemapper
from schemas.inputs import StrPeaks

SIZING_HEADER = (
    "Dye/Sample Peak\tSample File Name\tMarker\tAllele\tSize\tHeight\tArea\tData Point\t"
)
GENOTYPES_FILE = "gmconvert_genotypes_table_test.genemapper.txt"


def _genemapper(real_exports: Path, name: str) -> pl.DataFrame:
    path = real_exports / "genemapper" / name
    return parse_genemapper(detect(path.read_bytes(), file_name=name)).frame


@pytest.mark.parametrize(
    ("name", "n_peaks", "n_ol", "n_unbinned"),
    [
        ("rchimerism_single_donor_ddata_donor.txt", 120, 36, 43),
        ("rchimerism_single_donor_rdata_recipient.txt", 63, 18, 18),
        ("rchimerism_single_donor_sdata_posttransplant.txt", 42, 8, 8),
        ("rchimerism_double_donor_d1data_donor1.txt", 70, 15, 23),
        ("rchimerism_double_donor_d2data_donor2.txt", 70, 18, 23),
        ("rchimerism_double_donor_rdata_recipient.txt", 75, 18, 23),
        ("rchimerism_double_donor_sdata_posttransplant.txt", 45, 0, 8),
    ],
)
def test_real_sizing_tables_parse(
    real_exports: Path, name: str, n_peaks: int, n_ol: int, n_unbinned: int
) -> None:
    """Every real sizing table gives one row per peak with OL and unbinned peaks kept."""
    frame = _genemapper(real_exports, name)
    assert frame.height == n_peaks
    assert frame.filter(pl.col("allele") == "OL").height == n_ol
    unbinned = frame.filter(pl.col("marker").is_null())
    assert unbinned.height == n_unbinned
    assert unbinned["allele"].null_count() == n_unbinned
    assert set(frame["sample_id"]) == {"xxxx"}
    assert set(frame["dye"]) <= {"B", "G", "Y"}
    # line numbers: header is line 1, peaks follow without gaps (blank trailing line ignored)
    assert frame["source_row"].to_list() == list(range(2, n_peaks + 2))
    assert frame["size_bp"].null_count() == 0
    assert frame["area_rfu"].null_count() == 0


def test_real_sizing_table_values(real_exports: Path) -> None:
    """Quoted dye/peak fields, AMEL X/Y, unbinned rows and numbers are read as written."""
    frame = _genemapper(real_exports, "rchimerism_single_donor_sdata_posttransplant.txt")
    unbinned = frame.filter(pl.col("source_row") == 14).row(0, named=True)
    assert unbinned == {
        "sample_id": "xxxx",
        "marker": None,
        "allele": None,
        "size_bp": 321.11,
        "height_rfu": 150.0,
        "area_rfu": 957.0,
        "dye": "B",
        "source_row": 14,
    }
    amel = frame.filter(pl.col("marker") == "AMEL").sort("allele")
    assert amel.select("allele", "dye", "size_bp").rows() == [
        ("X", "Y", 104.29),
        ("Y", "Y", 110.01),
    ]
    d7 = frame.filter(pl.col("marker") == "D7S820")
    assert d7.select("allele", "height_rfu", "area_rfu").rows() == [
        ("8", 1173.0, 8218.0),
        ("10", 248.0, 5730.0),
        ("13", 980.0, 6509.0),
    ]
    assert frame.filter(pl.col("marker") == "Penta E").height == 2


def test_real_sizing_table_leading_space_number(real_exports: Path) -> None:
    """The donor FGA area written as ' 8712' is read as 8712."""
    frame = _genemapper(real_exports, "rchimerism_single_donor_ddata_donor.txt")
    fga20 = frame.filter((pl.col("marker") == "FGA") & (pl.col("allele") == "20"))
    assert fga20.select("height_rfu", "area_rfu").row(0) == (2756.0, 8712.0)


def test_real_genotypes_table(real_exports: Path) -> None:
    """The genotypes table gives one peak per filled allele slot of its 80 rows."""
    frame = _genemapper(real_exports, GENOTYPES_FILE)
    lines = (real_exports / "genemapper" / GENOTYPES_FILE).read_text().splitlines()
    assert len(lines) - 1 == 80
    # 80 rows: 8 empty marker rows, homozygotes/single '?' fill one slot, the rest two
    assert frame.height == 116
    assert frame["source_row"].n_unique() == 72
    assert frame["source_row"].min() == 2
    assert frame["source_row"].max() == 81
    assert frame.filter(pl.col("allele") == "?").height == 34
    assert set(frame["sample_id"]) == {"sample1", "sample2"}
    assert set(frame["dye"]) == {"B", "G", "R", "Y"}
    assert frame["allele"].null_count() == 0
    # short (42-field) row: homozygote 283 in slot 1 only
    short = frame.filter(pl.col("marker") == "SS-R1M2-P4B8").unique("sample_id").sort("sample_id")
    assert short.select("allele", "size_bp", "height_rfu", "area_rfu").rows() == [
        ("283", 283.55, 26484.0, 159916.0),
        ("283", 283.55, 26484.0, 159916.0),
    ]
    first = frame.filter(pl.col("source_row") == 2).sort("size_bp")
    assert first.select("allele", "size_bp", "area_rfu").rows() == [
        ("?", 226.1, 6330.0),
        ("?", 269.12, 30043.0),
    ]
    empty_markers = {"SS-R1M2-P3G5", "SS-B3M4-P4F8", "SS-B3M4-P4F1", "SS-B1M2-P3C6"}
    assert not empty_markers & set(frame["marker"])


def _sizing(*rows: str, newline: str = "\r\n") -> bytes:
    return (newline.join([SIZING_HEADER, *rows]) + newline).encode()


def test_microvariants_stay_strings() -> None:
    """Microvariant alleles 9.3 and 10.10 keep their text (10.10 never becomes 10.1)."""
    data = _sizing(
        '"B,1"\tS1\tTH01\t9.3\t183.5\t900\t5000\t2000\t',
        '"B,2"\tS1\tD21S11\t10.10\t200.0\t800\t4000\t2100\t',
        '"B,3"\tS1\tD21S11\t30.2\t224.0\t700\t3500\t2200\t',
    )
    frame = parse_genemapper(detect(data, file_name="micro.txt")).frame
    assert frame["allele"].to_list() == ["9.3", "10.10", "30.2"]
    assert frame.schema["allele"] == pl.String


def test_sizing_with_preamble_bom_and_bare_cr() -> None:
    """The header is found by content after a preamble; BOM and bare CR line ends are fine."""
    lines = [
        "Exported by GeneMapper ID-X 1.6",
        "",
        SIZING_HEADER,
        '"G,7"\tS2\tvWA\t17\t160.2\t1500\t9000\t3000\t',
    ]
    body = "\r".join(lines)
    frame = parse_genemapper(detect(b"\xef\xbb\xbf" + body.encode(), file_name="pre.txt")).frame
    assert frame.select("sample_id", "marker", "allele", "dye", "source_row").row(0) == (
        "S2",
        "vWA",
        "17",
        "G",
        4,
    )


def test_sizing_decimal_comma_semicolon() -> None:
    """A ;-separated table with decimal commas reads sizes like 228,25 as 228.25."""
    header = "Dye/Sample Peak;Sample File Name;Marker;Allele;Size;Height;Area;Data Point;"
    lines = [
        header,
        '"G,9";S3;D7S820;10;228,25;248;5730;3128;',
        '"G,10";S3;D7S820;13;240,35;980;6509;3247;',
    ]
    frame = parse_genemapper(detect(("\n".join(lines) + "\n").encode(), file_name="semi.txt")).frame
    assert frame["size_bp"].to_list() == [228.25, 240.35]
    assert frame["area_rfu"].to_list() == [5730.0, 6509.0]
    assert frame["dye"].to_list() == ["G", "G"]


def test_sizing_decimal_comma_tab() -> None:
    """A TAB table written under a decimal-comma locale is read, not rejected."""
    data = _sizing('"B,3"\tS1\tD3S1358\t14\t120,33\t941\t5862,5\t2086\t')
    assert parse_genemapper(detect(data, file_name="tabcomma.txt")).frame.select(
        "size_bp", "area_rfu"
    ).row(0) == (
        120.33,
        5862.5,
    )


def test_sizing_thousands_separator_with_decimal_point() -> None:
    """With decimal points in the file, 11,323 is a thousands group (11323)."""
    data = _sizing('"B,3"\tS1\tD18S51\t19\t324.9\t1681\t"11,323"\t4091\t')
    assert parse_genemapper(detect(data, file_name="k.txt")).frame["area_rfu"].to_list() == [
        11323.0
    ]


def _genotypes(header: list[str], rows: list[list[str]]) -> bytes:
    return ("\n".join("\t".join(r) for r in [header, *rows]) + "\n").encode()


def test_genotypes_eight_slots_with_area_alias() -> None:
    """An ID-X style table with Allele 1..8 and 'Area n' columns yields every filled slot."""
    n = 8
    header = ["Sample File", "Sample Name", "Marker", "Dye"]
    for block in ("Allele", "Size", "Height", "Area"):
        header += [f"{block} {i}" for i in range(1, n + 1)]
    header += ["GQ"]
    alleles = ["12", "13", "14", "9.3", "", "", "", ""]
    sizes = ["100.1", "104.2", "108.3", "98.0", "", "", "", ""]
    heights = ["1000", "900", "300", "200", "", "", "", ""]
    areas = ["5000", "4500", "1500", "1000", "", "", "", ""]
    row = ["f1.fsa", "MIX1", "D8S1179", "G", *alleles, *sizes, *heights, *areas, "0.9"]
    frame = parse_genemapper(detect(_genotypes(header, [row]), file_name="idx.txt")).frame
    assert frame.select("allele", "size_bp", "height_rfu", "area_rfu").rows() == [
        ("12", 100.1, 1000.0, 5000.0),
        ("13", 104.2, 900.0, 4500.0),
        ("14", 108.3, 300.0, 1500.0),
        ("9.3", 98.0, 200.0, 1000.0),
    ]
    assert set(frame["sample_id"]) == {"MIX1"}
    assert set(frame["source_row"]) == {2}


def test_genotypes_ragged_rows_and_sample_file_fallback() -> None:
    """Short rows are padded, long rows truncated; empty Sample Name falls back to Sample File."""
    header = ["Sample File", "Sample Name", "Marker", "Dye", "Allele 1", "Allele 2"]
    header += ["Size 1", "Size 2", "Height 1", "Height 2", "Peak Area 1", "Peak Area 2", "GQ"]
    rows = [
        ["a.fsa", "", "TPOX", "Y", "8", "", "230.1", "", "1200", "", "7000.0"],
        [
            "b.fsa",
            "B",
            "TPOX",
            "Y",
            "8",
            "11",
            "230.1",
            "242.0",
            "600",
            "650",
            "3000.0",
            "3100.0",
            "0.8",
            "",
            "x",
        ],
        ["c.fsa", "C", "FGA", "Y"],
    ]
    frame = parse_genemapper(detect(_genotypes(header, rows), file_name="ragged.txt")).frame
    assert frame.select("sample_id", "allele", "area_rfu", "source_row").rows() == [
        ("a.fsa", "8", 7000.0, 2),
        ("B", "8", 3000.0, 3),
        ("B", "11", 3100.0, 3),
    ]


def test_genotypes_homozygote_is_one_peak() -> None:
    """A homozygote (Allele 1 filled, Allele 2 empty) is a single peak, not two."""
    header = ["Sample Name", "Marker", "Allele 1", "Allele 2", "Height 1", "Height 2"]
    frame = parse_genemapper(
        detect(_genotypes(header, [["S", "CSF1PO", "11", "", "2551", ""]]), file_name="hom.txt")
    ).frame
    assert frame.select("allele", "height_rfu", "area_rfu").rows() == [("11", 2551.0, None)]


@pytest.mark.parametrize("data", [b"", b"   \r\n\r\n", b"\t\t\n"])
def test_empty_file_is_unreadable(data: bytes) -> None:
    """An empty export gives UnreadableFileError with the file name in the message."""
    with pytest.raises(UnreadableFileError, match=r"empty\.txt"):
        parse_genemapper(detect(data, file_name="empty.txt"))


def test_header_only_is_unreadable() -> None:
    """A header without peak rows is reported, not returned as an empty table."""
    with pytest.raises(UnreadableFileError, match="no peaks"):
        parse_genemapper(detect(_sizing(), file_name="h.txt"))


@pytest.mark.parametrize("data", [b"PK\x03\x04junk", b"\xd0\xcf\x11\xe0junk", b"\x00\x01\x02bin"])
def test_non_text_container_is_unreadable(data: bytes) -> None:
    """Spreadsheets and binary files are rejected with a re-export hint."""
    with pytest.raises(UnreadableFileError, match="text"):
        parse_genemapper(detect(data, file_name="x.bin"))


def test_no_header_is_unreadable() -> None:
    """A text file without a GeneMapper header names what was looked for."""
    with pytest.raises(UnreadableFileError, match="Dye/Sample Peak"):
        parse_genemapper(detect(b"Well,Sample,Cq\nA1,S,20\n", file_name="qpcr.csv"))


def test_bad_number_points_at_line() -> None:
    """A non-numeric Height is a ValidationFailedError naming the line and column."""
    data = _sizing(
        '"B,1"\tS1\tTH01\t6\t161.97\t1040\t6080\t2479\t',
        '"B,2"\tS1\tTH01\t7\t165.91\tabc\t6174\t2517\t',
    )
    with pytest.raises(ValidationFailedError) as info:
        parse_genemapper(detect(data, file_name="bad.txt"))
    problem = info.value.problems[0]
    assert (problem.row, problem.column, problem.value) == (3, "Height", "abc")


def test_negative_area_breaks_contract() -> None:
    """A negative area fails the StrPeaks contract with the file's line number."""
    data = _sizing('"B,1"\tS1\tTH01\t6\t161.97\t1040\t-5\t2479\t')
    with pytest.raises(ValidationFailedError) as info:
        parse_genemapper(detect(data, file_name="neg.txt"))
    assert any(p.row == 2 and p.column == "area_rfu" for p in info.value.problems)


def test_missing_sample_id_breaks_contract() -> None:
    """A peak without a sample name cannot be attributed and is rejected."""
    data = _sizing('"B,1"\t\tTH01\t6\t161.97\t1040\t6080\t2479\t')
    with pytest.raises(ValidationFailedError):
        parse_genemapper(detect(data, file_name="nosample.txt"))


def test_missing_required_column() -> None:
    """A genotypes table without a sample column names the missing column."""
    header = ["Marker", "Allele 1", "Allele 2"]
    with pytest.raises(ValidationFailedError, match="Sample Name"):
        parse_genemapper(detect(_genotypes(header, [["TH01", "6", "7"]]), file_name="nos.txt"))


@given(st.binary(max_size=400))
def test_any_bytes_give_frame_or_chimera_error(data: bytes) -> None:
    """Whatever the bytes, the parser returns a frame that keeps its contract, or raises a
    ChimeraError."""
    try:
        frame = parse_genemapper(detect(data, file_name="fuzz.txt")).frame
    except ChimeraError:
        return
    assert frame.height > 0
    StrPeaks.validate(frame)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["TH01", "Penta E", "vWA", ""]),
            st.sampled_from(["6", "9.3", "10.10", "OL", "X", "?", ""]),
            st.text(alphabet='0123456789.,- abc\t"', max_size=8),
        ),
        max_size=6,
    )
)
def test_fuzzed_sizing_rows_never_traceback(rows: list[tuple[str, str, str]]) -> None:
    """Sizing rows with arbitrary cell text never raise anything but a ChimeraError."""
    lines = [f'"B,{i}"\tS\t{m}\t{a}\t100\t{v}\t{v}\t1\t' for i, (m, a, v) in enumerate(rows)]
    try:
        frame = parse_genemapper(detect(_sizing(*lines), file_name="fuzz.txt")).frame
    except ChimeraError:
        return
    assert frame.height <= len(rows)
