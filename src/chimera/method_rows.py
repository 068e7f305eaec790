"""One patient's results and marker rows by one method, from the current raw assay rows.

What each calculation gets (issues 9 and 10):

* the patient's samples (post-dose, baseline, germline, HSCT donor) and every product sample of
  the patient's master cell bank, all with one lot of that bank as ``product_lot``: every lot
  of a bank is one genome, so a reference or calibrator of any lot serves every lot;
* STR: each run (file) holding the patient's post-dose samples is computed on its own, with
  the genotype sources from every current run and the warehouse stutter table, so a sample
  measured on two runs gives two results (a repeat measurement), never one mixed profile;
* qPCR/ddPCR: every plate holding the patient's samples (the patient's own plates), with all
  its DNA wells in their manifest roles, plus the wells of the product's registered reference
  (``donor_reference``) on the other plates holding a marker the product has no well of on the
  own plates (:func:`chimera.plate_targets.fallback_targets`: no other plate's wells can enter
  the patient's results, so a rebuild grows with the patient's plates, not the warehouse's;
  issue 12). The calculations give one result per sample x plate.
  The product's carriage of a marker (and ddPCR's n_M, after the sample's own plate) comes
  from the product's wells on the patient's own plates when they hold any of that marker
  (calibrator or registered reference), and from the registered reference on every plate
  only when they hold none. A calibrator is its plate's own control. So a new plate changes
  the patients on it and, when it holds the registered reference, only those of its bank
  with a plate on which some target has no product well
  (:func:`chimera.registry.affected_patients`): a warehouse filled plate by plate, in any
  order, holds the rows of one filled at once.

Each rebuild indexes every method's rows once by sample and by file (:class:`chimera.row_index.RowIndex`), so a
patient's rows are taken, not filtered out of the whole table, and each PCR plate once
(:class:`chimera.plate_cache.PlateCache`), shared by every patient on it.

Results of a file a re-export replaced (:func:`chimera.runs.supersession`) are computed
as they were while it was current (its run's current file taken out, it put back), and come
back ``superseded`` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import polars as pl

from chimera.calculate import ddpcr, qpcr, str_chimerism, str_sources
from chimera.calculate.genomes import GenomeCall
from chimera.calculate.limits import MARKER_COLUMNS, RESULT_COLUMNS, MethodOutput
from chimera.calculate.qpcr_plate import carriage
from chimera.calculate.stutter_ratios import STUTTER_COLUMNS
from chimera.plate_cache import PlateCache
from chimera.plate_targets import fallback_targets
from chimera.registry import Registry
from chimera.row_index import FIRST_ROW_COLUMNS, ROW_POSITION, RowIndex
from chimera.settings import Settings
from schemas.vocab import PRODUCT_ROLES, Method, Role

REPORTED_ROLES = (Role.POST_DOSE, Role.DILUTION_STANDARD)
"""Roles whose results are reported (a dilution standard is measured like a post-dose sample)."""
LINEAGE_COLUMNS = ("source_file", "ingested_at", "pipeline_version", "run_id")


@dataclass(frozen=True)
class MethodInputs:
    """One method's raw rows as a rebuild sees them."""

    method: Method
    observations: pl.DataFrame
    """Every stored row, current or replaced."""
    current: pl.DataFrame
    """Rows of the files no re-export replaced."""
    supersession: pl.DataFrame
    """:func:`chimera.runs.supersession` of ``observations``."""
    stutter: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=STUTTER_COLUMNS))
    """The warehouse stutter table (STR)."""
    screening: RowIndex | None = None
    """ddPCR: the current qPCR rows, whose plates type a genome no ddPCR plate holds."""
    index: RowIndex | None = None
    """``current`` indexed (None: indexed on first use)."""
    replaced: RowIndex | None = None
    """The rows of the files a re-export replaced, indexed."""
    str_cache: str_sources.StrCache = field(default_factory=str_sources.StrCache)
    """STR reference genotypes and stutter lookups shared by the calculations on ``current``."""
    screened: Callable[[str, Sequence[str], GenomeCall], None] | None = field(
        default=None, compare=False, repr=False
    )
    """Told each look-up a ddPCR calculation makes in ``screening`` and its answer
    (:mod:`chimera.method_cache`)."""

    def indexed(self) -> MethodInputs:
        """These inputs with ``current`` and the replaced files' rows indexed."""
        if self.index is not None:
            return self
        gone = self.supersession.filter(pl.col("replaced_by").is_not_null())["source_sha256"]
        old = self.observations.filter(pl.col("source_sha256").is_in(gone.implode()))
        return replace(self, index=RowIndex.of(self.current), replaced=RowIndex.of(old))


