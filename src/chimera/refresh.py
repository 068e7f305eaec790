"""After new data: rebuild trends and kinetics, re-evaluate alerts, notify.

Trend and kinetics tables are rebuilt for the patients whose results changed; alert rules
are re-evaluated and open alerts handed to the notification channels.

Used by ``chimera ingest``/``demo`` in-process and by the ``refresh_trends`` Prefect flow.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from chimera import channels, kinetics, trends
from chimera.alerts.detect import detect_alerts
from chimera.alerts.states import update_alert_states
from chimera.pipeline import FileOutcome, read_registry
from chimera.settings import Settings
from chimera.validation import validate_frame
from chimera.warehouse import Warehouse
from schemas.trends import AlertDeliveries, Alerts, CohortKinetics, Kinetics, Trends
from schemas.vocab import FileStatus

ALERTS_KEY = "alerts"
DELIVERIES_KEY = "deliveries"
COHORT_KEY = "cohort"


@dataclass(frozen=True)
class RefreshSummary:
    """What a refresh changed: patients rebuilt and alerts that opened in this run."""

    patients: frozenset[str]
    opened_alert_ids: tuple[str, ...]
    open_alerts: int
    failed_deliveries: int


def refresh_after_ingest(
    outcomes: Iterable[FileOutcome], *, settings: Settings, now: datetime
) -> RefreshSummary:
    """Refresh the patients touched by accepted files (nothing to do when none were accepted)."""
    patients: set[str] = set()
    for outcome in outcomes:
        if outcome.status is FileStatus.ACCEPTED:
            patients |= set(outcome.patients)
    return refresh_patients(patients, settings=settings, now=now)


def all_patients(warehouse: Warehouse) -> set[str]:
    """Every patient with a chimerism table."""
    return {
        str(p)
        for p in warehouse.read("chimerism")
        .get_column("patient_id", default=pl.Series([]))
        .unique()
    }


def refresh_patients(
    patients: set[str] | None, *, settings: Settings, now: datetime
) -> RefreshSummary:
    """Rebuild trends, kinetics and alerts for ``patients`` (None = everyone), then notify."""
    warehouse = Warehouse(settings.warehouse)
    with warehouse.lock():
        todo = all_patients(warehouse) if patients is None else set(patients)
        registry = read_registry(warehouse)
        infusions = registry.infusions.lazy()
        for patient in sorted(todo):
            chimerism = warehouse.read_file("chimerism", patient)
            if chimerism is None:
                continue
            doses = infusions.filter(pl.col("patient_id") == patient)
            trend = trends.build_trend_table(
                chimerism.lazy(), doses, cd=settings.alerts.critical_difference
            ).collect()
            trend = validate_frame(trend, Trends, file_name=f"trends/{patient}")
            warehouse.write("trends", patient, trend)
            kinetic = kinetics.compute_kinetics(trend.lazy(), doses).collect()
            warehouse.write(
                "kinetics",
                patient,
                validate_frame(kinetic, Kinetics, file_name=f"kinetics/{patient}"),
            )
        all_kinetics = warehouse.read("kinetics")
        if all_kinetics.height:
            cohort = kinetics.summarise_cohort(all_kinetics.lazy()).collect()
            warehouse.write(
                "kinetics_cohort",
                COHORT_KEY,
                validate_frame(cohort, CohortKinetics, file_name="kinetics_cohort"),
            )
        previous = warehouse.read_file(ALERTS_KEY, ALERTS_KEY)
        if not warehouse.files("trends"):
            # Nothing measured yet (e.g. only a manifest or infusion log so far): no rule can
            # be evaluated and existing alerts stay as they are.
            still_open = (
                0 if previous is None else previous.filter(pl.col("state") != "resolved").height
            )
            return RefreshSummary(frozenset(todo), (), still_open, 0)
        current = detect_alerts(
            warehouse.read("trends").lazy(),
            warehouse.read("kinetics").lazy(),
            warehouse.read("chimerism").lazy(),
            infusions,
            settings=settings.alerts,
        )
        previous_frame = previous if previous is not None else pl.DataFrame()
        updated = update_alert_states(previous_frame, current, now=now)
        updated = validate_frame(updated, Alerts, file_name="alerts")
        warehouse.write(ALERTS_KEY, ALERTS_KEY, updated)
        before = set() if previous is None else set(previous["alert_id"].to_list())
        opened = tuple(sorted(set(updated.filter(pl.col("state") == "open")["alert_id"]) - before))
        deliveries = warehouse.read_file("alert_deliveries", DELIVERIES_KEY)
        delivered = channels.deliver_alerts(
            updated,
            deliveries if deliveries is not None else pl.DataFrame(),
            channels=settings.alerts.channels,
            now=now,
            password=settings.smtp_password,
        )
        if delivered.height:
            delivered = validate_frame(delivered, AlertDeliveries, file_name="alert_deliveries")
            warehouse.write("alert_deliveries", DELIVERIES_KEY, delivered)
    return RefreshSummary(
        patients=frozenset(todo),
        opened_alert_ids=opened,
        open_alerts=updated.filter(pl.col("state") != "resolved").height,
        failed_deliveries=delivered.filter(pl.col("state") != "sent").height
        if delivered.height
        else 0,
    )
