"""Issue 12 speed paths keep their guarantees: batch ingest, snapshots, batched checks, runs.

The batch (``chimera.batch``) holds every write back to one flush; a crash before or inside
the flush must leave no partial or duplicate rows. Whole-table reads come from snapshots
(``chimera.table_cache``) that must always show what the files hold. Frames of one contract
are validated in one pass; a bad frame must still be reported as itself.
"""

from __future__ import annotations

import dataclasses
import errno
import re
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_builders import LabTrial, appbio_text, infusion_csv, manifest_csv, sample
from pcr_builders import REFERENCE, QpcrPlate

from chimera import runs, table_cache
from chimera.batch import IngestBatch, Observed, StorageFailure, open_batch
from chimera.errors import ValidationFailedError
from chimera.prerequisites import resolve_sample_ids
from chimera.registry import read_registry
from chimera.runs import RunBook, run_files, supersession
from chimera.settings import Settings
from chimera.validation import check_deferred, deferred_validation, validate_frame, validate_many
from chimera.warehouse import CHIMERISM, INGEST_LOG, OBSERVATIONS, Warehouse
from schemas.base import polars_schema
from schemas.inputs import Manifest, QpcrWells
from schemas.vocab import FileStatus, Method, Role

INK = {"ink": 1.0}
PATIENT = {"patient": 1.0}
T = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _mix(ink: float) -> dict[str, float]:
    return {"ink": ink, "patient": 1.0 - ink}


def _two_patients(trial: LabTrial) -> None:
    rows = [
        sample("INK-REF", "LOT1", Role.DONOR_REFERENCE, product_lot="LOT1", specimen="iNK"),
        sample("INK-CAL", "LOT1", Role.CALIBRATOR, product_lot="LOT1", specimen="iNK"),
    ]
    for patient in ("P01", "P02"):
        rows += [
            sample(f"{patient}-BL", patient, Role.RECIPIENT_BASELINE, at=-5, wbc_per_ul=3000),
            sample(f"{patient}-D1", patient, Role.POST_DOSE, at=1, wbc_per_ul=2000),
            sample(f"{patient}-D2", patient, Role.POST_DOSE, at=8, wbc_per_ul=2000),
        ]
    doses = infusion_csv([("P01", 1, 0, "LOT1"), ("P02", 1, 0, "LOT1")])
    trial.ingest(trial.drop("manifest.csv", manifest_csv(rows)), trial.drop("doses.csv", doses))


def _plate(name: str, samples: dict[str, dict[str, float]], *, reference: bool) -> bytes:
    plate = QpcrPlate(name)
    plate.dna("INK-REF" if reference else "INK-CAL", INK, genomes=5_000)
    for sample_id, mix in samples.items():
        plate.dna(sample_id, mix, genomes=10_000)
    plate.add(None, REFERENCE, [None, None], task="ntc")
    return appbio_text(plate, experiment=name, run_end=name)


def test_a_calibrator_touches_only_its_plate_a_reference_only_patients_reading_it(
    tmp_path: Path,
) -> None:
    """A plate with P02's samples and the calibrator leaves P01's rows untouched; so does the
    product's registered reference on a new plate, because P01's own plates hold the product's
    wells of every target (issue 12: only plates lacking them read the reference everywhere)."""
    trial = LabTrial(tmp_path)
    _two_patients(trial)
    screen = _plate("screen", {"P01-BL": PATIENT, "P02-BL": PATIENT}, reference=True)
    first = _plate("week1", {"P01-D1": _mix(0.05), "P02-D1": _mix(0.04)}, reference=False)
    outcomes = trial.ingest(trial.drop("screen.txt", screen), trial.drop("week1.txt", first))
    assert {o.status for o in outcomes} == {FileStatus.ACCEPTED}
    p01 = (trial.settings.warehouse / CHIMERISM.name / "P01.parquet").stat().st_mtime_ns
    week2 = _plate("week2", {"P02-D2": _mix(0.02)}, reference=False)
    [second] = trial.ingest(trial.drop("week2.txt", week2))
    assert second.status is FileStatus.ACCEPTED
    assert second.patients == frozenset({"P02"})
    assert (trial.settings.warehouse / CHIMERISM.name / "P01.parquet").stat().st_mtime_ns == p01
    assert set(trial.chimerism()["sample_id"]) == {"P01-D1", "P02-D1", "P02-D2"}
    again = _plate("rescreen", {"P02-BL": PATIENT}, reference=True)
    [third] = trial.ingest(trial.drop("rescreen.txt", again))
    assert third.patients == frozenset({"P02"})
    assert (trial.settings.warehouse / CHIMERISM.name / "P01.parquet").stat().st_mtime_ns == p01


