"""One qPCR plate's wells, its controls, and which genome each marker measures (methods.md 3).

A plate's own control wells belong to that plate: its no-template wells (NTC, water, blank;
roles from the manifest, :func:`chimera.calculate.common.is_no_template`) gate it and set its
blank cut-off (:func:`chimera.calculate.ddct.blank_ct_cutoff`). Marker carriage is read from
the patient's own plates when they hold wells of that genome and marker, else from every plate
passed in (:func:`marker_calls`), each well against its own plate's cut-off.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

import polars as pl

from chimera.calculate.common import SampleInfo, is_no_template, is_reference_gene
from chimera.calculate.ddct import ReplicateSummary, amplification_factor, blank_ct_cutoff
from chimera.calculate.ddct import summarise_replicates as summarise
from chimera.calculate.genomes import (
    UNTESTED,
    Calls,
    Carriage,
    GenomeCall,
    PatientGenomes,
    classify_marker,
)
from chimera.settings import QpcrSettings


class QpcrWell(NamedTuple):
    """One well's Ct for one target on one plate (a tuple: cheap to build per well)."""

    plate: str
    sample_id: str | None
    target: str | None
    well: str
    ct: float | None
    omitted: bool
    no_template: bool


def _factors(columns: Iterable[tuple[str | None, float | None, float | None]]) -> dict[str, float]:
    """Amplification factor E of each target on one plate from its slope or efficiency, if any.

    ``columns``: (target, slope, efficiency_pct) of every row of the plate.
    """
    slopes: dict[str, list[float]] = defaultdict(list)
    effs: dict[str, list[float]] = defaultdict(list)
    for target, slope, eff in columns:
        if target is None:
            continue
        if slope is not None and slope < 0:
            slopes[target].append(slope)
        if eff is not None and eff > 0:
            effs[target].append(eff)
    factors: dict[str, float] = {}
    for target in {*slopes, *effs}:
        if target in slopes:
            factor = amplification_factor(statistics.median(slopes[target]))
        else:
            factor = 1.0 + statistics.median(effs[target]) / 100.0
        # A factor outside (1, 3) is not a usable standard curve (E = 2 is 100 % efficiency).
        if 1.0 < factor < 3.0:
            factors[target] = factor
    return factors


def _by_well(rows: pl.DataFrame) -> dict[str, list[Any]]:
    """The columns a plate's wells are built from, sorted by well then target (null last).

    A stable sort of column lists in Python: the order of polars' ``sort("well", "target",
    nulls_last=True, maintain_order=True)`` (``str`` order is UTF-8 byte order), without the
    frame round trip (issue 12).
    """
    names = ("well", "target", "sample_id", "ct", "omitted", "task")
    lists = [rows.get_column(c).to_list() for c in names]
    wells, targets = lists[0], lists[1]
    order = sorted(
        range(rows.height), key=lambda i: (wells[i], targets[i] is None, targets[i] or "")
    )
    return {name: [column[i] for i in order] for name, column in zip(names, lists, strict=True)}