def patient_samples(registry: Registry, patient: str) -> pl.DataFrame:
    """The patient's samples and the product samples of their cell bank, with one lot of it.

    Built once per registry (a rebuild asks for it per method and per step).
    """
    return registry.derived(("patient_samples", patient), lambda: _samples_of(registry, patient))


def _samples_of(registry: Registry, patient: str) -> pl.DataFrame:
    product = registry.products.get(patient)
    lot = product.lot if product is not None else None
    bank = product.bank if product is not None else None
    own = registry.patient_samples(patient).with_columns(
        # A dilution standard is measured exactly like a post-dose sample of its series.
        role=pl.when(pl.col("role") == Role.DILUTION_STANDARD)
        .then(pl.lit(Role.POST_DOSE))
        .otherwise(pl.col("role")),
    )
    products = registry.sample_rows(registry.product_ids(bank))
    columns = ["sample_id", "patient_id", "role", "product_lot", "specimen", "cell_bank"]
    return pl.concat([own, products], how="vertical_relaxed").select(
        *columns[:3], pl.lit(lot, dtype=pl.String).alias("product_lot"), *columns[4:]
    )


def _empty() -> MethodOutput:
    return MethodOutput(pl.DataFrame(schema=RESULT_COLUMNS), pl.DataFrame(schema=MARKER_COLUMNS))


def _str_output(
    inputs: MethodInputs,
    observations: pl.DataFrame,
    samples: pl.DataFrame,
    reported: pl.Series,
    settings: Settings,
    only: str | None,
    *,
    shared: bool,
) -> MethodOutput:
    """STR results run by run: each run's post-dose peaks with every genotype source's peaks.

    The current rows share one :class:`~chimera.calculate.str_sources.StrCache` per rebuild
    (every patient of a bank reads the same product references); other ``observations``
    (a replaced file's view, ``shared`` false) get their own. Only the columns the STR
    calculation reads are filtered and concatenated.
    """
    observations = observations.select("source_sha256", *str_chimerism.PEAK_COLUMNS)
    is_reported = pl.col("sample_id").is_in(reported.implode())
    genotypes = observations.filter(
        pl.col("sample_id").is_in(samples["sample_id"].implode()) & ~is_reported
    )
    own = observations.filter(
        is_reported if only is None else is_reported & (pl.col("source_sha256") == only)
    )
    if own.height == 0:
        return _empty()
    return str_chimerism.compute_str_runs(
        pl.concat([own, genotypes], how="vertical_relaxed"),
        samples,
        settings=settings.str,
        stutter=inputs.stutter,
        cache=inputs.str_cache if shared else str_sources.StrCache(),
    )


