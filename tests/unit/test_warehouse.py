"""The table catalog: every table named once, every write validated, reads typed by contract."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from chimera.errors import ValidationFailedError
from chimera.warehouse import (
    ALERTS,
    ASSAY_LIMITS,
    CHIMERISM,
    INGEST_LOG,
    OBSERVATIONS,
    SAMPLES,
    TABLES,
    Table,
    Warehouse,
)
from schemas.vocab import Method

T = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _limits(**overrides: object) -> pl.DataFrame:
    row = {
        "source_sha256": "a" * 64,
        "pipeline_version": "0.1.0",
        "ingested_at": T,
        "method": "STR",
        "series_id": "S1",
        "lod_pct": 0.5,
        "loq_pct": 1.0,
        "n_levels": 4,
        "levels": "[]",
        "applied": True,
    }
    row.update(overrides)
    return pl.DataFrame([row], schema=ASSAY_LIMITS.schema)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_catalog_keys_and_partitions_are_contract_columns(table: Table) -> None:
    """Each table's key and partition columns exist in its contract."""
    columns = set(table.schema)
    assert set(table.key) <= columns
    assert set(table.partition_by) <= columns
    assert (table.single_file is None) or not table.partition_by


def test_catalog_names_each_table_once() -> None:
    """Table names (folders) are unique and every method has its raw table."""
    names = [t.name for t in TABLES]
    assert len(names) == len(set(names))
    assert set(OBSERVATIONS) == set(Method)


def test_absent_table_reads_as_empty_frame_with_contract_schema(tmp_path: Path) -> None:
    """Reading a table nobody wrote gives zero rows with the contract's columns and dtypes."""
    frame = Warehouse(tmp_path).read(CHIMERISM)
    assert frame.height == 0
    assert frame.schema == pl.Schema(CHIMERISM.schema)


def test_write_validates_against_the_contract(tmp_path: Path) -> None:
    """A frame breaking the table's contract is refused and nothing is written."""
    warehouse = Warehouse(tmp_path)
    with pytest.raises(ValidationFailedError, match="assay_limits"):
        warehouse.write_single(ASSAY_LIMITS, _limits(method="PCR"))
    assert warehouse.files(ASSAY_LIMITS) == []
    stored = warehouse.write_single(ASSAY_LIMITS, _limits())
    assert warehouse.read(ASSAY_LIMITS).to_dicts() == stored.to_dicts()


def test_read_fills_columns_an_older_file_lacks(tmp_path: Path) -> None:
    """A file written before a column existed reads with that column as nulls."""
    warehouse = Warehouse(tmp_path)
    warehouse.folder(ASSAY_LIMITS).mkdir(parents=True)
    _limits().drop("levels").write_parquet(warehouse.folder(ASSAY_LIMITS) / "limits.parquet")
    frame = warehouse.read(ASSAY_LIMITS)
    assert frame["levels"].to_list() == [None]
    assert frame["lod_pct"].to_list() == [0.5]


def test_single_file_access_needs_an_unpartitioned_table(tmp_path: Path) -> None:
    """Partitioned tables are written per key; asking for their single file is an error."""
    with pytest.raises(ValueError, match="partitioned"):
        Warehouse(tmp_path).read_single(SAMPLES)
    assert Warehouse(tmp_path).read_single(ALERTS) is None


def test_ledger_events_are_validated_and_appended(tmp_path: Path) -> None:
    """Each ledger event becomes its own file under its date; a bad status is refused."""
    warehouse = Warehouse(tmp_path)
    row = {
        "source_sha256": "b" * 64,
        "file_name": "plate.csv",
        "size_bytes": 10,
        "detected_format": None,
        "status": "accepted",
        "reason": None,
        "rows": 1,
        "supersedes": None,
        "flow_run_id": None,
        "pipeline_version": "0.1.0",
        "logged_at": T,
    }
    warehouse.append_log(pl.DataFrame([row], schema=INGEST_LOG.schema))
    warehouse.append_log(pl.DataFrame([row], schema=INGEST_LOG.schema))
    with pytest.raises(ValidationFailedError):
        warehouse.append_log(pl.DataFrame([{**row, "status": "lost"}], schema=INGEST_LOG.schema))
    files = warehouse.files(INGEST_LOG)
    assert len(files) == 2
    assert {f.parent.name for f in files} == {"2026-01-05"}
    assert warehouse.read(INGEST_LOG).height == 2


def test_rows_this_process_wrote_are_read_from_memory_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table read for the first time after this process wrote it takes the written rows
    (no file is read back, issue 12); a file another writer replaced is read again."""
    warehouse = Warehouse(tmp_path)
    stored = warehouse.write_single(ASSAY_LIMITS, _limits())

    def refuse(path: object, *args: object, **kwargs: object) -> pl.DataFrame:
        msg = f"read back {path}"
        raise AssertionError(msg)

    with monkeypatch.context() as patched:
        patched.setattr(pl, "read_parquet", refuse)
        assert warehouse.read(ASSAY_LIMITS).to_dicts() == stored.to_dicts()
    _limits(lod_pct=0.7, levels="[1]").write_parquet(warehouse.files(ASSAY_LIMITS)[0])
    assert warehouse.read(ASSAY_LIMITS)["lod_pct"].to_list() == [0.7]
