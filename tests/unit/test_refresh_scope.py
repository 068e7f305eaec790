"""A refresh computes many patients in one pass and re-evaluates alerts only where data changed,
yet writes exactly what a patient-by-patient, full refresh writes."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from chimerism_builders import T0, chimerism_frame, infusions_frame, result, typical_patient

from chimera import kinetics, trends
from chimera.alert_scope import alert_scope
from chimera.alerts.detect import CONDITION_COLUMNS, detect_alerts
from chimera.refresh import (
    CurveJob,
    curves_in_worker,
    patient_curves,
    per_patient,
    refresh_patients,
)
from chimera.settings import Settings
from chimera.warehouse import ALERTS, CHIMERISM, INFUSIONS, KINETICS, TRENDS, Warehouse
from chimera.workers import WorkerPool

PATIENTS = ("P01", "P02", "P03")


def _persisting(patient: str) -> list[dict[str, object]]:
    """A patient whose iNK is still quantified 35 days after the last dose (persistence)."""
    return [*typical_patient(patient), result(patient, f"{patient}-late", 199.0, "quantified", 0.8)]


def _failing(patient: str) -> list[dict[str, object]]:
    """A patient with three failed results (repeated QC failure)."""
    return [
        *typical_patient(patient),
        *(result(patient, f"{patient}-f{i}", 40.0 + i, "failed") for i in range(3)),
    ]


def _home(tmp_path: Path, name: str) -> tuple[Settings, Warehouse]:
    settings = Settings().with_home(tmp_path / name)
    warehouse = Warehouse(settings.warehouse)
    doses = infusions_frame(
        {p: [0, 3, 7, 10, 14, 17, 21, 24, 52, 80, 108, 136, 164] for p in PATIENTS}
    )
    warehouse.store(INFUSIONS, "0" * 64, doses)
    warehouse.write_parts(
        CHIMERISM,
        {
            "P01": chimerism_frame(_persisting("P01")),
            "P02": chimerism_frame(typical_patient("P02")),
            "P03": chimerism_frame(_failing("P03")),
        },
    )
    refresh_patients(None, settings=settings, now=T0 + timedelta(days=400))
    return settings, warehouse


def _alerts(warehouse: Warehouse) -> pl.DataFrame:
    return warehouse.read(ALERTS).sort("alert_id")


def test_refreshing_some_patients_writes_what_a_full_refresh_writes(tmp_path: Path) -> None:
    """P02 starts persisting and P03's failures are superseded by a rebuild nobody refreshed:
    refreshing P02 alone re-evaluates P02 and P03 (its file changed) and keeps P01's alert,
    which turns ``ongoing`` exactly as in a full refresh."""
    later = T0 + timedelta(days=401)
    tables = []
    for name in ("scoped", "full"):
        settings, warehouse = _home(tmp_path, name)
        assert set(_alerts(warehouse)["rule"]) == {"persistence", "repeated_qc_failure"}
        warehouse.write_parts(
            CHIMERISM,
            {
                "P02": chimerism_frame(_persisting("P02")),
                "P03": chimerism_frame(typical_patient("P03")),
            },
        )
        if name == "scoped":
            scope = alert_scope(
                warehouse, settings, rebuilt={"P02"}, previous=_alerts(warehouse), known=PATIENTS
            )
            assert scope.evaluate == {"P02", "P03"}
            assert scope.kept["patient_id"].to_list() == ["P01"]
        refresh_patients({"P02"} if name == "scoped" else None, settings=settings, now=later)
        tables.append(_alerts(warehouse))
    scoped, full = tables
    assert scoped.equals(full)
    states = dict(zip(full["patient_id"] + " " + full["rule"], full["state"], strict=True))
    assert states == {
        "P01 persistence": "ongoing",
        "P02 persistence": "open",
        "P03 repeated_qc_failure": "resolved",
    }


def test_other_alert_settings_re_evaluate_everyone(tmp_path: Path) -> None:
    """Changed alert settings (or no record of the last evaluation) mean a full evaluation."""
    settings, warehouse = _home(tmp_path, "home")
    previous = _alerts(warehouse)
    assert alert_scope(
        warehouse, settings, rebuilt={"P02"}, previous=previous, known=PATIENTS
    ).evaluate == {"P02"}
    cd = replace(settings.alerts.critical_difference, z=settings.alerts.critical_difference.z + 1)
    other = replace(settings, alerts=replace(settings.alerts, critical_difference=cd))
    assert (
        alert_scope(warehouse, other, rebuilt={"P02"}, previous=previous, known=PATIENTS).evaluate
        is None
    )
    assert (
        alert_scope(warehouse, settings, rebuilt=None, previous=previous, known=PATIENTS).evaluate
        is None
    )
    (warehouse.root / ".cache" / "alerts-evaluated.json").unlink()
    assert (
        alert_scope(
            warehouse, settings, rebuilt={"P02"}, previous=previous, known=PATIENTS
        ).evaluate
        is None
    )


def test_one_pass_over_many_patients_gives_each_patient_its_own_rows() -> None:
    """Trends and kinetics built for three patients at once equal each patient's own build; a
    patient without rows gets an empty frame (its file is removed)."""
    doses = infusions_frame(
        {p: [0, 3, 7, 10, 14, 17, 21, 24, 52, 80, 108, 136, 164] for p in PATIENTS}
    )
    cd = Settings().alerts.critical_difference
    parts = {
        "P01": chimerism_frame(_persisting("P01")),
        "P02": chimerism_frame(_failing("P02")),
        "P03": chimerism_frame(_persisting("P03")).clear(),
    }

    def trend(rows: pl.LazyFrame) -> pl.LazyFrame:
        return trends.build_trend_table(rows, doses.lazy(), cd=cd)

    def kinetic(rows: pl.LazyFrame) -> pl.LazyFrame:
        return kinetics.compute_kinetics(rows, doses.lazy())

    built = per_patient(parts, trend)
    kinetic_parts = per_patient(built, kinetic)
    for patient, rows in parts.items():
        alone = trend(rows.lazy()).collect()
        assert built[patient].equals(alone)
        assert kinetic_parts[patient].equals(kinetic(alone.lazy()).collect())
    assert built["P01"].height > 0
    assert kinetic_parts["P01"].height > 0
    assert built["P03"].height == 0


def _changed(warehouse: Warehouse) -> None:
    """P02 starts persisting, P03's failures are superseded (see the first test)."""
    warehouse.write_parts(
        CHIMERISM,
        {
            "P02": chimerism_frame(_persisting("P02")),
            "P03": chimerism_frame(typical_patient("P03")),
        },
    )