def _pcr_output(
    inputs: MethodInputs,
    observations: pl.DataFrame,
    samples: pl.DataFrame,
    registry: Registry,
    patient: str,
    settings: Settings,
) -> MethodOutput:
    """PCR results of every plate holding the patient's samples (one per sample x plate)."""
    # Plates that hold the patient's own samples, every well on them (a calibrator is its
    # plate's own control).
    own = registry.patient_samples(patient)["sample_id"]
    # Series, not frame filters: only the two key columns are read per patient (issue 12).
    sources, ids = observations["source_sha256"], observations["sample_id"]
    plates = sources.filter(ids.is_in(own.implode())).unique()
    product = _registered(samples)
    # The product's registered reference on the other plates ``observations`` hold (marker
    # carriage, ddPCR zygosity; :func:`_relevant`); every DNA sample on the plates gets its
    # manifest role (never the instrument's type).
    on_plates = sources.is_in(plates.implode()) | ids.is_in(product.implode())
    cache = _plate_cache(inputs)
    others = cache.registry_table(registry).others(
        ids.filter(on_plates).drop_nulls().unique().to_list(),
        exclude=set(samples["sample_id"].to_list()),
        roles=REPORTED_ROLES,
        lots=PRODUCT_ROLES,
    )
    table = cache.sample_table(samples) | others
    own_plates = set(plates.to_list())
    registered = tuple(sorted(product.to_list()))
    shas = sorted(sources.filter(on_plates).unique().to_list())
    slices = [(sha, None if sha in own_plates else registered) for sha in shas]
    by_plate: dict[str, pl.DataFrame] = {}
    whole = _indexed_plates(inputs)

    def rows(sha: str) -> Callable[[], pl.DataFrame]:
        def plate() -> pl.DataFrame:
            if sha in whole:
                return whole[sha]
            if not by_plate:
                wells = observations.filter(on_plates)
                parts = wells.partition_by("source_sha256", as_dict=True)
                by_plate.update({str(k[0]): v for k, v in parts.items()})
            return by_plate[sha]

        return plate

    if inputs.method == Method.QPCR:
        contexts = [
            cache.qpcr(sha, kept, rows(sha), registry=registry, settings=settings.qpcr)
            for sha, kept in slices
        ]
        return qpcr.chimerism_on_plates(contexts, table)
    ddpcr_plates = [
        cache.ddpcr(sha, kept, rows(sha), registry=registry, settings=settings.ddpcr)
        for sha, kept in slices
    ]
    screening = _screening(inputs.screening, own, registry, settings, inputs.screened)
    return ddpcr.chimerism_on_plates(
        ddpcr_plates, table, settings=settings.ddpcr, screening=screening
    )


def _indexed_plates(inputs: MethodInputs) -> dict[str, pl.DataFrame]:
    """Every current plate's rows when the rebuild already partitioned them, else nothing.

    A plate's rows in a patient's wells are that plate whole (own plates) or, sliced by the
    plate cache, its registered reference's rows; both come out of the stored plate alike, so
    a plate missing from the cache is indexed from its stored rows rather than from a fresh
    partition of every patient's wells (issue 12).
    """
    index = inputs.index
    if index is None or "by_source" not in index.__dict__:
        return {}
    return index.by_source


_SURELY_OWN = ~pl.col("role").is_in([*PRODUCT_ROLES, Role.NEGATIVE_CONTROL])
"""Roles of samples no calculation can take for a blank (:func:`_fallback`)."""
_IS_PRODUCT = pl.col("role").is_in(PRODUCT_ROLES)


def _fallback(
    inputs: MethodInputs, files: Iterable[str], registry: Registry, patient: str, settings: Settings
) -> set[str]:
    """Markers whose product carriage or n_M may read other plates' registered reference."""
    index = inputs.index
    assert index is not None
    method = settings.qpcr if inputs.method == Method.QPCR else settings.ddpcr
    own = index.markers(sorted(files), method.reference_genes)
    sure = _ids(
        registry, ("surely_own", patient), lambda: registry.patient_samples(patient), _SURELY_OWN
    )
    products = _ids(
        registry, ("products", patient), lambda: patient_samples(registry, patient), _IS_PRODUCT
    )
    return fallback_targets(own, sure, set(products))