class PlateContext:
    """Everything about one plate that the sample evaluations share."""

    def __init__(
        self,
        plate: str,
        rows: pl.DataFrame,
        settings: QpcrSettings,
        table: dict[str, SampleInfo],
    ) -> None:
        self.plate = plate
        self.rows = rows
        self.settings = settings
        self.by_sample_target: dict[tuple[str | None, str | None], list[QpcrWell]] = defaultdict(
            list
        )
        self.no_template: dict[str | None, list[QpcrWell]] = defaultdict(list)
        self.ntc_failures: list[str] = []
        columns = _by_well(rows)
        keys = list(zip(columns["sample_id"], columns["task"], strict=True))
        kinds = {key: is_no_template(table.get(key[0] or ""), *key) for key in set(keys)}
        # ``tuple.__new__`` builds each tuple in C (no per-well Python ``__new__``/``_make``).
        wells = map(
            partial(tuple.__new__, QpcrWell),
            zip(
                repeat(plate),
                columns["sample_id"],
                columns["target"],
                columns["well"],
                columns["ct"],
                map(bool, columns["omitted"]),
                map(kinds.__getitem__, keys),
            ),
        )
        with_omitted: set[tuple[str | None, str | None]] = set()
        for well in wells:
            if well.no_template:
                self._add_no_template(well)
            else:
                key = (well.sample_id, well.target)
                self.by_sample_target[key].append(well)
                if well.omitted:
                    with_omitted.add(key)
        self.samples = {s for s, _ in self.by_sample_target if s is not None}
        self.well_counts: dict[str | None, int] = defaultdict(int)
        """Wells (omitted ones too) of each sample on the plate."""
        self._targets_of: dict[str | None, list[str]] = defaultdict(list)
        for (sample_id, target), group in self.by_sample_target.items():
            self.well_counts[sample_id] += len(group)
            if target is not None:
                self._targets_of[sample_id].append(target)
        # A group without an omitted well is its own list of valid wells (not copied).
        self._valid = {
            key: [w for w in self.by_sample_target[key] if not w.omitted] for key in with_omitted
        }
        # Row order does not matter here (medians).
        self._factors = _factors(
            zip(
                *(rows.get_column(c).to_list() for c in ("target", "slope", "efficiency_pct")),
                strict=True,
            )
        )
        self._targets = {t for _, t in self.by_sample_target if t is not None}
        self._cutoff_cache: dict[str | None, float] = {}
        self._summaries: dict[tuple[str, str, str | None], ReplicateSummary] = {}
        self._carriage: dict[tuple[str, tuple[str, ...]], tuple[int, int]] = {}
        self._holds: dict[tuple[str, tuple[str, ...]], bool] = {}
        self.blank_results: dict[tuple[str, str, str, str], list[float]] = {}
        """% iNK of a DNA blank's marker wells by (blank, marker, calibrator, reference gene)."""
        self._sample_targets: dict[str, frozenset[str]] = {}

    def _add_no_template(self, well: QpcrWell) -> None:
        self.no_template[well.target].append(well)
        if not well.omitted and well.ct is not None and well.ct < self.settings.ntc_ct_min:
            self.ntc_failures.append(
                f"no-template well {well.well} ({well.target}) amplified at Ct {well.ct:.2f} "
                f"(< {self.settings.ntc_ct_min:g}): plate contaminated"
            )

    def wells(self, sample_id: str, target: str) -> list[QpcrWell]:
        """Non-omitted wells of one sample and target (shared: do not modify the list)."""
        key = (sample_id, target)
        if key in self._valid:
            return self._valid[key]
        return self.by_sample_target.get(key, [])

    def has_wells(self, sample_id: str, target: str) -> bool:
        """Whether the plate holds any well (omitted ones too) of one sample and target."""
        return bool(self.by_sample_target.get((sample_id, target)))

    def all_wells(self, sample_id: str, target: str) -> list[QpcrWell]:
        """Every well of one sample and target, omitted ones too."""
        return list(self.by_sample_target.get((sample_id, target), []))

    def blank_wells(self, target: str) -> list[QpcrWell]:
        """Non-omitted no-template wells of a target."""
        return [w for w in self.no_template.get(target, []) if not w.omitted]

    def _summarise(self, cts: Sequence[float | None]) -> ReplicateSummary:
        return summarise(
            cts,
            ct_cutoff=self.settings.ct_cutoff,
            max_sd=self.settings.max_replicate_sd,
            min_replicates=self.settings.min_replicates,
        )

    def summary(self, sample_id: str, target: str) -> ReplicateSummary:
        """Replicate summary (methods.md 3.3) of one sample and target on this plate."""
        key = (sample_id, target, None)
        found = self._summaries.get(key)
        if found is None:
            found = self._summaries[key] = self._summarise(
                [w.ct for w in self.wells(sample_id, target)]
            )
        return found

    def reference_summary(self, sample_id: str, reference: str, marker: str) -> ReplicateSummary:
        """Reference-gene replicates paired with a marker: the same wells when multiplexed.

        A duplex/multiplex well holds the marker and the reference gene, and its ΔCt cancels
        that well's DNA input (QuantStudio computes ΔCt per well); in a singleplex layout
        (no shared well) every reference well of the sample is used.
        """
        key = (sample_id, reference, marker)
        if key not in self._summaries:
            shared = {w.well for w in self.wells(sample_id, marker)}
            paired = [w.ct for w in self.wells(sample_id, reference) if w.well in shared]
            self._summaries[key] = (
                self._summarise(paired) if paired else self.summary(sample_id, reference)
            )
        return self._summaries[key]

    def factor(self, target: str) -> float | None:
        """Amplification factor of a target from this plate's standard curve, if any."""
        return self._factors.get(target)

    def blank_cutoff(self, target: str | None) -> float:
        """Ct after which a well of ``target`` is blank background on this plate."""
        if target not in self._cutoff_cache:
            self._cutoff_cache[target] = blank_ct_cutoff(
                [w.ct for w in self.no_template.get(target, []) if not w.omitted],
                ct_cutoff=self.settings.ct_cutoff,
                tolerance=self.settings.ntc_ct_min,
            )
        return self._cutoff_cache[target]

    def carriage_counts(self, target: str, ids: tuple[str, ...]) -> tuple[int, int]:
        """(wells, wells before the blank cut-off) of ``ids`` for ``target`` on this plate.

        A well before the cut-off amplified at or before this plate's :meth:`blank_cutoff` of
        its target (a real signal).
        """
        key = (target, ids)
        found = self._carriage.get(key)
        if found is None:
            cutoff = self.blank_cutoff(target)
            cts = [w.ct for sample_id in ids for w in self.wells(sample_id, target)]
            above = [ct for ct in cts if ct is not None and ct <= cutoff]
            found = self._carriage[key] = len(cts), len(above)
        return found

    def reference_target(self, sample_id: str) -> str | None:
        """Return the first configured reference gene this sample has wells for on this plate."""
        targets = self._targets_of.get(sample_id, [])
        for gene in self.settings.reference_genes:
            for target in targets:
                if is_reference_gene(target, (gene,)):
                    return target
        return None

    def targets(self) -> set[str]:
        """Every target name on the plate (shared: do not modify the set)."""
        return self._targets

    def sample_targets(self, sample_id: str) -> frozenset[str]:
        """The targets one sample has wells (omitted ones too) of on this plate."""
        found = self._sample_targets.get(sample_id)
        if found is None:
            found = self._sample_targets[sample_id] = frozenset(self._targets_of.get(sample_id, ()))
        return found

    def holds_any(self, target: str, ids: tuple[str, ...]) -> bool:
        """Whether the plate holds a well (omitted ones too) of any of ``ids`` for ``target``."""
        key = (target, ids)
        found = self._holds.get(key)
        if found is None:
            found = self._holds[key] = any(self.has_wells(sid, target) for sid in ids)
        return found


