"""qPCR chimerism: methods.md 3.5 fixtures, the real ΔΔCt plate, plates built from copy numbers.

Synthetic plates are built from genome copy numbers, not from the ΔΔCt formula: a target with N
template copies crosses at Ct = C1 - log2(N) (E = 2; C1 = the assay's Ct of one copy), so the
expected % iNK is the fraction of product genomes put into the well. Worked by hand (S04, one
copy per iNK genome, C1 36.2; RPP30 two copies per genome, C1 35.0): a sample of 10,000 genomes
at 10 % has RPP30 20,000 copies -> Ct 20.7123 and S04 1,000 copies -> Ct 26.2342; a calibrator
of 5,000 product genomes has RPP30 10,000 -> 21.7123 and S04 5,000 -> 23.9123; ΔΔCt = 5.5219 -
2.2000 = 3.3219 and 2^-3.3219 = 0.1000.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcr_builders import (
    C1,
    JITTER,
    MANIFEST_COLUMNS,
    REFERENCE,
    QpcrPlate,
    ct_for,
    manifest,
)

from chimera.calculate import ddpcr, qpcr
from chimera.calculate.ddct import (
    amplification_factor,
    blank_ct_cutoff,
    ci_pct_from_ddct,
    delta_ct,
    delta_delta_ct,
    efficiency_from_slope,
    pct_ink_ddct,
    pct_ink_pfaffl,
    quantity_from_ct,
    se_delta_ct,
    se_delta_delta_ct,
    summarise_replicates,
)
from chimera.calculate.limits import MARKER_COLUMNS, RESULT_COLUMNS
from chimera.calculate.qpcr import (
    assert_chimerism_plate,
    compute_qpcr_chimerism,
    informative_markers,
)
from chimera.calculate.qpcr_plate import _by_well
from chimera.calculate.stats import sample_sd, t_quantile
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


@pytest.mark.parametrize(
    ("slope", "methods_md", "printed"), [(-3.196, 105.54, 105.533), (-3.383, 97.51, 97.505)]
)
def test_efficiency_from_slope_fixture(slope: float, methods_md: float, printed: float) -> None:
    """Efficiency from the printed slopes: within 0.01 points of methods.md and of the file."""
    assert efficiency_from_slope(slope) == pytest.approx(methods_md, abs=0.01)
    assert efficiency_from_slope(slope) == pytest.approx(printed, abs=0.01)


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
    """With E = 2 for both targets the Pfaffl ratio is 2^-ΔΔCt: ΔCt 6 vs 1 -> 1/32."""
    pfaffl = pct_ink_pfaffl(
        ct_marker_sample=30.0,
        ct_reference_sample=24.0,
        ct_marker_calibrator=26.0,
        ct_reference_calibrator=25.0,
    )
    assert pfaffl == pytest.approx(100 / 32)


def test_pfaffl_uses_the_marker_efficiency() -> None:
    """A marker amplifying with E = 1.9 two cycles later is 1.9^-2 of the calibrator."""
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


def test_confidence_interval_is_asymmetric_on_pct_scale() -> None:
    """The 95 % CI is 2^-(ΔΔCt ± t·SE), t(0.975, 6) = 2.447: wider above than below."""
    low, high = ci_pct_from_ddct(3.0, se=0.25, dof=6)
    half = 2.447 * 0.25
    assert low == pytest.approx(100 * 2 ** -(3 + half), rel=1e-3)
    assert high == pytest.approx(100 * 2 ** -(3 - half), rel=1e-3)
    assert high - 12.5 > 12.5 - low


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
            st.sampled_from([0.0, 12.5, 33.3, 100.0]),
        ),
        min_size=2,
        max_size=25,
    )
)
def test_sample_sd_is_the_correctly_rounded_stdev(values: list[float]) -> None:
    """The integer-arithmetic SD (replicate Cts, per-locus %) is exactly statistics.stdev."""
    assert sample_sd(values) == statistics.stdev(values)


_WELL_NAMES = st.sampled_from(["A1", "A10", "A2", "a1", "B01", "Ä3", "H12", "Z"])
_TARGET_NAMES = st.one_of(st.none(), st.sampled_from(["", "RPP30", "iNK-M1", "m1", "Ω-2"]))


@given(st.lists(st.tuples(_WELL_NAMES, _TARGET_NAMES, st.integers(0, 9)), max_size=40))
def test_plate_wells_are_ordered_like_the_polars_sort(
    rows: list[tuple[str, str | None, int]],
) -> None:
    """A plate's wells come in the order of polars' well/target sort (nulls last, stable).

    The ordering decides which replicate is first and the order blank Cts are summed in.
    """
    frame = pl.DataFrame(
        {
            "well": [w for w, _, _ in rows],
            "target": [t for _, t, _ in rows],
            "sample_id": [f"S{i}" for _, _, i in rows],
            "ct": [20.0 + i for _, _, i in rows],
            "omitted": [i == 0 for _, _, i in rows],
            "task": [None] * len(rows),
        },
        schema_overrides={"target": pl.String, "task": pl.String},
    )
    expected = frame.sort("well", "target", nulls_last=True, maintain_order=True)
    assert _by_well(frame) == expected.to_dict(as_series=False)


def test_sample_sd_of_equal_and_decimal_replicates() -> None:
    """Equal replicates give exactly 0; decimal Cts round like the exact rational SD."""
    assert sample_sd([25.1, 25.1, 25.1]) == 0.0
    assert sample_sd([25.0, 25.5, 26.0]) == 0.5
    assert sample_sd([31.05, 31.2, 30.97]) == statistics.stdev([31.05, 31.2, 30.97])
    with pytest.raises(ValueError, match="at least 2"):
        sample_sd([25.0])


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
    assert summary.outlier == 2  # 28 and 32 tie at 2 cycles from the median: the later goes
    assert summary.kept == (0, 1)
    assert summary.mean_ct == 29.0
    assert summary.sd_ct == pytest.approx(math.sqrt(2))  # still above 0.5: review, no 2nd trim
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


def test_blank_cut_off_from_blank_wells() -> None:
    """EP17 LoB on the copy scale s = 2^(40 - Ct): blanks 37.0 and Undetermined give s 8, 0.

    mean 4, SD 5.657 -> LoB 13.306 -> Ct 40 - log2(13.306) = 36.266; never later than 38.
    """
    assert blank_ct_cutoff([37.0, None], ct_cutoff=40, tolerance=38) == pytest.approx(
        40 - math.log2(4 + 1.645 * math.sqrt(32)), abs=1e-9
    )
    assert blank_ct_cutoff([None, None, None], ct_cutoff=40, tolerance=38) == 38
    assert blank_ct_cutoff([39.5, 39.8], ct_cutoff=40, tolerance=38) == 38


# --- the real ΔΔCt plate (methods.md 3.5) through the path that writes the table --------------


def test_real_relative_quant_plate_through_compute(real_exports: Path) -> None:
    """The QuantStudio 18S/ANPEP plate with Hs-1 as calibrator: ANPEP 76.02 % and 111.30 %.

    The file has no human 0 % sample, so a baseline whose ANPEP-Human never amplified is added;
    18S is the plate's reference gene (Ct ~14) and each sample has one well per target.
    """
    name = "quantstudio_fast96_relative_quant_results.xlsx"
    wells = parse_appbio(
        detect((real_exports / "qpcr_appbio" / name).read_bytes(), file_name=name)
    ).frame
    baseline = wells.filter(pl.col("sample_id") == "13Jul2022-Hs-1").with_columns(
        sample_id=pl.lit("BASELINE"),
        ct=pl.when(pl.col("target") == "18S").then(pl.col("ct")).otherwise(None),
    )
    plate = pl.concat([wells, baseline]).with_columns(source_sha256=pl.lit("real-plate"))
    samples = manifest(
        [
            ("13Jul2022-Hs-1", "LOT1", "calibrator", "LOT1"),
            ("BASELINE", "P1", "recipient_baseline", None),
            ("13Jul2022-Hs-2", "P1", "post_dose", "LOT1"),
            ("13Jul2022-Hs-3", "P1", "post_dose", "LOT1"),
        ]
    )
    settings = replace(SETTINGS, reference_genes=("18S",), reference_ct_min=10.0, min_replicates=1)
    assert_chimerism_plate(wells, settings=settings, file_name=name)  # 18S declared: accepted
    out = compute_qpcr_chimerism(plate.lazy(), samples, settings=settings)
    hs2, hs3 = (_row(out.results, s) for s in ("13Jul2022-Hs-2", "13Jul2022-Hs-3"))
    pct = {
        (r["sample_id"], r["marker"]): r["pct_ink"]
        for r in out.markers.filter(pl.col("marker") != "18S").iter_rows(named=True)
    }
    # methods.md 3.5: ΔCrt 16.972834 (Hs-2) and 16.422794 (Hs-3) against Hs-1's 16.577312.
    assert pct[("13Jul2022-Hs-2", "ANPEP-Human")] == pytest.approx(76.02142, abs=0.01)
    assert pct[("13Jul2022-Hs-3", "ANPEP-Human")] == pytest.approx(111.30497, abs=0.01)
    # The other two targets by hand from the printed Cts (each well pairs a target with 18S):
    # TJP-1 (27.079618 - 14.564366) - (26.142933 - 14.215207) = 0.587526,
    # AQP4 (33.088749 - 14.208205) - (32.233952 - 13.777439) = 0.424031.
    assert pct[("13Jul2022-Hs-2", "TJP-1 Human")] == pytest.approx(100 * 2**-0.587526, abs=0.01)
    assert pct[("13Jul2022-Hs-2", "AQP4-Human")] == pytest.approx(100 * 2**-0.424031, abs=0.01)
    # The result is their geometric mean: 2^-mean(ΔΔCt) = 72.25 %.
    expected = 100 * 2 ** -((0.395522 + 0.587526 + 0.424031) / 3)
    assert hs2["pct_ink_raw"] == pytest.approx(expected, abs=0.01)
    assert hs2["pct_ink_raw"] == pytest.approx(72.2452, abs=0.01)
    assert hs2["n_informative"] == 3
    assert hs2["source_sha256"] == "real-plate"
    assert hs3["clamped"] is (hs3["pct_ink_raw"] > 100)


def _row(results: pl.DataFrame, sample: str) -> dict[str, object]:
    rows = results.filter(pl.col("sample_id") == sample).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


# --- synthetic plates from copy numbers ------------------------------------------------------

SAMPLES = [
    ("INK-CAL", "LOT1", "calibrator", "LOT1"),
    ("P01-BL", "P01", "recipient_baseline", None),
    *[
        (s, "P01", "post_dose", "LOT1")
        for s in ("P01-D10", "P01-D1", "P01-D5", "P01-ND", "P01-BADREF", "P01-OUT", "P01-PART")
    ],
]


def _run(
    *plates: QpcrPlate,
    settings: QpcrSettings = SETTINGS,
    samples: pl.LazyFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    wells = pl.concat([p.frame() for p in plates], how="vertical_relaxed")
    rows = samples if samples is not None else manifest(SAMPLES)
    output = compute_qpcr_chimerism(wells.lazy(), rows, settings=settings)
    assert output.results.schema == pl.Schema(RESULT_COLUMNS)
    assert output.markers.schema == pl.Schema(MARKER_COLUMNS)
    return output.results, output.markers


def _at(pct: float) -> dict[str, float]:
    return {"ink": pct / 100.0, "patient": 1.0 - pct / 100.0}


@pytest.fixture(scope="module")
def standard_plate() -> tuple[pl.DataFrame, pl.DataFrame]:
    plate = QpcrPlate()
    plate.controls()
    plate.dna("P01-D10", _at(10.0))
    plate.dna("P01-D1", _at(1.0), genomes=14_000)
    plate.dna("P01-ND", _at(0.0))
    plate.dna("P01-BADREF", _at(10.0), genomes=3)  # RPP30 6 copies -> Ct 32.4 > 32
    ref, s04, s07 = (ct_for(t, c) for t, c in ((REFERENCE, 20_000), ("S04", 1_000), ("S07", 2_000)))
    assert ref is not None and s04 is not None and s07 is not None
    plate.add("P01-OUT", REFERENCE, [ref - 0.02, ref, ref + 0.02])
    plate.add("P01-OUT", "S04", [s04, s04 + 0.05, s04 + 2.0])
    plate.add("P01-OUT", "S07", [s07 - 0.03, s07, s07 + 0.03])
    plate.add("P01-PART", REFERENCE, [ref, ref + 0.05, ref - 0.05])
    plate.add("P01-PART", "S04", [ct_for("S04", 2), None, None])
    plate.add("P01-PART", "S07", [None, None, None])
    return _run(plate)


@pytest.mark.parametrize(("sample", "truth"), [("P01-D10", 10.0), ("P01-D1", 1.0)])
def test_known_pct_is_recovered(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame], sample: str, truth: float
) -> None:
    """Samples built from copy numbers at 10 % and 1 % read exactly that, truth inside the CI."""
    row = _row(standard_plate[0], sample)
    assert row["result_status"] == "quantified"
    assert row["qc_verdict"] == "pass"
    assert row["pct_ink"] == pytest.approx(truth, rel=1e-9)
    assert row["ci_low"] < truth < row["ci_high"]
    assert row["n_informative"] == 2
    assert row["source_sha256"] == "plate-1"


def test_ci_and_quantile_by_hand(standard_plate: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    """Every group of 3 wells has SD 0.05: per marker Var(log2 f) = 4 x 0.05²/3 (Welch ν = 8);
    two equal markers: SE = √(2 x 4 x 0.05²/3)/2 = 0.040825 with ν = 16, t = 2.1199.
    """
    row = _row(standard_plate[0], "P01-D10")
    se = math.sqrt(2 * 4 * 0.05**2 / 3) / 2
    t = t_quantile(0.975, 16)
    assert t == pytest.approx(2.1199, abs=1e-4)
    assert row["ci_quantile"] == pytest.approx(t, rel=1e-9)
    assert row["ci_low"] == pytest.approx(10.0 * 2 ** (-t * se), rel=1e-9)
    assert row["ci_high"] == pytest.approx(10.0 * 2 ** (t * se), rel=1e-9)


def test_all_undetermined_is_not_detected(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """No amplified marker replicate: not detected, no value, upper bound = the sample LoD."""
    row = _row(standard_plate[0], "P01-ND")
    assert row["result_status"] == "not_detected"
    assert row["pct_ink"] is None
    assert row["ci_high"] == row["lod_pct"]
    assert row["ci_quantile"] is None


def test_sample_lod_is_one_crossing_at_the_cut_off() -> None:
    """Sample LoD = the fraction one Ct-40 crossing represents, from copy numbers.

    30 genomes: S04 at Ct 40 = 2^(36.2 - 40) = 0.0718 copies = 0.2393 % of 30 one-copy genomes;
    S07 2^(37.1 - 40) = 0.1340 copies of 60 = 0.2233 %; geometric mean 0.2312 %.
    """
    plate = QpcrPlate()
    plate.controls()
    plate.dna("P01-ND", _at(0.0), genomes=30)
    row = _row(_run(plate)[0], "P01-ND")
    s04 = 100 * 2 ** (36.2 - 40) / 30
    s07 = 100 * 2 ** (37.1 - 40) / 60
    assert row["lod_pct"] == pytest.approx(math.sqrt(s04 * s07), rel=1e-9)
    assert row["lod_pct"] == pytest.approx(0.2312, abs=1e-4)


def test_bad_reference_ct_fails_for_dna_input(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """A reference Ct outside the window is a DNA-input failure, never 'not detected'."""
    row = _row(standard_plate[0], "P01-BADREF")
    assert row["result_status"] == "failed"
    assert row["qc_verdict"] == "fail"
    assert row["pct_ink"] is None
    assert "DNA input" in str(row["qc_reasons"])
    assert "outside [15, 32]" in str(row["qc_reasons"])


def test_outlier_replicate_is_excluded_and_recovery_holds(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """The replicate 2 cycles off is dropped; the estimate stays at 10 % (2^-0.025 of it)."""
    results, markers = standard_plate
    row = _row(results, "P01-OUT")
    # S04 keeps Cts s04 and s04 + 0.05 (mean +0.025 cycles); S07 is exact.
    assert row["pct_ink"] == pytest.approx(10.0 * math.sqrt(2**-0.025), rel=1e-9)
    s04 = markers.filter((pl.col("sample_id") == "P01-OUT") & (pl.col("marker") == "S04"))
    excluded = s04.filter(~pl.col("included"))
    assert excluded.height == 1
    assert "outlier" in excluded["exclusion_reason"][0]


def test_partial_amplification_is_below_loq(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """1 of 6 marker replicates amplified: detected, kept as an estimate, never quantified.

    The one S04 crossing holds 2 copies in 10,000 genomes (RPP30 20,000 copies): 0.02 %.
    """
    row = _row(standard_plate[0], "P01-PART")
    assert row["result_status"] == "below_loq"
    assert row["pct_ink"] == pytest.approx(0.02, rel=1e-9)
    assert "1/6 marker replicates amplified" in str(row["qc_reasons"])


def test_markers_frame_has_one_row_per_replicate(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """Detail rows: 3 replicates x (2 markers + reference) per sample, per-marker % on markers."""
    markers = standard_plate[1].filter(pl.col("sample_id") == "P01-D10")
    assert markers.height == 9
    assert set(markers["marker"]) == {REFERENCE, "S04", "S07"}
    s04 = markers.filter(pl.col("marker") == "S04")
    assert s04["pct_ink"].to_list() == pytest.approx([10.0] * 3, rel=1e-9)
    assert s04["included"].all()
    assert set(markers["source_sha256"]) == {"plate-1"}
    assert markers.filter(pl.col("marker") == REFERENCE)["pct_ink"].null_count() == 3


def test_only_post_dose_samples_are_reported(
    standard_plate: tuple[pl.DataFrame, pl.DataFrame],
) -> None:
    """Calibrator, baseline and NTC wells give no result rows."""
    reported = set(standard_plate[0]["sample_id"])
    assert reported == {"P01-D10", "P01-D1", "P01-ND", "P01-BADREF", "P01-OUT", "P01-PART"}


def test_ntc_gate_applies_to_its_own_plate_only() -> None:
    """An NTC amplifying before ntc_ct_min fails the samples of that plate, not of the next."""
    dirty, clean = QpcrPlate("plate-A"), QpcrPlate("plate-B")
    dirty.controls(ntc_ct=30.0)
    dirty.dna("P01-D10", _at(10.0))
    clean.controls()
    clean.dna("P01-D5", _at(5.0))
    results = _run(dirty, clean)[0]
    failed = _row(results, "P01-D10")
    assert failed["result_status"] == "failed"
    assert "no-template well" in str(failed["qc_reasons"])
    assert "plate contaminated" in str(failed["qc_reasons"])
    assert _row(results, "P01-D5")["pct_ink"] == pytest.approx(5.0, rel=1e-9)


def test_late_ntc_does_not_fail_the_plate() -> None:
    """An NTC crossing after ntc_ct_min is tolerated."""
    plate = QpcrPlate()
    plate.controls(ntc_ct=39.0)
    plate.dna("P01-D10", _at(10.0))
    assert _row(_run(plate)[0], "P01-D10")["result_status"] == "quantified"


def test_missing_calibrator_on_plate_fails() -> None:
    """The 100 % calibrator must be on the sample's own plate."""
    controls = QpcrPlate("plate-controls")
    controls.controls()
    other = QpcrPlate("plate-samples")
    other.dna("P01-D10", _at(10.0))
    row = _row(_run(controls, other)[0], "P01-D10")
    assert row["result_status"] == "failed"
    assert "no 100 % calibrator (donor_reference or calibrator)" in str(row["qc_reasons"])
    assert "on plate" in str(row["qc_reasons"])


