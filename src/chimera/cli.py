"""The ``chimera`` command line: ingest files, run the demo, query tables, read alerts.

Exit codes (:class:`chimera.poll.ExitCode`): 0 every file accepted (or already known), 1 the
run stopped on a failed write (disk full, read-only warehouse) or ``verify`` found drift, 2 usage
errors, 3 at least one file quarantined, 4 at least one file waiting for a prerequisite
(manifest, baseline, product reference) or still being copied. Never a Python traceback for a
bad input file or a full disk. Every command creates files readable by owner and group only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from chimera import __version__
from chimera.filemodes import restrict_umask
from chimera.settings import Settings, load_settings
from schemas.vocab import FileStatus

if TYPE_CHECKING:
    from chimera.demo import DesignedFile
    from chimera.inbox import Candidate
    from chimera.ingest import FileOutcome
    from chimera.poll import ExitCode, Poll

# The ingest machinery (polars, pandera, the calculations) is imported by the commands that
# run it, so `chimera version`, `status` or `--help` start without it (issue 12).

app = typer.Typer(
    name="chimera",
    help="Chimerism monitoring for the iNK trial: ingest exports, query results, read alerts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

WarehouseOption = Annotated[
    Path | None,
    typer.Option(
        "--warehouse",
        help="Warehouse folder (default ./chimera-data/warehouse or $CHIMERA_WAREHOUSE).",
    ),
]
HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Data root holding inbox/, archive/, quarantine/, warehouse/ (default ./chimera-data or $CHIMERA_HOME).",
    ),
]


@app.callback()
def _private_files() -> None:
    """Chimerism monitoring for the iNK trial: ingest exports, query results, read alerts."""
    restrict_umask()


def _now() -> datetime:
    return datetime.now(UTC)


def _settings(home: Path | None, warehouse: Path | None, inbox: Path | None = None) -> Settings:
    settings = load_settings(home=home)
    if warehouse is not None:
        settings = replace(settings, warehouse=warehouse)
    if inbox is not None:
        settings = replace(settings, inbox=inbox)
    return settings


def _expand(paths: list[Path], settings: Settings) -> list[Path]:
    from chimera.inbox import is_ignored  # noqa: PLC0415
    from chimera.poll import ExitCode  # noqa: PLC0415

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and not any(
                    is_ignored(part, settings.inbox_rules.ignore_patterns)
                    for part in p.relative_to(path).parts
                )
            ]
        elif path.is_file():
            files.append(path)
        else:
            err_console.print(f"[red]error:[/red] {path} does not exist")
            raise typer.Exit(ExitCode.USAGE)
    return files


def _report(outcomes: list[FileOutcome]) -> int:
    from chimera.poll import exit_code  # noqa: PLC0415
    from chimera.report.outcomes import print_outcomes  # noqa: PLC0415

    print_outcomes(console, outcomes)
    return exit_code(o.status for o in outcomes)


def _waiting_for(files: Sequence[Candidate], seconds: float) -> None:
    names = ", ".join(c.path.name for c in files[:5]) + (" ..." if len(files) > 5 else "")
    err_console.print(f"waiting {seconds:.0f} s for {len(files)} file(s) still settling: {names}")


def _report_poll(poll: Poll) -> None:
    for name in poll.errors:
        err_console.print(f"[red]error:[/red] {name} could not be read; it stays in the inbox")
    for unread in poll.unread:
        console.print(f"[yellow]not read:[/yellow] {unread.render()}")


def _ingest_locked(
    settings: Settings, files: list[Path], *, inbox: bool, wait: float
) -> tuple[list[FileOutcome], Poll]:
    """Ingest ``files`` and poll the inbox under the inbox lock, then refresh trends.

    A failed write ends the run early: what was done so far, and why it stopped, come back.
    """
    from chimera.batch import StorageFailure  # noqa: PLC0415
    from chimera.inbox_lock import inbox_lock  # noqa: PLC0415
    from chimera.poll import Poll, ingest_paths, poll_once, refresh_after_ingest  # noqa: PLC0415
    from chimera.warehouse import storage_problem  # noqa: PLC0415
    from chimera.workers import worker_pool  # noqa: PLC0415

    outcomes: list[FileOutcome] = []
    poll = Poll(())
    # One pool for the batch and the refresh after it (its workers start once).
    with (
        inbox_lock(
            settings,
            timeout_seconds=3600,
            what="chimera ingest",
            on_wait=lambda holder: err_console.print(
                f"another ingest is running ({holder}); waiting for it to finish"
            ),
        ) as lock,
        worker_pool(settings, files=len(files)) as pool,
    ):
        if lock.waited_seconds:
            err_console.print(lock.render())
        try:
            if files:
                outcomes += ingest_paths(
                    files, settings=settings, clock=_now, move=False, pool=pool
                )
            if inbox:
                poll = poll_once(settings, max_wait_seconds=wait, notify=_waiting_for)
                outcomes += poll.outcomes
            if poll.failure is None:
                refresh_after_ingest(outcomes, settings=settings, now=_now(), pool=pool)
        except StorageFailure as failure:
            outcomes += [o for o in failure.outcomes.values() if o is not None]
            poll = Poll((), failure=str(failure))
        except OSError as err:
            poll = Poll((), failure=f"refreshing trends and alerts: {storage_problem(err)}")
    return outcomes, poll


@app.command()
def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files or folders to ingest (copied; originals untouched)."),
    ] = None,
    inbox: Annotated[
        Path | None,
        typer.Option(
            "--inbox", help="Process every settled file in this folder (files are moved)."
        ),
    ] = None,
    warehouse: WarehouseOption = None,
    home: HomeOption = None,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait", help="Do not wait for inbox files still being copied; list them."
        ),
    ] = False,
    max_wait: Annotated[
        float,
        typer.Option("--max-wait", help="Wait at most this many seconds for files to settle."),
    ] = 300.0,
) -> None:
    """Ingest exports, manifests and infusion logs once, in-process (no Prefect server needed).

    With ``--inbox`` files that just arrived are read once they have settled (the command
    waits); every file not read is listed with why.
    """
    from chimera.poll import ExitCode, Poll  # noqa: PLC0415
    from chimera.warehouse import storage_problem  # noqa: PLC0415

    if not paths and inbox is None:
        err_console.print("[red]error:[/red] give files/folders to ingest or --inbox DIR")
        raise typer.Exit(ExitCode.USAGE)
    if inbox is not None and not inbox.is_dir():
        err_console.print(f"[red]error:[/red] inbox {inbox} is not a folder")
        raise typer.Exit(ExitCode.USAGE)
    settings = _settings(home, warehouse, inbox)
    files = _expand(paths, settings) if paths else []
    wait = 0.0 if no_wait else max_wait
    try:
        outcomes, poll = _ingest_locked(settings, files, inbox=inbox is not None, wait=wait)
    except TimeoutError as err:
        err_console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(ExitCode.FAILED) from None
    except OSError as err:  # the lock itself could not be taken (read-only warehouse ...)
        outcomes, poll = [], Poll((), failure=f"taking the inbox lock: {storage_problem(err)}")
    code = _report(outcomes)
    _report_poll(poll)
    console.print(f"warehouse: {settings.warehouse.resolve()}")
    if poll.failure is not None:
        err_console.print(
            f"[red]error:[/red] the run stopped: {poll.failure}. Files not yet processed stay "
            "where they are; nothing partial was written."
        )
        raise typer.Exit(ExitCode.FAILED)
    if poll.unread and code == ExitCode.OK:
        code = ExitCode.WAITING
    raise typer.Exit(code)


def _sample_data_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "sample_data"


@app.command()
def demo(
    warehouse: WarehouseOption = None,
    home: HomeOption = None,
    sample_data: Annotated[
        Path | None, typer.Option("--sample-data", help="Folder of the sample trial.")
    ] = None,
) -> None:
    """Ingest the bundled synthetic trial, then print per-patient results, kinetics and alerts."""
    from chimera.poll import ExitCode, exit_code, ingest_paths, refresh_after_ingest  # noqa: PLC0415
    from chimera.report.summary import print_demo_summary  # noqa: PLC0415

    settings = _settings(home, warehouse)
    source = sample_data or _sample_data_dir()
    inputs = [
        p
        for p in _expand([source], settings)
        if p.parts[-2] not in {"truth"}
        and p.suffix.lower() in {".csv", ".txt", ".xlsx", ".xls", ".tsv"}
        and p.name.lower() != "readme.md"
    ]
    if not inputs:
        err_console.print(
            f"[red]error:[/red] no sample data under {source}; run `python sample_data/generate.py`"
        )
        raise typer.Exit(ExitCode.USAGE)
    outcomes = ingest_paths(inputs, settings=settings, clock=_now, move=False)
    refresh_after_ingest(outcomes, settings=settings, now=_now())
    counts = {s.value: sum(o.status is s for o in outcomes) for s in FileStatus}
    console.print(
        f"Ingested {len(outcomes)} files from {source}: "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    )
    bad = [o for o in outcomes if o.status in (FileStatus.QUARANTINED, FileStatus.WAITING)]
    if bad:
        _report(bad)
    print_demo_summary(settings, console)
    from chimera.report.build import default_report_path, write_cohort_report  # noqa: PLC0415

    cohort = write_cohort_report(settings, out=default_report_path(settings, None), now=_now())
    console.print(f"cohort report: {cohort.resolve()}")
    from chimera.demo import read_design  # noqa: PLC0415

    design = read_design(source)
    if design is None:
        raise typer.Exit(exit_code(o.status for o in outcomes))
    by_name = {o.file_name: o for o in outcomes}
    raise typer.Exit(_print_design_check(design, by_name, settings))


def _print_design_check(
    design: tuple[DesignedFile, ...], outcomes: dict[str, FileOutcome], settings: Settings
) -> ExitCode:
    """Say whether every sample file ended as the trial's design says; 0 only if all did."""
    from chimera.demo import check_design, earlier_fates  # noqa: PLC0415
    from chimera.poll import ExitCode  # noqa: PLC0415
    from chimera.registry import read_ledger  # noqa: PLC0415
    from chimera.warehouse import Warehouse  # noqa: PLC0415

    earlier = earlier_fates(read_ledger(Warehouse(settings.warehouse)))
    check = check_design(design, outcomes, earlier)
    console.print(f"{check.as_designed} of {check.total} files ended as designed")
    for designed in check.on_purpose:
        console.print(f"  quarantined on purpose: {designed.path} ({designed.note})")
    for mismatch in check.mismatches:
        err_console.print(f"[red]not as designed:[/red] {mismatch}")
    return ExitCode.OK if check.ok else ExitCode.QUARANTINED


