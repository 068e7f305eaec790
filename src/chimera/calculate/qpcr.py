"""qPCR chimerism: % iNK from a donor-specific marker against a reference gene (methods.md 3).

A marker is present in the iNK product genome and absent from the patient; its Ct relative to a
reference gene, compared with a 100 % iNK calibrator on the same plate, gives the iNK fraction
(comparative Ct, Livak & Schmittgen 2001), corrected for amplification efficiency when the plate
carries a standard curve for both targets (Pfaffl 2001). Arithmetic: :mod:`chimera.calculate.ddct`;
plates: :mod:`chimera.calculate.qpcr_plate`; one sample x plate: :mod:`chimera.calculate.qpcr_sample`.

Rules chosen for this project (methods.md [R] items, documented here once):

* One result per post-dose sample x plate it was measured on (``source_sha256``). A plate's own
  controls belong to it: the 100 % calibrator (any lot of the product's cell bank) must be on
  the sample's plate; no-template wells (NTC, water, blank: roles from the manifest, never from
  the instrument's task) amplifying before ``ntc_ct_min`` fail that plate; the LoB uses that
  plate's blanks.
* Replicates: valid = amplified (Ct not null and <= ``ct_cutoff``) and not omitted. With >= 3 valid
  replicates and SD > ``max_replicate_sd`` the one farthest from the median is dropped once; an SD
  still above the limit (or with < 3 replicates) gives QC ``review`` (methods.md 3.3).
* Carriage of a marker by a reference genome (product, germline, HSCT donor, baseline), from
  its wells on the patient's own plates (those holding any of the patient's samples) when they
  hold any of that marker, else from its wells on every plate passed in (the product's
  registered reference on other plates; issue 12: a plate without the patient changes their
  calls only when their own plates lack the product's wells of a marker). Only the targets on
  the patient's own plates are called. More than half of its wells amplify before their
  plate's blank cut-off
  = carries; every well Undetermined or later than the cut-off = lacks it (a late background
  well is not carriage, issue 11); otherwise ambiguous. Blank cut-off: the earlier of
  ``ntc_ct_min`` and the Ct at the EP17 LoB of the plate's no-template wells
  (:func:`chimera.calculate.ddct.blank_ct_cutoff`). Which genome a marker measures follows
  :mod:`chimera.calculate.genomes` (three genomes); the reference gene is never a marker.
* Other genomes (three-genome patients): an HSCT-donor-only marker is set against the
  ``hsct_donor`` DNA on the same plate, a recipient-only marker against the
  ``recipient_germline`` DNA, exactly as iNK markers against the calibrator; a share without a
  marker (or without its reference on the plate) is the remainder (genomes.py).
* Per plate gates: a reference-gene mean Ct outside ``[reference_ct_min, reference_ct_max]``
  (sample or calibrator) is a DNA-input failure.
* Marker combination: the mean of per-marker log2 fractions (a geometric mean of % iNK). SE is the
  larger of the propagated within-marker SE and the between-marker SE (SD / sqrt(k)); the CI uses
  t(0.975, Welch-Satterthwaite dof), stored as ``ci_quantile``.
* Detection: 0 amplified marker replicates -> ``not_detected``; any amplified -> detected, but
  ``below_loq`` unless every marker used has >= ``min_replicates`` valid replicates (and the
  reference too) and the estimate is >= LoQ.
* Limits: LoD = max(``settings.lod_pct``, sample LoD, LoB). The sample LoD is the % iNK a marker
  Ct equal to ``ct_cutoff`` would give with this sample's reference Ct and calibrator (geometric
  mean over markers): the smallest fraction this reaction could still call. LoB (CLSI EP17-A2) is
  computed when the plate's blanks (no-template wells, genomic ``negative_control`` DNA, the
  patient's 0 % iNK references) give at least one amplified marker result, blanks counting 0 %
  when not amplified; a detected estimate not above LoB is ``not_detected``.
  LoQ = max(``settings.loq_pct``, LoD).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import polars as pl

from chimera.calculate.common import (
    SampleInfo,
    is_reference_gene,
    sample_table,
)
from chimera.calculate.genomes import (
    Calls,
    PatientGenomes,
    Share,
    own_samples,
    post_dose_samples,
)
from chimera.calculate.limits import MethodOutput, SampleResult, markers_frame, results_frame
from chimera.calculate.qpcr_plate import PlateContext, marker_calls, plate_contexts
from chimera.calculate.qpcr_sample import SampleOnPlate, evaluate
from chimera.errors import NotChimerismAssayError
from chimera.settings import QpcrSettings
from schemas.vocab import Role

__all__ = [
    "assert_chimerism_plate",
    "chimerism_on_plates",
    "compute_qpcr_chimerism",
    "informative_markers",
]


def assert_chimerism_plate(wells: pl.DataFrame, *, settings: QpcrSettings, file_name: str) -> None:
    """Raise when a parsed plate (``QpcrWells``) cannot be a chimerism assay.

    A chimerism plate needs a reference-gene target (``settings.reference_genes``) and at least
    one other (marker) target.

    Raises
    ------
    NotChimerismAssayError
        With what was looked for, what was found and how to fix it.
    """
    targets = sorted({t for t in wells.get_column("target").to_list() if t})
    found = ", ".join(targets[:12]) + (
        f" and {len(targets) - 12} more" if len(targets) > 12 else ""
    )
    found = found or "no target names at all"
    expected = ", ".join(settings.reference_genes)
    references = [t for t in targets if is_reference_gene(t, settings.reference_genes)]
    if not references:
        msg = (
            f"{file_name}: no reference-gene target (expected one of {expected}); found targets "
            f"{found}. This plate is not a chimerism assay, or its reference gene has another "
            "name: add it to qpcr.reference_genes in chimera.toml"
        )
        raise NotChimerismAssayError(msg)
    if len(references) == len(targets):
        msg = (
            f"{file_name}: only reference-gene target(s) {', '.join(references)} and no "
            "donor-specific marker target; a chimerism plate needs at least one marker "
            "(e.g. an iNK-specific indel) beside the reference gene. This plate is not a "
            "chimerism assay (e.g. a reference-gene standard curve)"
        )
        raise NotChimerismAssayError(msg)


def informative_markers(
    wells: pl.LazyFrame | pl.DataFrame,
    *,
    product_sample_ids: Collection[str],
    baseline_sample_ids: Collection[str],
    settings: QpcrSettings,
) -> list[str]:
    """Return the iNK-specific marker targets of a two-genome patient, sorted by name.

    ``wells`` has ``QpcrWells`` columns (any plates). A marker is informative when the product
    samples carry it and the baseline samples lack it (rules in the module docstring).
    """
    frame = wells.collect() if isinstance(wells, pl.LazyFrame) else wells
    table = {sid: SampleInfo(sid, "product", Role.DONOR_REFERENCE) for sid in product_sample_ids}
    table |= {
        sid: SampleInfo(sid, "patient", Role.RECIPIENT_BASELINE) for sid in baseline_sample_ids
    }
    genomes = PatientGenomes(
        patient_id="patient",
        bank=None,
        product_ids=tuple(sorted(product_sample_ids)),
        germline_ids=tuple(sorted(baseline_sample_ids)),
        hsct_ids=(),
        baseline_ids=tuple(sorted(baseline_sample_ids)),
        germline_is_baseline=True,
    )
    contexts = list(plate_contexts(frame, settings, table).values())
    calls = marker_calls(genomes, contexts)
    return [marker for marker, (share, _) in calls.items() if share is Share.INK]


def compute_qpcr_chimerism(
    wells: pl.LazyFrame, samples: pl.LazyFrame, *, settings: QpcrSettings
) -> MethodOutput:
    """Compute % iNK for every post-dose sample x plate in ``wells`` (methods.md 3-4).

    Parameters
    ----------
    wells
        ``QpcrWells`` columns plus ``source_sha256`` (the plate id), for every relevant sample
        including product, baseline, blank and NTC wells, on one or several plates: every plate
        holding the patient's samples, and the product's wells on other plates.
    samples
        ``sample_id, patient_id, role`` + optional ``product_lot``, ``cell_bank``, ``specimen``
        (``Manifest`` columns) for the samples on those plates.
    settings
        Thresholds; the rules are listed in the module docstring.

    Returns
    -------
    MethodOutput
        One ``results`` row per post-dose sample x plate; ``markers`` holds one row per
        replicate well of each marker and of the reference gene.
    """
    table = sample_table(samples.collect())
    contexts = plate_contexts(wells.collect(), settings, table)
    return chimerism_on_plates([contexts[key] for key in sorted(contexts)], table)


def chimerism_on_plates(
    ordered: Sequence[PlateContext], table: dict[str, SampleInfo]
) -> MethodOutput:
    """:func:`compute_qpcr_chimerism` on indexed plates (one patient's, sorted by plate id).

    ``table`` holds the patient's samples, the product samples and the other DNA on the plates
    (their roles decide which genome each sample is); the plates may be shared by patients.
    """
    negative_controls = tuple(
        sorted(sid for sid, info in table.items() if info.role == Role.NEGATIVE_CONTROL)
    )
    results: list[SampleResult] = []
    rows: list[dict[str, object]] = []
    on_plates = set().union(*(c.samples for c in ordered))
    post_dose = sorted(
        sid for sid, info in table.items() if info.role == Role.POST_DOSE and sid in on_plates
    )
    # Each post-dose sample's plates (its patient's own plates that hold it), in plate order.
    holding: dict[str, list[PlateContext]] = {sid: [] for sid in post_dose}
    for context in ordered:
        for sid in context.samples.intersection(holding):
            holding[sid].append(context)
    owners = own_samples(table)
    own_of: dict[str, list[PlateContext]] = {}

    def own_plates(patient: str) -> list[PlateContext]:
        """The patient's own plates (holding any of their samples), found once per patient."""
        if patient not in own_of:
            ids = owners.get(patient, set())
            own_of[patient] = [c for c in ordered if not c.samples.isdisjoint(ids)]
        return own_of[patient]

    def calls(genomes: PatientGenomes) -> Calls:
        return marker_calls(genomes, ordered, own_plates(genomes.patient_id))

    for sample in post_dose_samples(post_dose, table, calls):
        for context in holding[sample.info.sample_id]:
            result, detail = evaluate(
                SampleOnPlate(
                    sample_id=sample.info.sample_id,
                    context=context,
                    genomes=sample.genomes,
                    calls=sample.calls,
                    table=table,
                    blank_ids=(*negative_controls, *sample.genomes.blank_ids),
                    notes=(sample.note,) if sample.note else (),
                )
            )
            results.append(result)
            rows.extend(detail)
    return MethodOutput(results=results_frame(results), markers=markers_frame(rows))