def test_baseline_may_sit_on_another_plate() -> None:
    """Marker carriage comes from any plate (the screening plate); the calibrator from this one."""
    screening = QpcrPlate("plate-screen")
    screening.dna("P01-BL", {"patient": 1.0}, genomes=8_000)
    plate = QpcrPlate("plate-samples")
    plate.dna("INK-CAL", {"ink": 1.0}, genomes=5_000)
    plate.dna("P01-D10", _at(10.0))
    row = _row(_run(screening, plate)[0], "P01-D10")
    assert row["result_status"] == "quantified"
    assert row["pct_ink"] == pytest.approx(10.0, rel=1e-9)


def test_marker_carried_by_the_patient_is_not_informative() -> None:
    """S09 is carried by product and patient: excluded with the reason; S04/S07 still report."""
    plate = QpcrPlate()
    plate.controls(targets=(REFERENCE, "S04", "S07", "S09"))
    plate.dna("P01-D10", _at(10.0), targets=(REFERENCE, "S04", "S07", "S09"))
    results, markers = _run(plate)
    assert _row(results, "P01-D10")["n_informative"] == 2
    s09 = markers.filter((pl.col("sample_id") == "P01-D10") & (pl.col("marker") == "S09"))
    assert s09.height == 3
    assert not s09["included"].any()
    assert s09["sharing"].to_list() == ["not_informative"] * 3
    assert "pre-dose baseline carries it" in s09["exclusion_reason"][0]
    found = informative_markers(
        plate.frame().lazy(),
        product_sample_ids=["INK-CAL"],
        baseline_sample_ids=["P01-BL"],
        settings=SETTINGS,
    )
    assert found == ["S04", "S07"]