def test_a_refresh_in_the_worker_pool_writes_what_one_process_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P01 and P02 refreshed by the pool's workers (P03 evaluated here from its stored files):
    the same trend, kinetics and alert tables as a refresh in one process."""
    later = T0 + timedelta(days=401)
    mapped: list[str] = []
    pool_map = WorkerPool.map

    def recorded(pool: WorkerPool, function: Any, items: Any, **here: Any) -> Any:
        mapped.append(getattr(function, "func", function).__name__)
        return pool_map(pool, function, items, **here)

    monkeypatch.setattr(WorkerPool, "map", recorded)
    tables = []
    for workers in (1, 2):
        settings, warehouse = _home(tmp_path, f"workers-{workers}")
        _changed(warehouse)
        scale = replace(settings.scale, workers=workers, pool_min_patients=1)
        pool = WorkerPool(workers)
        try:
            refresh_patients(
                {"P01", "P02"}, settings=replace(settings, scale=scale), now=later, pool=pool
            )
        finally:
            pool.close()
        tables.append([warehouse.read(t).sort(pl.all()) for t in (TRENDS, KINETICS, ALERTS)])
    assert mapped == ["curves_in_worker"]
    for alone, pooled in zip(*tables, strict=True):
        assert alone.height > 0
        assert pooled.equals(alone)


def test_a_worker_computes_from_the_stored_files_what_the_caller_computes(
    tmp_path: Path,
) -> None:
    """:func:`curves_in_worker` of a pickled job (the stored chimerism parts) equals
    :func:`patient_curves` of the parts the caller holds; conditions only for patients in scope."""
    settings, warehouse = _home(tmp_path, "home")
    parts = {p: warehouse.read(CHIMERISM).filter(pl.col("patient_id") == p) for p in PATIENTS}
    job = CurveJob(warehouse.root, settings, warehouse.read(INFUSIONS), frozenset({"P01", "P03"}))
    worker = curves_in_worker(pickle.loads(pickle.dumps(job)), list(PATIENTS))
    here = patient_curves(job, parts)
    for patient in PATIENTS:
        assert worker.trends[patient].equals(here.trends[patient])
        assert worker.kinetics[patient].equals(here.kinetics[patient])
    assert worker.conditions.equals(here.conditions)
    assert set(here.conditions["patient_id"]) == {"P01", "P03"}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_alert_conditions_equal_a_full_evaluation_of_the_stored_tables(
    tmp_path: Path, workers: int
) -> None:
    """Conditions found from the rows just computed (in one process or by the pool's workers)
    are what the rules find over the whole stored tables."""
    settings, warehouse = _home(tmp_path, "home")
    _changed(warehouse)
    scale = replace(settings.scale, workers=workers, pool_min_patients=1)
    settings = replace(settings, scale=scale)
    pool = WorkerPool(workers)
    try:
        refresh_patients(None, settings=settings, now=T0 + timedelta(days=401), pool=pool)
    finally:
        pool.close()
    expected = detect_alerts(
        *(warehouse.read(t).lazy() for t in (TRENDS, KINETICS, CHIMERISM, INFUSIONS)),
        settings=settings.alerts,
    )
    found = warehouse.read(ALERTS).filter(pl.col("state") != "resolved")
    assert expected.height > 0
    assert found.select(list(CONDITION_COLUMNS)).sort("alert_id").equals(expected.sort("alert_id"))