def _ids(
    registry: Registry, key: tuple[str, str], rows: Callable[[], pl.DataFrame], kept: pl.Expr
) -> list[str]:
    """The sample ids of ``rows()`` that ``kept`` keeps, worked out once per registry (``key``)."""
    return registry.derived(key, lambda: rows().filter(kept).select("sample_id"))[
        "sample_id"
    ].to_list()


def _plate_cache(inputs: MethodInputs) -> PlateCache:
    """The rebuild's plate cache (a fresh one when the inputs were never indexed)."""
    return inputs.index.plates if inputs.index is not None else PlateCache()


_IS_REGISTERED = pl.col("role") == Role.DONOR_REFERENCE


def _registered(samples: pl.DataFrame) -> pl.Series:
    """Sample ids of the product's registered reference among ``samples``."""
    return samples.filter(_IS_REGISTERED)["sample_id"]


def _screening(
    rows: RowIndex | None,
    own: pl.Series,
    registry: Registry,
    settings: Settings,
    screened: Callable[[str, Sequence[str], GenomeCall], None] | None = None,
) -> ddpcr.Screening | None:
    """Marker carriage from the qPCR plates typing the patient's own genomes (ddPCR's fallback).

    A three-genome patient's germline is often typed once, on a qPCR marker-screening plate;
    the ddPCR calculation then reads its carriage of each marker from there.
    """
    if rows is None:
        return None
    shas = sorted(rows.sources_of(own.to_list()))
    if not shas:
        return None

    def plate(sha: str) -> Callable[[], pl.DataFrame]:
        return lambda: rows.by_source[sha]

    contexts = [
        rows.plates.qpcr(sha, None, plate(sha), registry=registry, settings=settings.qpcr)
        for sha in shas
    ]

    def screening(marker: str, ids: Sequence[str]) -> GenomeCall:
        call = carriage(marker, ids, contexts)
        if screened is not None:
            screened(marker, ids, call)
        return call

    return screening


def _relevant(
    inputs: MethodInputs,
    patient: str,
    registry: Registry,
    samples: pl.DataFrame,
    settings: Settings,
    *,
    every_plate: bool = False,
) -> pl.DataFrame:
    """The current rows any of the patient's results can read (see the module docstring).

    PCR: the patient's own plates whole and the registered reference's wells on the other
    plates holding a marker :func:`_fallback` names (``every_plate``: on every other plate,
    for a view in which a replaced file stands in for its run's current one).
    """
    index = inputs.indexed().index
    assert index is not None
    if inputs.method == Method.STR:
        return index.take(sample_ids=samples["sample_id"].to_list())
    own = registry.patient_samples(patient)["sample_id"].to_list()
    files = index.sources_of(own)
    registered = _ids(registry, ("registered", patient), lambda: samples, _IS_REGISTERED)
    kept = index.kept(registered)
    if every_plate:
        return index.take_plates(files, kept, kept.positions)
    needed = _fallback(inputs, files, registry, patient, settings)
    return index.take_plates(files, kept, kept.holding(needed))