def carriage(target: str, ids: Sequence[str], contexts: Sequence[PlateContext]) -> GenomeCall:
    """A reference genome's carriage of a marker from its wells on the plates passed in.

    Carries: more than half of its wells amplify before their plate's blank cut-off. Lacks it:
    every well Undetermined or later than the cut-off (methods.md 3.4, 4; issue 11).
    Otherwise ambiguous.
    """
    n = k = 0
    key = tuple(ids)
    for context in contexts if key else ():
        counts = context._carriage.get((target, key)) or context.carriage_counts(target, key)
        n += counts[0]
        k += counts[1]
    if n == 0:
        return UNTESTED
    if k == 0:
        return GenomeCall(Carriage.ABSENT, f"0/{n} wells before the blank cut-off")
    detail = f"amplified in {k}/{n} wells"
    return GenomeCall(Carriage.CARRIES if 2 * k > n else Carriage.AMBIGUOUS, detail)


def holds(target: str, ids: Sequence[str], contexts: Sequence[PlateContext]) -> bool:
    """Whether any of ``contexts`` holds a well (omitted ones too) of ``ids`` for ``target``."""
    key = tuple(ids)
    return bool(key) and any(c.holds_any(target, key) for c in contexts)


def marker_calls(
    genomes: PatientGenomes,
    contexts: Sequence[PlateContext],
    own: Sequence[PlateContext] | None = None,
) -> Calls:
    """What each target on the patient's plates measures for this patient (classify_marker).

    ``own`` = the patient's own plates (default: every plate). A genome's carriage of a marker
    comes from its wells on ``own`` when they hold any, else from its wells on every plate
    (the product's registered reference on other plates; rule in :mod:`chimera.calculate.qpcr`).
    """
    own = contexts if own is None else own
    if not own:
        return {}
    genes = own[0].settings.reference_genes
    targets = sorted({t for c in own for t in c.targets() if not is_reference_gene(t, genes)})

    read: dict[tuple[str, tuple[str, ...]], GenomeCall] = {}

    def call(target: str, ids: tuple[str, ...]) -> GenomeCall:
        # Genomes with the same samples (germline = baseline) are read once per target.
        key = (target, ids)
        if key not in read:
            read[key] = carriage(target, ids, own if holds(target, ids, own) else contexts)
        return read[key]

    calls: Calls = {}
    for target in targets:
        calls[target] = classify_marker(
            genomes,
            product=call(target, genomes.product_ids),
            germline=call(target, genomes.germline_ids),
            hsct=call(target, genomes.hsct_ids),
            baseline=call(target, genomes.baseline_ids),
        )
    return calls


def plate_contexts(
    wells: pl.DataFrame, settings: QpcrSettings, table: dict[str, SampleInfo]
) -> dict[str, PlateContext]:
    """One :class:`PlateContext` per ``source_sha256`` (a frame without it is one plate)."""
    if "source_sha256" not in wells.columns:
        wells = wells.with_columns(source_sha256=pl.lit("plate"))
    wells = wells.with_columns(
        pl.col("source_sha256").cast(pl.String).fill_null("plate"),
        pl.col("omitted").fill_null(value=False),
    )
    return {
        str(plate): PlateContext(str(plate), rows, settings, table)
        for (plate,), rows in wells.partition_by("source_sha256", as_dict=True).items()
    }