def test_efficiency_correction_with_standard_curves() -> None:
    """A 90 %-efficient marker (E 1.9, slope -3.59): Cts from copies with E = 1.9 read 5 %."""
    e_marker, e_ref = 10 ** (1 / 3.59), 10 ** (1 / 3.32)
    plate = QpcrPlate()

    def wells(sample: str, genomes: float, pct: float) -> None:
        ref = C1[REFERENCE] - math.log(2 * genomes) / math.log(e_ref)
        marker_copies = genomes * pct / 100
        plate.add(sample, REFERENCE, [ref + j for j in JITTER], slope=-3.32)
        marker = C1["S04"] - math.log(marker_copies) / math.log(e_marker) if pct else None
        marker_cts = [None if marker is None else marker + j for j in JITTER]
        plate.add(sample, "S04", marker_cts, slope=-3.59)

    wells("INK-CAL", 5_000, 100.0)
    wells("P01-BL", 8_000, 0.0)
    wells("P01-D5", 12_000, 5.0)
    row = _row(_run(plate)[0], "P01-D5")
    assert row["pct_ink"] == pytest.approx(5.0, rel=1e-6)
    e2 = QpcrPlate()
    e2.rows = [{**r, "slope": None} for r in plate.rows]
    assert abs(_row(_run(e2)[0], "P01-D5")["pct_ink"] - 5.0) > 0.5  # E = 2 would be wrong


