"""Stutter must not bias STR (issue 9.2; methods.md 2.4, 2.6): ratios, correction, exclusion."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from str_simulation import (
    SINGLE_DONOR_SAMPLES,
    SimTrial,
    accuracy,
    make_loci,
    manifest,
    profile_peaks,
    real_profile,
    simulate_trial,
)

from chimera.calculate.str_chimerism import compute_str_chimerism
from chimera.calculate.stutter import LocusStutter, correct_stutter, expected_stutter
from chimera.calculate.stutter_ratios import (
    PUBLISHED_BACK_STUTTER,
    StutterLookup,
    estimate_stutter_ratios,
    single_source_samples,
)
from chimera.settings import StrSettings
from schemas.stutter import StutterRatioEstimates
from schemas.vocab import ResultStatus, Role, StutterDirection, StutterSource

SETTINGS = StrSettings()
UNCORRECTED = replace(SETTINGS, stutter_correction=False)
TETRA = PUBLISHED_BACK_STUTTER[4]

# --- simulated trials: the test that would have caught the bias (issue 16) -------------------

SEEDS = (1, 2, 3)
Runs = list[tuple[SimTrial, pl.DataFrame, pl.DataFrame]]


@pytest.fixture(scope="module")
def trials() -> Runs:
    """Three seeded trials, each computed uncorrected and with the default settings."""
    runs = []
    for seed in SEEDS:
        trial = simulate_trial(seed)
        peaks, samples = trial.peaks.lazy(), trial.samples.lazy()
        plain = compute_str_chimerism(peaks, samples, settings=UNCORRECTED).results
        default = compute_str_chimerism(peaks, samples, settings=SETTINGS).results
        runs.append((trial, plain, default))
    return runs


def _pooled(runs: Runs, index: int) -> tuple[float, float]:
    """Median over trials of the median bias, and the pooled share within 1 pp (>= 5 %)."""
    biases, hits, n = [], 0.0, 0
    for trial, *results in runs:
        acc = accuracy(results[index], trial.truth_pct, min_pct=5.0)
        biases.append(acc.median_bias_pp)
        hits += acc.within_1pp * acc.n
        n += acc.n
    return statistics.median(biases), hits / n


def test_uncorrected_stutter_biases_str_upward(trials: Runs) -> None:
    """Without correction realistic back stutter lifts % iNK by about 1-2 points (issue 9.2)."""
    bias, within = _pooled(trials, 0)
    assert bias > 0.8
    assert within < 0.7


def test_default_stutter_correction_meets_the_accuracy_target(trials: Runs) -> None:
    """Median bias < 0.3 pp and >= 95 % of samples >= 5 % iNK within 1 pp of truth."""
    bias, within = _pooled(trials, 1)
    assert abs(bias) < 0.3
    assert within >= 0.95


def test_true_zero_samples_are_not_quantified(trials: Runs) -> None:
    """Stutter residue on iNK alleles is no iNK: 0 % samples are not detected when corrected."""
    for trial, plain, default in trials:
        zero = [s for s, pct in trial.truth_pct.items() if pct == 0]
        corrected = default.filter(pl.col("sample_id").is_in(zero))
        assert set(corrected["result_status"]) == {ResultStatus.NOT_DETECTED}
        assert corrected["pct_ink"].null_count() == len(zero)
        uncorrected = plain.filter(pl.col("sample_id").is_in(zero))
        assert (uncorrected["result_status"] != ResultStatus.NOT_DETECTED).sum() > len(zero) / 2


def test_stutter_is_never_called_contamination(trials: Runs) -> None:
    """No clean simulated sample is flagged as contaminated (stutter lands on alleles)."""
    for _, _, default in trials:
        flagged = default.filter(pl.col("qc_reasons").str.contains("contamination"))
        assert flagged.height == 0


def test_results_carry_the_t_quantile_of_their_ci(trials: Runs) -> None:
    """ci_quantile = t(0.975, retained loci - 1) wherever a CI was built."""
    for _, _, default in trials:
        with_ci = default.filter(
            pl.col("ci_low").is_not_null() & (pl.col("ci_low") < pl.col("ci_high"))
        )
        assert with_ci.height > 0
        assert with_ci["ci_quantile"].null_count() == 0
        assert with_ci["ci_quantile"].min() > 1.96  # type: ignore[operator]


def test_ratios_measured_on_the_simulated_references_are_close_to_truth() -> None:
    """Median stutter/parent from the single-source profiles recovers each locus's ratio."""
    trial = simulate_trial(4)
    table = estimate_stutter_ratios(trial.peaks, trial.samples, settings=SETTINGS)
    StutterRatioEstimates.validate(table)
    back = table.filter(pl.col("direction") == StutterDirection.BACK)
    assert set(back["source"]) == {StutterSource.MEASURED}
    assert back["n_observations"].min() >= 5  # type: ignore[operator]
    truth = {locus.name: locus.back_stutter for locus in make_loci(random.Random(4))}
    for marker, ratio in back.select("marker", "ratio").iter_rows():
        assert ratio == pytest.approx(truth[marker], rel=0.2), marker


