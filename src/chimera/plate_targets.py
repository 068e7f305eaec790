"""Which targets each sample has wells of on each stored PCR file: what the touched rule reads.

A patient's product marker carriage (qPCR, ddPCR) and ddPCR n_M come from the product's wells on
the patient's own plates when those hold wells of the marker, and from the registered reference
on every plate only when they do not (:mod:`chimera.method_rows`). So a new plate holding the
registered reference changes a patient not on it only when one of the patient's plates has a
target that the new plate's registered reference has wells of and the product has no well of
there: :meth:`PlateTargets.reading` finds the samples of those plates from this index alone,
without reading any rows.

The same rule lets a rebuild read only what a patient's calculation can use
(:func:`fallback_targets`, :func:`plates_by_target`): the other plates' registered-reference
wells of the targets the product has no well of on the patient's own plates.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import polars as pl

from chimera.calculate.common import is_reference_gene
from chimera.calculate.ddpcr_wells import target_key


def _target_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Distinct (sample id, target, channel) rows of a PCR frame, with the file when known."""
    channel = pl.col("channel") if "channel" in frame.columns else pl.lit(None, pl.String)
    sha = pl.col("source_sha256") if "source_sha256" in frame.columns else pl.lit(None, pl.String)
    return frame.select(
        sha.alias("source_sha256"), "sample_id", "target", channel.alias("channel")
    ).unique()


def _marker_key(target: str | None, channel: str | None, *, ddpcr: bool) -> str | None:
    """The name a calculation knows a marker by: qPCR its target, ddPCR :func:`target_key`."""
    return target_key(target, channel) if ddpcr else target


@dataclass(frozen=True)
class FileMarkers:
    """The markers (reference genes left out) of each sample's wells on one PCR file."""

    markers: frozenset[str]
    """Every marker on the file."""
    wells: dict[str, set[str]]
    """Per sample id with a well of its own on the file (a ddPCR merged row is not one): the
    markers of those wells."""

    @classmethod
    def of(cls, frame: pl.DataFrame, reference_genes: Sequence[str]) -> FileMarkers:
        """Index one file's rows (qPCR: no ``channel`` column)."""
        one = frame.with_columns(source_sha256=pl.lit("file", dtype=pl.String))
        return cls.by_file(one, reference_genes).get("file", cls(frozenset(), {}))

    @classmethod
    def by_file(cls, frame: pl.DataFrame, reference_genes: Sequence[str]) -> dict[str, FileMarkers]:
        """:meth:`of` of every file in ``frame`` in one pass, by ``source_sha256``.

        One Python pass over the columns (a rebuild asks for a few plates at a time, where a
        polars query's fixed cost dominates); each distinct (target, channel) is named once
        (:func:`_marker_key`, reference genes none).
        """
        ddpcr = "channel" in frame.columns
        rows = frame.height
        channels = frame["channel"].to_list() if ddpcr else repeat(None, rows)
        merged = (
            frame["is_merged"].fill_null(value=False).to_list()
            if "is_merged" in frame.columns
            else repeat(False, rows)
        )
        names: dict[tuple[str | None, str | None], str | None] = {}
        found: dict[str, set[str]] = {}
        wells: dict[str, dict[str, set[str]]] = {}
        for sha, sample_id, target, via, is_merged in zip(
            frame["source_sha256"].to_list(),
            frame["sample_id"].to_list(),
            frame["target"].to_list(),
            channels,
            merged,
            strict=False,
        ):
            pair = (target, via)
            if pair not in names:
                names[pair] = (
                    None
                    if is_reference_gene(target, reference_genes)
                    else _marker_key(target, via, ddpcr=ddpcr)
                )
            marker = names[pair]
            on_file = found.setdefault(sha, set())
            sample = None
            if not is_merged and sample_id is not None:
                sample = wells.setdefault(sha, {}).setdefault(sample_id, set())
            if marker is not None:
                on_file.add(marker)
                if sample is not None:
                    sample.add(marker)
        return {sha: cls(frozenset(found[sha]), wells.get(sha, {})) for sha in found}


