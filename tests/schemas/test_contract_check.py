"""The one-query contract check agrees with Pandera on every frame (valid or broken)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandera.errors as pa_errors
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pandera.api.polars.model import DataFrameModel

from chimera import contract_check
from chimera.contract_check import fits, meets_contract
from schemas.base import polars_schema
from schemas.inputs import DdpcrWells, InfusionLog, Manifest

T = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)

_MANIFEST = [
    ("P01-B", "P01", "recipient_baseline", T, "PB", 10.0, None),
    ("P01-D1", "P01", "post_dose", T + timedelta(days=7), "PB CD56+", None, None),
    ("P02-D1", "P02", "post_dose", T, "PB", None, None),
    ("LOT1", "LOT1", "donor_reference", None, None, None, None),
    ("DS-10", "DS", "dilution_standard", None, None, None, 10.0),
]


def _manifest() -> pl.DataFrame:
    rows = [
        {
            "sample_id": sample,
            "patient_id": patient,
            "role": role,
            "collected_at": at,
            "specimen": specimen,
            "specimen_raw": specimen,
            "wbc_per_ul": 2500.0,
            "lymphocytes_per_ul": 800.0,
            "nk_per_ul": 120.0,
            "purity_pct": purity,
            "product_lot": "LOT1",
            "cell_bank": None,
            "nominal_pct": nominal,
        }
        for sample, patient, role, at, specimen, purity, nominal in _MANIFEST
    ]
    return pl.DataFrame(rows, schema=polars_schema(Manifest))


def _infusions() -> pl.DataFrame:
    rows = [("P01", 1, T, 5e8), ("P01", 2, T + timedelta(days=3), 1e9), ("P02", 1, T, None)]
    return pl.DataFrame(
        [
            {"patient_id": p, "dose_number": n, "infused_at": at, "cells": c, "product_lot": "L"}
            for p, n, at, c in rows
        ],
        schema=polars_schema(InfusionLog),
    )


def _ddpcr_wells() -> pl.DataFrame:
    rows: list[tuple[str, str | None, int | None, int | None, float]] = [
        ("A01", "M1", 20, 15980, 0.85),
        ("A01", "RPP30", 9000, 7000, 0.85),
        ("B01", None, None, None, 0.91),
    ]
    return pl.DataFrame(
        [
            {
                "sample_id": "P01-D1",
                "well": well,
                "target": target,
                "channel": "Ch1",
                "target_role": None,
                "sample_type": "Unknown",
                "status": "OK",
                "accepted_droplets": None if pos is None or neg is None else pos + neg,
                "positives": pos,
                "negatives": neg,
                "concentration_copies_per_ul": 1.2,
                "droplet_volume_nl": volume,
                "merged_wells": None,
                "is_merged": False,
                "software": "quantasoft",
                "source_row": i + 2,
            }
            for i, (well, target, pos, neg, volume) in enumerate(rows)
        ],
        schema=polars_schema(DdpcrWells),
    )


_BASES = {Manifest: _manifest, InfusionLog: _infusions, DdpcrWells: _ddpcr_wells}

_EDGES: dict[type[pl.DataType], list[Any]] = {
    pl.String: [None, "", "x", "P01", "P01-B", "post_dose", "dilution_standard", "qx_manager"],
    pl.Float64: [None, float("nan"), float("inf"), -1.0, 0.0, 1.0, 50.0, 100.0, 150.0, 1e8],
    pl.Int64: [None, -1, 0, 1, 20, 16000, 10**9],
    pl.Int32: [None, -1, 0, 1, 2, 3],
    pl.Boolean: [None, True, False],
    pl.Datetime: [
        None,
        datetime(1990, 1, 1, tzinfo=UTC),
        T - timedelta(days=1),
        T,
        T + timedelta(days=9),
    ],
}


def _edited(frame: pl.DataFrame, edits: list[tuple[int, int, int]]) -> pl.DataFrame:
    """``frame`` with cell (row, column) set to the ``choice``-th edge value of its dtype."""
    columns = {name: frame[name].to_list() for name in frame.columns}
    for row, column, choice in edits:
        name = frame.columns[column % frame.width]
        pool = _EDGES[frame.schema[name].base_type()]
        columns[name][row % frame.height] = pool[choice % len(pool)]
    return pl.DataFrame(columns, schema=frame.schema)


def _pandera_passes(frame: pl.DataFrame, model: type[DataFrameModel]) -> bool:
    try:
        model.validate(frame, lazy=True)
    except (pa_errors.SchemaErrors, pa_errors.SchemaError):
        return False
    return True


@pytest.mark.parametrize("model", list(_BASES), ids=lambda m: m.__name__)
def test_valid_frame_meets_its_contract(model: type[DataFrameModel]) -> None:
    """Each hand-built valid frame passes both ways (the edits below then break it)."""
    frame = _BASES[model]()
    assert meets_contract(frame, model) is True
    assert _pandera_passes(frame, model)


@given(
    model=st.sampled_from(list(_BASES)),
    edits=st.lists(
        st.tuples(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)),
        min_size=1,
        max_size=3,
    ),
)
def test_one_query_agrees_with_pandera(
    model: type[DataFrameModel], edits: list[tuple[int, int, int]]
) -> None:
    """Nulls, NaN, blanks, duplicates, values out of range or vocabulary, broken row rules:
    the one-query verdict is Pandera's."""
    frame = _edited(_BASES[model](), edits)
    assert meets_contract(frame, model) is _pandera_passes(frame, model)


def test_frame_needing_coercion_or_unknown_columns_is_left_to_pandera() -> None:
    """A column of another dtype, an extra column or a missing required one: no verdict."""
    frame = _manifest()
    assert (
        meets_contract(frame.with_columns(pl.col("nominal_pct").cast(pl.Int64)), Manifest) is None
    )
    assert meets_contract(frame.with_columns(pl.lit(1).alias("extra")), Manifest) is None
    assert meets_contract(frame.drop("role"), Manifest) is None
    assert not fits(frame.drop("role"), Manifest)
    assert fits(frame.drop("nominal_pct"), Manifest)


def test_another_pandera_release_is_left_to_pandera(monkeypatch: pytest.MonkeyPatch) -> None:
    """The query calls Pandera's internals: with a release it was not tested on, no verdict."""
    frame = _manifest()
    assert meets_contract(frame, Manifest) is True
    monkeypatch.setattr(contract_check.pandera, "__version__", "0.99.0")
    contract_check._rules.cache_clear()
    try:
        assert meets_contract(frame, Manifest) is None
    finally:
        monkeypatch.undo()
        contract_check._rules.cache_clear()
    assert meets_contract(frame, Manifest) is True