# --- ratio estimation on real single-source profiles -----------------------------------------


def test_real_references_give_measured_configured_and_published_ratios(real_exports: Path) -> None:
    """Rchimerism single-donor references: D5S818 11/12 = 0.1318 (donor), FGA 0.1395 (patient).

    The donor's FGA 20 next to 21 (28 % of it, removed by the reference filter) is above
    ``max_stutter_ratio`` and is not used; loci without a clean stutter peak get the published
    tetra-/pentanucleotide mean.
    """
    refs = pl.concat(
        [
            real_profile(real_exports, "rchimerism_single_donor_ddata_donor.txt", "INK"),
            real_profile(real_exports, "rchimerism_single_donor_rdata_recipient.txt", "PRE"),
        ]
    )
    table = estimate_stutter_ratios(refs, SINGLE_DONOR_SAMPLES, settings=SETTINGS)
    StutterRatioEstimates.validate(table)
    back = {
        m: (r, n, src, ids)
        for m, r, n, src, ids in table.filter(pl.col("direction") == StutterDirection.BACK)
        .select("marker", "ratio", "n_observations", "source", "source_sample_ids")
        .iter_rows()
    }
    assert back["D5S818"][:3] == (pytest.approx(6099 / 46281), 1, StutterSource.MEASURED)
    assert back["D5S818"][3] == "INK"
    assert back["FGA"][0] == pytest.approx(0.1394801583)
    assert back["FGA"][3] == "PRE"
    assert back["TH01"][:3] == (TETRA, 0, StutterSource.PUBLISHED)
    assert back["Penta E"][0] == PUBLISHED_BACK_STUTTER[5]
    assert len(back) == 15
    forward = table.filter(pl.col("direction") == StutterDirection.FORWARD)
    assert forward["ratio"].unique().to_list() == [pytest.approx(0.0230586569)]  # panel-wide
    assert forward["n_observations"].unique().to_list() == [5]


def test_configured_ratios_come_before_published_ones() -> None:
    """Fallback order: measured, then StrSettings.stutter_ratios / default, then published."""
    refs = pl.concat(
        [
            profile_peaks("INK", {"D3S1358": {"14": 5000.0, "13": 400.0}, "vWA": {"16": 5000.0}}),
            profile_peaks("PRE", {"D3S1358": {"17": 5000.0}, "vWA": {"18": 5000.0}}),
        ]
    )
    samples = SINGLE_DONOR_SAMPLES.filter(pl.col("sample_id") != "S1")

    def ratios(settings: StrSettings) -> dict[str, float]:
        table = estimate_stutter_ratios(refs, samples, settings=settings)
        back = table.filter(pl.col("direction") == StutterDirection.BACK)
        return dict(back.select("marker", "ratio").iter_rows())

    assert ratios(SETTINGS) == {"D3S1358": 0.08, "vWA": TETRA}
    configured = replace(SETTINGS, stutter_ratios={"VWA": 0.05, "D3S1358": 0.2})
    assert ratios(configured) == {"D3S1358": 0.08, "vWA": 0.05}
    assert ratios(replace(SETTINGS, default_stutter_ratio=0.0)) == {"D3S1358": 0.08, "vWA": 0.0}
    assert ratios(replace(SETTINGS, min_stutter_observations=2)) == {"D3S1358": TETRA, "vWA": TETRA}


