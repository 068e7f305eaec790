"""A poll against shared object storage (moto S3): two sites, one warehouse, nothing lost."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chimera.poll import poll_once
from chimera.settings import ScaleSettings, Settings
from chimera.storage import LeaseHeldError, Store, scan_table, synced_site
from chimera.warehouse import OBSERVATIONS_QPCR, SAMPLES, Warehouse
from schemas.vocab import FileStatus

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _site(home: Path, bucket: str, options: dict[str, Any]) -> Settings:
    scale = ScaleSettings(
        inbox_url=f"{bucket}/inbox",
        archive_url=f"{bucket}/archive",
        quarantine_url=f"{bucket}/quarantine",
        warehouse_url=f"{bucket}/warehouse",
        storage_options=options,
    )
    return replace(Settings().with_home(home), scale=scale)


def test_two_sites_share_one_warehouse_on_s3(
    tmp_path: Path, bucket: str, s3_options: dict[str, Any], small_inbox: list[Path]
) -> None:
    inbox = Store.from_url(f"{bucket}/inbox", s3_options)
    for path in small_inbox:
        inbox.write_atomic(path.name, path.read_bytes())
    site_a = _site(tmp_path / "a", bucket, s3_options)
    with synced_site(site_a, clock=lambda: NOW) as (settings, record):
        poll = poll_once(settings, clock=lambda: NOW)
    accepted = {o.file_name for o in poll.outcomes if o.status is FileStatus.ACCEPTED}
    assert "manifest.csv" in accepted
    assert len(accepted) >= 3, poll.outcomes
    placed = {o.file_name for o in poll.outcomes if o.status is not FileStatus.WAITING}
    assert set(record[0].placed) == placed
    assert set(inbox.listing()) == {p.name for p in small_inbox} - placed
    archive = Store.from_url(f"{bucket}/archive", s3_options).listing()
    assert {Path(k).name for k in archive} >= accepted

    local = Warehouse(site_a.warehouse)
    shared = scan_table(f"{bucket}/warehouse", SAMPLES.name, s3_options).collect()
    assert shared.sort(shared.columns).equals(local.read(SAMPLES).sort(shared.columns))
    qpcr = scan_table(f"{bucket}/warehouse", OBSERVATIONS_QPCR.name, s3_options).collect()
    assert qpcr.height == local.read(OBSERVATIONS_QPCR).height > 0

    site_b = _site(tmp_path / "b", bucket, s3_options)
    with synced_site(site_b, clock=lambda: NOW) as (settings_b, record_b):
        again = poll_once(settings_b, clock=lambda: NOW)
    assert {o.file_name for o in again.outcomes} == {p.name for p in small_inbox} - placed
    assert record_b[0].pulled, "site b pulled the shared warehouse"
    for table in (SAMPLES, OBSERVATIONS_QPCR):
        a = Warehouse(site_a.warehouse).read(table)
        b = Warehouse(site_b.warehouse).read(table)
        assert b.sort(b.columns).equals(a.sort(a.columns))


def test_a_held_lease_stops_a_second_site_before_it_copies(
    tmp_path: Path, bucket: str, s3_options: dict[str, Any]
) -> None:
    settings = _site(tmp_path / "a", bucket, s3_options)
    store = Store.from_url(f"{bucket}/warehouse", s3_options)
    store.write_atomic("samples/x.parquet", b"not read")
    with (
        store.lease(owner="other-site", seconds=600, clock=lambda: NOW),
        pytest.raises(LeaseHeldError, match="other-site"),
        synced_site(settings, clock=lambda: NOW),
    ):
        pytest.fail("the block must not run while another site holds the lease")
    assert not (settings.warehouse / "samples" / "x.parquet").exists()


def test_a_site_whose_lease_was_broken_publishes_nothing(
    tmp_path: Path, bucket: str, s3_options: dict[str, Any], small_inbox: list[Path]
) -> None:
    inbox = Store.from_url(f"{bucket}/inbox", s3_options)
    manifest = small_inbox[0]
    inbox.write_atomic(manifest.name, manifest.read_bytes())
    settings = replace(
        _site(tmp_path / "a", bucket, s3_options),
        scale=replace(_site(tmp_path / "a", bucket, s3_options).scale, lease_seconds=60),
    )
    shared = Store.from_url(f"{bucket}/warehouse", s3_options)
    later = datetime(2026, 12, 1, 13, tzinfo=UTC)

    def poll_while_site_b_takes_over() -> None:
        with synced_site(settings, clock=lambda: NOW) as (local, _):
            poll_once(local, clock=lambda: NOW)
            assert shared.lease(owner="site-b", seconds=60, clock=lambda: later).acquire()

    with pytest.raises(LeaseHeldError, match="nothing is published"):
        poll_while_site_b_takes_over()
    assert set(shared.listing()) == {".lease"}, "no table reached the shared warehouse"
    assert set(inbox.listing()) == {manifest.name}, "the file stays in the shared inbox"
