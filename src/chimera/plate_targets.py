"""Which targets each sample has wells of on each stored PCR file: what the touched rule reads.

A patient's product marker carriage (qPCR, ddPCR) and ddPCR n_M come from the product's wells on
the patient's own plates when those hold wells of the marker, and from the registered reference
on every plate only when they do not (:mod:`chimera.method_rows`). So a new plate holding the
registered reference changes a patient not on it only when one of the patient's plates has a
target that the new plate's registered reference has wells of and the product has no well of
there: :meth:`PlateTargets.reading` finds the samples of those plates from this index alone,
without reading any rows.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import polars as pl

from chimera.calculate.ddpcr_wells import target_key


def _target_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Distinct (sample id, target, channel) rows of a PCR frame, with the file when known."""
    channel = pl.col("channel") if "channel" in frame.columns else pl.lit(None, pl.String)
    sha = pl.col("source_sha256") if "source_sha256" in frame.columns else pl.lit(None, pl.String)
    return frame.select(
        sha.alias("source_sha256"), "sample_id", "target", channel.alias("channel")
    ).unique()


def targets_of(frame: pl.DataFrame, sample_ids: Collection[str]) -> set[str]:
    """The targets ``sample_ids`` have wells of in a PCR frame (:func:`target_key`)."""
    if "target" not in frame.columns:
        return set()
    rows = _target_rows(frame.filter(pl.col("sample_id").is_in(list(sample_ids))))
    return {target_key(target, via) for _, _, target, via in rows.iter_rows()}


@dataclass
class PlateTargets:
    """Targets per sample id per file (``source_sha256``) of one PCR method's stored rows."""

    by_file: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    _lacking: dict[tuple[str, ...], dict[str, frozenset[str]]] = field(default_factory=dict)
    """Per product (its sample ids): each file's targets without a product well there."""

    def add(self, frame: pl.DataFrame) -> None:
        """Index one stored or accepted PCR frame (``sample_id, source_sha256, target[, channel]``).

        A ddPCR target is known by its name, else its channel (:func:`target_key`); wells
        without a sample id count under ``""``.
        """
        if "target" not in frame.columns:
            return
        rows = _target_rows(frame).drop_nulls("source_sha256")
        for sha, sample_id, target, via in rows.iter_rows():
            wells = self.by_file.setdefault(sha, {}).setdefault(sample_id or "", set())
            wells.add(target_key(target, via))
            for known in self._lacking.values():
                known.pop(sha, None)

    def lacking(self, product_ids: Sequence[str]) -> dict[str, frozenset[str]]:
        """Per file: the targets on it that none of ``product_ids`` has a well of there."""
        known = self._lacking.setdefault(tuple(product_ids), {})
        for sha, samples in self.by_file.items():
            if sha not in known:
                held = set().union(*(samples.get(sid, set()) for sid in product_ids))
                known[sha] = frozenset(set().union(*samples.values()) - held)
        return known

    def reading(self, product_ids: Sequence[str], targets: Collection[str]) -> set[str]:
        """Sample ids on the files where one of ``targets`` has no product well.

        Their patients read the product's wells of those targets on every plate.
        """
        wanted = set(targets)
        found: set[str] = set()
        for sha, missing in self.lacking(product_ids).items():
            if not missing.isdisjoint(wanted):
                found.update(self.by_file[sha])
        return found
