"""After new data: rebuild trends and kinetics, re-evaluate alerts, notify.

Trend and kinetics tables are rebuilt for the patients whose results changed; alert rules
are re-evaluated and open alerts handed to the notification channels.

Used after every poll or ingest (:func:`chimera.poll.refresh_after_ingest`), by the
``refresh_trends`` Prefect flow and the nightly rebuild.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import polars as pl

from chimera import channels, kinetics, trends
from chimera.alert_scope import (
    SCOPED_TABLES,
    AlertScope,
    alert_scope,
    read_scoped,
    record_evaluation,
    stacked,
)
from chimera.alerts.detect import detect_alerts
from chimera.alerts.states import update_alert_states
from chimera.heap import long_lived, set_aside
from chimera.registry import read_registry
from chimera.settings import Settings
from chimera.warehouse import (
    ALERT_DELIVERIES,
    ALERTS,
    CHIMERISM,
    KINETICS,
    KINETICS_COHORT,
    TRENDS,
    Table,
    Warehouse,
    file_key,
)
from chimera.workers import WorkerPool, shares, use_pool
from schemas.vocab import AlertState, DeliveryState


@dataclass(frozen=True)
class RefreshSummary:
    """What a refresh changed: patients rebuilt and alerts that opened in this run."""

    patients: frozenset[str]
    opened_alert_ids: tuple[str, ...]
    open_alerts: int
    failed_deliveries: int


def all_patients(warehouse: Warehouse) -> set[str]:
    """Every patient with a chimerism table."""
    return {str(p) for p in warehouse.read(CHIMERISM)["patient_id"].unique()}


def per_patient(
    parts: dict[str, pl.DataFrame], build: Callable[[pl.LazyFrame], pl.LazyFrame]
) -> dict[str, pl.DataFrame]:
    """``build`` of each patient's rows, computed for all patients in one pass.

    ``build`` works per patient x specimen curve (trends, kinetics), so one pass over every
    patient's rows gives each patient what a pass over its own rows gives; a patient with no
    output row gets an empty frame (its file is removed). Parts holding rows of another patient
    are built one by one.
    """
    filled = {patient: rows for patient, rows in parts.items() if rows.height}
    if not all(bool(rows["patient_id"].eq(p).all()) for p, rows in filled.items()):
        return {patient: build(rows.lazy()).collect() for patient, rows in parts.items()}
    if not filled:
        return {patient: build(rows.lazy()).collect() for patient, rows in parts.items()}
    frame = build(pl.concat(list(filled.values()), how="diagonal_relaxed").lazy()).collect()
    found = {str(k[0]): v for k, v in frame.partition_by("patient_id", as_dict=True).items()}
    return {patient: found.get(patient, frame.clear()) for patient in parts}


@dataclass(frozen=True)
class CurveJob:
    """One refresh's per-patient work as a worker sees it (:func:`curves_in_worker`)."""

    warehouse: Path
    settings: Settings
    infusions: pl.DataFrame
    """The registry's infusion log (every patient's doses)."""
    evaluate: frozenset[str] | None
    """Patients whose alert conditions are evaluated again (None: everyone)."""


@dataclass(frozen=True)
class Curves:
    """Some patients' trend and kinetics rows, and their alert conditions."""

    trends: dict[str, pl.DataFrame]
    kinetics: dict[str, pl.DataFrame]
    conditions: pl.DataFrame | None
    """``detect_alerts`` of the patients in :attr:`CurveJob.evaluate`; None when a chimerism
    part holds rows of another patient (the alert rules then read the stored tables)."""


Validate = Callable[[Table, dict[str, pl.DataFrame]], dict[str, pl.DataFrame]]
"""Checks a table's parts and returns them as stored (:meth:`Warehouse.validate_parts`)."""


