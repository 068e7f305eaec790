"""ddPCR arithmetic (methods.md 5.7 fixtures) and per-sample % iNK on synthetic plates."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcr_builders import DdpcrPlate, ddpcr_row

from chimera.calculate.ddpcr import assert_chimerism_plate, compute_ddpcr_chimerism
from chimera.calculate.limits import MARKER_COLUMNS, RESULT_COLUMNS
from chimera.calculate.poisson import (
    clopper_pearson,
    copies_per_ul,
    detection_limit_copies,
    lambda_ci,
    lambda_ci_exact,
    lambda_ci_p_scale,
    lambda_ci_wald,
    limit_of_blank_droplets,
    marker_copies,
    pct_ink_ddpcr,
    poisson_lambda,
    pool_replicates,
    ratio_ci_linear,
    ratio_ci_log,
    zero_positive_upper_lambda,
    zygosity_factor,
)
from chimera.detect import detect
from chimera.errors import NotChimerismAssayError
from chimera.parsers.quantasoft import parse_ddpcr
from chimera.settings import DdpcrSettings

SETTINGS = DdpcrSettings()


def test_poppcr_example_lambda_scale() -> None:
    """popPCR calculateConc(5000 negatives, 20000): λ 1.386294 (1.362289-1.410299)."""
    assert poisson_lambda(15_000, 20_000) == pytest.approx(1.386294, abs=5e-7)
    low, high = lambda_ci_wald(15_000, 20_000)
    assert (round(low, 6), round(high, 6)) == (1.362289, 1.410299)


def test_poppcr_example_copies_per_20_ul() -> None:
    """Copies per 20 µL well 32,618.69 (32,053.87-33,183.51) at 0.85 nL."""
    per_well = [20 * copies_per_ul(x, 0.85) for x in lambda_ci_wald(15_000, 20_000)]
    assert 20 * copies_per_ul(poisson_lambda(15_000, 20_000), 0.85) == pytest.approx(
        32_618.69, abs=0.005
    )
    assert [round(x, 2) for x in per_well] == [32_053.87, 33_183.51]


def test_p_scale_convention_differs_from_lambda_scale() -> None:
    """The p-scale Wald form gives 1.362573-1.410592 on the popPCR input."""
    low, high = lambda_ci_p_scale(15_000, 20_000)
    assert (round(low, 6), round(high, 6)) == (1.362573, 1.410592)
    assert round(low, 4) != round(lambda_ci_wald(15_000, 20_000)[0], 4)


@pytest.fixture(scope="module")
def qx_frame(real_exports: Path) -> pl.DataFrame:
    name = "qxmanager_cnv_SMN2v2_20220630_162335_752.csv"
    data = (real_exports / "ddpcr_biorad" / name).read_bytes()
    return parse_ddpcr(
        detect(data, file_name=name), droplet_volume_nl=SETTINGS.droplet_volume_nl
    ).frame


def _counts(frame: pl.DataFrame, well: str, role: str) -> tuple[int, int, float]:
    row = frame.filter((pl.col("well") == well) & (pl.col("target_role") == role)).row(
        0, named=True
    )
    return row["positives"], row["accepted_droplets"], row["droplet_volume_nl"]


def test_qx_manager_a01_recomputed_from_counts(qx_frame: pl.DataFrame) -> None:
    """A01: λ 0.763620, 898.376 copies/µL (881.254-915.750), reference 910.392 copies/µL;
    Copies/20µLWell 17,967.52 = 20 x 898.376 and Fractional Abundance 49.668 (methods.md 5.1,
    5.2, 5.7)."""
    pos, acc, vol = _counts(qx_frame, "A01", "marker")
    ref_pos, ref_acc, ref_vol = _counts(qx_frame, "A01", "reference")
    assert (pos, acc, ref_pos) == (10_940, 20_486, 11_037)
    lam = poisson_lambda(pos, acc)
    assert round(lam, 6) == 0.763620
    marker = copies_per_ul(lam, vol)
    assert round(marker, 3) == 898.376
    assert round(20 * marker, 2) == 17_967.52
    low, high = (copies_per_ul(x, vol) for x in lambda_ci_p_scale(pos, acc))
    assert (round(low, 3), round(high, 3)) == (881.254, 915.750)
    reference = copies_per_ul(poisson_lambda(ref_pos, ref_acc), ref_vol)
    assert round(reference, 3) == 910.392
    assert round(100 * marker / (marker + reference), 3) == 49.668


def test_qx_manager_a01_ratio_and_cnv(qx_frame: pl.DataFrame) -> None:
    """A01: Ratio 0.986802 (0.960059-1.013545), CNV = 2 x ratio = 1.973603."""
    pos, acc, _ = _counts(qx_frame, "A01", "marker")
    ref_pos, ref_acc, _ = _counts(qx_frame, "A01", "reference")
    ratio = poisson_lambda(pos, acc) / poisson_lambda(ref_pos, ref_acc)
    assert round(ratio, 6) == 0.986802
    assert round(2 * ratio, 6) == 1.973603
    low, high = ratio_ci_linear(pos, acc, ref_pos, ref_acc)
    assert (round(low, 6), round(high, 6)) == (0.960059, 1.013545)
    log_low, log_high = ratio_ci_log(pos, acc, ref_pos, ref_acc)
    assert log_low < ratio < log_high
    assert log_high / ratio == pytest.approx(ratio / log_low, rel=1e-9)


def test_qx_manager_every_called_row_matches_poisson_conf(real_exports: Path) -> None:
    """PoissonConfMin/Max of all 24 called rows are the p-scale Wald bounds to < 1e-7."""
    import csv  # noqa: PLC0415

    path = real_exports / "ddpcr_biorad" / "qxmanager_cnv_SMN2v2_20220630_162335_752.csv"
    rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    called = [r for r in rows if r["PoissonConfMin"]]
    assert len(called) == 24
    for r in called:
        low, high = lambda_ci_p_scale(int(r["Positives"]), int(r["Accepted Droplets"]))
        assert copies_per_ul(low, 0.85) == pytest.approx(float(r["PoissonConfMin"]), rel=1e-7)
        assert copies_per_ul(high, 0.85) == pytest.approx(float(r["PoissonConfMax"]), rel=1e-7)


PMC_TABLE_3 = [
    # droplets, RPP30+, Y+, raw %, Poisson %, λ_ref, λ_Y
    (22_512, 13_184, 7_121, 108.02, 86.32, 0.881028, 0.380266),
    (21_496, 11_256, 914, 16.24, 11.72, 0.741565, 0.043450),
    (16_812, 124, 4, 6.45, 6.43, 0.007403, 0.000238),
]


@pytest.mark.parametrize(("n", "ref", "y", "raw", "poisson", "lam_ref", "lam_y"), PMC_TABLE_3)
def test_pmc7788686_table_3_both_conventions(
    n: int, ref: int, y: int, raw: float, poisson: float, lam_ref: float, lam_y: float
) -> None:
    """Pedini 2021 Table 3: raw 2·Y+/RPP30+ and Poisson 2·λ_Y/λ_ref, with λ values."""
    kw = {"marker_accepted": n, "reference_accepted": n, "zygosity_factor": 2}
    assert round(pct_ink_ddpcr(marker_positives=y, reference_positives=ref, **kw), 2) == poisson
    got_raw = pct_ink_ddpcr(marker_positives=y, reference_positives=ref, convention="raw", **kw)
    assert round(got_raw, 2) == raw
    assert round(poisson_lambda(ref, n), 6) == lam_ref
    assert round(poisson_lambda(y, n), 6) == lam_y


def test_pmc7788686_product_reads_one_marker_copy() -> None:
    """The '100 %' male control (λ_Y/λ_ref 0.43 -> 0.86 copies) carries one Y copy: k = 2."""
    ratio = poisson_lambda(7_121, 22_512) / poisson_lambda(13_184, 22_512)
    assert marker_copies(ratio) == 1
    assert zygosity_factor(marker_copies(ratio)) == 2.0


@pytest.mark.parametrize(
    ("ratio", "copies"),
    [
        (0.986802, 2),  # QX Manager A01: CNV 1.973603
        (0.24, 0),  # 0.48 copies per genome: not a carrier
        (0.25, 1),
        (0.705, 1),  # 1.41 copies: below √2, the log-midpoint of 1 and 2
        (0.71, 2),
        (1.5, 3),
        (2.0, 4),  # a four-copy transgene
        (3.9, 8),
    ],
)
def test_marker_copy_number_from_the_product_ratio(ratio: float, copies: int) -> None:
    """n_M = the integer nearest n_ref·λ_M/λ_ref on a log scale, any n_M >= 1 (methods.md 5.2)."""
    assert marker_copies(ratio) == copies


def test_zygosity_factor_needs_a_copy() -> None:
    """k = n_ref / n_M; a genome without the marker has no k."""
    assert zygosity_factor(4, reference_copies=2) == 0.5
    with pytest.raises(ValueError, match=">= 1 copy"):
        zygosity_factor(0)


def test_zero_positive_upper_bound_quantasoft_m04() -> None:
    """0 of 39,279 droplets -> upper bound 0.09 copies/µL at 0.85 nL (QuantaSoft M04)."""
    upper = zero_positive_upper_lambda(39_279)
    assert upper == pytest.approx(-math.log(0.05) / 39_279)
    assert round(copies_per_ul(upper, 0.85), 2) == 0.09
    assert lambda_ci_exact(0, 39_279) == (0.0, pytest.approx(upper, rel=1e-12))
    assert lambda_ci(0, 39_279) == lambda_ci_exact(0, 39_279)


def test_zero_positive_bound_of_20414_droplets_matches_quantasoft() -> None:
    """C05 NTC: 0 of 20,414 droplets -> QuantaSoft PoissonConfMax 0.17 copies/µL."""
    assert round(copies_per_ul(zero_positive_upper_lambda(20_414), 0.85), 2) == 0.17


def test_clopper_pearson_matches_published_values() -> None:
    """binom.test(1, 10) gives 0.002528579-0.445016117; binom.test(5, 20) 0.08657147-0.49104587."""
    low, high = clopper_pearson(1, 10)
    assert low == pytest.approx(0.002528579, rel=1e-6)
    assert high == pytest.approx(0.445016117, rel=1e-6)
    low, high = clopper_pearson(5, 20)
    assert low == pytest.approx(0.08657147, rel=1e-6)
    assert high == pytest.approx(0.49104587, rel=1e-6)


def test_exact_interval_used_up_to_25_positives() -> None:
    """1-25 positives use the exact interval (non-negative, asymmetric); above, p-scale Wald."""
    low, high = lambda_ci(1, 20_082)
    assert low > 0
    assert high - poisson_lambda(1, 20_082) > poisson_lambda(1, 20_082) - low
    assert lambda_ci(25, 20_000) == lambda_ci_exact(25, 20_000)
    assert lambda_ci(26, 20_000) == lambda_ci_p_scale(26, 20_000)


def test_pooling_quantasoft_member_wells_equals_merged_row(real_exports: Path) -> None:
    """Pooling the 16 member wells of M01 gives the merged row's 2,476 / 319,765."""
    name = "quantasoft_v1.7_merged_wells_20-0109.csv"
    data = (real_exports / "ddpcr_biorad" / name).read_bytes()
    frame = parse_ddpcr(
        detect(data, file_name=name), droplet_volume_nl=SETTINGS.droplet_volume_nl
    ).frame
    hbs = frame.filter(pl.col("target") == "HbS")
    merged = hbs.filter(pl.col("well") == "M01").row(0, named=True)
    members = hbs.filter(pl.col("well").is_in(merged["merged_wells"].split(",")))
    pooled = pool_replicates(members.select("positives", "accepted_droplets").rows())
    assert (pooled.positives, pooled.accepted_droplets, pooled.n_wells) == (2_476, 319_765, 16)
    conc = copies_per_ul(poisson_lambda(pooled.positives, pooled.accepted_droplets), 0.85)
    assert round(conc, 2) == merged["concentration_copies_per_ul"]


