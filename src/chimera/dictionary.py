"""The data dictionary: every warehouse table's columns, types, units and meaning.

Generated from the Pandera contracts (``pa.Field(description=..., metadata={"unit": ...})``), so
the dictionary cannot drift from what the pipeline validates. ``chimera tables`` prints it and
``chimera tables --markdown docs/data-dictionary.md`` (``make docs``) rewrites the committed copy;
a test fails when that copy is out of date.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl
from rich.console import Console
from rich.table import Table as RichTable

from chimera.warehouse import TABLES, Table

CONVENTIONS = """\
## Conventions

- **Scales.** Every `pct_*` column is a percentage 0–100 of the specimen's DNA (never a fraction).
  Days are `study_day` (day 0 = first infusion) or fractional `*_days` since a dose.
- **Results are never a bare 0.** `result_status` is `quantified` (value + 95 % CI),
  `below_loq` (detected, estimate kept), `not_detected` (no value; the sample's `lod_pct` is the
  upper bound) or `failed` (no value; `qc_reasons` says why). methods.md 4.
- **Current rows.** One row per sample × method is current. Rows of a file that a re-export or
  re-analysis of the same run replaced, and the other rows of a repeat measurement (the same
  sample on another plate or STR run: the latest is current unless it failed QC), stay with
  `superseded = true` and `superseded_reason`; `chimera query` hides them unless `--all`.
- **Sorted fractions** (`specimen` = `PB CD56+`, `PB CD3+`, `PB CD33+`): `pct_ink` is the share
  measured in the sorted fraction. When the manifest gives `purity_pct` (0–100),
  `pct_ink_purity_corrected` = `pct_ink` / (`purity_pct` / 100), clamped to 0–100 (assumes the
  contaminating cells are not iNK; methods.md 6). Off-lineage fractions (CD3+, CD33+) are not
  corrected upward: their iNK is compared with what (1 − purity) NK contamination can explain.
- **Three genomes** (patients who relapsed after an allogeneic transplant): `genome_model` is
  `two_genome` or `three_genome`; `pct_recipient` and `pct_hsct_donor` (each with
  `_ci_low`/`_ci_high`, 95 %) are the patient's own and the transplant donor's shares beside
  `pct_ink`, summing to 100 with it. In two-genome patients `pct_recipient` = 100 − `pct_ink` and
  `pct_hsct_donor` is null. methods.md 2.3.
- **Lineage.** `source_sha256` names the file a row came from (for derived tables, the hash of the
  sorted source hashes), with `pipeline_version` and `ingested_at` (UTC).
"""


@dataclass(frozen=True)
class ColumnEntry:
    """One column of the dictionary."""

    name: str
    dtype: str
    nullable: bool
    unit: str
    description: str
    allowed: str


@dataclass(frozen=True)
class TableEntry:
    """One table of the dictionary."""

    name: str
    contract: str
    summary: str
    columns: tuple[ColumnEntry, ...]
    rules: tuple[str, ...]


def _dtype_name(dtype: pl.DataType) -> str:
    """A reader's name for a polars dtype.

    Examples
    --------
    >>> _dtype_name(pl.Datetime("us", "UTC"))
    'datetime (UTC)'
    >>> _dtype_name(pl.Int32())
    'int32'
    """
    if isinstance(dtype, pl.Datetime):
        return f"datetime ({dtype.time_zone or 'naive'})"
    names = {pl.String: "text", pl.Float64: "float64", pl.Boolean: "bool"}
    for kind, name in names.items():
        if dtype == kind:
            return name
    return str(dtype).lower()


def _constraint(check: pa.Check) -> str:
    stats = check.statistics or {}
    symbols = {
        "greater_than_or_equal_to": "≥",
        "greater_than": ">",
        "less_than_or_equal_to": "≤",
        "less_than": "<",
    }
    if check.name == "isin":
        return "one of " + ", ".join(f"`{v}`" for v in stats.get("allowed_values", []))
    if check.name in symbols:
        value = next(iter(stats.values()), "")
        return f"{symbols[check.name]} {value}"
    if check.name == "str_length":
        low, high = stats.get("min_value"), stats.get("max_value")
        return f"{low} characters" if low == high else f"length ≥ {low}"
    return str(check.name)


def _summary(model: type[pa.DataFrameModel]) -> str:
    return " ".join(inspect.cleandoc(model.__doc__ or "").split())


def describe_table(table: Table) -> TableEntry:
    """The dictionary entry of one table, from its Pandera contract."""
    name, model = table.name, table.model
    schema = model.to_schema()
    columns = []
    for column_name, column in schema.columns.items():
        metadata = column.metadata or {}
        columns.append(
            ColumnEntry(
                name=column_name,
                dtype=_dtype_name(column.dtype.type),
                nullable=bool(column.nullable),
                unit=str(metadata.get("unit", "")),
                description=" ".join((column.description or "").split()),
                allowed="; ".join(_constraint(c) for c in column.checks),
            )
        )
    rules = []
    for check in schema.checks:
        method = getattr(model, str(check.name), None)
        doc = inspect.getdoc(method) if method is not None else None
        rules.append(" ".join((doc or str(check.name)).split()))
    return TableEntry(
        name=name,
        contract=f"{model.__module__}.{model.__name__}",
        summary=_summary(model),
        columns=tuple(columns),
        rules=tuple(rules),
    )


def data_dictionary() -> list[TableEntry]:
    """Every warehouse table's entry, in the catalog's order (``chimera.warehouse.TABLES``)."""
    return [describe_table(table) for table in TABLES]


def _cell(text: str) -> str:
    return text.replace("|", "\\|") or "–"


def render_markdown(tables: list[TableEntry]) -> str:
    """The dictionary as Markdown (``docs/data-dictionary.md``)."""
    lines = [
        "# Data dictionary",
        "",
        (
            "Generated from the Pandera contracts in `schemas/` by `chimera tables --markdown "
            "docs/data-dictionary.md` (`make docs`); do not edit by hand. Each table is a folder "
            "of Parquet files under the warehouse (`<table>/**/*.parquet`) and a view in "
            "`chimera query`."
        ),
        "",
        CONVENTIONS,
    ]
    for table in tables:
        lines += [f"## `{table.name}`", "", f"Contract `{table.contract}`. {table.summary}", ""]
        lines += [
            "| column | type | null | unit | description | allowed |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| `{c.name}` | {c.dtype} | {'yes' if c.nullable else 'no'} | {_cell(c.unit)} "
            f"| {_cell(c.description)} | {_cell(c.allowed)} |"
            for c in table.columns
        ]
        if table.rules:
            lines += ["", "Rules checked on every write:", ""]
            lines += [f"- {rule}" for rule in table.rules]
        lines.append("")
    return "\n".join(lines)


def print_dictionary(tables: list[TableEntry], console: Console) -> None:
    """Print the dictionary as one rich table per warehouse table."""
    for entry in tables:
        view = RichTable(
            title=f"{entry.name}  ({entry.contract})", title_justify="left", expand=True
        )
        for header in ("column", "type", "unit", "description", "allowed"):
            view.add_column(header, overflow="fold")
        for c in entry.columns:
            kind = c.dtype + (" / null" if c.nullable else "")
            view.add_row(c.name, kind, c.unit or "–", c.description or "–", c.allowed or "–")
        console.print(view)
        console.print(entry.summary, style="dim")
