"""A touched patient's rows by one method computed again only when one of their inputs changed.

A rebuild recomputes the ``chimerism``/``markers`` rows of every patient a change touches
(:mod:`chimera.rebuild`, issue 12), but a new qPCR plate changes none of the patient's STR rows.
A method's share of a patient's rows (:func:`chimera.method_rows.method_rows` and
:func:`~chimera.method_rows.replaced_rows`, before the patient-wide finish) reads only:

* the current rows the patient's results can read (:func:`chimera.method_rows.relevant_rows`:
  STR the peaks of the patient's and the product's samples in every run; qPCR/ddPCR the
  patient's own plates whole and the wells of the product's registered reference), each file
  named by its row of :func:`chimera.runs.supersession` (SHA-256, name, ingest time, run link,
  replaced by); and the replaced files holding the patient's samples with their supersession
  rows; ddPCR also what it looked up on the qPCR screening plates holding the patient's
  samples (a marker's carriage the ddPCR plates leave untested): the entry keeps each
  look-up and its answer, and is used only when the same look-ups get the same answers now;
* the registry rows (sample, patient, role, lot, bank, specimen) of the patient's samples, of
  the product samples of the bank and of every sample on those files;
* the effective computation settings (:func:`chimera.lineage.parameters_sha256` after the
  assay limits), for STR the stutter table, and the code that computes (the package's source
  and the versions of the libraries it runs on).

The SHA-256 of all that (the fingerprint) keys the output in
``<warehouse>/.cache/method-<method>.snapshot`` (Parquet): one row per owner (patient or
dilution series, per use), its fingerprint and its two frames as Arrow IPC streams, so they
come back with the exact columns and dtypes they were computed with. A hit returns the stored frames, a miss computes
and keeps them; a method's file is rewritten (atomically) only when one of its entries changed.
It is a cache, never a table: a warehouse holds the same rows with it, without it (deleted, or
unreadable) and whatever order its files came in, since an entry is used only when everything
it was computed from is the same.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

import chimera
import schemas
from chimera.calculate.genomes import GenomeCall
from chimera.lineage import parameters_sha256
from chimera.method_rows import MethodInputs, patient_samples, relevant_rows, screening_lookup
from chimera.registry import Registry
from chimera.settings import Settings
from chimera.warehouse import write_parquet_atomic
from schemas.vocab import Method, Role

LOGGER = logging.getLogger(__name__)

Frames = tuple[pl.DataFrame, pl.DataFrame]
"""A method's results and marker rows of one owner."""

ENTRY_SCHEMA = {
    "owner": pl.String,
    "fingerprint": pl.String,
    "screening": pl.String,
    "results": pl.Binary,
    "markers": pl.Binary,
}
"""One cache file's columns: the owner (``<use>/<patient or series>``), what it was computed
from, the qPCR screening look-ups it made with their answers (JSON, null when none), and
the two frames as Arrow IPC streams."""
Entry = tuple[str, str | None, bytes, bytes]
NewEntries = dict[Method, dict[str, Entry]]
"""Entries computed in one process, by method and owner key (:meth:`MethodCache.take_new`)."""

REGISTRY_COLUMNS = ("sample_id", "patient_id", "role", "product_lot", "cell_bank", "specimen")
"""The registry columns a method calculation reads (:func:`chimera.calculate.common.sample_table`)."""

LIBRARIES = ("polars", "pyarrow", "numpy", "scipy", "pandera")


@functools.cache
def code_fingerprint() -> str:
    """SHA-256 of the package's source files and the versions of the libraries it computes with.

    Any change of the code (a new release, or a developer's edit) makes every entry miss.
    """
    digest = hashlib.sha256()
    for package in (chimera, schemas):
        root = Path(str(package.__file__)).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    for library in LIBRARIES:
        try:
            version = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{library}={version}".encode())
    return digest.hexdigest()


def _json(payload: object) -> str:
    return json.dumps(payload, default=str)


