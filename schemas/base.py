"""Base for every Chimera table contract: strict columns, coerced dtypes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pandera.polars as pa
import polars as pl

UTC = pl.Datetime("us", "UTC")
M = TypeVar("M", bound=type[pa.DataFrameModel])

_ROWS_CHECKED_ALONE: set[type[pa.DataFrameModel]] = set()
_COMPARED_WITHIN: dict[type[pa.DataFrameModel], tuple[str, ...]] = {}


class StrictModel(pa.DataFrameModel):
    """A table contract that rejects unknown columns and coerces to the declared dtypes."""

    class Config:
        """Reject unknown columns; coerce to the declared dtypes."""

        strict = True
        coerce = True


def polars_schema(model: type[pa.DataFrameModel]) -> dict[str, pl.DataType]:
    """The contract's columns as a polars schema, in order (for empty frames and row lists)."""
    return {name: column.dtype.type for name, column in model.to_schema().columns.items()}


def rows_checked_alone(model: M) -> M:
    """Mark a contract whose checks judge each row on its own or flag duplicate keys.

    For such a contract a frame that breaks it also breaks it inside any concatenation with
    other frames, so writers may validate many frames in one pass and re-check frames one by one
    only when that pass fails (:func:`chimera.validation.validate_many`). Never mark a contract
    with a check over groups or the whole frame (``over(...)``, ``min()``, "at least one row"):
    other frames' rows could then make a bad frame pass. Subclasses are not marked implicitly.
    """
    _ROWS_CHECKED_ALONE.add(model)
    return model


def checks_rows_alone(model: type[pa.DataFrameModel]) -> bool:
    """Whether ``model`` was marked with :func:`rows_checked_alone`."""
    return model in _ROWS_CHECKED_ALONE


def rows_compared_within(*keys: str) -> Callable[[M], M]:
    """Mark a contract whose checks compare two rows only when they share a value of a key.

    Every other check judges each row alone; a unique column or a check over ``over(key)`` /
    a key's duplicates names its key in ``keys``. The key columns are strings checked only for
    their dtype, nulls and a minimum length. Writers may then validate many frames in one pass
    with each frame's key values made its own (:func:`chimera.validation.validate_many`): rows
    of different frames are never compared, so a frame breaks the contract alone exactly when
    it breaks it in that pass. Subclasses are not marked implicitly.
    """

    def mark(model: M) -> M:
        _COMPARED_WITHIN[model] = keys
        return model

    return mark


def compared_within(model: type[pa.DataFrameModel]) -> tuple[str, ...]:
    """The keys :func:`rows_compared_within` gave ``model`` (none: not marked)."""
    return _COMPARED_WITHIN.get(model, ())
