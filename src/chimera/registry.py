"""What the warehouse currently knows: samples, doses, product lots, the ledger, current rows.

Reads only. The registry is the latest manifest row per sample and the latest infusion-log row
per dose; each patient's product lot comes from the manifest, else the infusion log, else the
only lot there is. :func:`current_observations` is the one place that decides which raw assay
rows count (an export re-measuring a sample supersedes the earlier one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from chimera.warehouse import INFUSIONS, INGEST_LOG, OBSERVATIONS, SAMPLES, Warehouse
from schemas.vocab import PRODUCT_ROLES, FileStatus, Method, Role


@dataclass
class Registry:
    """Current registry rows: latest manifest row per sample, latest log row per dose."""

    samples: pl.DataFrame
    infusions: pl.DataFrame
    lots: dict[str, str | None] = field(default_factory=dict)
    """Product lot of every patient (None when it cannot be told yet)."""
    _owned: dict[tuple[str, str], list[str]] | None = field(default=None, repr=False)
    _by_patient: dict[str, pl.DataFrame] | None = field(default=None, repr=False)

    def patient_samples(self, patient: str) -> pl.DataFrame:
        """The registry rows of one patient (or lot, or series), in registry order."""
        if self._by_patient is None:
            self._by_patient = {
                str(k[0]): v
                for k, v in self.samples.partition_by("patient_id", as_dict=True).items()
            }
        return self._by_patient.get(patient, self.samples.clear())

    def owned(self, owner: str, role: Role) -> list[str]:
        """Sample ids of ``role`` registered to ``owner`` (a patient, a lot or a series)."""
        if self._owned is None:
            self._owned = {}
            for sample_id, patient_id, sample_role in self.samples.select(
                "sample_id", "patient_id", "role"
            ).iter_rows():
                self._owned.setdefault((patient_id, sample_role), []).append(sample_id)
        return self._owned.get((owner, role), [])


def read_ledger(warehouse: Warehouse) -> pl.DataFrame:
    """The whole ledger, oldest event first."""
    return warehouse.read(INGEST_LOG).sort("logged_at")


def first_waiting_time(ledger: pl.DataFrame, sha256: str) -> datetime | None:
    """When a file was first recorded as waiting (None if never)."""
    rows = ledger.filter(
        (pl.col("source_sha256") == sha256) & (pl.col("status") == FileStatus.WAITING)
    )
    return None if rows.height == 0 else rows["logged_at"].min()  # type: ignore[return-value]


def read_registry(warehouse: Warehouse) -> Registry:
    """Current samples and doses, with the product lot each patient received."""
    return registry_from(warehouse.read(SAMPLES), warehouse.read(INFUSIONS))


def registry_from(sample_rows: pl.DataFrame, infusion_rows: pl.DataFrame) -> Registry:
    """The registry of every stored ``samples`` and ``infusions`` row (latest row wins)."""
    samples = sample_rows.sort("ingested_at", "source_sha256").unique(
        "sample_id", keep="last", maintain_order=True
    )
    infusions = (
        infusion_rows.sort("ingested_at", "source_sha256")
        .unique(["patient_id", "dose_number"], keep="last", maintain_order=True)
        .sort("patient_id", "dose_number")
    )
    registry = Registry(samples, infusions)
    lots = samples.filter(pl.col("role") == Role.DONOR_REFERENCE)["patient_id"].unique().to_list()
    only = lots[0] if len(lots) == 1 else None
    named = [_last_lot(samples), _last_lot(infusions)]
    for patient in samples.filter(~pl.col("role").is_in(PRODUCT_ROLES))["patient_id"].unique():
        registry.lots[patient] = next((n[patient] for n in named if patient in n), only)
    return registry


def _last_lot(table: pl.DataFrame) -> dict[str, str]:
    """Each patient's last named product lot in ``table`` (manifest or infusion log order)."""
    named = (
        table.filter(pl.col("product_lot").is_not_null())
        .group_by("patient_id", maintain_order=True)
        .agg(pl.col("product_lot").last())
    )
    return {str(p): str(lot) for p, lot in named.iter_rows()}


def series_ids(registry: Registry) -> set[str]:
    """Names of the dilution series in the registry (they are not patients)."""
    return set(
        registry.samples.filter(pl.col("role") == Role.DILUTION_STANDARD)["patient_id"].to_list()
    )


def read_observations(warehouse: Warehouse, method: Method) -> pl.DataFrame:
    """Every stored raw row of one assay method, current or superseded."""
    return warehouse.read(OBSERVATIONS[method])


def measured_ids(frame: pl.DataFrame) -> set[str]:
    """Sample ids present in an assay frame."""
    if frame.height == 0 or "sample_id" not in frame.columns:
        return set()
    return set(frame["sample_id"].drop_nulls().to_list())


def current_observations(observations: pl.DataFrame) -> pl.DataFrame:
    """Keep, for each sample, the rows of the latest export that measured it.

    An earlier export of the same sample is superseded; control wells without a sample id stay
    with their plate while the plate still holds any current sample.
    """
    if observations.height == 0:
        return observations
    per_source = (
        observations.filter(pl.col("sample_id").is_not_null())
        .group_by("sample_id", "source_sha256")
        .agg(pl.col("ingested_at").max())
        .sort("ingested_at", "source_sha256")
        .group_by("sample_id", maintain_order=True)
        .agg(pl.col("source_sha256").last().alias("current_source"))
    )
    tagged = observations.join(per_source, on="sample_id", how="left")
    live_plates = tagged.filter(pl.col("current_source") == pl.col("source_sha256"))[
        "source_sha256"
    ].unique()
    return tagged.filter(
        (pl.col("current_source") == pl.col("source_sha256"))
        | (
            pl.col("current_source").is_null()
            & pl.col("source_sha256").is_in(live_plates.implode())
        )
    ).drop("current_source")


def affected_patients(frame: pl.DataFrame, registry: Registry, method: Method) -> set[str]:
    """Patients whose results can change because of the sample ids in ``frame``.

    A product reference touches every patient of its lot; on a PCR plate a calibrator is that
    plate's own control and touches only the patients measured on the plate (other plates'
    product wells enter a patient's results as the registered ``donor_reference`` only). A
    dilution-series sample touches every patient (the series sets the assay's LoD/LoQ).
    """
    ids = frame["sample_id"].drop_nulls().unique().to_list() if "sample_id" in frame.columns else []
    rows = registry.samples.filter(pl.col("sample_id").is_in(ids))
    series = series_ids(registry)
    if rows.filter(pl.col("patient_id").is_in(list(series))).height:
        return {p for p in registry.lots if p not in series}
    patients = set(rows.filter(~pl.col("role").is_in(PRODUCT_ROLES))["patient_id"])
    references = PRODUCT_ROLES if method is Method.STR else (Role.DONOR_REFERENCE,)
    lots = set(rows.filter(pl.col("role").is_in(references))["patient_id"])
    patients |= {p for p, lot in registry.lots.items() if lot in lots}
    return patients


def registry_patients(registry: Registry) -> set[str]:
    """Every patient in the sample registry (product lots excluded)."""
    people = registry.samples.filter(~pl.col("role").is_in(PRODUCT_ROLES))["patient_id"]
    return {str(p) for p in people.unique().to_list()} | set(registry.lots)
