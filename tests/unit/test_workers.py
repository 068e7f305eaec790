"""The worker pool (issue 12) writes what one process writes, and loses no file.

A big batch parses its files and rebuilds its patients in spawned worker processes
(``chimera.workers``). The pool is forced on here (two workers, thresholds of one) for the
sample trial, every designed bad file included, and every warehouse table, the method cache
and the ledger must equal an in-process run of the same files at the same clock.
"""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from chimera.detect import Assay
from chimera.parsers import dispatch
from chimera.poll import ingest_paths
from chimera.settings import Settings
from chimera.source_file import SourceFile, read_source
from chimera.staging import StagedParse, stage_each, staging_location, unstage_all
from chimera.workers import WorkerPool

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _trial_files(root: Path) -> list[Path]:
    """Every file of the sample trial but its truth (the generator's code is quarantined)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and "truth" not in p.parts)


def _ingest(files: list[Path], home: Path, *, workers: int) -> Path:
    settings = Settings().with_home(home)
    scale = replace(settings.scale, workers=workers, pool_min_files=1, pool_min_patients=1)
    ingest_paths(files, settings=replace(settings, scale=scale), clock=lambda: NOW, move=False)
    return settings.warehouse


def _tables(warehouse: Path) -> dict[str, pl.DataFrame]:
    """Every table file (path -> rows; the ledger's, named at random, as one) and each method
    cache file's entries."""
    found: dict[str, pl.DataFrame] = {}
    for path in sorted(warehouse.rglob("*.parquet")):
        name = path.relative_to(warehouse)
        if name.parts[0].startswith("."):
            continue
        key = name.parts[0] if name.parts[0] == "ingest_log" else str(name)
        rows = pl.read_parquet(path)
        found[key] = pl.concat([found[key], rows]) if key in found else rows
    for path in sorted((warehouse / ".cache").glob("method-*.snapshot")):
        entries = pl.read_parquet(path)
        found[path.name] = entries.drop("results", "markers")
        for row in entries.iter_rows(named=True):
            # The frames, not their Arrow bytes: a worker's frames may be laid out in other
            # record batches (read from the files, not kept in memory), the same rows.
            for part in ("results", "markers"):
                found[f"{path.name}/{row['owner']}/{part}"] = pl.read_ipc_stream(
                    io.BytesIO(row[part])
                )
    return found


def test_a_batch_in_the_worker_pool_writes_what_one_process_writes(
    sample_data_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same table files, same rows and values (lineage too), same cache entries, same fates."""
    files = _trial_files(sample_data_path)
    alone = _tables(_ingest(files, tmp_path / "alone", workers=1))
    mapped: list[tuple[str, bool]] = []
    pool_map = WorkerPool.map

    def recorded(pool: WorkerPool, function: Any, items: Any, **here: Any) -> Any:
        mapped.append((getattr(function, "func", function).__name__, pool.parallel))
        return pool_map(pool, function, items, **here)

    monkeypatch.setattr(WorkerPool, "map", recorded)
    pooled = _tables(_ingest(files, tmp_path / "pooled", workers=2))
    assert mapped == [("stage_each", True), ("patients_in_worker", True)]
    assert sorted(pooled) == sorted(alone)
    assert any(name.startswith("method-") for name in alone)
    for name, frame in alone.items():
        assert pooled[name].equals(frame), name
    assert set(alone["ingest_log"]["status"]) >= {"accepted", "quarantined"}


def test_a_parser_crash_in_a_worker_leaves_only_that_file_unprepared(
    sample_data_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in-process: the crashed file is None (parsed alone later), the others are staged."""
    sources = [read_source(p) for p in sorted((sample_data_path / "qpcr").glob("*.txt"))[:3]]
    crashing = sources[1].name
    parse = dispatch.parse_export

    def crash_one(export: object, **kwargs: object) -> object:
        if getattr(export, "file_name", None) == crashing:
            raise ZeroDivisionError
        return parse(export, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("chimera.ingest.parse_export", crash_one)
    settings = Settings().with_home(tmp_path)
    location = staging_location(settings, "crash")
    # A worker's entry point, called here so that the patched parser is the one used.
    staged = stage_each(sources, settings=settings, now=NOW, location=location)
    assert staged[1] is None
    assert all(isinstance(one, StagedParse) for one in (staged[0], staged[2]))
    prepared = unstage_all(staged, location=location, options={})
    assert prepared[1] is None
    kept: list[SourceFile] = [sources[0], sources[2]]
    for source, found in zip(kept, [prepared[0], prepared[2]], strict=True):
        assert found is not None, source.name
        assert found.assay is Assay.QPCR
        assert found.error is None
        assert found.parsed is not None
        assert found.parsed.frame.height > 0
    assert not any((settings.warehouse / ".staging").rglob("*.parquet"))