def test_amplifying_blank_sets_a_limit_of_blank() -> None:
    """A genomic 0 % control reading 0.2 % in 3 wells sets the LoB (CLSI EP17-A2 by hand).

    Blanks on the plate: NEG-1's S04 wells 0.2 % x 3 and S07 0 x 3, the baseline's 6 marker
    wells (0) and the 4 NTC marker wells (0): mean + 1.645 SD over those 16 results.
    """
    plate = QpcrPlate()
    plate.controls()
    plate.add("NEG-1", REFERENCE, [ct_for(REFERENCE, 20_000)] * 3)
    plate.add("NEG-1", "S04", [ct_for("S04", 20)] * 3)  # 20 copies in 10,000 genomes = 0.2 %
    plate.add("NEG-1", "S07", [None] * 3)
    plate.dna("P01-D1", _at(0.1))
    plate.dna("P01-D10", _at(5.0))
    rows = [(*row, None) for row in SAMPLES] + [("NEG-1", "NEG", "negative_control", None, "PB")]
    samples = manifest(rows, [*MANIFEST_COLUMNS, "specimen"])
    results = _run(plate, samples=samples)[0]
    blanks = [0.2] * 3 + [0.0] * 13
    lob = statistics.fmean(blanks) + 1.645 * statistics.stdev(blanks)
    row = _row(results, "P01-D1")
    assert row["lod_pct"] == pytest.approx(lob, rel=1e-9)
    assert row["result_status"] == "not_detected"
    assert "not above the blank limit" in str(row["qc_reasons"])
    assert _row(results, "P01-D10")["result_status"] == "quantified"