def test_poisson_floor_and_the_100_ng_example() -> None:
    """methods.md 4: P(0 copies) = e^-μ, so 95 % detection needs μ >= 3 (e^-3 = 0.0498); at
    100 ng ≈ 15,000 genomes (30,000 RPP30 copies) the floor is 3/15,000 = 0.02 % iNK.

    Through the path that writes the table: a clean baseline (LoB 0 droplets), a heterozygous
    marker (k = 2), the sample's reference at λ 1.5 in 20,000 droplets.
    """
    assert round(math.exp(-3), 4) == 0.0498
    assert detection_limit_copies(lob_droplets=0, expected_false_positives=0.0, min_copies=0) == (
        pytest.approx(-math.log(0.05), rel=1e-9)
    )
    assert SETTINGS.lod_positive_droplets == 3
    plate = DdpcrPlate("plate1")
    droplets = 20_000
    plate.counts("PROD", MARKER, plate.positives(0.75, droplets), plate.positives(1.5, droplets))
    plate.counts("BASE", MARKER, 0, plate.positives(1.5, droplets))
    reference = plate.positives(1.5, droplets)
    plate.counts("S1", MARKER, 0, reference)
    rows = [
        ("PROD", "LOT1", "donor_reference", "LOT1"),
        ("BASE", "P1", "recipient_baseline", None),
        ("S1", "P1", "post_dose", "LOT1"),
    ]
    row, _ = _one_result(plate.frame().lazy(), rows, "S1")
    c_ref = droplets * poisson_lambda(reference, droplets)
    assert c_ref == pytest.approx(30_000, rel=1e-3)
    assert row["result_status"] == "not_detected"
    assert row["lod_pct"] == pytest.approx(100 * 2 * 3 / c_ref, rel=1e-9)
    assert row["lod_pct"] == pytest.approx(0.02, abs=1e-4)
    assert row["ci_high"] == row["lod_pct"]


