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

import pandera
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
PANDERA_SERIES = ("0.35",)
"""Pandera releases (major.minor) whose check backends this query is tested against
(``tests/schemas/test_contract_check.py``): it calls their internals, so with any other
release Pandera judges alone (speed only)."""


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
    if CONFIG.use_narwhals_backend or _series(pandera.__version__) not in PANDERA_SERIES:
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


def _series(version: str) -> str:
    """A release's major.minor.

    Examples
    --------
    >>> _series("0.35.0")
    '0.35'
    """
    return ".".join(version.split(".")[:2])


@cache
def _columns(model: type[DataFrameModel]) -> tuple[dict[str, Any], frozenset[str]]:
    """The contract's column dtypes (Pandera's) and its required columns."""
    columns = model.to_schema().columns
    dtypes = {name: column.dtype for name, column in columns.items()}
    return dtypes, frozenset(name for name, column in columns.items() if column.required)


@cache
def _dtype_fits(model: type[DataFrameModel], name: str, dtype: pl.DataType) -> bool:
    """Pandera's own dtype check of column ``name`` (slow to ask; few distinct questions)."""
    expected = _columns(model)[0].get(name)
    return expected is not None and bool(expected.check(dtype))


def fits(frame: pl.DataFrame, model: type[DataFrameModel]) -> bool:
    """Whether ``frame`` has only the contract's columns, its required ones among them.

    Each column must have the contract's dtype by Pandera's own rule, so that validating
    coerces nothing.
    """
    return _columns(model)[1] <= set(frame.columns) and all(
        _dtype_fits(model, name, dtype) for name, dtype in frame.schema.items()
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
    lf = frame.lazy()
    try:
        verdicts = list(_verdicts(lf, frame.schema, rules))
        exprs = [v.alias(f"e{i}") for i, v in enumerate(verdicts) if isinstance(v, pl.Expr)]
        parts = [lf.select(exprs)] if exprs else []
        parts += [
            v.select(pl.all().alias(f"q{i}"))
            for i, v in enumerate(verdicts)
            if isinstance(v, pl.LazyFrame)
        ]
        if not parts:
            return True
        row = (parts[0] if len(parts) == 1 else pl.concat(parts, how="horizontal")).collect()
    except Exception:  # noqa: BLE001 - a check that cannot run is Pandera's to report
        return None
    return all(row.row(0))


Verdict = pl.Expr | pl.LazyFrame
"""One rule's outcome as one boolean: an expression over the frame, or a query of its own."""


def _verdicts(lf: pl.LazyFrame, schema: pl.Schema, rules: _Rules) -> Iterator[Verdict]:
    """One single-value boolean verdict per rule Pandera would run on ``lf``."""
    for name, column in rules.columns.items():
        if name not in schema:
            continue
        value = pl.col(name)
        if not column.nullable:
            present = value.is_not_null()
            if schema[name] in _FLOATS:
                present = present & value.is_not_nan()
            yield present.all()
        if column.unique:
            yield value.is_duplicated().any().not_()
        for check in column.checks:
            yield _verdict(check, lf, name)
    for check in rules.checks:
        yield _verdict(check, lf, "*")


def _verdict(check: _Check, lf: pl.LazyFrame, key: str) -> Verdict:
    """A check's outcome as Pandera reduces it: all rows pass (nulls pass when ``ignore_na``).

    The check builds its query on a :class:`_Recorder`; a plain ``select`` of one expression
    (every built-in check, most row rules) becomes that expression, to run with the other
    rules in one ``select``. Otherwise Pandera's own ``apply`` (element-wise checks, several
    output columns folded into one) gives a query of its own. The reduction is Pandera's
    ``postprocess_lazyframe_output``.
    """
    out: Any = None
    if not check.check.element_wise:
        recorder: Any = _Recorder(lf)
        out = check.backend.check_fn(PolarsData(recorder, key))
    if isinstance(out, bool):
        return pl.lit(out)
    if isinstance(out, _Selected) and out.expr is not None:
        passed = out.expr
    else:
        out = check.backend.apply(PolarsData(lf, key))
        if isinstance(out, bool):
            return pl.lit(out)
        passed = pl.col(CHECK_OUTPUT_KEY)
    kept = passed | passed.is_null() if check.check.ignore_na else passed.fill_null(value=False)
    if isinstance(out, pl.LazyFrame):
        query: pl.LazyFrame = out.select(kept.all())
        return query
    return kept.all()


class _Selected:
    """What a check's ``select`` on a :class:`_Recorder` returned.

    Any use but being the check's result turns it into the real query.
    """

    def __init__(self, lf: pl.LazyFrame, exprs: tuple[Any, ...], named: dict[str, Any]) -> None:
        self._query = (lf, exprs, named)
        single = len(exprs) == 1 and not named and isinstance(exprs[0], pl.Expr)
        self.expr: pl.Expr | None = (
            exprs[0] if single and not exprs[0].meta.has_multiple_outputs() else None
        )

    def __getattr__(self, name: str) -> Any:
        lf, exprs, named = self._query
        return getattr(lf.select(*exprs, **named), name)


class _Recorder:
    """Stands in for the frame's LazyFrame while a check builds its query (see :func:`_verdict`)."""

    def __init__(self, lf: pl.LazyFrame) -> None:
        self._lf = lf

    def select(self, *exprs: Any, **named: Any) -> _Selected:
        """Record the selection instead of planning it."""
        return _Selected(self._lf, exprs, named)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lf, name)
