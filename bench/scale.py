"""The 200-patient history through the ``ingest-inbox`` flow: Dask on 2 local workers vs in-process.

    python bench/scale.py --history DIR [--patients 200 --months 12] [--work DIR]

Generates the history with ``bench/history.py`` when DIR holds none, then ingests a copy of it
into empty warehouses, timing each (wall clock, imports warm, one process):

1. in-process: the same poll without Prefect (``chimera ingest --inbox``'s path);
2. the flow with ``DaskTaskRunner`` on a ``LocalCluster`` of 2 worker processes (cluster
   start-up included);
3. the flow with Prefect's thread pool (``[scale] task_runner = "threads"``).

The flows run against one temporary Prefect server started first (not timed). Prints a
Markdown table and checks that the three warehouses hold the same rows (lineage columns aside).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chimera.poll import poll_once
from chimera.settings import ScaleSettings, Settings

sys.path.insert(0, str(ROOT / "tests" / "scale"))
from scale_builders import warehouse_rows


def history(folder: Path, patients: int, months: int) -> Path:
    """The generated history (written once)."""
    if not (folder / "registry").is_dir():
        subprocess.run(
            [sys.executable, ROOT / "bench" / "history.py", "--patients", str(patients),
             "--months", str(months), "--out", folder],
            check=True,
        )  # fmt: skip
    return folder


def fresh_home(source: Path, home: Path, runner: str) -> Settings:
    """An empty data folder whose inbox holds a copy of every input file."""
    shutil.rmtree(home, ignore_errors=True)
    inbox = home / "inbox"
    for path in sorted(source.rglob("*")):
        if path.is_file() and "truth" not in path.relative_to(source).parts:
            target = inbox / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    (home / "chimera.toml").write_text(
        f"[inbox_rules]\nsettle_seconds = 0\nincomplete_settle_seconds = 0\n\n"
        f'[scale]\ntask_runner = "{runner}"\ndask_workers = 2\n',
        encoding="utf-8",
    )
    settings = Settings().with_home(home)
    return replace(
        settings,
        inbox_rules=replace(settings.inbox_rules, settle_seconds=0, incomplete_settle_seconds=0),
        scale=ScaleSettings(task_runner=runner, dask_workers=2),
    )


def main() -> None:
    """Run the three ingests and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument(
        "--runners", nargs="+", default=["dask", "threads"], choices=["dask", "threads"]
    )
    args = parser.parse_args()
    source = history(args.history, args.patients, args.months)
    work = args.work or args.history.parent / "scale-work"
    files = sum(1 for p in source.rglob("*") if p.is_file() and "truth" not in p.parts)

    from prefect.testing.utilities import prefect_test_harness  # noqa: PLC0415

    from flows.ingest import ingest_inbox  # noqa: PLC0415

    clock = lambda: datetime(2026, 12, 1, 12, tzinfo=UTC)  # one fixed ingest time
    settings = fresh_home(source, work / "in-process", "threads")
    start = time.perf_counter()
    poll_once(settings, clock=clock)
    base = time.perf_counter() - start
    reference = warehouse_rows(settings.warehouse)
    print(f"{files} input files, {args.patients} patients x {args.months} months\n")
    print("| run | wall time | vs in-process | warehouse rows equal |")
    print("|---|---|---|---|")
    print(f"| in-process (no Prefect) | {base:.1f} s | 1.00 x | - |", flush=True)
    labels = {"threads": "flow, thread pool", "dask": "flow, Dask LocalCluster, 2 worker processes"}
    with prefect_test_harness(server_startup_timeout=300):
        for runner in args.runners:
            home = fresh_home(source, work / runner, runner).home
            start = time.perf_counter()
            ingest_inbox(str(home), refresh_trends=False)
            value = time.perf_counter() - start
            same = "yes" if warehouse_rows(home / "warehouse") == reference else "NO"
            print(
                f"| {labels[runner]} | {value:.1f} s | {value / base:.2f} x | {same} |", flush=True
            )


if __name__ == "__main__":
    main()
