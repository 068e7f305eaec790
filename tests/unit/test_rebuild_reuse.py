"""A touched patient's rows by one method are reused only while none of their inputs changed.

:mod:`chimera.method_cache` keeps each (patient, method) output in ``<warehouse>/.cache/`` under
a fingerprint of everything it reads (issue 12). The warehouse must hold the same rows whether
its files came at once, one by one or in another order, with the cache or without it; a changed
setting recomputes every output, a changed manifest row only its patient's.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from ingest_builders import (
    LabTrial,
    appbio_text,
    bank_manifest,
    infusion_csv,
    manifest_csv,
    quantasoft_csv,
    sample,
    sizing_table,
)
from pcr_builders import REFERENCE, DdpcrPlate, QpcrPlate, ct_for

from chimera import rebuild
from chimera.maintenance import rebuild_all_patients
from chimera.method_cache import Frames
from chimera.method_rows import MethodInputs
from chimera.registry import Registry
from chimera.settings import Settings
from schemas.vocab import FileStatus, Method, Role

PATIENTS = ("P01", "P02", "P03")
INK = {"ink": 1.0}
PATIENT = {"patient": 1.0}
SHARE = {"P01": 0.2, "P02": 0.1, "P03": 0.05}


def _mix(ink: float) -> dict[str, float]:
    return {"ink": ink, "patient": 1.0 - ink}


def _qpcr(name: str, patient: str, *, registered: bool) -> bytes:
    plate = QpcrPlate(name)
    plate.dna("INK-CAL", {"ink": 1.0}, genomes=5_000)
    if registered:
        plate.dna("INK-REF", {"ink": 1.0}, genomes=5_000)
    plate.dna(f"{patient}-BL", {"patient": 1.0}, genomes=8_000)
    plate.dna(f"{patient}-D1", _mix(SHARE[patient]))
    plate.add(None, REFERENCE, [None, None], task="ntc")
    return appbio_text(plate, experiment=f"QP-{name}", run_end="2026-01-09 10:00")


def _ddpcr(name: str, patient: str, *, product: str | None) -> bytes:
    plate = DdpcrPlate(name)
    if product is not None:
        plate.dna(product, {"ink": 1.0})
    plate.dna(f"{patient}-BL", {"patient": 1.0})
    plate.dna(f"{patient}-D1", _mix(SHARE[patient]))
    return quantasoft_csv(plate, experiment=f"DD-{name}")


def _exports() -> dict[str, bytes]:
    """Every method for three patients: STR references first, then runs and plates."""
    references = [("INK-REF", INK)] + [(f"{p}-BL", PATIENT) for p in PATIENTS]
    return {
        "str-ref.txt": sizing_table(references),
        "str-p01.txt": sizing_table([("P01-D1", _mix(SHARE["P01"]))]),
        "str-p23.txt": sizing_table([(f"{p}-D1", _mix(SHARE[p])) for p in ("P02", "P03")]),
        "qp1.txt": _qpcr("qp1", "P01", registered=True),
        "qp2.txt": _qpcr("qp2", "P02", registered=False),
        "qp3.txt": _qpcr("qp3", "P03", registered=True),
        "dd1.csv": _ddpcr("dd1", "P01", product="INK-REF"),
        "dd2.csv": _ddpcr("dd2", "P02", product=None),
        "dd3.csv": _ddpcr("dd3", "P03", product="INK-CAL"),
    }


def _trial(root: Path) -> LabTrial:
    trial = LabTrial(root)
    doses = infusion_csv([(p, 1, 0, "LOT1") for p in PATIENTS])
    outcomes = trial.ingest(
        trial.drop("manifest.csv", bank_manifest(PATIENTS)), trial.drop("d.csv", doses)
    )
    assert {o.status for o in outcomes} == {FileStatus.ACCEPTED}
    return trial


def _at_once(root: Path) -> LabTrial:
    trial = _trial(root)
    outcomes = trial.ingest(*(trial.drop(n, data) for n, data in _exports().items()))
    assert {o.status for o in outcomes} == {FileStatus.ACCEPTED}, [o.reason for o in outcomes]
    return trial


def _one_by_one(root: Path, names: list[str]) -> LabTrial:
    trial = _trial(root)
    exports = _exports()
    for name in names:
        outcome = trial.ingest_one(trial.drop(name, exports[name]))
        assert outcome.status is FileStatus.ACCEPTED, outcome.reason
    return trial


def _tables(trial: LabTrial) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Both derived tables without ingest times (which differ between warehouses), sorted."""
    found = []
    for table in (trial.chimerism(), trial.markers()):
        frame = table.drop("ingested_at")
        found.append(frame.sort(frame.columns, nulls_last=True))
    return found[0], found[1]


