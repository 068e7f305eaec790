"""The table body read by polars all at once equals the body read line by line."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from chimera.detect import detect
from chimera.parsers.body import _split_at_once, _split_by_line

_HEADER = "Dye/Sample Peak\tSample File Name\tMarker\tAllele\tSize\tHeight\tArea\t"
_CELL = st.text(alphabet='aB 1.,;"\u00b5\u3000\u2028', max_size=5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_CELL, max_size=10), min_size=1, max_size=6), st.booleans())
def test_polars_body_equals_line_by_line_body(rows: list[list[str]], repeat: bool) -> None:
    """Whenever the polars reader takes a table (quotes only around whole fields), its data
    rows (blank and repeated header lines dropped), field counts and cells equal the
    quote-aware line-by-line reader's."""
    lines = ["\t".join(cells) for cells in rows]
    text = "\r\n".join([_HEADER, *lines, *([_HEADER.upper()] if repeat else []), ""])
    export = detect(text.encode(), file_name="t.txt")
    names = [cell.strip() for cell in export.row(export.header_row)]
    fast = _split_at_once(export, names)
    if fast is None:
        assert any('"' in line for line in lines)
        return
    slow = _split_by_line(export, names)
    assert fast.lines.to_list() == slow.lines.to_list()
    assert fast.counts.to_list() == slow.counts.to_list()
    assert fast.cells.equals(slow.cells)


def test_quoted_delimiter_takes_the_line_by_line_reader() -> None:
    """A quote holding the delimiter (or a quote inside a field) is left to the csv reader."""
    text = f'{_HEADER}\r\n"B\t1"\tS1\tD3S1358\t14\t120.3\t941\t5862\t\r\n'
    export = detect(text.encode(), file_name="t.txt")
    assert _split_at_once(export, _HEADER.split("\t")) is None
    assert _split_by_line(export, _HEADER.split("\t")).column("Dye/Sample Peak").to_list() == [
        "B\t1"
    ]