def test_omitted_wells_are_excluded() -> None:
    """Wells omitted in the instrument software never enter the mean."""
    plate = QpcrPlate()
    plate.controls()
    plate.dna("P01-D10", _at(10.0))
    plate.add("P01-D10", "S04", [20.0], omitted=True)
    results, markers = _run(plate)
    assert _row(results, "P01-D10")["pct_ink"] == pytest.approx(10.0, rel=1e-9)
    omitted = markers.filter(pl.col("ct") == 20.0)
    assert omitted["exclusion_reason"].to_list() == ["omitted in the instrument software"]


def test_no_baseline_fails_with_reason() -> None:
    """Without a baseline the markers cannot be shown iNK-specific: failed, reason given."""
    plate = QpcrPlate()
    plate.dna("INK-CAL", {"ink": 1.0}, genomes=5_000)
    plate.dna("P01-D10", _at(10.0))
    row = _row(_run(plate)[0], "P01-D10")
    assert row["result_status"] == "failed"
    assert "pre-dose baseline was not tested" in str(row["qc_reasons"])


def test_stricter_min_replicates_demotes_to_below_loq() -> None:
    """min_replicates above the replicate count keeps the value but never quantifies it."""
    plate = QpcrPlate()
    plate.controls()
    plate.dna("P01-D10", _at(10.0))
    row = _row(_run(plate, settings=replace(SETTINGS, min_replicates=4))[0], "P01-D10")
    assert row["result_status"] == "below_loq"
    assert row["pct_ink"] == pytest.approx(10.0, rel=1e-9)


