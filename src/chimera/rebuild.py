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
from dataclasses import replace
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
from chimera.lineage import parameters_sha256, record_parameters
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
    own = registry.samples.filter(pl.col("patient_id") == patient).with_columns(
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


def _method_rows(
    method: Method, patient: str, registry: Registry, current: pl.DataFrame, settings: Settings
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Results and marker rows of one patient by one method, with the source of each sample."""
    samples = _patient_samples(registry, patient)
    ids = samples["sample_id"].to_list()
    post_dose = registry.samples.filter(
        (pl.col("patient_id") == patient) & pl.col("role").is_in(REPORTED_ROLES)
    )
    if (
        current.height == 0
        or not current.filter(pl.col("sample_id").is_in(post_dose["sample_id"].implode())).height
    ):
        return pl.DataFrame(schema=RESULT_COLUMNS), pl.DataFrame(schema=MARKER_COLUMNS)
    # Plates that hold the patient's own samples; the product's wells on them come along (a
    # calibrator sits on every plate, so selecting by product samples would take every plate).
    own = registry.samples.filter(pl.col("patient_id") == patient)["sample_id"]
    plates = current.filter(pl.col("sample_id").is_in(own.implode()))["source_sha256"].unique()
    if method == Method.STR:
        observations = current.filter(pl.col("sample_id").is_in(ids))
    else:
        # The product's wells on other plates are its registered reference (ddPCR zygosity);
        # every DNA sample on the plates gets its manifest role (never the instrument's type).
        product = registry.samples.filter(pl.col("role").is_in(PRODUCT_ROLES))["sample_id"]
        observations = current.filter(
            pl.col("source_sha256").is_in(plates.implode())
            | pl.col("sample_id").is_in(product.implode())
        )
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
    registry: Registry, current: dict[Method, pl.DataFrame], *, settings: Settings
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
    for method, observations in current.items():
        found: list[tuple[float | None, float | None, int]] = []
        for series in sorted(series_ids(registry)):
            results, _ = _method_rows(method, series, registry, observations, settings)
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
    now: datetime,
) -> None:
    """Rebuild ``chimerism/`` and ``markers/`` for ``patients`` from the raw tables.

    Rows of an earlier export of the same sample x method are kept, flagged ``superseded``.
    Every row names the settings that computed it (``parameters_sha256``, recorded at ``now``
    in the ``parameters`` table; derived rows keep their source's ``ingested_at``).
    """
    todo = set(patients)
    if not todo:
        return
    warehouse.mark_dirty(todo)
    registry = read_registry(warehouse)
    current = {m: current_observations(read_observations(warehouse, m)) for m in OBSERVATIONS}
    configured = record_parameters(warehouse, settings, now=now)
    limits, settings = assay_limits(registry, current, settings=settings)
    limits = limits.with_columns(parameters_sha256=pl.lit(configured, dtype=pl.String))
    warehouse.write_single(ASSAY_LIMITS, limits)
    effective = record_parameters(warehouse, settings, now=now)
    for patient in sorted(todo - series_ids(registry)):
        results, markers = [], []
        for method, observations in current.items():
            r, m = _method_rows(method, patient, registry, observations, settings)
            results.append(r)
            markers.append(m)
        chimerism = _finish_chimerism(
            pl.concat(results, how="diagonal_relaxed"), patient, registry, settings
        )
        marker_rows = _finish_markers(
            pl.concat(markers, how="diagonal_relaxed"), patient, effective
        )
        previous = warehouse.read_part(CHIMERISM, patient)
        previous_markers = warehouse.read_part(MARKERS, patient)
        chimerism = _keep_superseded(chimerism, previous, ["sample_id", "method", "source_sha256"])
        marker_rows = _keep_superseded(
            marker_rows, previous_markers, ["sample_id", "method", "source_sha256"]
        )
        warehouse.write(CHIMERISM, patient, chimerism)
        warehouse.write(MARKERS, patient, marker_rows)
    warehouse.clear_dirty(todo)


def _keep_superseded(
    new: pl.DataFrame, previous: pl.DataFrame | None, key: list[str]
) -> pl.DataFrame:
    if previous is None or previous.height == 0:
        return new
    current_keys = new.select(key).unique()
    old = previous.join(current_keys, on=key, how="anti").with_columns(superseded=pl.lit(True))
    absent = [pl.lit(None, dtype=new.schema[c]).alias(c) for c in new.columns if c not in old]
    old = old.with_columns(absent)
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
        parameters_sha256=pl.lit(parameters_sha256(settings)),
        source_file=pl.col("source_file").fill_null(""),
    )
    frame = choose_headline(
        frame, settings=settings.reconcile, cd=settings.alerts.critical_difference
    )
    return frame.select(columns).sort("collected_at", "sample_id", "method", nulls_last=True)


def _finish_markers(markers: pl.DataFrame, patient: str, parameters: str) -> pl.DataFrame:
    columns = list(MARKERS.schema)
    if markers.height == 0:
        return pl.DataFrame(schema=MARKERS.schema)
    return markers.with_columns(
        patient_id=pl.lit(patient),
        superseded=pl.lit(False),
        pipeline_version=pl.lit(PIPELINE_VERSION),
        parameters_sha256=pl.lit(parameters),
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
