"""The lab's vocabulary: every closed set of values, defined once.

The Pandera contracts check columns against these (``isin=list(Role)``) and the code compares
with the members, so a new role, method or state is one line here and a typo is an
``AttributeError``, not a silent empty filter. Members are ``StrEnum`` s: they compare equal to
(and are stored as) their string values.
"""

from __future__ import annotations

from enum import StrEnum


class Method(StrEnum):
    """Assay family a result was measured with."""

    STR = "STR"
    QPCR = "qPCR"
    DDPCR = "ddPCR"


class Role(StrEnum):
    """What a sample is, from the manifest (never from the instrument's sample type)."""

    DONOR_REFERENCE = "donor_reference"
    """iNK product DNA (single source); ``patient_id`` = the product lot."""
    CALIBRATOR = "calibrator"
    """100 % product DNA run on a PCR plate; ``patient_id`` = the product lot."""
    RECIPIENT_BASELINE = "recipient_baseline"
    """The patient's pre-dose blood (a mixed chimera in three-genome patients)."""
    RECIPIENT_GERMLINE = "recipient_germline"
    """The patient's own genome from a non-blood source (buccal swab, fibroblasts, archived
    pre-transplant DNA)."""
    HSCT_DONOR = "hsct_donor"
    """The prior allogeneic transplant donor's genome; ``patient_id`` = the patient."""
    POST_DOSE = "post_dose"
    """A patient sample after the first infusion (also the pre-dose troughs of later doses)."""
    NEGATIVE_CONTROL = "negative_control"
    """A well or sample without target DNA (NTC, water, blank) or a known 0 % control."""
    DILUTION_STANDARD = "dilution_standard"
    """A known % iNK mixture of product DNA (``nominal_pct``); ``patient_id`` = the series."""


PRODUCT_ROLES = (Role.CALIBRATOR, Role.DONOR_REFERENCE)
"""Roles of 100 % iNK product DNA, in order of preference as a qPCR plate calibrator."""


class ResultStatus(StrEnum):
    """What a chimerism result can say; a result is never a bare 0 (methods.md section 4)."""

    QUANTIFIED = "quantified"
    BELOW_LOQ = "below_loq"
    NOT_DETECTED = "not_detected"
    FAILED = "failed"


class QcVerdict(StrEnum):
    """Whether a result can be reported as is."""

    PASS = "pass"
    REVIEW = "review"
    FAIL = "fail"


class GenomeModel(StrEnum):
    """How many genomes a patient's blood is modelled with."""

    TWO_GENOME = "two_genome"
    """Patient + iNK product."""
    THREE_GENOME = "three_genome"
    """Patient + prior HSCT donor + iNK product (relapse after allogeneic transplant)."""


class Specimen(StrEnum):
    """Normalised specimen / sorted fraction; unknown manifest values are kept verbatim."""

    PB = "PB"
    """Peripheral whole blood or PBMC."""
    PB_CD56 = "PB CD56+"
    """Peripheral blood, CD56+ sorted (NK cells)."""
    PB_CD3 = "PB CD3+"
    """Peripheral blood, CD3+ sorted (T cells)."""
    PB_CD33 = "PB CD33+"
    """Peripheral blood, CD33+ sorted (myeloid cells)."""
    BM = "BM"
    """Bone marrow."""


class FileStatus(StrEnum):
    """A file's fate in the ledger."""

    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"
    WAITING = "waiting"


class AlertRuleId(StrEnum):
    """Alert rules (methods.md 9.3); the rule id is stored on every alert row."""

    PERSISTENCE = "persistence"
    ACCUMULATION = "accumulation"
    UNEXPECTED_EXPANSION = "unexpected_expansion"
    EARLY_LOSS = "early_loss"
    NEVER_DETECTED = "never_detected"
    FALLING_EXPOSURE = "falling_exposure"
    RECIPIENT_RISING = "recipient_rising"
    REPEATED_QC_FAILURE = "repeated_qc_failure"


class Severity(StrEnum):
    """How urgent an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(StrEnum):
    """An alert episode's state across runs."""

    OPEN = "open"
    ONGOING = "ongoing"
    RESOLVED = "resolved"


class DeliveryState(StrEnum):
    """An alert's delivery to one channel."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class KineticsScope(StrEnum):
    """A kinetics row covers one dose interval or the whole follow-up."""

    DOSE = "dose"
    OVERALL = "overall"


class CdScale(StrEnum):
    """How a critical difference was derived (chimera.trends)."""

    ADDITIVE = "additive"
    MULTIPLICATIVE = "multiplicative"
    DETECTION = "detection"


class ChangeDirection(StrEnum):
    """Direction of the change from the previous sample."""

    RISE = "rise"
    FALL = "fall"
    NONE = "none"


class StutterDirection(StrEnum):
    """Which way a stutter peak sits from its parent allele (methods.md 2.6)."""

    BACK = "back"
    """One repeat shorter (n-1), the common kind."""
    FORWARD = "forward"
    """One repeat longer (n+1), rarer and smaller."""


class StutterSource(StrEnum):
    """Where a locus's stutter ratio came from, in order of preference."""

    MEASURED = "measured"
    """Median over the lab's own single-source profiles of the same panel."""
    CONFIGURED = "configured"
    """``StrSettings.stutter_ratios`` / ``default_stutter_ratio``."""
    PUBLISHED = "published"
    """Published kit average for the repeat length (tetra- or pentanucleotide)."""
