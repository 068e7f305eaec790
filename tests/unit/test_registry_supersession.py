"""Issue 9 section 1: only a re-export of the same run supersedes; repeat measurements are kept.

Plates are built from genome copy numbers (``pcr_builders``), written as QuantStudio text or
QuantaSoft exports and ingested through the real path. Every plate carries the controls labs
put on every plate (the 100 % calibrator ``INK-CAL``, the patient's baseline as a 0 % control,
NTC wells), under the same ids.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from ingest_builders import (
    LabTrial,
    appbio_text,
    infusion_csv,
    manifest_csv,
    quantasoft_csv,
    sample,
)
from pcr_builders import DdpcrPlate, QpcrPlate

from chimera.registry import mark_repeat_measurements
from chimera.runs import supersession
from schemas.vocab import FileStatus, Method, QcVerdict, ResultStatus, Role

TRUE_PCT = {"P01-D1": 10.0, "P01-D2": 4.0, "P01-D3": 1.0, "P01-D4": 20.0}
MANIFEST = manifest_csv(
    [
        sample("INK-CAL", "LOT1", Role.CALIBRATOR, product_lot="LOT1", specimen="iNK product"),
        sample("P01-BL", "P01", Role.RECIPIENT_BASELINE, at=-3, wbc_per_ul=5000),
        *(
            sample(sid, "P01", Role.POST_DOSE, at=n, wbc_per_ul=4000)
            for n, sid in enumerate(TRUE_PCT, start=1)
        ),
    ]
)
INFUSIONS = infusion_csv([("P01", 1, 0, "LOT1")])


def qpcr_plate(name: str, samples: dict[str, float], *, genomes: float = 10_000) -> QpcrPlate:
    """A follow-up plate: controls plus each post-dose sample at its % iNK."""
    plate = QpcrPlate(name)
    plate.controls()
    for sample_id, pct in samples.items():
        plate.dna(sample_id, {"ink": pct / 100, "patient": 1 - pct / 100}, genomes=genomes)
    return plate


def ddpcr_plate(name: str, samples: dict[str, float]) -> DdpcrPlate:
    """A duplex ddPCR plate (iNK-M1 + RPP30) with the same controls and NTC wells."""
    plate = DdpcrPlate(name)
    plate.dna("INK-CAL", {"ink": 1.0})
    plate.dna("P01-BL", {"patient": 1.0})
    for sample_id, pct in samples.items():
        plate.dna(sample_id, {"ink": pct / 100, "patient": 1 - pct / 100})
    for _ in range(2):
        plate.counts(None, "iNK-M1", 0, 0)
    return plate


def _registry(trial: LabTrial) -> list[Path]:
    return [trial.drop("manifest.csv", MANIFEST), trial.drop("infusions.csv", INFUSIONS)]


def _current(trial: LabTrial, method: Method) -> pl.DataFrame:
    return trial.chimerism().filter((pl.col("method") == method) & ~pl.col("superseded"))


@pytest.mark.parametrize("method", [Method.QPCR, Method.DDPCR])
def test_recurring_control_ids_on_three_plates_supersede_nothing(
    tmp_path: Path, method: Method
) -> None:
    """Calibrator, baseline and NTC ids repeat on three plates: each plate's results stay valid.

    Fails on 460ddff: every later plate was taken as a re-export of the earlier ones, whose
    results became failed ("no calibrator", "the iNK product was not tested").
    """
    trial = LabTrial(tmp_path)
    layouts = [{"P01-D1": 10.0}, {"P01-D2": 4.0}, {"P01-D3": 1.0, "P01-D4": 20.0}]
    paths = _registry(trial)
    for i, layout in enumerate(layouts, start=1):
        if method == Method.QPCR:
            data = appbio_text(qpcr_plate(f"p{i}", layout), experiment=f"QP{i}", run_end=f"r{i}")
        else:
            data = quantasoft_csv(ddpcr_plate(f"p{i}", layout))
        paths.append(trial.drop(f"plate{i}.txt", data))
    outcomes = [trial.ingest_one(path) for path in paths]
    assert [o.status for o in outcomes] == [FileStatus.ACCEPTED] * 5
    assert [o.supersedes for o in outcomes] == [None] * 5
    rows = _current(trial, method)
    assert sorted(rows["sample_id"]) == sorted(TRUE_PCT)
    assert set(rows["result_status"]) <= {ResultStatus.QUANTIFIED, ResultStatus.BELOW_LOQ}
    assert trial.chimerism().filter(pl.col("superseded")).height == 0
    by_file = dict(rows.select("sample_id", "source_file").iter_rows())
    assert by_file == {"P01-D1": "plate1.txt", "P01-D2": "plate2.txt", "P01-D3": "plate3.txt",
                       "P01-D4": "plate3.txt"}  # fmt: skip
    for sample_id, pct in rows.select("sample_id", "pct_ink").iter_rows():
        assert pct == pytest.approx(TRUE_PCT[sample_id], rel=0.25)


def test_reexport_with_the_same_header_run_id_supersedes_and_the_ledger_names_it(
    tmp_path: Path,
) -> None:
    """The same Experiment Name and run end time, one bubble well left out: the same run.

    The layouts differ (a well fewer), so only the header says it is the same plate.
    """
    trial = LabTrial(tmp_path)
    plate = qpcr_plate("p1", {"P01-D1": 10.0, "P01-D2": 4.0})
    original = appbio_text(plate, experiment="QP2601A", run_end="2026-01-09 15:02:50 PM UTC")
    plate.rows = [r for r in plate.rows if r["well"] != "B2"]  # a P01-D1 S07 replicate
    again = appbio_text(plate, experiment="QP2601A", run_end="2026-01-09 15:02:50 PM UTC")
    paths = [*_registry(trial), trial.drop("QP2601A.txt", original)]
    trial.ingest(*paths)
    outcome = trial.ingest_one(trial.drop("QP2601A_reexport.txt", again))
    assert outcome.status is FileStatus.ACCEPTED
    assert outcome.supersedes == "QP2601A.txt"
    assert outcome.reason is not None and "same run id" in outcome.reason
    logged = trial.ledger().filter(pl.col("file_name") == "QP2601A_reexport.txt")
    assert logged["supersedes"].to_list() == ["QP2601A.txt"]
    rows = trial.chimerism().filter(pl.col("method") == Method.QPCR)
    current = rows.filter(~pl.col("superseded"))
    assert set(current["source_file"]) == {"QP2601A_reexport.txt"}
    assert sorted(current["sample_id"]) == ["P01-D1", "P01-D2"]
    old = rows.filter(pl.col("superseded"))
    assert sorted(old["sample_id"]) == ["P01-D1", "P01-D2"]
    assert set(old["source_file"]) == {"QP2601A.txt"}
    assert all("replaced by QP2601A_reexport.txt" in r for r in old["superseded_reason"])
    assert not old["is_headline"].any()


def test_reanalysis_without_a_run_id_supersedes_by_its_wells_and_samples(tmp_path: Path) -> None:
    """A QuantaSoft re-analysis (no plate id in the export) with the same wells: same plate."""
    trial = LabTrial(tmp_path)
    plate = ddpcr_plate("p1", {"P01-D1": 10.0})
    original = quantasoft_csv(plate)
    for row in plate.rows:
        row["positives"] = int(str(row["positives"])) + 3  # lower thresholds: more positives
    trial.ingest(*_registry(trial), trial.drop("DP01.csv", original))
    outcome = trial.ingest_one(trial.drop("DP01_reanalysed.csv", quantasoft_csv(plate)))
    assert outcome.supersedes == "DP01.csv"
    assert outcome.reason is not None and "same wells, samples and targets" in outcome.reason
    current = _current(trial, Method.DDPCR)
    assert current["source_file"].to_list() == ["DP01_reanalysed.csv"]


def test_identical_layouts_with_different_run_ids_are_two_runs(tmp_path: Path) -> None:
    """Two runs of one plate layout (different header ids) are a repeat measurement, kept both."""
    trial = LabTrial(tmp_path)
    first = appbio_text(qpcr_plate("a", {"P01-D1": 10.0}), experiment="QP-A", run_end="t1")
    second = appbio_text(qpcr_plate("b", {"P01-D1": 10.0}), experiment="QP-B", run_end="t2")
    trial.ingest(*_registry(trial), trial.drop("a.txt", first))
    outcome = trial.ingest_one(trial.drop("b.txt", second))
    assert outcome.supersedes is None
    rows = trial.chimerism().filter(pl.col("sample_id") == "P01-D1")
    assert sorted(rows["source_file"]) == ["a.txt", "b.txt"]
    assert rows.filter(~pl.col("superseded"))["source_file"].to_list() == ["b.txt"]


def test_repeat_measurement_keeps_both_rows_and_the_later_is_current(tmp_path: Path) -> None:
    """P01-D2 measured again on a later plate: both rows kept, the later current, reasons say so."""
    trial = LabTrial(tmp_path)
    a = appbio_text(qpcr_plate("a", {"P01-D1": 10.0, "P01-D2": 4.0}), experiment="A", run_end="1")
    b = appbio_text(qpcr_plate("b", {"P01-D2": 4.0, "P01-D3": 1.0}), experiment="B", run_end="2")
    trial.ingest(*_registry(trial), trial.drop("plateA.txt", a))
    later = trial.ingest_one(trial.drop("plateB.txt", b))
    assert later.supersedes is None
    rows = trial.chimerism().filter(pl.col("sample_id") == "P01-D2").sort("source_file")
    assert rows["source_file"].to_list() == ["plateA.txt", "plateB.txt"]
    assert rows["superseded"].to_list() == [True, False]
    assert rows["is_headline"].to_list() == [False, True]
    current = rows.row(1, named=True)
    assert "repeat measurement: current = plateB.txt (later); plateA.txt kept" in (
        current["qc_reasons"] or ""
    )
    assert rows["superseded_reason"][0] == "repeat measurement: plateB.txt is current (later)"
    others = trial.chimerism().filter(pl.col("sample_id") != "P01-D2")
    assert not others["superseded"].any()


def test_a_failed_later_repeat_leaves_the_earlier_current(tmp_path: Path) -> None:
    """The later plate's P01-D2 has too little DNA (reference Ct > 32): the earlier stays current."""
    trial = LabTrial(tmp_path)
    a = appbio_text(qpcr_plate("a", {"P01-D2": 4.0}), experiment="A", run_end="1")
    plate_b = qpcr_plate("b", {"P01-D3": 1.0})
    plate_b.dna("P01-D2", {"ink": 0.04, "patient": 0.96}, genomes=2)
    b = appbio_text(plate_b, experiment="B", run_end="2")
    trial.ingest(*_registry(trial), trial.drop("plateA.txt", a), trial.drop("plateB.txt", b))
    rows = trial.chimerism().filter(pl.col("sample_id") == "P01-D2").sort("source_file")
    assert rows["result_status"].to_list() == [ResultStatus.QUANTIFIED, ResultStatus.FAILED]
    assert rows["superseded"].to_list() == [False, True]
    current = rows.row(0, named=True)
    assert current["qc_verdict"] != QcVerdict.FAIL
    assert "the latest that did not fail QC" in (current["qc_reasons"] or "")
    assert "plateB.txt failed QC" in (current["qc_reasons"] or "")
    assert "plateA.txt is current" in (rows["superseded_reason"][1] or "")


