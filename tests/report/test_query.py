"""`chimera query`: a DuckDB view per table, current rows unless --all, CSV safe for spreadsheets."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from report_builders import copy_home
from typer.testing import CliRunner

from chimera.cli import app
from chimera.settings import Settings
from chimera.sql import run_query
from chimera.warehouse import CHIMERISM, INGEST_LOG, SAMPLES, Warehouse


@pytest.fixture(scope="module")
def with_superseded(
    report_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """The small warehouse plus a superseded copy of one patient's chimerism rows."""
    settings = copy_home(report_settings, tmp_path_factory.mktemp("superseded-home"))
    warehouse = Warehouse(settings.warehouse)
    old = warehouse.read(CHIMERISM).head(5).with_columns(superseded=pl.lit(True))
    warehouse.write(CHIMERISM, "old-export", old)
    return settings


def test_views_show_current_rows_unless_all(with_superseded: Settings) -> None:
    """Superseded rows are hidden by default and shown with --all."""
    warehouse = Warehouse(with_superseded.warehouse).read(CHIMERISM)
    current = warehouse.filter(~pl.col("superseded")).height
    count = "select count(*) as n from chimerism"
    assert run_query(with_superseded.warehouse, count)["n"][0] == current
    assert (
        run_query(with_superseded.warehouse, count, include_superseded=True)["n"][0]
        == warehouse.height
    )
    assert warehouse.height > current


def test_every_table_is_a_view_and_file_status_is_each_files_latest_event(
    report_settings: Settings,
) -> None:
    """Each table folder is a view; file_status has one row per file."""
    views = set(
        run_query(
            report_settings.warehouse, "select view_name from duckdb_views() where not internal"
        )["view_name"]
    )
    folders = {
        p.name
        for p in report_settings.warehouse.iterdir()
        if p.is_dir() and any(p.rglob("*.parquet"))
    }
    assert folders | {"file_status"} == views
    ledger = Warehouse(report_settings.warehouse).read(INGEST_LOG)
    status = run_query(report_settings.warehouse, "select * from file_status")
    assert status.height == ledger.select("source_sha256", "file_name").n_unique()


def test_registry_views_keep_the_latest_row_per_sample(
    report_settings: Settings, tmp_path: Path
) -> None:
    """A sample registered by two manifests appears once, as the later manifest says."""
    shutil.copytree(report_settings.warehouse, tmp_path / "warehouse")
    warehouse = Warehouse(tmp_path / "warehouse")
    samples = warehouse.read(SAMPLES)
    later = samples.head(1).with_columns(
        specimen=pl.lit("PB CD56+"),
        source_sha256=pl.lit("f" * 64),
        ingested_at=pl.col("ingested_at").dt.offset_by("1d"),
    )
    warehouse.write(SAMPLES, "f" * 64, later)
    sample = later["sample_id"][0]
    rows = run_query(
        tmp_path / "warehouse", f"select specimen from samples where sample_id = '{sample}'"
    )
    assert rows["specimen"].to_list() == ["PB CD56+"]


def test_json_and_csv_outputs_for_scripts(report_settings: Settings) -> None:
    """--json prints rows as JSON; --csv prints CSV with formula-like text neutralised."""
    home = ["--home", str(report_settings.home)]
    runner = CliRunner()
    sql = "select patient_id, '=1+2' as formula, -1.5 as delta from chimerism order by 1 limit 3"
    as_json = runner.invoke(app, ["query", sql, *home, "--json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert len(rows) == 3
    assert rows[0]["formula"] == "=1+2"
    as_csv = runner.invoke(app, ["query", sql, *home, "--csv"])
    assert as_csv.exit_code == 0, as_csv.output
    parsed = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [r["formula"] for r in parsed] == ["'=1+2"] * 3
    assert [r["delta"] for r in parsed] == ["-1.5"] * 3


def test_a_bad_query_is_a_usage_error(report_settings: Settings) -> None:
    """DuckDB's message is printed and the exit code is 2, never a traceback."""
    result = CliRunner().invoke(
        app, ["query", "select nope from chimerism", "--home", str(report_settings.home)]
    )
    assert result.exit_code == 2
    assert "query failed" in result.output