def test_limit_of_blank_is_poisson_95th_percentile() -> None:
    """LoB droplets: 0 for a clean blank; 95th percentile of Poisson(μ) otherwise."""
    assert limit_of_blank_droplets(0.0) == 0
    assert limit_of_blank_droplets(0.05) == 0  # P(X = 0) = e^-0.05 = 0.951 >= 0.95
    assert limit_of_blank_droplets(0.06) == 1  # e^-0.06 = 0.942 < 0.95
    assert limit_of_blank_droplets(2.0) == 5  # P(X<=4) = 0.947, P(X<=5) = 0.983


# ---------------------------------------------------------------- synthetic duplex plates

MARKER, REFERENCE = "iNK-M1", "RPP30"


def _row(
    plate: str, well: str, sample: str, target: str, pos: int, acc: int, **extra: Any
) -> dict[str, object]:
    return ddpcr_row(plate, well, sample, target, pos, acc, **extra)


class Plate:
    """Build a duplex plate from genome fractions with a seeded binomial droplet simulation."""

    def __init__(self, seed: int, *, lam_ref: float = 0.6, droplets: int = 18_000) -> None:
        self.rng = np.random.default_rng(seed)
        self.lam_ref = lam_ref
        self.droplets = droplets
        self.rows: list[dict[str, object]] = []
        self.n = 0

    def well(
        self,
        sample: str,
        *,
        fraction: float,
        k: int = 2,
        fp_per_droplet: float = 0.0,
        droplets: int | None = None,
        lam_ref: float | None = None,
        sample_type: str = "unknown",
    ) -> str:
        self.n += 1
        name = f"{'ABCDEFGH'[(self.n - 1) % 8]}{(self.n - 1) // 8 + 1:02d}"
        acc = droplets or self.droplets
        lam_r = self.lam_ref if lam_ref is None else lam_ref
        lam_m = fraction * lam_r / k + fp_per_droplet
        pos_m = int(self.rng.binomial(acc, 1 - math.exp(-lam_m)))
        pos_r = int(self.rng.binomial(acc, 1 - math.exp(-lam_r)))
        self.rows.append(_row("plate1", name, sample, MARKER, pos_m, acc, sample_type=sample_type))
        self.rows.append(
            _row("plate1", name, sample, REFERENCE, pos_r, acc, sample_type=sample_type)
        )
        return name

    def frame(self) -> pl.LazyFrame:
        overrides = {"merged_wells": pl.String, "concentration_copies_per_ul": pl.Float64}
        return pl.DataFrame(self.rows, schema_overrides=overrides).lazy()


