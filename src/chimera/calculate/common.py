"""Sample roles and target names that the qPCR and ddPCR calculations read the same way."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from schemas.vocab import PRODUCT_ROLES

__all__ = ["PRODUCT_ROLES", "is_reference_gene"]


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