def _cold(trial: LabTrial, settings: Settings | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The tables of a rebuild of every patient with the cache deleted first."""
    shutil.rmtree(trial.warehouse.root / ".cache")
    rebuild_all_patients(settings or trial.settings, now=trial.clock())
    return trial.chimerism(), trial.markers()


def _same(found: tuple[pl.DataFrame, pl.DataFrame], expected: tuple[pl.DataFrame, ...]) -> None:
    """Both tables equal, row for row (same warehouse: ingest times included)."""
    assert found[0].equals(expected[0])
    assert found[1].equals(expected[1])


Calls = list[tuple[str, Method]]


def _count_computations(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Record every (patient, method) output the rebuild computes (not taken from the cache)."""
    calls: Calls = []
    compute: Callable[..., Frames] = rebuild.method_tables

    def counted(
        inputs: MethodInputs, patient: str, registry: Registry, settings: Settings, rows: object
    ) -> Frames:
        calls.append((patient, inputs.method))
        return compute(inputs, patient, registry, settings, rows)

    monkeypatch.setattr(rebuild, "method_tables", counted)
    return calls


EVERY_OUTPUT = {(p, m) for p in PATIENTS for m in Method}


def test_file_order_and_the_cache_never_change_the_rows(tmp_path: Path) -> None:
    """At once, one by one, in reverse order, and a cold rebuild (cache deleted) agree."""
    names = list(_exports())
    at_once = _tables(_at_once(tmp_path / "once"))
    one_trial = _one_by_one(tmp_path / "one", names)
    one_by_one = _tables(one_trial)
    reverse = _tables(_one_by_one(tmp_path / "rev", [names[0], *reversed(names[1:])]))
    assert set(at_once[0].select("sample_id", "method").unique().iter_rows()) == {
        (f"{p}-D1", m) for p in PATIENTS for m in Method
    }
    for other in (one_by_one, reverse):
        assert other[0].equals(at_once[0])
        assert other[1].equals(at_once[1])
    stored = one_trial.chimerism(), one_trial.markers()
    assert list((one_trial.warehouse.root / ".cache").glob("method-*.snapshot"))
    _same(_cold(one_trial), stored)


def test_a_rebuild_with_nothing_changed_takes_every_output_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second rebuild of every patient computes nothing and writes the same rows."""
    trial = _at_once(tmp_path)
    before = trial.chimerism(), trial.markers()
    calls = _count_computations(monkeypatch)
    rebuild_all_patients(trial.settings, now=trial.clock())
    assert calls == []
    _same((trial.chimerism(), trial.markers()), before)


def test_a_changed_setting_recomputes_every_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new LoQ for every method reaches every row at once, as a cold rebuild gives them."""
    trial = _at_once(tmp_path)
    before = trial.chimerism()
    settings = trial.settings
    changed = replace(
        settings,
        str=replace(settings.str, loq_pct=60.0),
        qpcr=replace(settings.qpcr, loq_pct=60.0),
        ddpcr=replace(settings.ddpcr, validated_loq_pct=60.0),
    )
    calls = _count_computations(monkeypatch)
    rebuild_all_patients(changed, now=trial.clock())
    assert set(calls) == EVERY_OUTPUT
    warm = trial.chimerism(), trial.markers()
    assert not warm[0]["result_status"].equals(before["result_status"])
    _same(warm, _cold(trial, changed))


def test_a_changed_manifest_row_recomputes_only_its_patient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P02-D1 re-registered as a sorted CD56+ fraction: only P02's outputs are computed again."""
    trial = _at_once(tmp_path)
    amended = manifest_csv(
        [sample("P02-D1", "P02", Role.POST_DOSE, at=2, specimen="PB CD56+", purity_pct=90)]
    )
    calls = _count_computations(monkeypatch)
    outcome = trial.ingest_one(trial.drop("amended.csv", amended))
    assert outcome.status is FileStatus.ACCEPTED, outcome.reason
    rebuild_all_patients(trial.settings, now=trial.clock())
    assert set(calls) == {("P02", m) for m in Method}
    assert len(calls) == len(Method)
    warm = trial.chimerism(), trial.markers()
    assert set(warm[0].filter(pl.col("sample_id") == "P02-D1")["specimen"]) == {"PB CD56+"}
    _same(warm, _cold(trial))


def test_an_unreadable_cache_costs_only_time(tmp_path: Path) -> None:
    """A truncated cache file is ignored (computed afresh) and written again."""
    trial = _at_once(tmp_path)
    before = trial.chimerism(), trial.markers()
    for path in (trial.warehouse.root / ".cache").glob("method-*.snapshot"):
        path.write_bytes(path.read_bytes()[:100])
    rebuild_all_patients(trial.settings, now=trial.clock())
    _same((trial.chimerism(), trial.markers()), before)
    for path in (trial.warehouse.root / ".cache").glob("method-*.snapshot"):
        assert pl.read_parquet(path).height


def _screen(name: str, target: str) -> bytes:
    """A qPCR marker-screening plate typing P09's germline for ``target`` (absent)."""
    plate = QpcrPlate(name)
    for marker, copies in ((REFERENCE, 20_000), (target, 0)):
        ct = ct_for(REFERENCE, copies) if copies else None
        plate.add("P09-GL", marker, [ct, ct, ct])
    plate.add(None, REFERENCE, [None, None], task="ntc")
    return appbio_text(plate, experiment=f"QS-{name}", run_end="2026-01-02")


def test_a_ddpcr_output_that_read_the_screening_plates_is_computed_again_with_a_new_one(
    tmp_path: Path,
) -> None:
    """P09's germline is typed for iNK-M1 first, for HD-M1 on a later screening plate: the
    ddPCR result, which reads the germline's carriage there, changes as a cold rebuild's."""
    trial = LabTrial(tmp_path)
    manifest = manifest_csv(
        [
            sample("INK-CAL", "LOT1", Role.CALIBRATOR, product_lot="LOT1", specimen="iNK"),
            sample("P09-BL", "P09", Role.RECIPIENT_BASELINE, at=-5, wbc_per_ul=3000),
            sample("P09-GL", "P09", Role.RECIPIENT_GERMLINE, specimen="buccal swab"),
            sample("P09-HSCTD", "P09", Role.HSCT_DONOR, specimen="HSCT donor DNA"),
            sample("P09-D1", "P09", Role.POST_DOSE, at=1, wbc_per_ul=2000),
        ]
    )
    doses = infusion_csv([("P09", 1, 0, "LOT1")])
    trial.ingest(trial.drop("manifest.csv", manifest), trial.drop("d.csv", doses))
    plate = DdpcrPlate("dp")
    mixes = (("INK-CAL", INK), ("P09-HSCTD", {"hsct": 1.0}), ("P09-BL", {"hsct": 0.9}))
    for sample_id, mix in (*mixes, ("P09-D1", {"ink": 0.05, "hsct": 0.6})):
        rest = {"patient": 1.0 - sum(mix.values())} if sample_id != "INK-CAL" else {}
        plate.dna(sample_id, {**mix, **rest}, markers=("iNK-M1", "HD-M1"))
    files = [
        trial.drop("s1.txt", _screen("s1", "iNK-M1")),
        trial.drop("dp.csv", quantasoft_csv(plate)),
    ]
    assert {o.status for o in trial.ingest(*files)} == {FileStatus.ACCEPTED}
    before = trial.chimerism().filter(pl.col("method") == Method.DDPCR)
    outcome = trial.ingest_one(trial.drop("s2.txt", _screen("s2", "HD-M1")))
    assert outcome.status is FileStatus.ACCEPTED, outcome.reason
    warm = trial.chimerism(), trial.markers()
    assert not warm[0].filter(pl.col("method") == Method.DDPCR).equals(before)
    _same(warm, _cold(trial))
