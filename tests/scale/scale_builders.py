"""Warehouse contents compared across runs: every table's rows, sorted, run lineage aside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chimera.warehouse import INBOX_STATE, TABLES, Warehouse

RUN_LINEAGE = ("flow_run_id", "ingested_at", "logged_at", "computed_at", "recorded_at")
"""Columns that name the run or the moment of ingest (equal content, other run)."""


def warehouse_rows(root: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Each table's rows (lineage of the run dropped) as sorted tuples, by table name.

    ``inbox_state`` is left out: it names the inbox folder, which differs between runs.
    """
    warehouse = Warehouse(root)
    out = {}
    for table in TABLES:
        if table is INBOX_STATE:
            continue
        frame = warehouse.read(table)
        frame = frame.drop([c for c in RUN_LINEAGE if c in frame.columns])
        frame = frame.select(sorted(frame.columns))
        out[table.name] = sorted(frame.iter_rows(), key=repr)
    return out
