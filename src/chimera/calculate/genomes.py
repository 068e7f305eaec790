"""Which genome a PCR marker measures: iNK product, prior HSCT donor or the recipient.

Source: methods.md 2.3 (three-genome form, Rchimerism ``chiDD.R``: a marker is informative for
genome X only when X carries it and both other genomes lack it) applied to qPCR/ddPCR markers
(issue 10). Rules [R]:

* References: the product = every ``donor_reference``/``calibrator`` sample of the product's
  master cell bank; the recipient's germline = ``recipient_germline`` samples; the prior HSCT
  donor = ``hsct_donor`` samples. A patient with an ``hsct_donor`` sample is a three-genome
  patient: their pre-dose ``recipient_baseline`` is a mixed chimera and never the germline
  reference. In a two-genome patient without a germline sample the baseline is the germline.
* A marker measures iNK when the product carries it and the germline, the HSCT donor (three
  genomes) and the pre-dose baseline (0 % iNK) do not; it measures the HSCT donor when only the
  HSCT donor carries it, the recipient when only the germline carries it (three genomes only:
  two-genome results keep % recipient = 100 - % iNK).
* When a share has no marker of its own, it is the remainder: % recipient = 100 - % iNK -
  % HSCT donor (or % HSCT donor = 100 - % iNK - % recipient), with SE = √(SE_iNK² + SE_other²)
  (independent errors), each SE = CI width / (2·quantile), and the CI = value ± q·SE with q the
  larger of the two quantiles. An iNK result without an estimate counts 0 (0 to LoD).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from chimera.calculate.common import PRODUCT_ROLES, ProductBanks, SampleInfo
from chimera.calculate.limits import GenomeShare
from schemas.vocab import GenomeModel, Role


class Share(StrEnum):
    """The genome a marker measures; the value is the ``sharing`` label of its marker rows."""

    INK = "donor_only"
    HSCT_DONOR = "hsct_donor_only"
    RECIPIENT = "recipient_only"


class Carriage(StrEnum):
    """What a reference sample says about one marker."""

    CARRIES = "carries"
    ABSENT = "absent"
    AMBIGUOUS = "ambiguous"
    UNTESTED = "untested"


@dataclass(frozen=True)
class GenomeCall:
    """A reference genome's carriage of one marker and the observation behind it."""

    carriage: Carriage
    detail: str = ""


UNTESTED = GenomeCall(Carriage.UNTESTED)

Calls = dict[str, tuple[Share | None, str | None]]
"""Per marker: the share it measures for one patient, or None and why it measures none."""


@dataclass(frozen=True)
class PatientGenomes:
    """The reference samples of one patient and product bank."""

    patient_id: str
    bank: str | None
    product_ids: tuple[str, ...]
    germline_ids: tuple[str, ...]
    """``recipient_germline`` samples; in two-genome patients without one, the baselines."""
    hsct_ids: tuple[str, ...]
    baseline_ids: tuple[str, ...]
    germline_is_baseline: bool

    @property
    def model(self) -> GenomeModel:
        """Three genomes when the patient has a typed prior HSCT donor."""
        return GenomeModel.THREE_GENOME if self.hsct_ids else GenomeModel.TWO_GENOME

    @property
    def blank_ids(self) -> tuple[str, ...]:
        """The patient's 0 % iNK DNA: baseline, germline and HSCT donor samples."""
        return tuple(dict.fromkeys((*self.baseline_ids, *self.germline_ids, *self.hsct_ids)))

    def missing_reference(self) -> str | None:
        """Why no marker can be called for this patient, or None."""
        if not self.product_ids:
            return f"no product reference (donor_reference/calibrator) of {self.bank or 'an unknown cell bank'}"
        if self.model is GenomeModel.THREE_GENOME and not self.germline_ids:
            return (
                f"patient {self.patient_id} has a prior HSCT donor but no recipient_germline "
                "sample: the pre-dose baseline is a mixed chimera, so no marker can be shown "
                "absent from the patient's own genome"
            )
        return None


def patient_genomes(
    patient_id: str, bank: str | None, table: dict[str, SampleInfo], banks: ProductBanks
) -> PatientGenomes:
    """Collect the patient's reference samples (see the module docstring)."""

    def own(role: Role) -> tuple[str, ...]:
        return tuple(
            sorted(s for s, i in table.items() if i.role == role and i.patient_id == patient_id)
        )

    baselines = own(Role.RECIPIENT_BASELINE)
    germline = own(Role.RECIPIENT_GERMLINE)
    hsct = own(Role.HSCT_DONOR)
    from_baseline = not germline and not hsct
    return PatientGenomes(
        patient_id=patient_id,
        bank=bank,
        product_ids=tuple(sorted(banks.members.get(bank, ()))) if bank is not None else (),
        germline_ids=baselines if from_baseline else germline,
        hsct_ids=hsct,
        baseline_ids=baselines,
        germline_is_baseline=from_baseline,
    )


def own_samples(table: dict[str, SampleInfo]) -> dict[str, set[str]]:
    """Each patient's own sample ids in ``table`` (product samples left out).

    A plate holding any of them is one of the patient's own plates: a genome's carriage of a
    marker (and ddPCR's n_M) is read there first (:mod:`chimera.calculate.qpcr`, ``ddpcr``).
    """
    found: dict[str, set[str]] = {}
    for info in table.values():
        if info.role not in PRODUCT_ROLES:
            found.setdefault(info.patient_id, set()).add(info.sample_id)
    return found


