"""Derived tables rebuilt from the raw tables, for the patients a change touches.

``chimerism/`` and ``markers/`` of a patient are recomputed from the raw rows of every method
(:mod:`chimera.method_rows`; which files count: :func:`chimera.runs.supersession`) with the
registry's samples, so the order files arrive in does not matter and a re-run adds nothing.
Dilution series set the assay limits first (``assay_limits/``); the STR stutter ratios are
measured once per rebuild on every current single-source profile (``stutter_ratios/``). A
patient is marked dirty before its tables are rewritten and cleared after, so a crash leaves at
worst a dirty patient that :func:`recover_dirty` rebuilds on the next run.

Current rows [R] (issue 9): rows of a file a re-export replaced are ``superseded`` with the
reason; of a repeat measurement (one sample on several current files) the latest is current
unless it failed QC (:func:`chimera.registry.mark_repeat_measurements`); the headline is chosen
among current rows only (:func:`chimera.calculate.reconcile.choose_headline`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path

import polars as pl

from chimera.calculate.limits import (
    limits_from_dilution_series,
    summarise_dilution_series,
)
from chimera.calculate.stutter_ratios import (
    STUTTER_COLUMNS,
    estimate_stutter_ratios,
    single_source_samples,
)
from chimera.finish import PatientRows, finish_patients
from chimera.heap import long_lived, set_aside
from chimera.lineage import record_parameters
from chimera.method_cache import Frames, MethodCache, NewEntries, open_cache
from chimera.method_rows import MethodInputs, method_rows, relevant_rows, replaced_rows
from chimera.registry import (
    Registry,
    mark_repeat_measurements,
    read_observations,
    read_registry,
    series_ids,
)
from chimera.runs import split_current
from chimera.settings import Settings
from chimera.warehouse import (
    ASSAY_LIMITS,
    CHIMERISM,
    MARKERS,
    OBSERVATIONS,
    PIPELINE_VERSION,
    STUTTER_RATIOS,
    Warehouse,
    sha256_of,
    write_parquet_atomic,
)
from chimera.workers import WorkerPool, shares, use_pool
from schemas.vocab import Method


def method_inputs(
    warehouse: Warehouse, registry: Registry, *, settings: Settings
) -> dict[Method, MethodInputs]:
    """Every method's raw rows, which files count, and what the calculations share.

    STR gets the stutter table (measured again only when its profiles or settings changed:
    :func:`stutter_estimates`); ddPCR the current qPCR rows, whose plates type genomes no
    ddPCR plate holds. Rows come indexed by sample and file (:class:`chimera.row_index.RowIndex`).
    """
    found = {}
    for method in OBSERVATIONS:
        observations = read_observations(warehouse, method)
        current, supersession = split_current(observations, method)
        found[method] = MethodInputs(method, observations, current, supersession).indexed()
    stutter = stutter_estimates(warehouse, found[Method.STR].current, registry, settings=settings)
    found[Method.STR] = replace(found[Method.STR], stutter=stutter)
    found[Method.DDPCR] = replace(found[Method.DDPCR], screening=found[Method.QPCR].index)
    return found


def stutter_estimates(
    warehouse: Warehouse, peaks: pl.DataFrame, registry: Registry, *, settings: Settings
) -> pl.DataFrame:
    """:func:`~chimera.calculate.stutter_ratios.estimate_stutter_ratios` of the current peaks.

    The estimate depends only on the single-source profiles (which samples, in which files)
    and the STR settings, so it is kept in ``.cache/`` under a hash of those and measured again
    only when one of them changed (a new STR run with a product reference, a new baseline).
    """
    if not settings.str.stutter_correction or peaks.height == 0:
        return pl.DataFrame(schema=STUTTER_COLUMNS)
    single = single_source_samples(registry.samples).select("sample_id", "patient_id", "role")
    profiles = peaks.filter(pl.col("sample_id").is_in(single["sample_id"].implode()))
    key = sha256_of(
        json.dumps(
            [
                sorted(profiles["source_sha256"].unique().to_list()),
                single.sort("sample_id").rows(),
                repr(settings.str),
            ]
        ).encode()
    )
    cached = warehouse.root / ".cache" / f"stutter-{key}.snapshot"
    if cached.is_file():
        return pl.read_parquet(cached)
    stutter = estimate_stutter_ratios(peaks, registry.samples, settings=settings.str)
    for old in cached.parent.glob("stutter-*.snapshot"):
        old.unlink(missing_ok=True)
    write_parquet_atomic(stutter, cached)
    return stutter


def stutter_table(stutter: pl.DataFrame, peaks: pl.DataFrame, registry: Registry) -> pl.DataFrame:
    """The stutter estimates as warehouse rows, lineage = the single-source files measured.

    ``source_sha256`` is the SHA-256 of the sorted hashes of the current STR files holding a
    single-source profile; ``ingested_at`` the latest of them.
    """
    if stutter.height == 0:
        return pl.DataFrame(schema=STUTTER_RATIOS.schema)
    single = single_source_samples(registry.samples)["sample_id"]
    files = peaks.filter(pl.col("sample_id").is_in(single.implode()))
    hashes = sorted(files["source_sha256"].unique().to_list())
    return stutter.with_columns(
        source_sha256=pl.lit(sha256_of("".join(hashes).encode())),
        pipeline_version=pl.lit(PIPELINE_VERSION),
        ingested_at=pl.lit(files["ingested_at"].max(), dtype=pl.Datetime("us", "UTC")),
    ).select(list(STUTTER_RATIOS.schema))


def assay_limits(
    registry: Registry,
    inputs: dict[Method, MethodInputs],
    *,
    settings: Settings,
    cache: MethodCache | None = None,
) -> tuple[pl.DataFrame, Settings]:
    """LoD/LoQ per method from dilution series, and the settings that apply them.

    Each series (``dilution_standard`` samples with ``nominal_pct``, the diluent DNA as the
    series' ``recipient_baseline``) is computed like a patient with the configured limits; the
    most conservative series per method then replaces the configured assay LoD/LoQ (STR, qPCR)
    or sets a floor under the sample-specific Poisson limits (ddPCR). Without a series the
    configured values stay. A level measured on several plates counts each plate's result.
    A series' rows come from the ``cache`` when none of their inputs changed.
    """
    rows: list[dict[str, object]] = []
    effective = settings
    nominal = registry.samples.select("sample_id", "nominal_pct")
    for method, method_input in inputs.items():
        found: list[tuple[float | None, float | None, int]] = []
        for series in sorted(series_ids(registry)):
            results = _series_rows(method_input, series, registry, settings, cache)
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


def _series_rows(
    inputs: MethodInputs,
    series: str,
    registry: Registry,
    settings: Settings,
    cache: MethodCache | None,
) -> pl.DataFrame:
    """A dilution series' results by one method with the configured limits."""

    def compute(method_input: MethodInputs, rows: pl.DataFrame) -> Frames:
        return method_rows(method_input, series, registry, settings, relevant=rows)

    if cache is None:
        return compute(inputs, relevant_rows(inputs, series, registry, settings))[0]
    return cache.rows(inputs, series, settings, compute, use="series")[0]


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
    pool: WorkerPool | None = None,
) -> None:
    """Rebuild ``chimerism/`` and ``markers/`` for ``patients`` from the raw tables.

    Rows of a file a re-export replaced, and the other rows of a repeat measurement, are kept
    with ``superseded = true`` and the reason (module docstring).
    Every row names the settings that computed it (``parameters_sha256``, recorded at ``now``
    in the ``parameters`` table; derived rows keep their source's ``ingested_at``). A
    patient's (or series') rows by one method are reused from ``.cache/`` while nothing they
    read changed (:mod:`chimera.method_cache`). With a ``pool`` and at least
    ``scale.pool_min_patients`` patients, its workers compute the patients.
    """
    given, todo = settings, set(patients)
    if not todo:
        return
    warehouse.mark_dirty(todo)
    with long_lived():
        registry = read_registry(warehouse)
        inputs = method_inputs(warehouse, registry, settings=settings)
        stutter = inputs[Method.STR]
        warehouse.write_single(
            STUTTER_RATIOS, stutter_table(stutter.stutter, stutter.current, registry)
        )
        configured = record_parameters(warehouse, settings, now=now)
        cache = open_cache(warehouse.root, registry, inputs)
        set_aside()  # the inputs and cache live through the rebuild (chimera.heap)
        limits, settings = assay_limits(registry, inputs, settings=settings, cache=cache)
        limits = limits.with_columns(parameters_sha256=pl.lit(configured, dtype=pl.String))
        warehouse.write_single(ASSAY_LIMITS, limits)
        record_parameters(warehouse, settings, now=now)
        job = RebuildJob(warehouse.root, given, settings, uuid.uuid4().hex)
        chimerism, markers = _patients_rows(
            sorted(todo - series_ids(registry)), job, registry, inputs, cache, pool
        )
        threads = settings.scale.write_threads(len(chimerism), settings.scale.pool_min_patients)
        warehouse.write_parts(CHIMERISM, chimerism, threads=threads)
        warehouse.write_parts(MARKERS, markers, threads=threads)
        cache.save()
    warehouse.clear_dirty(todo)


