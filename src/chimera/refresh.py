"""After new data: rebuild trends and kinetics, re-evaluate alerts, notify.

Trend and kinetics tables are rebuilt for the patients whose results changed; alert rules
are re-evaluated and open alerts handed to the notification channels.

Used after every poll or ingest (:func:`chimera.poll.refresh_after_ingest`), by the
``refresh_trends`` Prefect flow and the nightly rebuild.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from chimera import channels, kinetics, trends
from chimera.alert_scope import alert_scope, read_scoped, record_evaluation
from chimera.alerts.detect import detect_alerts
from chimera.alerts.states import update_alert_states
from chimera.heap import long_lived, set_aside
from chimera.registry import Registry, read_registry
from chimera.settings import Settings
from chimera.warehouse import (
    ALERT_DELIVERIES,
    ALERTS,
    CHIMERISM,
    KINETICS,
    KINETICS_COHORT,
    TRENDS,
    Warehouse,
)
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


def _alert_states(
    warehouse: Warehouse,
    previous: pl.DataFrame,
    registry: Registry,
    todo: set[str],
    patients: set[str] | None,
    settings: Settings,
    now: datetime,
) -> pl.DataFrame:
    """The new alert table: conditions evaluated again where data changed, else kept.

    Which patients are evaluated again: :func:`chimera.alert_scope.alert_scope` (the result
    equals a full evaluation).
    """
    known = {*registry.samples["patient_id"].to_list(), *todo}
    scope = alert_scope(warehouse, settings, rebuilt=patients, previous=previous, known=known)
    infusions = registry.infusions
    if scope.evaluate is not None:
        infusions = infusions.filter(pl.col("patient_id").is_in(list(scope.evaluate)))
    detected = detect_alerts(
        read_scoped(warehouse, TRENDS, scope).lazy(),
        read_scoped(warehouse, KINETICS, scope).lazy(),
        read_scoped(warehouse, CHIMERISM, scope).lazy(),
        infusions.lazy(),
        settings=settings.alerts,
    )
    current = pl.concat([detected, scope.kept], how="vertical_relaxed").sort(
        "patient_id", "specimen", "rule", "episode_key"
    )
    return update_alert_states(previous, current, now=now)


def refresh_patients(
    patients: set[str] | None, *, settings: Settings, now: datetime
) -> RefreshSummary:
    """Rebuild trends, kinetics and alerts for ``patients`` (None = everyone), then notify."""
    warehouse = Warehouse(settings.warehouse)
    with warehouse.lock(), long_lived():
        todo = all_patients(warehouse) if patients is None else set(patients)
        registry = read_registry(warehouse)
        infusions = registry.infusions.lazy()
        chimerism = {
            patient: part
            for patient in sorted(todo)
            if (part := warehouse.read_part(CHIMERISM, patient)) is not None
        }
        set_aside()  # what the ingest left alive and the inputs read (chimera.heap)
        cd = settings.alerts.critical_difference
        threads = settings.scale.write_threads(len(chimerism), settings.scale.pool_min_patients)
        trend_parts = warehouse.write_parts(
            TRENDS,
            per_patient(chimerism, lambda rows: trends.build_trend_table(rows, infusions, cd=cd)),
            threads=threads,
        )
        warehouse.write_parts(
            KINETICS,
            per_patient(trend_parts, lambda rows: kinetics.compute_kinetics(rows, infusions)),
            threads=threads,
        )
        all_kinetics = warehouse.read(KINETICS)
        if all_kinetics.height:
            cohort = kinetics.summarise_cohort(all_kinetics.lazy()).collect()
            warehouse.write_single(KINETICS_COHORT, cohort)
        previous = warehouse.read(ALERTS)
        if not warehouse.files(TRENDS):
            # Nothing measured yet (e.g. only a manifest or infusion log so far): no rule can
            # be evaluated and existing alerts stay as they are.
            still_open = previous.filter(pl.col("state") != AlertState.RESOLVED).height
            return RefreshSummary(frozenset(todo), (), still_open, 0)
        updated = warehouse.write_single(
            ALERTS, _alert_states(warehouse, previous, registry, todo, patients, settings, now)
        )
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
