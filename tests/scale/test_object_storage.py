"""Object storage through fsspec against a local S3 server (moto): writes, lease, readers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from chimera.storage import LeaseHeldError, Store, duckdb_connect, md5_hex, scan_table


def test_atomic_write_leaves_only_the_final_object(bucket: str, s3_options: dict[str, Any]) -> None:
    store = Store.from_url(f"{bucket}/wh", s3_options)
    store.write_atomic("t/a.parquet", b"first")
    store.write_atomic("t/a.parquet", b"second")
    assert store.listing() == {"t/a.parquet": md5_hex(b"second")}
    assert store.read_bytes("t/a.parquet") == b"second"


def test_polars_and_duckdb_read_the_same_url(bucket: str, s3_options: dict[str, Any]) -> None:
    store = Store.from_url(f"{bucket}/wh", s3_options)
    frames = {
        "p1": pl.DataFrame({"patient_id": ["P1", "P1"], "pct_ink": [1.5, 2.5]}),
        "p2": pl.DataFrame({"patient_id": ["P2"], "pct_ink": [0.25]}),
    }
    for key, frame in frames.items():
        buffer = __import__("io").BytesIO()
        frame.write_parquet(buffer)
        store.write_atomic(f"chimerism/{key}.parquet", buffer.getvalue())
    expected = pl.concat(frames.values()).sort("patient_id", "pct_ink")
    lazy = scan_table(f"{bucket}/wh", "chimerism", s3_options)
    assert lazy.collect().sort("patient_id", "pct_ink").equals(expected)
    con = duckdb_connect(f"{bucket}/wh", ["chimerism", "absent"], s3_options)
    rows = con.execute(
        "select patient_id, sum(pct_ink) from chimerism group by 1 order by 1"
    ).fetchall()
    assert rows == [("P1", 4.0), ("P2", 0.25)]


def test_lease_excludes_a_second_site_until_it_expires(
    bucket: str, s3_options: dict[str, Any]
) -> None:
    store = Store.from_url(f"{bucket}/wh", s3_options)
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    first = store.lease(owner="site-a", seconds=60, clock=lambda: now)
    second = store.lease(owner="site-b", seconds=60, clock=lambda: now)
    with first:
        assert not second.acquire()
        with pytest.raises(LeaseHeldError, match="site-a"):
            second.__enter__()
    assert first.holder() is None
    assert second.acquire()
    later = store.lease(owner="site-c", seconds=60, clock=lambda: now + timedelta(seconds=61))
    assert later.acquire(), "an expired lease (crashed holder) is broken"
    assert (later.holder() or {})["owner"] == "site-c"
    second.release()
    assert (later.holder() or {})["owner"] == "site-c", "a broken holder cannot release another's"