@dataclass(frozen=True)
class RebuildJob:
    """One rebuild as a worker sees it (:func:`patients_in_worker`): picklable, no frames."""

    warehouse: Path
    given: Settings
    """The settings the rebuild was called with (the stutter table is kept under them)."""
    effective: Settings
    """After the assay limits (:func:`assay_limits`): what the rows are computed with."""
    token: str
    """Names the rebuild: a worker reads the warehouse again when it changes."""


_LOADED: dict[str, tuple[Registry, dict[Method, MethodInputs], MethodCache]] = {}
"""A worker's registry, method inputs and cache of the rebuild it last worked for."""


def patients_in_worker(job: RebuildJob, patients: Sequence[str]) -> tuple[Finished, NewEntries]:
    """:func:`finished_patients` of ``patients`` in a worker, and the cache entries it made.

    The worker reads the registry and the method inputs from the warehouse files, flushed
    before the rebuild began: the frames this rebuild read, so the same rows and the same
    cache fingerprints as in the main process (which alone saves the cache).
    """
    if job.token not in _LOADED:
        _LOADED.clear()
        warehouse = Warehouse(job.warehouse)
        registry = read_registry(warehouse)
        inputs = method_inputs(warehouse, registry, settings=job.given)
        _LOADED[job.token] = (registry, inputs, open_cache(warehouse.root, registry, inputs))
        set_aside()  # kept for the worker's life, which ends with the pool (chimera.heap)
    registry, inputs, cache = _LOADED[job.token]
    finished = finished_patients(patients, registry, inputs, settings=job.effective, cache=cache)
    return finished, cache.take_new()


