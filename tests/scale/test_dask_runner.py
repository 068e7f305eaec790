"""The inbox flow on a local Dask cluster (2 worker processes) writes the in-process warehouse."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from scale_builders import warehouse_rows

from chimera.poll import poll_once
from chimera.settings import ScaleSettings, Settings, load_settings
from chimera.warehouse import INGEST_LOG, Warehouse
from flows.runners import task_runner_for
from schemas.vocab import FileStatus

NO_SETTLING = "[inbox_rules]\nsettle_seconds = 0\nincomplete_settle_seconds = 0\n"


@pytest.fixture(scope="module")
def dask_scheduler() -> Iterator[str]:
    """A ``LocalCluster`` of two worker processes, one thread each; yields its address."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _home(root: Path, files: list[Path], config: str) -> Path:
    (root / "inbox").mkdir(parents=True)
    for path in files:
        shutil.copyfile(path, root / "inbox" / path.name)
    (root / "chimera.toml").write_text(config, encoding="utf-8")
    return root


def test_dask_flow_writes_the_same_warehouse_as_in_process(
    prefect_harness: str, tmp_path: Path, small_inbox: list[Path], dask_scheduler: str
) -> None:
    from flows.ingest import ingest_inbox  # noqa: PLC0415 - needs the Prefect harness first

    local = _home(tmp_path / "in-process", small_inbox, NO_SETTLING)
    settings = load_settings({"CHIMERA_HOME": str(local)})
    poll = poll_once(settings, clock=lambda: datetime(2026, 12, 1, 12, tzinfo=UTC))
    accepted = sorted(o.file_name for o in poll.outcomes if o.status is FileStatus.ACCEPTED)
    assert len(accepted) >= 3

    config = NO_SETTLING + f'[scale]\ntask_runner = "dask"\ndask_address = "{dask_scheduler}"\n'
    dask = _home(tmp_path / "dask", small_inbox, config)
    state = ingest_inbox(str(dask), refresh_trends=False, return_state=True)
    result = state.result()
    by_dask = sorted(f["file_name"] for f in result["files"] if f["status"] == "accepted")

    assert by_dask == accepted
    expected, got = warehouse_rows(local / "warehouse"), warehouse_rows(dask / "warehouse")
    assert sum(len(rows) for rows in got.values()) > 100
    assert got == expected
    ledger = Warehouse(dask / "warehouse").read(INGEST_LOG)
    assert ledger["flow_run_id"].drop_nulls().n_unique() == 1, "the flow run is on every event"
    staged = [p for p in (dask / "warehouse" / ".staging").rglob("*") if p.is_file()]
    assert not staged, "staged parses are removed after the poll"
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    parses = [r for r in runs if r.name.startswith("parse ")]
    assert len(parses) == len(small_inbox)
    assert all(r.state is not None and r.state.is_completed() for r in parses)


def test_runner_choice_comes_from_settings() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner  # noqa: PLC0415
    from prefect_dask.task_runners import DaskTaskRunner  # noqa: PLC0415

    assert isinstance(task_runner_for(ScaleSettings()), ThreadPoolTaskRunner)
    dask = task_runner_for(ScaleSettings(task_runner="dask", dask_address="tcp://h:8786"))
    assert isinstance(dask, DaskTaskRunner)
    with pytest.raises(ValueError, match="expected one of threads, dask"):
        task_runner_for(replace(Settings().scale, task_runner="spark"))
