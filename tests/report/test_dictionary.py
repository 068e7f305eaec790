"""The data dictionary is generated from the Pandera contracts and the committed copy is current."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from chimera.cli import app
from chimera.dictionary import TABLES, data_dictionary, render_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "data-dictionary.md"


def test_committed_dictionary_is_up_to_date() -> None:
    """docs/data-dictionary.md equals what the contracts generate (run `make docs` to refresh)."""
    assert DOCS.read_text(encoding="utf-8") == render_markdown(data_dictionary()), (
        "docs/data-dictionary.md is stale: run `make docs`"
    )


def test_every_column_of_every_table_is_described() -> None:
    """Each column says what it means (pa.Field(description=...)); lineage included."""
    undocumented = [
        f"{table.name}.{column.name}"
        for table in data_dictionary()
        for column in table.columns
        if not column.description
    ]
    assert undocumented == []


def test_percentages_and_days_carry_units() -> None:
    """Every pct_* / *_pct column is in percent; every *_days column in days (or %·d)."""
    for table in data_dictionary():
        for column in table.columns:
            if column.name.startswith("pct_") or column.name.endswith("_pct"):
                assert column.unit.startswith("%"), f"{table.name}.{column.name}"
            if column.name.endswith("_days"):
                assert column.unit.endswith("d"), f"{table.name}.{column.name}"


def test_tables_command_lists_every_table() -> None:
    """`chimera tables` prints each table and `--table` one of them; an unknown one is exit 2."""
    runner = CliRunner()
    everything = runner.invoke(app, ["tables"])
    assert everything.exit_code == 0
    for table in TABLES:
        assert table.name in everything.output
    one = runner.invoke(app, ["tables", "--table", "kinetics"])
    assert one.exit_code == 0
    assert "auc_pct_days" in one.output
    assert runner.invoke(app, ["tables", "--table", "nope"]).exit_code == 2


def test_dictionary_states_the_purity_and_three_genome_conventions() -> None:
    """The sorted-fraction purity rule and the three-genome columns are explained."""
    text = DOCS.read_text(encoding="utf-8")
    assert "`pct_ink_purity_corrected` = `pct_ink` / (`purity_pct` / 100), clamped" in text
    for column in ("genome_model", "pct_recipient", "pct_hsct_donor"):
        assert column in text
