"""The one path from a file to warehouse rows, used by the CLI and by every Prefect flow.

``ingest_path`` = read -> sha256 -> duplicate check -> detect -> parse + validate ->
plausibility -> prerequisites (else ``waiting``) -> write raw rows -> recompute the affected
patients' chimerism -> ledger -> archive (or quarantine with a report).

Derived tables are recomputed from the raw tables for the patients a file touches, so the
order files arrive in does not matter, a re-run adds nothing, and a crash leaves at worst a
patient marked dirty, which the next run rebuilds first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

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
from chimera.detect import Assay, Detection, ExportFormat, detect_format
from chimera.errors import ChimeraError, Problem, RejectReason
from chimera.inbox import archive_file, quarantine_file
from chimera.parsers import cfx, genemapper, quantasoft, quantstudio
from chimera.parsers.manifest import parse_infusion_log, parse_manifest
from chimera.settings import Settings
from chimera.validation import validate_frame
from chimera.warehouse import OBSERVATION_TABLES, PIPELINE_VERSION, Warehouse, sha256_of
from schemas.base import polars_schema
from schemas.vocab import FileStatus
from schemas.warehouse import AssayLimits, Chimerism, Infusions, IngestLog, Markers, Samples

UTC_US = pl.Datetime("us", "UTC")
SAMPLE_SCHEMA = polars_schema(Samples)
INFUSION_SCHEMA = polars_schema(Infusions)
LEDGER_SCHEMA = polars_schema(IngestLog)
ASSAY_LIMIT_COLUMNS = polars_schema(AssayLimits)
CONTROL_TASKS = ("ntc", "standard", "negative_control", "positive_control")
SERIES_ROLE = "dilution_standard"
"""Known % iNK mixtures of the product; their ``patient_id`` names the dilution series."""
REPORTED_ROLES = ("post_dose", SERIES_ROLE)
CONTROL_SAMPLE_NAMES = (
    r"(?i)^\s*(ntc|nac|h2o|water|blank|no[ _-]?template|neg(ative)?[ _-]?(ctrl|control))\b"
)
"""Well names labs give no-template controls; such wells need no manifest row."""
CONTROL_SAMPLE_TYPES = ("ntc", "negctrl", "posctrl", "negative control", "positive control")


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file."""

    file_name: str
    sha256: str
    size_bytes: int
    status: FileStatus
    detected_format: str | None = None
    reason: str | None = None
    reason_code: str | None = None
    problems: tuple[Problem, ...] = ()
    rows: int = 0
    patients: frozenset[str] = frozenset()
    supersedes: str | None = None
    destination: Path | None = None


@dataclass
class _Registry:
    """Current registry rows: latest manifest row per sample, latest log row per dose."""

    samples: pl.DataFrame
    infusions: pl.DataFrame
    lots: dict[str, str | None] = field(default_factory=dict)


def parse_export(
    data: bytes, detection: Detection, *, file_name: str, settings: Settings
) -> pl.DataFrame:
    """Parse an export of a detected format into its validated tidy frame."""
    fmt = detection.format
    if fmt is ExportFormat.MANIFEST:
        return parse_manifest(data, file_name=file_name)
    if fmt is ExportFormat.INFUSION_LOG:
        return parse_infusion_log(data, file_name=file_name)
    if fmt in (ExportFormat.GENEMAPPER_SIZING, ExportFormat.GENEMAPPER_GENOTYPES):
        return genemapper.parse_genemapper(data, file_name=file_name)
    if fmt in (ExportFormat.APPBIO_TEXT, ExportFormat.APPBIO_CSV, ExportFormat.APPBIO_EXCEL):
        return quantstudio.parse_appbio(data, file_name=file_name)
    if fmt is ExportFormat.CFX_CSV:
        return cfx.parse_cfx(data, file_name=file_name)
    if fmt is ExportFormat.DDPCR_AMPLITUDE:
        quantasoft.reject_amplitude_file(file_name)
    return quantasoft.parse_ddpcr(
        data, file_name=file_name, droplet_volume_nl=settings.ddpcr.droplet_volume_nl
    )


