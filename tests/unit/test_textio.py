from __future__ import annotations

import io
from pathlib import Path

import openpyxl
import pytest

from chimera.errors import FileTooLargeError
from chimera.settings import Settings
from chimera.textio import (
    Container,
    check_size,
    decode_text,
    has_open_quote,
    normalise_header,
    parse_number,
    read_rows,
    rows_to_records,
    sniff_container,
    sniff_delimiter,
    split_line,
    split_lines,
    split_rows,
    uses_decimal_comma,
    workbook_is_truncated,
)


def test_sniff_container_uses_magic_bytes_not_names() -> None:
    """It recognises BIFF, zip and text containers from their first bytes."""
    assert sniff_container(b"\xd0\xcf\x11\xe0rest") is Container.XLS
    assert sniff_container(b"PK\x03\x04rest") is Container.XLSX
    assert sniff_container(b"Well,Sample\r\n") is Container.TEXT
    assert sniff_container(b"\x00\x01\x02binary") is Container.BINARY


def test_decode_strips_bom_and_falls_back_to_cp1252() -> None:
    """A UTF-8 BOM disappears and cp1252 bytes still decode."""
    assert decode_text(b"\xef\xbb\xbfWell") == "Well"
    assert decode_text("Conc(copies/µL)".encode("cp1252")) == "Conc(copies/µL)"


def test_split_lines_accepts_crlf_lf_and_cr() -> None:
    """All three line-ending conventions split the same way."""
    assert split_lines("a\r\nb\nc\rd") == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [("a\tb\tc", "\t"), ("a;b;c", ";"), ("a,b,c", ","), ('"B,1"\tx\ty', "\t")],
)
def test_sniff_delimiter_counts_outside_quotes(line: str, expected: str) -> None:
    """Delimiters inside quotes do not count."""
    assert sniff_delimiter(line) == expected


def test_quoted_field_with_comma_stays_one_field() -> None:
    """GeneMapper's "B,1" dye/peak field survives a TAB split."""
    rows = read_rows(['"B,1"\txxxx\tD3S1358\t'], "\t")
    assert rows == [["B,1", "xxxx", "D3S1358", ""]]


def test_rows_to_records_pads_short_rows_and_suffixes_duplicate_names() -> None:
    """Ragged rows are padded; a repeated header name gets a #2 suffix."""
    records = rows_to_records(["Well", "Task", "Task"], [["A1"], ["A2", "NTC", "x", "extra"]])
    assert records[0] == {"Well": "A1", "Task": "", "Task#2": ""}
    assert records[1] == {"Well": "A2", "Task": "NTC", "Task#2": "x"}


def test_header_normalisation_maps_cyrillic_te_and_micro() -> None:
    """Cт (Cyrillic) and µ variants normalise to plain ASCII."""
    assert normalise_header("Cт") == "ct"
    assert normalise_header("Copies/20ÂµLWell") == "copies/20ulwell"
    assert normalise_header("  Sample   Name ") == "sample name"


@pytest.mark.parametrize(
    ("text", "decimal_comma", "expected"),
    [
        ("100,000,000.000", False, 1e8),
        ("5,720.562", False, 5720.562),
        ("0,85", True, 0.85),
        ("-3,32", True, -3.32),
        ("NaN", False, None),
        ("Undetermined", False, None),
        ("", False, None),
        ('"12.5"', False, 12.5),
    ],
)
def test_parse_number_handles_instrument_spellings(
    text: str, decimal_comma: bool, expected: float | None
) -> None:
    """Thousands separators, decimal commas and sentinels parse as the lab means them."""
    assert parse_number(text, decimal_comma=decimal_comma) == expected


def test_decimal_comma_only_for_semicolon_tables() -> None:
    """A comma-separated table never switches to decimal commas."""
    assert uses_decimal_comma([["1,5", "x"]], ";")
    assert not uses_decimal_comma([["1,5", "x"]], ",")


def test_check_size_reads_the_size_not_the_file(tmp_path: Path) -> None:
    """The size limit is judged from stat: a file over it is refused with both sizes named."""
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 5000)
    assert check_size(path, 5000) == 5000
    assert check_size(path, None) == 5000
    with pytest.raises(FileTooLargeError, match=r"big\.txt.*0\.0 MB limit") as info:
        check_size(path, 4999)
    assert info.value.reason == "too_large"


def test_default_size_limit_is_a_setting() -> None:
    """The limit lives in Settings.inbox_rules (one settings object)."""
    assert Settings().inbox_rules.max_file_bytes == 200_000_000


def test_workbook_truncation_is_told_from_the_container() -> None:
    """A zip without its end record or an OLE2 file short of a sector is truncated."""
    book = openpyxl.Workbook()
    buffer = io.BytesIO()
    book.save(buffer)
    data = buffer.getvalue()
    assert not workbook_is_truncated(data)
    assert all(workbook_is_truncated(data[:cut]) for cut in range(4, len(data), 37))
    assert workbook_is_truncated(b"\xd0\xcf\x11\xe0" + b"\x00" * 1000)
    assert not workbook_is_truncated(b"Well,Sample\r\n")


@pytest.mark.parametrize(
    "lines",
    [
        ['"B,1"\txxxx\tD3S1358\t', "", "  ", '"B,2"\tyy\tTH01\t'],
        ['a\t"open', 'b"\tc', "d\te"],
        ["plain\tline", "x\ty\tz"],
    ],
)
def test_split_rows_gives_one_row_per_line(lines: list[str]) -> None:
    """Splitting all lines at once equals splitting each line on its own, even with an open
    quote (a quoted field never runs on into the next line)."""
    assert split_rows(lines, "\t") == [split_line(line, "\t") for line in lines]


def test_open_quote_marks_a_cut_inside_a_quoted_field() -> None:
    """An odd number of double quotes means the line ends inside a quoted field."""
    assert has_open_quote('"M01",x,"(A01,B01')
    assert not has_open_quote('"M01",x,"(A01,B01)"')


@pytest.mark.parametrize("text", ["inf", "-inf", "1e400", "NaN", "nan"])
def test_non_finite_numbers_are_no_values(text: str) -> None:
    """Infinity and NaN are no measurement: parse_number gives None and callers refuse or null."""
    assert parse_number(text) is None


def test_decimal_comma_with_exponent() -> None:
    """5,5E8 in a decimal-comma file is 5.5e8 cells."""
    assert parse_number("5,5E8", decimal_comma=True) == 5.5e8
    assert uses_decimal_comma([["P01", "5,5E8"]], ";")
