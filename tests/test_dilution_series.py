"""A dilution series of the product sets each method's LoD/LoQ (issue 4: limits from data)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from chimera.poll import ingest_paths
from chimera.settings import Settings


def test_dilution_series_limits_replace_the_configured_ones(
    sample_data_path: Path, tmp_path: Path
) -> None:
    """P01's samples re-declared as dilution standards (nominal = truth) give per-method limits
    that every patient's results then carry; the series itself is not a patient."""
    truth = pl.read_csv(
        sample_data_path / "truth" / "truth.csv",
        columns=["sample_id", "pct_ink"],
        schema_overrides={"pct_ink": pl.Float64},
    )
    manifest = pl.read_csv(sample_data_path / "manifest.csv", infer_schema_length=0)
    series = manifest.filter(pl.col("patient_id") == "P01").join(truth, on="sample_id", how="left")
    series = series.with_columns(
        patient_id=pl.lit("DIL-1"),
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
    files = [drop / "manifest.csv", sample_data_path / "infusion_log.xlsx"]
    files += [
        p for p in sorted(sample_data_path.glob("*/*")) if p.parent.name in {"str", "qpcr", "ddpcr"}
    ]
    settings = Settings().with_home(tmp_path / "home")
    clock = iter(datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(10_000))
    ingest_paths(files, settings=settings, clock=lambda: next(clock), move=False)

    limits = pl.read_parquet(settings.warehouse / "assay_limits" / "*.parquet")
    assert set(limits["method"]) == {"STR", "qPCR", "ddPCR"}
    assert set(limits["series_id"]) == {"DIL-1"}
    assert (limits["n_levels"] > 20).all()
    chimerism = pl.read_parquet(settings.warehouse / "chimerism" / "*.parquet")
    assert "DIL-1" not in set(chimerism["patient_id"])
    assert "P01" not in set(chimerism["patient_id"])
    for row in limits.filter(pl.col("applied")).iter_rows(named=True):
        lod = row["lod_pct"]
        assert lod is not None
        rows = chimerism.filter(pl.col("method") == row["method"])
        if row["method"] == "ddPCR":
            assert (rows["lod_pct"] >= lod - 1e-12).all()  # a floor under the Poisson LoD
        elif row["method"] == "STR":
            assert set(rows["lod_pct"]) == {lod}
        else:
            assert (rows["lod_pct"] >= lod - 1e-12).all()
    str_row = limits.filter(pl.col("method") == "STR").row(0, named=True)
    assert str_row["lod_pct"] < 5.0  # STR detects the mixtures well below its configured LoQ
