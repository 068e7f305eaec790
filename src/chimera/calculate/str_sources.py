"""STR genotype sources of a post-dose sample and the QC notes taken before any locus.

Which reference samples type each genome (methods.md 2.2-2.3: the product's
``donor_reference`` samples; the patient's ``recipient_baseline``, or with a prior transplant
donor the ``recipient_germline`` and ``hsct_donor`` samples), their union genotype
(:func:`chimera.calculate.str_profiles.reference_genotypes`), and the sample-level findings
that need review (Amelogenin Y no reference carries, broad peaks, discordant references;
methods.md 2.4, 2.8). A :class:`StrCache` lets the calculations of one rebuild share the
reference work, since every patient of a bank reads the same product references.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from chimera.calculate.limits import GenomeModel
from chimera.calculate.str_aggregate import Genome
from chimera.calculate.str_profiles import (
    Genotypes,
    ProfileKey,
    reference_genotypes,
)
from chimera.calculate.stutter_ratios import StutterIndex
from chimera.settings import StrSettings
from schemas.vocab import Role


@dataclass(frozen=True)
class Sources:
    """One post-dose sample's genotype sources: genome -> (reference sample ids, genotype)."""

    model: GenomeModel
    genomes: dict[Genome, tuple[list[str], Genotypes]]

    def reference_ids(self) -> tuple[str, ...]:
        """Every reference sample id of every genome, in genome order."""
        return tuple(i for ids, _ in self.genomes.values() for i in ids)


@dataclass
class StrCache:
    """What the STR calculations over one set of peak rows share.

    ``genotypes`` and ``y_heights`` are keyed by settings and reference sample ids, so they
    are valid only while every calculation reads the same rows of those samples (a rebuild's
    current rows); ``sample_y`` holds each reference sample's Y height (None: no peak rows),
    the parts of ``y_heights``; ``stutter`` is rebuilt whenever the table or the settings
    change.
    """

    genotypes: dict[tuple[str, tuple[str, ...]], Genotypes | None] = field(default_factory=dict)
    y_heights: dict[tuple[str, ...], float | None] = field(default_factory=dict)
    sample_y: dict[str, float | None] = field(default_factory=dict)
    stutter: StutterIndex | None = None

    def stutter_index(self, table: pl.DataFrame | None, settings: StrSettings) -> StutterIndex:
        """The stutter table indexed for ``settings`` (kept while both stay the same)."""
        index = self.stutter
        if index is None or index.table is not table or index.settings != settings:
            index = self.stutter = StutterIndex(table, settings=settings)
        return index


LABELS = {
    Role.DONOR_REFERENCE: "iNK reference samples",
    Role.RECIPIENT_BASELINE: "patient baseline samples",
    Role.RECIPIENT_GERMLINE: "patient germline samples",
    Role.HSCT_DONOR: "HSCT donor samples",
}


def _missing_reason(role: Role, owner: str | None, patient_id: str) -> str:
    if role is Role.DONOR_REFERENCE and owner is None:
        return (
            f"no iNK product lot recorded for patient {patient_id!r}; record the lot so the "
            "iNK reference profile can be found"
        )
    what = {
        Role.DONOR_REFERENCE: f"iNK product lot {owner!r}",
        Role.RECIPIENT_BASELINE: f"patient {patient_id!r} baseline (pre-dose)",
        Role.RECIPIENT_GERMLINE: (
            f"patient {patient_id!r} germline (recipient_germline: buccal swab, fibroblasts or "
            "pre-transplant DNA; the pre-dose blood of a patient with a prior transplant donor "
            "is a mixture, not a genotype)"
        ),
        Role.HSCT_DONOR: f"prior HSCT donor of patient {patient_id!r}",
    }[role]
    return f"no {what} STR reference profile; type the missing reference before this sample can be calculated"


def _wanted(
    patient_id: str, lot: str | None, *, three_genome: bool
) -> tuple[GenomeModel, dict[Genome, tuple[Role, str | None]]]:
    """The genome model of a patient and the (role, owner) typing each of its genomes."""
    if three_genome:
        return GenomeModel.THREE_GENOME, {
            Genome.INK: (Role.DONOR_REFERENCE, lot),
            Genome.HSCT_DONOR: (Role.HSCT_DONOR, patient_id),
            Genome.RECIPIENT: (Role.RECIPIENT_GERMLINE, patient_id),
        }
    return GenomeModel.TWO_GENOME, {
        Genome.INK: (Role.DONOR_REFERENCE, lot),
        Genome.RECIPIENT: (Role.RECIPIENT_BASELINE, patient_id),
    }