def fallback_targets(
    own: Sequence[FileMarkers], sure_ids: Collection[str], product_ids: Collection[str]
) -> set[str]:
    """Markers on a patient's own plates (``own``) whose product carriage may read every plate.

    A marker is left out only when a product sample (``product_ids``) has a well of it on a
    plate that also holds a well of one of ``sure_ids`` (patient samples no calculation can
    take for a blank: any role but a product or negative control), so the plate surely is one
    of the patient's own (:func:`chimera.calculate.genomes.own_samples`). The set holds every
    marker the calculations read from every plate (qPCR ``marker_calls``, ddPCR
    ``own_scope``), and perhaps more: other plates' reference wells of a marker read from own
    plates change nothing.
    """
    found: set[str] = set()
    held: set[str] = set()
    for plate in own:
        found |= plate.markers
        if any(sid in plate.wells for sid in sure_ids):
            held.update(*(plate.wells.get(sid, ()) for sid in product_ids))
    return found - held


def plates_by_target(frame: pl.DataFrame) -> dict[str, set[str]]:
    """The files (``source_sha256``) holding wells of each marker in a PCR frame."""
    ddpcr = "channel" in frame.columns
    found: dict[str, set[str]] = {}
    for sha, _, target, via in _target_rows(frame).iter_rows():
        key = _marker_key(target, via, ddpcr=ddpcr)
        if key is not None and sha is not None:
            found.setdefault(key, set()).add(sha)
    return found


def targets_of(frame: pl.DataFrame, sample_ids: Collection[str]) -> set[str]:
    """The targets ``sample_ids`` have wells of in a PCR frame (:func:`target_key`)."""
    if "target" not in frame.columns:
        return set()
    wanted = set(sample_ids)
    if not wanted:
        return set()
    channels = frame["channel"].to_list() if "channel" in frame.columns else repeat(None)
    rows = zip(frame["sample_id"].to_list(), frame["target"].to_list(), channels, strict=False)
    return {target_key(target, via) for sid, target, via in rows if sid in wanted}


@dataclass
class PlateTargets:
    """Targets per sample id per file (``source_sha256``) of one PCR method's stored rows."""

    by_file: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    _lacking: dict[tuple[str, ...], dict[str, frozenset[str]]] = field(default_factory=dict)
    """Per product (its sample ids): each file's targets without a product well there."""
    _lacking_at: dict[tuple[str, ...], dict[str, set[str]]] = field(default_factory=dict)
    """Per product: the files each target lacks a product well on (:attr:`_lacking` inverted)."""
    _stale: dict[tuple[str, ...], set[str]] = field(default_factory=dict)
    """Per product: files added or changed since its :attr:`_lacking` was brought up to date."""

    def add(self, frame: pl.DataFrame) -> None:
        """Index one stored or accepted PCR frame (``sample_id, source_sha256, target[, channel]``).

        A ddPCR target is known by its name, else its channel (:func:`target_key`); wells
        without a sample id count under ``""``.
        """
        if "target" not in frame.columns or "source_sha256" not in frame.columns:
            return
        channels = frame["channel"].to_list() if "channel" in frame.columns else repeat(None)
        touched = set()
        for sha, sample_id, target, via in zip(
            frame["source_sha256"].to_list(),
            frame["sample_id"].to_list(),
            frame["target"].to_list(),
            channels,
            strict=False,
        ):
            if sha is None:
                continue
            samples = self.by_file.setdefault(sha, {})
            samples.setdefault(sample_id or "", set()).add(target_key(target, via))
            touched.add(sha)
        for key, known in self._lacking.items():
            at = self._lacking_at[key]
            for sha in touched:
                for target in known.pop(sha, ()):
                    at[target].discard(sha)
            self._stale[key] |= touched

    def lacking(self, product_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        """Per file: the targets on it that none of ``product_ids`` has a well of there.

        Kept per product and brought up to date with the files added since (not every file
        again: a batch asks once per accepted plate).
        """
        key = tuple(product_ids)
        if key not in self._lacking:
            self._lacking[key], self._lacking_at[key], self._stale[key] = {}, {}, set(self.by_file)
        known, at = self._lacking[key], self._lacking_at[key]
        todo, self._stale[key] = self._stale[key], set()
        for sha in todo:
            samples = self.by_file[sha]
            held = set().union(*(samples.get(sid, set()) for sid in product_ids))
            known[sha] = frozenset(set().union(*samples.values()) - held)
            for target in known[sha]:
                at.setdefault(target, set()).add(sha)
        return known

    def reading(self, product_ids: Sequence[str], targets: Collection[str]) -> set[str]:
        """Sample ids on the files where one of ``targets`` has no product well.

        Their patients read the product's wells of those targets on every plate.
        """
        self.lacking(product_ids)
        at = self._lacking_at[tuple(product_ids)]
        found: set[str] = set()
        for sha in set().union(*(at.get(target, ()) for target in set(targets))):
            found.update(self.by_file[sha])
        return found
