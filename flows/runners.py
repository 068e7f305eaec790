"""Parallel parses in a flow run, through the task runner ``Settings.scale`` chooses.

Threads (Prefect's ``ThreadPoolTaskRunner``) by default, Dask (``prefect-dask``) for a cluster.
Only the pure parse-and-validate step runs there (:mod:`chimera.staging`: tasks return ids and
Parquet locations); the batch's writes stay in the flow's process, under the warehouse lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from chimera.ingest import ParseMany, Prepared
from chimera.settings import ScaleSettings, Settings
from chimera.source_file import SourceFile
from chimera.staging import StagedParse, clear_staging, staging_location, unstage_all
from chimera.workers import shares
from flows.tasks import stage_sources

RUNNERS = ("threads", "dask")


def task_runner_for(scale: ScaleSettings) -> TaskRunner[Any]:
    """A fresh, unstarted task runner: Prefect's thread pool, or a ``DaskTaskRunner``.

    Dask connects to ``scale.dask_address`` when set, else starts a temporary
    ``distributed.LocalCluster`` of ``scale.dask_workers`` workers (one thread each) for the
    runner's lifetime.
    """
    if scale.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=scale.max_workers)
    if scale.task_runner == "dask":
        from prefect_dask.task_runners import DaskTaskRunner  # noqa: PLC0415 - only Dask deployments need it

        if scale.dask_address is not None:
            return DaskTaskRunner(address=scale.dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": scale.dask_workers,
                "threads_per_worker": 1,
                "processes": scale.dask_processes,
                "dashboard_address": None,
            },
        )
    msg = f"[scale] task_runner = {scale.task_runner!r}: expected one of {', '.join(RUNNERS)}"
    raise ValueError(msg)


def parse_in_parallel(settings: Settings, run_id: str | None) -> ParseMany:
    """The flow's ``parse_many``: up to ``scale.parse_tasks`` ``parse`` tasks on the chosen runner.

    A Dask worker gets the file's bytes only (it detects the format again) rather than the
    decoded text. A task that fails leaves its files unprepared: the batch then parses each alone,
    in-process, and reports that file's failure without stopping the others.
    """
    location = staging_location(settings, run_id or uuid.uuid4().hex)
    ship_bytes = settings.scale.task_runner != "threads"

    def parse_many(sources: Sequence[SourceFile]) -> list[Prepared | None]:
        if not sources:
            return []
        groups = shares(sources, settings.scale.parse_tasks)
        try:
            with task_runner_for(settings.scale) as runner:
                futures = [
                    runner.submit(
                        stage_sources,
                        parameters={
                            "sources": [
                                replace(s, export=None) if ship_bytes else s for s in group
                            ],
                            "settings": settings,
                            "now": datetime.now(UTC),
                            "location": location,
                        },
                    )
                    for group in groups
                ]
                staged: list[StagedParse | None] = []
                for future, group in zip(futures, groups, strict=True):
                    future.wait()
                    done = future.state.is_completed()
                    staged += future.state.result() if done else [None] * len(group)
            return unstage_all(staged, location=location, options=settings.scale.storage_options)
        finally:
            clear_staging(location, settings.scale.storage_options)

    return parse_many