def check_plausible(
    frame: pl.DataFrame, assay: Assay, *, settings: Settings, file_name: str
) -> None:
    """Reject readable exports that hold no chimerism assay (no reference gene, no markers)."""
    if assay is Assay.QPCR:
        qpcr.assert_chimerism_plate(frame, settings=settings.qpcr, file_name=file_name)
    elif assay is Assay.DDPCR:
        ddpcr.assert_chimerism_plate(frame, settings=settings.ddpcr, file_name=file_name)


# ---------------------------------------------------------------- registry reads


def read_ledger(warehouse: Warehouse) -> pl.DataFrame:
    """The whole ledger, oldest event first."""
    return warehouse.read("ingest_log", LEDGER_SCHEMA).sort("logged_at")


def read_registry(warehouse: Warehouse) -> _Registry:
    """Current samples and doses, with the product lot each patient received."""
    samples = (
        warehouse.read("samples", SAMPLE_SCHEMA)
        .sort("ingested_at", "source_sha256")
        .unique("sample_id", keep="last", maintain_order=True)
    )
    infusions = (
        warehouse.read("infusions", INFUSION_SCHEMA)
        .sort("ingested_at", "source_sha256")
        .unique(["patient_id", "dose_number"], keep="last", maintain_order=True)
        .sort("patient_id", "dose_number")
    )
    registry = _Registry(samples, infusions)
    lots = samples.filter(pl.col("role") == "donor_reference")["patient_id"].unique().to_list()
    for patient in samples.filter(~pl.col("role").is_in(["donor_reference", "calibrator"]))[
        "patient_id"
    ].unique():
        registry.lots[patient] = _lot_for(patient, samples, infusions, lots)
    return registry


def _lot_for(
    patient: str, samples: pl.DataFrame, infusions: pl.DataFrame, lots: list[str]
) -> str | None:
    """The product lot a patient received: manifest, else infusion log, else the only lot."""
    for table in (samples, infusions):
        named = table.filter(
            (pl.col("patient_id") == patient) & pl.col("product_lot").is_not_null()
        )
        if named.height:
            return str(named["product_lot"][-1])
    return lots[0] if len(lots) == 1 else None


def _observations(warehouse: Warehouse, method: str) -> pl.DataFrame:
    return warehouse.read(OBSERVATION_TABLES[method])


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


# ---------------------------------------------------------------- prerequisites


def _assay_sample_ids(frame: pl.DataFrame) -> list[str]:
    """Sample ids in an assay frame that must be in a manifest (controls excluded)."""
    keep = pl.col("sample_id").is_not_null() & (pl.col("sample_id").str.strip_chars() != "")
    if "task" in frame.columns:
        keep &= ~pl.col("task").is_in(CONTROL_TASKS)
    if "sample_type" in frame.columns:
        keep &= pl.col("sample_type").is_null() | ~pl.col("sample_type").str.to_lowercase().is_in(
            CONTROL_SAMPLE_TYPES
        )
    if "task" in frame.columns or "sample_type" in frame.columns:  # PCR plates
        keep &= ~pl.col("sample_id").str.contains(CONTROL_SAMPLE_NAMES)
    return sorted(frame.filter(keep)["sample_id"].unique().to_list())


_INSTRUMENT_SUFFIX = re.compile(r"\.(fsa|hid|ab1|eds|sds)$", re.IGNORECASE)


