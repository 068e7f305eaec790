"""Whole-column cell reading gives exactly what the per-cell readers give (issue 12)."""

from __future__ import annotations

import math
from collections.abc import Callable

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from chimera.parsers.columns import clean_columns, plain_numbers, read_in_file_order
from chimera.textio import clean_cell

# Cells where polars and Python could disagree: Unicode blanks, separators Python's strip()
# removes, quotes, digits Python's float() reads but no instrument writes, overflow.
TRICKY = [
    "",
    " ",
    "A1",
    ' "B,1" ',
    '""',
    '" "a"',
    '"',
    "\u00a0x\u00a0",
    "\u3000y",
    "x\x1c",
    "\x1f",
    "µL",
    "a\u2003",
    "12.5",
    " 3 ",
    "1e5",
    "1E+05",
    "1e999",
    "inf",
    "nan",
    "1_000",
    "+.5",
    "5.",
    "-0",
    "0x1A",
    "\u0661\u0662",
    "1,5",
    "12.5\u00a0",
    "\t7\r",
]
CELL_TEXT = st.text(alphabet=st.sampled_from(list(' \t"\x1c\u00a0\u3000µ0123456789.,eE+-_ab')))


def test_clean_columns_equal_clean_cell_on_tricky_cells() -> None:
    assert clean_columns({"c": TRICKY})["c"].to_list() == [clean_cell(c) for c in TRICKY]


@settings(max_examples=60, deadline=None)
@given(st.lists(CELL_TEXT, min_size=1, max_size=20))
def test_clean_columns_equal_clean_cell(cells: list[str]) -> None:
    assert clean_columns({"c": cells, "d": cells[::-1]})["c"].to_list() == [
        clean_cell(c) for c in cells
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="aB1.,;-", max_size=5), CELL_TEXT), min_size=1))
def test_clean_columns_skip_no_cell_that_needs_cleaning(rows: list[tuple[str, str]]) -> None:
    """A column without blanks or quotes at an end (only nulled where empty) and a column with
    them, side by side, each give what clean_cell gives."""
    clean, any_ = [c for c, _ in rows], [a for _, a in rows]
    result = clean_columns({"clean": clean, "any": any_})
    assert result["clean"].to_list() == [clean_cell(c) for c in clean]
    assert result["any"].to_list() == [clean_cell(c) for c in any_]


def _float_or_none(cell: str) -> float | None:
    try:
        number = float(cell.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@settings(max_examples=60, deadline=None)
@given(st.lists(CELL_TEXT, min_size=1, max_size=20))
def test_plain_numbers_are_what_float_reads(cells: list[str]) -> None:
    values, done = plain_numbers({"n": cells})["n"]
    for cell, value, finished in zip(cells, values.to_list(), done.to_list(), strict=True):
        if finished and cell:
            assert value is not None
            assert value == _float_or_none(cell)
        else:
            assert value is None


def test_plain_numbers_leave_unusual_cells_to_the_reader() -> None:
    values, done = plain_numbers({"n": TRICKY})["n"]
    finished = dict(zip(TRICKY, done.to_list(), strict=True))
    assert finished["12.5"] and finished[" 3 "] and finished["1E+05"] and finished[""]
    for cell in ("1e999", "inf", "nan", "1_000", "0x1A", "\u0661\u0662", "1,5", "12.5\u00a0"):
        assert not finished[cell], cell
    assert values.to_list()[TRICKY.index("\t7\r")] == 7.0


NUMBER_TEXT = st.text(
    alphabet=st.sampled_from(list("0123456789.eE+-_ xXabcdfinINFA\u0661")), max_size=8
)
ODD_NUMBERS = ["1e", "1.", ".", "+", "-", "e5", "1e+", ".e5", "1.e5", "+.5", "1..2", "--1", "1d"]
ODD_NUMBERS += ["1f", "0x10", "infinity", "-inf", "NaN", "1e400", "1e-400", "5e-324", "2.675", "01"]


@settings(max_examples=300, deadline=None)
@given(st.lists(NUMBER_TEXT, min_size=1, max_size=20))
def test_polars_reads_no_number_float_refuses(cells: list[str]) -> None:
    """What polars casts to a finite float, Python's ``float`` reads to the same value (the
    ground for :func:`plain_numbers` taking polars' cast without a pattern check)."""
    for texts in (cells, ODD_NUMBERS):
        values, done = plain_numbers({"n": texts})["n"]
        for text, value, finished in zip(texts, values.to_list(), done.to_list(), strict=True):
            if finished and text:
                assert value == _float_or_none(text), text


def test_read_in_file_order_reads_row_by_row_then_column_by_column() -> None:
    calls: list[tuple[str, int]] = []

    def reader(name: str, value: float) -> Callable[[int], object]:
        def read(i: int) -> object:
            calls.append((name, i))
            return value

        return read

    first, second = read_in_file_order(
        [
            (pl.Series([1.0, None, None]), pl.Series([True, False, False]), reader("a", 9.0)),
            (pl.Series([None, 2.0, None]), pl.Series([False, True, False]), reader("b", 8.0)),
        ]
    )
    assert calls == [("b", 0), ("a", 1), ("a", 2), ("b", 2)]
    assert first.to_list() == [1.0, 9.0, 9.0]
    assert second.to_list() == [8.0, 2.0, 8.0]
