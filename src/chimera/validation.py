"""Run a Pandera contract and turn its failure cases into problems a lab user can read."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import pandera.errors as pa_errors
import polars as pl
from pandera.api.polars.model import DataFrameModel

from chimera.contract_check import fits, meets_contract
from chimera.errors import Problem, ValidationFailedError
from schemas.base import checks_rows_alone, compared_within

_MAX_PROBLEMS = 50


@dataclass(frozen=True)
class Deferred:
    """One frame whose contract check was put off to a batch (:func:`deferred_validation`)."""

    frame: pl.DataFrame
    model: type[DataFrameModel]
    file_name: str
    source_rows: Sequence[int] | None


_deferred: ContextVar[list[Deferred] | None] = ContextVar("deferred_validation", default=None)


@contextlib.contextmanager
def deferred_validation() -> Iterator[list[Deferred]]:
    """Collect the contract checks of frames whose dtypes already match, to run them in a batch.

    Inside the block :func:`validate_frame` returns such a frame at once (its contract must
    check rows alone, :func:`schemas.base.rows_checked_alone`) and appends it to the yielded
    list; :func:`check_deferred` then validates the lists of many files in one pass per
    contract. Frames that need coercion, and other contracts, are validated immediately.
    """
    collected: list[Deferred] = []
    token = _deferred.set(collected)
    try:
        yield collected
    finally:
        _deferred.reset(token)


def validate_frame(
    frame: pl.DataFrame,
    model: type[DataFrameModel],
    *,
    file_name: str,
    source_rows: Sequence[int] | None = None,
) -> pl.DataFrame:
    """Validate ``frame`` against ``model`` (all checks, lazily collected).

    Row numbers in problems come from ``source_rows`` or a ``source_row`` column when given
    (the line or spreadsheet row in the original file), else from the frame index + 1.
    Inside :func:`deferred_validation` the check may be put off (see there).

    Raises
    ------
    ValidationFailedError
        With one :class:`Problem` per failure case (at most 50, then a count).
    """
    collected = _deferred.get()
    if collected is not None and checks_rows_alone(model) and fits(frame, model):
        collected.append(Deferred(frame, model, file_name, source_rows))
        return frame
    return _validate(frame, model, file_name=file_name, source_rows=source_rows)


def check_deferred(batches: Sequence[Sequence[Deferred]]) -> list[ValidationFailedError | None]:
    """Run deferred checks, one pass per contract; per batch (file) its first error or None."""
    errors: list[ValidationFailedError | None] = [None] * len(batches)
    groups: dict[tuple[type[DataFrameModel], tuple[str, ...]], list[tuple[int, Deferred]]] = {}
    for index, items in enumerate(batches):
        for item in items:
            groups.setdefault((item.model, tuple(item.frame.columns)), []).append((index, item))
    for (model, _), members in groups.items():
        if _passes([item.frame for _, item in members], model):
            continue
        for index, item in members:
            if errors[index] is not None:
                continue
            try:
                _validate(item.frame, model, file_name=item.file_name, source_rows=item.source_rows)
            except ValidationFailedError as err:
                errors[index] = err
    return errors


def _passes(frames: Sequence[pl.DataFrame], model: type[DataFrameModel]) -> bool:
    """Whether the concatenation of same-column frames meets ``model`` (one Pandera pass).

    Each frame's key values of a :func:`schemas.base.rows_compared_within` contract get a
    suffix naming the frame first (an empty value is left as it is: its length is checked),
    so rows of different frames are never compared.
    """
    keys = compared_within(model)
    if keys:
        frames = [
            frame.with_columns(
                pl.when(pl.col(key) == "").then(pl.col(key)).otherwise(pl.col(key) + f"\x00{i}")
                for key in keys
            )
            for i, frame in enumerate(frames)
        ]
    together = pl.concat(frames, how="vertical_relaxed")
    verdict = meets_contract(together, model)
    if verdict is not None:
        return verdict
    try:
        model.validate(together, lazy=True)
    except (pa_errors.SchemaErrors, pa_errors.SchemaError):
        return False
    return True


def validate_many(
    frames: Sequence[pl.DataFrame], model: type[DataFrameModel], *, file_names: Sequence[str]
) -> list[pl.DataFrame]:
    """Validate several frames against one contract; returns them as validated (same order).

    When the contract checks rows alone (:func:`schemas.base.rows_checked_alone`) or within
    keys (:func:`schemas.base.rows_compared_within`), frames that
    already have its dtypes are checked in one Pandera pass per set of columns; the other
    frames, and every frame of a pass that fails (to name the frame at fault), are validated
    on their own.

    Raises
    ------
    ValidationFailedError
        For the first frame (in order) that breaks the contract.
    """
    passed: set[int] = set()
    if len(frames) > 1 and (checks_rows_alone(model) or compared_within(model)):
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, frame in enumerate(frames):
            if fits(frame, model):
                groups.setdefault(tuple(frame.columns), []).append(index)
        for members in groups.values():
            if len(members) > 1 and _passes([frames[i] for i in members], model):
                passed.update(members)
    return [
        frame if index in passed else _validate(frame, model, file_name=name)
        for index, (frame, name) in enumerate(zip(frames, file_names, strict=True))
    ]


def _validate(
    frame: pl.DataFrame,
    model: type[DataFrameModel],
    *,
    file_name: str,
    source_rows: Sequence[int] | None = None,
) -> pl.DataFrame:
    """One Pandera pass over one frame, its failures as a readable report.

    A frame that already meets the contract (:func:`chimera.contract_check.meets_contract`,
    one query) is returned as it is, without the pass.
    """
    if meets_contract(frame, model):
        return frame
    try:
        return model.validate(frame, lazy=True)
    except pa_errors.SchemaErrors as err:
        rows = list(source_rows) if source_rows is not None else None
        if rows is None and "source_row" in frame.columns:
            rows = frame["source_row"].to_list()
        problems = failure_cases_to_problems(err.failure_cases, rows)
        msg = (
            f"{file_name}: {len(problems)} problem(s) break the {model.__name__} contract; "
            "see the list below"
        )
        raise ValidationFailedError(msg, problems) from None
    except pa_errors.SchemaError as err:
        problem = Problem(rule=model.__name__, message=str(err))
        msg = f"{file_name}: breaks the {model.__name__} contract: {err}"
        raise ValidationFailedError(msg, [problem]) from None


def failure_cases_to_problems(
    failure_cases: pl.DataFrame, rows: Sequence[int] | None
) -> list[Problem]:
    """Map Pandera's ``failure_cases`` (``failure_case, column, check, index``) to problems."""
    problems: list[Problem] = []
    for case in failure_cases.head(_MAX_PROBLEMS).iter_rows(named=True):
        index = case.get("index")
        row = None
        if index is not None:
            row = rows[index] if rows is not None and index < len(rows) else index + 1
        column = case.get("column")
        check = str(case.get("check"))
        is_column = case.get("schema_context") == "Column"
        problems.append(
            Problem(
                rule=check,
                message=_explain(check, column) if is_column else _explain_row_rule(check),
                row=row,
                column=column if is_column else None,
                value=str(case["failure_case"])
                if is_column and case.get("failure_case") is not None
                else None,
                fix=_fix_for(check),
            )
        )
    extra = failure_cases.height - _MAX_PROBLEMS
    if extra > 0:
        problems.append(Problem(rule="more", message=f"{extra} further problem(s) not listed"))
    return problems