def _samples(rows: list[tuple[str, str, str, str | None]]) -> pl.LazyFrame:
    return pl.DataFrame(
        rows, schema=["sample_id", "patient_id", "role", "product_lot"], orient="row"
    ).lazy()


TRUTH = {
    "S-0": 0.0,
    "S-0b": 0.0,
    "S-005": 0.05,
    "S-05": 0.5,
    "S-2": 2.0,
    "S-10": 10.0,
    "S-40": 40.0,
}


def _standard_plate(seed: int) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    plate = Plate(seed)
    for _ in range(2):
        plate.well("PROD", fraction=1.0)  # heterozygous marker: λ_M/λ_ref = 0.5
        plate.well("BASE", fraction=0.0)
        plate.well("NTC", fraction=0.0, lam_ref=0.0, sample_type="ntc")
    for sample, pct in TRUTH.items():
        for _ in range(3):
            plate.well(sample, fraction=pct / 100)
    manifest = [
        ("PROD", "LOT1", "donor_reference", "LOT1"),
        ("BASE", "P1", "recipient_baseline", None),
    ]
    manifest += [(s, "P1", "post_dose", "LOT1") for s in TRUTH]
    return plate.frame(), _samples(manifest)


def test_synthetic_plate_recovers_truth_and_never_quantifies_zero() -> None:
    """Known fractions are recovered within 15 %; true zeros are never quantified.

    Whether the CI holds the truth is tested on simulated counts below (99.9 % CIs per sample,
    and >= 90 % coverage of 95 % CIs over many samples).
    """
    wells, samples = _standard_plate(seed=7)
    out = compute_ddpcr_chimerism(wells, samples, settings=SETTINGS)
    assert out.results.schema == pl.Schema(RESULT_COLUMNS)
    assert out.markers.schema == pl.Schema(MARKER_COLUMNS)
    res = {r["sample_id"]: r for r in out.results.iter_rows(named=True)}
    assert set(res) == set(TRUTH)
    for sample in ("S-0", "S-0b"):
        assert res[sample]["result_status"] == "not_detected"
        assert res[sample]["pct_ink"] is None
        assert res[sample]["ci_high"] == res[sample]["lod_pct"]
    for sample in ("S-2", "S-10", "S-40"):
        r = res[sample]
        assert r["result_status"] == "quantified"
        assert r["ci_low"] < r["pct_ink"] < r["ci_high"]
        assert r["pct_ink"] == pytest.approx(TRUTH[sample], rel=0.15)
        assert r["n_informative"] == 1
        assert r["ci_quantile"] == 1.96
        assert r["source_sha256"] == "plate1"
    assert res["S-05"]["result_status"] in ("quantified", "below_loq")
    assert res["S-005"]["result_status"] in ("not_detected", "below_loq")
    # Sample-specific LoD = 100·k·3/C_ref (methods.md 4), C_ref = the reference copies in the
    # pooled wells = N·λ_ref (≈ 3 wells x 18,000 x 0.6); LoQ the same with 16 droplets.
    ref = wells.collect().filter((pl.col("sample_id") == "S-2") & (pl.col("target") == REFERENCE))
    positives, accepted = int(ref["positives"].sum()), int(ref["accepted_droplets"].sum())
    c_ref = accepted * -math.log(1 - positives / accepted)
    assert c_ref == pytest.approx(3 * 18_000 * 0.6, rel=0.02)
    assert res["S-2"]["lod_pct"] == pytest.approx(100 * 2 * 3 / c_ref, rel=1e-9)
    assert res["S-2"]["loq_pct"] == pytest.approx(100 * 2 * 16 / c_ref, rel=1e-9)
    assert all(r["qc_verdict"] == "pass" for r in res.values())


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_synthetic_plate_truth_inside_999_ci(seed: int) -> None:
    """At 99.9 % confidence every detected sample's CI holds the simulated truth."""
    wells, samples = _standard_plate(seed=seed)
    out = compute_ddpcr_chimerism(wells, samples, settings=replace(SETTINGS, confidence=0.999))
    detected = out.results.filter(pl.col("result_status") != "not_detected")
    assert detected.height >= 4
    for r in detected.iter_rows(named=True):
        assert r["ci_low"] <= TRUTH[r["sample_id"]] <= r["ci_high"], r
    zeros = out.results.filter(pl.col("sample_id").is_in(["S-0", "S-0b"]))
    assert set(zeros["result_status"]) == {"not_detected"}


