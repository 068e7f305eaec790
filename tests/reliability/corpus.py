"""A generated corpus of inbox files: valid trial files and every kind of damage a lab sends.

Each entry is ``kind -> (bytes, allowed fates, reason code)``: every damaged file has one
exact fate and, when quarantined, the reason code dashboards group on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from flow_builders import (
    genemapper_table,
    infusion_csv,
    manifest_csv,
    post_dose_table,
    references_table,
)

from schemas.vocab import FileStatus

ACCEPTED = frozenset({FileStatus.ACCEPTED})
QUARANTINED = frozenset({FileStatus.QUARANTINED})
WAITING = frozenset({FileStatus.WAITING})


@dataclass(frozen=True)
class Entry:
    """One corpus file and the fates it may get."""

    data: bytes
    fates: frozenset[FileStatus]
    reason_code: str | None = None
    """The quarantine reason code it must get (None: any, or not quarantined)."""


def _cut_mid_line(data: bytes) -> bytes:
    last = data.rindex(b"\n", 0, len(data) - 2)
    return data[: last + 1 + (len(data) - last) // 2]


def _garbage(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def valid_entries() -> dict[str, Entry]:
    """The trial every corrupted file is dropped beside (all accepted)."""
    return {
        "manifest": Entry(manifest_csv(range(1, 4)), ACCEPTED),
        "infusions": Entry(infusion_csv(), ACCEPTED),
        "references": Entry(references_table(), ACCEPTED),
        "d01": Entry(post_dose_table(1, 12.0), ACCEPTED),
        "d02": Entry(post_dose_table(2, 35.0), ACCEPTED),
    }


def damaged_entries() -> dict[str, Entry]:
    """Every kind of bad file, with the fate each must get."""
    manifest = manifest_csv(range(1, 4))
    plate = post_dose_table(3, 20.0)
    return {
        "empty": Entry(b"", QUARANTINED, "empty_file"),
        "whitespace_only": Entry(b"\r\n \t\r\n", QUARANTINED, "empty_file"),
        "binary_garbage": Entry(_garbage(1, 4096), QUARANTINED, "unrecognised_format"),
        "png_named_csv": Entry(
            b"\x89PNG\r\n\x1a\n" + _garbage(2, 512), QUARANTINED, "unrecognised_format"
        ),
        "prose": Entry(b"Dear lab,\nthe plate is attached.\n", QUARANTINED, "unrecognised_format"),
        "wrong_schema_csv": Entry(b"a,b,c\n1,2,3\n4,5,6\n", QUARANTINED, "unrecognised_format"),
        "manifest_bad_role": Entry(
            manifest.replace(b"post_dose", b"after dose"), QUARANTINED, "schema_violation"
        ),
        "manifest_negative_wbc": Entry(
            manifest.replace(b",4801,", b",-4801,"), QUARANTINED, "schema_violation"
        ),
        "manifest_duplicate_ids": Entry(
            manifest + b"P01-D01,P01,post_dose,2025-01-20T09:00:00Z,PB,4000,LOT-A\n",
            QUARANTINED,
            "schema_violation",
        ),
        "manifest_before_baseline": Entry(
            manifest.replace(b"2025-01-11T09:00:00Z", b"2025-01-02T09:00:00Z"),
            QUARANTINED,
            "schema_violation",
        ),
        "manifest_in_future": Entry(
            manifest.replace(b"2025-01-13T09:00:00Z", b"2031-01-13T09:00:00Z"),
            QUARANTINED,
            "schema_violation",
        ),
        "infusion_in_future": Entry(
            infusion_csv().replace(b"2025-01-10", b"2031-01-10"), QUARANTINED, "schema_violation"
        ),
        "manifest_conflicting": Entry(
            manifest.replace(b"4802", b"5100").replace(b"2025-01-13T09", b"2025-01-13T10"),
            ACCEPTED,
        ),
        "plate_unknown_samples": Entry(genemapper_table([("P07-D01", 30.0)]), WAITING),
        "plate_nan_area": Entry(
            plate.replace(b"\t2000\t", b"\tNaN\t"), QUARANTINED, "schema_violation"
        ),
        "plate_cut_mid_line": Entry(_cut_mid_line(plate), QUARANTINED, "truncated"),
        "plate_header_only": Entry(plate.split(b"\r\n")[0] + b"\r\n", QUARANTINED, "truncated"),
        "formula_sample_id": Entry(
            manifest_csv(range(9, 10)).replace(b"P01-D09", b"=HYPERLINK(1)"), ACCEPTED
        ),
    }


def corpus() -> dict[str, Entry]:
    """Valid and damaged files together."""
    return valid_entries() | damaged_entries()