def resolve_sample_ids(frame: pl.DataFrame, known: set[str]) -> pl.DataFrame:
    """Map export sample names to manifest ``sample_id`` s when the name only embeds the id.

    GeneMapper's Sizing Table names samples by their run file (``A01_P01-D004.fsa``). A name not
    in the manifest is mapped when, after dropping an instrument file suffix, it equals a
    manifest id or contains exactly one as a whole token (the longest when one id contains
    another, so ``P01-D003-PRE`` wins over ``P01-D003``). Ambiguous or unmatched names stay.
    """
    if frame.height == 0 or "sample_id" not in frame.columns:
        return frame
    names = set(frame["sample_id"].drop_nulls().unique().to_list()) - known
    mapping: dict[str, str] = {}
    for name in names:
        stem = _INSTRUMENT_SUFFIX.sub("", name.strip())
        if stem in known:
            mapping[name] = stem
            continue
        hits = [
            k
            for k in known
            if k and re.search(rf"(?<![A-Za-z0-9]){re.escape(k)}(?![A-Za-z0-9])", stem)
        ]
        longest = [h for h in hits if not any(h != o and h in o for o in hits)]
        if len(longest) == 1:
            mapping[name] = longest[0]
    if not mapping:
        return frame
    return frame.with_columns(pl.col("sample_id").replace(mapping))


def missing_prerequisites(
    frame: pl.DataFrame,
    method: str,
    *,
    registry: _Registry,
    measured: set[str],
    baselines_measured: set[str],
) -> list[str]:
    """What an assay file still waits for: manifest rows, a baseline, the product reference.

    ``measured`` = sample ids already measured by this method (stored or in this file);
    ``baselines_measured`` = sample ids that count as a measured baseline: for STR the same
    method (the genotype is needed), for qPCR/ddPCR any PCR plate (marker screening is often
    done once, by one PCR method). A product reference must be measured by the same method.
    """
    ids = _assay_sample_ids(frame)
    known = registry.samples.filter(pl.col("sample_id").is_in(ids))
    unknown = sorted(set(ids) - set(known["sample_id"].to_list()))
    waits = []
    if unknown:
        shown = ", ".join(unknown[:8]) + (
            f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        )
        waits.append(f"manifest rows for sample(s) {shown}")
    reference_roles = ["donor_reference"] if method == "STR" else ["donor_reference", "calibrator"]
    references = registry.samples.filter(
        pl.col("sample_id").is_in(list(measured)) & pl.col("role").is_in(reference_roles)
    )
    baselines = registry.samples.filter(
        pl.col("sample_id").is_in(list(baselines_measured))
        & (pl.col("role") == "recipient_baseline")
    )
    for patient in sorted(known.filter(pl.col("role") == "post_dose")["patient_id"].unique()):
        lot = registry.lots.get(patient)
        if lot is None:
            waits.append(
                f"the product lot of patient {patient} (add product_lot to the manifest or infusion log)"
            )
            continue
        if not baselines.filter(pl.col("patient_id") == patient).height:
            kind = "an STR" if method == "STR" else "a qPCR or ddPCR"
            waits.append(f"{kind} result of patient {patient}'s baseline (recipient_baseline)")
        if not references.filter(pl.col("patient_id") == lot).height:
            waits.append(f"a {method} result of the iNK product lot {lot} (donor_reference)")
    return waits


def _ids(frame: pl.DataFrame) -> set[str]:
    if frame.height == 0 or "sample_id" not in frame.columns:
        return set()
    return set(frame["sample_id"].drop_nulls().to_list())


# ---------------------------------------------------------------- recompute


def _compute(
    method: str, observations: pl.DataFrame, samples: pl.DataFrame, settings: Settings
) -> MethodOutput:
    compute: dict[str, Callable[..., MethodOutput]] = {
        "STR": lambda o, s: str_chimerism.compute_str_chimerism(o, s, settings=settings.str),
        "qPCR": lambda o, s: qpcr.compute_qpcr_chimerism(o, s, settings=settings.qpcr),
        "ddPCR": lambda o, s: ddpcr.compute_ddpcr_chimerism(o, s, settings=settings.ddpcr),
    }
    return compute[method](observations.lazy(), samples.lazy())