Finished = tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]
"""Patients' finished ``chimerism`` and ``markers`` rows (:func:`chimera.finish.finish_patients`)."""


def finished_patients(
    patients: Sequence[str],
    registry: Registry,
    inputs: dict[Method, MethodInputs],
    *,
    settings: Settings,
    cache: MethodCache,
) -> Finished:
    """:func:`patient_results` of each patient, finished in one pass.

    The finish works per patient, so a share of the patients gets what all of them together get.
    """
    found = {
        p: patient_results(p, registry, inputs, settings=settings, cache=cache) for p in patients
    }
    return finish_patients(found, registry, settings)


def _patients_rows(
    patients: list[str],
    job: RebuildJob,
    registry: Registry,
    inputs: dict[Method, MethodInputs],
    cache: MethodCache,
    pool: WorkerPool | None,
) -> Finished:
    """:func:`finished_patients` of the patients (sorted), here and by the pool's workers."""
    settings = job.effective

    def here(share: Sequence[str]) -> tuple[Finished, NewEntries]:
        return finished_patients(share, registry, inputs, settings=settings, cache=cache), {}

    if not use_pool(pool, len(patients), settings.scale.pool_min_patients):
        return here(patients)[0]
    assert pool is not None
    # The workers read the raw tables: snapshots written now spare them reading every file.
    Warehouse(job.warehouse).persist_snapshots()
    chimerism: dict[str, pl.DataFrame] = {}
    markers: dict[str, pl.DataFrame] = {}
    work = partial(patients_in_worker, job)
    for (rows, detail), entries in pool.map(work, shares(patients, pool.pieces), here=here):
        chimerism.update(rows)
        markers.update(detail)
        cache.adopt(entries)
    return chimerism, markers


def patient_results(
    patient: str,
    registry: Registry,
    inputs: dict[Method, MethodInputs],
    *,
    settings: Settings,
    cache: MethodCache | None = None,
) -> PatientRows:
    """One patient's rows by every method, repeat measurements marked (:data:`PatientRows`).

    With a ``cache``, a method's rows are computed again only when one of their inputs changed
    (:mod:`chimera.method_cache`); the headline choice (:func:`chimera.finish.finish_patients`) always runs
    over every method.
    """
    results, markers = [], []
    for method_input in inputs.values():

        def compute(method_input: MethodInputs, rows: pl.DataFrame) -> Frames:
            return method_tables(method_input, patient, registry, settings, rows)

        if cache is None:
            found = compute(method_input, relevant_rows(method_input, patient, registry, settings))
        else:
            found = cache.rows(method_input, patient, settings, compute, use="patient")
        results.append(found[0])
        markers.append(found[1])
    frame = pl.concat(results, how="diagonal_relaxed")
    if frame.height == 0:
        return None
    if "superseded_reason" not in frame.columns:
        frame = frame.with_columns(superseded_reason=pl.lit(None, dtype=pl.String))
    return mark_repeat_measurements(frame), pl.concat(markers, how="diagonal_relaxed")


def method_tables(
    inputs: MethodInputs, patient: str, registry: Registry, settings: Settings, rows: pl.DataFrame
) -> Frames:
    """One method's current and superseded rows of a patient, before the patient-wide finish.

    ``rows``: the patient's relevant current rows (:func:`chimera.method_rows.relevant_rows`).
    """
    current, detail = method_rows(inputs, patient, registry, settings, relevant=rows)
    results, markers = [current.with_columns(superseded=pl.lit(False))], [detail]
    old, old_detail = replaced_rows(inputs, patient, registry, settings)
    if old.height:
        results.append(old.with_columns(superseded=pl.lit(True)))
        markers.append(old_detail)
    return pl.concat(results, how="diagonal_relaxed"), pl.concat(markers, how="diagonal_relaxed")


def recover_dirty(*, settings: Settings, now: datetime) -> set[str]:
    """Rebuild patients a crash left half-written; return them."""
    warehouse = Warehouse(settings.warehouse)
    dirty = warehouse.dirty_patients()
    if dirty:
        with warehouse.lock():
            recompute_patients(warehouse, dirty, settings=settings, now=now)
    return dirty
