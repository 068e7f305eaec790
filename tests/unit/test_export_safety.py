"""Spreadsheet formula injection is neutralised in every text cell Chimera writes (issue 13)."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chimera.export_safety import FORMULA_STARTS, neutralise_frame, neutralise_text, safe_csv


@pytest.mark.parametrize("start", FORMULA_STARTS)
def test_each_formula_start_gets_a_leading_quote(start: str) -> None:
    """=, +, -, @, TAB and CR at the start make a cell text."""
    assert neutralise_text(f"{start}cmd|' /C calc'!A0") == f"'{start}cmd|' /C calc'!A0"


@given(st.text())
def test_no_neutralised_text_starts_a_formula(value: str) -> None:
    """Whatever the text, the written cell never starts with a formula character and keeps the text."""
    out = neutralise_text(value)
    assert not out.startswith(FORMULA_STARTS)
    assert out in (value, f"'{value}")


def test_numbers_and_nulls_are_untouched() -> None:
    """Only text columns change; negative numbers stay numbers; nulls stay null."""
    frame = pl.DataFrame({"sample_id": ["@SUM(A1)", None, "P01"], "change_pct": [-2.0, None, 1.0]})
    out = neutralise_frame(frame)
    assert out["sample_id"].to_list() == ["'@SUM(A1)", None, "P01"]
    assert out["change_pct"].to_list() == [-2.0, None, 1.0]
    assert safe_csv(frame).splitlines()[1] == "'@SUM(A1),-2.0"