def test_single_source_profiles_are_references_and_two_genome_baselines() -> None:
    """A three-genome patient's baseline is a mixture: never used to measure stutter."""
    samples = manifest(
        [
            ("REF", "LOT1", Role.DONOR_REFERENCE, "LOT1"),
            ("CAL", "LOT1", Role.CALIBRATOR, "LOT1"),
            ("BL1", "P1", Role.RECIPIENT_BASELINE, "LOT1"),
            ("BL2", "P2", Role.RECIPIENT_BASELINE, "LOT1"),
            ("GL2", "P2", Role.RECIPIENT_GERMLINE, "LOT1"),
            ("HD2", "P2", Role.HSCT_DONOR, "LOT1"),
            ("S1", "P1", Role.POST_DOSE, "LOT1"),
        ]
    )
    assert single_source_samples(samples)["sample_id"].to_list() == [
        "REF", "CAL", "BL1", "GL2", "HD2",
    ]  # fmt: skip


def test_each_kit_gets_its_own_ratios() -> None:
    """Profiles of two panels give two sets of ratios; a sample uses its own panel's."""
    kit_a = {"D3S1358": {"15": 4000.0, "14": 400.0}, "vWA": {"17": 4000.0}, "FGA": {"22": 4000.0}}
    kit_b = {
        "D3S1358": {"15": 4000.0, "14": 200.0},
        "SE33": {"20": 4000.0},
        "D2S1338": {"19": 4000.0},
    }
    refs = pl.concat([profile_peaks("A", kit_a), profile_peaks("B", kit_b)])
    samples = manifest(
        [("A", "LOT1", Role.DONOR_REFERENCE, "LOT1"), ("B", "LOT2", Role.DONOR_REFERENCE, "LOT2")]
    )
    table = estimate_stutter_ratios(refs, samples, settings=SETTINGS)
    assert table["panel"].n_unique() == 2
    for markers, expected in (
        (["D3S1358", "vWA", "FGA"], 0.1),
        (["D3S1358", "SE33", "D2S1338"], 0.05),
    ):
        lookup = StutterLookup(table, markers, settings=SETTINGS)
        assert lookup.at("D3S1358").back == pytest.approx(expected)
        assert lookup.at("D3S1358").source is StutterSource.MEASURED
    assert StutterLookup(table, ["TH01", "TPOX"], settings=SETTINGS).at("D3S1358").back == TETRA


# --- correction -------------------------------------------------------------------------------


def test_correction_subtracts_only_the_stutter_of_expected_alleles() -> None:
    """s_corr(x) = s(x) - SR_b * s_corr(x+1) - SR_f * s(x-1), parents = expected alleles only."""
    stutter = LocusStutter(back=0.1, back_sd=0.02, forward=0.01, forward_sd=0.005)
    signals = {"12": 300.0, "13": 1000.0, "14": 2000.0, "16": 500.0, "17": 80.0}
    out = correct_stutter(signals, {"13", "14"}, stutter)
    assert out["14"] == pytest.approx(2000.0 - 0.01 * 1000.0)
    assert out["13"] == pytest.approx(1000.0 - 0.1 * 1990.0)
    assert out["12"] == pytest.approx(300.0 - 0.1 * 801.0)
    assert out["16"] == 500.0  # 17 is no expected allele: it does not stutter into 16
    assert out["17"] == 80.0
    mean, sd = expected_stutter("12", {"13": 800.0}, {"13"}, stutter)
    assert (mean, sd) == (pytest.approx(80.0), pytest.approx(16.0))
    assert correct_stutter({"9": 50.0, "10": 1000.0}, {"10"}, LocusStutter(back=0.1)) == {
        "9": 0.0,
        "10": 1000.0,
    }


def test_published_outlier_case_with_correction() -> None:
    """Seven 221 loci (10/11 vs 10/12; Rchimerism test_chiSD.R): allele 11 sits at n-1 of the
    patient's 12, so the corrected value is (500 - SR * 500) / (that + 500) = 48.10 %, not the
    published (uncorrected) 50 % of test_str_chimerism.py."""
    donor = {f"L{i}": {"10": 1000.0, "11": 1000.0} for i in range(7)}
    patient = {f"L{i}": {"10": 1000.0, "12": 1000.0} for i in range(7)}
    sample = {f"L{i}": {"10": 1000.0, "11": 500.0, "12": 500.0} for i in range(6)}
    sample["L6"] = {"10": 1000.0, "11": 950.0, "12": 50.0}
    peaks = pl.concat(
        [profile_peaks("INK", donor), profile_peaks("PRE", patient), profile_peaks("S1", sample)]
    )
    out = compute_str_chimerism(peaks.lazy(), SINGLE_DONOR_SAMPLES.lazy(), settings=SETTINGS)
    ink = 500.0 - TETRA * 500.0
    result = out.results.row(0, named=True)
    assert result["pct_ink"] == pytest.approx(100 * ink / (ink + 500.0))
    assert out.markers.filter(pl.col("exclusion_reason") == "outlier")["marker"].to_list() == ["L6"]
    assert out.markers["stutter_ratio"].unique().to_list() == [TETRA]


