"""STR chimerism arithmetic against methods.md section 2 (2.2 formulas, 2.7 aggregation, 2.8)."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from chimera.calculate.limits import MARKER_COLUMNS, RESULT_COLUMNS
from chimera.calculate.stats import t_quantile
from chimera.calculate.str_aggregate import aggregate_loci, aggregate_loci_two_sd
from chimera.calculate.str_chimerism import (
    SharingPlan,
    classify_sharing,
    compute_str_chimerism,
    locus_pct_ink,
    stutter_position_alleles,
)
from chimera.calculate.str_profiles import (
    call_genotype,
    filtered_reference_peaks,
    repeat_unit_bp,
    shift_allele,
)
from chimera.calculate.stutter import LocusStutter, correct_stutter
from chimera.detect import detect
from chimera.parsers.genemapper import parse_genemapper
from chimera.settings import StrSettings

SETTINGS = StrSettings()
UNCORRECTED = replace(SETTINGS, stutter_correction=False)
"""Hand-built and published (Rchimerism test_chiSD.R) cases are computed without stutter
correction; their alleles sit one repeat apart, so the default would correct them (see
tests/unit/test_str_stutter.py for the corrected expectations)."""
RCHIM_MARKERS = [
    "D3S1358", "TH01", "D21S11", "D18S51", "Penta E", "D5S818", "D13S317", "D7S820",
    "D16S539", "CSF1PO", "Penta D", "vWA", "D8S1179", "TPOX", "FGA",
]  # fmt: skip


def _peaks(sample_id: str, loci: dict[str, dict[str, float]]) -> pl.DataFrame:
    """StrPeaks rows (+ source_sha256) with area = the given signal, height = area / 6."""
    rows = [
        (sample_id, marker, allele, 100.0 + i, signal / 6, signal, "B", i + 2, "sha")
        for i, (marker, allele, signal) in enumerate(
            (m, a, s) for m, alleles in loci.items() for a, s in alleles.items()
        )
    ]
    schema = {
        "sample_id": pl.String,
        "marker": pl.String,
        "allele": pl.String,
        "size_bp": pl.Float64,
        "height_rfu": pl.Float64,
        "area_rfu": pl.Float64,
        "dye": pl.String,
        "source_row": pl.Int32,
        "source_sha256": pl.String,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _reference(genotype: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    return {m: {a: 2000.0 / len(alleles) for a in alleles} for m, alleles in genotype.items()}


SAMPLES = pl.DataFrame(
    {
        "sample_id": ["INK", "PRE", "S1"],
        "patient_id": ["LOT1", "P1", "P1"],
        "role": ["donor_reference", "recipient_baseline", "post_dose"],
        "product_lot": ["LOT1", "LOT1", "LOT1"],
    }
)


def _run(
    donor: dict[str, list[str]],
    recipient: dict[str, list[str]],
    sample: dict[str, dict[str, float]],
    settings: StrSettings = SETTINGS,
) -> tuple[dict[str, Any], pl.DataFrame]:
    peaks = pl.concat(
        [
            _peaks("INK", _reference(donor)),
            _peaks("PRE", _reference(recipient)),
            _peaks("S1", sample),
        ]
    )
    out = compute_str_chimerism(peaks.lazy(), SAMPLES.lazy(), settings=settings)
    assert out.results.height == 1
    return out.results.row(0, named=True), out.markers


def _rchimerism(real_exports: Path) -> pl.DataFrame:
    folder = real_exports / "genemapper"
    frames = []
    for sample_id, name in [
        ("INK", "rchimerism_single_donor_ddata_donor.txt"),
        ("PRE", "rchimerism_single_donor_rdata_recipient.txt"),
        ("S1", "rchimerism_single_donor_sdata_posttransplant.txt"),
    ]:
        frame = parse_genemapper(detect((folder / name).read_bytes(), file_name=name)).frame
        frames.append(frame.with_columns(sample_id=pl.lit(sample_id), source_sha256=pl.lit("x")))
    return pl.concat(frames)


def _genotype_dict(frame: pl.DataFrame) -> dict[str, set[str]]:
    genotype: dict[str, set[str]] = {}
    for marker, allele in frame.select("marker", "allele").iter_rows():
        genotype.setdefault(marker, set()).add(allele)
    return genotype


# --- 2.8 A: Rchimerism bundled single-donor example ------------------------------------------

RCHIM_AREA_PCT = {
    "D3S1358": ("1", 100.00),
    "TH01": ("221", 100.00),
    "D21S11": ("211", 99.07),
    "D18S51": ("121", 100.00),
    "Penta E": ("221", 100.00),
    "D5S818": ("121", 100.00),
    "D13S317": ("221", 100.00),
    "D7S820": ("1", 71.99),
    "D16S539": ("1", 100.00),
    "Penta D": ("121", 100.00),
}
RCHIM_IDENTICAL = {"CSF1PO", "vWA", "D8S1179", "TPOX", "FGA"}


def test_rchimerism_reference_genotypes(real_exports: Path) -> None:
    """Area-filtered references match methods.md 2.8 A (OL dropped before the 1/2-max filter)."""
    peaks = _rchimerism(real_exports)
    donor = _genotype_dict(
        call_genotype(
            peaks.filter(pl.col("sample_id") == "INK").lazy(), settings=SETTINGS
        ).collect()
    )
    recipient = _genotype_dict(
        call_genotype(
            peaks.filter(pl.col("sample_id") == "PRE").lazy(), settings=SETTINGS
        ).collect()
    )
    assert donor["D3S1358"] == {"14", "15"}
    assert donor["D21S11"] == {"28", "30"}
    assert donor["D18S51"] == {"19"}  # allele 10 (21,739 vs 84,939) removed: pull-up
    assert donor["D7S820"] == {"8", "13"}
    assert donor["D16S539"] == {"11"}  # kept although an OL peak of 84,145 sits beside it
    assert donor["FGA"] == {"21", "23"}  # allele 20 (area 8,712 vs 30,650) removed
    assert recipient["D3S1358"] == {"13", "16"}
    assert recipient["D7S820"] == {"10"}
    assert recipient["D21S11"] == {"28"}
    assert set(donor) == set(recipient) == set(RCHIM_MARKERS)
    for marker in RCHIM_MARKERS:
        expected_code = RCHIM_AREA_PCT.get(marker, ("0", None))[0]
        assert classify_sharing(donor[marker], recipient[marker]) == expected_code, marker
    removed = filtered_reference_peaks(
        peaks.filter(pl.col("sample_id") == "INK").lazy(), settings=SETTINGS
    ).collect()
    d18_10 = removed.filter((pl.col("marker") == "D18S51") & (pl.col("allele") == "10"))
    assert d18_10["removal_reason"].to_list() == [
        "area not above 0.5 x the marker's largest called peak"
    ]
    assert removed.filter(pl.col("allele") == "OL")["removal_reason"].unique().to_list() == [
        "non-numeric call"
    ]


def test_rchimerism_example_area(real_exports: Path) -> None:
    """The bundled example reproduces Rchimerism: 99.90 %, SD 0.31, CV 0.0031, D7S820 out."""
    peaks = _rchimerism(real_exports)
    out = compute_str_chimerism(peaks.lazy(), SAMPLES.lazy(), settings=SETTINGS)
    markers = out.markers
    assert markers.columns == list(MARKER_COLUMNS)
    assert out.results.columns == list(RESULT_COLUMNS)
    informative = markers.filter(pl.col("sharing") != "0")
    assert set(informative["marker"]) == set(RCHIM_AREA_PCT)
    for marker, code, pct in informative.select("marker", "sharing", "pct_ink").iter_rows():
        assert (code, round(pct, 2)) == RCHIM_AREA_PCT[marker], marker
    identical = markers.filter(pl.col("sharing") == "0")
    assert set(identical["marker"]) == RCHIM_IDENTICAL
    assert identical["pct_ink"].null_count() == len(RCHIM_IDENTICAL)
    assert set(identical["exclusion_reason"]) == {"not informative"}
    excluded = markers.filter(pl.col("exclusion_reason") == "outlier")
    assert excluded["marker"].to_list() == ["D7S820"]
    d21 = markers.filter(pl.col("marker") == "D21S11").row(0, named=True)
    assert d21["pct_ink"] == pytest.approx(100 * 2 * 4948 / (4948 + 5041))
    assert d21["donor_alleles"] == "28/30"
    assert d21["recipient_alleles"] == "28"

    result = out.results.row(0, named=True)
    assert result["n_informative"] == 10
    assert result["pct_ink"] == pytest.approx(99.90, abs=0.005)
    assert result["result_status"] == "quantified"
    assert "D7S820" in result["qc_reasons"]

    values = informative.sort("marker")["pct_ink"].to_list()
    assert statistics.fmean(values) == pytest.approx(97.11, abs=0.005)
    assert statistics.stdev(values) == pytest.approx(8.83, abs=0.005)
    two_sd = aggregate_loci_two_sd(values)
    robust = aggregate_loci(values, mad_factor=3.0, delta_pct=5.0)
    for agg in (two_sd, robust):
        assert agg.n_excluded == 1
        assert agg.mean_pct == pytest.approx(99.90, abs=0.005)
        assert agg.sd_pct == pytest.approx(0.31, abs=0.005)
        assert agg.cv == pytest.approx(0.0031, abs=0.00005)
        assert agg.median_pct == 100.0
    # 95 % CI: mean +/- t(0.975, 8) * SD / sqrt(9)
    half = 2.306 * robust.sd_pct / 3  # type: ignore[operator]
    assert result["ci_low"] == pytest.approx(robust.mean_pct - half, abs=1e-3)  # type: ignore[operator]
    assert result["ci_high"] == 100.0  # clamped


def test_rchimerism_example_height_variant(real_exports: Path) -> None:
    """Area-filtered references with sample heights give 99.69 % / SD 0.93 after exclusion."""
    peaks = _rchimerism(real_exports)
    area = SETTINGS
    donor = _genotype_dict(
        call_genotype(peaks.filter(pl.col("sample_id") == "INK").lazy(), settings=area).collect()
    )
    recipient = _genotype_dict(
        call_genotype(peaks.filter(pl.col("sample_id") == "PRE").lazy(), settings=area).collect()
    )
    sample = peaks.filter(
        (pl.col("sample_id") == "S1") & pl.col("allele").str.contains(r"^\d+(\.\d+)?$")
    )
    heights: dict[str, dict[str, float]] = {}
    for marker, allele, height in sample.select("marker", "allele", "height_rfu").iter_rows():
        heights.setdefault(marker, {})[allele] = height
    per_locus = {}
    for marker in RCHIM_MARKERS:
        call = locus_pct_ink(donor[marker], recipient[marker], heights.get(marker, {}))
        if call.pct_ink_raw is not None:
            per_locus[marker] = call.pct_ink_raw
    assert len(per_locus) == 10
    assert per_locus["D21S11"] == pytest.approx(97.22, abs=0.005)
    assert per_locus["D7S820"] == pytest.approx(89.67, abs=0.005)
    values = list(per_locus.values())
    assert statistics.fmean(values) == pytest.approx(98.69, abs=0.005)
    assert statistics.stdev(values) == pytest.approx(3.29, abs=0.005)
    for agg in (
        aggregate_loci_two_sd(values),
        aggregate_loci(values, mad_factor=3.0, delta_pct=5.0),
    ):
        assert agg.mean_pct == pytest.approx(99.69, abs=0.005)
        assert agg.sd_pct == pytest.approx(0.93, abs=0.005)
        assert agg.n_excluded == 1


def test_height_filter_changes_fga_genotype(real_exports: Path) -> None:
    """Filtering references on height keeps donor FGA 20, making FGA a 0 % fallback locus."""
    peaks = _rchimerism(real_exports)
    height = replace(SETTINGS, signal="height")
    donor = _genotype_dict(
        call_genotype(peaks.filter(pl.col("sample_id") == "INK").lazy(), settings=height).collect()
    )
    assert donor["FGA"] == {"20", "21", "23"}
    out = compute_str_chimerism(peaks.lazy(), SAMPLES.lazy(), settings=height)
    fga = out.markers.filter(pl.col("marker") == "FGA").row(0, named=True)
    assert (fga["sharing"], fga["pct_ink"], fga["exclusion_reason"]) == ("fallback", 0.0, "outlier")
    result = out.results.row(0, named=True)
    assert result["n_informative"] == 11
    assert result["pct_ink"] == pytest.approx(99.69, abs=0.005)


# --- 2.8 B: synthetic configuration cases ----------------------------------------------------


@pytest.mark.parametrize(
    ("donor", "recipient", "signals", "code", "expected"),
    [
        ({"14", "16"}, {"14"}, {"14": 700, "16": 300}, "211", 60.0),
        ({"14", "16"}, {"14", "18"}, {"14": 500, "16": 400, "18": 600}, "221", 40.0),
        ({"14"}, {"14", "18"}, {"14": 800, "18": 200}, "121", 60.0),
        ({"12", "14", "16"}, {"14"}, {"12": 200, "14": 500, "16": 300}, "fallback", 50.0),
        ({"14", "16"}, {"14", "16"}, {"14": 500, "16": 500}, "0", None),
        ({"14", "15"}, {"13", "16"}, {"14": 300, "15": 300, "13": 200, "16": 200}, "1", 60.0),
        ({"11"}, {"10"}, {"11": 250, "10": 750}, "1", 25.0),
        ({"8", "13"}, {"10"}, {"8": 8218, "10": 5730, "13": 6509}, "1", 100 * 14727 / 20457),
    ],
)
def test_locus_formulas(
    donor: set[str],
    recipient: set[str],
    signals: dict[str, float],
    code: str,
    expected: float | None,
) -> None:
    """Each sharing configuration uses its methods.md 2.2 formula (Rchimerism test_chiSD.R)."""
    call = locus_pct_ink(donor, recipient, signals)
    assert call.sharing == code
    if expected is None:
        assert call.pct_ink_raw is None
    else:
        assert call.pct_ink_raw == pytest.approx(expected)


@pytest.mark.parametrize(
    ("donor", "recipient", "sample", "expected"),
    [
        ({"D8": ["14", "16"]}, {"D8": ["14"]}, {"D8": {"14": 700, "16": 300}}, 60.0),
        (
            {"D8": ["14", "16"]},
            {"D8": ["14", "18"]},
            {"D8": {"14": 500, "16": 400, "18": 600}},
            40.0,
        ),
        ({"D8": ["14"]}, {"D8": ["14", "18"]}, {"D8": {"14": 800, "18": 200}}, 60.0),
        (
            {"D8": ["12", "14", "16"]},
            {"D8": ["14"]},
            {"D8": {"12": 200, "14": 500, "16": 300}},
            50.0,
        ),
    ],
)
def test_configuration_cases_end_to_end(
    donor: dict[str, list[str]],
    recipient: dict[str, list[str]],
    sample: dict[str, dict[str, float]],
    expected: float,
) -> None:
    """The 2.8 B cases give the published % through the whole calculation (1 locus = review)."""
    result, markers = _run(donor, recipient, sample)
    assert result["pct_ink"] == pytest.approx(expected)
    assert result["n_informative"] == 1
    assert result["qc_verdict"] == "review"
    assert "only 1 informative" in result["qc_reasons"]
    assert markers["included"].to_list() == [True]


def test_identical_genotypes_fail() -> None:
    """Identical genotypes at every locus give no estimate: failed, never a bare 0."""
    result, markers = _run(
        {"D8": ["14", "16"], "TH01": ["6"]},
        {"D8": ["14", "16"], "TH01": ["6"]},
        {"D8": {"14": 500, "16": 500}, "TH01": {"6": 900}},
    )
    assert result["result_status"] == "failed"
    assert result["qc_verdict"] == "fail"
    assert result["pct_ink"] is None
    assert result["n_informative"] == 0
    assert set(markers["sharing"]) == {"0"}
    assert markers["pct_ink"].null_count() == 2


def _seven_221_loci() -> tuple[
    dict[str, list[str]], dict[str, list[str]], dict[str, dict[str, float]]
]:
    donor, recipient, sample = {}, {}, {}
    for i in range(7):
        marker = f"L{i}"
        donor[marker] = ["10", "11"]
        recipient[marker] = ["10", "12"]
        d_only, r_only = (950.0, 50.0) if i == 6 else (500.0, 500.0)
        sample[marker] = {"10": 1000.0, "11": d_only, "12": r_only}
    return donor, recipient, sample


def test_outlier_case_seven_loci() -> None:
    """Six 221 loci at 50 % plus one at 95 %: the 95 % locus is excluded, mean 50 %."""
    donor, recipient, sample = _seven_221_loci()
    calls = [locus_pct_ink(donor[m], recipient[m], sample[m]) for m in donor]
    values = [c.pct_ink_raw for c in calls if c.pct_ink_raw is not None]
    assert values == [50.0] * 6 + [95.0]
    mean = statistics.fmean(values)
    z = (95.0 - mean) / statistics.stdev(values)
    assert z == pytest.approx((7 - 1) / math.sqrt(7))  # Samuelson's bound, 2.268
    two_sd = aggregate_loci_two_sd(values)
    assert two_sd.excluded == (False,) * 6 + (True,)
    assert two_sd.mean_pct == 50.0
    result, markers = _run(donor, recipient, sample, UNCORRECTED)
    assert result["pct_ink"] == 50.0
    assert result["qc_verdict"] == "pass"
    assert markers.filter(pl.col("exclusion_reason") == "outlier")["marker"].to_list() == ["L6"]
    assert result["ci_low"] == result["ci_high"] == 50.0  # SD 0 over retained loci


@pytest.mark.parametrize("unknown", ["99", "12.1"])
def test_unknown_allele_ignored_and_flagged(unknown: str) -> None:
    """An allele in neither genotype leaves the estimate as for the clean sample, with review."""
    donor = {"D8": ["14", "16"], "TH01": ["6", "7"], "FGA": ["20"]}
    recipient = {"D8": ["14"], "TH01": ["8", "9"], "FGA": ["22"]}
    clean = {
        "D8": {"14": 700.0, "16": 300.0},
        "TH01": {"6": 300.0, "7": 300.0, "8": 200.0, "9": 200.0},
        "FGA": {"20": 600.0, "22": 400.0},
    }
    noisy = {**clean, "D8": {**clean["D8"], unknown: 250.0}}
    clean_result, _ = _run(donor, recipient, clean, UNCORRECTED)
    noisy_result, noisy_markers = _run(donor, recipient, noisy, UNCORRECTED)
    assert clean_result["pct_ink"] == pytest.approx(60.0)
    assert noisy_result["pct_ink"] == pytest.approx(clean_result["pct_ink"])
    assert clean_result["qc_verdict"] == "pass"
    assert noisy_result["qc_verdict"] == "review"
    assert "possible contamination or sample swap" in noisy_result["qc_reasons"]
    assert f"D8 {unknown}" in noisy_result["qc_reasons"]
    d8 = noisy_markers.filter(pl.col("marker") == "D8").row(0, named=True)
    assert d8["signal_total"] == 1000.0  # the unknown peak is not in the denominator


def test_small_unknown_peak_is_not_contamination() -> None:
    """An unexpected peak below min_unexpected_allele_fraction does not trigger review."""
    donor = {"D8": ["14", "16"], "TH01": ["6", "7"], "FGA": ["20"]}
    recipient = {"D8": ["14"], "TH01": ["8", "9"], "FGA": ["22"]}
    sample = {
        "D8": {"14": 700.0, "16": 300.0, "15": 40.0},
        "TH01": {"6": 300.0, "7": 300.0, "8": 200.0, "9": 200.0},
        "FGA": {"20": 600.0, "22": 400.0},
    }
    result, _ = _run(donor, recipient, sample)
    assert result["qc_verdict"] == "pass"


# --- 2.8 C: Tübingen formula set (recipient share) -------------------------------------------


def test_tuebingen_shared_allele_excluded() -> None:
    """(1) %R = 100 A / (A + C) with the shared allele ignored."""
    a, c = 300.0, 700.0
    call = locus_pct_ink({"10", "11"}, {"10", "12"}, {"10": 5000.0, "11": c, "12": a})
    assert 100.0 - call.pct_ink_raw == pytest.approx(100 * a / (a + c))  # type: ignore[operator]


def test_tuebingen_no_shared_allele() -> None:
    """(2) %R = 100 (A + B) / ((C + D) + (A + B))."""
    a, b, c, d = 120.0, 180.0, 400.0, 300.0
    call = locus_pct_ink({"13", "14"}, {"9", "10"}, {"9": a, "10": b, "13": c, "14": d})
    assert 100.0 - call.pct_ink_raw == pytest.approx(100 * (a + b) / (c + d + a + b))  # type: ignore[operator]


def test_tuebingen_homozygote_vs_heterozygote() -> None:
    """(3) %R = 100 * 2A / (A + B), A = unshared allele of the (recipient) heterozygote."""
    a, b = 150.0, 850.0
    call = locus_pct_ink({"7"}, {"7", "9"}, {"9": a, "7": b})
    assert call.sharing == "121"
    assert 100.0 - call.pct_ink_raw == pytest.approx(100 * 2 * a / (a + b))  # type: ignore[operator]
    # Same algebra for the donor as the heterozygote (211): the donor share.
    call = locus_pct_ink({"7", "9"}, {"7"}, {"9": a, "7": b})
    assert call.pct_ink_raw == pytest.approx(100 * 2 * a / (a + b))


# --- 2.7: aggregation and Samuelson's bound --------------------------------------------------


@pytest.mark.parametrize(("n", "bound"), [(3, 1.155), (4, 1.5), (5, 1.789), (6, 2.041), (7, 2.268)])
def test_samuelson_bounds_of_methods_md_decide_the_two_sd_rule(n: int, bound: float) -> None:
    """methods.md 2.7: the largest possible z is (n - 1)/sqrt(n) = 1.155, 1.5, 1.789, 2.041,
    2.268 for n = 3..7, reached by n - 1 equal loci and one outlier; so the 2-SD rule can
    drop the outlier only from n = 6 on, while the robust rule drops it at every n."""
    values = [50.0] * (n - 1) + [95.0]
    z = (95.0 - statistics.fmean(values)) / statistics.stdev(values)
    assert z == pytest.approx((n - 1) / math.sqrt(n))
    assert round(z, 3) == bound
    assert aggregate_loci_two_sd(values).excluded == (False,) * (n - 1) + (n >= 6,)
    robust = aggregate_loci(values, mad_factor=3.0, delta_pct=5.0)
    assert robust.excluded == (False,) * (n - 1) + (True,)
    assert robust.mean_pct == 50.0
    assert robust.n_informative == n


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=2, max_size=12))
@example([43.089423809709004] * 3)  # fmean is 7e-15 above the loci, SD exactly 0
def test_two_sd_rule_never_excludes_at_five_loci_or_fewer(values: list[float]) -> None:
    """Samuelson (methods.md 2.7): max |f_i - mean| / SD <= (n - 1) / sqrt(n) < 2 for n <= 5,
    so the Rchimerism rule excludes nothing there; at any n it drops exactly the loci beyond
    2 SD of the all-loci mean and reports the mean of the others."""
    agg = aggregate_loci_two_sd(values)
    n = len(values)
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    beyond = tuple(sd > 0 and abs(v - mean) > 2 * sd for v in values)
    assert agg.n_informative == n
    assert agg.excluded == beyond
    assert agg.n_excluded == sum(beyond)
    if n <= 5:
        assert agg.n_excluded == 0
    if sd > 1e-6:
        assert max(abs(v - mean) for v in values) / sd <= (n - 1) / math.sqrt(n) + 1e-9
    kept = [v for v, out in zip(values, beyond, strict=True) if not out]
    assert agg.mean_pct == pytest.approx(statistics.fmean(kept))


def test_robust_rule_uses_mad_when_loci_are_spread() -> None:
    """With real spread the threshold is k * 1.4826 * MAD, not delta."""
    values = [10.0, 20.0, 30.0, 40.0, 50.0, 200.0]
    # median 35, MAD 15 -> threshold 66.7: only 200 (165 away) is excluded
    agg = aggregate_loci(values, mad_factor=3.0, delta_pct=5.0)
    assert agg.excluded == (False,) * 5 + (True,)
    assert agg.median_pct == 35.0
    assert agg.mean_pct == 30.0


@pytest.mark.parametrize(("values", "flag"), [([40.0, 60.0], True), ([50.0, 52.0], False)])
def test_two_loci_never_excluded_but_flagged(values: list[float], flag: bool) -> None:
    """With n <= 2 nothing is excluded; a gap above delta is flagged."""
    agg = aggregate_loci(values, mad_factor=3.0, delta_pct=5.0)
    assert agg.n_excluded == 0
    assert agg.spread_flag is flag
    assert agg.mean_pct == statistics.fmean(values)


def test_t_interval() -> None:
    """The CI is mean +/- t(0.975, n-1) * SD / sqrt(n) over retained loci."""
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert t_quantile(0.975, 30) == pytest.approx(2.042272, abs=1e-5)
    assert t_quantile(0.025, 5) == pytest.approx(-2.570582, abs=1e-5)
    donor = {"A": ["10"], "B": ["10"], "C": ["10"]}
    recipient = {"A": ["11"], "B": ["11"], "C": ["11"]}
    sample = {
        "A": {"10": 40.0, "11": 60.0},
        "B": {"10": 50.0, "11": 50.0},
        "C": {"10": 60.0, "11": 40.0},
    }
    result, _ = _run(donor, recipient, sample, UNCORRECTED)
    half = 4.302653 * 10.0 / math.sqrt(3)
    assert result["pct_ink"] == pytest.approx(50.0)
    assert result["ci_low"] == pytest.approx(50.0 - half, abs=1e-4)
    assert result["ci_high"] == pytest.approx(50.0 + half, abs=1e-4)
    assert result["qc_verdict"] == "pass"


# --- stutter ---------------------------------------------------------------------------------


def test_stutter_correction_removes_back_stutter() -> None:
    """An iNK-only allele at n-1 of a patient allele loses SR x the parent signal (2.6)."""
    donor = {"A": ["8"], "B": ["20"], "C": ["30"]}
    recipient = {"A": ["9"], "B": ["21"], "C": ["31"]}
    sample = {
        m: {d[0]: 100.0, r[0]: 1000.0}
        for (m, d), r in zip(donor.items(), recipient.values(), strict=True)
    }
    plain, _ = _run(donor, recipient, sample, UNCORRECTED)
    assert plain["result_status"] == "quantified"
    assert plain["pct_ink"] == pytest.approx(100 * 100 / 1100)
    assert "stutter position" in plain["qc_reasons"]
    assert "not stutter-corrected" in plain["qc_reasons"]
    corrected, markers = _run(
        donor, recipient, sample, replace(SETTINGS, default_stutter_ratio=0.1)
    )
    assert corrected["result_status"] == "not_detected"
    assert corrected["pct_ink"] is None
    assert markers["signal_ink"].to_list() == [0.0, 0.0, 0.0]
    assert markers["stutter_ratio"].to_list() == [0.1, 0.1, 0.1]
    partial, _ = _run(donor, recipient, sample, replace(SETTINGS, default_stutter_ratio=0.05))
    assert partial["pct_ink"] == pytest.approx(100 * 50 / 1050)
    only_a = replace(SETTINGS, stutter_ratios={"a": 0.1}, default_stutter_ratio=0.0)
    _, markers = _run(donor, recipient, sample, only_a)
    assert markers["signal_ink"].to_list() == [0.0, 100.0, 100.0]  # key matched case-insensitively
    # Default: nothing measurable in the references, so the published tetranucleotide mean. The
    # residual (26.8) is within 3 SD of that uncertain ratio (3 x 0.5 x 73.2): not iNK evidence.
    published, markers = _run(donor, recipient, sample)
    residual = 100.0 - 0.0732 * 1000.0
    assert markers["signal_ink"].to_list() == pytest.approx([residual] * 3)
    assert markers["pct_ink"].to_list() == pytest.approx([100 * residual / (residual + 1000)] * 3)
    assert published["result_status"] == "not_detected"


def test_stutter_helpers() -> None:
    """Allele arithmetic keeps microvariant suffixes; Penta loci have a 5 bp repeat."""
    assert shift_allele("9.3", -1) == "8.3"
    assert shift_allele("10.10", -1) == "9.10"
    assert shift_allele("X", -1) is None
    assert repeat_unit_bp("PENTA D") == 5
    assert repeat_unit_bp("TH01") == 4
    assert correct_stutter(
        {"8.3": 100.0, "9.3": 500.0}, {"8.3", "9.3"}, LocusStutter(back=0.1)
    ) == {"8.3": 50.0, "9.3": 500.0}
    assert stutter_position_alleles({"13", "15", "11"}, {"14", "9"}) == ["13", "15"]


# --- QC and result states ---------------------------------------------------------------------

THREE_LOCI_D = {"A": ["10", "11"], "B": ["12"], "C": ["7", "8"], "AMEL": ["X"], "DYS391": ["10"]}
THREE_LOCI_R = {
    "A": ["14", "15"],
    "B": ["16"],
    "C": ["9", "9.3"],
    "AMEL": ["X", "Y"],
    "DYS391": ["11"],
}


def _mix(pct: float) -> dict[str, dict[str, float]]:
    f = pct / 100
    return {
        "A": {"10": 500 * f, "11": 500 * f, "14": 500 * (1 - f), "15": 500 * (1 - f)},
        "B": {"12": 1000 * f, "16": 1000 * (1 - f)},
        "C": {"7": 500 * f, "8": 500 * f, "9": 500 * (1 - f), "9.3": 500 * (1 - f)},
        "DYS391": {"10": 1000 * f, "11": 1000 * (1 - f)},
    }


@pytest.mark.parametrize(
    ("pct", "status", "shown"),
    [(30.0, "quantified", 30.0), (3.0, "below_loq", 3.0), (0.0, "not_detected", None)],
)
def test_result_states(pct: float, status: str, shown: float | None) -> None:
    """Three states: quantified >= LoQ, below_loq with signal, not_detected without iNK signal."""
    result, markers = _run(THREE_LOCI_D, THREE_LOCI_R, _mix(pct), UNCORRECTED)
    assert result["result_status"] == status
    assert result["pct_ink"] == (pytest.approx(shown) if shown is not None else None)
    assert result["n_informative"] == 3
    assert result["lod_pct"] == SETTINGS.lod_pct
    assert result["loq_pct"] == SETTINGS.loq_pct
    sex = markers.filter(pl.col("marker") == "DYS391").row(0, named=True)
    assert (sex["included"], sex["exclusion_reason"]) == (False, "sex marker")
    if status == "not_detected":
        assert result["ci_high"] == SETTINGS.lod_pct


def test_missing_references_fail() -> None:
    """Without the product's or the patient's reference profile the result is failed."""
    sample = _peaks("S1", _mix(30.0))
    donor = _peaks("INK", _reference(THREE_LOCI_D))
    recipient = _peaks("PRE", _reference(THREE_LOCI_R))
    for peaks, words in [
        (pl.concat([sample, recipient]), "iNK product lot 'LOT1'"),
        (pl.concat([sample, donor]), "patient 'P1' baseline"),
    ]:
        out = compute_str_chimerism(peaks.lazy(), SAMPLES.lazy(), settings=SETTINGS)
        result = out.results.row(0, named=True)
        assert result["result_status"] == "failed"
        assert result["qc_verdict"] == "fail"
        assert words in result["qc_reasons"]
        assert out.markers.height == 0


def test_spread_triggers_review() -> None:
    """Retained loci with SD above spread_review_pct need review."""
    sample = _mix(30.0)
    sample["B"] = {"12": 550.0, "16": 450.0}  # 55 % vs 30 %
    result, _ = _run(THREE_LOCI_D, THREE_LOCI_R, sample, replace(SETTINGS, outlier_delta_pct=40.0))
    assert result["qc_verdict"] == "review"
    assert "inter-locus SD" in result["qc_reasons"]


def test_large_imbalance_clamped_and_reviewed() -> None:
    """211 loci above 100 % (heterozygote imbalance) are clamped, flagged and reviewed."""
    donor = {m: ["14", "16"] for m in "ABC"}
    recipient = {m: ["14"] for m in "ABC"}
    # 2 * s_b / (s_a + s_b) = 108, 110, 112 %
    sample = {
        m: {"14": 1000.0 - b, "16": b} for m, b in zip("ABC", (540.0, 550.0, 560.0), strict=True)
    }
    result, markers = _run(donor, recipient, sample)
    assert markers["pct_ink"].to_list() == [100.0, 100.0, 100.0]
    assert markers["included"].to_list() == [True, True, True]
    assert result["qc_verdict"] == "review"
    assert "A 108.00 %" in result["qc_reasons"]
    assert result["pct_ink_raw"] == pytest.approx(110.0)
    assert result["pct_ink"] == 100.0
    assert result["clamped"] is True


def test_marker_names_match_case_insensitively() -> None:
    """'PENTA E' in one reference and 'Penta E' in the other are the same locus."""
    peaks = pl.concat(
        [
            _peaks("INK", {"Penta E": {"7": 1000.0, "8": 1000.0}}),
            _peaks("PRE", {"PENTA E": {"10": 2000.0}}),
            _peaks("S1", {"penta e": {"7": 100.0, "8": 100.0, "10": 800.0}}),
        ]
    )
    out = compute_str_chimerism(peaks.lazy(), SAMPLES.lazy(), settings=UNCORRECTED)
    assert out.markers.select("marker", "sharing", "pct_ink").rows() == [("Penta E", "1", 20.0)]


def test_only_post_dose_samples_in_peaks_are_reported() -> None:
    """References, controls and post-dose samples without peaks give no result rows."""
    samples = pl.concat(
        [
            SAMPLES,
            pl.DataFrame(
                {
                    "sample_id": ["S2", "NTC"],
                    "patient_id": ["P1", "P1"],
                    "role": ["post_dose", "negative_control"],
                    "product_lot": ["LOT1", "LOT1"],
                }
            ),
        ]
    )
    peaks = pl.concat(
        [
            _peaks("INK", _reference(THREE_LOCI_D)),
            _peaks("PRE", _reference(THREE_LOCI_R)),
            _peaks("S1", _mix(20.0)),
            _peaks("NTC", {"A": {"10": 50.0}}),
        ]
    )
    out = compute_str_chimerism(peaks.lazy(), samples.lazy(), settings=SETTINGS)
    assert out.results["sample_id"].to_list() == ["S1"]


def test_reference_discordance_needs_review() -> None:
    """Two iNK reference samples of one lot that disagree send results to review."""
    samples = pl.concat(
        [
            SAMPLES,
            pl.DataFrame(
                {
                    "sample_id": ["INK2"],
                    "patient_id": ["LOT1"],
                    "role": ["donor_reference"],
                    "product_lot": ["LOT1"],
                }
            ),
        ]
    )
    other = {**THREE_LOCI_D, "B": ["13"]}
    peaks = pl.concat(
        [
            _peaks("INK", _reference(THREE_LOCI_D)),
            _peaks("INK2", _reference(other)),
            _peaks("PRE", _reference(THREE_LOCI_R)),
            _peaks("S1", _mix(20.0)),
        ]
    )
    out = compute_str_chimerism(peaks.lazy(), samples.lazy(), settings=SETTINGS)
    result = out.results.row(0, named=True)
    assert result["qc_verdict"] == "review"
    assert "disagree at B" in result["qc_reasons"]


# --- properties -------------------------------------------------------------------------------

signal = st.floats(min_value=0.0, max_value=1e5, allow_nan=False)


@given(st.lists(signal, min_size=4, max_size=4))
def test_type_one_loci_stay_in_range(signals: list[float]) -> None:
    """Rows 1-5 (codes 1 and 221) can never leave 0-100 %."""
    a, b, c, d = signals
    for call in (
        locus_pct_ink({"10", "11"}, {"12", "13"}, {"10": a, "11": b, "12": c, "13": d}),
        locus_pct_ink({"10", "11"}, {"10", "13"}, {"10": a, "11": b, "13": d}),
        locus_pct_ink({"10"}, {"12", "13"}, {"10": a, "12": c, "13": d}),
    ):
        if call.pct_ink_raw is not None:
            assert 0.0 <= call.pct_ink_raw <= 100.0 + 1e-9


@given(st.lists(signal, min_size=4, max_size=4))
def test_swap_donor_and_recipient(signals: list[float]) -> None:
    """Swapping the genotypes gives 100 - x for single-donor loci (codes 1, 221, 211/121)."""
    a, b, c, d = signals
    s = {"10": a, "11": b, "12": c, "13": d}
    for donor, recipient in [
        ({"10", "11"}, {"12", "13"}),
        ({"10"}, {"12"}),
        ({"10", "11"}, {"10", "12"}),
        ({"10", "11"}, {"10"}),
    ]:
        forward = locus_pct_ink(donor, recipient, s).pct_ink_raw
        backward = locus_pct_ink(recipient, donor, s).pct_ink_raw
        if forward is None or backward is None:
            assert forward is backward is None
        else:
            assert forward + backward == pytest.approx(100.0, abs=1e-6)


mixture = st.fixed_dictionaries(
    {
        "A": st.fixed_dictionaries(dict.fromkeys(("14", "16", "18"), signal)),
        "B": st.fixed_dictionaries(dict.fromkeys(("7", "9", "9.3"), signal)),
        "C": st.fixed_dictionaries(dict.fromkeys(("10", "11", "12"), signal)),
    }
)
PROP_D = {"A": ["14", "16"], "B": ["9"], "C": ["10"]}
PROP_R = {"A": ["14"], "B": ["9", "9.3"], "C": ["11", "12"]}


@given(mixture, st.randoms(use_true_random=False))
def test_results_in_range_and_order_independent(
    sample: dict[str, dict[str, float]], rnd: object
) -> None:
    """pct_ink stays in 0-100 % and the output does not depend on input row order."""
    peaks = pl.concat(
        [_peaks("INK", _reference(PROP_D)), _peaks("PRE", _reference(PROP_R)), _peaks("S1", sample)]
    )
    out = compute_str_chimerism(peaks.lazy(), SAMPLES.lazy(), settings=SETTINGS)
    pct = out.results["pct_ink"][0]
    if pct is not None:
        assert 0.0 <= pct <= 100.0
    for column in ("ci_low", "ci_high"):
        value = out.results[column][0]
        if value is not None:
            assert 0.0 <= value <= 100.0
    order = list(range(peaks.height))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    shuffled = peaks[order]
    again = compute_str_chimerism(shuffled.lazy(), SAMPLES.reverse().lazy(), settings=SETTINGS)
    assert_frame_equal(out.results, again.results)
    assert_frame_equal(out.markers, again.markers)


def test_stutter_peaks_are_not_foreign_alleles() -> None:
    """A peak one repeat below a patient allele at stutter size is not called contamination."""
    settings = StrSettings()
    work_clean = _run_one_locus({"14": 900.0, "13": 80.0, "16": 100.0}, settings)
    assert not any("contamination" in r for r in work_clean)
    work_foreign = _run_one_locus({"14": 900.0, "11": 300.0, "16": 100.0}, settings)
    assert any("contamination" in r for r in work_foreign)


ONE_PATIENT = pl.DataFrame(
    {
        "sample_id": ["REF", "BL", "S1"],
        "patient_id": ["LOT", "P1", "P1"],
        "role": ["donor_reference", "recipient_baseline", "post_dose"],
        "product_lot": ["LOT", "LOT", "LOT"],
    }
)


def _peak_rows(rows: list[tuple[str, str, str, float]]) -> pl.DataFrame:
    """StrPeaks from (sample, marker, allele, area) rows; height = area / 6."""
    return pl.DataFrame(
        [{"sample_id": s, "marker": m, "allele": a, "area_rfu": v} for s, m, a, v in rows]
    ).with_columns(
        height_rfu=pl.col("area_rfu") / 6,
        size_bp=pl.lit(None, pl.Float64),
        dye=pl.lit("B"),
        source_row=pl.int_range(1, pl.len() + 1, dtype=pl.Int32),
    )


def _run_one_locus(signals: dict[str, float], settings: StrSettings) -> list[str]:
    """Reasons of a one-locus sample: donor 16/17, patient 14/15, sample with ``signals``."""
    rows = [("REF", "D3S1358", "16", 500.0), ("REF", "D3S1358", "17", 500.0)]
    rows += [("BL", "D3S1358", "14", 500.0), ("BL", "D3S1358", "15", 500.0)]
    rows += [("S1", "D3S1358", a, v) for a, v in signals.items()]
    out = compute_str_chimerism(_peak_rows(rows).lazy(), ONE_PATIENT.lazy(), settings=settings)
    reasons = out.results["qc_reasons"][0]
    return [] if reasons is None else reasons.split("; ")


def test_rchimerism_broad_d7s820_peak_is_flagged(real_exports: Path) -> None:
    """The D7S820 '10' peak (area/height 23 vs ~6-7) sends the example to review (methods.md 2.8)."""
    peaks = _rchimerism(real_exports)
    result = compute_str_chimerism(peaks.lazy(), SAMPLES.lazy(), settings=SETTINGS).results.row(
        0, named=True
    )
    assert result["qc_verdict"] == "review"
    assert "D7S820 10 (area/height 23.1" in result["qc_reasons"]
    relaxed = compute_str_chimerism(
        peaks.lazy(), SAMPLES.lazy(), settings=replace(SETTINGS, area_height_ratio_factor=100.0)
    ).results.row(0, named=True)
    assert "area/height" not in (relaxed["qc_reasons"] or "")


def test_y_signal_without_a_male_reference_goes_to_review() -> None:
    """A female product and a female patient cannot give AMEL Y: the sample is sent to review."""
    rows = [
        ("REF", "AMEL", "X", 2000.0),
        ("REF", "D3S1358", "16", 1000.0),
        ("REF", "D3S1358", "17", 1000.0),
        ("BL", "AMEL", "X", 2000.0),
        ("BL", "D3S1358", "14", 1000.0),
        ("BL", "D3S1358", "15", 1000.0),
        ("S1", "AMEL", "X", 1500.0),
        ("S1", "AMEL", "Y", 500.0),
        ("S1", "D3S1358", "14", 450.0),
        ("S1", "D3S1358", "15", 450.0),
        ("S1", "D3S1358", "16", 50.0),
        ("S1", "D3S1358", "17", 50.0),
    ]
    peaks = _peak_rows([(smp, m, a, 6 * h) for smp, m, a, h in rows])
    samples = ONE_PATIENT
    result = compute_str_chimerism(
        peaks.lazy(), samples.lazy(), settings=StrSettings()
    ).results.row(0, named=True)
    assert result["qc_verdict"] == "review"
    assert "Amelogenin Y" in result["qc_reasons"]
    male = peaks.with_columns(
        allele=pl.when((pl.col("sample_id") == "REF") & (pl.col("marker") == "AMEL"))
        .then(pl.lit("Y"))
        .otherwise(pl.col("allele"))
    )
    clean = compute_str_chimerism(male.lazy(), samples.lazy(), settings=StrSettings()).results.row(
        0, named=True
    )
    assert "Amelogenin" not in (clean["qc_reasons"] or "")


ALLELE_NAMES = st.sampled_from(["8", "9", "9.3", "10", "11", "12", "13.2", "14", "15", "X", "Y"])


@given(st.sets(ALLELE_NAMES, min_size=1, max_size=2), st.sets(ALLELE_NAMES, min_size=1, max_size=2))
@example({"12", "9.3"}, {"14", "11"})
def test_sharing_plan_sums_alleles_in_one_order_whatever_the_hash_seed(
    donor: set[str], recipient: set[str]
) -> None:
    """A locus's sums run over its alleles sorted, not in set order (which follows the string
    hash seed), so two runs of the same files give the same bits."""
    plan = SharingPlan.of(donor, recipient)
    assert plan.expected == tuple(sorted(donor | recipient))
    assert plan.ink_only == tuple(sorted(donor - recipient))
    assert plan.recipient_only == tuple(sorted(recipient - donor))
    assert plan.shared == tuple(sorted(donor & recipient))
    assert SharingPlan.of(sorted(donor, reverse=True), recipient) == plan