def _digest(payload: object) -> str:
    return hashlib.sha256(_json(payload).encode()).hexdigest()


@dataclass
class Fingerprints:
    """The fingerprints of each (owner, method) output of one rebuild (module docstring)."""

    registry: Registry
    inputs: dict[Method, MethodInputs]
    _files: dict[Method, dict[str, str]] = field(default_factory=dict)
    _by_sample: dict[str | None, list[tuple[object, ...]]] | None = None
    _encoded: dict[str | None, str] = field(default_factory=dict)
    _settings: dict[int, tuple[Settings, str]] = field(default_factory=dict)
    _stutter: dict[int, tuple[pl.DataFrame, str]] = field(default_factory=dict)
    _keys: tuple[pl.DataFrame, list[str], list[str]] | None = None

    def files(self, inputs: MethodInputs, owner: str, rows: pl.DataFrame | None) -> list[str]:
        """The current files ``owner``'s relevant rows come from.

        ``rows``: those rows, or None for STR, whose rows are the peaks of the patient's and
        the product's samples.
        """
        if rows is not None:
            return self._row_keys(rows)[0]
        index = inputs.indexed().index
        assert index is not None
        return sorted(index.sources_of(self._patient_samples(owner)["sample_id"]))

    def of(
        self,
        inputs: MethodInputs,
        owner: str,
        settings: Settings,
        rows: pl.DataFrame | None,
        files: list[str],
    ) -> str:
        """Fingerprint of ``owner``'s output by ``inputs.method``.

        ``rows``: its relevant rows (None for STR), ``files``: :meth:`files`. Of the qPCR
        screening plates (ddPCR) only whether there are any: what an output read there is
        checked by asking again (:meth:`MethodCache.rows`).
        """
        method = inputs.method
        samples = self._patient_samples(owner)
        own = self.registry.patient_samples(owner)["sample_id"].to_list()
        whole: list[str] = []
        ids = set(samples["sample_id"].to_list())
        if rows is not None:
            # The patient's own plates, which the relevant rows hold whole.
            index = inputs.indexed().index
            assert index is not None
            whole = sorted(index.sources_of(own))
            ids.update(self._row_keys(rows)[1])
        replaced = []
        if inputs.replaced is not None and inputs.replaced.frame.height:
            replaced = sorted(inputs.replaced.sources_of(own))
        if replaced and method != Method.STR and inputs.replaced is not None:
            ids.update(inputs.replaced.take(sources=replaced)["sample_id"].drop_nulls().to_list())
            # A replaced plate's view reads the registered reference on every plate.
            index = inputs.indexed().index
            assert index is not None
            registered = samples.filter(pl.col("role") == Role.DONOR_REFERENCE)["sample_id"]
            replaced += sorted(index.sources_of(registered))
        screening = inputs.screening
        typed = screening is not None and bool(screening.sources_of(own))
        return _digest(
            [
                code_fingerprint(),
                method,
                owner,
                self._settings_sha(settings),
                self._stutter_sha(inputs.stutter) if method == Method.STR else None,
                samples.rows(),
                repr(self.registry.products.get(owner)),
                self._registry_rows(ids),
                [self._file(method, sha) for sha in files],
                whole,
                [self._file(method, sha) for sha in replaced],
                typed,
            ]
        )

    def _row_keys(self, rows: pl.DataFrame) -> tuple[list[str], list[str]]:
        """The files (sorted) and the sample ids of ``rows``, in one query.

        :meth:`files` and :meth:`of` both ask for the same owner's rows, one after the other.
        """
        if self._keys is None or self._keys[0] is not rows:
            files, ids = (
                rows.lazy()
                .select(
                    pl.col("source_sha256").unique().sort().implode(),
                    pl.col("sample_id").unique().drop_nulls().implode(),
                )
                .collect(engine="in-memory")
                .row(0)
            )
            self._keys = (rows, files, ids)
        return self._keys[1], self._keys[2]

    def _patient_samples(self, owner: str) -> pl.DataFrame:
        return patient_samples(self.registry, owner)

    def _registry_rows(self, ids: set[str | None]) -> str:
        """The registry rows (:data:`REGISTRY_COLUMNS`) of ``ids`` as JSON, by sample id.

        Null first. Every registry row is listed by sample id once per rebuild (in registry
        order) and each id's rows are written as JSON when first asked for, so the cost of a
        look-up follows the owner's samples, not the registry's size (a rebuild of a few
        patients encodes only theirs), and no row is encoded twice.
        """
        if self._by_sample is None:
            samples = self.registry.samples
            columns = [c for c in REGISTRY_COLUMNS if c in samples.columns]
            grouped: dict[str | None, list[tuple[object, ...]]] = {}
            for row in samples.select(columns).iter_rows():
                grouped.setdefault(row[0], []).append(row)
            self._by_sample = grouped
        keys: list[str | None] = [None] if None in ids else []
        keys += sorted(i for i in ids if i is not None)
        return "".join(self._encoded_rows(key) for key in keys)

    def _encoded_rows(self, key: str | None) -> str:
        """One sample id's registry rows as JSON ("" for an id the registry lacks), kept."""
        found = self._encoded.get(key)
        if found is None:
            assert self._by_sample is not None
            rows = self._by_sample.get(key)
            found = self._encoded[key] = "" if rows is None else _json(rows)
        return found

    def _file(self, method: Method, sha: str) -> str:
        """The supersession row of one raw file (its SHA-256 names its rows) as JSON."""
        if method not in self._files:
            table = self.inputs[method].supersession
            self._files[method] = {row[0]: _json(row) for row in table.iter_rows()}
        return self._files[method].get(sha) or _json((sha,))

    def _settings_sha(self, settings: Settings) -> str:
        known = self._settings.get(id(settings))
        if known is None or known[0] is not settings:
            known = (settings, parameters_sha256(settings))
            self._settings[id(settings)] = known
        return known[1]

    def _stutter_sha(self, stutter: pl.DataFrame) -> str:
        known = self._stutter.get(id(stutter))
        if known is None or known[0] is not stutter:
            known = (stutter, _digest([stutter.columns, stutter.rows()]))
            self._stutter[id(stutter)] = known
        return known[1]


