"""After new data: rebuild trends and kinetics, re-evaluate alerts, notify.

Trend and kinetics tables are rebuilt for the patients whose results changed; alert rules
are re-evaluated and open alerts handed to the notification channels.

Used after every poll or ingest (:func:`chimera.poll.refresh_after_ingest`), by the
``refresh_trends`` Prefect flow and the nightly rebuild.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from chimera import channels, kinetics, trends
from chimera.alert_scope import alert_scope, read_scoped, record_evaluation
from chimera.alerts.detect import detect_alerts
from chimera.alerts.states import update_alert_states
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
    with warehouse.lock():
        todo = all_patients(warehouse) if patients is None else set(patients)
        registry = read_registry(warehouse)
        infusions = registry.infusions.lazy()
        built = {}
        for patient in sorted(todo):
            chimerism = warehouse.read_part(CHIMERISM, patient)
            if chimerism is None:
                continue
            doses = infusions.filter(pl.col("patient_id") == patient)
            built[patient] = trends.build_trend_table(
                chimerism.lazy(), doses, cd=settings.alerts.critical_difference
            ).collect()
        trend_parts = warehouse.write_parts(TRENDS, built)
        warehouse.write_parts(
            KINETICS,
            {
                patient: kinetics.compute_kinetics(
                    trend.lazy(), infusions.filter(pl.col("patient_id") == patient)
                ).collect()
                for patient, trend in trend_parts.items()
            },
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
    return RefreshSummary(
        patients=frozenset(todo),
        opened_alert_ids=opened,
        open_alerts=updated.filter(pl.col("state") != AlertState.RESOLVED).height,
        failed_deliveries=delivered.filter(pl.col("state") != DeliveryState.SENT).height
        if delivered.height
        else 0,
    )
