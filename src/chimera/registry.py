"""What the warehouse currently knows: samples, doses, product banks, the ledger, current rows.

Reads only. The registry is the latest manifest row per sample and the latest infusion-log row
per dose. Rules [R] (issues 9 and 10):

* **Product.** Every lot of one master cell bank is one genome (``cell_bank`` on product rows;
  :class:`chimera.calculate.common.ProductBanks`). A patient's bank comes from the lots the
  manifest and the infusion log name for them (a patient may receive several lots of one
  bank); without a named lot, the only bank there is. Lots of different banks never mix: such a
  patient has no bank, and the reason says why.
* **Re-exports.** :func:`chimera.runs.supersession` is the one place that decides which raw assay files
  count. Two files of one method hold the same run when both carry a header run id
  (``run_id``), the ids are equal and they share at least half of the smaller file's wells (STR:
  sample files); or, unless both carry different run ids, when they hold exactly the same set of
  (well, sample, target) rows (STR: (sample, marker)); a file never joins a run whose header
  id is another. The latest file of a run replaces the earlier ones entirely. Recurring
  control ids on another plate never replace anything.
* **Repeat measurements.** A sample measured on several current files (another plate or STR
  run) keeps every row; :func:`mark_repeat_measurements` makes the latest current, unless it
  failed QC (then the latest that did not; all failed: the latest). "Latest" = the file
  ingested last (then the file name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from chimera.calculate.common import ProductBanks, SampleInfo, sample_table
from chimera.calculate.stutter_ratios import SINGLE_SOURCE_ROLES, single_source_samples
from chimera.plate_targets import PlateTargets, targets_of
from chimera.warehouse import INFUSIONS, INGEST_LOG, OBSERVATIONS, SAMPLES, Warehouse
from schemas.vocab import PRODUCT_ROLES, FileStatus, Method, QcVerdict, ResultStatus, Role


@dataclass(frozen=True)
class PatientProduct:
    """The iNK product a patient received: master cell bank and the lot the calculations use."""

    bank: str | None
    """None when it cannot be told (``problem`` says why)."""
    lot: str | None = None
    """A lot of ``bank`` with product samples (the patient's own when it has any)."""
    lots: tuple[str, ...] = ()
    """Lots the manifest and the infusion log name for the patient."""
    problem: str | None = None


PARTITION_AFTER_LOOKUPS = 16
"""Patient look-ups answered by a filter before :meth:`Registry.patient_samples` partitions."""


@dataclass
class Registry:
    """Current registry rows: latest manifest row per sample, latest log row per dose."""

    samples: pl.DataFrame
    infusions: pl.DataFrame
    banks: ProductBanks = field(default_factory=lambda: ProductBanks({}))
    products: dict[str, PatientProduct] = field(default_factory=dict)
    """The product of every patient (and dilution series)."""

    _owned: dict[tuple[str, str], list[str]] | None = field(default=None, repr=False)
    _by_patient: dict[str, pl.DataFrame] | None = field(default=None, repr=False)
    _lookups: int = field(default=0, repr=False)
    _members: dict[tuple[str | None, tuple[Role, ...]], pl.DataFrame] = field(
        default_factory=dict, repr=False
    )
    _rows_of: dict[str, list[int]] | None = field(default=None, init=False, repr=False)
    _series: frozenset[str] | None = field(default=None, init=False, repr=False)
    _three_genome: frozenset[str] | None = field(default=None, init=False, repr=False)
    _info: dict[str, SampleInfo] | None = field(default=None, init=False, repr=False)
    _derived: dict[tuple[str, str], pl.DataFrame] = field(
        default_factory=dict, init=False, repr=False
    )

    def product_ids(self, bank: str | None) -> list[str]:
        """Sample ids of every product sample (any lot) of ``bank``."""
        return sorted(self.banks.members.get(bank, ())) if bank is not None else []

    def product_members(self, bank: str | None, roles: tuple[Role, ...]) -> pl.DataFrame:
        """The registry rows of ``bank``'s product samples with one of ``roles`` (kept once)."""
        key = (bank, roles)
        if key not in self._members:
            self._members[key] = self.samples.filter(
                pl.col("sample_id").is_in(self.product_ids(bank)) & pl.col("role").is_in(roles)
            )
        return self._members[key]

    def owned(self, owner: str, role: Role) -> list[str]:
        """Sample ids of ``role`` registered to ``owner`` (a patient, a lot or a series)."""
        if self._owned is None:
            self._owned = {}
            for sample_id, patient_id, sample_role in self.samples.select(
                "sample_id", "patient_id", "role"
            ).iter_rows():
                self._owned.setdefault((patient_id, sample_role), []).append(sample_id)
        return self._owned.get((owner, role), [])

    def sample_info(self) -> dict[str, SampleInfo]:
        """Every registry row by sample id (:func:`~chimera.calculate.common.sample_table`), once."""
        if self._info is None:
            self._info = sample_table(self.samples)
        return self._info

    def derived(self, key: tuple[str, str], build: Callable[[], pl.DataFrame]) -> pl.DataFrame:
        """A frame another module derives from these rows, built once (``key``: what, owner)."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def sample_rows(self, sample_ids: Iterable[str]) -> pl.DataFrame:
        """The registry rows of ``sample_ids``, in registry order (positions indexed once)."""
        if self._rows_of is None:
            self._rows_of = {}
            for position, sample_id in enumerate(self.samples["sample_id"].to_list()):
                self._rows_of.setdefault(sample_id, []).append(position)
        found = self._rows_of
        picks = sorted(i for sid in set(sample_ids) for i in found.get(sid, ()))
        return self.samples[picks] if picks else self.samples.clear()

    def patient_samples(self, patient: str) -> pl.DataFrame:
        """The registry rows of one patient (or lot, or series), in registry order.

        The first few look-ups (a rebuild of a few patients) filter the registry; more
        partition it once.
        """
        if self._by_patient is None and self._lookups < PARTITION_AFTER_LOOKUPS:
            self._lookups += 1
            return self.samples.filter(pl.col("patient_id") == patient)
        if self._by_patient is None:
            self._by_patient = {
                str(k[0]): v
                for k, v in self.samples.partition_by("patient_id", as_dict=True).items()
            }
        return self._by_patient.get(patient, self.samples.clear())


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
    """Current samples and doses, with the product each patient received."""
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
    products = sample_table(samples.filter(pl.col("role").is_in(PRODUCT_ROLES)))
    registry = Registry(samples, infusions, ProductBanks(products))
    bank_lots: dict[str | None, set[str]] = {}
    for info in products.values():
        bank_lots.setdefault(registry.banks.bank_of_lot(info.lot), set()).add(info.lot)
    named = _lots_named(registry)
    for patient in samples.filter(~pl.col("role").is_in(PRODUCT_ROLES))["patient_id"].unique():
        registry.products[patient] = _product_of(
            patient, named.get(patient, ()), registry, bank_lots
        )
    return registry


def _lots_named(registry: Registry) -> dict[str, tuple[str, ...]]:
    """Lots the manifest rows and the infusion log name for each patient, in order of appearance."""
    lots: dict[str, list[str]] = {}
    for table in (registry.samples, registry.infusions):
        named = (
            table.filter(pl.col("product_lot").is_not_null())
            .group_by("patient_id", maintain_order=True)
            .agg(pl.col("product_lot"))
        )
        for patient, names in named.iter_rows():
            lots.setdefault(str(patient), []).extend(str(lot) for lot in names)
    return {patient: tuple(dict.fromkeys(names)) for patient, names in lots.items()}


def _product_of(
    patient: str,
    lots: tuple[str, ...],
    registry: Registry,
    bank_lots: dict[str | None, set[str]],
) -> PatientProduct:
    """The bank a patient's ``lots`` belong to (module docstring), and a lot of it to use."""
    found = [registry.banks.bank_of_lot(lot) for lot in lots or (None,)]
    banks = sorted({b for b in found if b is not None})
    named = ", ".join(lots)
    if not banks:
        problem = (
            f"the cell bank of lot {named} of patient {patient} (a donor_reference or "
            "calibrator row of that lot, with cell_bank)"
            if lots
            else f"the product lot of patient {patient} (add product_lot to the manifest or "
            "infusion log)"
        )
        return PatientProduct(None, lots=lots, problem=problem)
    if len(banks) > 1:
        problem = (
            f"one cell bank for patient {patient}: lots {named} belong to different master cell "
            f"banks ({', '.join(banks)}), which are different genomes; correct product_lot or "
            "cell_bank"
        )
        return PatientProduct(None, lots=lots, problem=problem)
    with_samples = sorted(bank_lots.get(banks[0], set()))
    own = [lot for lot in reversed(lots) if lot in with_samples]
    choices = own or with_samples or list(reversed(lots))
    return PatientProduct(banks[0], choices[0] if choices else None, lots)


def series_ids(registry: Registry) -> set[str]:
    """Names of the dilution series in the registry (they are not patients)."""
    if registry._series is None:
        rows = registry.samples.filter(pl.col("role") == Role.DILUTION_STANDARD)
        registry._series = frozenset(rows["patient_id"].to_list())
    return set(registry._series)


def three_genome_patients(registry: Registry) -> set[str]:
    """Patients with a prior HSCT donor on record (an ``hsct_donor`` sample): three genomes."""
    if registry._three_genome is None:
        rows = registry.samples.filter(pl.col("role") == Role.HSCT_DONOR)
        registry._three_genome = frozenset(str(p) for p in rows["patient_id"].unique().to_list())
    return set(registry._three_genome)


def read_observations(warehouse: Warehouse, method: Method) -> pl.DataFrame:
    """Every stored raw row of one assay method, current or superseded."""
    return warehouse.read(OBSERVATIONS[method])


def sources_by_sample(rows: pl.DataFrame) -> pl.DataFrame:
    """``sample_id`` and the list of distinct ``source_sha256`` holding it (nulls dropped)."""
    return (
        rows.select("sample_id", "source_sha256")
        .drop_nulls()
        .group_by("sample_id")
        .agg(pl.col("source_sha256").unique())
    )


def _failed(row: dict[str, object]) -> bool:
    return row["result_status"] == ResultStatus.FAILED or row["qc_verdict"] == QcVerdict.FAIL


def mark_repeat_measurements(results: pl.DataFrame) -> pl.DataFrame:
    """Keep one current row per sample x method among repeat measurements (module docstring).

    ``results`` has ``sample_id, method, source_sha256, source_file, ingested_at,
    result_status, qc_verdict, qc_reasons, superseded, superseded_reason``; rows already
    superseded (replaced files) take no part. The other rows become ``superseded`` with the
    reason; the current row's ``qc_reasons`` say that it is a repeat measurement and which.
    """
    live = ~pl.col("superseded")
    repeated = results.filter(live).filter(pl.struct("sample_id", "method").is_duplicated())
    if repeated.height == 0:
        return results
    notes: list[dict[str, object]] = []
    ordered = repeated.sort("ingested_at", "source_file", "source_sha256")
    for _, group in ordered.group_by(["sample_id", "method"], maintain_order=True):
        rows = group.to_dicts()
        passing = [r for r in rows if not _failed(r)]
        current = (passing or rows)[-1]
        later = [r["source_file"] for r in rows[rows.index(current) + 1 :]]
        others = ", ".join(r["source_file"] for r in rows if r is not current)
        why = "later" if not later else "the latest that did not fail QC"
        note = f"repeat measurement: current = {current['source_file']} ({why}); {others} kept"
        if later:
            note += f" ({', '.join(later)} failed QC)"
        for row in rows:
            chosen = row is current
            notes.append(
                {
                    "sample_id": row["sample_id"],
                    "method": row["method"],
                    "source_sha256": row["source_sha256"],
                    "_superseded": not chosen,
                    "_note": note,
                    "_reason": None
                    if chosen
                    else f"repeat measurement: {current['source_file']} is current ({why})",
                }
            )
    marks = pl.DataFrame(notes, schema_overrides={"_reason": pl.String})
    key = ["sample_id", "method", "source_sha256"]
    joined = results.join(marks, on=key, how="left", maintain_order="left")
    marked = pl.col("_note").is_not_null() & live
    return joined.with_columns(
        superseded=pl.when(marked).then(pl.col("_superseded")).otherwise(pl.col("superseded")),
        superseded_reason=pl.when(marked)
        .then(pl.col("_reason"))
        .otherwise(pl.col("superseded_reason")),
        qc_reasons=pl.when(marked & ~pl.col("_superseded"))
        .then(
            pl.when(pl.col("qc_reasons").is_null())
            .then(pl.col("_note"))
            .otherwise(pl.concat_str("qc_reasons", pl.lit("; "), "_note"))
        )
        .otherwise(pl.col("qc_reasons")),
    ).drop("_superseded", "_note", "_reason")


def affected_patients(
    frame: pl.DataFrame,
    registry: Registry,
    method: Method | None = None,
    stored: PlateTargets | None = None,
) -> set[str]:
    """Patients whose results can change because of the sample ids in ``frame``.

    A product sample touches every patient of its cell bank, except on a PCR plate: a
    calibrator there is the plate's own control and touches only the patients on the plate;
    the registered reference (``donor_reference``) touches the patients on the plate and those
    of its bank with a plate of ``stored`` (the method's stored files, ``frame`` included) on
    which a target the reference has wells of in ``frame`` has no product well: only their
    carriage or n_M of that marker reads the registered reference on every plate
    (:mod:`chimera.method_rows`; without ``stored``: the whole bank). A dilution-series sample touches every patient (the series sets the assay's
    LoD/LoQ); an STR single-source profile (product, germline, HSCT donor, two-genome baseline)
    every patient, because it changes the stutter table every STR result is corrected with.
    """
    ids = list(set(frame["sample_id"].to_list()) - {None}) if "sample_id" in frame.columns else []
    table = registry.sample_info()
    known = [table[sid] for sid in ids if sid in table]
    series = series_ids(registry)
    if any(info.patient_id in series for info in known) or (
        method == Method.STR and _holds_single_source(known, ids, registry)
    ):
        return {p for p in registry.products if p not in series}
    patients = {info.patient_id for info in known if info.role not in PRODUCT_ROLES}
    registered = PRODUCT_ROLES if method in (None, Method.STR) else (Role.DONOR_REFERENCE,)
    products = [info for info in known if info.role in registered]
    banks = {registry.banks.bank_of_lot(info.lot) for info in products}
    if method in (None, Method.STR) or stored is None:
        return patients | {p for p, product in registry.products.items() if product.bank in banks}
    for bank in banks:
        members = registry.product_ids(bank)
        in_bank = set(members)
        reference = [info.sample_id for info in products if info.sample_id in in_bank]
        on = stored.reading(members, targets_of(frame, reference))
        owners = {
            table[s].patient_id for s in on if s in table and table[s].role not in PRODUCT_ROLES
        }
        patients |= {
            p for p in owners if p in registry.products and registry.products[p].bank == bank
        }
    return patients


def _holds_single_source(known: list[SampleInfo], ids: list[str], registry: Registry) -> bool:
    """Whether ``single_source_samples`` of the registry rows of ``ids`` alone keeps any.

    A role :func:`~chimera.calculate.stutter_ratios.single_source_samples` always keeps needs
    no look-up.
    """
    roles = {info.role for info in known}
    if not roles.isdisjoint(SINGLE_SOURCE_ROLES):
        return True
    return Role.RECIPIENT_BASELINE in roles and bool(
        single_source_samples(registry.sample_rows(ids)).height
    )


def registry_patients(registry: Registry) -> set[str]:
    """Every patient in the sample registry (product lots excluded)."""
    people = registry.samples.filter(~pl.col("role").is_in(PRODUCT_ROLES))["patient_id"]
    return {str(p) for p in people.unique().to_list()} | set(registry.products)