def _observations(files: dict[str, tuple[str | None, list[str]]]) -> pl.DataFrame:
    """Raw PCR rows: file -> (header run id, wells); every well holds sample S on target M."""
    rows = [
        {"source_sha256": sha, "source_file": f"{sha}.txt", "run_id": run_id, "well": w,
         "sample_id": "S", "target": "M", "ingested_at": datetime(2026, 1, i + 1, tzinfo=UTC)}
        for i, (sha, (run_id, wells)) in enumerate(files.items())
        for w in wells
    ]  # fmt: skip
    return pl.DataFrame(rows)


def test_a_run_id_joins_only_files_sharing_most_of_their_wells() -> None:
    """Two partial exports of one run (other wells) are both current; an overlapping one replaces."""
    table = supersession(
        _observations(
            {
                "a": ("run-1", ["A1", "A2", "A3", "A4"]),
                "b": ("run-1", ["B1", "B2", "B3", "B4"]),
                "c": ("run-1", ["A1", "A2", "A3", "A5"]),
                "d": (None, ["B1", "B2", "B3", "B4"]),
                "e": ("run-2", ["B1", "B2", "B3", "B4"]),
            }
        ),
        Method.QPCR,
    )
    replaced = dict(table.select("source_sha256", "replaced_by").iter_rows())
    assert replaced == {"a": "c", "b": "d", "c": None, "d": None, "e": None}


