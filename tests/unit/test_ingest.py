"""End-to-end behaviour of the ingest path on the published Rchimerism example."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from typer.testing import CliRunner

from chimera import source_file
from chimera.cli import app
from chimera.detect import DecodedExport, detect_format
from chimera.ingest import ingest_source
from chimera.poll import ingest_paths, processing_order
from chimera.prerequisites import assay_sample_ids, resolve_sample_ids
from chimera.registry import read_ledger
from chimera.settings import Settings
from chimera.source_file import SourceFile
from chimera.warehouse import Warehouse, sha256_of
from schemas.vocab import FileStatus

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
MANIFEST = (
    "sample_id,patient_id,role,collected_at,specimen,wbc_per_ul\n"
    "LOT1-REF,LOT1,donor_reference,,iNK product,\n"
    "P01-BL,P01,recipient_baseline,2025-03-01T08:00:00Z,peripheral blood,3000\n"
    "P01-D1,P01,post_dose,2025-03-04T09:00:00Z,peripheral blood,2500\n"
)
INFUSIONS = "patient_id,dose_number,infused_at,cells\nP01,1,2025-03-03T10:00:00Z,5e8\n"


class Clock:
    """A clock that moves one second per call (deterministic ledger order)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def trial(real_exports: Path, tmp_path: Path) -> dict[str, Path]:
    """The Rchimerism single-donor example renamed to manifest sample ids."""
    source = real_exports / "genemapper"
    folder = tmp_path / "drop"
    folder.mkdir()
    files = {}
    for key, name, sample in [
        ("donor", "rchimerism_single_donor_ddata_donor.txt", "LOT1-REF"),
        ("baseline", "rchimerism_single_donor_rdata_recipient.txt", "P01-BL"),
        ("sample", "rchimerism_single_donor_sdata_posttransplant.txt", "P01-D1"),
    ]:
        data = (source / name).read_bytes().replace(b"\txxxx\t", f"\t{sample}\t".encode())
        files[key] = folder / f"{key}.txt"
        files[key].write_bytes(data)
    files["manifest"] = folder / "manifest.csv"
    files["manifest"].write_text(MANIFEST)
    files["infusions"] = folder / "infusions.csv"
    files["infusions"].write_text(INFUSIONS)
    return files


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings().with_home(tmp_path / "data")


def _chimerism(settings: Settings) -> pl.DataFrame:
    return pl.scan_parquet(str(settings.warehouse / "chimerism" / "**" / "*.parquet")).collect()


def test_str_example_end_to_end(trial: dict[str, Path], settings: Settings) -> None:
    """The Rchimerism example lands as one STR row of 99.90 % with study day and lineage."""
    outcomes = ingest_paths(list(trial.values()), settings=settings, clock=Clock(), move=False)
    assert [o.status for o in outcomes] == [FileStatus.ACCEPTED] * 5
    rows = _chimerism(settings)
    assert rows.height == 1
    row = rows.row(0, named=True)
    assert row["pct_ink"] == pytest.approx(99.90, abs=0.005)
    assert row["n_informative"] == 10
    assert row["result_status"] == "quantified"
    assert row["study_day"] == 1  # calendar day after the first infusion (2025-03-03)
    assert row["source_sha256"] == sha256_of(trial["sample"].read_bytes())
    assert row["ink_cells_per_ul"] == pytest.approx(2500 * row["pct_ink"] / 100)
    markers = pl.scan_parquet(str(settings.warehouse / "markers" / "**" / "*.parquet")).collect()
    d7 = markers.filter(pl.col("marker") == "D7S820").row(0, named=True)
    assert d7["included"] is False
    assert d7["pct_ink"] == pytest.approx(71.99, abs=0.01)
    assert all(path.exists() for path in trial.values()), "explicit paths are copied, not moved"


def test_tables_read_with_polars_and_duckdb(trial: dict[str, Path], settings: Settings) -> None:
    """Every table written is readable by scan_parquet and by DuckDB with hive partitioning."""
    ingest_paths(list(trial.values()), settings=settings, clock=Clock(), move=False)
    for table in ("chimerism", "markers", "ingest_log", "samples", "infusions", "observations_str"):
        pattern = str(settings.warehouse / table / "**" / "*.parquet")
        n_polars = pl.scan_parquet(pattern).select(pl.len()).collect().item()
        n_duck = duckdb.sql(
            f"select count(*) from read_parquet('{pattern}', hive_partitioning=true)"
        ).fetchall()
        assert n_polars == n_duck[0][0] > 0


