"""Whether a frame meets its Pandera contract, judged in one polars query.

Pandera's polars backend collects a query per check and per column rule (about 80 for a
manifest, ~30 ms whatever its size). A frame that already has the contract's columns and
dtypes is judged here by the very same rules (Pandera's own check functions, its null, NaN,
``ignore_na`` and uniqueness rules), all reduced to one row of booleans in one query.
:mod:`chimera.validation` returns such a frame unchanged when every rule holds; otherwise
Pandera runs as before and its failure cases become the file's report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import polars as pl
from pandera.api.checks import Check
from pandera.api.polars.model import DataFrameModel
from pandera.api.polars.types import PolarsData
from pandera.backends.polars.checks import PolarsCheckBackend
from pandera.backends.polars.register import register_polars_backends
from pandera.config import CONFIG
from pandera.constants import CHECK_OUTPUT_KEY

_FLOATS = (pl.Float32, pl.Float64)
"""What Pandera counts as a float column, whose NaN is a null (``is_float_dtype``)."""
_SCHEMA_OPTIONS = (
    "ordered",
    "unique",
    "add_missing_columns",
    "drop_invalid_rows",
    "unique_column_names",
    "dtype",
    "parsers",
)
"""Contract options this query does not cover: with any of them, Pandera judges alone (as it
does with the Narwhals backend, whose checks take other inputs)."""


@dataclass(frozen=True)
class _Column:
    """One column of a contract: its dtype and the rules Pandera applies to it."""

    name: str
    dtype: Any
    required: bool
    nullable: bool
    unique: bool
    checks: tuple[_Check, ...]


@dataclass(frozen=True)
class _Check:
    """A Pandera check with the backend Pandera runs it with on a polars LazyFrame."""

    check: Check
    backend: Any


@dataclass(frozen=True)
class _Rules:
    """A contract's column rules and its frame-wide checks."""

    columns: dict[str, _Column]
    checks: tuple[_Check, ...]


def _backed(checks: list[Check]) -> tuple[_Check, ...] | None:
    """The checks with their polars backends; None when one warns or groups (Pandera's alone)."""
    if any(check.raise_warning or check.groupby is not None for check in checks):
        return None
    for check in checks:
        # Pandera's own reload (``Check.__call__``): the schema's copy of a built-in check may
        # hold its dispatcher from before the polars implementations were registered.
        name = getattr(check._check_fn, "__name__", None)
        if name is not None and check.is_builtin_check(name):
            check._check_fn = check.get_builtin_check_fn(name)
    backed = tuple(_Check(check, check.get_backend(pl.LazyFrame())(check)) for check in checks)
    return backed if all(isinstance(c.backend, PolarsCheckBackend) for c in backed) else None


@cache
def _rules(model: type[DataFrameModel]) -> _Rules | None:
    """The contract's rules, or None when it uses an option this query does not cover."""
    if CONFIG.use_narwhals_backend:
        return None
    register_polars_backends()  # what Pandera's first polars validation does
    schema = model.to_schema()
    if any(getattr(schema, option, None) for option in _SCHEMA_OPTIONS):
        return None
    columns: dict[str, _Column] = {}
    for name, column in schema.columns.items():
        checks = _backed(column.checks)
        if (
            checks is None
            or column.regex
            or column.default is not None
            or column.drop_invalid_rows
            or column.dtype is None
        ):
            return None
        columns[name] = _Column(
            name, column.dtype, column.required, column.nullable, column.unique, checks
        )
    frame_checks = _backed(schema.checks)
    return None if frame_checks is None else _Rules(columns, frame_checks)


@cache
def _dtypes(model: type[DataFrameModel]) -> tuple[dict[str, Any], frozenset[str]]:
    """The contract's column dtypes (Pandera's) and its required columns."""
    columns = model.to_schema().columns
    dtypes = {name: column.dtype for name, column in columns.items()}
    return dtypes, frozenset(name for name, column in columns.items() if column.required)


def fits(frame: pl.DataFrame, model: type[DataFrameModel]) -> bool:
    """Whether ``frame`` has only the contract's columns, its required ones among them.

    Each column must have the contract's dtype by Pandera's own rule, so that validating
    coerces nothing.
    """
    dtypes, required = _dtypes(model)
    return required <= set(frame.columns) and all(
        name in dtypes and dtypes[name] is not None and dtypes[name].check(dtype)
        for name, dtype in frame.schema.items()
    )


def meets_contract(frame: pl.DataFrame, model: type[DataFrameModel]) -> bool | None:
    """Whether ``frame`` passes every rule of ``model`` that Pandera would run.

    True: Pandera would pass it and return it unchanged. False: some rule fails (Pandera
    names which). None: the frame needs coercion, lacks a required column, has one the
    contract does not know, or the contract uses an option not covered here; ask Pandera.
    """
    rules = _rules(model)
    if rules is None or not fits(frame, model):
        return None
    try:
        verdicts = list(_verdicts(frame.lazy(), frame.schema, rules))
        if not verdicts:
            return True
        row = pl.concat(
            [verdict.select(pl.all().alias(f"v{i}")) for i, verdict in enumerate(verdicts)],
            how="horizontal",
        ).collect()
    except Exception:  # noqa: BLE001 - a check that cannot run is Pandera's to report
        return None
    return all(row.row(0))


def _verdicts(lf: pl.LazyFrame, schema: pl.Schema, rules: _Rules) -> Iterator[pl.LazyFrame]:
    """One single-value boolean query per rule Pandera would run on ``lf``."""
    for name, column in rules.columns.items():
        if name not in schema:
            continue
        value = pl.col(name)
        if not column.nullable:
            present = value.is_not_null()
            if schema[name] in _FLOATS:
                present = present & value.is_not_nan()
            yield lf.select(present.all())
        if column.unique:
            yield lf.select(value.is_duplicated().any().not_())
        for check in column.checks:
            yield _verdict(check, PolarsData(lf, name))
    for check in rules.checks:
        yield _verdict(check, PolarsData(lf, "*"))


def _verdict(check: _Check, data: PolarsData) -> pl.LazyFrame:
    """A check's outcome as Pandera reduces it: all rows pass (nulls pass when ``ignore_na``).

    ``apply`` is Pandera's own (element-wise checks, several output columns folded into one);
    the reduction is its ``postprocess_lazyframe_output``.
    """
    out = check.backend.apply(data)
    if isinstance(out, bool):
        return pl.LazyFrame({CHECK_OUTPUT_KEY: [out]})
    passed = pl.col(CHECK_OUTPUT_KEY)
    kept = passed | passed.is_null() if check.check.ignore_na else passed.fill_null(value=False)
    verdict: pl.LazyFrame = out.select(kept.all())
    return verdict
