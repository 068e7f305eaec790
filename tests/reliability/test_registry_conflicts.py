"""Registry files that disagree with the registry or the clock: a clear fate each, no crash."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from flow_builders import (
    FIRST_DOSE,
    PATIENT,
    FakeClock,
    genemapper_table,
    infusion_csv,
    ledger,
    manifest_csv,
    post_dose_id,
)
from reliability_builders import make_home, poll, put, trial_files

from chimera.registry import read_registry
from chimera.warehouse import CHIMERISM, Warehouse
from schemas.vocab import FileStatus


def _fates(result: object) -> dict[str, tuple[FileStatus, str]]:
    return {o.file_name: (o.status, o.reason or "") for o in result.outcomes}  # type: ignore[attr-defined]


def _reason(home: Path, name: str) -> str:
    rows = ledger(home).filter(pl.col("file_name") == name)
    return str(rows["reason"][-1])


def test_a_later_manifest_that_disagrees_wins_and_the_ledger_says_what_changed(
    tmp_path: Path,
) -> None:
    """Changed collection time and WBC count: accepted, the registry takes the new values."""
    settings = make_home(tmp_path)
    clock = FakeClock()
    put(settings.inbox, trial_files())
    poll(settings, clock)
    corrected = manifest_csv().replace(
        b"2025-01-11T09:00:00Z,PB,4801", b"2025-01-12T09:00:00Z,PB,4900"
    )
    put(settings.inbox, {"manifest_corrected.csv": corrected})
    clock.advance(60)

    result = poll(settings, clock)

    status, reason = _fates(result)["manifest_corrected.csv"]
    assert status is FileStatus.ACCEPTED
    assert reason.endswith(  # after the parser's note on the product's specimen
        "replaces earlier manifest rows (the later file wins): P01-D01 collected_at "
        "2025-01-11 09:00 → 2025-01-12 09:00, wbc_per_ul 4801.0 → 4900.0 (was manifest.csv); "
        "3 sample id(s) already registered, unchanged"
    )
    assert _reason(settings.home, "manifest_corrected.csv") == reason
    samples = read_registry(Warehouse(settings.warehouse)).samples
    row = samples.filter(pl.col("sample_id") == post_dose_id(1)).row(0, named=True)
    assert (row["collected_at"].day, row["wbc_per_ul"]) == (12, 4900.0)
    chimerism = Warehouse(settings.warehouse).read(CHIMERISM).filter(~pl.col("superseded"))
    assert chimerism.filter(pl.col("sample_id") == post_dose_id(1))["study_day"].to_list() == [2]


def test_a_sample_moved_to_another_patient_leaves_the_first_patient(tmp_path: Path) -> None:
    """The later manifest gives P01-D02 to P02: P01 is rebuilt without it."""
    settings = make_home(tmp_path)
    clock = FakeClock()
    put(settings.inbox, trial_files())
    poll(settings, clock)
    header, *rows = manifest_csv(range(2, 3)).splitlines(keepends=True)
    moved = header + rows[-1].replace(b"P01-D02,P01,", b"P01-D02,P02,")  # only the moved row
    put(settings.inbox, {"manifest_fix.csv": moved})
    clock.advance(60)

    status, reason = _fates(poll(settings, clock))["manifest_fix.csv"]

    assert status is FileStatus.ACCEPTED
    assert "P01-D02 patient_id P01 → P02" in reason
    rows = Warehouse(settings.warehouse).read_part(CHIMERISM, PATIENT)
    assert rows is not None
    current = rows.filter(~pl.col("superseded"))["sample_id"].to_list()
    assert current == [post_dose_id(1)]


def test_impossible_dates_never_stop_the_other_files(tmp_path: Path) -> None:
    """A post-dose sample before its baseline, a sample and a dose after the ingest clock
    (the contract's checks within one file): each file quarantined, the rest accepted."""
    settings = make_home(tmp_path)
    clock = FakeClock()  # 2026-12-01
    before_baseline = manifest_csv().replace(b"2025-01-11T09:00:00Z", b"2025-01-02T09:00:00Z")
    future_sample = manifest_csv(range(5, 6)).replace(
        b"2025-01-15T09:00:00Z", b"2027-01-15T09:00:00Z"
    )
    future_dose = infusion_csv().replace(b"2025-01-10", b"2027-01-10")
    put(
        settings.inbox,
        {
            "manifest_early.csv": before_baseline,
            "manifest_future.csv": future_sample,
            "infusions_future.csv": future_dose,
            "infusions.csv": infusion_csv(),
        },
    )

    fates = _fates(poll(settings, clock))

    assert fates["infusions.csv"][0] is FileStatus.ACCEPTED
    for name in ("manifest_early.csv", "manifest_future.csv", "infusions_future.csv"):
        assert fates[name][0] is FileStatus.QUARANTINED, name
        assert (settings.quarantine / f"{name}.problems.txt").is_file()


def _refused_after_the_trial(tmp_path: Path, row: bytes) -> tuple[str, str]:
    """Ingest the trial, then a one-row manifest: its quarantine reason and problems report."""
    settings = make_home(tmp_path)
    clock = FakeClock()
    put(settings.inbox, trial_files())
    poll(settings, clock)
    put(settings.inbox, {"more.csv": b"sample_id,patient_id,role,collected_at,specimen\n" + row})
    status, reason = _fates(poll(settings, clock))["more.csv"]
    assert status is FileStatus.QUARANTINED
    return reason, (settings.quarantine / "more.csv.problems.txt").read_text()


def test_a_baseline_dated_after_registered_samples_is_refused(tmp_path: Path) -> None:
    """Across files: a new baseline later than accepted post-dose samples, named in the report."""
    reason, report = _refused_after_the_trial(
        tmp_path, b"BL-P01,P01,recipient_baseline,2025-02-01T08:00:00Z,PB\n"
    )
    assert reason == (
        "impossible_date: 2 impossible date(s): P01-D01: 2025-01-11 09:00 UTC, "
        "P01-D02: 2025-01-12 09:00 UTC"
    )
    assert (
        "[sample_before_baseline] column 'collected_at', value 'P01-D01: 2025-01-11 09:00 UTC': "
        "post-dose sample of P01 collected before its baseline BL-P01 (2025-02-01 08:00 UTC)"
    ) in report


def test_a_post_dose_sample_before_a_registered_baseline_is_refused(tmp_path: Path) -> None:
    """Across files the other way: a new post-dose sample earlier than the registered baseline."""
    reason, report = _refused_after_the_trial(
        tmp_path, b"P01-D00,P01,post_dose,2025-01-01T08:00:00Z,PB\n"
    )
    assert reason == "impossible_date: 1 impossible date(s): P01-D00: 2025-01-01 08:00 UTC"
    assert "before its baseline BL-P01 (2025-01-08 08:00 UTC)" in report


def test_unknown_patients_and_samples_are_accepted_or_wait_with_a_reason(tmp_path: Path) -> None:
    """A dose for a patient with no manifest rows: accepted with a note. An export of unknown
    samples: waiting, naming them. The rest of the poll goes on."""
    settings = make_home(tmp_path)
    doses = infusion_csv() + f"P09,1,{FIRST_DOSE:%Y-%m-%dT%H:%M:%SZ},1.0e9,LOT-A\n".encode()
    put(
        settings.inbox,
        trial_files()
        | {"infusions.csv": doses, "gm_p09.txt": genemapper_table([("P09-D01", 20.0)])},
    )
    fates = _fates(poll(settings))
    assert fates["infusions.csv"] == (
        FileStatus.ACCEPTED,
        "no manifest rows yet for patient(s) P09",
    )
    assert fates["gm_p09.txt"] == (
        FileStatus.WAITING,
        "waiting for manifest rows for sample(s) P09-D01",
    )
    assert {fates[n][0] for n in trial_files() if n != "infusions.csv"} == {FileStatus.ACCEPTED}


def test_duplicate_sample_ids_inside_one_manifest_quarantine_it(tmp_path: Path) -> None:
    """One sample id twice in a manifest cannot be resolved: quarantined; others go on."""
    settings = make_home(tmp_path)
    doubled = manifest_csv() + b"P01-D01,P01,post_dose,2025-01-20T09:00:00Z,PB,4000,LOT-A\n"
    put(settings.inbox, {"manifest_doubled.csv": doubled, "infusions.csv": infusion_csv()})
    fates = _fates(poll(settings))
    assert fates["manifest_doubled.csv"][0] is FileStatus.QUARANTINED
    assert fates["manifest_doubled.csv"][1].startswith("schema_violation")
    assert fates["infusions.csv"][0] is FileStatus.ACCEPTED