def _patient_samples(registry: _Registry, patient: str) -> pl.DataFrame:
    """The patient's samples plus the product samples of their lot, with ``product_lot`` set."""
    lot = registry.lots.get(patient)
    own = registry.samples.filter(pl.col("patient_id") == patient).with_columns(
        product_lot=pl.lit(lot, dtype=pl.String),
        # A dilution standard is measured exactly like a post-dose sample of its series.
        role=pl.when(pl.col("role") == SERIES_ROLE)
        .then(pl.lit("post_dose"))
        .otherwise(pl.col("role")),
    )
    product = registry.samples.filter(
        (pl.col("patient_id") == (lot or ""))
        & pl.col("role").is_in(["donor_reference", "calibrator"])
    ).with_columns(product_lot=pl.col("patient_id"))
    return pl.concat([own, product], how="vertical_relaxed").select(
        "sample_id", "patient_id", "role", "product_lot"
    )


def _method_rows(
    method: str, patient: str, registry: _Registry, current: pl.DataFrame, settings: Settings
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
    if method == "STR":
        observations = current.filter(pl.col("sample_id").is_in(ids))
    else:
        observations = current.filter(pl.col("source_sha256").is_in(plates.implode()))
    output = _compute(
        method,
        observations.drop("source_file", "ingested_at", "pipeline_version", strict=False),
        samples,
        settings,
    )
    sources = observations.group_by("sample_id").agg(
        pl.col("source_sha256").first(),
        pl.col("source_file").first(),
        pl.col("ingested_at").first(),
    )
    results = output.results.filter(
        pl.col("sample_id").is_in(post_dose["sample_id"].implode())
    ).join(sources, on="sample_id", how="left")
    markers = output.markers.filter(
        pl.col("sample_id").is_in(post_dose["sample_id"].implode())
    ).join(sources, on="sample_id", how="left")
    return results, markers


def series_ids(registry: _Registry) -> set[str]:
    """Names of the dilution series in the registry (they are not patients)."""
    return set(registry.samples.filter(pl.col("role") == SERIES_ROLE)["patient_id"].to_list())


def assay_limits(
    registry: _Registry, current: dict[str, pl.DataFrame], *, settings: Settings
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
    return pl.DataFrame(rows, schema=ASSAY_LIMIT_COLUMNS), effective


def _with_limits(settings: Settings, method: str, *, lod: float, loq: float | None) -> Settings:
    if method == "STR":
        loq_value = max(loq or settings.str.loq_pct, lod)
        return replace(settings, str=replace(settings.str, lod_pct=lod, loq_pct=loq_value))
    if method == "qPCR":
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
    current = {m: current_observations(_observations(warehouse, m)) for m in OBSERVATION_TABLES}
    limits, settings = assay_limits(registry, current, settings=settings)
    warehouse.write(
        "assay_limits", "limits", validate_frame(limits, AssayLimits, file_name="assay_limits")
    )
    for patient in sorted(todo - series_ids(registry)):
        results, markers = [], []
        for method, observations in current.items():
            r, m = _method_rows(method, patient, registry, observations, settings)
            results.append(r)
            markers.append(m)
        chimerism = _finish_chimerism(
            pl.concat(results, how="diagonal_relaxed"), patient, registry, settings
        )
        marker_rows = _finish_markers(pl.concat(markers, how="diagonal_relaxed"), patient)
        previous = warehouse.read_file("chimerism", patient)
        previous_markers = warehouse.read_file("markers", patient)
        chimerism = _keep_superseded(chimerism, previous, ["sample_id", "method", "source_sha256"])
        marker_rows = _keep_superseded(
            marker_rows, previous_markers, ["sample_id", "method", "source_sha256"]
        )
        warehouse.write(
            "chimerism",
            patient,
            validate_frame(chimerism, Chimerism, file_name=f"chimerism/{patient}"),
        )
        warehouse.write(
            "markers", patient, validate_frame(marker_rows, Markers, file_name=f"markers/{patient}")
        )
    warehouse.clear_dirty(todo)


def _keep_superseded(
    new: pl.DataFrame, previous: pl.DataFrame | None, key: list[str]
) -> pl.DataFrame:
    if previous is None or previous.height == 0:
        return new
    current_keys = new.select(key).unique()
    old = previous.join(current_keys, on=key, how="anti").with_columns(superseded=pl.lit(True))
    return pl.concat([new, old.select(new.columns)], how="vertical_relaxed") if old.height else new


def _finish_chimerism(
    results: pl.DataFrame, patient: str, registry: _Registry, settings: Settings
) -> pl.DataFrame:
    """Add patient context, study day, absolute counts, headline choice and lineage."""
    columns = list(Chimerism.to_schema().columns)
    if results.height == 0:
        return pl.DataFrame(schema=polars_schema(Chimerism))
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
    columns = list(Markers.to_schema().columns)
    if markers.height == 0:
        return pl.DataFrame(schema=polars_schema(Markers))
    return markers.with_columns(
        patient_id=pl.lit(patient),
        superseded=pl.lit(False),
        pipeline_version=pl.lit(PIPELINE_VERSION),
        source_file=pl.col("source_file").fill_null(""),
    ).select(columns)


# ---------------------------------------------------------------- ingest


def _log(
    warehouse: Warehouse, outcome: FileOutcome, *, now: datetime, flow_run_id: str | None
) -> None:
    row = pl.DataFrame(
        [
            {
                "source_sha256": outcome.sha256,
                "file_name": outcome.file_name,
                "size_bytes": outcome.size_bytes,
                "detected_format": outcome.detected_format,
                "status": outcome.status.value,
                "reason": outcome.reason,
                "rows": outcome.rows,
                "supersedes": outcome.supersedes,
                "flow_run_id": flow_run_id,
                "pipeline_version": PIPELINE_VERSION,
                "logged_at": now,
            }
        ],
        schema=LEDGER_SCHEMA,
    )
    validate_frame(row, IngestLog, file_name="ingest_log")
    warehouse.append_log(row, logged_at=now, sha256=outcome.sha256, status=outcome.status.value)


def _affected_patients(frame: pl.DataFrame, registry: _Registry) -> set[str]:
    """Patients whose results can change because of these sample ids.

    A product sample touches every patient of its lot.
    """
    ids = frame["sample_id"].drop_nulls().unique().to_list() if "sample_id" in frame.columns else []
    rows = registry.samples.filter(pl.col("sample_id").is_in(ids))
    series = series_ids(registry)
    if rows.filter(pl.col("patient_id").is_in(list(series))).height:
        # New dilution-series results can change every patient's LoD/LoQ.
        return {p for p in registry.lots if p not in series}
    patients = set(
        rows.filter(~pl.col("role").is_in(["donor_reference", "calibrator"]))["patient_id"]
    )
    lots = set(rows.filter(pl.col("role").is_in(["donor_reference", "calibrator"]))["patient_id"])
    patients |= {p for p, lot in registry.lots.items() if lot in lots}
    return patients


def _superseded_source(
    stored: pl.DataFrame, frame: pl.DataFrame, ledger: pl.DataFrame
) -> str | None:
    """Name the earlier export(s) whose samples this file re-measures (a corrected re-export)."""
    if stored.height == 0:
        return None
    ids = _assay_sample_ids(frame)
    earlier = stored.filter(pl.col("sample_id").is_in(ids))["source_sha256"].unique().to_list()
    if not earlier:
        return None
    names = ledger.filter(pl.col("source_sha256").is_in(earlier) & (pl.col("status") == "accepted"))
    labels = sorted(set(names["file_name"].to_list())) or [s[:12] for s in earlier]
    return ", ".join(labels)


def ingest_bytes(
    data: bytes,
    *,
    file_name: str,
    settings: Settings,
    now: datetime,
    flow_run_id: str | None = None,
    recompute: bool = True,
) -> FileOutcome:
    """Ingest one file's bytes into the warehouse and record its fate in the ledger.

    Never raises for a bad file: problems become a ``quarantined`` outcome with reasons.
    The waiting time-out counts from the file's first ``waiting`` row in the ledger.
    """
    warehouse = Warehouse(settings.warehouse)
    sha = sha256_of(data)
    base = FileOutcome(
        file_name=file_name, sha256=sha, size_bytes=len(data), status=FileStatus.WAITING
    )
    ledger = read_ledger(warehouse)
    accepted = ledger.filter((pl.col("source_sha256") == sha) & (pl.col("status") == "accepted"))
    if accepted.height:
        first = accepted.row(0, named=True)
        outcome = replace(
            base,
            status=FileStatus.DUPLICATE,
            detected_format=first["detected_format"],
            reason=f"same content as {first['file_name']} accepted {first['logged_at']:%Y-%m-%d %H:%M} UTC",
        )
        if first["file_name"] != file_name:
            _log(warehouse, outcome, now=now, flow_run_id=flow_run_id)
        return outcome
    if not data.strip():
        return _reject(
            warehouse,
            base,
            None,
            RejectReason.EMPTY_FILE,
            "the file is empty",
            (),
            now,
            flow_run_id,
        )
    detection = detect_format(data)
    if detection is None:
        msg = (
            "the content matches no known export (GeneMapper sizing/genotypes table, QuantStudio/"
            "StepOne, CFX Cq results, QuantaSoft, QX Manager, sample manifest, infusion log); "
            "re-export with the software's standard table export or check the file is the right one"
        )
        return _reject(
            warehouse, base, None, RejectReason.UNRECOGNISED_FORMAT, msg, (), now, flow_run_id
        )
    fmt = detection.format.value
    try:
        frame = parse_export(data, detection, file_name=file_name, settings=settings)
        check_plausible(frame, detection.assay, settings=settings, file_name=file_name)
    except ChimeraError as err:
        return _reject(
            warehouse, base, fmt, err.reason, str(err), tuple(err.problems), now, flow_run_id
        )
    if detection.assay is Assay.REGISTRY:
        return _accept_registry(
            warehouse, base, detection, frame, settings, now, flow_run_id, recompute=recompute
        )
    return _accept_assay(
        warehouse,
        base,
        detection,
        frame,
        settings,
        now,
        flow_run_id,
        ledger,
        first_waiting_time(ledger, sha),
        recompute=recompute,
    )


def _reject(
    warehouse: Warehouse,
    base: FileOutcome,
    fmt: str | None,
    code: RejectReason,
    message: str,
    problems: tuple[Problem, ...],
    now: datetime,
    flow_run_id: str | None,
) -> FileOutcome:
    outcome = replace(
        base,
        status=FileStatus.QUARANTINED,
        detected_format=fmt,
        reason=f"{code.value}: {message}",
        reason_code=code.value,
        problems=problems,
    )
    _log(warehouse, outcome, now=now, flow_run_id=flow_run_id)
    return outcome


def _with_lineage(frame: pl.DataFrame, sha: str, file_name: str, now: datetime) -> pl.DataFrame:
    return frame.with_columns(
        source_sha256=pl.lit(sha),
        source_file=pl.lit(file_name),
        pipeline_version=pl.lit(PIPELINE_VERSION),
        ingested_at=pl.lit(now, dtype=UTC_US),
    )


def _accept_registry(
    warehouse: Warehouse,
    base: FileOutcome,
    detection: Detection,
    frame: pl.DataFrame,
    settings: Settings,
    now: datetime,
    flow_run_id: str | None,
    *,
    recompute: bool,
) -> FileOutcome:
    sha, name = base.sha256, base.file_name
    with warehouse.lock():
        if detection.format is ExportFormat.MANIFEST:
            table = _with_lineage(frame, sha, name, now).drop("source_file")
            warehouse.write("samples", sha, validate_frame(table, Samples, file_name=name))
            patients = set(
                frame.filter(~pl.col("role").is_in(["donor_reference", "calibrator"]))["patient_id"]
            )
        else:
            table = _with_lineage(frame, sha, name, now).drop("source_file")
            warehouse.write("infusions", sha, validate_frame(table, Infusions, file_name=name))
            patients = set(frame["patient_id"])
        _recompute_or_defer(warehouse, patients, settings=settings, now=now, recompute=recompute)
        outcome = replace(
            base,
            status=FileStatus.ACCEPTED,
            detected_format=detection.format.value,
            rows=frame.height,
            patients=frozenset(patients),
        )
        _log(warehouse, outcome, now=now, flow_run_id=flow_run_id)
    return outcome


def _accept_assay(
    warehouse: Warehouse,
    base: FileOutcome,
    detection: Detection,
    frame: pl.DataFrame,
    settings: Settings,
    now: datetime,
    flow_run_id: str | None,
    ledger: pl.DataFrame,
    first_seen: datetime | None,
    *,
    recompute: bool,
) -> FileOutcome:
    sha, name = base.sha256, base.file_name
    method = detection.assay.value
    fmt = detection.format.value
    with warehouse.lock():
        registry = read_registry(warehouse)
        frame = resolve_sample_ids(frame, set(registry.samples["sample_id"].to_list()))
        stored = _observations(warehouse, method)
        measured = set(_assay_sample_ids(frame)) | _ids(stored)
        pool = (
            measured
            if method == "STR"
            else measured
            | _ids(_observations(warehouse, "qPCR"))
            | _ids(_observations(warehouse, "ddPCR"))
        )
        waits = missing_prerequisites(
            frame, method, registry=registry, measured=measured, baselines_measured=pool
        )
        if waits:
            reason = "waiting for " + "; ".join(waits)
            waited_hours = (now - first_seen).total_seconds() / 3600 if first_seen else 0.0
            if waited_hours >= settings.inbox_rules.waiting_timeout_hours:
                problems = tuple(Problem(rule="prerequisite", message=w) for w in waits)
                msg = (
                    f"waited {waited_hours:.0f} h (limit {settings.inbox_rules.waiting_timeout_hours:g} h) "
                    f"for {'; '.join(waits)}; drop the missing manifest/baseline file, then this file again"
                )
                return _reject(
                    warehouse,
                    base,
                    fmt,
                    RejectReason.WAITED_TOO_LONG,
                    msg,
                    problems,
                    now,
                    flow_run_id,
                )
            outcome = replace(base, status=FileStatus.WAITING, detected_format=fmt, reason=reason)
            previous = ledger.filter(pl.col("source_sha256") == sha)
            if (
                not previous.height
                or previous["status"][-1] != "waiting"
                or previous["reason"][-1] != reason
            ):
                _log(warehouse, outcome, now=now, flow_run_id=flow_run_id)
            return outcome
        supersedes = _superseded_source(stored, frame, ledger)
        table = OBSERVATION_TABLES[method]
        if not warehouse.has(table, sha):
            warehouse.write(table, sha, _with_lineage(frame, sha, name, now))
        patients = _affected_patients(frame, registry)
        _recompute_or_defer(warehouse, patients, settings=settings, now=now, recompute=recompute)
        outcome = replace(
            base,
            status=FileStatus.ACCEPTED,
            detected_format=fmt,
            rows=frame.height,
            patients=frozenset(patients),
            supersedes=supersedes,
            reason=f"supersedes {supersedes}" if supersedes else None,
        )
        _log(warehouse, outcome, now=now, flow_run_id=flow_run_id)
    return outcome


def first_waiting_time(ledger: pl.DataFrame, sha256: str) -> datetime | None:
    """When a file was first recorded as waiting (None if never)."""
    rows = ledger.filter((pl.col("source_sha256") == sha256) & (pl.col("status") == "waiting"))
    return None if rows.height == 0 else rows["logged_at"].min()  # type: ignore[return-value]


def ingest_path(
    path: Path,
    *,
    settings: Settings,
    now: datetime,
    move: bool,
    flow_run_id: str | None = None,
    recompute: bool = True,
) -> FileOutcome:
    """Ingest one file and put it where it belongs (archive, quarantine, or left waiting).

    ``move`` = move the file (inbox use); otherwise copy it, leaving the original untouched.
    ``recompute=False`` only marks the touched patients dirty; :func:`recover_dirty` then
    rebuilds each of them once (what a batch does).
    """
    data = path.read_bytes()
    outcome = ingest_bytes(
        data,
        file_name=path.name,
        settings=settings,
        now=now,
        flow_run_id=flow_run_id,
        recompute=recompute,
    )
    if outcome.status in (FileStatus.ACCEPTED, FileStatus.DUPLICATE):
        target = archive_file(path, settings.archive, sha256=outcome.sha256, when=now, move=move)
    elif outcome.status is FileStatus.QUARANTINED:
        target = quarantine_file(
            path,
            settings.quarantine,
            sha256=outcome.sha256,
            headline=outcome.reason or "rejected",
            problems=outcome.problems,
            when=now,
            move=move,
        )
    else:
        return outcome
    return replace(outcome, destination=target)


_FORMAT_ORDER = {Assay.REGISTRY: 0, Assay.STR: 1, Assay.QPCR: 2, Assay.DDPCR: 2, Assay.NONE: 3}


def processing_order(paths: Sequence[Path]) -> list[Path]:
    """Manifests and infusion logs first, then assays, each group by name (content-detected)."""

    def rank(path: Path) -> tuple[int, str]:
        try:
            detection = detect_format(path.read_bytes())
        except OSError:
            return (4, path.name)
        return (_FORMAT_ORDER[detection.assay] if detection else 3, path.name)

    return sorted(paths, key=rank)


def ingest_in_rounds(
    paths: Sequence[Path], ingest_one: Callable[[Path], FileOutcome | None]
) -> dict[Path, FileOutcome]:
    """Ingest files in order, then retry the waiting ones while a round accepts any file.

    A manifest dropped last therefore still releases the assays that waited for it.
    ``ingest_one`` returns None for a file that could not be processed (it is not retried).
    """
    outcomes: dict[Path, FileOutcome] = {}
    pending = list(paths)
    progress = True
    while pending and progress:
        progress = False
        still_waiting = []
        for path in pending:
            outcome = ingest_one(path)
            if outcome is None:
                continue
            outcomes[path] = outcome
            if outcome.status is FileStatus.WAITING:
                still_waiting.append(path)
            else:
                progress = True
        pending = still_waiting
    return outcomes


def ingest_paths(
    paths: Sequence[Path],
    *,
    settings: Settings,
    clock: Callable[[], datetime],
    move: bool,
    flow_run_id: str | None = None,
) -> list[FileOutcome]:
    """Ingest several files in dependency order; each touched patient is rebuilt once at the end."""
    recover_dirty(settings=settings, now=clock())
    outcomes = ingest_in_rounds(
        processing_order(paths),
        lambda path: ingest_path(
            path,
            settings=settings,
            now=clock(),
            move=move,
            flow_run_id=flow_run_id,
            recompute=False,
        ),
    )
    recover_dirty(settings=settings, now=clock())
    return [outcomes[p] for p in paths if p in outcomes]


def _recompute_or_defer(
    warehouse: Warehouse, patients: set[str], *, settings: Settings, now: datetime, recompute: bool
) -> None:
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