_ENUM_REPR = re.compile(r"<\w+\.\w+: ('[^']*')>")
"""``<Method.STR: 'STR'>``: how pandera prints an ``isin=list(Method)`` member."""


def _explain(check: str, column: str | None) -> str:
    col = f"{column!r}" if column else "the table"
    if check.startswith("isin("):
        allowed = _ENUM_REPR.sub(r"\1", check[5:-1])
        return f"{col} must be one of {allowed}"
    if check == "column_in_dataframe":
        return f"required column {col} is missing"
    if check == "column_in_schema":
        return f"column {col} is not part of this table"
    if check == "not_nullable":
        return f"{col} must not be empty"
    if check.startswith("dtype("):
        return f"{col} has the wrong type: expected {check[6:-1]}"
    if check.startswith(("greater_than", "less_than", "in_range")):
        return f"{col} is out of range ({check})"
    if check == "field_uniqueness":
        return f"{col} must be unique; this value appears more than once"
    if check.startswith("str_length"):
        return f"{col} must not be blank"
    if check.startswith("coerce_dtype"):
        return f"{col} could not be converted to the expected type ({check})"
    return f"{col} breaks rule {check!r}"


def _explain_row_rule(check: str) -> str:
    """A cross-column rule is named after what it enforces; say it in words."""
    return "this row breaks the rule: " + check.replace("_", " ")


def _fix_for(check: str) -> str | None:
    if check == "field_uniqueness":
        return "keep one row per id; remove or correct the duplicate and drop the file again."
    if check.startswith("isin("):
        return "use one of the listed values (spelling and case as shown)."
    if check == "column_in_dataframe":
        return "re-export with the column included, or add it to the sheet."
    if check == "not_nullable":
        return "fill in the empty cell."
    return None
