"""Derived tables rebuilt from the raw tables, for the patients a change touches.

``chimerism/`` and ``markers/`` of a patient are recomputed from the current observations of
every method (see :func:`chimera.registry.current_observations`) with the registry's samples,
so the order files arrive in does not matter and a re-run adds nothing. Dilution series set
the assay limits first (``assay_limits/``). A patient is marked dirty before its tables are
rewritten and cleared after, so a crash leaves at worst a dirty patient that
:func:`recover_dirty` rebuilds on the next run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime

import polars as pl

from chimera.calculate import ddpcr, qpcr, str_chimerism
from chimera.calculate.limits import (
    MARKER_COLUMNS,
    RESULT_COLUMNS,
    MethodOutput,
    limits_from_dilution_series,
    summarise_dilution_series,
)
from chimera.calculate.reconcile import choose_headline
from chimera.registry import (
    Registry,
    current_observations,
    read_observations,
    read_registry,
    series_ids,
)
from chimera.settings import Settings
from chimera.warehouse import (
    ASSAY_LIMITS,
    CHIMERISM,
    MARKERS,
    OBSERVATIONS,
    PIPELINE_VERSION,
    Warehouse,
)
from schemas.vocab import PRODUCT_ROLES, Method, Role

REPORTED_ROLES = (Role.POST_DOSE, Role.DILUTION_STANDARD)
"""Roles whose results are reported (a dilution standard is measured like a post-dose sample)."""


def _compute(
    method: Method, observations: pl.DataFrame, samples: pl.DataFrame, settings: Settings
) -> MethodOutput:
    compute: dict[Method, Callable[..., MethodOutput]] = {
        Method.STR: lambda o, s: str_chimerism.compute_str_chimerism(o, s, settings=settings.str),
        Method.QPCR: lambda o, s: qpcr.compute_qpcr_chimerism(o, s, settings=settings.qpcr),
        Method.DDPCR: lambda o, s: ddpcr.compute_ddpcr_chimerism(o, s, settings=settings.ddpcr),
    }
    return compute[method](observations.lazy(), samples.lazy())


def _patient_samples(registry: Registry, patient: str) -> pl.DataFrame:
    """The patient's samples plus the product samples of their lot, with ``product_lot`` set."""
    lot = registry.lots.get(patient)
    own = registry.patient_samples(patient).with_columns(
        product_lot=pl.lit(lot, dtype=pl.String),
        # A dilution standard is measured exactly like a post-dose sample of its series.
        role=pl.when(pl.col("role") == Role.DILUTION_STANDARD)
        .then(pl.lit(Role.POST_DOSE))
        .otherwise(pl.col("role")),
    )
    product = registry.samples.filter(
        (pl.col("patient_id") == (lot or "")) & pl.col("role").is_in(PRODUCT_ROLES)
    ).with_columns(product_lot=pl.col("patient_id"))
    optional = [c for c in ("specimen", "cell_bank") if c in registry.samples.columns]
    return pl.concat([own, product], how="vertical_relaxed").select(
        "sample_id", "patient_id", "role", "product_lot", *optional
    )


@dataclass(frozen=True)
class CurrentRows:
    """One method's current raw rows, indexed so that one patient's share is cheap to take."""

    method: Method
    frame: pl.DataFrame
    """Every current row, with :data:`_ROW` (its position, to keep the rows' order)."""
    by_sample: dict[str, pl.DataFrame]
    by_source: dict[str, pl.DataFrame]
    references: pl.DataFrame
    """Rows of registered product references (``donor_reference``), every file."""

    def sources_of(self, sample_ids: Iterable[str]) -> set[str]:
        """The files holding any of these samples."""
        return {
            sha
            for sid in sample_ids
            if sid in self.by_sample
            for sha in self.by_sample[sid]["source_sha256"].unique().to_list()
        }

    def take(self, sample_ids: Iterable[str] = (), sources: Iterable[str] = ()) -> pl.DataFrame:
        """Rows of these samples and of these files (each row once, in stored order)."""
        parts = [self.by_source[s] for s in sorted(set(sources)) if s in self.by_source]
        taken = set(sources)
        parts += [
            rows.filter(~pl.col("source_sha256").is_in(list(taken)))
            for sid in sorted(set(sample_ids))
            if (rows := self.by_sample.get(sid)) is not None
        ]
        if not parts:
            return self.frame.clear()
        return pl.concat(parts).unique(_ROW, keep="first").sort(_ROW)


