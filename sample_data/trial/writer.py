"""Write a whole trial: exports, registry files and truth, into one folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from .ddpcr_plates import write_ddpcr_plates
from .qpcr_plates import write_follow_up_plates, write_screening_plates
from .registry import infusion_rows, write_infusion_log, write_manifest
from .runs import write_str_runs
from .trial import FileRecord, Trial
from .truth import write_truth

GENERATED = ("str", "qpcr", "ddpcr", "truth")
REGISTRY_FILES = ("manifest.csv", "infusion_log.xlsx")


def clean_outputs(out_dir: Path) -> None:
    """Remove previously generated files so that stale runs never linger."""
    for sub in GENERATED:
        path = out_dir / sub
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    for name in REGISTRY_FILES:
        (out_dir / name).unlink(missing_ok=True)


def write_exports(trial: Trial, out_dir: Path) -> None:
    """Every instrument export of the trial (STR runs, qPCR and ddPCR plates)."""
    write_str_runs(trial, out_dir / "str")
    write_screening_plates(trial, out_dir / "qpcr")
    write_follow_up_plates(trial, out_dir / "qpcr")
    write_ddpcr_plates(trial, out_dir / "ddpcr")


def write_trial(trial: Trial, out_dir: Path) -> None:
    """The committed layout: one manifest, one infusion workbook, exports, truth."""
    clean_outputs(out_dir)
    write_manifest(out_dir / "manifest.csv", trial.samples)
    write_infusion_log(out_dir / "infusion_log.xlsx", infusion_rows(trial))
    trial.files += [
        FileRecord("manifest.csv", "registry", "manifest", ""),
        FileRecord("infusion_log.xlsx", "registry", "infusion_log", ""),
    ]
    write_exports(trial, out_dir)
    trial.files.sort(key=lambda f: f.path)
    write_truth(trial, out_dir / "truth")