def test_a_crash_inside_the_flush_leaves_nothing_half_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raw rows written but no ledger: the re-run accepts each file once, rows not doubled."""
    trial = LabTrial(tmp_path)
    _two_patients(trial)
    files = [
        trial.drop("screen.txt", _plate("screen", {"P01-BL": PATIENT}, reference=True)),
        trial.drop("week1.txt", _plate("week1", {"P01-D1": _mix(0.05)}, reference=False)),
    ]
    real = Warehouse.append_log

    def crash(self: Warehouse, rows: pl.DataFrame) -> Path:
        msg = "power cut"
        raise OSError(msg)

    monkeypatch.setattr(Warehouse, "append_log", crash)
    with pytest.raises(StorageFailure, match="ledger: power cut"):
        trial.ingest(*files)
    stored = trial.warehouse.read(OBSERVATIONS[Method.QPCR])
    assert stored["source_sha256"].n_unique() == 2
    assert trial.warehouse.dirty_patients() == {"P01"}  # P02 is on neither plate
    monkeypatch.setattr(Warehouse, "append_log", real)
    outcomes = trial.ingest(*files)
    assert {o.status for o in outcomes} == {FileStatus.ACCEPTED}
    assert trial.warehouse.read(OBSERVATIONS[Method.QPCR]).height == stored.height
    accepted = trial.ledger().filter(pl.col("status") == FileStatus.ACCEPTED)
    assert accepted.filter(pl.col("file_name").str.ends_with(".txt")).height == 2
    assert trial.warehouse.dirty_patients() == set()
    assert trial.chimerism()["sample_id"].to_list() == ["P01-D1"]


def test_a_crash_before_the_flush_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until the flush a batch holds everything in memory: the warehouse stays as it was."""
    trial = LabTrial(tmp_path)
    _two_patients(trial)
    before = trial.ledger().height

    def crash(self: IngestBatch) -> None:
        msg = "killed"
        raise RuntimeError(msg)

    monkeypatch.setattr(IngestBatch, "flush", crash)
    plate = trial.drop("screen.txt", _plate("screen", {"P01-BL": PATIENT}, reference=True))
    with pytest.raises(RuntimeError, match="killed"):
        trial.ingest(plate)
    assert trial.ledger().height == before
    assert trial.warehouse.read(OBSERVATIONS[Method.QPCR]).height == 0
    assert plate.exists()


def test_a_batch_writes_one_ledger_file(tmp_path: Path) -> None:
    """Every event of a poll lands in one ledger file, each event a row in arrival order."""
    trial = LabTrial(tmp_path)
    _two_patients(trial)
    files = sorted((trial.settings.warehouse / INGEST_LOG.name).rglob("*.parquet"))
    assert len(files) == 1
    assert pl.read_parquet(files[0])["file_name"].to_list() == ["manifest.csv", "doses.csv"]


