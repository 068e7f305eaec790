"""The worker pool (issue 12) writes what one process writes, and loses no file.

A big batch parses its files and rebuilds its patients in spawned worker processes
(``chimera.workers``). The pool is forced on here (two workers, thresholds of one) for the
sample trial, every designed bad file included, and every warehouse table, the method cache
and the ledger must equal an in-process run of the same files at the same clock. The batch
books its first files while the workers parse later ones (``WorkerPool.map_lazily``): the
workers' futures are scripted here (done, not started, failed), never timed.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from chimera import poll, staging
from chimera.detect import Assay
from chimera.ingest import FileOutcome
from chimera.parsers import dispatch
from chimera.poll import ingest_paths
from chimera.settings import Settings
from chimera.source_file import SourceFile, read_source
from chimera.staging import StagedParse, stage_each, staging_location, unstage_all
from chimera.workers import Mapped, WorkerPool

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
    pool_map = WorkerPool.map_lazily  # what WorkerPool.map uses too

    def recorded(pool: WorkerPool, function: Any, items: Any, **here: Any) -> Any:
        mapped.append((getattr(function, "func", function).__name__, pool.parallel))
        return pool_map(pool, function, items, **here)

    monkeypatch.setattr(WorkerPool, "map_lazily", recorded)
    pooled = _tables(_ingest(files, tmp_path / "pooled", workers=2))
    assert mapped == [("stage_each", True), ("patients_in_worker", True)]
    assert sorted(pooled) == sorted(alone)
    assert any(name.startswith("method-") for name in alone)
    for name, frame in alone.items():
        assert pooled[name].equals(frame), name
    assert set(alone["ingest_log"]["status"]) >= {"accepted", "quarantined"}


def _crash_parsing(crashing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parser crashes (a bug, not a bad file) on the file named ``crashing``."""
    parse = dispatch.parse_export

    def crash_one(export: object, **kwargs: object) -> object:
        if getattr(export, "file_name", None) == crashing:
            raise ZeroDivisionError
        return parse(export, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("chimera.ingest.parse_export", crash_one)


def test_a_parser_crash_in_a_worker_leaves_only_that_file_unprepared(
    sample_data_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in-process: the crashed file is None (parsed alone later), the others are staged."""
    sources = [read_source(p) for p in sorted((sample_data_path / "qpcr").glob("*.txt"))[:3]]
    crashing = sources[1].name
    _crash_parsing(crashing, monkeypatch)
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


def _mapped(
    futures: Sequence[Future[str]],
    here: Callable[[int], str],
    *,
    items: int,
    pool: WorkerPool | None = None,
    given: list[int] | None = None,
) -> Mapped[int, str]:
    """``items`` items, item i given to one scripted worker as ``futures[i]`` (none left: the
    pool refuses work, as a broken one does)."""

    def submit(index: int) -> Future[str]:
        if index >= len(futures):
            raise BrokenProcessPool(index)
        if given is not None:
            given.append(index)
        return futures[index]

    pool = pool or WorkerPool(2)
    return Mapped(pool, list(range(items)), here, submit=submit, in_flight=1)


def _running(result: str | None = None) -> Future[str]:
    """A future a worker has started (and finished, with ``result``)."""
    future: Future[str] = Future()
    future.set_running_or_notify_cancel()
    if result is not None:
        future.set_result(result)
    return future


def test_while_the_result_asked_for_is_under_way_this_process_takes_the_last_ones() -> None:
    """Last first, only the ones no worker was given; the worker's results in order."""
    futures = [_running(), _running(), _running("worker 2")]
    computed: list[int] = []

    def here(item: int) -> str:
        computed.append(item)
        if len(computed) == 3:
            futures[0].set_result("worker 0")  # the worker finishes meanwhile
        return f"here {item}"

    given: list[int] = []
    mapped = _mapped(futures, here, items=5, given=given)
    assert given == [0]  # one at a time: one queued behind it could not be taken back
    assert mapped[1] == "here 1"  # given to no worker: the one asked for is computed at once
    assert mapped[0] == "worker 0"
    assert computed == [1, 4, 3]
    assert given == [0, 2]  # the worker's next: the first item nobody has
    assert [mapped[i] for i in range(5)] == ["worker 0", "here 1", "worker 2", "here 3", "here 4"]


def test_a_broken_pool_leaves_the_rest_to_this_process() -> None:
    """A dead worker's result and every one not in yet are computed here; the pool stops."""
    futures = [_running(), _running()]
    for future in futures:
        future.set_exception(BrokenProcessPool("a worker died"))
    pool = WorkerPool(2)
    mapped = _mapped(futures, lambda item: f"here {item}", items=3, pool=pool)
    assert [mapped[0], mapped[1], mapped[2]] == ["here 0", "here 1", "here 2"]
    assert not pool.parallel
    refused = WorkerPool(2)  # broken before it was given anything: it refuses the first item
    assert _mapped([], lambda item: f"here {item}", items=1, pool=refused)[0] == "here 0"
    assert not refused.parallel


def test_an_error_of_the_function_is_raised_where_its_result_is_asked_for() -> None:
    futures = [_running(), _running("worker 1")]
    futures[0].set_exception(ValueError("a bug"))
    mapped = _mapped(futures, lambda item: f"here {item}", items=2)
    assert mapped[1] == "worker 1"
    for _ in range(2):
        with pytest.raises(ValueError, match="a bug"):
            mapped[0]


class _FinishedWhenWaitedFor(Future[str]):
    """A worker's future that finishes as soon as someone waits for it."""

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done():
            self.set_result("worker 0")
        return super().exception(timeout)


def test_settling_waits_for_the_work_under_way_and_gives_out_no_more() -> None:
    under_way = _FinishedWhenWaitedFor()
    under_way.set_running_or_notify_cancel()
    given: list[int] = []
    mapped = _mapped([under_way, _running("worker 1")], str, items=3, given=given)
    mapped.settle()
    assert under_way.result() == "worker 0"
    assert given == [0]


Fate = Callable[[int], str]
"""What the scripted worker does with piece i: "done" (computed) or "broken" (the pool broke).
Its first piece is slow: this process makes the last two meanwhile."""


def _scripted_pool(monkeypatch: pytest.MonkeyPatch, fate: Fate) -> list[str]:
    """The worker replaced by scripted futures (a "done" piece is computed in this process, so
    patched parsers apply); what the batch does, in order ("book"/"take")."""
    events: list[str] = []
    monkeypatch.setattr(WorkerPool, "start", lambda self: None)

    def map_lazily(pool: WorkerPool, function: Any, items: Any, *, here: Any) -> Any:
        first: Future[Any] = Future()  # slow: done once this process made two shares itself
        first.set_running_or_notify_cancel()
        made: list[Any] = []

        def made_here(item: Any) -> Any:
            made.append(here(item))
            if len(made) == min(2, len(items) - 1):
                first.set_result(function(items[0]))
            return made[-1]

        def submit(index: int) -> Future[Any]:
            if index == 0:
                return first
            future: Future[Any] = Future()
            future.set_running_or_notify_cancel()
            if fate(index) == "broken":
                future.set_exception(BrokenProcessPool("a worker died"))
            else:
                future.set_result(function(items[index]))
            return future

        return Mapped(pool, items, made_here, submit=submit, in_flight=1)

    monkeypatch.setattr(WorkerPool, "map_lazily", map_lazily)
    take, book = staging.unstage_all, poll._one_in_batch

    def taken(staged: Any, **kwargs: Any) -> Any:
        events.append("take")
        return take(staged, **kwargs)

    def booked(source: SourceFile, ingest: Any) -> Any:
        events.append(f"book {source.name}")
        return book(source, ingest)

    monkeypatch.setattr(staging, "unstage_all", taken)
    monkeypatch.setattr(poll, "_one_in_batch", booked)
    return events


def _fates(files: list[Path], home: Path, *, workers: int) -> list[tuple[Any, ...]]:
    """Each file's outcome (its place relative to ``home``), in the order given."""
    settings = Settings().with_home(home)
    scale = replace(settings.scale, workers=workers, pool_min_files=1, pool_min_patients=10**6)
    settings = replace(settings, scale=scale)
    outcomes = ingest_paths(files, settings=settings, clock=lambda: NOW, move=False)
    return [
        (o.file_name, o.status, o.reason, o.rows, o.patients, o.supersedes, _under(o, home))
        for o in outcomes
    ]


def _under(outcome: FileOutcome, home: Path) -> Path | None:
    return outcome.destination and outcome.destination.relative_to(home)


def _pcr_files(root: Path) -> list[Path]:
    return [root / "manifest.csv", root / "infusion_log.xlsx", *sorted(root.glob("*pcr/*"))]


@pytest.mark.parametrize(
    "fate",
    [lambda i: "done", lambda i: "broken" if i > 2 else "done"],
    ids=["worker-and-here", "pool-breaks"],
)
def test_the_batch_books_its_first_files_while_later_ones_are_being_parsed(
    fate: Fate, sample_data_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same fates, tables and ledger as in one process; files booked in the processing
    order, the first before the last parses are taken in."""
    files = _pcr_files(sample_data_path)
    alone_fates = _fates(files, tmp_path / "alone", workers=1)
    alone = _tables(tmp_path / "alone" / "warehouse")
    events = _scripted_pool(monkeypatch, fate)
    assert _fates(files, tmp_path / "pooled", workers=2) == alone_fates
    pooled = _tables(tmp_path / "pooled" / "warehouse")
    assert sorted(pooled) == sorted(alone)
    for name, frame in alone.items():
        assert pooled[name].equals(frame), name
    booked = [event.removeprefix("book ") for event in events if event != "take"]
    order = [s.name for s in poll.processing_order([read_source(p) for p in files])]
    assert booked[: len(order)] == order
    assert events.index(f"book {order[0]}") < len(events) - 1 - events[::-1].index("take")
    assert not any((tmp_path / "pooled" / "warehouse" / ".staging").rglob("*.parquet"))


def test_a_file_whose_parser_crashed_in_a_worker_is_parsed_alone_and_fails_alone(
    sample_data_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in one process: the crash left in place for its file (no outcome), the rest booked."""
    files = _pcr_files(sample_data_path)
    crashing = files[5].name
    _crash_parsing(crashing, monkeypatch)
    alone = _fates(files, tmp_path / "alone", workers=1)
    assert crashing not in {fate[0] for fate in alone}
    _scripted_pool(monkeypatch, lambda i: "done")
    assert _fates(files, tmp_path / "pooled", workers=2) == alone