def test_reingesting_the_same_files_adds_nothing(
    trial: dict[str, Path], settings: Settings
) -> None:
    """A second run over the same bytes reports duplicates and leaves the tables unchanged."""
    clock = Clock()
    ingest_paths(list(trial.values()), settings=settings, clock=clock, move=False)
    before = _chimerism(settings)
    again = ingest_paths(list(trial.values()), settings=settings, clock=clock, move=False)
    assert {o.status for o in again} == {FileStatus.DUPLICATE}
    assert _chimerism(settings).equals(before)
    ledger = read_ledger(Warehouse(settings.warehouse))
    assert ledger.filter(pl.col("status") == "accepted").height == 5


def test_same_bytes_under_another_name_is_a_logged_duplicate(
    trial: dict[str, Path], settings: Settings, tmp_path: Path
) -> None:
    """A copy of an accepted export with a new name is logged duplicate and archived."""
    clock = Clock()
    ingest_paths(list(trial.values()), settings=settings, clock=clock, move=False)
    copy = tmp_path / "copy_of_sample.txt"
    copy.write_bytes(trial["sample"].read_bytes())
    outcome = ingest_source(copy, settings=settings, now=clock(), move=True)
    assert outcome.status is FileStatus.DUPLICATE
    assert "sample.txt" in (outcome.reason or "")
    assert not copy.exists()
    assert outcome.destination is not None and outcome.destination.exists()
    ledger = read_ledger(Warehouse(settings.warehouse))
    assert ledger.filter(pl.col("status") == "duplicate")["file_name"].to_list() == [
        "copy_of_sample.txt"
    ]


def test_assay_before_manifest_waits_then_is_accepted(
    trial: dict[str, Path], settings: Settings
) -> None:
    """An export whose samples are in no manifest waits, saying what for, until the manifest arrives."""
    clock = Clock()
    first = ingest_source(trial["sample"], settings=settings, now=clock(), move=False)
    assert first.status is FileStatus.WAITING
    assert "P01-D1" in (first.reason or "")
    ingest_source(trial["manifest"], settings=settings, now=clock(), move=False)
    second = ingest_source(trial["sample"], settings=settings, now=clock(), move=False)
    assert second.status is FileStatus.WAITING
    assert "baseline" in (second.reason or "") and "LOT1" in (second.reason or "")
    for key in ("donor", "baseline", "sample"):
        outcome = ingest_source(trial[key], settings=settings, now=clock(), move=False)
        assert outcome.status is FileStatus.ACCEPTED
    assert _chimerism(settings)["sample_id"].to_list() == ["P01-D1"]


def test_waiting_too_long_is_quarantined(trial: dict[str, Path], settings: Settings) -> None:
    """After the waiting time-out the export goes to quarantine with a report."""
    ingest_source(trial["sample"], settings=settings, now=T0, move=False)
    late = T0 + timedelta(hours=settings.inbox_rules.waiting_timeout_hours + 1)
    outcome = ingest_source(trial["sample"], settings=settings, now=late, move=False)
    assert outcome.status is FileStatus.QUARANTINED
    assert outcome.reason is not None and outcome.reason.startswith("waited_too_long")
    report = Path(f"{outcome.destination}.problems.txt")
    assert "manifest rows for sample(s) P01-D1" in report.read_text()


def test_corrected_reexport_supersedes_and_keeps_old_rows(
    trial: dict[str, Path], settings: Settings, tmp_path: Path
) -> None:
    """A corrected export of the same sample replaces the current row; the old row stays, flagged."""
    clock = Clock()
    ingest_paths(list(trial.values()), settings=settings, clock=clock, move=False)
    corrected = tmp_path / "sample_corrected.txt"
    corrected.write_bytes(trial["sample"].read_bytes().replace(b"\t5730\t", b"\t2865\t"))
    outcome = ingest_source(corrected, settings=settings, now=clock(), move=False)
    assert outcome.status is FileStatus.ACCEPTED
    assert outcome.supersedes == "sample.txt"
    rows = _chimerism(settings).sort("superseded")
    assert rows["superseded"].to_list() == [False, True]
    assert rows["source_file"].to_list() == ["sample_corrected.txt", "sample.txt"]
    ledger = read_ledger(Warehouse(settings.warehouse))
    assert (
        "supersedes sample.txt"
        in ledger.filter(pl.col("file_name") == "sample_corrected.txt")["reason"][0]
    )