def test_qpcr_early_sporadic_baseline_well_is_still_suspect() -> None:
    """A baseline well before the cut-off (Ct 36.5, 1 of 3) is not 'absent': marker unused."""
    plate = QpcrPlate()
    plate.dna("INK-CAL", {"ink": 1.0}, genomes=5_000)
    plate.add("P01-BL", REFERENCE, [ct_for(REFERENCE, 16_000)] * 3)
    plate.add("P01-BL", "S04", [None, 36.5, None])
    plate.add("P01-BL", "S07", [None, None, None])
    plate.dna("P01-D10", _at(10.0))
    out = compute_qpcr_chimerism(plate.frame().lazy(), manifest(SAMPLES), settings=SETTINGS)
    row = _row(out.results, "P01-D10")
    assert row["n_informative"] == 1
    s04 = out.markers.filter((pl.col("sample_id") == "P01-D10") & (pl.col("marker") == "S04"))
    assert "amplified in 1/3 wells" in s04["exclusion_reason"][0]


# --- properties ---------------------------------------------------------------------------------


def _single_marker_pct(marker_ct: float) -> float:
    plate = QpcrPlate()
    plate.controls(targets=(REFERENCE, "S04"))
    ref = ct_for(REFERENCE, 20_000)
    plate.add("P01-D5", REFERENCE, [ref] * 3)
    plate.add("P01-D5", "S04", [marker_ct] * 3)
    value = _row(_run(plate)[0], "P01-D5")["pct_ink_raw"]
    assert isinstance(value, float)
    return value