_ROW = "__row"


def index_current(method: Method, current: pl.DataFrame, registry: Registry) -> CurrentRows:
    """Index one method's current rows by sample and by file."""
    frame = current.with_row_index(_ROW)
    references = registry.samples.filter(pl.col("role") == Role.DONOR_REFERENCE)["sample_id"]
    return CurrentRows(
        method,
        frame,
        {
            str(k[0]): v
            for k, v in frame.partition_by("sample_id", as_dict=True).items()
            if k[0] is not None
        },
        {str(k[0]): v for k, v in frame.partition_by("source_sha256", as_dict=True).items()},
        frame.filter(pl.col("sample_id").is_in(references.implode())),
    )


def _method_rows(
    rows: CurrentRows, patient: str, registry: Registry, settings: Settings
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Results and marker rows of one patient by one method, with the source of each sample."""
    method = rows.method
    samples = _patient_samples(registry, patient)
    ids = samples["sample_id"].to_list()
    own = registry.patient_samples(patient)
    post_dose = own.filter(pl.col("role").is_in(REPORTED_ROLES))
    if not rows.sources_of(post_dose["sample_id"].to_list()):
        return pl.DataFrame(schema=RESULT_COLUMNS), pl.DataFrame(schema=MARKER_COLUMNS)
    if method == Method.STR:
        observations = rows.take(sample_ids=ids)
    else:
        # Plates that hold the patient's own samples, with every well on them: a calibrator is
        # its plate's own control. The product's registered reference (donor_reference) comes
        # from every plate (ddPCR zygosity, marker carriage); every DNA sample on the plates
        # gets its manifest role (never the instrument's type).
        plates = rows.sources_of(own["sample_id"].to_list())
        references = rows.references["sample_id"].unique().to_list()
        observations = rows.take(sample_ids=references, sources=plates)
        others = registry.samples.filter(
            pl.col("sample_id").is_in(observations["sample_id"].unique().implode())
            & ~pl.col("sample_id").is_in(samples["sample_id"].implode())
            & ~pl.col("role").is_in(REPORTED_ROLES)
        ).with_columns(
            product_lot=pl.when(pl.col("role").is_in(PRODUCT_ROLES))
            .then(pl.col("patient_id"))
            .otherwise(pl.col("product_lot"))
        )
        samples = pl.concat([samples, others.select(samples.columns)], how="vertical_relaxed")
    observations = observations.drop(_ROW)
    output = _compute(
        method,
        observations.drop("source_file", "ingested_at", "pipeline_version", strict=False),
        samples,
        settings,
    )
    # PCR results name their plate (one result per sample x plate); STR its first source.
    sources = observations.group_by("sample_id", "source_sha256").agg(
        pl.col("source_file").first(), pl.col("ingested_at").first()
    )
    first = sources.group_by("sample_id").agg(pl.col("source_sha256").min().alias("_first"))

    def with_source(frame: pl.DataFrame) -> pl.DataFrame:
        return (
            frame.filter(pl.col("sample_id").is_in(post_dose["sample_id"].implode()))
            .join(first, on="sample_id", how="left")
            .with_columns(source_sha256=pl.coalesce("source_sha256", "_first"))
            .drop("_first")
            .join(sources, on=["sample_id", "source_sha256"], how="left")
        )

    return with_source(output.results), with_source(output.markers)


def assay_limits(
    registry: Registry, current: dict[Method, CurrentRows], *, settings: Settings
) -> tuple[pl.DataFrame, Settings]:
    """LoD/LoQ per method from dilution series, and the settings that apply them.

    Each series (``dilution_standard`` samples with ``nominal_pct``, the diluent DNA as the
    series' ``recipient_baseline``) is computed like a patient with the configured limits; the
    most conservative series per method then replaces the configured assay LoD/LoQ (STR, qPCR)
    or sets a floor under the sample-specific Poisson limits (ddPCR). Without a series the
    configured values stay.
    """
    rows: list[dict[str, object]] = []
    effective = settings
    nominal = registry.samples.select("sample_id", "nominal_pct")
    for method, method_rows in current.items():
        found: list[tuple[float | None, float | None, int]] = []
        for series in sorted(series_ids(registry)):
            results, _ = _method_rows(method_rows, series, registry, settings)
            if results.height == 0:
                continue
            joined = results.join(nominal, on="sample_id", how="inner")
            levels = summarise_dilution_series(
                [
                    (float(n), str(s), v)
                    for n, s, v in joined.select(
                        "nominal_pct", "result_status", "pct_ink"
                    ).iter_rows()
                ]
            )
            lod, loq = limits_from_dilution_series(levels)
            found.append((lod, loq, len(rows)))
            rows.append(
                {
                    "source_sha256": results["source_sha256"].drop_nulls().sort()[0],
                    "pipeline_version": PIPELINE_VERSION,
                    "ingested_at": results["ingested_at"].max(),
                    "method": method,
                    "series_id": series,
                    "lod_pct": lod,
                    "loq_pct": loq,
                    "n_levels": len(levels),
                    "levels": json.dumps([level.__dict__ for level in levels]),
                    "applied": False,
                }
            )
        with_lod = [f for f in found if f[0] is not None]
        if with_lod:
            lod, loq, index = max(with_lod, key=lambda f: (f[0], f[1] or 0.0))
            rows[index]["applied"] = True
            effective = _with_limits(effective, method, lod=float(lod or 0.0), loq=loq)
    return pl.DataFrame(rows, schema=ASSAY_LIMITS.schema), effective


def _with_limits(settings: Settings, method: Method, *, lod: float, loq: float | None) -> Settings:
    if method == Method.STR:
        loq_value = max(loq or settings.str.loq_pct, lod)
        return replace(settings, str=replace(settings.str, lod_pct=lod, loq_pct=loq_value))
    if method == Method.QPCR:
        loq_value = max(loq or settings.qpcr.loq_pct, lod)
        return replace(settings, qpcr=replace(settings.qpcr, lod_pct=lod, loq_pct=loq_value))
    ddpcr_settings = replace(settings.ddpcr, validated_lod_pct=lod, validated_loq_pct=loq)
    return replace(settings, ddpcr=ddpcr_settings)


def recompute_patients(
    warehouse: Warehouse,
    patients: Iterable[str],
    *,
    settings: Settings,
    now: datetime,  # noqa: ARG001 - part of every writer's signature; derived rows keep their source's time
) -> None:
    """Rebuild ``chimerism/`` and ``markers/`` for ``patients`` from the raw tables.

    Rows of an earlier export of the same sample x method are kept, flagged ``superseded``.
    """
    todo = set(patients)
    if not todo:
        return
    warehouse.mark_dirty(todo)
    registry = read_registry(warehouse)
    current = {
        m: index_current(m, current_observations(read_observations(warehouse, m)), registry)
        for m in OBSERVATIONS
    }
    limits, settings = assay_limits(registry, current, settings=settings)
    warehouse.write_single(ASSAY_LIMITS, limits)
    chimerism, markers = {}, {}
    for patient in sorted(todo - series_ids(registry)):
        chimerism[patient], markers[patient] = _patient_tables(
            warehouse, patient, registry, current, settings
        )
    warehouse.write_parts(CHIMERISM, chimerism)
    warehouse.write_parts(MARKERS, markers)
    warehouse.clear_dirty(todo)


def _patient_tables(
    warehouse: Warehouse,
    patient: str,
    registry: Registry,
    current: dict[Method, CurrentRows],
    settings: Settings,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One patient's new ``chimerism`` and ``markers`` rows, earlier exports' rows kept."""
    results, markers = [], []
    for rows in current.values():
        r, m = _method_rows(rows, patient, registry, settings)
        results.append(r)
        markers.append(m)
    chimerism = _finish_chimerism(
        pl.concat(results, how="diagonal_relaxed"), patient, registry, settings
    )
    marker_rows = _finish_markers(pl.concat(markers, how="diagonal_relaxed"), patient)
    key = ["sample_id", "method", "source_sha256"]
    return (
        _keep_superseded(chimerism, warehouse.read_part(CHIMERISM, patient), key),
        _keep_superseded(marker_rows, warehouse.read_part(MARKERS, patient), key),
    )


def _keep_superseded(
    new: pl.DataFrame, previous: pl.DataFrame | None, key: list[str]
) -> pl.DataFrame:
    if previous is None or previous.height == 0:
        return new
    current_keys = new.select(key).unique()
    old = previous.join(current_keys, on=key, how="anti").with_columns(superseded=pl.lit(True))
    return pl.concat([new, old.select(new.columns)], how="vertical_relaxed") if old.height else new


def _finish_chimerism(
    results: pl.DataFrame, patient: str, registry: Registry, settings: Settings
) -> pl.DataFrame:
    """Add patient context, study day, absolute counts, headline choice and lineage."""
    columns = list(CHIMERISM.schema)
    if results.height == 0:
        return pl.DataFrame(schema=CHIMERISM.schema)
    first_dose = registry.infusions.filter(pl.col("patient_id") == patient)["infused_at"].min()
    if not isinstance(first_dose, datetime):
        first_dose = None
    context = registry.samples.select(
        "sample_id", "patient_id", "collected_at", "specimen", "wbc_per_ul", "lymphocytes_per_ul"
    )
    frame = results.join(context, on="sample_id", how="left").with_columns(
        # Study day = calendar days (UTC) from the date of the first infusion (day 0).
        study_day=(
            (pl.col("collected_at").dt.date() - pl.lit(first_dose.date()))
            .dt.total_days()
            .cast(pl.Int32)
            if first_dose is not None
            else pl.lit(None, dtype=pl.Int32)
        ),
        # iNK cells/µL = f x the count of the cells the DNA came from: WBC for whole blood,
        # else the lymphocyte count (methods.md section 6).
        ink_cells_per_ul=pl.col("pct_ink")
        / 100
        * pl.coalesce(pl.col("wbc_per_ul"), pl.col("lymphocytes_per_ul")),
        superseded=pl.lit(False),
        pipeline_version=pl.lit(PIPELINE_VERSION),
        source_file=pl.col("source_file").fill_null(""),
    )
    frame = choose_headline(
        frame, settings=settings.reconcile, cd=settings.alerts.critical_difference
    )
    return frame.select(columns).sort("collected_at", "sample_id", "method", nulls_last=True)


def _finish_markers(markers: pl.DataFrame, patient: str) -> pl.DataFrame:
    columns = list(MARKERS.schema)
    if markers.height == 0:
        return pl.DataFrame(schema=MARKERS.schema)
    return markers.with_columns(
        patient_id=pl.lit(patient),
        superseded=pl.lit(False),
        pipeline_version=pl.lit(PIPELINE_VERSION),
        source_file=pl.col("source_file").fill_null(""),
    ).select(columns)


def recompute_or_defer(
    warehouse: Warehouse, patients: set[str], *, settings: Settings, now: datetime, recompute: bool
) -> None:
    """Rebuild ``patients`` now, or only mark them dirty for one rebuild at the end of a batch."""
    if recompute:
        recompute_patients(warehouse, patients, settings=settings, now=now)
    else:
        warehouse.mark_dirty(patients)


def recover_dirty(*, settings: Settings, now: datetime) -> set[str]:
    """Rebuild patients a crash left half-written; return them."""
    warehouse = Warehouse(settings.warehouse)
    dirty = warehouse.dirty_patients()
    if dirty:
        with warehouse.lock():
            recompute_patients(warehouse, dirty, settings=settings, now=now)
    return dirty
