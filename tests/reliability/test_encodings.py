"""Exports in UTF-16 and single-byte encodings: read into the same rows as UTF-8, or refused.

Instrument software on Windows writes UTF-16 (QuantStudio, some GeneMapper set-ups) and
spreadsheet tools save cp1252/Latin-1 CSV. The same trial, with non-ASCII ids (``BL-Ø01``,
lot ``LOT-Ä``), is dropped once as UTF-8 and once in those encodings: every table the poll
writes holds the same values.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from flow_builders import BASELINE, LOT, table
from reliability_builders import make_home, poll, put, trial_files

from schemas.vocab import FileStatus

ENCODINGS = {
    "manifest.csv": "cp1252",
    "infusions.csv": "latin-1",
    "gm_refs.txt": "utf-16",  # with a BOM
    "gm_d01.txt": "utf-16-be",  # no BOM
    "gm_d02.txt": "utf-16-le",  # no BOM
}
TABLES = ("samples", "infusions", "chimerism", "markers", "observations_str")
NOT_CONTENT = ("source_sha256", "ingested_at", "sources_sha256")
"""Lineage differs with the bytes; every other column must be equal."""


def _trial(encodings: dict[str, str]) -> dict[str, bytes]:
    files = trial_files(range(1, 3))
    assert set(files) == set(ENCODINGS)
    return {
        name: data.decode()
        .replace(LOT, "LOT-Ä")
        .replace(BASELINE, "BL-Ø01")
        .encode(encodings.get(name, "utf-8"))
        for name, data in files.items()
    }


def _content(home: Path, name: str) -> pl.DataFrame:
    frame = table(home, name)
    assert frame.height > 0, name
    keep = [c for c in frame.columns if c not in NOT_CONTENT]
    return frame.select(keep).sort(keep)


def test_utf16_and_single_byte_exports_load_the_same_rows_as_utf8(tmp_path: Path) -> None:
    """UTF-16 (BOM, LE and BE without BOM), cp1252 and Latin-1: accepted, same values as UTF-8."""
    homes = {}
    for label, encodings in (("utf8", {}), ("windows", ENCODINGS)):
        settings = make_home(tmp_path / label)
        put(settings.inbox, _trial(encodings))
        result = poll(settings)
        assert {o.file_name: o.status for o in result.outcomes} == dict.fromkeys(
            ENCODINGS, FileStatus.ACCEPTED
        ), [(o.file_name, o.reason) for o in result.outcomes]
        homes[label] = settings.home
    assert _trial(ENCODINGS) != _trial({})  # the bytes really differ
    for name in TABLES:
        assert _content(homes["windows"], name).equals(_content(homes["utf8"], name)), name
    samples = table(homes["windows"], "samples")
    assert set(samples["product_lot"]) == {"LOT-Ä"}
    assert "BL-Ø01" in set(samples["sample_id"])


HEADER = "Dye/Sample Peak\tSample File Name\tMarker\tAllele\tSize\tHeight\tArea\r\n"


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"\xff\xfe" + HEADER.encode("utf-16-le") + b"\x00\xd8A\x00\r\x00\n\x00", "UTF-16 LE"),
        (b"\xfe\xff" + HEADER.encode("utf-16-be") + b"\x00", "UTF-16 BE"),
    ],
    ids=["unpaired-surrogate", "odd-byte-count"],
)
def test_undecodable_utf16_is_quarantined_naming_the_encoding(
    tmp_path: Path, data: bytes, named: str
) -> None:
    """A UTF-16 file that is not valid UTF-16: quarantined with a reason naming the encoding."""
    settings = make_home(tmp_path)
    put(settings.inbox, {"plate.txt": data})
    (outcome,) = poll(settings).outcomes
    assert outcome.status is FileStatus.QUARANTINED
    assert outcome.reason is not None and named in outcome.reason, outcome.reason
    report = (settings.quarantine / "plate.txt.problems.txt").read_text(encoding="utf-8")
    assert named in report
