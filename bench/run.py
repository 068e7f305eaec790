"""Speed and memory of the ingest path (``make bench``); results go to bench/results.md.

Workloads, all on the bundled synthetic trial (78 files, 470 post-dose samples x 3 methods):

1. ``trial x1``: ingest the whole trial into an empty warehouse (one batch, as ``chimera demo``).
2. ``trial x{N}``: the same trial replicated N times under new patient ids (a larger cohort
   history), one batch.
3. ``re-run``: the same files again (all duplicates; must add nothing).
4. ``corrected STR run``: a mid-trial STR run re-exported (new bytes, same samples) into the
   large warehouse: the incremental cost of one file (its samples are superseded).
5. ``duckdb query``: per-patient summary over the chimerism table.

Targets (chosen for a lab PC, 2 cores): trial x1 < 30 s; one corrected run into a 5x cohort
< 10 s; peak RSS < 2 GiB. Timings are wall-clock on the machine running the bench; nothing asserts them.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from chimera.poll import ingest_paths, refresh_after_ingest
from chimera.settings import Settings
from chimera.warehouse import CHIMERISM

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def _files(folder: Path) -> list[Path]:
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in {".csv", ".txt", ".xlsx"} and "truth" not in p.parts
    ]


def _replicate(copies: int, out: Path) -> list[Path]:
    """Copy the trial ``copies`` times; copy k renames patients P01..P10 to P{k}01..P{k}10."""
    files = []
    for k in range(copies):
        for path in _files(SAMPLE):
            if path.suffix == ".xlsx" and k:
                continue  # the infusion log is rewritten as CSV for the copies below
            data = path.read_bytes()
            if k:
                data = re.sub(rb"\bP(\d\d)(?=[-,\t\"\r\n])", rb"P%d\1" % k, data)
                data = re.sub(rb"(QS|QP|DP|GM)(\d{4})", rb"\1\2K%d" % k, data)
            target = out / f"c{k}" / path.relative_to(SAMPLE)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            files.append(target)
        if k:
            files.append(_infusions_csv(k, out / f"c{k}" / "infusions.csv"))
    return files


def _infusions_csv(k: int, path: Path) -> Path:
    import polars as pl  # noqa: PLC0415

    log = pl.read_excel(SAMPLE / "infusion_log.xlsx")
    log = log.with_columns(pl.col("patient_id").str.replace(r"^P", f"P{k}"))
    log.write_csv(path)
    return path


def _ingest(files: list[Path], settings: Settings) -> float:
    start = time.perf_counter()
    outcomes = ingest_paths(files, settings=settings, clock=lambda: datetime.now(UTC), move=False)
    refresh_after_ingest(outcomes, settings=settings, now=datetime.now(UTC))
    return time.perf_counter() - start


def main() -> None:
    """Run the workloads and write bench/results.md."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=5, help="cohort replication factor")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        one = Settings().with_home(work / "x1")
        trial = _files(SAMPLE)
        rows.append(("trial x1: ingest 78 files, 1,410 results", f"{_ingest(trial, one):.1f} s"))
        rows.append(("re-run of the same files (all duplicates)", f"{_ingest(trial, one):.1f} s"))
        big = Settings().with_home(work / "big")
        files = _replicate(args.copies, work / "copies")
        seconds = _ingest(files, big)
        rows.append((f"trial x{args.copies}: ingest {len(files)} files", f"{seconds:.1f} s"))
        runs = [p for p in files if p.parent.name == "str" and p.parent.parent.name == "c0"]
        extra = runs[len(runs) // 2]  # a mid-trial STR run: patients' samples, no product reference
        new = work / "extra" / extra.name
        new.parent.mkdir()
        new.write_bytes(extra.read_bytes().replace(b"\r\n", b"\n"))
        seconds = _ingest([new], big)
        label = f"a corrected STR run ({extra.name}) into the x{args.copies} warehouse"
        rows.append((label, f"{seconds:.1f} s"))
        pattern = (big.warehouse / CHIMERISM.name / "*.parquet").as_posix()
        start = time.perf_counter()
        duckdb.sql(
            f"select patient_id, method, count(*), max(pct_ink) from read_parquet('{pattern}') "
            "group by all"
        ).fetchall()
        rows.append(
            ("duckdb per-patient summary query", f"{1000 * (time.perf_counter() - start):.0f} ms")
        )
        shutil.rmtree(work / "copies")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak RSS of the bench process", f"{peak_mib:.0f} MiB"))
    lines = ["| workload | result |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
