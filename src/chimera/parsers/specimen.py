"""Manifest specimen text to the lab's small vocabulary (:class:`schemas.vocab.Specimen`).

Issue 10: whole blood, PBMC and "peripheral blood" are ``PB``; a CD56+ (NK), CD3+ (T cell) or
CD33+ (myeloid) sorted fraction of blood is ``PB CD56+`` / ``PB CD3+`` / ``PB CD33+``; bone
marrow is ``BM``. Anything else (a buccal swab, the product, a marrow fraction, a negative
fraction, two markers) is kept as written and reported, never guessed.
"""

from __future__ import annotations

import re
from functools import lru_cache

from schemas.vocab import Specimen

_BLOOD = frozenset({"pb", "blood", "peripheral", "pbmc", "pbmcs", "wb", "whole", "pbl"})
_MARROW = frozenset({"bm", "marrow", "bma", "bmmc", "bmmcs", "bone"})
_FILLER = frozenset({"cells", "cell", "sorted", "sort", "fraction", "selected", "enriched", "pos"})
_FILLER |= {"positive", "sample", "mononuclear", "of", "from", "peripheral", "whole", "total"}
_SORTED = {
    Specimen.PB_CD56: re.compile(r"\bcd ?56\b|\bnk\b"),
    Specimen.PB_CD3: re.compile(r"\bcd ?3\b|\bt ?cells?\b"),
    Specimen.PB_CD33: re.compile(r"\bcd ?33\b|\bmyeloid\b"),
}
_NEGATIVE = re.compile(r"cd\s?\d+\s?[-\u2212](?!\d)|\bneg(ative)?\b|\bdepleted\b")
"""A negative or depleted fraction (``CD56-``, ``CD3 negative``): not a positive sort."""


@lru_cache(maxsize=1024)
def normalise_specimen(text: str | None) -> tuple[str | None, bool]:
    """Return the vocabulary value for a manifest specimen and whether it was recognised.

    An unrecognised value comes back stripped but otherwise as written.

    Examples
    --------
    >>> normalise_specimen("Peripheral blood"), normalise_specimen("NK (CD56+)")
    (('PB', True), ('PB CD56+', True))
    >>> normalise_specimen("PB CD3+ sorted"), normalise_specimen("Bone marrow")
    (('PB CD3+', True), ('BM', True))
    >>> normalise_specimen("buccal swab"), normalise_specimen("BM CD56+")
    (('buccal swab', False), ('BM CD56+', False))
    """
    if text is None or not text.strip():
        return None, True
    raw = text.strip()
    if _NEGATIVE.search(raw.casefold()):
        return raw, False
    key = re.sub(r"[^a-z0-9]+", " ", raw.casefold()).strip()
    words = set(key.split())
    markers = [specimen for specimen, pattern in _SORTED.items() if pattern.search(key)]
    blood, marrow = bool(words & _BLOOD), bool(words & _MARROW)
    if len(markers) > 1 or (blood and marrow):
        return raw, False
    known = _BLOOD | _MARROW | _FILLER | {"cd", "cd56", "cd3", "cd33", "56", "3", "33", "nk"}
    known |= {"t", "tcell", "tcells", "myeloid"}
    if words - known:
        return raw, False
    if markers:
        return (raw, False) if marrow else (markers[0].value, True)
    if marrow:
        return Specimen.BM.value, True
    if blood:
        return Specimen.PB.value, True
    return raw, False
