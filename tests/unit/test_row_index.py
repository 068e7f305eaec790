"""RowIndex: a rebuild's takes give the same rows in the same order, scanned or indexed."""

from __future__ import annotations

import itertools
import random

import polars as pl

from chimera.row_index import PARTITION_AFTER_TAKES, RowIndex


def _rows() -> pl.DataFrame:
    """Wells of 6 files x 5 samples (some unnamed), shuffled, so stored order is not sorted."""
    rng = random.Random(7)
    rows = [
        {"sample_id": None if (f + s) % 7 == 0 else f"S{s}", "source_sha256": f"F{f}",
         "target": rng.choice(["RPP30", "M1", "M2"]), "cq": float(f * 10 + s)}
        for f, s, _ in itertools.product(range(6), range(5), range(2))
    ]  # fmt: skip
    rng.shuffle(rows)
    return pl.DataFrame(rows)


def test_indexed_takes_equal_scanned_takes() -> None:
    """Past :data:`PARTITION_AFTER_TAKES` the index answers; every answer equals the scan's."""
    frame = _rows()
    scanned, indexed = RowIndex.of(frame), RowIndex.of(frame)
    indexed._takes[0] = PARTITION_AFTER_TAKES  # every further take uses the index
    requests = [
        ((), ()),
        (("S1",), ()),
        (("S1", "S3", "nobody"), ()),
        ((), ("F2",)),
        (("S0", "S4"), ("F0", "F5", "F9")),
        (("S2",), ("F2",)),
    ]
    for ids, files in requests:
        scanned._takes[0] = 0  # always scan
        expected = scanned.take(ids, files)
        found = indexed.take(ids, files)
        assert found.equals(expected), (ids, files)
        assert "__row" not in found.columns
    # F2 whole (5 samples x 2 wells) and S1 on the 5 other files (2 wells each), F2 once.
    assert indexed.take(("S1",), ("F2",)).height == 10 + 10
    kept_scan, kept_index = scanned.kept(["S3", "S1"]), indexed.kept(["S1", "S3"])
    assert kept_scan.by_source.keys() == kept_index.by_source.keys()
    for sha, rows in kept_scan.by_source.items():
        assert rows.equals(kept_index.by_source[sha])
    assert kept_scan.plates == kept_index.plates