def _write(folder: Path, name: str, frame: pl.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(folder / f".{name}.tmp")
    (folder / f".{name}.tmp").replace(folder / name)


def test_snapshot_reads_always_show_what_the_files_hold(tmp_path: Path) -> None:
    """New, replaced and removed files (written by anyone) show; a stale snapshot is ignored."""
    folder, cache = tmp_path / "table", tmp_path / ".cache" / "table.snapshot"
    table_cache.forget(folder)
    for name, value in (("b.parquet", 2), ("a.parquet", 1), ("sub/c.parquet", 3)):
        _write(folder / Path(name).parent, Path(name).name, pl.DataFrame({"x": [value]}))
    assert table_cache.read_table(folder, cache, pl.read_parquet)["x"].to_list() == [1, 2, 3]
    assert table_cache.persist(cache, min_new_files=1)
    _write(folder, "b.parquet", pl.DataFrame({"x": [20, 21]}))
    (folder / "a.parquet").unlink()
    _write(folder, "d.parquet", pl.DataFrame({"x": [4]}))
    expected = [20, 21, 4, 3]
    assert table_cache.read_table(folder, cache, pl.read_parquet)["x"].to_list() == expected
    table_cache.forget(folder)  # a new process: only the persisted (now stale) copy
    assert table_cache.read_table(folder, cache, pl.read_parquet)["x"].to_list() == expected
    cache.write_bytes(cache.read_bytes() + b"\0")  # the snapshot file no longer matches its index
    table_cache.forget(folder)
    assert table_cache.read_table(folder, cache, pl.read_parquet)["x"].to_list() == expected


def test_warehouse_reads_match_the_files_after_batched_writes(tmp_path: Path) -> None:
    """Rows a batch wrote (handed to the snapshot, not read back) equal the files' rows."""
    trial = LabTrial(tmp_path)
    _two_patients(trial)
    plates = [
        trial.drop("screen.txt", _plate("screen", {"P01-BL": PATIENT}, reference=True)),
        trial.drop("week1.txt", _plate("week1", {"P01-D1": _mix(0.05)}, reference=False)),
    ]
    trial.ingest(*plates)
    for table in (CHIMERISM, OBSERVATIONS[Method.QPCR], INGEST_LOG):
        on_disk = pl.concat(
            [pl.read_parquet(p) for p in trial.warehouse.files(table)], how="diagonal_relaxed"
        )
        read = trial.warehouse.read(table).select(on_disk.columns)
        assert read.equals(on_disk)


def test_one_bad_frame_among_many_is_reported_as_itself() -> None:
    """Batched validation names the frame that breaks the contract, with its own rows."""
    good = pl.DataFrame(
        {
            "sample_id": ["S1"],
            "well": ["A1"],
            "target": ["M1"],
            "task": ["unknown"],
            "reporter": ["FAM"],
            "ct": [25.0],
            "omitted": [False],
            "quantity": [None],
            "slope": [None],
            "intercept": [None],
            "r_squared": [None],
            "efficiency_pct": [None],
            "source_row": [2],
        },
        schema_overrides={"source_row": pl.Int32, "quantity": pl.Float64, "slope": pl.Float64,
                          "intercept": pl.Float64, "r_squared": pl.Float64,
                          "efficiency_pct": pl.Float64},
    )  # fmt: skip
    bad = good.with_columns(ct=pl.lit(150.0), source_row=pl.lit(7, dtype=pl.Int32))
    assert validate_many([good, good], QpcrWells, file_names=["a", "b"])[1].equals(good)
    with pytest.raises(ValidationFailedError, match=r"^b: ") as caught:
        validate_many([good, bad, good], QpcrWells, file_names=["a", "b", "c"])
    assert [p.row for p in caught.value.problems] == [7]
    with deferred_validation() as first:
        assert validate_frame(good, QpcrWells, file_name="a") is good
    with deferred_validation() as second:
        validate_frame(bad, QpcrWells, file_name="b")
    errors = check_deferred([first, second])
    assert errors[0] is None
    assert errors[1] is not None and errors[1].problems[0].row == 7


def test_window_checks_are_never_batched() -> None:
    """A manifest (checks across a patient's rows) is validated at once, never deferred."""
    row = dict.fromkeys(polars_schema(Manifest)) | {
        "sample_id": "X",
        "patient_id": "P9",
        "role": "unknown_role",
    }
    manifest = pl.DataFrame([row], schema=polars_schema(Manifest))
    with deferred_validation() as deferred, pytest.raises(ValidationFailedError):
        validate_frame(manifest, Manifest, file_name="m.csv")
    assert deferred == []


_ID = st.text(alphabet="AP01-_.x", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(name=st.text(alphabet="AP01-_.x", max_size=14), known=st.sets(_ID, max_size=6))
def test_run_file_names_resolve_as_the_whole_token_search_does(name: str, known: set[str]) -> None:
    """The substring index finds exactly the ids a whole-token regex search finds."""
    stem = re.sub(r"\.(fsa|hid|ab1|eds|sds)$", "", name.strip(), flags=re.IGNORECASE)
    hits = [k for k in known if re.search(rf"(?<![A-Za-z0-9]){re.escape(k)}(?![A-Za-z0-9])", stem)]
    longest = [h for h in hits if not any(h != o and h in o for o in hits)]
    if name in known:
        expected = name
    elif stem in known:
        expected = stem
    else:
        expected = longest[0] if len(longest) == 1 else name
    resolved = resolve_sample_ids(pl.DataFrame({"sample_id": [name]}), known)
    assert resolved["sample_id"][0] == expected


def test_runs_built_file_by_file_equal_the_whole_table_rule(tmp_path: Path) -> None:
    """Adding files one at a time (what a batch does), even out of ingest order, groups them
    as supersession() does over the whole table."""
    trial = LabTrial(tmp_path)
    _two_patients(trial)
    first = _plate("week1", {"P01-D1": _mix(0.05)}, reference=False)
    corrected = first + b"\n"  # the same run exported again: new bytes, same wells
    trial.ingest(
        trial.drop("screen.txt", _plate("screen", {"P01-BL": PATIENT}, reference=True)),
        trial.drop("week1.txt", first),
    )
    [again] = trial.ingest(trial.drop("week1_again.txt", corrected))
    assert again.supersedes == "week1.txt"
    rows = trial.warehouse.read(OBSERVATIONS[Method.QPCR])
    book = RunBook(Method.QPCR)
    for file in reversed(run_files(rows, Method.QPCR)):
        book.add(file)
    table = supersession(rows, Method.QPCR)
    replaced = table.filter(pl.col("replaced_by").is_not_null())
    assert replaced["source_file"].to_list() == ["week1.txt"]
    assert {tuple(f.sha256 for f in run) for run in book.runs} == {
        tuple(group)
        for group in table.group_by(pl.coalesce("replaced_by", "source_sha256"))
        .agg(pl.col("source_sha256").sort_by("ingested_at"))["source_sha256"]
        .to_list()
    }
    assert read_registry(trial.warehouse).owned("P01", Role.POST_DOSE) == ["P01-D1", "P01-D2"]


RunRows = list[list[tuple[object, ...]]]
IndexState = dict[Method, tuple[set[str], dict[str, dict[str, set[str]]], RunRows]]


def _run_rows(book: RunBook) -> RunRows:
    return [
        [(f.sha256, f.name, f.ingested_at, f.run_id, f.layout, f.positions, f.link) for f in run]
        for run in book.runs
    ]


def _batch_index(trial: LabTrial) -> IndexState:
    """What a batch opened now knows of the stored assay files."""
    runs._summaries.clear()
    with open_batch(trial.settings) as batch:
        return {
            m: (o.sources, o.targets.by_file, _run_rows(batch.runs(m)))
            for m, o in batch.observed.items()
        }


def _indexed_rows(trial: LabTrial) -> IndexState:
    """The same, from every stored row (no kept index, no kept run summaries)."""
    runs._summaries.clear()
    found: IndexState = {}
    for method, table in OBSERVATIONS.items():
        rows = trial.warehouse.read(table)
        observed = Observed()
        observed.add(rows)
        book = RunBook(method, run_files(rows, method) if rows.height else [])
        found[method] = (observed.sources, observed.targets.by_file, _run_rows(book))
    return found


def _new_process(trial: LabTrial) -> None:
    for table in OBSERVATIONS.values():
        table_cache.forget(trial.warehouse.folder(table))


def test_the_kept_assay_index_equals_indexing_every_row_however_stale_or_damaged(
    tmp_path: Path,
) -> None:
    """The batch's index of the stored assay files, kept in .cache/ between runs, equals the
    index of every stored row: kept in memory, persisted and stale (files added since), fully
    persisted, damaged (garbage, a truncated index) or swapped for an older copy."""
    trial = LabTrial(tmp_path)
    _two_patients(trial)
    first = _plate("week1", {"P01-D1": _mix(0.05)}, reference=False)
    trial.ingest(
        trial.drop(
            "screen.txt", _plate("screen", {"P01-BL": PATIENT, "P02-BL": PATIENT}, reference=True)
        ),
        trial.drop("week1.txt", first),
    )
    cache = trial.settings.warehouse / ".cache"
    assert table_cache.persist_under(cache, min_new_files=1)
    views = sorted(cache.glob("observations_qpcr.*-v*"))
    assert len(views) == 4  # two views (wells, run summaries), each a snapshot and its index
    older = {p: p.read_bytes() for p in views}
    trial.ingest(
        trial.drop("week1_again.txt", first + b"\n"),
        trial.drop("week2.txt", _plate("week2", {"P02-D2": _mix(0.02)}, reference=False)),
    )
    expected = _indexed_rows(trial)
    assert len(expected[Method.QPCR][2]) == 3  # screen, week1 + its re-export, week2
    assert _batch_index(trial) == expected  # in memory, rows handed over by the flush
    _new_process(trial)
    assert _batch_index(trial) == expected  # the persisted copy lacks two files
    assert table_cache.persist_under(cache, min_new_files=1)
    _new_process(trial)
    assert _batch_index(trial) == expected  # all from the persisted copy
    for damage in (b"garbage", b""):
        for path in views:
            path.write_bytes(damage)
        _new_process(trial)
        assert _batch_index(trial) == expected
    for path, data in older.items():  # an older snapshot with a newer index, and vice versa
        if path.suffix != ".json":
            path.write_bytes(data)
    _new_process(trial)
    assert _batch_index(trial) == expected


def test_a_copied_warehouse_or_a_lost_index_touches_the_same_patients_and_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new plate into a copy of the warehouse (new inodes: the kept views of raw files still
    hold, no file is derived again) and into one without .cache/ is accepted alike: same
    patients, same rows."""
    trial = LabTrial(tmp_path / "a")
    _two_patients(trial)
    trial.ingest(
        trial.drop(
            "screen.txt", _plate("screen", {"P01-BL": PATIENT, "P02-BL": PATIENT}, reference=True)
        ),
        trial.drop("week1.txt", _plate("week1", {"P01-D1": _mix(0.05)}, reference=False)),
    )
    table_cache.persist_under(trial.settings.warehouse / ".cache", min_new_files=1)
    copies = []
    for name, keep_cache in (("copy", True), ("lost", False)):
        other = LabTrial(tmp_path / name)
        shutil.copytree(trial.settings.home, other.settings.home, dirs_exist_ok=True)
        if not keep_cache:
            shutil.rmtree(other.settings.warehouse / ".cache")
        other.now = trial.now
        copies.append(other)
    derived: list[pl.DataFrame] = []
    real = table_cache.View.of

    def counted(view: table_cache.View, rows: pl.DataFrame) -> pl.DataFrame:
        derived.append(rows)
        return real(view, rows)

    monkeypatch.setattr(table_cache.View, "of", counted)
    _batch_index(copies[0])
    assert derived == []  # every file (and its facts) came from the copied .cache/
    _batch_index(copies[1])
    assert derived  # without .cache/: read and derived again
    monkeypatch.undo()
    plate = _plate("week2", {"P02-D2": _mix(0.02)}, reference=True)
    found = []
    for each in (trial, *copies):
        [outcome] = each.ingest(each.drop("week2.txt", plate))
        rows = each.chimerism().drop("ingested_at").sort("sample_id", "source_sha256")
        found.append((outcome.status, outcome.patients, rows))
    assert found[0][1] == frozenset({"P02"})
    for status, patients, rows in found[1:]:
        assert (status, patients) == found[0][:2]
        assert rows.equals(found[0][2])


def test_a_crash_while_a_snapshot_is_written_is_never_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot file replaced, its index not (a crash between the two renames): the next
    process finds the index does not describe the file and reads the table files instead."""
    folder, cache = tmp_path / "table", tmp_path / ".cache" / "table.snapshot"
    _write(folder, "a.parquet", pl.DataFrame({"x": [1]}))
    table_cache.forget(folder)
    table_cache.read_table(folder, cache, pl.read_parquet)
    assert table_cache.persist(cache, min_new_files=1)
    _write(folder, "b.parquet", pl.DataFrame({"x": [2]}))

    def crash(path: Path, data: object) -> None:
        msg = "power cut"
        raise OSError(msg)

    monkeypatch.setattr(table_cache, "_write_json", crash)
    with pytest.raises(OSError, match="power cut"):
        table_cache.persist(cache, min_new_files=1)
    assert sorted(p.name for p in cache.parent.iterdir()) == [
        "table.snapshot",
        "table.snapshot.json",
    ]
    (folder / "b.parquet").unlink()  # the new snapshot holds b, the old index does not
    table_cache.forget(folder)
    assert table_cache.read_table(folder, cache, pl.read_parquet)["x"].to_list() == [1]


def test_a_big_batch_writes_its_raw_files_in_threads_and_names_the_first_failure_12(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``pool_min_files`` files the raw rows are written by threads; a failed write still
    stops the flush naming its file (the first failure in order), the files before it stored."""
    settings = Settings().with_home(tmp_path / "home")
    settings = dataclasses.replace(
        settings, scale=dataclasses.replace(settings.scale, workers=2, pool_min_files=3)
    )
    table = OBSERVATIONS[Method.QPCR]
    parts = [(table, f"sha{i}", pl.DataFrame({"x": [i]}), f"plate{i}.txt") for i in range(8)]
    written: dict[str, str] = {}

    def store(self: Warehouse, _: object, sha: str, rows: pl.DataFrame) -> None:
        if sha in {"sha5", "sha6"}:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[sha] = threading.current_thread().name

    monkeypatch.setattr(Warehouse, "store", store)
    with open_batch(settings) as batch:
        with pytest.raises(StorageFailure, match=re.escape("plate5.txt: the disk is full")):
            batch._store(parts)
        assert {f"sha{i}" for i in range(5)} <= set(written)
        assert all(name.startswith("chimera-write") for name in written.values())
        written.clear()
        batch._store(parts[:2])  # below the threshold: in this thread
        assert set(written.values()) == {threading.current_thread().name}