def test_marker_rows_per_well_and_pooled() -> None:
    """Markers frame: one row per well plus one pooled row per marker, counts summed."""
    wells, samples = _standard_plate(seed=3)
    markers = compute_ddpcr_chimerism(wells, samples, settings=SETTINGS).markers
    s10 = markers.filter(pl.col("sample_id") == "S-10")
    assert s10.height == 4
    pooled = s10.filter(pl.col("replicate") == "pooled").row(0, named=True)
    per_well = s10.filter(pl.col("replicate") != "pooled")
    assert pooled["positives"] == per_well["positives"].sum()
    assert pooled["accepted_droplets"] == per_well["accepted_droplets"].sum()
    assert per_well["included"].all()
    assert pooled["sharing"] == "donor_only"
    assert 5 < pooled["pct_ink"] < 15


def test_low_droplet_well_is_excluded_and_all_excluded_fails() -> None:
    """Wells under the droplet minimum are excluded; a sample with none left fails."""
    plate = Plate(11)
    plate.well("PROD", fraction=1.0)
    plate.well("BASE", fraction=0.0)
    plate.well("S1", fraction=0.05)
    short = plate.well("S1", fraction=0.05, droplets=6_000)
    plate.well("S2", fraction=0.05, droplets=6_000)
    manifest = _samples(
        [
            ("PROD", "LOT1", "donor_reference", "LOT1"),
            ("BASE", "P1", "recipient_baseline", None),
            ("S1", "P1", "post_dose", "LOT1"),
            ("S2", "P1", "post_dose", "LOT1"),
        ]
    )
    out = compute_ddpcr_chimerism(plate.frame(), manifest, settings=SETTINGS)
    res = {r["sample_id"]: r for r in out.results.iter_rows(named=True)}
    assert res["S1"]["result_status"] == "quantified"
    assert res["S2"]["result_status"] == "failed"
    assert res["S2"]["qc_verdict"] == "fail"
    assert "6,000 accepted droplets" in res["S2"]["qc_reasons"]
    excluded = out.markers.filter((pl.col("sample_id") == "S1") & (pl.col("replicate") == short))
    assert excluded["included"].to_list() == [False]
    assert "minimum" in excluded["exclusion_reason"][0]


def test_marker_carried_by_patient_is_not_informative() -> None:
    """A marker the patient's baseline carries gives a failed result naming the reason."""
    plate = Plate(5)
    plate.well("PROD", fraction=1.0)
    plate.well("BASE", fraction=1.0)  # patient carries the allele
    plate.well("S1", fraction=0.1)
    manifest = _samples(
        [
            ("PROD", "LOT1", "donor_reference", "LOT1"),
            ("BASE", "P1", "recipient_baseline", None),
            ("S1", "P1", "post_dose", "LOT1"),
        ]
    )
    out = compute_ddpcr_chimerism(plate.frame(), manifest, settings=SETTINGS)
    row = out.results.row(0, named=True)
    assert row["result_status"] == "failed"
    assert "the patient's pre-dose baseline carries it" in row["qc_reasons"]
    assert out.markers["sharing"].to_list() == ["not_informative"]