def test_bad_files_are_quarantined_with_reports(tmp_path: Path, settings: Settings) -> None:
    """Unknown content and a broken manifest go to quarantine with a problems report each."""
    unknown = tmp_path / "notes.txt"
    unknown.write_text("Dear lab, here are the results\n")
    broken = tmp_path / "manifest.csv"
    broken.write_text(MANIFEST.replace("post_dose", "after dose"))
    outcomes = ingest_paths([unknown, broken], settings=settings, clock=Clock(), move=True)
    assert [o.status for o in outcomes] == [FileStatus.QUARANTINED, FileStatus.QUARANTINED]
    assert outcomes[0].reason_code == "unrecognised_format"
    assert outcomes[1].reason_code == "schema_violation"
    text = (settings.quarantine / "manifest.csv.problems.txt").read_text()
    assert "row 4" in text and "after dose" in text and "role" in text
    assert (settings.quarantine / "manifest.csv.failures.parquet").exists()
    assert not unknown.exists() and (settings.quarantine / "notes.txt").exists()


def test_cli_ingest_exit_codes(trial: dict[str, Path], tmp_path: Path) -> None:
    """Exit 0 when all accepted, 3 when one is rejected, 2 on a usage error; never a traceback."""
    runner = CliRunner()
    home = tmp_path / "cli-home"
    ok = runner.invoke(app, ["ingest", *map(str, trial.values()), "--home", str(home)])
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,patient_id,role\nX,P9,unknown_role\n")
    rejected = runner.invoke(app, ["ingest", str(bad), "--home", str(home)])
    assert rejected.exit_code == 3
    assert "quarantined" in rejected.output and "Traceback" not in rejected.output
    usage = runner.invoke(app, ["ingest", str(tmp_path / "missing.txt"), "--home", str(home)])
    assert usage.exit_code == 2


def test_cli_query_sees_tables_and_each_files_latest_fate(
    trial: dict[str, Path], tmp_path: Path
) -> None:
    """`chimera query` exposes every table and the file_status view (one row per file)."""
    runner = CliRunner()
    home = tmp_path / "q-home"
    sample = trial.pop("sample")
    runner.invoke(app, ["ingest", str(sample), "--home", str(home)])  # waits: no manifest yet
    runner.invoke(app, ["ingest", *map(str, trial.values()), str(sample), "--home", str(home)])
    result = runner.invoke(
        app,
        [
            "query",
            "select file_name, status from file_status order by file_name",
            "--csv",
            "--home",
            str(home),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "file_name,status"
    assert "sample.txt,accepted" in lines
    assert len(lines) == 1 + 5
    events = runner.invoke(
        app,
        [
            "query",
            "select count(*) as n from ingest_log where file_name = 'sample.txt'",
            "--csv",
            "--home",
            str(home),
        ],
    )
    assert events.output.strip().splitlines()[1] == "2"  # waiting, then accepted


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("P01-D1", "P01-D1"),
        ("P01-D1.fsa", "P01-D1"),
        ("A01_P01-D1_2025-03-04.fsa", "P01-D1"),
        ("A02_P01-D1-PRE.fsa", "P01-D1-PRE"),
        ("A03_P01-D10.fsa", "A03_P01-D10.fsa"),
        ("P01-D1_P01-BL.fsa", "P01-D1_P01-BL.fsa"),
    ],
)
def test_sample_names_embedding_a_manifest_id_are_resolved(name: str, expected: str) -> None:
    """Run-file names map to the one manifest id they contain; unknown or ambiguous names stay."""
    frame = pl.DataFrame({"sample_id": [name]})
    known = {"P01-D1", "P01-D1-PRE", "P01-BL"}
    assert resolve_sample_ids(frame, known)["sample_id"][0] == expected


