"""Column definitions shared by several contracts (one place for each column's rule and words).

Each function returns a fresh ``pandera.Field``; a model assigns it to its own attribute.
"""

from __future__ import annotations

from typing import Any

import pandera.polars as pa

from schemas.vocab import GenomeModel, QcVerdict, ResultStatus


def measure(
    description: str,
    unit: str,
    *,
    minimum: float | None = 0,
    strict: bool = False,
    maximum: float | None = None,
) -> Any:
    """A nullable numeric column in ``unit``: at least ``minimum`` (above it if ``strict``)."""
    return pa.Field(
        description=description,
        metadata={"unit": unit},
        nullable=True,
        gt=minimum if strict else None,
        ge=None if strict else minimum,
        le=maximum,
    )


def percent(description: str, *, upper: float | None = 100, positive: bool = False) -> Any:
    """A nullable % column, at least 0 (above 0 if ``positive``) and at most ``upper``."""
    return measure(description, "%", strict=positive, maximum=upper)


def share(description: str) -> Any:
    """A nullable 0-100 % column of one genome's share (iNK, recipient or HSCT donor)."""
    return percent(description)


def pct_ink() -> Any:
    """The headline % iNK of a result (methods.md 2-4), clamped to 0-100."""
    return percent(
        "% of the specimen's DNA from the iNK product, clamped to 0-100; "
        "null when not_detected or failed."
    )


def ci_bound(which: str) -> Any:
    """``which`` = "Lower" or "Upper" bound of the 95 % CI of pct_ink."""
    return percent(f"{which} bound of the 95 % CI of pct_ink.")


def sample_lod() -> Any:
    """The sample's own LoD (methods.md 5), in %."""
    return percent("The sample's own limit of detection.", upper=None)


def sample_loq() -> Any:
    """The sample's own LoQ (methods.md 5), in %."""
    return percent("The sample's own limit of quantification.", upper=None)


def result_status(
    description: str = "quantified, below_loq, not_detected or failed (methods.md 4).",
    *,
    nullable: bool = False,
) -> Any:
    """A ``schemas.vocab.ResultStatus`` column."""
    return pa.Field(description=description, nullable=nullable, isin=list(ResultStatus))


def qc_verdict() -> Any:
    """A ``schemas.vocab.QcVerdict`` column."""
    return pa.Field(description="pass, review or fail.", isin=list(QcVerdict))


def genome_model() -> Any:
    """Two or three genomes (``schemas.vocab.GenomeModel``); null when not recorded."""
    return pa.Field(
        description="two_genome or three_genome (prior HSCT donor); null when not recorded.",
        nullable=True,
        isin=list(GenomeModel),
    )