@app.command()
def query(
    sql: Annotated[
        str,
        typer.Argument(
            help="DuckDB SQL; every table is a view: chimerism, markers, trends, kinetics, alerts, ingest_log, file_status, ..."
        ),
    ],
    warehouse: WarehouseOption = None,
    home: HomeOption = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV (spreadsheet-safe).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Include superseded rows (default: current rows only).")
    ] = False,
) -> None:
    """Run SQL over the warehouse with DuckDB (current rows unless --all)."""
    import polars as pl  # noqa: PLC0415

    from chimera.export_safety import safe_csv  # noqa: PLC0415
    from chimera.sql import QueryError, run_query  # noqa: PLC0415

    settings = _settings(home, warehouse)
    try:
        frame = run_query(settings.warehouse, sql, include_superseded=all_rows)
    except QueryError as err:
        err_console.print(f"[red]query failed:[/red] {err}")
        raise typer.Exit(2) from None
    if csv:
        sys.stdout.write(safe_csv(frame))
    elif as_json:
        sys.stdout.write(frame.write_json() + "\n")
    else:
        with pl.Config(tbl_rows=50, tbl_cols=20, fmt_str_lengths=40):
            console.print(frame)


@app.command()
def tables(
    markdown: Annotated[
        Path | None,
        typer.Option("--markdown", help="Write the data dictionary as Markdown to this file."),
    ] = None,
    table: Annotated[str | None, typer.Option("--table", help="Show one table only.")] = None,
) -> None:
    """Every warehouse table with its columns, types, units and descriptions."""
    from chimera.dictionary import data_dictionary, print_dictionary, render_markdown  # noqa: PLC0415

    entries = data_dictionary()
    if markdown is not None:
        markdown.write_text(render_markdown(entries), encoding="utf-8")
        console.print(f"data dictionary: {markdown}")
        return
    chosen = [e for e in entries if table in (None, e.name)]
    if not chosen:
        err_console.print(
            f"[red]error:[/red] no table {table!r}; known: {', '.join(e.name for e in entries)}"
        )
        raise typer.Exit(2)
    print_dictionary(chosen, console)