def method_rows(
    inputs: MethodInputs,
    patient: str,
    registry: Registry,
    settings: Settings,
    *,
    observations: pl.DataFrame | None = None,
    only: str | None = None,
    relevant: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Results and marker rows of one patient by one method, each with its source file.

    ``observations`` defaults to the current rows (``relevant``: the patient's share of them
    when already taken, :func:`relevant_rows`); ``only`` keeps the rows of one file.
    """
    samples = patient_samples(registry, patient)
    if observations is not None:
        rows = observations
    elif relevant is not None:
        rows = relevant
    else:
        rows = _relevant(inputs, patient, registry, samples, settings)
    is_reported_role = pl.col("role").is_in(REPORTED_ROLES)
    reported = registry.derived(
        ("reported", patient),
        lambda: registry.patient_samples(patient).filter(is_reported_role).select("sample_id"),
    )["sample_id"]
    is_reported = pl.col("sample_id").is_in(reported.implode())
    # Each reported sample's file and ingest time (its first row on that file). The current
    # rows taken hold every row of the reported samples, so a large rebuild reads them from
    # the index (:meth:`~chimera.row_index.RowIndex.first_rows`: one pass for all patients).
    sources = None if observations is not None else _first_rows(inputs, reported)
    if sources is None:
        sources = (
            rows.filter(is_reported)
            .select(FIRST_ROW_COLUMNS)
            .unique(["sample_id", "source_sha256"], keep="first", maintain_order=True)
        )
    if sources.height == 0:
        return _empty().results, _empty().markers
    if inputs.method == Method.STR:
        output = _str_output(
            inputs, rows, samples, reported, settings, only, shared=observations is None
        )
    else:
        output = _pcr_output(inputs, rows, samples, registry, patient, settings)

    def with_source(frame: pl.DataFrame) -> pl.LazyFrame:
        kept = frame.lazy().filter(is_reported)
        if only is not None:
            kept = kept.filter(pl.col("source_sha256") == only)
        on = ["sample_id", "source_sha256"]
        return kept.join(sources.lazy(), on=on, how="left", maintain_order="left")

    # Both frames in one in-memory query: half the cost of two eager filters and joins.
    found = pl.collect_all(
        [with_source(output.results), with_source(output.markers)], engine="in-memory"
    )
    return found[0], found[1]


def _first_rows(inputs: MethodInputs, reported: pl.Series) -> pl.DataFrame | None:
    """:meth:`~chimera.row_index.RowIndex.first_rows` of the reported samples' current rows."""
    return None if inputs.index is None else inputs.index.first_rows(reported.to_list())


def replaced_rows(
    inputs: MethodInputs, patient: str, registry: Registry, settings: Settings
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows of the replaced files holding the patient's samples, as computed while current.

    Each replaced file is put back in place of its run's current file; its rows come back
    ``superseded`` with the supersession reason.
    """
    replaced = inputs.supersession.filter(pl.col("replaced_by").is_not_null())
    if replaced.height == 0:
        return pl.DataFrame(), pl.DataFrame()
    inputs = inputs.indexed()
    assert inputs.replaced is not None
    own = registry.patient_samples(patient)["sample_id"].to_list()
    holding = replaced.filter(pl.col("source_sha256").is_in(list(inputs.replaced.sources_of(own))))
    if holding.height == 0:
        return pl.DataFrame(), pl.DataFrame()
    samples = patient_samples(registry, patient)
    current = _relevant(inputs, patient, registry, samples, settings, every_plate=True)
    results, markers = [], []
    for row in holding.iter_rows(named=True):
        view = pl.concat(
            [
                current.filter(pl.col("source_sha256") != row["replaced_by"]),
                inputs.replaced.by_source[row["source_sha256"]].drop(ROW_POSITION),
            ],
            how="diagonal_relaxed",
        )
        r, m = method_rows(
            inputs, patient, registry, settings, observations=view, only=row["source_sha256"]
        )
        results.append(r.with_columns(superseded_reason=pl.lit(row["reason"])))
        markers.append(m)
    if not results:
        return pl.DataFrame(), pl.DataFrame()
    return pl.concat(results, how="diagonal_relaxed"), pl.concat(markers, how="diagonal_relaxed")


def relevant_rows(
    inputs: MethodInputs, patient: str, registry: Registry, settings: Settings
) -> pl.DataFrame:
    """The current rows any of the patient's results by this method can read."""
    return _relevant(inputs, patient, registry, patient_samples(registry, patient), settings)


def screening_lookup(
    inputs: MethodInputs, patient: str, registry: Registry, settings: Settings
) -> ddpcr.Screening | None:
    """The qPCR screening look-up a ddPCR calculation of ``patient`` gets (None: no plate)."""
    own = registry.patient_samples(patient)["sample_id"]
    return _screening(inputs.screening, own, registry, settings)
