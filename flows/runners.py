"""The task runner of a flow run, chosen by ``Settings.scale`` (threads, or Dask via prefect-dask)."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from chimera.settings import ScaleSettings

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
