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


TABLE_MAX_FILES = 200
"""Batches up to this many files print as a boxed table; larger ones as an aligned listing
(the same columns, one line per file: a table of a 1,000-file history took rich ~1 s)."""
COLUMNS = ("file", "format", "status", "rows", "detail")


def print_outcomes(console: Console, outcomes: Sequence[FileOutcome]) -> None:
    """One row per file (name, format, fate, rows, reason), then each quarantined file's problems."""
    if len(outcomes) > TABLE_MAX_FILES:
        console.print(_listing(outcomes), soft_wrap=True, end="")
    else:
        console.print(_table(outcomes))
    for o in outcomes:
        if o.status is FileStatus.QUARANTINED:
            for problem in o.problems[:PROBLEMS_SHOWN]:
                console.print(f"  {o.file_name}: {problem.render()}")


def _cells(o: FileOutcome) -> tuple[str, str, str, str, str]:
    """The columns of one file's row (the report path of a quarantined file after its reason)."""
    detail = o.reason or ""
    if o.status is FileStatus.QUARANTINED and o.destination is not None:
        detail += f"\n→ report: {o.destination}.problems.txt"
    return o.file_name, o.detected_format or "?", o.status.value, str(o.rows), detail


def _table(outcomes: Sequence[FileOutcome]) -> Table:
    table = Table(title="Files", show_lines=False)
    for column in COLUMNS:
        table.add_column(column)
    for o in outcomes:
        name, fmt, status, rows, detail = _cells(o)
        # Text cells: names and reasons print as written (no markup parsing, which is slow).
        table.add_row(
            Text(name),
            Text(fmt),
            Text(status, style=STATUS_COLOUR[o.status]),
            Text(rows),
            Text(detail),
        )
    return table


def _listing(outcomes: Sequence[FileOutcome]) -> Text:
    """The table's rows as aligned lines (a detail's further lines indented under it)."""
    cells = [_cells(o) for o in outcomes]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(COLUMNS[:4])]
    indent = " " * (sum(widths) + 2 * len(widths))
    text = Text(f"Files ({len(outcomes)})\n", style="italic")
    header = "  ".join(h.ljust(w) for h, w in zip(COLUMNS[:4], widths, strict=True))
    text.append(f"{header}  {COLUMNS[4]}\n", style="bold")
    for o, (name, fmt, status, rows, detail) in zip(outcomes, cells, strict=True):
        text.append(f"{name.ljust(widths[0])}  {fmt.ljust(widths[1])}  ")
        text.append(status.ljust(widths[2]), style=STATUS_COLOUR[o.status])
        lines = detail.replace("\n", "\n" + indent)
        text.append(f"  {rows.rjust(widths[3])}  {lines}".rstrip() + "\n")
    return text
