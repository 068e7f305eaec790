"""Result formatting, HTML escaping and the terminal summaries (no warehouse needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chimera.cli import app
from chimera.report.html import Cell, esc, table
from chimera.report.summary import evidence_rows, format_result


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((0.42, "quantified", 0.03, 0.31, 0.55), "0.42 % (0.31–0.55)"),
        ((0.08, "below_loq", 0.03, 0.02, 0.2), "detected, < LoQ (0.08 %)"),
        ((None, "not_detected", 0.03, None, None), "not detected (< LoD 0.03 %)"),
        ((None, "failed", None, None, None), "not reportable"),
    ],
)
def test_results_are_never_printed_as_a_bare_zero(args: tuple[object, ...], expected: str) -> None:
    """Each result state reads the way the lab reports it."""
    assert format_result(*args) == expected  # type: ignore[arg-type]


def test_evidence_rows_finds_every_cited_result() -> None:
    """Results nested anywhere in an alert's evidence are found in order."""
    evidence = {
        "episodes": [{"samples": [{"sample_id": "A"}, {"sample_id": "B"}]}],
        "dose1": {"sample": {"sample_id": "C"}},
    }
    assert [r["sample_id"] for r in evidence_rows(evidence)] == ["A", "B", "C"]


def test_alerts_command_without_alerts(tmp_path: Path) -> None:
    """An empty warehouse says there are no open alerts (exit 0)."""
    result = CliRunner().invoke(app, ["alerts", "--home", str(tmp_path)])
    assert result.exit_code == 0
    assert "No open alerts" in result.output


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ('"onload="x', "&quot;onload=&quot;x"),
        ("it's", "it&#x27;s"),
    ],
)
def test_every_input_text_is_escaped(raw: str, escaped: str) -> None:
    """Tags and both quote kinds are escaped, so a text can neither open a tag nor an attribute."""
    assert esc(raw) == escaped
    assert escaped in table(["h"], [[Cell(esc(raw))]])