@app.command()
def server(home: HomeOption = None) -> None:
    """Start a local Prefect server (SQLite under the data folder, analytics off) unless one runs."""
    from chimera.service import start_server  # noqa: PLC0415

    raise typer.Exit(start_server(_settings(home, None), console))


@app.command()
def serve(home: HomeOption = None) -> None:
    """Register and serve the deployments: inbox polling, trend refresh, nightly rebuild."""
    from chimera.service import serve_deployments  # noqa: PLC0415

    raise typer.Exit(serve_deployments(_settings(home, None), console))


@app.command()
def watch(
    home: HomeOption = None, inbox: Annotated[Path | None, typer.Option("--inbox")] = None
) -> None:
    """Ingest files as soon as they land (local disks; network shares need polling)."""
    from chimera.poll import watch_inbox  # noqa: PLC0415

    raise typer.Exit(watch_inbox(_settings(home, None, inbox), console))


@app.command()
def status(home: HomeOption = None, warehouse: WarehouseOption = None) -> None:
    """Files waiting, quarantined and accepted today; the last run and its state."""
    from chimera.status import print_status  # noqa: PLC0415

    raise typer.Exit(print_status(_settings(home, warehouse), console))


@app.command()
def alerts(
    home: HomeOption = None,
    warehouse: WarehouseOption = None,
    all_states: Annotated[bool, typer.Option("--all", help="Include resolved alerts.")] = False,
) -> None:
    """List open alerts with the evidence behind each."""
    from chimera.report.summary import print_alerts  # noqa: PLC0415

    raise typer.Exit(print_alerts(_settings(home, warehouse), console, include_resolved=all_states))


