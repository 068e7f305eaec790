"""SQL over the warehouse: one DuckDB view per table (``chimera query``).

Each view reads ``<table>/**/*.parquet`` in place (nothing is copied). By default the views show
current rows only: rows flagged ``superseded`` (a corrected re-export replaced them) are hidden,
and the registry tables show the latest manifest row per sample and the latest log row per dose,
as the pipeline uses them. ``include_superseded=True`` shows every row ever written.
``file_status`` is each file's latest ledger event.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    import duckdb

LATEST_PER_KEY = {"samples": ("sample_id",), "infusions": ("patient_id", "dose_number")}
"""Registry tables: the latest file's row per key is current (``pipeline.read_registry``)."""


class QueryError(ValueError):
    """A query DuckDB could not run; the message is DuckDB's, for the user."""


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_folders(warehouse: Path) -> list[Path]:
    """The warehouse's table folders that hold at least one Parquet file, by name."""
    if not warehouse.is_dir():
        return []
    return sorted(
        p
        for p in warehouse.iterdir()
        if p.is_dir() and not p.name.startswith(".") and any(p.rglob("*.parquet"))
    )


def _current_filter(con: duckdb.DuckDBPyConnection, name: str, source: str) -> str | None:
    columns = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    if "superseded" in columns:
        return f"SELECT * FROM {source} WHERE NOT coalesce(superseded, false)"
    key = LATEST_PER_KEY.get(name)
    if key and set(key) <= columns and {"ingested_at", "source_sha256"} <= columns:
        partition = ", ".join(_quote(k) for k in key)
        return (
            f"SELECT * FROM {source} QUALIFY row_number() OVER (PARTITION BY {partition} "
            "ORDER BY ingested_at DESC, source_sha256 DESC) = 1"
        )
    return None


def connect(warehouse: Path, *, include_superseded: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per warehouse table (and ``file_status``)."""
    import duckdb  # noqa: PLC0415

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for folder in table_folders(warehouse):
        pattern = _literal((folder / "**" / "*.parquet").as_posix())
        source = f"read_parquet({pattern}, hive_partitioning=true, union_by_name=true)"
        body = None if include_superseded else _current_filter(con, folder.name, source)
        con.execute(f"CREATE VIEW {_quote(folder.name)} AS {body or 'SELECT * FROM ' + source}")
    if (warehouse / "ingest_log").is_dir() and any((warehouse / "ingest_log").rglob("*.parquet")):
        # The ledger keeps every event; file_status is each file's current fate.
        con.execute(
            "CREATE VIEW file_status AS SELECT * FROM ingest_log QUALIFY row_number() "
            "OVER (PARTITION BY source_sha256, file_name ORDER BY logged_at DESC) = 1"
        )
    return con


def read_current(
    con: duckdb.DuckDBPyConnection, name: str, schema: dict[str, pl.DataType] | None = None
) -> pl.DataFrame:
    """A view of :func:`connect` as a polars frame; an absent table gives an empty frame."""
    present = con.execute("SELECT 1 FROM duckdb_views() WHERE view_name = ?", [name]).fetchall()
    if not present:
        return pl.DataFrame(schema=schema or {})
    frame: pl.DataFrame = con.sql(f"SELECT * FROM {_quote(name)}").pl()
    for column, dtype in (schema or {}).items():
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(column))
    return frame


def run_query(warehouse: Path, sql: str, *, include_superseded: bool = False) -> pl.DataFrame:
    """Run ``sql`` over the warehouse views; an empty frame for statements without a result."""
    import duckdb  # noqa: PLC0415

    con = connect(warehouse, include_superseded=include_superseded)
    try:
        result: duckdb.DuckDBPyRelation | None = con.sql(sql)
    except duckdb.Error as err:
        raise QueryError(str(err)) from None
    frame: pl.DataFrame = pl.DataFrame() if result is None else result.pl()
    return frame
