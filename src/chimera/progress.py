"""Progress bars for long commands (report generation, ingest, demo), via rich.

Use :func:`progress_steps` around a loop; it draws a bar on a terminal and stays silent
otherwise (pipes, CI logs, tests), so output meant for scripts is never polluted::

    with progress_steps("Ingesting", total=len(paths), console=console) as step:
        for path in paths:
            ingest(path)
            step(path.name)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)


@contextmanager
def progress_steps(
    description: str, *, total: int, console: Console, enabled: bool | None = None
) -> Iterator[Callable[[str], None]]:
    """Yield ``step(label)``, which advances a bar of ``total`` steps by one.

    ``enabled`` defaults to whether ``console`` is a terminal.
    """
    show = console.is_terminal if enabled is None else enabled
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[label]}"),
        console=console,
        disable=not show,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total, label="")

        def step(label: str) -> None:
            progress.update(task, advance=1, label=label)

        yield step