def test_merged_rows_are_not_double_counted() -> None:
    """Adding a QuantaSoft-style merged row of the member wells leaves the result unchanged."""
    wells, samples = _standard_plate(seed=9)
    frame = wells.collect()
    members = frame.filter(pl.col("sample_id") == "S-10")
    merged = []
    for target in (MARKER, REFERENCE):
        part = members.filter(pl.col("target") == target)
        merged.append(
            _row(
                "plate1",
                "M01",
                "S-10",
                target,
                int(part["positives"].sum()),
                int(part["accepted_droplets"].sum()),
                merged_wells=",".join(part["well"]),
            )
        )
    with_merged = pl.concat([frame, pl.DataFrame(merged, schema=frame.schema)])
    base = compute_ddpcr_chimerism(wells, samples, settings=SETTINGS).results
    again = compute_ddpcr_chimerism(with_merged.lazy(), samples, settings=SETTINGS).results
    assert base.equals(again)


def test_merged_row_alone_is_used_as_one_pooled_well() -> None:
    """A merged row whose member wells are absent is used as one pooled replicate."""
    wells, samples = _standard_plate(seed=9)
    frame = wells.collect()
    base = compute_ddpcr_chimerism(wells, samples, settings=SETTINGS).results
    merged = (
        frame.filter(pl.col("sample_id") == "S-10")
        .group_by("target", maintain_order=True)
        .agg(
            pl.col("positives").sum(),
            pl.col("accepted_droplets").sum(),
            pl.col("well").str.join(","),
        )
    )
    rows = [
        _row(
            "plate1",
            "M01",
            "S-10",
            r["target"],
            r["positives"],
            r["accepted_droplets"],
            merged_wells=r["well"],
        )
        for r in merged.iter_rows(named=True)
    ]
    only_merged = pl.concat(
        [frame.filter(pl.col("sample_id") != "S-10"), pl.DataFrame(rows, schema=frame.schema)]
    )
    again = compute_ddpcr_chimerism(only_merged.lazy(), samples, settings=SETTINGS).results
    pick = pl.col("sample_id") == "S-10"
    assert again.filter(pick)["pct_ink"][0] == pytest.approx(
        base.filter(pick)["pct_ink"][0], rel=1e-12
    )


def test_background_false_positives_raise_the_lob() -> None:
    """With false-positive droplets in blanks, a true zero stays not quantified."""
    plate = Plate(21)
    fp = 5e-5  # ~1 false-positive droplet per 20,000
    plate.well("PROD", fraction=1.0, fp_per_droplet=fp)
    for _ in range(3):
        plate.well("BASE", fraction=0.0, fp_per_droplet=fp)
        plate.well("NTC", fraction=0.0, lam_ref=0.0, fp_per_droplet=fp, sample_type="ntc")
    for sample in ("Z1", "Z2", "Z3", "Z4"):
        for _ in range(3):
            plate.well(sample, fraction=0.0, fp_per_droplet=fp)
    manifest = _samples(
        [("PROD", "LOT1", "donor_reference", "LOT1"), ("BASE", "P1", "recipient_baseline", None)]
        + [(s, "P1", "post_dose", "LOT1") for s in ("Z1", "Z2", "Z3", "Z4")]
    )
    out = compute_ddpcr_chimerism(plate.frame(), manifest, settings=SETTINGS)
    assert set(out.results["result_status"]) <= {"not_detected", "below_loq"}


def test_assert_chimerism_plate_accepts_duplex_and_refuses_reference_only() -> None:
    """A marker + RPP30 plate passes; a reference-only plate is refused."""
    wells, _ = _standard_plate(seed=1)
    assert_chimerism_plate(wells, settings=SETTINGS, file_name="p.csv")
    only_ref = wells.filter(pl.col("target") == REFERENCE)
    with pytest.raises(NotChimerismAssayError, match="no marker target"):
        assert_chimerism_plate(only_ref, settings=SETTINGS, file_name="p.csv")


def test_two_markers_are_pooled_and_spread_reported() -> None:
    """Two informative markers give one pooled estimate and a note with each marker's value."""
    wells, samples = _standard_plate(seed=13)
    frame = wells.collect()
    second = frame.filter(pl.col("target") == MARKER).with_columns(pl.lit("iNK-M2").alias("target"))
    out = compute_ddpcr_chimerism(pl.concat([frame, second]).lazy(), samples, settings=SETTINGS)
    row = out.results.filter(pl.col("sample_id") == "S-10").row(0, named=True)
    single = compute_ddpcr_chimerism(wells, samples, settings=SETTINGS).results
    assert row["n_informative"] == 2
    assert row["pct_ink"] == pytest.approx(
        single.filter(pl.col("sample_id") == "S-10")["pct_ink"][0]
    )
    assert "informative markers: iNK-M1" in row["qc_reasons"]
    assert row["lod_pct"] < single.filter(pl.col("sample_id") == "S-10")["lod_pct"][0]


