"""What an assay file needs before it can be accepted, and which of its samples those are.

An assay file waits (``waiting`` in the ledger) until the manifest names its samples, each
post-dose patient's genotype source has been measured (the baseline; for a three-genome patient
the germline and the prior HSCT donor) and a reference of the patient's product cell bank has
been measured by the same method. Controls need no manifest row. Export sample names that only
embed a manifest id (GeneMapper's run-file names) are mapped to the id first.
"""

from __future__ import annotations

import re
import string
from collections.abc import Container

import polars as pl

from chimera.registry import PatientProduct, Registry, three_genome_patients
from schemas.vocab import PRODUCT_ROLES, Method, Role

CONTROL_TASKS = ("ntc", "standard", "negative_control", "positive_control")
CONTROL_SAMPLE_NAMES = (
    r"(?i)^\s*(ntc|nac|h2o|water|blank|no[ _-]?template|neg(ative)?[ _-]?(ctrl|control))\b"
)
"""Well names labs give no-template controls; such wells need no manifest row."""
CONTROL_SAMPLE_TYPES = ("ntc", "negctrl", "posctrl", "negative control", "positive control")


def assay_sample_ids(frame: pl.DataFrame) -> list[str]:
    """Sample ids in an assay frame that must be in a manifest (controls excluded)."""
    keep = pl.col("sample_id").is_not_null() & (pl.col("sample_id").str.strip_chars() != "")
    if "task" in frame.columns:
        keep &= ~pl.col("task").is_in(CONTROL_TASKS)
    if "sample_type" in frame.columns:
        keep &= pl.col("sample_type").is_null() | ~pl.col("sample_type").str.to_lowercase().is_in(
            CONTROL_SAMPLE_TYPES
        )
    if "task" in frame.columns or "sample_type" in frame.columns:  # PCR plates
        keep &= ~pl.col("sample_id").str.contains(CONTROL_SAMPLE_NAMES)
    return sorted(frame.select(pl.col("sample_id").filter(keep).unique())["sample_id"].to_list())


_INSTRUMENT_SUFFIX = re.compile(r"\.(fsa|hid|ab1|eds|sds)$", re.IGNORECASE)


def resolve_sample_ids(frame: pl.DataFrame, known: set[str]) -> pl.DataFrame:
    """Map export sample names to manifest ``sample_id`` s when the name only embeds the id.

    GeneMapper's Sizing Table names samples by their run file (``A01_P01-D004.fsa``). A name not
    in the manifest is mapped when, after dropping an instrument file suffix, it equals a
    manifest id or contains exactly one as a whole token (the longest when one id contains
    another, so ``P01-D003-PRE`` wins over ``P01-D003``). Ambiguous or unmatched names stay.
    """
    if frame.height == 0 or "sample_id" not in frame.columns:
        return frame
    names = set(frame["sample_id"].drop_nulls().unique().to_list()) - known
    if not names:
        return frame
    longest_id = max(map(len, known), default=0)
    mapping: dict[str, str] = {}
    for name in names:
        stem = _INSTRUMENT_SUFFIX.sub("", name.strip())
        if stem in known:
            mapping[name] = stem
            continue
        hits = _embedded_ids(stem, known, longest_id)
        longest = [h for h in hits if not any(h != o and h in o for o in hits)]
        if len(longest) == 1:
            mapping[name] = longest[0]
    if not mapping:
        return frame
    return frame.with_columns(pl.col("sample_id").replace(mapping))


_ALPHANUMERIC = frozenset(string.ascii_letters + string.digits)


def _embedded_ids(stem: str, known: set[str], longest_id: int) -> set[str]:
    """Known ids in ``stem`` with no ASCII letter or digit right before or after them.

    Looks up every such substring instead of searching ``stem`` once per known id.

    Examples
    --------
    >>> sorted(_embedded_ids("A01_P01-D003-PRE", {"P01-D003", "P01-D003-PRE", "D00"}, 12))
    ['P01-D003', 'P01-D003-PRE']
    """
    starts = [i for i in range(len(stem)) if i == 0 or stem[i - 1] not in _ALPHANUMERIC]
    ends = [j for j in range(1, len(stem) + 1) if j == len(stem) or stem[j] not in _ALPHANUMERIC]
    return {
        stem[i:j] for i in starts for j in ends if 0 < j - i <= longest_id and stem[i:j] in known
    }