def _to_ipc(frame: pl.DataFrame) -> bytes:
    """A frame as Arrow IPC *stream* bytes (lz4).

    The stream format, not the file format: no footer to build or seek to, so writing and
    reading one small frame take about a third of the time (issue 12); the cache file's
    Parquet compression then shrinks the blobs further.
    """
    buffer = io.BytesIO()
    frame.write_ipc_stream(buffer, compression="lz4")
    return buffer.getvalue()


def _from_ipc(blob: bytes) -> pl.DataFrame | None:
    """The stored frame (None when the bytes are damaged: computed afresh)."""
    try:
        return pl.read_ipc_stream(io.BytesIO(blob))
    except (OSError, pl.exceptions.PolarsError) as err:
        LOGGER.warning("method cache entry unreadable, computing afresh: %s", err)
        return None


@dataclass
class MethodCache:
    """The stored (owner, method) outputs of a warehouse, read on first use, saved once."""

    folder: Path
    fingerprints: Fingerprints
    _stored: dict[Method, dict[str, Entry]] = field(default_factory=dict)
    _new: dict[Method, dict[str, Entry]] = field(default_factory=dict)

    def rows(
        self,
        inputs: MethodInputs,
        owner: str,
        settings: Settings,
        compute: Callable[[MethodInputs, pl.DataFrame], Frames],
        *,
        use: str,
    ) -> Frames:
        """``compute(inputs, relevant rows)`` of ``owner``, or the stored frames.

        The stored frames are used when nothing they were computed from changed; ``use``
        names what they are (one entry per owner and use).
        """
        registry = self.fingerprints.registry
        # STR is keyed by the files holding the samples: its rows are taken only to compute.
        rows = (
            None
            if inputs.method == Method.STR
            else relevant_rows(inputs, owner, registry, settings)
        )
        files = self.fingerprints.files(inputs, owner, rows)
        if not files:
            return compute(
                inputs, relevant_rows(inputs, owner, registry, settings) if rows is None else rows
            )
        fingerprint = self.fingerprints.of(inputs, owner, settings, rows, files)
        key = f"{use}/{owner}"
        entry = self._entries(inputs.method).get(key)
        if (
            entry is not None
            and entry[0] == fingerprint
            and self._same_answers(inputs, owner, settings, entry[1])
        ):
            stored = _from_ipc(entry[2]), _from_ipc(entry[3])
            if stored[0] is not None and stored[1] is not None:
                return stored[0], stored[1]
        asked: list[tuple[str, list[str], str, str]] = []

        def note(marker: str, ids: Sequence[str], call: GenomeCall) -> None:
            asked.append((marker, list(ids), str(call.carriage.value), call.detail))

        if rows is None:
            rows = relevant_rows(inputs, owner, registry, settings)
        results, markers = compute(replace(inputs, screened=note), rows)
        self._new.setdefault(inputs.method, {})[key] = (
            fingerprint,
            json.dumps(asked) if asked else None,
            _to_ipc(results),
            _to_ipc(markers),
        )
        return results, markers

    def _same_answers(
        self, inputs: MethodInputs, owner: str, settings: Settings, asked: str | None
    ) -> bool:
        """Whether the screening look-ups an entry made get the answers they got then."""
        if asked is None:
            return True
        lookup = screening_lookup(inputs, owner, self.fingerprints.registry, settings)
        if lookup is None:
            return False
        for marker, ids, carriage, detail in json.loads(asked):
            call = lookup(marker, ids)
            if (str(call.carriage.value), call.detail) != (carriage, detail):
                return False
        return True

    def _path(self, method: Method) -> Path:
        return self.folder / f"method-{method}.snapshot"

    def _entries(self, method: Method) -> dict[str, Entry]:
        """The stored entries of ``method`` (none when there is no readable file)."""
        if method not in self._stored:
            path = self._path(method)
            entries: dict[str, Entry] = {}
            if path.is_file():
                try:
                    frame = pl.read_parquet(path, columns=list(ENTRY_SCHEMA))
                    entries = {row[0]: row[1:] for row in frame.iter_rows()}
                except (OSError, pl.exceptions.PolarsError) as err:
                    LOGGER.warning("method cache %s unreadable, computing afresh: %s", path, err)
            self._stored[method] = entries
        return self._stored[method]

    def take_new(self) -> NewEntries:
        """The entries computed since the last call, handed over (a worker's: :meth:`adopt`)."""
        new, self._new = self._new, {}
        return new

    def adopt(self, new: NewEntries) -> None:
        """Keep entries a worker computed (:func:`chimera.rebuild.patients_in_worker`) to save.

        The worker computes an entry with this code from the same warehouse files, settings
        and stutter table, so it holds the fingerprint and frames this process would make.
        """
        for method, entries in new.items():
            self._new.setdefault(method, {}).update(entries)

    def save(self) -> list[Path]:
        """Write each method's file that gained or changed entries; return the paths written."""
        written = []
        for method, new in sorted(self._new.items()):
            if not new:
                continue
            entries = {**self._entries(method), **new}
            frame = pl.DataFrame(
                [(key, *entries[key]) for key in sorted(entries)], schema=ENTRY_SCHEMA, orient="row"
            )
            written.append(write_parquet_atomic(frame, self._path(method)))
            self._stored[method], self._new[method] = entries, {}
        return written


def open_cache(
    warehouse_root: Path, registry: Registry, inputs: dict[Method, MethodInputs]
) -> MethodCache:
    """The method cache of the warehouse at ``warehouse_root`` for one rebuild."""
    return MethodCache(warehouse_root / ".cache", Fingerprints(registry, inputs))
