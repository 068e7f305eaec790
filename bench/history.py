"""Generate a large trial history for benchmarks (issue 12): many patients, every method, weekly runs.

    python bench/history.py --patients 200 --months 12 --out DIR

Reuses the sample-trial generator (``sample_data/trial``): the same kinetics, genomes and export
writers, controls recurring on every plate, staggered enrolment; weekly STR runs (up to 94 samples),
qPCR and ddPCR plates (some qPCR plates as Bio-Rad CFX), a marker-screening plate per enrolment
week, monthly manifests and infusion logs (CSV). Deterministic for a given seed; nothing is
committed. 200 patients x 12 months gives about 900 exports.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sample_data"))

from trial.cohort import random_cohort
from trial.registry import infusion_rows, write_infusion_csv, write_manifest
from trial.trial import Batching, TrialConfig, build_trial
from trial.truth import write_truth
from trial.writer import clean_outputs, write_exports

HISTORY_START = dt.date(2025, 1, 6)
BATCH_DAYS = 7
STR_RUN_CAPACITY = 94
CFX_EVERY_NTH_PLATE = 10


def history_config(patients: int, months: int, seed: int) -> TrialConfig:
    """A cohort of random patients, weekly batches, no designed file events."""
    return TrialConfig(
        name=f"benchmark history ({patients} patients, {months} months)", seed=seed,
        patients=random_cohort(seed, patients, HISTORY_START, months),
        batching=Batching(days=BATCH_DAYS, origin=HISTORY_START),
        str_run_capacity=STR_RUN_CAPACITY, cfx_every=CFX_EVERY_NTH_PLATE,
    )  # fmt: skip


def write_history(patients: int, months: int, seed: int, out: Path) -> int:
    """Write the history into ``out``; return the number of files written."""
    out.mkdir(parents=True, exist_ok=True)
    clean_outputs(out)
    trial = build_trial(history_config(patients, months, seed))
    registry = out / "registry"
    registry.mkdir(exist_ok=True)
    by_month: dict[str, list] = {}
    for sample in trial.samples:
        anchor = sample.collected_at or trial.sample(f"{sample.patient_id}-BL").collected_at
        assert anchor is not None
        by_month.setdefault(anchor.strftime("%Y-%m"), []).append(sample)
    for index, month in enumerate(sorted(by_month)):
        write_manifest(
            registry / f"manifest_{month}.csv", by_month[month], with_controls=index == 0
        )
    doses: dict[str, list] = {}
    for row in infusion_rows(trial):
        doses.setdefault(row[2].strftime("%Y-%m"), []).append(row)
    for month, rows in sorted(doses.items()):
        write_infusion_csv(registry / f"infusions_{month}.csv", rows)
    write_exports(trial, out)
    write_truth(trial, out / "truth")
    return len(trial.files) + len(by_month) + len(doses)


def main() -> None:
    """Command line: patients, months, seed, output folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=20251201)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    start = time.perf_counter()
    count = write_history(args.patients, args.months, args.seed, args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    seconds = time.perf_counter() - start
    print(f"{count} files, {size / 1e6:.1f} MB in {args.out} ({seconds:.1f} s)")


if __name__ == "__main__":
    main()
