"""Every Prefect task of the flows: a library function wrapped one-to-one, same name.

``task(fn, ...)`` wraps the function itself, so a task keeps its library signature and
docstring and nothing is written twice. Retries go only on I/O tasks and only for ``OSError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from chimera import maintenance, poll, rebuild, refresh, staging

P = ParamSpec("P")
R = TypeVar("R")


def retry_on_oserror(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:  # noqa: ARG001
    """Retry a file task only for I/O errors (share hiccups, locked files), never for bugs."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - anything else is not worth retrying
        return False
    return False


def _io_task(fn: Callable[P, R], *, delay_seconds: float = 2.0) -> Task[P, R]:
    """A task of ``fn`` retried twice, on ``OSError`` only."""
    return task(
        cache_policy=NO_CACHE,
        retries=2,
        retry_delay_seconds=delay_seconds,
        retry_condition_fn=retry_on_oserror,
    )(fn)


def parse_run_name() -> str:
    """``parse manifest.csv (+67 more)``: a parse task's first file and how many follow."""
    sources = task_run.parameters["sources"]
    more = f" (+{len(sources) - 1} more)" if len(sources) > 1 else ""
    return f"parse {sources[0].path.name}{more}"


recover_dirty = _io_task(rebuild.recover_dirty)
stage_sources = task(
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_on_oserror,
    task_run_name=parse_run_name,
)(staging.stage_sources)
verify_warehouse = _io_task(maintenance.verify_warehouse, delay_seconds=5.0)
rebuild_all_patients = task(cache_policy=NO_CACHE)(maintenance.rebuild_all_patients)
refresh_after_ingest = task(cache_policy=NO_CACHE)(poll.refresh_after_ingest)
refresh_patients = task(cache_policy=NO_CACHE)(refresh.refresh_patients)
describe_alerts = task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)(
    maintenance.describe_alerts
)
