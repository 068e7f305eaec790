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
from collections.abc import Container, Iterable
from itertools import repeat

import polars as pl

from chimera.registry import PatientProduct, Registry, three_genome_patients
from schemas.vocab import PRODUCT_ROLES, Method, Role

CONTROL_TASKS = ("ntc", "standard", "negative_control", "positive_control")
CONTROL_SAMPLE_NAMES = (
    r"(?i)^\s*(ntc|nac|h2o|water|blank|no[ _-]?template|neg(ative)?[ _-]?(ctrl|control))\b"
)
"""Well names labs give no-template controls; such wells need no manifest row."""
CONTROL_SAMPLE_TYPES = ("ntc", "negctrl", "posctrl", "negative control", "positive control")


def _kept_name(*, pcr: bool) -> pl.Expr:
    """Whether a ``sample_id`` needs a manifest row by its name: not blank, no control's name."""
    keep = pl.col("sample_id").is_not_null() & (pl.col("sample_id").str.strip_chars() != "")
    return keep & ~pl.col("sample_id").str.contains(CONTROL_SAMPLE_NAMES) if pcr else keep


def _kept_type() -> pl.Expr:
    """Whether a ``sample_type`` leaves its well to the manifest (it names no control)."""
    return pl.col("sample_type").is_null() | ~pl.col("sample_type").str.to_lowercase().is_in(
        CONTROL_SAMPLE_TYPES
    )


def assay_sample_ids(frame: pl.DataFrame) -> list[str]:
    """Sample ids in an assay frame that must be in a manifest (controls excluded).

    Decided per distinct value on the columns as lists (a polars call per file costs more than
    a plate's rows): :class:`_Verdicts` gives each name's and sample type's verdict of the
    polars rules (:func:`_kept_name`, :func:`_kept_type`). Other column types take the rules
    as expressions.
    """
    pcr = "task" in frame.columns or "sample_type" in frame.columns
    columns = [c for c in ("sample_id", "task", "sample_type") if c in frame.columns]
    if "sample_id" not in columns or any(frame[c].dtype != pl.String for c in columns):
        return _assay_sample_ids_expr(frame, pcr=pcr)
    ids = frame["sample_id"].to_list()
    if not pcr:
        names = set(ids)
    else:
        tasks = frame["task"].to_list() if "task" in columns else repeat("")
        kinds: Iterable[bool] = repeat(True)
        if "sample_type" in columns:
            types = frame["sample_type"].to_list()
            kept_types = _VERDICTS.types(set(types))
            kinds = (kept_types[kind] for kind in types)
        names = {
            sid
            for sid, task, kept in zip(ids, tasks, kinds, strict=False)
            if kept and task is not None and task not in CONTROL_TASKS
        }
    names.discard(None)
    kept = _VERDICTS.names(names, pcr=pcr)
    return sorted(name for name in names if kept[name])


def _assay_sample_ids_expr(frame: pl.DataFrame, *, pcr: bool) -> list[str]:
    """:func:`assay_sample_ids` by polars expressions (any column types)."""
    keep = _kept_name(pcr=pcr)
    if "task" in frame.columns:
        keep &= ~pl.col("task").is_in(CONTROL_TASKS)
    if "sample_type" in frame.columns:
        keep &= _kept_type()
    return sorted(frame.select(pl.col("sample_id").filter(keep).unique())["sample_id"].to_list())


_WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Unicode ``White_Space`` (what polars' ``strip_chars`` and the regex ``\\s`` strip)."""
_CONTROL_HEADS = frozenset({"nt", "na", "h2", "wa", "bl", "no", "ne"})
"""The first two letters of every control name :data:`CONTROL_SAMPLE_NAMES` matches."""
_VERDICTS_KEPT = 200_000


class _Verdicts:
    """The polars rules' verdict on each distinct sample name and sample type, asked once.

    A name that starts with neither white space nor (PCR) the first letters of a control name
    surely passes :func:`_kept_name`; only other names (controls, odd ones) go to polars.
    """

    def __init__(self) -> None:
        self._names: dict[tuple[str, bool], bool] = {}
        self._types: dict[str | None, bool] = {None: True}

    def names(self, names: set[str], *, pcr: bool) -> dict[str, bool]:
        """Per name: whether :func:`_kept_name` keeps it."""
        found, ask = {}, []
        for name in names:
            verdict = self._names.get((name, pcr))
            if verdict is None and _surely_kept(name, pcr=pcr):
                verdict = True
            if verdict is None:
                ask.append(name)
            else:
                found[name] = verdict
        if ask:
            if len(self._names) > _VERDICTS_KEPT:
                self._names.clear()
            frame = pl.DataFrame({"sample_id": ask}, schema={"sample_id": pl.String})
            verdicts = frame.select(_kept_name(pcr=pcr))["sample_id"]
            for name, verdict in zip(ask, verdicts, strict=True):
                self._names[(name, pcr)] = found[name] = bool(verdict)
        return found

    def types(self, types: set[str | None]) -> dict[str | None, bool]:
        """Per sample type (None included): whether :func:`_kept_type` keeps its wells."""
        ask = [kind for kind in types if kind not in self._types]
        if ask:
            frame = pl.DataFrame({"sample_type": ask}, schema={"sample_type": pl.String})
            for kind, verdict in zip(ask, frame.select(_kept_type())["sample_type"], strict=True):
                self._types[kind] = bool(verdict)
        return self._types


def _surely_kept(name: str, *, pcr: bool) -> bool:
    """Whether ``name`` surely is neither blank nor (PCR) a control's name, without a regex.

    Examples
    --------
    >>> _surely_kept("P01-D001", pcr=True), _surely_kept("NTC 1", pcr=True)
    (True, False)
    >>> _surely_kept(" P01", pcr=False), _surely_kept("ntc", pcr=False)
    (False, True)
    """
    first = name[:1]
    if not first or first.isspace() or first in _WHITE_SPACE:
        return False
    head = name[:2]
    return not pcr or (head.isascii() and head.lower() not in _CONTROL_HEADS)


_VERDICTS = _Verdicts()


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
    names = set(frame["sample_id"].to_list()) - known
    names.discard(None)
    if not names:
        return frame
    mapping: dict[str, str] = {}
    for name in names:
        stem = _INSTRUMENT_SUFFIX.sub("", name.strip())
        if stem in known:
            mapping[name] = stem
            continue
        hits = _embedded_ids(stem, known, len(stem))
        longest = [h for h in hits if not any(h != o and h in o for o in hits)]
        if len(longest) == 1:
            mapping[name] = longest[0]
    if not mapping:
        return frame
    return frame.with_columns(pl.col("sample_id").replace(mapping))


_ALPHANUMERIC = frozenset(string.ascii_letters + string.digits)


def _embedded_ids(stem: str, known: set[str], longest_id: int) -> set[str]:
    """Known ids in ``stem`` with no ASCII letter or digit right before or after them.

    Looks up every such substring (up to ``longest_id`` characters) instead of searching
    ``stem`` once per known id.

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
    banks_measured: dict[str, bool] = {}
    for patient in sorted({info.patient_id for info in known if info.role == Role.POST_DOSE}):
        waits += _genotype_waits(
            patient, method, registry, baselines_measured, three=patient in three_genome
        )
        product = registry.products[patient]
        if product.bank is None:
            waits.append(str(product.problem))
            continue
        waits += _product_waits(product, method, registry, measured, banks_measured)
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
    product: PatientProduct,
    method: Method,
    registry: Registry,
    measured: Container[str],
    banks_measured: dict[str, bool],
) -> list[str]:
    """The product reference of the patient's cell bank, when no lot of it was measured yet.

    ``banks_measured`` keeps the answer per bank for the other patients of one file.
    """
    roles = (Role.DONOR_REFERENCE,) if method == Method.STR else tuple(PRODUCT_ROLES)
    members = registry.product_members(product.bank, roles)
    bank = str(product.bank)
    if bank not in banks_measured:
        banks_measured[bank] = any(s in measured for s in members["sample_id"].to_list())
    if banks_measured[bank]:
        return []
    lots = ", ".join(sorted(set(members["patient_id"].to_list())) or product.lots) or "none yet"
    what = "donor_reference" if method == Method.STR else "donor_reference or calibrator"
    wait = f"a {method} result of the iNK product ({what} of any lot of cell bank {product.bank}"
    return [f"{wait}: lots {lots})"]