def missing_prerequisites(
    frame: pl.DataFrame,
    method: Method,
    *,
    registry: Registry,
    measured: Container[str],
    baselines_measured: Container[str],
    sample_ids: list[str] | None = None,
) -> list[str]:
    """What an assay file still waits for: manifest rows, the patient's genotype, the product.

    ``measured`` = sample ids already measured by this method (stored or in this file);
    ``baselines_measured`` = sample ids that count as a measured genotype source: for STR the
    same method (the genotype is needed), for qPCR/ddPCR any PCR plate (marker screening is often
    done once, by one PCR method). A two-genome patient needs a measured ``recipient_baseline``;
    a three-genome patient (an ``hsct_donor`` sample on record) a measured
    ``recipient_germline`` and ``hsct_donor`` (their pre-dose blood is a mixed chimera, not a
    genotype). The product (any lot of the patient's cell bank; STR: a ``donor_reference``, PCR:
    also a ``calibrator``) must be measured by the same method. ``sample_ids`` =
    :func:`assay_sample_ids` of ``frame`` when the caller has them already.
    """
    ids = assay_sample_ids(frame) if sample_ids is None else sample_ids
    table = registry.sample_info()
    known = [table[sid] for sid in ids if sid in table]
    unknown = sorted({sid for sid in ids if sid not in table})
    waits = []
    if unknown:
        shown = ", ".join(unknown[:8]) + (
            f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        )
        waits.append(f"manifest rows for sample(s) {shown}")
    three_genome = three_genome_patients(registry)
    for patient in sorted({info.patient_id for info in known if info.role == Role.POST_DOSE}):
        waits += _genotype_waits(
            patient, method, registry, baselines_measured, three=patient in three_genome
        )
        product = registry.products[patient]
        if product.bank is None:
            waits.append(str(product.problem))
            continue
        waits += _product_waits(product, method, registry, measured)
    return waits


def _genotype_waits(
    patient: str, method: Method, registry: Registry, genotyped: Container[str], *, three: bool
) -> list[str]:
    """The patient's genotype sources not measured yet (see :func:`missing_prerequisites`)."""
    kind = "an STR" if method == Method.STR else "a qPCR or ddPCR"

    def measured(role: Role) -> bool:
        return any(s in genotyped for s in registry.owned(patient, role))

    if not three:
        if measured(Role.RECIPIENT_BASELINE):
            return []
        return [f"{kind} result of patient {patient}'s baseline (recipient_baseline)"]
    waits = []
    if not measured(Role.RECIPIENT_GERMLINE):
        waits.append(
            f"{kind} result of patient {patient}'s own genome (recipient_germline: buccal swab, "
            "fibroblasts or pre-transplant DNA); the patient has a prior HSCT donor, so the "
            "pre-dose blood is a mixed chimera, not a genotype"
        )
    if not measured(Role.HSCT_DONOR):
        waits.append(f"{kind} result of patient {patient}'s prior HSCT donor (hsct_donor)")
    return waits


def _product_waits(
    product: PatientProduct, method: Method, registry: Registry, measured: Container[str]
) -> list[str]:
    """The product reference of the patient's cell bank, when no lot of it was measured yet."""
    roles = (Role.DONOR_REFERENCE,) if method == Method.STR else tuple(PRODUCT_ROLES)
    members = registry.product_members(product.bank, roles)
    if any(s in measured for s in members["sample_id"].to_list()):
        return []
    lots = ", ".join(sorted(set(members["patient_id"].to_list())) or product.lots) or "none yet"
    what = "donor_reference" if method == Method.STR else "donor_reference or calibrator"
    wait = f"a {method} result of the iNK product ({what} of any lot of cell bank {product.bank}"
    return [f"{wait}: lots {lots})"]
