"""qPCR chimerism arithmetic: methods.md 3.5 fixtures and synthetic plates at known % iNK."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from chimera.calculate import ddpcr, qpcr
from chimera.calculate.limits import limit_of_blank
from chimera.calculate.qpcr import (
    amplification_factor,
    assert_chimerism_plate,
    ci_pct_from_ddct,
    compute_qpcr_chimerism,
    delta_ct,
    delta_delta_ct,
    efficiency_from_slope,
    informative_markers,
    pct_ink_ddct,
    pct_ink_pfaffl,
    quantity_from_ct,
    se_delta_ct,
    se_delta_delta_ct,
    summarise_replicates,
)
from chimera.calculate.stats import t_quantile
from chimera.detect import detect
from chimera.errors import NotChimerismAssayError
from chimera.parsers.cfx import parse_cfx
from chimera.parsers.quantstudio import parse_appbio
from chimera.settings import QpcrSettings

SETTINGS = QpcrSettings()

# --- methods.md 3.5 fixtures (numbers printed in the real exports) -------------------------


def test_delta_delta_ct_fixture_hs2() -> None:
    """ΔCrt, ΔΔCrt and RQ of 13Jul2022-Hs-2 match the QuantStudio xlsx."""
    d_ct = delta_ct(31.051958, 14.079124)
    assert d_ct == pytest.approx(16.972834, abs=1e-6)
    dd_ct = delta_delta_ct(delta_ct_sample=d_ct, delta_ct_calibrator=16.577312)
    assert dd_ct == pytest.approx(0.395522, abs=1e-6)
    assert pct_ink_ddct(dd_ct) / 100 == pytest.approx(0.7602142, abs=2e-7)


def test_delta_delta_ct_fixture_hs3_over_range() -> None:
    """A negative ΔΔCt gives RQ > 1 (13Jul2022-Hs-3, 1.1130497), kept raw."""
    dd_ct = delta_delta_ct(delta_ct_sample=16.422794, delta_ct_calibrator=16.577312)
    assert dd_ct == pytest.approx(-0.154518, abs=1e-6)
    assert pct_ink_ddct(dd_ct) / 100 == pytest.approx(1.1130497, abs=2e-7)


@pytest.mark.parametrize(("slope", "expected"), [(-3.196, 105.54), (-3.383, 97.51)])
def test_efficiency_from_slope_fixture(slope: float, expected: float) -> None:
    """Efficiency from the printed slopes matches methods.md within 0.01 points."""
    assert efficiency_from_slope(slope) == pytest.approx(expected, abs=0.01)


def test_efficiency_close_to_file_values() -> None:
    """The file prints 105.533 / 97.505 from unrounded slopes: within rounding of the slope."""
    assert efficiency_from_slope(-3.196) == pytest.approx(105.533, abs=0.02)
    assert efficiency_from_slope(-3.383) == pytest.approx(97.505, abs=0.02)


def test_quantity_from_ct_fixture_a4() -> None:
    """Well A4: Ct 25.711 gives 118,278 and is within 0.1 % of the printed 118,248.2."""
    quantity = quantity_from_ct(25.711, slope=-3.196, intercept=41.924)
    assert quantity == pytest.approx(118_278, abs=1)
    assert quantity == pytest.approx(118_248.2, rel=1e-3)


def test_positive_slope_is_rejected() -> None:
    """A non-negative slope is not a standard curve."""
    with pytest.raises(ValueError, match="negative"):
        amplification_factor(3.3)


def test_pfaffl_equals_livak_at_full_efficiency() -> None:
    """With E = 2 for both targets the Pfaffl ratio equals 2^-ΔΔCt."""
    pfaffl = pct_ink_pfaffl(
        ct_marker_sample=30.0,
        ct_reference_sample=24.0,
        ct_marker_calibrator=26.0,
        ct_reference_calibrator=25.0,
    )
    ddct = delta_delta_ct(delta_ct_sample=6.0, delta_ct_calibrator=1.0)
    assert pfaffl == pytest.approx(pct_ink_ddct(ddct))
    assert pfaffl == pytest.approx(100 / 32)


def test_pfaffl_uses_the_marker_efficiency() -> None:
    """A marker amplifying with E = 1.9 needs more cycles per halving."""
    pct = pct_ink_pfaffl(
        ct_marker_sample=27.0,
        ct_reference_sample=25.0,
        ct_marker_calibrator=25.0,
        ct_reference_calibrator=25.0,
        amplification_marker=1.9,
    )
    assert pct == pytest.approx(100 * 1.9**-2)


def test_standard_errors_and_t_quantile() -> None:
    """SE propagation is root-sum-square; the t quantile matches printed tables."""
    se_sample = se_delta_ct(sd_marker=0.2, n_marker=4, sd_reference=0.1, n_reference=1)
    assert se_sample == pytest.approx(math.sqrt(0.01 + 0.01))
    assert se_delta_delta_ct(se_sample=0.6, se_calibrator=0.8) == pytest.approx(1.0)
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.975, 5) == pytest.approx(2.571, abs=1e-3)
    assert t_quantile(0.975, 30) == pytest.approx(2.042, abs=1e-3)
    assert t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-9)


def test_confidence_interval_is_asymmetric_on_pct_scale() -> None:
    """The 95 % CI is 2^-(ΔΔCt ± t·SE): wider above the estimate than below."""
    low, high = ci_pct_from_ddct(3.0, se=0.25, dof=6)
    estimate = pct_ink_ddct(3.0)
    half = 2.447 * 0.25
    assert low == pytest.approx(100 * 2 ** -(3 + half), rel=1e-3)
    assert high == pytest.approx(100 * 2 ** -(3 - half), rel=1e-3)
    assert high - estimate > estimate - low


def test_outlier_rule_drops_the_farthest_once() -> None:
    """With >= 3 replicates and SD above the limit the farthest from the median goes."""
    summary = summarise_replicates(
        [30.0, 30.1, 32.5, 29.95], ct_cutoff=40, max_sd=0.5, min_replicates=2
    )
    assert summary.outlier == 2
    assert summary.kept == (0, 1, 3)
    assert summary.mean_ct == pytest.approx((30.0 + 30.1 + 29.95) / 3)
    assert not summary.sd_above_limit


def test_outlier_rule_only_once_then_review() -> None:
    """Spread that survives one removal is flagged, not trimmed further."""
    summary = summarise_replicates([28.0, 30.0, 32.0], ct_cutoff=40, max_sd=0.5, min_replicates=2)
    assert summary.outlier is not None
    assert summary.n_kept == 2
    assert summary.sd_above_limit


def test_two_replicates_are_never_trimmed() -> None:
    """Fewer than 3 replicates: SD above the limit is review only."""
    summary = summarise_replicates([30.0, 31.5], ct_cutoff=40, max_sd=0.5, min_replicates=2)
    assert summary.outlier is None
    assert summary.sd_above_limit
    assert summary.enough


def test_censored_and_late_cts_are_not_amplified() -> None:
    """Undetermined (None) and Ct above the cut-off are not valid replicates."""
    summary = summarise_replicates([None, 41.0, 35.0], ct_cutoff=40, max_sd=0.5, min_replicates=2)
    assert summary.amplified == (2,)
    assert summary.mean_ct == 35.0
    assert summary.sd_ct is None
    assert not summary.enough


# --- synthetic plates -------------------------------------------------------------------------

LOT = "LOT-A"
CAL_REF, CAL_S04, CAL_S07 = 25.0, 26.0, 27.5
JITTER = (-0.04, 0.0, 0.04)


def _samples() -> pl.LazyFrame:
    rows = [
        ("CAL-1", LOT, "calibrator", LOT),
        ("P01-BL", "P01", "recipient_baseline", LOT),
        ("P01-D10", "P01", "post_dose", LOT),
        ("P01-D1", "P01", "post_dose", LOT),
        ("P01-ND", "P01", "post_dose", LOT),
        ("P01-BADREF", "P01", "post_dose", LOT),
        ("P01-OUT", "P01", "post_dose", LOT),
        ("P01-PART", "P01", "post_dose", LOT),
        ("BLANK-1", "NEG", "negative_control", None),
    ]
    return pl.LazyFrame(
        rows, schema=["sample_id", "patient_id", "role", "product_lot"], orient="row"
    )


class _Plate:
    """Build ``QpcrWells`` rows for a synthetic plate."""

    def __init__(self, plate: str = "plate-1") -> None:
        self.plate = plate
        self.rows: list[dict[str, object]] = []

    def add(
        self,
        sample: str | None,
        target: str,
        cts: list[float | None],
        *,
        task: str = "unknown",
        slope: float | None = None,
        omitted: bool = False,
    ) -> None:
        for ct in cts:
            n = len(self.rows)
            self.rows.append(
                {
                    "sample_id": sample,
                    "well": f"{'ABCDEFGHIJKLMNOP'[n // 24]}{n % 24 + 1}",
                    "target": target,
                    "task": task,
                    "reporter": "FAM",
                    "ct": ct,
                    "omitted": omitted,
                    "quantity": None,
                    "slope": slope,
                    "intercept": None,
                    "r_squared": None,
                    "efficiency_pct": None,
                    "source_row": n + 2,
                    "source_sha256": self.plate,
                }
            )

    def sample_at(self, sample: str, pct: float, *, ref_ct: float = 25.5) -> None:
        """Add a sample at ``pct`` % iNK: marker Ct = cal + (ref_s - ref_cal) + log2(100/pct)."""
        shift = (ref_ct - CAL_REF) + math.log2(100.0 / pct)
        self.add(sample, "RPP30", [ref_ct + j for j in JITTER])
        self.add(sample, "S04", [CAL_S04 + shift + j for j in JITTER])
        self.add(sample, "S07", [CAL_S07 + shift - j for j in JITTER])

    def controls(self, *, ntc_ct: float | None = None) -> None:
        self.add("CAL-1", "RPP30", [CAL_REF + j for j in JITTER])
        self.add("CAL-1", "S04", [CAL_S04 + j for j in JITTER])
        self.add("CAL-1", "S07", [CAL_S07 + j for j in JITTER])
        self.add("P01-BL", "RPP30", [25.3, 25.35, 25.28])
        self.add("P01-BL", "S04", [None, None, None])
        self.add("P01-BL", "S07", [None, 41.2, None])
        for target in ("RPP30", "S04", "S07"):
            self.add(None, target, [ntc_ct, None], task="ntc")

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows).with_columns(
            pl.col("ct", "slope", "quantity", "intercept", "r_squared", "efficiency_pct").cast(
                pl.Float64
            ),
            pl.col("source_row").cast(pl.Int32),
        )


def _run(*plates: _Plate, settings: QpcrSettings = SETTINGS) -> tuple[pl.DataFrame, pl.DataFrame]:
    wells = pl.concat([p.frame() for p in plates], how="vertical_relaxed")
    output = compute_qpcr_chimerism(wells.lazy(), _samples(), settings=settings)
    return output.results, output.markers


def _row(results: pl.DataFrame, sample: str) -> dict[str, object]:
    rows = results.filter(pl.col("sample_id") == sample).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


@pytest.fixture(scope="module")
def standard_plate() -> tuple[pl.DataFrame, pl.DataFrame]:
    plate = _Plate()
    plate.controls()
    plate.sample_at("P01-D10", 10.0)
    plate.sample_at("P01-D1", 1.0, ref_ct=24.8)
    plate.add("P01-ND", "RPP30", [25.1, 25.2, 25.15])
    plate.add("P01-ND", "S04", [None, None, None])
    plate.add("P01-ND", "S07", [None, None, 42.0])
    plate.sample_at("P01-BADREF", 10.0, ref_ct=34.0)
    shift = 0.5 + math.log2(10.0)
    plate.add("P01-OUT", "RPP30", [25.5, 25.52, 25.48])
    plate.add("P01-OUT", "S04", [CAL_S04 + shift, CAL_S04 + shift + 0.05, CAL_S04 + shift + 2.0])
    plate.add("P01-OUT", "S07", [CAL_S07 + shift, CAL_S07 + shift + 0.03, CAL_S07 + shift - 0.03])
    plate.add("P01-PART", "RPP30", [25.0, 25.05, 24.95])
    plate.add("P01-PART", "S04", [36.8, None, None])
    plate.add("P01-PART", "S07", [None, None, None])
    return _run(plate)


@pytest.mark.parametrize(("sample", "expected_pct"), [("P01-D10", 10.0), ("P01-D1", 1.0)])
def test_known_pct_is_recovered(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame], sample: str, expected_pct: float
) -> None:
    """A sample built at a known % iNK is quantified at that value with a CI around it."""
    row = _row(standard_plate[0], sample)
    assert row["result_status"] == "quantified"
    assert row["qc_verdict"] == "pass"
    assert row["pct_ink"] == pytest.approx(expected_pct, rel=0.02)
    assert row["ci_low"] < expected_pct < row["ci_high"]
    assert row["n_informative"] == 2
    assert row["lod_pct"] >= SETTINGS.lod_pct
    assert row["loq_pct"] >= row["lod_pct"]


def test_all_undetermined_is_not_detected(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """No amplified marker replicate: not detected, no value, upper bound = the sample LoD."""
    row = _row(standard_plate[0], "P01-ND")
    assert row["result_status"] == "not_detected"
    assert row["pct_ink"] is None
    assert row["lod_pct"] is not None
    assert row["ci_high"] == row["lod_pct"]


def test_sample_lod_follows_the_ct_cutoff(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """Sample LoD = % iNK of a marker at Ct = cut-off given the sample's reference Ct."""
    row = _row(standard_plate[0], "P01-ND")
    ref = (25.1 + 25.2 + 25.15) / 3
    log2_lods = [-((SETTINGS.ct_cutoff - ref) - (cal - CAL_REF)) for cal in (CAL_S04, CAL_S07)]
    expected = 100 * 2 ** (sum(log2_lods) / 2)
    assert row["lod_pct"] == pytest.approx(max(expected, SETTINGS.lod_pct), rel=1e-6)


