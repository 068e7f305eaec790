"""The table of file fates a poll or ``chimera ingest`` prints (rendering only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from schemas.vocab import FileStatus

if TYPE_CHECKING:
    from chimera.ingest import FileOutcome

STATUS_COLOUR = {
    FileStatus.ACCEPTED: "green",
    FileStatus.DUPLICATE: "cyan",
    FileStatus.WAITING: "yellow",
    FileStatus.QUARANTINED: "red",
}
"""How each fate is coloured in the terminal."""

PROBLEMS_SHOWN = 10
"""Problems printed per quarantined file (its report beside it holds them all)."""


def print_outcomes(console: Console, outcomes: Sequence[FileOutcome]) -> None:
    """One row per file (name, format, fate, rows, reason), then each quarantined file's problems."""
    table = Table(title="Files", show_lines=False)
    for column in ("file", "format", "status", "rows", "detail"):
        table.add_column(column)
    for o in outcomes:
        detail = o.reason or ""
        if o.status is FileStatus.QUARANTINED and o.destination is not None:
            detail += f"\n→ report: {o.destination}.problems.txt"
        # Text cells: names and reasons print as written (no markup parsing, which is slow).
        table.add_row(
            Text(o.file_name),
            Text(o.detected_format or "?"),
            Text(o.status.value, style=STATUS_COLOUR[o.status]),
            Text(str(o.rows)),
            Text(detail),
        )
    console.print(table)
    for o in outcomes:
        if o.status is FileStatus.QUARANTINED:
            for problem in o.problems[:PROBLEMS_SHOWN]:
                console.print(f"  {o.file_name}: {problem.render()}")