def _as_computed(_table: Table, parts: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """No check here: a worker's parts are validated by the caller, all in one pass."""
    return parts


def patient_curves(
    job: CurveJob, chimerism: dict[str, pl.DataFrame], *, validate: Validate = _as_computed
) -> Curves:
    """Trends, kinetics and alert conditions of the patients of ``chimerism`` (their parts).

    Every step works per patient x specimen (:func:`per_patient`, :mod:`chimera.alerts.detect`),
    so a share of the patients gives each patient what all of them together give. Kinetics and
    alerts read the trend rows as ``validate`` returns them; the caller stores the rows.
    """
    infusions = job.infusions.lazy()
    cd = job.settings.alerts.critical_difference
    trend_parts = validate(
        TRENDS,
        per_patient(chimerism, lambda rows: trends.build_trend_table(rows, infusions, cd=cd)),
    )
    kinetic_parts = validate(
        KINETICS,
        per_patient(trend_parts, lambda rows: kinetics.compute_kinetics(rows, infusions)),
    )
    scope = sorted(
        (p for p in chimerism if job.evaluate is None or p in job.evaluate), key=file_key
    )
    if not all(bool(rows["patient_id"].eq(p).all()) for p, rows in chimerism.items()):
        return Curves(trend_parts, kinetic_parts, None)
    conditions = detect_alerts(
        stacked(TRENDS, [trend_parts[p] for p in scope]).lazy(),
        stacked(KINETICS, [kinetic_parts[p] for p in scope]).lazy(),
        stacked(CHIMERISM, [chimerism[p] for p in scope]).lazy(),
        job.infusions.filter(pl.col("patient_id").is_in(scope)).lazy(),
        settings=job.settings.alerts,
    )
    return Curves(trend_parts, kinetic_parts, conditions)


def curves_in_worker(job: CurveJob, patients: Sequence[str]) -> Curves:
    """:func:`patient_curves` of ``patients`` in a worker, from their stored chimerism parts.

    Not validated: :func:`_curves` validates every worker's rows in one pass.
    """
    return patient_curves(job, _chimerism_parts(Warehouse(job.warehouse), patients))


def _chimerism_parts(warehouse: Warehouse, patients: Iterable[str]) -> dict[str, pl.DataFrame]:
    return {
        patient: part
        for patient in patients
        if (part := warehouse.read_part(CHIMERISM, patient)) is not None
    }


def _curves(job: CurveJob, patients: list[str], pool: WorkerPool | None) -> Curves:
    """:func:`patient_curves` of ``patients`` (sorted, with chimerism parts), validated.

    A refresh of ``scale.pool_min_patients`` patients shares them among the pool's workers;
    their rows are then validated here in one pass per table. Should the check coerce a part
    (not the rows computed: other dtypes), what was computed from it is computed again here
    from the checked rows, as without workers.
    """
    warehouse = Warehouse(job.warehouse)

    def here(share: Sequence[str]) -> Curves:
        return patient_curves(job, _chimerism_parts(warehouse, share))

    if not use_pool(pool, len(patients), job.settings.scale.pool_min_patients):
        return patient_curves(
            job, _chimerism_parts(warehouse, patients), validate=warehouse.validate_parts
        )
    assert pool is not None
    found = pool.map(partial(curves_in_worker, job), shares(patients, pool.pieces), here=here)
    computed = Curves(
        {p: rows for curves in found for p, rows in curves.trends.items()},
        {p: rows for curves in found for p, rows in curves.kinetics.items()},
        _joined([curves.conditions for curves in found]),
    )
    for table, parts in ((TRENDS, computed.trends), (KINETICS, computed.kinetics)):
        checked = warehouse.validate_parts(table, parts)
        if any(checked[p] is not rows for p, rows in parts.items()):
            return patient_curves(
                job, _chimerism_parts(warehouse, patients), validate=warehouse.validate_parts
            )
    return computed


def _joined(conditions: list[pl.DataFrame | None]) -> pl.DataFrame | None:
    """The shares' conditions in one frame (None when a share has none: see :class:`Curves`)."""
    found = [c for c in conditions if c is not None]
    if len(found) < len(conditions):
        return None
    return pl.concat(found, how="vertical_relaxed")


def _alert_states(
    warehouse: Warehouse,
    previous: pl.DataFrame,
    scope: AlertScope,
    curves: Curves,
    infusions: pl.DataFrame,
    settings: Settings,
    now: datetime,
) -> pl.DataFrame:
    """The new alert table from the conditions found now and those kept.

    Found now: those of ``curves`` and of the other patients in ``scope`` (from their stored
    files); kept: :func:`chimera.alert_scope.alert_scope`'s. Should a stored file read hold
    rows of a patient of ``curves`` (or ``curves`` have no conditions), every patient in
    ``scope`` is evaluated from the stored files instead, as their rows together give.
    """
    rest = _stored_scope(warehouse, scope, curves)
    detected, read = _detect_stored(warehouse, rest, infusions, settings)
    found = [detected, scope.kept]
    if rest is not scope and curves.conditions is not None:
        if read & set(curves.trends):
            found[0] = _detect_stored(warehouse, scope, infusions, settings)[0]
        else:
            found.insert(0, curves.conditions)
    current = pl.concat(found, how="vertical_relaxed").sort(
        "patient_id", "specimen", "rule", "episode_key"
    )
    return update_alert_states(previous, current, now=now)


def _stored_scope(warehouse: Warehouse, scope: AlertScope, curves: Curves) -> AlertScope:
    """The patients whose conditions come from their stored files (``scope``: all of them).

    The patients of ``curves`` are left out when it has their conditions and, for a full
    evaluation, when the tables hold no file of any other patient.
    """
    if curves.conditions is None:
        return scope
    done = set(curves.trends)
    if scope.evaluate is not None:
        return AlertScope(frozenset(scope.evaluate - done), scope.kept)
    keys = {file_key(p) for p in done}
    if all(f.stem in keys for t in SCOPED_TABLES for f in warehouse.files(t)):
        return AlertScope(frozenset(), scope.kept)
    return scope


def _detect_stored(
    warehouse: Warehouse, scope: AlertScope, infusions: pl.DataFrame, settings: Settings
) -> tuple[pl.DataFrame, set[str]]:
    """``detect_alerts`` of the patients in ``scope`` from their stored files.

    Also returns the patient ids of the rows read.
    """
    if scope.evaluate is not None:
        infusions = infusions.filter(pl.col("patient_id").is_in(list(scope.evaluate)))
    trend, kinetic, result = (
        read_scoped(warehouse, t, scope) for t in (TRENDS, KINETICS, CHIMERISM)
    )
    read = {str(p) for frame in (trend, kinetic, result) for p in frame["patient_id"].unique()}
    conditions = detect_alerts(
        trend.lazy(), kinetic.lazy(), result.lazy(), infusions.lazy(), settings=settings.alerts
    )
    return conditions, read


def refresh_patients(
    patients: set[str] | None,
    *,
    settings: Settings,
    now: datetime,
    pool: WorkerPool | None = None,
) -> RefreshSummary:
    """Rebuild trends, kinetics and alerts for ``patients`` (None = everyone), then notify.

    With a ``pool`` and ``scale.pool_min_patients`` patients, its workers compute the
    patients' curves (:func:`curves_in_worker`); the writes stay in this process.
    """
    warehouse = Warehouse(settings.warehouse)
    with warehouse.lock(), long_lived():
        todo = all_patients(warehouse) if patients is None else set(patients)
        registry = read_registry(warehouse)
        previous = warehouse.read(ALERTS)
        known = {*registry.samples["patient_id"].to_list(), *todo}
        scope = alert_scope(warehouse, settings, rebuilt=patients, previous=previous, known=known)
        job = CurveJob(warehouse.root, settings, registry.infusions, scope.evaluate)
        measured = [p for p in sorted(todo) if warehouse.has(CHIMERISM, p)]
        set_aside()  # what the ingest left alive and the inputs read (chimera.heap)
        curves = _curves(job, measured, pool)
        threads = settings.scale.write_threads(len(measured), settings.scale.pool_min_patients)
        warehouse.store_parts(TRENDS, curves.trends, threads=threads)
        warehouse.store_parts(KINETICS, curves.kinetics, threads=threads)
        all_kinetics = warehouse.read(KINETICS)
        if all_kinetics.height:
            cohort = kinetics.summarise_cohort(all_kinetics.lazy()).collect()
            warehouse.write_single(KINETICS_COHORT, cohort)
        if not warehouse.files(TRENDS):
            # Nothing measured yet (e.g. only a manifest or infusion log so far): no rule can
            # be evaluated and existing alerts stay as they are.
            still_open = previous.filter(pl.col("state") != AlertState.RESOLVED).height
            return RefreshSummary(frozenset(todo), (), still_open, 0)
        states = _alert_states(
            warehouse, previous, scope, curves, registry.infusions, settings, now
        )
        updated = warehouse.write_single(ALERTS, states)
        record_evaluation(warehouse, settings)
        before = set(previous["alert_id"].to_list())
        opened = tuple(
            sorted(set(updated.filter(pl.col("state") == AlertState.OPEN)["alert_id"]) - before)
        )
        delivered = channels.deliver_alerts(
            updated,
            warehouse.read(ALERT_DELIVERIES),
            channels=settings.alerts.channels,
            now=now,
            password=settings.smtp_password,
        )
        if delivered.height:
            delivered = warehouse.write_single(ALERT_DELIVERIES, delivered)
        warehouse.persist_snapshots()  # the next run reads kinetics etc. in one file
    return RefreshSummary(
        patients=frozenset(todo),
        opened_alert_ids=opened,
        open_alerts=updated.filter(pl.col("state") != AlertState.RESOLVED).height,
        failed_deliveries=delivered.filter(pl.col("state") != DeliveryState.SENT).height
        if delivered.height
        else 0,
    )