# Derandomized: a coverage rate is a probabilistic statement, so the examples are fixed to keep
# CI deterministic (a freshly drawn seed can land at 89 % by chance, as a 95 % CI should now and then).
@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_truth_inside_ci_in_at_least_90_percent(seed: int) -> None:
    """Seeded binomial simulation: the 95 % CI covers the true % iNK in >= 90 % of samples."""
    rng = np.random.default_rng(seed)
    plate = Plate(seed, lam_ref=float(rng.uniform(0.05, 1.5)))
    plate.well("PROD", fraction=1.0)
    plate.well("PROD", fraction=1.0)
    plate.well("BASE", fraction=0.0)
    truth = {f"S{i}": float(10 ** rng.uniform(-1.5, 1.7)) for i in range(120)}
    for sample, pct in truth.items():
        for _ in range(int(rng.integers(1, 4))):
            plate.well(sample, fraction=pct / 100)
    manifest = _samples(
        [("PROD", "LOT1", "donor_reference", "LOT1"), ("BASE", "P1", "recipient_baseline", None)]
        + [(s, "P1", "post_dose", "LOT1") for s in truth]
    )
    results = compute_ddpcr_chimerism(plate.frame(), manifest, settings=SETTINGS).results
    covered = [
        r["pct_ink_raw"] is not None
        and r["ci_low"] is not None
        and r["ci_low"] <= truth[r["sample_id"]] <= r["ci_high"]
        for r in results.filter(pl.col("result_status") != "not_detected").iter_rows(named=True)
    ]
    assert len(covered) >= 60
    assert sum(covered) / len(covered) >= 0.90


def test_settings_droplet_minimum_is_used() -> None:
    """Raising the droplet minimum above every well fails every sample."""
    wells, samples = _standard_plate(seed=2)
    strict = replace(SETTINGS, min_accepted_droplets=50_000)
    out = compute_ddpcr_chimerism(wells, samples, settings=strict)
    assert set(out.results["result_status"]) == {"failed"}


def test_singleplex_marker_wells_use_the_sample_reference_wells() -> None:
    """Marker and reference in separate wells: the marker is set against the pooled reference."""
    wells, samples = _standard_plate(seed=4)
    frame = wells.collect()
    split = frame.with_columns(
        pl.when(pl.col("target") == MARKER)
        .then(pl.col("well") + "m")
        .otherwise("well")
        .alias("well")
    )
    duplex = compute_ddpcr_chimerism(wells, samples, settings=SETTINGS).results
    single = compute_ddpcr_chimerism(split.lazy(), samples, settings=SETTINGS).results
    pick = pl.col("sample_id") == "S-10"
    assert single.filter(pick)["pct_ink"][0] == pytest.approx(
        duplex.filter(pick)["pct_ink"][0], rel=1e-9
    )
    no_ref = split.filter(~((pl.col("sample_id") == "S-10") & (pl.col("target") == REFERENCE)))
    failed = compute_ddpcr_chimerism(no_ref.lazy(), samples, settings=SETTINGS).results
    row = failed.filter(pick).row(0, named=True)
    assert row["result_status"] == "failed"
    assert "no reference-gene" in row["qc_reasons"]


# ------------------------------------------------ published numbers through the table's path


def _one_result(
    wells: pl.LazyFrame, rows: list[tuple[str, str, str, str | None]], sample: str
) -> tuple[dict[str, Any], pl.DataFrame]:
    out = compute_ddpcr_chimerism(wells, _samples(rows), settings=SETTINGS)
    found = out.results.filter(pl.col("sample_id") == sample).to_dicts()
    assert len(found) == 1, found
    return found[0], out.markers.filter(pl.col("sample_id") == sample)