@app.command()
def report(
    home: HomeOption = None,
    warehouse: WarehouseOption = None,
    patient: Annotated[
        str | None, typer.Option("--patient", help="Write this patient's report.")
    ] = None,
    cohort: Annotated[bool, typer.Option("--cohort", help="Write the cohort report.")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="HTML file (with --patient/--cohort) or folder (default <home>/reports).",
        ),
    ] = None,
) -> None:
    """Write self-contained HTML reports: one patient, the cohort, or (default) all of them."""
    from chimera.report.build import (  # noqa: PLC0415
        UnknownPatientError,
        default_report_path,
        report_count,
        write_all_reports,
        write_cohort_report,
        write_patient_report,
    )

    settings = _settings(home, warehouse)
    if patient is not None and cohort:
        err_console.print("[red]error:[/red] give --patient ID or --cohort, not both")
        raise typer.Exit(2)
    if patient is not None:
        target = out or default_report_path(settings, patient)
        try:
            path = write_patient_report(settings, patient, out=target, now=_now())
        except UnknownPatientError as err:
            err_console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(2) from None
        console.print(f"report: {path.resolve()}")
        return
    if cohort:
        path = write_cohort_report(
            settings, out=out or default_report_path(settings, None), now=_now()
        )
        console.print(f"report: {path.resolve()}")
        return
    from chimera.progress import progress_steps  # noqa: PLC0415

    folder = out or settings.home / "reports"
    with progress_steps("Writing reports", total=report_count(settings), console=console) as step:
        paths = write_all_reports(settings, folder, now=_now(), step=step)
    console.print(f"{len(paths)} reports in {folder.resolve()}; cohort: {paths[0].resolve()}")


@app.command()
def verify(home: HomeOption = None, warehouse: WarehouseOption = None) -> None:
    """Check the archive, ledger and tables agree (the nightly check); exit 1 on drift."""
    from chimera.maintenance import print_verification, verify_warehouse  # noqa: PLC0415
    from chimera.poll import ExitCode  # noqa: PLC0415

    verification = verify_warehouse(_settings(home, warehouse))
    print_verification(verification, console)
    raise typer.Exit(ExitCode.OK if verification.ok else ExitCode.FAILED)


@app.command()
def version() -> None:
    """Print the pipeline version."""
    console.print(__version__)


def main() -> None:
    """Console-script entry point."""
    app()