def test_bad_reference_ct_fails_for_dna_input(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """A reference Ct outside the window is a DNA-input failure, never 'not detected'."""
    row = _row(standard_plate[0], "P01-BADREF")
    assert row["result_status"] == "failed"
    assert row["qc_verdict"] == "fail"
    assert row["pct_ink"] is None
    assert "DNA input" in str(row["qc_reasons"])
    assert row["lod_pct"] is not None


def test_outlier_replicate_is_excluded_and_recovery_holds(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """The replicate 2 cycles off is dropped; the estimate stays at 10 %."""
    results, markers = standard_plate
    row = _row(results, "P01-OUT")
    assert row["pct_ink"] == pytest.approx(10.0, rel=0.03)
    s04 = markers.filter((pl.col("sample_id") == "P01-OUT") & (pl.col("marker") == "S04"))
    excluded = s04.filter(~pl.col("included"))
    assert excluded.height == 1
    assert excluded["ct"][0] == pytest.approx(CAL_S04 + 0.5 + math.log2(10.0) + 2.0)
    assert "outlier" in excluded["exclusion_reason"][0]


def test_partial_amplification_is_below_loq(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """1 of 6 marker replicates amplified: detected, kept as an estimate, never quantified."""
    row = _row(standard_plate[0], "P01-PART")
    assert row["result_status"] == "below_loq"
    assert row["pct_ink"] is not None
    assert "1/6 marker replicates amplified" in str(row["qc_reasons"])


def test_markers_frame_has_one_row_per_replicate(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """Detail rows: 3 replicates x (2 markers + reference) per sample, per-marker % on markers."""
    markers = standard_plate[1].filter(pl.col("sample_id") == "P01-D10")
    assert markers.height == 9
    assert set(markers["marker"]) == {"RPP30", "S04", "S07"}
    s04 = markers.filter(pl.col("marker") == "S04")
    assert s04["pct_ink"].to_list() == pytest.approx([10.0] * 3, rel=0.02)
    assert s04["included"].all()
    assert markers.filter(pl.col("marker") == "RPP30")["pct_ink"].null_count() == 3


def test_only_post_dose_samples_are_reported(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """Calibrator, baseline, blank and NTC wells give no result rows."""
    reported = set(standard_plate[0]["sample_id"])
    assert reported == {"P01-D10", "P01-D1", "P01-ND", "P01-BADREF", "P01-OUT", "P01-PART"}


def test_ntc_amplification_fails_the_plate() -> None:
    """An NTC well amplifying before ntc_ct_min fails every sample on that plate."""
    plate = _Plate()
    plate.controls(ntc_ct=30.0)
    plate.sample_at("P01-D10", 10.0)
    row = _row(_run(plate)[0], "P01-D10")
    assert row["result_status"] == "failed"
    assert "NTC" in str(row["qc_reasons"])


def test_late_ntc_does_not_fail_the_plate() -> None:
    """An NTC crossing after ntc_ct_min is tolerated."""
    plate = _Plate()
    plate.controls(ntc_ct=39.0)
    plate.sample_at("P01-D10", 10.0)
    assert _row(_run(plate)[0], "P01-D10")["result_status"] == "quantified"


def test_missing_calibrator_on_plate_fails() -> None:
    """The 100 % calibrator must be on the sample's own plate."""
    controls = _Plate("plate-controls")
    controls.controls()
    other = _Plate("plate-samples")
    other.sample_at("P01-D10", 10.0)
    row = _row(_run(controls, other)[0], "P01-D10")
    assert row["result_status"] == "failed"
    assert "no 100 % calibrator on plate" in str(row["qc_reasons"])


def test_baseline_may_sit_on_another_plate() -> None:
    """Informative markers come from any plate; the calibrator comes from the sample's plate."""
    baseline_plate = _Plate("plate-baseline")
    baseline_plate.add("P01-BL", "RPP30", [25.0, 25.1])
    baseline_plate.add("P01-BL", "S04", [None, None])
    baseline_plate.add("P01-BL", "S07", [None, None])
    plate = _Plate("plate-samples")
    plate.add("CAL-1", "RPP30", [CAL_REF + j for j in JITTER])
    plate.add("CAL-1", "S04", [CAL_S04 + j for j in JITTER])
    plate.add("CAL-1", "S07", [CAL_S07 + j for j in JITTER])
    plate.sample_at("P01-D10", 10.0)
    row = _row(_run(baseline_plate, plate)[0], "P01-D10")
    assert row["result_status"] == "quantified"
    assert row["pct_ink"] == pytest.approx(10.0, rel=0.02)


def test_marker_amplifying_in_baseline_is_not_informative() -> None:
    """A marker the patient also carries is excluded; the other marker still reports."""
    plate = _Plate()
    plate.controls()
    plate.add("P01-BL", "S09", [27.0, 27.1])
    plate.add("CAL-1", "S09", [26.0, 26.1])
    plate.sample_at("P01-D10", 10.0)
    plate.add("P01-D10", "S09", [26.5, 26.6])
    results, markers = _run(plate)
    assert _row(results, "P01-D10")["n_informative"] == 2
    s09 = markers.filter((pl.col("sample_id") == "P01-D10") & (pl.col("marker") == "S09"))
    assert s09.height == 2
    assert not s09["included"].any()
    assert s09["sharing"].to_list() == ["not_informative"] * 2
    wells = plate.frame()
    found = informative_markers(
        wells.lazy(),
        product_sample_ids=["CAL-1"],
        baseline_sample_ids=["P01-BL"],
        settings=SETTINGS,
    )
    assert found == ["S04", "S07"]


def test_efficiency_correction_with_standard_curves() -> None:
    """With slopes for both targets, Pfaffl's ratio recovers % iNK for a 90 %-efficient marker."""
    slope_marker, slope_ref = -3.59, -3.32
    e_marker = 10 ** (-1 / slope_marker)
    e_ref = 10 ** (-1 / slope_ref)
    ref_s = 25.6
    # f = E_M^(Ct_M,cal - Ct_M,s) / E_ref^(Ct_ref,cal - Ct_ref,s) -> solve for Ct_M,s at f = 0.05
    ct_marker = CAL_S04 - (math.log(0.05) + (CAL_REF - ref_s) * math.log(e_ref)) / math.log(
        e_marker
    )
    plate = _Plate()
    plate.add("CAL-1", "RPP30", [CAL_REF] * 3, slope=slope_ref)
    plate.add("CAL-1", "S04", [CAL_S04] * 3, slope=slope_marker)
    plate.add("P01-BL", "RPP30", [25.0] * 2, slope=slope_ref)
    plate.add("P01-BL", "S04", [None] * 2, slope=slope_marker)
    plate.add("P01-D10", "RPP30", [ref_s - 0.02, ref_s, ref_s + 0.02], slope=slope_ref)
    plate.add("P01-D10", "S04", [ct_marker - 0.03, ct_marker, ct_marker + 0.03], slope=slope_marker)
    row = _row(_run(plate)[0], "P01-D10")
    assert row["pct_ink"] == pytest.approx(5.0, rel=1e-3)
    plain_ddct = pct_ink_ddct((ct_marker - ref_s) - (CAL_S04 - CAL_REF))
    assert abs(plain_ddct - 5.0) > 0.5  # the correction matters for this marker


def test_amplifying_blank_sets_a_limit_of_blank() -> None:
    """Blank wells that amplify give LoB; an estimate not above it is not detected."""
    plate = _Plate()
    plate.controls()
    plate.add("BLANK-1", "RPP30", [25.0, 25.0, 25.0])
    # blank marker results near 0.2 % iNK: Ct = cal + log2(100 / 0.2)
    plate.add("BLANK-1", "S04", [CAL_S04 + math.log2(500), None, CAL_S04 + math.log2(400)])
    plate.add("BLANK-1", "S07", [None, None, None])
    plate.sample_at("P01-D1", 0.1, ref_ct=25.0)
    plate.sample_at("P01-D10", 5.0, ref_ct=25.0)
    results = _run(plate)[0]
    # blank results: BLANK-1 S04/S07 wells and the baseline's six marker wells (0 % each)
    blanks = [0.2, 0.0, 0.25] + [0.0] * 3 + [0.0] * 6
    lob = limit_of_blank(blanks)
    row = _row(results, "P01-D1")
    assert row["lod_pct"] == pytest.approx(lob, rel=1e-6)
    assert row["result_status"] == "not_detected"
    assert _row(results, "P01-D10")["result_status"] == "quantified"


def test_omitted_wells_are_excluded() -> None:
    """Wells omitted in the instrument software never enter the mean."""
    plate = _Plate()
    plate.controls()
    plate.sample_at("P01-D10", 10.0)
    plate.add("P01-D10", "S04", [20.0], omitted=True)
    results, markers = _run(plate)
    assert _row(results, "P01-D10")["pct_ink"] == pytest.approx(10.0, rel=0.02)
    omitted = markers.filter(pl.col("ct") == 20.0)
    assert omitted["exclusion_reason"].to_list() == ["omitted in the instrument software"]


def test_no_informative_marker_fails_with_reason() -> None:
    """Without a baseline the markers cannot be shown donor-specific: failed, reason given."""
    plate = _Plate()
    plate.add("CAL-1", "RPP30", [25.0] * 2)
    plate.add("CAL-1", "S04", [26.0] * 2)
    plate.sample_at("P01-D10", 10.0)
    row = _row(_run(plate)[0], "P01-D10")
    assert row["result_status"] == "failed"
    assert "baseline was not tested" in str(row["qc_reasons"])


def test_result_does_not_depend_on_row_order(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """Shuffling the wells leaves every result unchanged."""
    plate = _Plate()
    plate.controls()
    plate.sample_at("P01-D10", 10.0)
    plate.sample_at("P01-D1", 1.0, ref_ct=24.8)
    wells = plate.frame()
    first = compute_qpcr_chimerism(wells.lazy(), _samples(), settings=SETTINGS).results
    shuffled = wells.sample(fraction=1.0, shuffle=True, seed=7)
    second = compute_qpcr_chimerism(shuffled.lazy(), _samples(), settings=SETTINGS).results
    assert first.sort("sample_id").equals(second.sort("sample_id"))
    d10 = _row(standard_plate[0], "P01-D10")["pct_ink"]
    assert _row(first, "P01-D10")["pct_ink"] == pytest.approx(d10)


def test_stricter_min_replicates_demotes_to_below_loq() -> None:
    """min_replicates above the replicate count keeps the value but never quantifies it."""
    plate = _Plate()
    plate.controls()
    plate.sample_at("P01-D10", 10.0)
    row = _row(_run(plate, settings=replace(SETTINGS, min_replicates=4))[0], "P01-D10")
    assert row["result_status"] == "below_loq"
    assert row["pct_ink"] == pytest.approx(10.0, rel=0.02)


# --- plate check --------------------------------------------------------------------------------


def test_synthetic_chimerism_plate_passes_the_check() -> None:
    """A plate with RPP30 and marker targets is a chimerism assay."""
    plate = _Plate()
    plate.controls()
    assert_chimerism_plate(plate.frame(), settings=SETTINGS, file_name="plate.txt")


@pytest.mark.parametrize(
    ("folder", "name", "needle"),
    [
        ("qpcr_appbio", "quantstudio7flex_results_only_standard_curve.txt", "no reference-gene"),
        ("qpcr_appbio", "quantstudio7flex_rnasep_standard_curve_full.txt", "no donor-specific"),
        ("qpcr_appbio", "quantstudio_fast96_relative_quant_results.xlsx", "no reference-gene"),
        ("qpcr_appbio", "stepOnePlus_results_native_export.xls", "no reference-gene"),
        ("qpcr_appbio", "stepOnePlus_results_excel_resaved.csv", "no reference-gene"),
        ("qpcr_biorad_cfx", "cfx96_sybr_quantification_cq_results.csv", "no reference-gene"),
        (
            "qpcr_biorad_cfx",
            "cfx_connect_sybr_two_targets_quantification_cq_results.csv",
            "no reference-gene",
        ),
        ("qpcr_biorad_cfx", "allotropy_cfxmaestro_example01.csv", "no target names"),
    ],
)
def test_real_exports_are_not_chimerism_assays(
    real_exports: Path, folder: str, name: str, needle: str
) -> None:
    """Every real export parses but is rejected: GAPDH, eDNA, RNase P curve, 18S/ANPEP."""
    path = real_exports / folder / name
    parse = parse_cfx if folder == "qpcr_biorad_cfx" else parse_appbio
    wells = parse(detect(path.read_bytes(), file_name=name)).frame
    with pytest.raises(NotChimerismAssayError, match=needle) as info:
        assert_chimerism_plate(wells, settings=SETTINGS, file_name=name)
    assert name in str(info.value)
    assert info.value.reason == "not_a_chimerism_assay"


def test_configured_reference_gene_accepts_the_18s_plate(real_exports: Path) -> None:
    """Declaring 18S a reference gene makes the 18S/ANPEP plate pass the structural check."""
    name = "quantstudio_fast96_relative_quant_results.xlsx"
    wells = parse_appbio(
        detect((real_exports / "qpcr_appbio" / name).read_bytes(), file_name=name)
    ).frame
    settings = replace(SETTINGS, reference_genes=("18S",))
    assert_chimerism_plate(wells, settings=settings, file_name=name)


def test_reference_gene_matcher_is_shared_and_token_aware() -> None:
    """qPCR and ddPCR read reference-gene names alike: case, separators and dye suffixes aside."""
    genes = QpcrSettings().reference_genes
    assert qpcr.is_reference_gene is ddpcr.is_reference_gene
    assert qpcr.is_reference_gene("rnase-p", genes)
    assert qpcr.is_reference_gene("RPP30_VIC", genes)
    assert not qpcr.is_reference_gene("HbS", genes)
    assert not qpcr.is_reference_gene(None, genes)
