"""The lab's registry files: the sample manifest (CSV) and the infusion log (XLSX).

The workbook is made byte-stable: openpyxl stamps ``dcterms:modified`` and zip entry times with
the current time, so both are rewritten to a fixed instant.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import zipfile
from pathlib import Path

import openpyxl

from .controls import calibrators, product_reference
from .model import Sample
from .protocol import NTC_ID, SPECIMEN_WATER, lot_on
from .rand import UTC, iso_z
from .trial import Trial
from .vocab import Role

FIXED_DOC_TIME = dt.datetime(2025, 1, 1, 0, 0, 0)  # noqa: DTZ001 - openpyxl stores naive UTC
ZIP_ENTRY_TIME = (2025, 1, 1, 0, 0, 0)
MANIFEST_COLUMNS = [
    "sample_id",
    "patient_id",
    "role",
    "collected_at",
    "specimen",
    "wbc_per_ul",
    "lymphocytes_per_ul",
    "nk_per_ul",
    "purity_pct",
    "product_lot",
    "cell_bank",
]
INFUSION_COLUMNS = ["patient_id", "dose_number", "infused_at", "cells", "product_lot"]


def _text(value: object) -> str:
    return "" if value is None else str(value)


def manifest_rows(samples: list[Sample]) -> list[list[str]]:
    """Manifest rows of samples in the contract's column order."""
    return [
        [
            s.sample_id,
            s.patient_id,
            s.role,
            iso_z(s.collected_at),
            s.specimen,
            _text(s.wbc_per_ul),
            _text(s.lymphocytes_per_ul),
            _text(s.nk_per_ul),
            _text(s.purity_pct),
            _text(s.product_lot),
            _text(s.cell_bank),
        ]
        for s in samples
    ]


def control_samples() -> list[Sample]:
    """Product reference, calibrators and the water NTC: one manifest row each, reused forever."""
    ntc = Sample(
        NTC_ID, NTC_ID, str(Role.NEGATIVE_CONTROL), specimen=SPECIMEN_WATER, pct_recipient=0.0
    )
    return [product_reference(), *calibrators(), ntc]


def write_manifest(path: Path, samples: list[Sample], *, with_controls: bool = True) -> None:
    """``manifest.csv``: controls first, then patient samples in the given order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(manifest_rows([*(control_samples() if with_controls else []), *samples]))
    path.write_text(out.getvalue(), encoding="utf-8")


def infusion_rows(trial: Trial) -> list[tuple[str, int, dt.datetime, float, str]]:
    """(patient, dose number, time, cells, lot) of every dose given."""
    rows = []
    for patient in trial.patients:
        for number, moment in enumerate(trial.doses[patient.patient_id], start=1):
            if patient.enrolment_end is not None and moment.date() > patient.enrolment_end:
                continue
            rows.append(
                (
                    patient.patient_id,
                    number,
                    moment,
                    patient.dose_cells(number),
                    lot_on(moment.date()),
                )
            )
    return rows


def write_infusion_csv(path: Path, rows: list[tuple[str, int, dt.datetime, float, str]]) -> None:
    """An infusion log as CSV (ISO UTC times), for generated histories."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(INFUSION_COLUMNS)
    for pid, number, moment, cells, lot in rows:
        writer.writerow([pid, number, iso_z(moment), f"{cells:.0e}".replace("+0", "+"), lot])
    path.write_text(out.getvalue(), encoding="utf-8")


def write_infusion_log(path: Path, rows: list[tuple[str, int, dt.datetime, float, str]]) -> None:
    """``infusion_log.xlsx``: sheet ``Infusions``, naive UTC datetime cells, numeric cells."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Infusions"
    sheet.append(INFUSION_COLUMNS)
    for pid, number, moment, cells, lot in rows:
        sheet.append([pid, number, moment.astimezone(UTC).replace(tzinfo=None), cells, lot])
        sheet.cell(row=sheet.max_row, column=3).number_format = "yyyy-mm-dd hh:mm:ss"
        sheet.cell(row=sheet.max_row, column=4).number_format = "0.00E+00"
    workbook.properties.created = FIXED_DOC_TIME
    workbook.properties.modified = FIXED_DOC_TIME
    workbook.properties.creator = "chimera sample_data/generate.py"
    buffer = io.BytesIO()
    workbook.save(buffer)
    path.write_bytes(_stable_zip(buffer.getvalue()))


def _stable_zip(data: bytes) -> bytes:
    stable = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as source,
        zipfile.ZipFile(stable, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for info in source.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=ZIP_ENTRY_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o600 << 16
            content = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                content = re.sub(
                    rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                    rb"\g<1>" + FIXED_DOC_TIME.strftime("%Y-%m-%dT%H:%M:%SZ").encode() + rb"\g<2>",
                    content,
                )
            target.writestr(entry, content)
    return stable.getvalue()