@dataclass(frozen=True)
class PostDoseSample:
    """A post-dose sample with its patient's references and marker calls."""

    info: SampleInfo
    genomes: PatientGenomes
    calls: Calls
    note: str | None
    """How the product was found when the sample's lot was not its own, else None."""


def post_dose_samples(
    sample_ids: Iterable[str],
    table: dict[str, SampleInfo],
    call_markers: Callable[[PatientGenomes], Calls],
) -> Iterator[PostDoseSample]:
    """Each sample with its genomes and marker calls, computed once per patient x cell bank."""
    banks = ProductBanks(table)
    cache: dict[tuple[str, str | None], tuple[PatientGenomes, Calls]] = {}
    for sample_id in sample_ids:
        info = table[sample_id]
        bank, note = banks.bank_of_sample(info, table)
        key = (info.patient_id, bank)
        if key not in cache:
            genomes = patient_genomes(info.patient_id, bank, table, banks)
            cache[key] = (genomes, call_markers(genomes))
        yield PostDoseSample(info, *cache[key], note)


def _says(who: str, call: GenomeCall) -> str:
    if call.carriage is Carriage.UNTESTED:
        return f"{who} was not tested"
    verb = {Carriage.CARRIES: "carries it", Carriage.ABSENT: "lacks it"}.get(
        call.carriage, "is ambiguous"
    )
    return f"{who} {verb} ({call.detail})" if call.detail else f"{who} {verb}"


def classify_marker(
    genomes: PatientGenomes,
    *,
    product: GenomeCall,
    germline: GenomeCall,
    hsct: GenomeCall,
    baseline: GenomeCall,
) -> tuple[Share | None, str | None]:
    """Return the share a marker measures, or None and why it measures none."""
    carries, absent = Carriage.CARRIES, Carriage.ABSENT
    three = genomes.model is GenomeModel.THREE_GENOME
    hsct_absent = not three or hsct.carriage is absent
    baseline_ok = baseline.carriage in (absent, Carriage.UNTESTED) or genomes.germline_is_baseline
    if product.carriage is carries and germline.carriage is absent and hsct_absent:
        if baseline_ok:
            return Share.INK, None
        return None, _says("the patient's pre-dose baseline (0 % iNK)", baseline)
    only_hsct = hsct.carriage is carries and germline.carriage is absent
    if three and only_hsct and product.carriage is absent:
        return Share.HSCT_DONOR, None
    only_germline = germline.carriage is carries and product.carriage is absent
    if three and only_germline and hsct.carriage is absent:
        return Share.RECIPIENT, None
    germline_name = (
        "the patient's pre-dose baseline" if genomes.germline_is_baseline else "the germline"
    )
    parts = [_says("the iNK product", product), _says(germline_name, germline)]
    if three:
        parts.append(_says("the HSCT donor", hsct))
    return None, "; ".join(parts)


@dataclass(frozen=True)
class ShareEstimate:
    """A % share with its 95 % CI and the quantile the CI was built with."""

    pct: float
    low: float
    high: float
    quantile: float

    @property
    def se(self) -> float:
        """Standard error recovered from the CI: width / (2·quantile)."""
        return (self.high - self.low) / (2.0 * self.quantile)

    def share(self) -> GenomeShare:
        """As the result's :class:`GenomeShare`."""
        return GenomeShare(self.pct, self.low, self.high)


def remainder(ink: ShareEstimate, other: ShareEstimate) -> ShareEstimate:
    """The third share: 100 - iNK - other, errors combined in quadrature (module docstring).

    Examples
    --------
    >>> r = remainder(ShareEstimate(10, 8.04, 11.96, 1.96), ShareEstimate(30, 28.04, 31.96, 1.96))
    >>> round(r.pct, 2), round(r.low, 2), round(r.high, 2)
    (60.0, 57.23, 62.77)
    """
    value = 100.0 - ink.pct - other.pct
    se = math.hypot(ink.se, other.se)
    q = max(ink.quantile, other.quantile)
    return ShareEstimate(value, value - q * se, value + q * se, q)


def ink_for_remainder(
    pct: float | None, low: float | None, high: float | None, lod: float | None, quantile: float
) -> ShareEstimate:
    """The iNK share entering :func:`remainder`; without an estimate 0 (0 to LoD)."""
    if pct is None or low is None or high is None:
        return ShareEstimate(0.0, 0.0, lod or 0.0, quantile)
    return ShareEstimate(pct, low, high, quantile)


def other_shares(
    ink: ShareEstimate, hsct: ShareEstimate | None, recipient: ShareEstimate | None
) -> tuple[GenomeShare | None, GenomeShare | None, list[str]]:
    """(% HSCT donor, % recipient, notes) of a three-genome result; a missing one is the rest."""
    notes: list[str] = []
    if hsct is None and recipient is None:
        notes.append(
            "no marker separates the HSCT donor from the recipient: % HSCT donor and "
            "% recipient not reported"
        )
        return None, None, notes
    if recipient is None and hsct is not None:
        recipient = remainder(ink, hsct)
        notes.append("% recipient = 100 - % iNK - % HSCT donor (no recipient-only marker)")
    elif hsct is None and recipient is not None:
        hsct = remainder(ink, recipient)
        notes.append("% HSCT donor = 100 - % iNK - % recipient (no HSCT-donor-only marker)")
    assert hsct is not None
    assert recipient is not None
    return hsct.share(), recipient.share(), notes