def _results(statuses: list[str]) -> pl.DataFrame:
    """One sample's qPCR results on files f0, f1, ... ingested in that order."""
    return pl.DataFrame(
        [
            {"sample_id": "S", "method": "qPCR", "source_sha256": f"f{i}", "source_file": f"f{i}",
             "ingested_at": datetime(2026, 1, i + 1, tzinfo=UTC), "result_status": status,
             "qc_verdict": QcVerdict.FAIL if status == ResultStatus.FAILED else QcVerdict.PASS,
             "qc_reasons": None, "superseded": False, "superseded_reason": None}
            for i, status in enumerate(statuses)
        ],
        schema_overrides={"qc_reasons": pl.String, "superseded_reason": pl.String},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("statuses", "current"),
    [
        (["quantified", "quantified", "quantified"], "f2"),
        (["quantified", "not_detected", "failed"], "f1"),
        (["failed", "failed"], "f1"),
        (["quantified"], "f0"),
    ],
)
def test_the_latest_repeat_that_did_not_fail_is_current(statuses: list[str], current: str) -> None:
    """Latest wins unless it failed QC; with every repeat failed the latest stays current."""
    marked = mark_repeat_measurements(_results(statuses))
    assert marked.filter(~pl.col("superseded"))["source_sha256"].to_list() == [current]
    assert marked.filter(pl.col("superseded"))["superseded_reason"].is_not_null().all()
