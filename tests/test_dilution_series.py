"""A dilution series of the product sets each method's LoD/LoQ (issue 4: limits from data).

P01's samples are re-declared as the dilution standards of a series ``DIL-1`` (nominal = the
generator's truth), so every method measures the same known levels; the exports that hold them
are ingested with the manifest and the infusion log. The expected levels come
from ``truth/truth.csv``; the LoD rule is methods.md section 4: the lowest level detected in
>= 95 % of its replicates with every higher level detected as well.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from chimera.poll import ingest_paths
from chimera.settings import Settings
from schemas.vocab import Method

SERIES = "DIL-1"
DETECTED = 0.95


@dataclass(frozen=True)
class SeriesRun:
    """The ingested trial with P01 as a dilution series."""

    limits: pl.DataFrame
    chimerism: pl.DataFrame
    truth: pl.DataFrame
    settings: Settings


@pytest.fixture(scope="module")
def series_run(sample_data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> SeriesRun:
    """Ingest the trial once with P01's samples declared as dilution standards."""
    tmp_path = tmp_path_factory.mktemp("dilution")
    truth = pl.read_csv(
        sample_data_path / "truth" / "truth.csv",
        columns=["sample_id", "patient_id", "role", "pct_ink", "methods"],
        schema_overrides={"pct_ink": pl.Float64},
    )
    manifest = pl.read_csv(sample_data_path / "manifest.csv", infer_schema_length=0)
    pct = truth.select("sample_id", "pct_ink")
    series = manifest.filter(pl.col("patient_id") == "P01").join(pct, on="sample_id", how="left")
    series = series.with_columns(
        patient_id=pl.lit(SERIES),
        role=pl.when(pl.col("role") == "post_dose")
        .then(pl.lit("dilution_standard"))
        .otherwise(pl.col("role")),
        nominal_pct=pl.col("pct_ink").cast(pl.String),
    ).drop("pct_ink")
    rest = manifest.filter(pl.col("patient_id") != "P01").with_columns(
        nominal_pct=pl.lit(None, pl.String)
    )
    drop = tmp_path / "drop"
    drop.mkdir()
    # Every row names the reference's lot, so this test does not depend on resolving the lots of
    # one cell bank (test_sample_trial covers that).
    pl.concat([rest, series.select(rest.columns)]).with_columns(
        product_lot=pl.coalesce("product_lot", pl.lit("INK-MCB01-L01"))
    ).write_csv(drop / "manifest.csv")
    # The runs and plates that hold a standard of the series (with every other sample on them):
    # the limits are the same as from the whole trial, at two thirds of the ingest time.
    files = [drop / "manifest.csv", sample_data_path / "infusion_log.xlsx"]
    files += [
        p
        for p in sorted(sample_data_path.glob("*/*"))
        if p.parent.name in {"str", "qpcr", "ddpcr"} and b"P01-" in p.read_bytes()
    ]
    settings = Settings().with_home(tmp_path / "home")
    clock = iter(datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(10_000))
    ingest_paths(files, settings=settings, clock=lambda: next(clock), move=False)
    return SeriesRun(
        limits=pl.read_parquet(settings.warehouse / "assay_limits" / "*.parquet"),
        chimerism=pl.read_parquet(settings.warehouse / "chimerism" / "*.parquet"),
        truth=truth.filter((pl.col("patient_id") == "P01") & (pl.col("role") == "post_dose")),
        settings=settings,
    )


def _applied(run: SeriesRun, method: Method) -> dict[str, object]:
    rows = run.limits.filter((pl.col("method") == method) & pl.col("applied")).to_dicts()
    assert len(rows) == 1, (method, rows)
    return rows[0]


def test_the_series_is_not_a_patient(series_run: SeriesRun) -> None:
    """One limits row per method, all from DIL-1; neither DIL-1 nor P01 has chimerism rows."""
    assert sorted(series_run.limits["method"]) == sorted(Method)
    assert set(series_run.limits["series_id"]) == {SERIES}
    patients = set(series_run.chimerism["patient_id"])
    assert SERIES not in patients
    assert "P01" not in patients
    assert len(patients) == 9


@pytest.mark.parametrize("method", list(Method))
def test_levels_are_the_truth_of_the_measured_standards(
    series_run: SeriesRun, method: Method
) -> None:
    """Each level is a nominal % above 0 with as many replicates as standards measured by the
    method; LoD is the lowest level from which every level up is detected (>= 95 %)."""
    row = _applied(series_run, method)
    measured = series_run.truth.filter(
        pl.col("methods").str.split(";").list.contains(method.value) & (pl.col("pct_ink") > 0)
    )
    expected = Counter(measured["pct_ink"].to_list())
    levels = json.loads(str(row["levels"]))
    assert {level["nominal_pct"]: level["n"] for level in levels} == expected
    assert row["n_levels"] == len(expected)
    detected_from = [
        level["nominal_pct"]
        for i, level in enumerate(levels)
        if all(up["n_detected"] / up["n"] >= DETECTED for up in levels[i:])
    ]
    assert detected_from, f"{method}: the top level of the series is not detected"
    assert row["lod_pct"] == min(detected_from)
    assert row["loq_pct"] is not None
    assert row["loq_pct"] >= row["lod_pct"]


@pytest.mark.parametrize("method", list(Method))
def test_every_result_carries_the_series_limits(series_run: SeriesRun, method: Method) -> None:
    """STR and qPCR take the series' LoD (qPCR as a floor under the sample LoD), ddPCR as a
    floor under its Poisson limit; each method's rows reach that floor."""
    row = _applied(series_run, method)
    lod, loq = float(str(row["lod_pct"])), float(str(row["loq_pct"]))
    rows = series_run.chimerism.filter(pl.col("method") == method).drop_nulls("lod_pct")
    assert rows.height > 0
    if method == Method.STR:
        assert lod < 5.0  # STR detects the mixtures well below its configured LoQ
        assert set(rows["lod_pct"]) == {lod}
        assert set(rows["loq_pct"]) == {loq}
    else:
        assert rows["lod_pct"].min() == lod
        assert (rows["loq_pct"] >= loq).all()
