"""Which targets each sample has wells of on each stored PCR file: what the touched rule reads.

A patient's product marker carriage (qPCR, ddPCR) and ddPCR n_M come from the product's wells on
the patient's own plates when those hold wells of the marker, and from the registered reference
on every plate only when they do not (:mod:`chimera.method_rows`). So a new plate holding the
registered reference changes a patient not on it only when one of the patient's plates has a
target without a product well of it: :meth:`PlateTargets.lacking_product` finds the samples
of those plates from this index alone, without reading any rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from chimera.calculate.ddpcr_wells import target_key


@dataclass
class PlateTargets:
    """Targets per sample id per file (``source_sha256``) of one PCR method's stored rows."""

    by_file: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    _lacking: dict[tuple[str, ...], dict[str, bool]] = field(default_factory=dict)
    """Per product (its sample ids): whether each file lacks a product well of a target."""

    def add(self, frame: pl.DataFrame) -> None:
        """Index one stored or accepted PCR frame (``sample_id, source_sha256, target[, channel]``).

        A ddPCR target is known by its name, else its channel (:func:`target_key`); wells
        without a sample id count under ``""``.
        """
        if "target" not in frame.columns:
            return
        channel = pl.col("channel") if "channel" in frame.columns else pl.lit(None, pl.String)
        rows = (
            frame.select("source_sha256", "sample_id", "target", channel.alias("channel"))
            .drop_nulls("source_sha256")
            .unique()
        )
        for sha, sample_id, target, via in rows.iter_rows():
            wells = self.by_file.setdefault(sha, {}).setdefault(sample_id or "", set())
            wells.add(target_key(target, via))
            for known in self._lacking.values():
                known.pop(sha, None)

    def lacking_product(self, product_ids: Sequence[str]) -> set[str]:
        """Sample ids on the files where some target has no well of any of ``product_ids``."""
        known = self._lacking.setdefault(tuple(product_ids), {})
        found: set[str] = set()
        for sha, samples in self.by_file.items():
            lacks = known.get(sha)
            if lacks is None:
                held = set().union(*(samples.get(sid, set()) for sid in product_ids))
                lacks = known[sha] = any(targets - held for targets in samples.values())
            if lacks:
                found.update(samples)
        return found
