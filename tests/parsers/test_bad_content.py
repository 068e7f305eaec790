"""A generated corpus of bad files, each refused with the right reason code (issue 13).

Built in code from the synthetic exports: truncated, binary, empty, wrong-schema, NaN /
negative / impossible values, duplicate sample ids, impossible dates, direct identifiers,
broken encodings. Each goes through the same calls as the ingest (``detect`` then
``parse_export`` with the ingest's clock) and must raise a ChimeraError with the expected
``reason`` and a message naming the file; none may be accepted or crash.
"""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import pytest
from synthetic_exports import SYNTHETIC

from chimera.detect import detect
from chimera.errors import ChimeraError, RejectReason
from chimera.parsers.dispatch import parse_export
from chimera.settings import Settings
from chimera.textio import check_size

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SETTINGS = Settings()
R = RejectReason
MANIFEST = SYNTHETIC["manifest.csv"]
INFUSIONS = SYNTHETIC["infusion_log.csv"]


def _xlsx(rows: list[list[str]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _cut(data: bytes, keep_of_last_line: int) -> bytes:
    end = len(data.rstrip(b"\r\n"))
    start = data.rfind(b"\n", 0, end) + 1
    return data[: start + keep_of_last_line]


_NOISE = random.Random(13)
CORPUS: dict[str, tuple[bytes, RejectReason, str]] = {
    # truncated
    **{
        f"truncated_{name}": (_cut(SYNTHETIC[name], 5), R.TRUNCATED, "truncated")
        for name in sorted(SYNTHETIC)
        if not name.endswith(".xlsx")
    },
    "truncated_manifest.xlsx": (SYNTHETIC["manifest.xlsx"][:-100], R.TRUNCATED, "truncated"),
    "truncated_utf16.txt": (
        SYNTHETIC["appbio.txt"].decode().encode("utf-16")[:-1],
        R.TRUNCATED,
        "truncated",
    ),
    "header_only.csv": (MANIFEST.splitlines(keepends=True)[0], R.TRUNCATED, "no rows"),
    # binary
    "random.bin": (
        bytes(_NOISE.randrange(256) for _ in range(4096)),
        R.UNRECOGNISED_FORMAT,
        "binary",
    ),
    "image.png": (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 40,
        R.UNRECOGNISED_FORMAT,
        "binary",
    ),
    "archive.gz": (b"\x1f\x8b\x08\x00" + bytes(range(200)), R.UNRECOGNISED_FORMAT, "binary"),
    "not_a_workbook.xlsx": (b"PK\x03\x04" + b"junk" * 50, R.TRUNCATED, "truncated"),
    # empty
    "empty.csv": (b"", R.EMPTY_FILE, "empty"),
    "blank_lines.csv": (b"\r\n \r\n\t\r\n", R.EMPTY_FILE, "empty"),
    "bom_only.csv": (b"\xef\xbb\xbf\r\n", R.EMPTY_FILE, "blanks"),
    "utf16_blank.txt": ("  \r\n".encode("utf-16"), R.EMPTY_FILE, "blanks"),
    # wrong schema
    "notes.txt": (b"Dear lab,\nhere are the results.\n", R.UNRECOGNISED_FORMAT, "no known export"),
    "other_table.csv": (b"id,value,unit\n1,2.5,mg\n2,3.1,mg\n", R.UNRECOGNISED_FORMAT, "no known"),
    "manifest_without_role.csv": (
        b"sample_id,patient_id,collected_at\nS1,P1,2025-03-03\n",
        R.SCHEMA_VIOLATION,
        "role",
    ),
    "quantasoft_without_positives.csv": (
        b"Well,TargetType,Target,AcceptedDroplets\nA01,Ch1Unknown,S04,16000\n",
        R.SCHEMA_VIOLATION,
        "positives",
    ),
    "genemapper_in_excel.xlsx": (
        _xlsx(
            [["Dye/Sample Peak", "Sample File Name", "Marker", "Allele", "Size", "Height", "Area"]]
        ),
        R.UNREADABLE,
        "text",
    ),
    "amplitude.csv": (
        b"Assay1 Amplitude,Assay2 Amplitude,Cluster\n8123.1,2011.5,1\n",
        R.NOT_A_CHIMERISM_ASSAY,
        "amplitude",
    ),
    # NaN, negative and impossible values
    "negative_ct.txt": (
        SYNTHETIC["appbio.txt"].replace(b"25.100", b"-3"),
        R.SCHEMA_VIOLATION,
        "QpcrWells",
    ),
    "infinite_ct.txt": (
        SYNTHETIC["appbio.txt"].replace(b"25.100", b"1e400"),
        R.SCHEMA_VIOLATION,
        "cannot be read",
    ),
    "ct_above_100.csv": (
        SYNTHETIC["cfx.csv"].replace(b"31.25", b"140"),
        R.SCHEMA_VIOLATION,
        "QpcrWells",
    ),
    "nan_count.csv": (
        SYNTHETIC["qx_manager.csv"].replace(b"20000,250,19750", b"20000,NaN,19750", 1),
        R.SCHEMA_VIOLATION,
        "add up",
    ),
    "negative_count.csv": (
        SYNTHETIC["quantasoft.csv"].replace(b",20,15980,", b",-20,16020,", 1),
        R.SCHEMA_VIOLATION,
        "DdpcrWells",
    ),
    "counts_do_not_add_up.csv": (
        SYNTHETIC["quantasoft.csv"].replace(b",20,15980,", b",20,15000,", 1),
        R.SCHEMA_VIOLATION,
        "DdpcrWells",
    ),
    "huge_count.csv": (
        SYNTHETIC["quantasoft.csv"].replace(b",20,15980,", b",99999999999999,15980,", 1),
        R.SCHEMA_VIOLATION,
        "whole number",
    ),
    "negative_area.txt": (
        SYNTHETIC["genemapper_sizing.txt"].replace(b"\t5862\t", b"\t-5862\t"),
        R.SCHEMA_VIOLATION,
        "StrPeaks",
    ),
    "negative_wbc.csv": (MANIFEST.replace(b",2800\n", b",-2800\n"), R.SCHEMA_VIOLATION, "Manifest"),
    "text_wbc.csv": (MANIFEST.replace(b",2800\n", b",lots\n"), R.SCHEMA_VIOLATION, "number"),
    "nominal_above_100.csv": (
        b"sample_id,patient_id,role,nominal_pct\nDIL-150,SER1,dilution_standard,150\n",
        R.SCHEMA_VIOLATION,
        "Manifest",
    ),
    "zero_cells.csv": (
        INFUSIONS.replace(b",500000000,", b",0,", 1),
        R.SCHEMA_VIOLATION,
        "InfusionLog",
    ),
    # duplicate sample ids
    "duplicate_sample.csv": (
        MANIFEST + b"P01-D8,P01,post_dose,2025-03-10,whole blood,2500\n",
        R.SCHEMA_VIOLATION,
        "Manifest",
    ),
    "duplicate_dose.csv": (
        INFUSIONS + b"P01,2,2025-03-06T10:00:00Z,500000000,LOT1\r\n",
        R.SCHEMA_VIOLATION,
        "InfusionLog",
    ),
    # impossible dates
    "february_30.csv": (
        MANIFEST.replace(b"2025-03-09 09:30", b"2025-02-30"),
        R.SCHEMA_VIOLATION,
        "date",
    ),
    "collected_in_future.csv": (
        MANIFEST.replace(b"2025-03-09 09:30", b"2027-03-09"),
        R.SCHEMA_VIOLATION,
        "future",
    ),
    "before_baseline.csv": (
        MANIFEST.replace(b"2025-03-09 09:30", b"2025-02-01"),
        R.SCHEMA_VIOLATION,
        "Manifest",
    ),
    "year_1925.csv": (
        MANIFEST.replace(b"2025-03-09", b"1925-03-09"),
        R.SCHEMA_VIOLATION,
        "Manifest",
    ),
    "infused_in_future.csv": (
        INFUSIONS.replace(b"2025-03-05T10", b"2027-03-05T10"),
        R.SCHEMA_VIOLATION,
        "future",
    ),
    "doses_out_of_order.csv": (
        INFUSIONS.replace(b"2025-03-05T10", b"2025-02-25T10"),
        R.SCHEMA_VIOLATION,
        "InfusionLog",
    ),
    # direct identifiers
    "manifest_with_dob.csv": (
        MANIFEST.replace(b"wbc_per_ul\n", b"wbc_per_ul,DOB\n", 1),
        R.DIRECT_IDENTIFIER,
        "remove column 'DOB'",
    ),
    "manifest_with_names.xlsx": (
        _xlsx(
            [["sample_id", "patient_id", "role", "Patient Name"], ["S1", "P1", "post_dose", "x"]]
        ),
        R.DIRECT_IDENTIFIER,
        "pseudonymised",
    ),
    # broken encodings
    "bad_utf16.txt": (
        b"\xff\xfe"
        + "sample_id,patient_id,role\r\n".encode("utf-16-le")
        + b"\x00\xdcA\x00\r\x00\n\x00",
        R.UNREADABLE,
        "UTF-16",
    ),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_file_is_refused_with_its_reason(name: str) -> None:
    """Each bad file is refused (never accepted, never a traceback) with its reason code."""
    data, reason, needle = CORPUS[name]
    with pytest.raises(ChimeraError) as info:
        parse_export(detect(data, file_name=name), settings=SETTINGS, now=NOW)
    error = info.value
    assert error.reason is reason, f"{name}: {error}"
    text = str(error) + " " + " ".join(p.render() for p in error.problems)
    assert needle.casefold() in text.casefold(), text
    assert name in str(error)


def test_corpus_covers_every_kind_of_bad_content() -> None:
    """The corpus holds each kind issue 13 names, with its own reason code."""
    reasons = {reason for _, reason, _ in CORPUS.values()}
    assert reasons == {
        R.TRUNCATED,
        R.UNRECOGNISED_FORMAT,
        R.EMPTY_FILE,
        R.SCHEMA_VIOLATION,
        R.UNREADABLE,
        R.NOT_A_CHIMERISM_ASSAY,
        R.DIRECT_IDENTIFIER,
    }
    assert len(CORPUS) >= 45


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    """A file above inbox_rules.max_file_bytes is refused from its size alone."""
    path = tmp_path / "huge.txt"
    with path.open("wb") as handle:
        handle.truncate(3_000_000)  # sparse: nothing is written or read
    with pytest.raises(ChimeraError) as info:
        check_size(path, 2_000_000)
    assert info.value.reason is R.TOO_LARGE
