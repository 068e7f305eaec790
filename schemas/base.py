"""Base for every Chimera table contract: strict columns, coerced dtypes."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

UTC = pl.Datetime("us", "UTC")


class StrictModel(pa.DataFrameModel):
    """A table contract that rejects unknown columns and coerces to the declared dtypes."""

    class Config:
        """Reject unknown columns; coerce to the declared dtypes."""

        strict = True
        coerce = True


def polars_schema(model: type[pa.DataFrameModel]) -> dict[str, pl.DataType]:
    """The contract's columns as a polars schema, in order (for empty frames and row lists)."""
    return {name: column.dtype.type for name, column in model.to_schema().columns.items()}