class References:
    """Reference samples and genotypes of the patients in one calculation.

    ``samples`` has ``sample_id, patient_id, role, product_lot``; a reference of ``role`` types
    ``owner`` when its ``patient_id`` is the owner, or, for a ``donor_reference``, its
    ``product_lot`` is (a product lot or a patient). ``heights`` are the Amelogenin heights of
    every profile in ``peaks`` (:func:`~chimera.calculate.str_profiles.profile_y_heights`,
    sample id first).
    """

    def __init__(
        self,
        samples: pl.DataFrame,
        peaks: pl.DataFrame,
        *,
        settings: StrSettings,
        cache: StrCache,
        heights: Mapping[ProfileKey, tuple[float, float]],
    ) -> None:
        self._peaks, self._settings, self._cache = peaks, settings, cache
        self._heights = heights
        self._settings_key = repr(settings)
        owners: dict[tuple[str, str], set[str]] = {}
        for sample_id, patient_id, role, lot in samples.select(
            "sample_id", "patient_id", "role", "product_lot"
        ).iter_rows():
            owners.setdefault((role, patient_id), set()).add(sample_id)
            if role == Role.DONOR_REFERENCE:
                owners.setdefault((role, lot), set()).add(sample_id)
        self._ids = {key: sorted(ids) for key, ids in owners.items()}

    def _rows(self, ids: Sequence[str]) -> pl.DataFrame:
        return self._peaks.filter(pl.col("sample_id").is_in(list(ids)))

    def genotype(self, ids: list[str]) -> Genotypes | None:
        """Union genotype of the reference samples ``ids`` (None: none of them has peaks)."""
        key = (self._settings_key, tuple(ids))
        if key not in self._cache.genotypes:
            found = reference_genotypes(self._rows(ids), ids, settings=self._settings)
            self._cache.genotypes[key] = found
        return self._cache.genotypes[key]

    def y_height(self, ids: tuple[str, ...]) -> float | None:
        """Summed Amelogenin Y height of the references ``ids`` (RFU; None: no peaks at all)."""
        if ids not in self._cache.y_heights:
            per_sample = self._cache.sample_y
            if any(i not in per_sample for i in ids):
                self._add_sample_y()
            found = [y for y in map(per_sample.get, dict.fromkeys(ids)) if y is not None]
            self._cache.y_heights[ids] = sum(found) if found else None
        return self._cache.y_heights[ids]

    def _add_sample_y(self) -> None:
        """Y height of every reference sample not in the cache yet, from its profiles' heights."""
        per_sample = self._cache.sample_y
        wanted = {
            i
            for (role, _), ids in self._ids.items()
            if role in LABELS
            for i in ids
            if i not in per_sample
        }
        per_sample.update(dict.fromkeys(wanted))
        # heights of ``peaks``'s profiles (sample first): a sample's Y is the sum over its
        # profiles; heights are >= 0, so it is positive exactly when one of its peaks is
        for key, (_, y) in self._heights.items():
            sample_id = str(key[0])
            if sample_id in wanted:
                seen = per_sample[sample_id]
                per_sample[sample_id] = y if seen is None else seen + y

    def sources(self, patient_id: str, lot: str | None, *, three_genome: bool) -> Sources | str:
        """Genotype sources of a patient's post-dose sample, or why they are missing."""
        model, wanted = _wanted(patient_id, lot, three_genome=three_genome)
        genomes = {}
        for genome, (role, owner) in wanted.items():
            if owner is None:
                return _missing_reason(role, owner, patient_id)
            ids = self._ids.get((role.value, owner), [])
            genotype = self.genotype(ids)
            if genotype is None:
                return _missing_reason(role, owner, patient_id)
            genomes[genome] = (ids, genotype)
        return Sources(model, genomes)


def sample_notes(sources: Sources, *, unexpected_y: bool, broad: Sequence[str]) -> list[str]:
    """QC findings that need review before any locus is computed (sex check, peak shape, refs).

    ``unexpected_y``: the sample shows Amelogenin Y that no reference carries
    (:func:`chimera.calculate.str_profiles.y_is_unexpected`); ``broad``: its broad peaks
    (:func:`chimera.calculate.str_profiles.profile_broad_peaks`).
    """
    notes = []
    if unexpected_y:
        notes.append(
            "Amelogenin Y signal although no reference genome (iNK product, patient"
            + (", HSCT donor" if sources.model is GenomeModel.THREE_GENOME else " baseline")
            + ") has a Y allele: possible sample swap or contamination"
        )
    if broad:
        notes.append(
            "peak shape unlike the other alleles (area/height vs the sample's median; "
            "broad artefact or dye blob?): " + ", ".join(broad)
        )
    roles = {
        Genome.INK: Role.DONOR_REFERENCE,
        Genome.HSCT_DONOR: Role.HSCT_DONOR,
        Genome.RECIPIENT: Role.RECIPIENT_GERMLINE
        if sources.model is GenomeModel.THREE_GENOME
        else Role.RECIPIENT_BASELINE,
    }
    for genome, (_, genotype) in sources.genomes.items():
        if genotype.discordant:
            notes.append(f"{LABELS[roles[genome]]} disagree at " + ", ".join(genotype.discordant))
    return notes