# --- loci whose stutter cannot be corrected reliably (Nollet) --------------------------------

DONOR = {"L1": ["10", "12"], "L2": ["20"], "L3": ["30", "32"], "L4": ["13", "16"]}
PATIENT = {"L1": ["15", "17"], "L2": ["24", "26"], "L3": ["35"], "L4": ["14", "18"]}


def _mixture(
    pct: float, *, stutter_ratio: float = TETRA, total: float = 10_000.0
) -> dict[str, dict[str, float]]:
    """Dosage-model peaks; iNK 13 at L4 carries the patient's 14 back stutter."""
    f = pct / 100
    sample: dict[str, dict[str, float]] = {}
    for marker in DONOR:
        sample[marker] = {}
        for genome, weight in ((DONOR, f), (PATIENT, 1 - f)):
            for allele in genome[marker]:
                share = weight * total / len(genome[marker])
                sample[marker][allele] = sample[marker].get(allele, 0.0) + share
    sample["L4"]["13"] += stutter_ratio * sample["L4"]["14"]
    return sample


def _references() -> pl.DataFrame:
    """Single-source references without stutter peaks: the published ratio applies."""
    donor = {m: dict.fromkeys(alleles, 4000.0) for m, alleles in DONOR.items()}
    patient = {m: dict.fromkeys(alleles, 4000.0) for m, alleles in PATIENT.items()}
    return pl.concat([profile_peaks("INK", donor), profile_peaks("PRE", patient)])


def _compute(
    sample: dict[str, dict[str, float]], refs: pl.DataFrame, settings: StrSettings = SETTINGS
) -> tuple[dict, pl.DataFrame]:
    peaks = pl.concat([refs, profile_peaks("S1", sample)])
    out = compute_str_chimerism(peaks.lazy(), SINGLE_DONOR_SAMPLES.lazy(), settings=settings)
    return out.results.row(0, named=True), out.markers


def test_low_level_locus_with_uncertain_stutter_is_excluded() -> None:
    """At 5 % iNK the published ratio's uncertainty (SD 174 RFU) dwarfs iNK 13 (250 RFU)."""
    result, markers = _compute(_mixture(5.0), _references())
    l4 = markers.filter(pl.col("marker") == "L4").row(0, named=True)
    assert l4["pct_ink"] == pytest.approx(5.0)  # the correction itself is right here
    assert l4["included"] is False
    assert "iNK allele 13 in the stutter position of 14" in l4["exclusion_reason"]
    assert result["pct_ink"] == pytest.approx(5.0)
    assert result["n_informative"] == 4
    assert "stutter correction is unreliable at this level: L4" in result["qc_reasons"]
    kept, markers = _compute(
        _mixture(5.0), _references(), replace(SETTINGS, min_informative_loci=4)
    )
    assert markers["included"].to_list() == [True] * 4  # too few loci would remain
    assert kept["pct_ink"] == pytest.approx(5.0)
    high, markers = _compute(_mixture(50.0), _references())
    assert markers["included"].to_list() == [True] * 4  # iNK 13 at 50 % is far above its SD
    assert high["pct_ink"] == pytest.approx(50.0)


def test_well_measured_ratio_keeps_the_locus() -> None:
    """Four consistent single-source observations make the correction reliable at 5 %."""
    donor = {m: dict.fromkeys(alleles, 4000.0) for m, alleles in DONOR.items()}
    patient = {m: dict.fromkeys(alleles, 4000.0) for m, alleles in PATIENT.items()}
    donor["L4"].update({"12": 0.070 * 4000.0, "15": 0.075 * 4000.0})
    patient["L4"].update({"13": 0.072 * 4000.0, "17": 0.078 * 4000.0})
    refs = pl.concat([profile_peaks("INK", donor), profile_peaks("PRE", patient)])
    result, markers = _compute(_mixture(5.0, stutter_ratio=0.0735), refs)
    l4 = markers.filter(pl.col("marker") == "L4").row(0, named=True)
    assert l4["stutter_ratio"] == pytest.approx(0.0735)
    assert l4["included"] is True
    assert l4["pct_ink"] == pytest.approx(5.0)
    assert result["pct_ink"] == pytest.approx(5.0)