def test_sizing_table_named_by_run_file_is_ingested(
    trial: dict[str, Path], settings: Settings
) -> None:
    """A sizing table whose Sample File Name is the .fsa run file still finds its manifest row."""
    data = trial["sample"].read_bytes().replace(b"\tP01-D1\t", b"\tB07_P01-D1_run12.fsa\t")
    trial["sample"].write_bytes(data)
    outcomes = ingest_paths(list(trial.values()), settings=settings, clock=Clock(), move=False)
    assert {o.status for o in outcomes} == {FileStatus.ACCEPTED}
    assert _chimerism(settings)["sample_id"].to_list() == ["P01-D1"]


def test_named_ntc_wells_need_no_manifest_row() -> None:
    """PCR wells named NTC/H2O/water are controls; patient samples still need the manifest."""
    frame = pl.DataFrame(
        {
            "sample_id": ["NTC", "H2O-2", "Water", "neg ctrl", "P01-D1", "NTCP-7"],
            "task": ["unknown"] * 6,
        }
    )
    assert assay_sample_ids(frame) == ["NTCP-7", "P01-D1"]


def test_absolute_count_falls_back_to_lymphocytes(
    trial: dict[str, Path], settings: Settings
) -> None:
    """Without a WBC count, iNK cells/µL use the manifest's lymphocyte count."""
    trial["manifest"].write_text(
        MANIFEST.replace("wbc_per_ul", "lymphocytes_per_ul").replace(",2500\n", ",800\n")
    )
    ingest_paths(list(trial.values()), settings=settings, clock=Clock(), move=False)
    row = _chimerism(settings).row(0, named=True)
    assert row["ink_cells_per_ul"] == pytest.approx(800 * row["pct_ink"] / 100)


def test_each_file_is_read_and_detected_once_12(
    trial: dict[str, Path], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ordering and a waiting file's retry reuse the bytes and the detection read the first time."""
    folder = trial["sample"].parent
    renamed = {"sample": "1_sample.txt", "donor": "2_donor.txt", "baseline": "3_baseline.txt"}
    for key, name in renamed.items():
        trial[key] = trial[key].rename(folder / name)  # the post-dose file is tried first: waits
    reads: Counter[str] = Counter()
    detections: Counter[bytes] = Counter()
    read_bytes, detect = Path.read_bytes, source_file.detect

    def counting_read(path: Path) -> bytes:
        reads[path.name] += 1
        return read_bytes(path)

    def counting_detect(data: bytes, *, file_name: str) -> DecodedExport:
        detections[data] += 1
        return detect(data, file_name=file_name)

    monkeypatch.setattr(Path, "read_bytes", counting_read)
    monkeypatch.setattr(source_file, "detect", counting_detect)
    outcomes = ingest_paths(list(trial.values()), settings=settings, clock=Clock(), move=False)
    assert [o.status for o in outcomes] == [FileStatus.ACCEPTED] * 5
    waited = read_ledger(Warehouse(settings.warehouse)).filter(
        pl.col("file_name") == "1_sample.txt"
    )
    assert waited["status"].to_list() == ["waiting", "accepted"]
    assert {name: reads[name] for name in (p.name for p in trial.values())} == dict.fromkeys(
        (p.name for p in trial.values()), 1
    )
    assert sorted(detections.values()) == [1] * 5


def test_processing_order_uses_the_detections_it_is_given(
    real_exports: Path, tmp_path: Path
) -> None:
    """Registry files go first, then assays, then unrecognised files; no file is opened."""
    manifest = MANIFEST.encode()
    genemapper = (
        real_exports / "genemapper" / "rchimerism_single_donor_ddata_donor.txt"
    ).read_bytes()
    gone = [tmp_path / "a_str.txt", tmp_path / "b_manifest.csv", tmp_path / "c_notes.txt"]
    sources = [
        SourceFile(gone[0], genemapper, sha256_of(genemapper), detect_format(genemapper)),
        SourceFile(gone[1], manifest, sha256_of(manifest), detect_format(manifest)),
        SourceFile(gone[2], b"notes", sha256_of(b"notes"), None),
    ]
    assert not any(p.exists() for p in gone)
    assert [s.name for s in processing_order(sources)] == [
        "b_manifest.csv",
        "a_str.txt",
        "c_notes.txt",
    ]
