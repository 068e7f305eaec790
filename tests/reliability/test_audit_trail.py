"""The audit trail: an append-only ledger, superseded rows kept as they were, full lineage."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import polars as pl
from flow_builders import FakeClock, post_dose_id, post_dose_table, sha, write_config
from reliability_builders import INSTANT, make_home, poll, put, trial_files

from chimera import __version__
from chimera.maintenance import rebuild_all_patients, verify_warehouse
from chimera.rebuild import recover_dirty
from chimera.refresh import refresh_patients
from chimera.settings import Settings, load_settings
from chimera.warehouse import ASSAY_LIMITS, CHIMERISM, MARKERS, PARAMETERS, Warehouse


def _ledger_files(settings: Settings) -> dict[str, tuple[str, int]]:
    root = settings.warehouse / "ingest_log"
    return {
        str(p.relative_to(root)): (sha(p.read_bytes()), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*.parquet"))
    }


def test_no_ledger_file_is_ever_rewritten_or_deleted(tmp_path: Path) -> None:
    """Ingest, re-drop, corrected re-export, rebuild, refresh, recovery, verify: only additions."""
    settings = make_home(tmp_path)
    clock = FakeClock()
    history: list[dict[str, tuple[str, int]]] = []

    def step(action: object) -> None:
        del action
        current = _ledger_files(settings)
        if history:
            previous = history[-1]
            assert {k: current.get(k) for k in previous} == previous  # same bytes, same mtime
        history.append(current)
        clock.advance(60)

    step(put(settings.inbox, trial_files()))
    step(poll(settings, clock))
    step(put(settings.inbox, {"again.txt": trial_files()["gm_d01.txt"]}))
    step(poll(settings, clock))
    step(put(settings.inbox, {"gm_d01_fixed.txt": post_dose_table(1, 30.0, scale=1.1)}))
    step(poll(settings, clock))
    step(rebuild_all_patients(settings, now=clock()))
    step(refresh_patients(None, settings=settings, now=clock()))
    Warehouse(settings.warehouse).mark_dirty({"P01"})
    step(recover_dirty(settings=settings, now=clock()))
    step(verify_warehouse(settings))
    # 5 accepted, 2 waited once (their references sort after them), a duplicate, a fix:
    # each poll's events are one new ledger file.
    events = pl.read_parquet(settings.warehouse / "ingest_log" / "**" / "*.parquet")
    assert events.height == len(trial_files()) + 2 + 1 + 1
    assert len(history[-1]) == 3


BOOKKEEPING = ["superseded", "superseded_reason", "is_headline", "headline_rule"]
"""What supersession changes on a row: its flag, the reason, and that it is no headline."""


def test_superseded_rows_keep_every_value_through_rebuilds(tmp_path: Path) -> None:
    """A corrected export supersedes a result: the old row keeps every value (only the
    supersession flags change), and later rebuilds leave it exactly as it is."""
    settings = make_home(tmp_path)
    clock = FakeClock()
    put(settings.inbox, trial_files())
    poll(settings, clock)
    warehouse = Warehouse(settings.warehouse)
    original = warehouse.read(CHIMERISM).filter(pl.col("sample_id") == post_dose_id(1))
    put(settings.inbox, {"gm_d01_fixed.txt": post_dose_table(1, 30.0, scale=1.1)})
    clock.advance(3600)
    poll(settings, clock)
    superseded = []
    for _ in range(2):
        rows = warehouse.read(CHIMERISM).filter(pl.col("sample_id") == post_dose_id(1))
        superseded.append(rows.filter(pl.col("superseded")))
        rebuild_all_patients(settings, now=clock())
        clock.advance(timedelta(days=1).total_seconds())
    assert superseded[0].drop(BOOKKEEPING).equals(original.drop(BOOKKEEPING))
    assert superseded[0]["superseded_reason"].item().startswith("re-export: replaced by")
    assert superseded[1].equals(superseded[0])
    current = rows.filter(~pl.col("superseded"))
    assert current["pct_ink"].item() > original["pct_ink"].item()


def test_every_derived_row_names_its_source_version_and_parameters(tmp_path: Path) -> None:
    """``source_sha256`` of an accepted file, ``pipeline_version`` and a ``parameters_sha256``
    whose snapshot in ``parameters`` hashes to it; new settings give new rows a new hash and
    keep the old snapshot."""
    settings = make_home(tmp_path)
    put(settings.inbox, trial_files())
    poll(settings)
    warehouse = Warehouse(settings.warehouse)
    accepted = {sha(d) for d in trial_files().values()}

    def check() -> set[str]:
        hashes: set[str] = set()
        snapshots = warehouse.read(PARAMETERS)
        stored = dict(snapshots.select("parameters_sha256", "settings_json").iter_rows())
        for table in (CHIMERISM, MARKERS, ASSAY_LIMITS):
            rows = warehouse.read(table)
            if table is not ASSAY_LIMITS:
                assert rows.height > 0, table.name
            assert set(rows["source_sha256"]) <= accepted
            assert set(rows["pipeline_version"]) <= {__version__}
            assert rows["parameters_sha256"].null_count() == 0
            hashes |= set(rows["parameters_sha256"])
        for digest in hashes:
            assert hashlib.sha256(stored[digest].encode()).hexdigest() == digest
        return hashes

    first = check()
    assert json.loads(warehouse.read(PARAMETERS)["settings_json"][0])["str"]["lod_pct"] == 1.0
    write_config(settings.home, INSTANT + "\n[str]\nlod_pct = 2.0\n")
    rebuild_all_patients(load_settings(home=settings.home), now=FakeClock()())
    second = check()
    assert first.isdisjoint(second)
    assert first | second == set(warehouse.read(PARAMETERS)["parameters_sha256"])