def test_uncorrected_run_keeps_the_biased_locus() -> None:
    """With correction off the stutter stays in the iNK signal: L4 reads high (published way)."""
    result, markers = _compute(_mixture(5.0), _references(), UNCORRECTED)
    l4 = markers.filter(pl.col("marker") == "L4").row(0, named=True)
    stutter = TETRA * 0.95 * 5000.0
    assert l4["pct_ink"] == pytest.approx(100 * (500.0 + stutter) / (10_000.0 + stutter))
    assert result["pct_ink"] > 5.4


# --- foreign-allele check judges residuals, never stutter (issue 16) --------------------------


def _one_locus(extra: dict[str, dict[str, float]], settings: StrSettings = SETTINGS) -> dict:
    """iNK 16/17 with patient 14 (homozygote) at D3S1358, plus a clean second and third locus."""
    donor = {"D3S1358": {"16": 2000.0, "17": 2000.0}, "vWA": {"15": 4000.0}, "FGA": {"20": 4000.0}}
    patient = {"D3S1358": {"14": 4000.0}, "vWA": {"18": 4000.0}, "FGA": {"24": 4000.0}}
    sample = {
        "D3S1358": {"14": 9000.0, "16": 500.0, "17": 500.0},
        "vWA": {"15": 1000.0, "18": 9000.0},
        "FGA": {"20": 1000.0, "24": 9000.0},
    }
    for marker, alleles in extra.items():
        sample[marker].update(alleles)
    result, _ = _compute(
        sample, pl.concat([profile_peaks("INK", donor), profile_peaks("PRE", patient)]), settings
    )
    return result


@pytest.mark.parametrize("settings", [SETTINGS, UNCORRECTED])
def test_stutter_of_a_patient_allele_is_not_contamination(settings: StrSettings) -> None:
    """D3S1358 13 at n-1 of the patient's 14 (the P05-D015 case) is stutter, not a swap."""
    for ratio in (0.05, 0.09, 0.14):
        result = _one_locus({"D3S1358": {"13": ratio * 9000.0}}, settings)
        assert "contamination" not in (result["qc_reasons"] or "")
        assert result["qc_verdict"] == "pass"


def test_foreign_alleles_still_send_the_sample_to_review() -> None:
    """An allele away from stutter positions, or oversized stutter peaks at two loci, is foreign."""
    away = _one_locus({"D3S1358": {"11": 1500.0}})
    assert away["qc_verdict"] == "review"
    assert "possible contamination or sample swap" in away["qc_reasons"]
    assert "D3S1358 11" in away["qc_reasons"]
    single = _one_locus({"D3S1358": {"13": 0.4 * 9000.0}})
    assert "contamination" not in single["qc_reasons"]
    assert "stutter-position peak larger than stutter usually is" in single["qc_reasons"]
    assert single["qc_verdict"] == "pass"
    two = _one_locus({"D3S1358": {"13": 0.4 * 9000.0}, "vWA": {"17": 0.4 * 9000.0}})
    assert two["qc_verdict"] == "review"
    assert "possible contamination or sample swap" in two["qc_reasons"]


def test_lod_is_judged_after_correction() -> None:
    """A residual within 3 SD of the expected stutter is no iNK; a real 1 % iNK is detected."""
    refs = _references()
    zero = _mixture(0.0, stutter_ratio=TETRA * 1.3)
    zero = {m: {a: v for a, v in alleles.items() if v > 0} for m, alleles in zero.items()}
    result, markers = _compute(zero, refs)
    assert result["result_status"] == ResultStatus.NOT_DETECTED
    assert markers.filter(pl.col("marker") == "L4")["signal_ink"][0] > 0  # residue, not iNK
    low, _ = _compute(_mixture(1.0), refs)
    assert low["result_status"] == ResultStatus.BELOW_LOQ
    assert low["pct_ink"] == pytest.approx(1.0)
    assert not math.isnan(low["pct_ink"])
