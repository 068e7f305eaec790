"""The patient-wide finish of rebuilt rows: study day, absolute counts, headline and lineage.

After each method's rows of a patient are computed (:func:`chimera.rebuild.patient_results`),
one pass over every rebuilt patient's rows adds the patient context from the registry, the
study day (from the first infusion), iNK cells/µL and the purity-corrected % iNK
(methods.md 6), the headline result per sample
(:func:`chimera.calculate.reconcile.choose_headline`) and the lineage columns, and gives each
marker row its result's patient and current/superseded flag.
"""

from __future__ import annotations

import polars as pl

from chimera.calculate.reconcile import choose_headline
from chimera.lineage import parameters_sha256
from chimera.registry import Registry
from chimera.settings import Settings
from chimera.warehouse import CHIMERISM, MARKERS, PIPELINE_VERSION
from schemas.vocab import Specimen

PatientRows = tuple[pl.DataFrame, pl.DataFrame] | None
"""A patient's result rows (repeat measurements marked) and marker rows, before the finish
(None: no row)."""


def finish_patients(
    found: dict[str, PatientRows], registry: Registry, settings: Settings
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    """Each patient's ``chimerism`` and ``markers`` table, finished for all patients in one pass.

    Every step works within one patient (study day from the patient's first dose, headline per
    sample), so one pass over all patients' rows gives each what a pass over its own gives.
    """
    no_chimerism, no_markers = (pl.DataFrame(schema=t.schema) for t in (CHIMERISM, MARKERS))
    chimerism = dict.fromkeys(found, no_chimerism)
    markers = dict.fromkeys(found, no_markers)
    filled = {patient: rows for patient, rows in found.items() if rows is not None}
    if not filled:
        return chimerism, markers
    results = pl.concat(
        [rows[0].with_columns(_patient=pl.lit(p)) for p, rows in filled.items()],
        how="diagonal_relaxed",
    )
    finished = _finish_chimerism(results, registry, settings)
    chimerism.update(_by_patient(finished))
    details = [
        rows[1].with_columns(_patient=pl.lit(p)) for p, rows in filled.items() if rows[1].height
    ]
    if details:
        detail = pl.concat(details, how="diagonal_relaxed")
        markers.update(_by_patient(_finish_markers(detail, finished)))
    return chimerism, markers


def _by_patient(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The rows of each rebuilt patient (:func:`finish_patients`'s ``_patient``), in order."""
    parts = frame.partition_by("_patient", as_dict=True, include_key=False, maintain_order=True)
    return {str(key[0]): part for key, part in parts.items()}


def specimen_counts() -> dict[str, pl.Expr]:
    """INK cells/µL and the purity-corrected % iNK of each row, by its specimen (methods.md 6).

    iNK cells/µL = pct_ink/100 x the count of the cells the DNA came from: WBC (else the
    lymphocyte count) for whole blood (``PB`` or no specimen given), the NK count
    (``nk_per_ul``) for a ``PB CD56+`` fraction; no count for any other specimen (CD3+, CD33+,
    BM or a specimen kept verbatim): the manifest carries no denominator for them. The purity
    correction (``PB CD56+`` only: iNK are NK cells, so the impure cells are taken as non-iNK)
    is pct_ink / (purity_pct / 100), clamped to 100; an off-lineage fraction is never corrected
    upward.
    """
    whole = pl.col("specimen").is_null() | (pl.col("specimen") == Specimen.PB.value)
    cd56 = pl.col("specimen") == Specimen.PB_CD56.value
    fraction = pl.col("pct_ink") / 100
    return {
        "ink_cells_per_ul": pl.when(whole)
        .then(fraction * pl.coalesce("wbc_per_ul", "lymphocytes_per_ul"))
        .when(cd56)
        .then(fraction * pl.col("nk_per_ul"))
        .otherwise(None),
        "pct_ink_purity_corrected": pl.when(cd56)
        .then(pl.min_horizontal(pl.col("pct_ink") / (pl.col("purity_pct") / 100), pl.lit(100.0)))
        .otherwise(None),
    }


NO_NK_COUNT = (
    "iNK cells/µL not given: a PB CD56+ fraction needs the NK cell count (nk_per_ul) in the "
    "manifest"
)


def _first_doses(registry: Registry) -> pl.DataFrame:
    """Each patient's first infusion (``_patient``, ``_first_dose``)."""
    infusions = registry.infusions
    first = pl.col("infused_at").min()
    if not isinstance(infusions.schema.get("infused_at"), pl.Datetime):
        first = pl.lit(None, dtype=pl.Datetime("us", "UTC"))
    return (
        infusions.group_by("patient_id").agg(_first_dose=first).rename({"patient_id": "_patient"})
    )


def _finish_chimerism(
    results: pl.DataFrame, registry: Registry, settings: Settings
) -> pl.DataFrame:
    """Add patient context, study day, absolute counts, headline choice and lineage.

    ``results``: rows of one or more rebuilt patients, each named in ``_patient`` (kept).
    """
    context = registry.samples.select(
        "sample_id", "patient_id", "collected_at", "specimen", "wbc_per_ul",
        "lymphocytes_per_ul", "nk_per_ul", "purity_pct",
    )  # fmt: skip
    no_nk = (
        (pl.col("specimen") == Specimen.PB_CD56.value)
        & pl.col("pct_ink").is_not_null()
        & pl.col("nk_per_ul").is_null()
    )
    frame = (
        results.join(context, on="sample_id", how="left", maintain_order="left")
        .join(_first_doses(registry), on="_patient", how="left", maintain_order="left")
        .with_columns(
            # Study day = calendar days (UTC) from the date of the first infusion (day 0).
            study_day=(pl.col("collected_at").dt.date() - pl.col("_first_dose").dt.date())
            .dt.total_days()
            .cast(pl.Int32),
            **specimen_counts(),
            qc_reasons=pl.when(no_nk)
            .then(
                pl.concat_str(
                    pl.col("qc_reasons"), pl.lit(NO_NK_COUNT), separator="; ", ignore_nulls=True
                )
            )
            .otherwise(pl.col("qc_reasons")),
            pipeline_version=pl.lit(PIPELINE_VERSION),
            parameters_sha256=pl.lit(parameters_sha256(settings)),
            source_file=pl.col("source_file").fill_null(""),
        )
    )
    live = ~pl.col("superseded")
    current = choose_headline(
        frame.filter(live),
        settings=settings.reconcile,
        cd=settings.alerts.critical_difference,
        within=["_patient"],
    )
    others = frame.filter(~live).with_columns(
        is_headline=pl.lit(False), headline_rule=pl.lit(None, dtype=pl.String)
    )
    order = ["_patient", "collected_at", "sample_id", "method", "superseded", "source_file"]
    return (
        pl.concat([current, others], how="diagonal_relaxed")
        .select(*CHIMERISM.schema, "_patient")
        .sort(order, nulls_last=True, maintain_order=True)
    )


def _finish_markers(markers: pl.DataFrame, chimerism: pl.DataFrame) -> pl.DataFrame:
    """Marker rows with their result's patient and current/superseded flag, and lineage.

    Both frames name each row's rebuilt patient in ``_patient`` (kept).
    """
    key = ["_patient", "sample_id", "method", "source_sha256"]
    flags = chimerism.select(*key, "patient_id", "superseded", "parameters_sha256")
    return (
        markers.join(flags, on=key, how="inner", maintain_order="left")
        .with_columns(
            pipeline_version=pl.lit(PIPELINE_VERSION),
            source_file=pl.col("source_file").fill_null(""),
        )
        .select(*MARKERS.schema, "_patient")
    )
