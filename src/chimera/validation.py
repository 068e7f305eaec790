"""Run a Pandera contract and turn its failure cases into problems a lab user can read."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandera.errors as pa_errors
import polars as pl
from pandera.api.polars.model import DataFrameModel

from chimera.errors import Problem, ValidationFailedError

_MAX_PROBLEMS = 50


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

    Raises
    ------
    ValidationFailedError
        With one :class:`Problem` per failure case (at most 50, then a count).
    """
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