@settings(max_examples=25, deadline=None)
@given(
    first=st.floats(min_value=21.0, max_value=39.5),
    second=st.floats(min_value=21.0, max_value=39.5),
)
def test_pct_is_monotone_in_delta_ct(first: float, second: float) -> None:
    """A later marker Ct (larger ΔCt at the same reference Ct) never reads more iNK."""
    low_ct, high_ct = sorted((first, second))
    if high_ct - low_ct < 1e-6:
        return
    assert _single_marker_pct(low_ct) > _single_marker_pct(high_ct)


@settings(max_examples=15, deadline=None)
@given(order=st.permutations(list(range(42))))
def test_results_do_not_depend_on_well_order(order: list[int]) -> None:
    """Any order of the wells (rows) gives the same results and detail rows."""
    plate = QpcrPlate()
    plate.controls()
    plate.dna("P01-D10", _at(10.0))
    plate.dna("P01-D1", _at(1.0), genomes=14_000)
    frame = plate.frame()
    assert frame.height == 42
    shuffled = frame[order]
    first = compute_qpcr_chimerism(frame.lazy(), manifest(SAMPLES), settings=SETTINGS)
    second = compute_qpcr_chimerism(shuffled.lazy(), manifest(SAMPLES), settings=SETTINGS)
    assert first.results.sort("sample_id").equals(second.results.sort("sample_id"))
    keys = ["sample_id", "marker", "replicate"]
    assert first.markers.sort(keys).equals(second.markers.sort(keys))


# --- plate check --------------------------------------------------------------------------------


def test_plate_check_needs_a_marker_beside_the_reference_gene() -> None:
    """RPP30 + markers is a chimerism plate; the same plate without its markers is refused."""
    plate = QpcrPlate()
    plate.controls()
    frame = plate.frame()
    assert_chimerism_plate(frame, settings=SETTINGS, file_name="plate.txt")
    only_reference = frame.filter(pl.col("target") == REFERENCE)
    with pytest.raises(NotChimerismAssayError, match="no donor-specific marker"):
        assert_chimerism_plate(only_reference, settings=SETTINGS, file_name="plate.txt")


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


def test_reference_gene_matcher_is_shared_and_token_aware() -> None:
    """qPCR and ddPCR read reference-gene names alike: case, separators and dye suffixes aside."""
    genes = QpcrSettings().reference_genes
    assert qpcr.is_reference_gene is ddpcr.is_reference_gene
    assert qpcr.is_reference_gene("rnase-p", genes)
    assert qpcr.is_reference_gene("RPP30_VIC", genes)
    assert not qpcr.is_reference_gene("HbS", genes)
    assert not qpcr.is_reference_gene(None, genes)
