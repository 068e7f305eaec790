"""ddPCR chimerism: % iNK (and the other genomes' shares) per post-dose sample x plate.

Sources: methods.md sections 4 and 5 (arithmetic in :mod:`chimera.calculate.poisson`, wells in
:mod:`chimera.calculate.ddpcr_wells`), 2.3 for three genomes (:mod:`chimera.calculate.genomes`).
Every function here is pure: no file I/O, no clock, no logging.

Rules recorded here [R]:

* One result per post-dose sample x plate it was measured on (``source_sha256``); a plate's own
  control wells belong to that plate.
* Carriage of a marker by a reference genome, pooled over the patient's own plates (those
  holding any of the patient's samples) when they hold wells of it with that marker, else over
  every plate passed in (the registered reference on other plates): >= 0.5 copies
  per genome (n_ref·λ_M/λ_ref) carries it; fewer than ``lod_positive_droplets`` positives or at
  most ``ABSENT_MAX_COPIES`` copies per genome lacks it; in between is ambiguous. A genome
  without ddPCR wells of a marker is judged by the caller's ``screening`` calls (another
  assay's marker-screening plate, e.g. a germline typed by qPCR only), when given.
* Zygosity factor k = n_ref/n_M per marker from the reference genome of the share it measures
  (the product for iNK, the HSCT donor, the germline) on the same plate; when that plate has no
  usable wells of it, its wells on the patient's own plates when any of them holds wells of the
  marker, else the registered reference (its wells on every plate). n_M is
  ``DdpcrSettings.product_marker_copies`` when configured (iNK markers), else read from the
  reference (:func:`chimera.calculate.poisson.marker_copies`, any n_M >= 1). When the product
  control reads more than ``CONTROL_OFF_TOLERANCE`` (10 %) off n_M, the control-normalised value
  (reported x n_M / observed copies) is given in a note and in the pooled marker row
  (``pct_ink_control_normalised``).
* Background: each iNK marker's false-positive rate per droplet comes from the blanks on the
  sample's plate (wells without DNA, genomic 0 % controls, the patient's 0 % iNK references:
  baseline, germline, HSCT donor); from every plate when the plate has none. LoB = the 95th
  percentile of Poisson(rate x the sample's droplets) (methods.md 5.6).
* Negative controls, per plate: a well without DNA with >= ``lod_positive_droplets``
  reference-gene droplets holds genomic DNA; a negative control (with or without DNA) with >=
  ``lod_positive_droplets`` marker droplets above the LoB of the plate's other controls is
  contamination (or the control carries the marker) and is left out of the background. Either
  gives QC ``review`` to every sample of that plate. Genomic DNA wells (baselines, product,
  germline, HSCT donor) are never judged as no-template controls, whatever the export calls them.
* The reference gene is recognised **by name** (``DdpcrSettings.reference_genes``); an export's
  ``Reference`` label alone is not enough, because QX Manager labels the reference of every
  copy-number run the same way (see :func:`assert_chimerism_plate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

from chimera.calculate.common import SampleInfo, is_reference_gene, sample_table
from chimera.calculate.ddpcr_sample import SampleContext, Shared, evaluate_sample
from chimera.calculate.ddpcr_wells import (
    Plate,
    Well,
    collect_wells,
    index_plates,
    marker_counts,
    own_scope,
    ratio,
    target_key,
    wells_of,
)
from chimera.calculate.genomes import (
    UNTESTED,
    Calls,
    Carriage,
    GenomeCall,
    PatientGenomes,
    classify_marker,
    own_samples,
    post_dose_samples,
)
from chimera.calculate.limits import MethodOutput, SampleResult, markers_frame, results_frame
from chimera.calculate.poisson import MIN_CARRIER_COPIES, copies_per_ul, poisson_lambda
from chimera.errors import NotChimerismAssayError
from chimera.settings import DdpcrSettings
from schemas.vocab import Role

__all__ = [
    "ABSENT_MAX_COPIES",
    "assert_chimerism_plate",
    "chimerism_on_plates",
    "compute_ddpcr_chimerism",
    "copies_per_ul",
    "poisson_lambda",
]

ABSENT_MAX_COPIES = 0.01
"""At most this many marker copies per genome (1 % of one copy): the genome lacks the marker."""


def assert_chimerism_plate(
    wells: pl.DataFrame | pl.LazyFrame, *, settings: DdpcrSettings, file_name: str
) -> None:
    """Refuse a plate that holds no chimerism assay: a reference gene plus a marker target.

    The reference gene is recognised by name (``settings.reference_genes``, case-insensitive,
    ``RPP30_HEX`` counts). A target the export only *labels* ``Reference`` (QX Manager
    ``TargetType``) is not enough: every copy-number run labels its reference that way (the
    SMN2 CNV export has targets ``1``/``2``). Such plates are refused with a message saying how
    to name the reference.

    Raises
    ------
    NotChimerismAssayError
        When no reference-gene target or no other (marker) target is present.
    """
    frame = wells.collect() if isinstance(wells, pl.LazyFrame) else wells
    targets: dict[str, str | None] = {}
    for row in frame.select("target", "channel", "target_role").iter_rows(named=True):
        key = target_key(row["target"], row["channel"])
        if targets.get(key) != "reference":
            targets[key] = row["target_role"]
    references = [t for t in targets if is_reference_gene(t, settings.reference_genes)]
    markers = [t for t in targets if t not in references]
    genes = ", ".join(settings.reference_genes)
    found = ", ".join(sorted(targets)) or "none"
    if not references:
        labelled = [t for t, role in targets.items() if role == "reference"]
        hint = (
            f" The export labels {', '.join(labelled)} as Reference, but that name is not a "
            "reference gene; if this is a chimerism run, name the reference target (e.g. RPP30) "
            "in the instrument software or add its name to ddpcr.reference_genes."
            if labelled
            else ""
        )
        msg = (
            f"{file_name}: not a ddPCR chimerism assay: expected a reference-gene target "
            f"({genes}) and at least one marker target, found targets {found}.{hint} "
            "Copy-number, NIPD or mutation assays are not read by Chimera."
        )
        raise NotChimerismAssayError(msg)
    if not markers:
        msg = (
            f"{file_name}: not a ddPCR chimerism assay: the plate has the reference gene "
            f"({', '.join(references)}) but no marker target; export the plate with the iNK "
            "marker assay included."
        )
        raise NotChimerismAssayError(msg)


def _carriage(name: str, wells: Sequence[Well], settings: DdpcrSettings) -> GenomeCall:
    counts = marker_counts(name, wells, wells)
    if counts is None:
        return UNTESTED
    marker, reference = counts
    if marker.positives < settings.lod_positive_droplets:
        return GenomeCall(Carriage.ABSENT, f"{marker.positives} positive droplets")
    if marker.positives == marker.accepted:
        return GenomeCall(Carriage.AMBIGUOUS, "marker positive in every droplet")
    copies = ratio(marker, reference) * settings.reference_gene_copies
    detail = f"{copies:.3g} copies per genome"
    if copies >= MIN_CARRIER_COPIES:
        return GenomeCall(Carriage.CARRIES, detail)
    if copies <= ABSENT_MAX_COPIES:
        return GenomeCall(Carriage.ABSENT, detail)
    return GenomeCall(Carriage.AMBIGUOUS, detail)


Screening = Callable[[str, Sequence[str]], GenomeCall]
"""Carriage of a marker (name) by reference samples (ids) measured by another assay, e.g. the
qPCR marker-screening plate (:func:`chimera.calculate.qpcr_plate.carriage`)."""


def _marker_calls(
    genomes: PatientGenomes,
    own: Sequence[Plate],
    plates: Sequence[Plate],
    settings: DdpcrSettings,
    screening: Screening | None = None,
) -> Calls:
    """What each marker on the patient's own plates measures for them (classify_marker).

    A genome's carriage comes from its wells on ``own`` when they hold any of the marker,
    else from every plate; a reference genome without ddPCR wells of the marker is judged by
    ``screening`` (the marker-screening plate of another assay), when given.
    """
    names = sorted({m for p in own for m in p.dna_markers})
    ids = {
        "product": genomes.product_ids,
        "germline": genomes.germline_ids,
        "hsct": genomes.hsct_ids,
        "baseline": genomes.baseline_ids,
    }
    calls: Calls = {}
    for name in names:
        found = {}
        # Genomes with the same samples (germline = baseline) are read once; without any, untested.
        read: dict[tuple[str, ...], GenomeCall] = {(): UNTESTED}
        for who, samples in ids.items():
            call = read.get(samples)
            if call is None:
                scope = own_scope(name, samples, own, plates)
                call = read[samples] = _carriage(name, wells_of(samples, scope), settings)
            if call.carriage is Carriage.UNTESTED and screening is not None and samples:
                call = screening(name, samples)
            found[who] = call
        calls[name] = classify_marker(genomes, **found)
    return calls


def compute_ddpcr_chimerism(
    wells: pl.LazyFrame,
    samples: pl.LazyFrame,
    *,
    settings: DdpcrSettings,
    screening: Screening | None = None,
) -> MethodOutput:
    """% iNK per post-dose sample x plate from ddPCR wells (methods.md sections 4 and 5).

    Parameters
    ----------
    wells
        ``DdpcrWells`` rows plus ``source_sha256`` (the plate), control wells included; a
        duplex well has one row per target (marker and reference gene, same ``well``). Pass
        every plate holding the patient's samples and the product's wells on other plates.
    samples
        ``sample_id, patient_id, role`` + optional ``product_lot``, ``cell_bank``, ``specimen``
        for every sample on those plates (roles from the manifest).
    settings
        Droplet gate, LoD/LoQ droplets, copy numbers, confidence.
    screening
        Carriage of a marker by reference samples no ddPCR plate holds (e.g. a three-genome
        patient's ``recipient_germline`` typed on the qPCR screening plate only).

    Returns
    -------
    MethodOutput
        One result per post-dose sample x plate; marker rows per well and per marker
        (``replicate = "pooled"``), excluded wells and non-informative markers included.
    """
    table = sample_table(samples.collect())
    plates = index_plates(collect_wells(wells.collect(), settings), table, settings)
    ordered = [plates[key] for key in sorted(plates)]
    return chimerism_on_plates(ordered, table, settings=settings, screening=screening)


def chimerism_on_plates(
    ordered: Sequence[Plate],
    table: dict[str, SampleInfo],
    *,
    settings: DdpcrSettings,
    screening: Screening | None = None,
) -> MethodOutput:
    """:func:`compute_ddpcr_chimerism` on indexed plates (one patient's, sorted by plate id).

    ``table`` holds the patient's samples, the product samples and the other DNA on the plates;
    the plates may be shared by patients (their other samples are not in ``table``).
    """
    results: list[SampleResult] = []
    rows: list[dict[str, object]] = []
    post_dose = sorted(
        {
            sid
            for p in ordered
            for sid in p.dna
            if sid in table and table[sid].role == Role.POST_DOSE
        }
    )
    # Each post-dose sample's plates (its patient's own plates that hold it), in plate order.
    holding: dict[str, list[Plate]] = {sid: [] for sid in post_dose}
    for plate in ordered:
        for sid in holding.keys() & plate.dna.keys():
            holding[sid].append(plate)
    owners = own_samples(table)
    shared = Shared()
    own_of: dict[str, tuple[list[Plate], tuple[str, ...]]] = {}

    def own_plates(patient: str) -> tuple[list[Plate], tuple[str, ...]]:
        """The patient's own plates and their ids, found once per patient."""
        if patient not in own_of:
            ids = owners.get(patient, set())
            own = [p for p in ordered if not ids.isdisjoint(p.dna)]
            own_of[patient] = own, tuple(p.plate for p in own)
        return own_of[patient]

    def calls(genomes: PatientGenomes) -> Calls:
        own = own_plates(genomes.patient_id)[0]
        return _marker_calls(genomes, own, ordered, settings, screening)

    for sample in post_dose_samples(post_dose, table, calls):
        own, own_key = own_plates(sample.info.patient_id)
        for plate in holding[sample.info.sample_id]:
            context = SampleContext(
                info=sample.info,
                genomes=sample.genomes,
                calls=sample.calls,
                plate=plate,
                own=own,
                own_key=own_key,
                plates=ordered,
                settings=settings,
                notes=[sample.note] if sample.note else [],
                shared=shared,
            )
            result, detail = evaluate_sample(context)
            results.append(result)
            rows.extend(detail)
    return MethodOutput(results=results_frame(results), markers=markers_frame(rows))
