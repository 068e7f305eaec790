"""Which sample ids of an assay file need a manifest row: the list path agrees with the rules.

:func:`chimera.prerequisites.assay_sample_ids` decides on the columns as lists (issue 12 speed);
the polars expressions it falls back to are the rules themselves, so both must agree on every
frame, odd white space, control names and sample types included.
"""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from chimera.prerequisites import (
    CONTROL_SAMPLE_NAMES,
    _assay_sample_ids_expr,
    _surely_kept,
    assay_sample_ids,
)

NAMES = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "P01-D001",
            "NTC",
            " ntc 2",
            "H2O",
            "h001-d001",
            "Water",
            "blank-1",
            "No Template",
            "neg ctrl",
            "Negative-Control",
            "NegA",
            "",
            "   ",
            "\x1c",
            "\x1cNTC",
            "\u3000P02",
            "\u212aNTC",
            "NTCX",
            "ntc_1",
        ]
    ),
    st.text(alphabet=st.sampled_from("nNtTcChH2oOwW \t\x1c\u00a0-_1İ\u212a"), max_size=6),
)
TASKS = st.one_of(st.none(), st.sampled_from(["unknown", "ntc", "standard", "NTC", ""]))
TYPES = st.one_of(
    st.none(),
    st.sampled_from(["Unknown", "NTC", "NegCtrl", "Negative Control", "posctrl", "İ", ""]),
)


@st.composite
def assay_frames(draw: st.DrawFn) -> pl.DataFrame:
    """An assay frame: sample ids, and (PCR) a task and/or a sample type column."""
    n = draw(st.integers(0, 8))
    columns = {"sample_id": draw(st.lists(NAMES, min_size=n, max_size=n))}
    if draw(st.booleans()):
        columns["task"] = draw(st.lists(TASKS, min_size=n, max_size=n))
    if draw(st.booleans()):
        columns["sample_type"] = draw(st.lists(TYPES, min_size=n, max_size=n))
    return pl.DataFrame(columns, schema=dict.fromkeys(columns, pl.String))


@settings(max_examples=300, deadline=None)
@given(assay_frames())
def test_the_list_path_keeps_exactly_the_ids_the_rules_keep_12(frame: pl.DataFrame) -> None:
    """Blank names, control names, control tasks and sample types, missing tasks: as the rules."""
    pcr = "task" in frame.columns or "sample_type" in frame.columns
    assert assay_sample_ids(frame) == _assay_sample_ids_expr(frame, pcr=pcr)


def test_other_column_types_follow_the_rules() -> None:
    """A categorical task column takes the expressions, with the same verdicts."""
    frame = pl.DataFrame(
        {"sample_id": ["P01-D1", "NTC", "P01-D2"], "task": ["unknown", "unknown", "ntc"]},
        schema={"sample_id": pl.String, "task": pl.Categorical},
    )
    assert assay_sample_ids(frame) == ["P01-D1"]


@settings(max_examples=200, deadline=None)
@given(st.from_regex(CONTROL_SAMPLE_NAMES))
def test_every_control_name_goes_to_the_rules_12(name: str) -> None:
    """The shortcut never passes a name the control pattern matches (a control name added to
    ``CONTROL_SAMPLE_NAMES`` without its first letters in the shortcut would fail here)."""
    assert not _surely_kept(name, pcr=True)
