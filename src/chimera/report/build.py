"""Write the HTML reports to files (atomically: a reader never sees half a report)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from chimera.report.cohort import render_cohort_report
from chimera.report.data import ReportData, load_report_data
from chimera.report.patient import Report, render_patient_report
from chimera.settings import Settings
from chimera.warehouse import file_key


class UnknownPatientError(LookupError):
    """The patient has no row in the warehouse; the message lists the patients known."""


def _write(path: Path, report: Report) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(report.html, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def default_report_path(settings: Settings, patient: str | None) -> Path:
    """``<home>/reports/<patient>.html``, or ``cohort.html`` for the cohort report."""
    name = "cohort" if patient is None else file_key(patient)
    return settings.home / "reports" / f"{name}.html"


def write_patient_report(
    settings: Settings, patient: str, *, out: Path, now: datetime, data: ReportData | None = None
) -> Path:
    """Render one patient's report to ``out``; an unknown patient raises UnknownPatientError."""
    data = data or load_report_data(settings.warehouse)
    known = data.patients()
    if patient not in known:
        msg = f"no patient {patient!r} in {settings.warehouse}; known: {', '.join(known) or 'none'}"
        raise UnknownPatientError(msg)
    report = render_patient_report(
        data.for_patient(patient), patient, settings=settings, generated_at=now
    )
    return _write(out, report)


def write_cohort_report(
    settings: Settings, *, out: Path, now: datetime, data: ReportData | None = None
) -> Path:
    """Render the cohort report to ``out``."""
    data = data or load_report_data(settings.warehouse)
    return _write(out, render_cohort_report(data, settings=settings, generated_at=now))


def write_all_reports(
    settings: Settings, folder: Path, *, now: datetime, step: Callable[[str], None] | None = None
) -> list[Path]:
    """The cohort report and one report per patient into ``folder``; ``step`` after each."""
    data = load_report_data(settings.warehouse)
    paths = [write_cohort_report(settings, out=folder / "cohort.html", now=now, data=data)]
    if step:
        step("cohort")
    for patient in data.patients():
        out = folder / f"{file_key(patient)}.html"
        paths.append(write_patient_report(settings, patient, out=out, now=now, data=data))
        if step:
            step(patient)
    return paths


def report_count(settings: Settings) -> int:
    """How many files :func:`write_all_reports` writes (for a progress bar)."""
    return 1 + len(load_report_data(settings.warehouse).patients())