def test_qx_manager_a01_ratio_interval_through_the_table(qx_frame: pl.DataFrame) -> None:
    """Well A01 as a sample against the 4-copy SMN2 control as product (n_M = 4, k = 0.5).

    % iNK = 100·0.5·Ratio = 49.3401 and the CI is 50 x PoissonRatioMin/Max (0.960059-1.013545)
    = 48.00295-50.67725 (methods.md 5.3, 5.7). The file has no 0 % sample: a screening
    plate with one is added.
    """
    wells = qx_frame.with_columns(
        target=pl.when(pl.col("target") == "2").then(pl.lit("RPP30")).otherwise("target"),
        sample_id=pl.when(pl.col("well") == "A01")
        .then(pl.lit("A01-SAMPLE"))
        .otherwise("sample_id"),
        source_sha256=pl.lit("qx-plate"),
    )
    baseline = DdpcrPlate("screening-plate")
    baseline.counts("BASELINE", "1", 0, 10_000)
    frame = pl.concat([wells, baseline.frame().select(wells.columns)], how="vertical_relaxed")
    rows = [
        ("SMN2 Control 4 copies", "LOT1", "donor_reference", "LOT1"),
        ("BASELINE", "P1", "recipient_baseline", None),
        ("A01-SAMPLE", "P1", "post_dose", "LOT1"),
    ]
    row, markers = _one_result(frame.lazy(), rows, "A01-SAMPLE")
    assert row["result_status"] == "quantified"
    assert row["pct_ink"] == pytest.approx(50 * 0.986802, abs=5e-5)
    assert row["ci_low"] == pytest.approx(50 * 0.960059, abs=5e-5)
    assert row["ci_high"] == pytest.approx(50 * 1.013545, abs=5e-5)
    assert row["ci_quantile"] == 1.96
    pooled = markers.filter(pl.col("replicate") == "pooled").row(0, named=True)
    assert pooled["copies_per_ul"] == pytest.approx(898.376, abs=5e-4)


def test_poppcr_interval_through_the_table() -> None:
    """popPCR's input (15,000 of 20,000 positive) for marker and reference, k = 1: 100 %.

    Lower bound 100·(1 - 1.96·√2·SE/λ) with SE = (1.410592 - 1.362573)/(2·1.96), the
    p-scale interval methods.md 5.7 gives for that input, and λ = 1.386294.
    """
    plate = DdpcrPlate("plate1")
    plate.counts("PROD", MARKER, 15_000, 15_000)  # ratio 1: two copies, k = 1
    plate.counts("BASE", MARKER, 0, 15_000)
    plate.counts("S1", MARKER, 15_000, 15_000)
    rows = [
        ("PROD", "LOT1", "donor_reference", "LOT1"),
        ("BASE", "P1", "recipient_baseline", None),
        ("S1", "P1", "post_dose", "LOT1"),
    ]
    row, markers = _one_result(plate.frame().lazy(), rows, "S1")
    se = (1.410592 - 1.362573) / (2 * 1.96)
    assert row["pct_ink"] == pytest.approx(100.0, abs=1e-9)
    assert row["ci_low"] == pytest.approx(100 * (1 - 1.96 * math.sqrt(2) * se / 1.386294), abs=1e-3)
    assert row["ci_high"] == 100.0  # 102.45 before the table clamps to the 0-100 scale
    pooled = markers.filter(pl.col("replicate") == "pooled").row(0, named=True)
    assert 20 * pooled["copies_per_ul"] == pytest.approx(32_618.69, abs=0.005)


def test_pmc7788686_table_3_through_the_table() -> None:
    """Pedini 2021 Table 3 counts: the '100 %' control is the product (reads 0.863 copies).

    control 15 %: 2·λ_Y/λ_ref = 11.72 %, control-normalised 11.72/0.8632 = 13.58 %;
    LabTurbo24 10 %: 6.43 % from 4 Y droplets, LoD = 3 copies / (λ_ref·N/2) = 4.82 %
    (methods.md 5.7: "~124 reference copies -> 3 Y copies ≈ 4.8 %"), below the LoQ.
    """
    plate = DdpcrPlate("plate1")
    plate.counts("CONTROL-100", MARKER, 7_121, 13_184, droplets=22_512)
    plate.counts("FEMALE", MARKER, 0, 12_000, droplets=22_000)
    plate.counts("CONTROL-15", MARKER, 914, 11_256, droplets=21_496)
    plate.counts("LABTURBO-10", MARKER, 4, 124, droplets=16_812)
    rows = [
        ("CONTROL-100", "LOT1", "donor_reference", "LOT1"),
        ("FEMALE", "P1", "recipient_baseline", None),
        ("CONTROL-15", "P1", "post_dose", "LOT1"),
        ("LABTURBO-10", "P1", "post_dose", "LOT1"),
    ]
    row, markers = _one_result(plate.frame().lazy(), rows, "CONTROL-15")
    assert round(row["pct_ink"], 2) == 11.72
    pooled = markers.filter(pl.col("replicate") == "pooled").row(0, named=True)
    assert pooled["pct_ink_control_normalised"] == pytest.approx(11.72 / 0.8632, abs=0.01)
    assert "control-normalised 13.6 %" in row["qc_reasons"]
    low, _ = _one_result(plate.frame().lazy(), rows, "LABTURBO-10")
    assert round(low["pct_ink"], 2) == 6.43
    assert low["lod_pct"] == pytest.approx(100 * 3 / (0.007403 * 16_812 / 2), rel=1e-3)
    assert low["lod_pct"] == pytest.approx(4.82, abs=0.01)
    assert low["result_status"] == "below_loq"
    assert low["ci_low"] < 6.43 < low["ci_high"]
