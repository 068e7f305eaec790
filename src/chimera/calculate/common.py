"""What the qPCR and ddPCR calculations read alike: targets, roles, blanks, cell banks.

Target names, sample roles, wells without DNA and the product's master cell banks
(methods.md sections 3-5; issues 9 and 10).

Rules recorded here [R]:

* A well's role comes from the manifest, never from the instrument's sample type: a patient
  baseline or the product DNA run as ``NegCtrl``/``PosCtrl``/``NTC`` is genomic DNA. A well is
  *without DNA* (NTC, water, blank) only when it has no manifest DNA role: a ``negative_control``
  whose specimen names water/NTC/blank (without a specimen: whose id or instrument type says
  so), or a well without a manifest row whose name or instrument type says NTC/water/blank.
  Every other ``negative_control`` is a 0 % genomic-DNA control.
* Every lot of one master cell bank is one genome (manifest ``cell_bank`` on product rows). A
  product lot without ``cell_bank`` belongs to the only named bank, or to the single default
  bank when no bank is named; with several named banks it is a bank of its own. Different
  banks never mix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import polars as pl

from schemas.vocab import PRODUCT_ROLES, Role

__all__ = [
    "DEFAULT_BANK",
    "PRODUCT_ROLES",
    "ProductBanks",
    "SampleInfo",
    "is_no_template",
    "is_reference_gene",
    "names_no_template",
    "sample_table",
]

DEFAULT_BANK = "the master cell bank"
"""Name of the single bank every lot belongs to when the manifest names none."""

_NO_TEMPLATE_TOKENS = frozenset({"ntc", "nac", "h2o", "water", "blank"})
_NO_TEMPLATE_TOKEN = re.compile(r"^(ntc|nac|blank|water|h2o)\d*$")
_NO_TEMPLATE_TYPES = frozenset({"ntc", "blank"})


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^0-9a-z]+", name.casefold()) if t]


@lru_cache(maxsize=65536)
def _matches(target: str, reference_genes: tuple[str, ...]) -> bool:
    wanted = {"".join(_tokens(g)) for g in reference_genes}
    tokens = _tokens(target)
    return any(
        "".join(tokens[i:j]) in wanted
        for i in range(len(tokens))
        for j in range(i + 1, len(tokens) + 1)
    )


def is_reference_gene(target: str | None, reference_genes: Sequence[str]) -> bool:
    """Return True when a target name is a reference gene (case-insensitive; ``RPP30_HEX`` too).

    Examples
    --------
    >>> is_reference_gene("RNaseP-VIC", ("RNase P",)), is_reference_gene("HbS", ("HBB",))
    (True, False)
    """
    if not target:
        return False
    return _matches(target, tuple(reference_genes))


@lru_cache(maxsize=65536)
def names_no_template(text: str | None) -> bool:
    """Return True when a sample name or specimen says NTC, water or blank.

    Examples
    --------
    >>> names_no_template("NTC-QP2503A"), names_no_template("nuclease-free water")
    (True, True)
    >>> names_no_template("No template control"), names_no_template("P01-BL")
    (True, False)
    """
    tokens = _tokens(text or "")
    if any(t in _NO_TEMPLATE_TOKENS or _NO_TEMPLATE_TOKEN.match(t) for t in tokens):
        return True
    return "notemplate" in "".join(tokens)


@dataclass(frozen=True)
class SampleInfo:
    """One manifest row as the PCR calculations need it."""

    sample_id: str
    patient_id: str
    role: str
    product_lot: str | None = None
    cell_bank: str | None = None
    specimen: str | None = None

    @property
    def lot(self) -> str:
        """The product lot of a product sample (its ``patient_id`` names the lot)."""
        return self.product_lot or self.patient_id


def _text(value: object) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value)


def sample_table(samples: pl.DataFrame) -> dict[str, SampleInfo]:
    """Index ``samples`` by sample id.

    Columns ``sample_id, patient_id, role`` + optional ``product_lot, cell_bank, specimen``;
    missing optional columns are null.
    """
    names = ("sample_id", "patient_id", "role", "product_lot", "cell_bank", "specimen")
    # Column lists zipped, not named rows: no dict per row (issue 12).
    columns = [
        samples.get_column(c).to_list() if c in samples.columns else [None] * samples.height
        for c in names
    ]
    table: dict[str, SampleInfo] = {}
    for sample_id, patient_id, role, lot, bank, specimen in zip(*columns, strict=True):
        if sample_id is None:
            continue
        table[str(sample_id)] = SampleInfo(
            str(sample_id), str(patient_id), str(role), _text(lot), _text(bank), _text(specimen)
        )
    return table


def is_no_template(info: SampleInfo | None, name: str | None, instrument_type: str | None) -> bool:
    """Return True for a well without DNA (NTC, water, blank); see the module docstring.

    ``instrument_type`` is the parsed qPCR ``task`` or ddPCR ``sample_type``.

    Examples
    --------
    >>> baseline = SampleInfo("P01-BL", "P01", Role.RECIPIENT_BASELINE)
    >>> is_no_template(baseline, "P01-BL", "ntc"), is_no_template(None, "H2O", None)
    (False, True)
    >>> is_no_template(SampleInfo("NEG-1", "NEG", Role.NEGATIVE_CONTROL, specimen="PB"), None, None)
    False
    """
    kind = (instrument_type or "").casefold()
    if info is None:
        return names_no_template(name) or kind in _NO_TEMPLATE_TYPES
    if info.role != Role.NEGATIVE_CONTROL:
        return False
    if info.specimen is not None:
        return names_no_template(info.specimen)
    return names_no_template(info.sample_id) or kind in _NO_TEMPLATE_TYPES


class ProductBanks:
    """Product samples grouped by master cell bank: all lots of one bank are one genome."""

    def __init__(self, table: dict[str, SampleInfo]) -> None:
        products = sorted(
            (i for i in table.values() if i.role in PRODUCT_ROLES), key=lambda i: i.sample_id
        )
        named = sorted({i.cell_bank for i in products if i.cell_bank})
        self.default: str | None = named[0] if len(named) == 1 else None
        if not named:
            self.default = DEFAULT_BANK
        self._lot_bank: dict[str, str] = {}
        for info in products:
            if info.cell_bank:
                self._lot_bank.setdefault(info.lot, info.cell_bank)
        for info in products:
            self._lot_bank.setdefault(info.lot, self.default or f"lot {info.lot}")
        self.members: dict[str, tuple[str, ...]] = {}
        for info in products:
            bank = self._lot_bank[info.lot]
            self.members[bank] = (*self.members.get(bank, ()), info.sample_id)

    def bank_of_lot(self, lot: str | None) -> str | None:
        """The bank of a lot; a lot without a product sample belongs to the only bank, if one."""
        if lot is not None and lot in self._lot_bank:
            return self._lot_bank[lot]
        banks = set(self._lot_bank.values())
        return next(iter(banks)) if len(banks) == 1 else self.default

    def bank_of_sample(
        self, info: SampleInfo, table: dict[str, SampleInfo]
    ) -> tuple[str | None, str | None]:
        """(bank, note) of the product a patient sample measures.

        The sample's own ``product_lot``; else the patient's lots, when they are one bank; else
        the only bank. The note says when the lot was not the sample's own.
        """
        if info.product_lot:
            return self.bank_of_lot(info.product_lot), None
        lots = {
            i.product_lot
            for i in table.values()
            if i.patient_id == info.patient_id and i.role not in PRODUCT_ROLES and i.product_lot
        }
        banks = {self.bank_of_lot(lot) for lot in lots} - {None}
        if len(banks) == 1:
            return banks.pop(), None
        bank = self.bank_of_lot(None)
        if bank is None:
            return None, "product lot of the sample unknown and several cell banks registered"
        return bank, f"product lot of the sample unknown; the product of {bank} used"
