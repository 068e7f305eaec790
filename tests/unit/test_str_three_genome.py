"""Three-genome STR (patient + prior HSCT donor + iNK; methods.md 2.3, 2.8 D; issue 10)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from str_simulation import SINGLE_DONOR_SAMPLES, manifest, profile_peaks, real_profile

from chimera.calculate.stats import t_quantile
from chimera.calculate.str_chimerism import compute_str_chimerism
from chimera.calculate.str_three_genome import (
    dosage_matrix,
    locus_fractions,
    separable,
    solve_fractions,
)
from chimera.settings import StrSettings
from schemas.vocab import GenomeModel, QcVerdict, ResultStatus, Role

SETTINGS = StrSettings()
REFERENCE_METHOD = replace(SETTINGS, default_stutter_ratio=0.0, forward_stutter_correction=False)
"""The quirk-free computation of methods.md 2.8 D: back stutter measured on the references only."""

# --- per-locus least squares, hand-computed ----------------------------------------------------


def _shares(genotypes: list[set[str]], fractions: list[float]) -> dict[str, float]:
    """Allele shares of the dosage model: Σ_G f_G d_G(x) / 2 (methods.md 2.1)."""
    out: dict[str, float] = {}
    for genotype, f in zip(genotypes, fractions, strict=True):
        for allele in genotype:
            out[allele] = out.get(allele, 0.0) + f / len(genotype)
    return out


@pytest.mark.parametrize(
    ("genotypes", "fractions", "expected"),
    [
        # D21S11 30/31 vs 29/30 vs 30/35: every genome has its own allele (k = 1 each).
        ([{"30", "31"}, {"29", "30"}, {"30", "35"}], [0.6, 0.3, 0.1], [60.0, 30.0, 10.0]),
        # FGA 20 vs 22 vs 23/25: homozygotes put all their signal on one peak.
        ([{"20"}, {"22"}, {"23", "25"}], [0.05, 0.75, 0.2], [5.0, 75.0, 20.0]),
        # D3S1358 15/18 vs 15 vs 16/17: the HSCT donor has no allele of its own, yet the
        # dosage profiles separate it (share of 15 = f_iNK/2 + f_HSCT).
        ([{"15", "18"}, {"15"}, {"16", "17"}], [0.674, 0.30, 0.026], [67.4, 30.0, 2.6]),
        # TPOX 8 vs 8/11 vs 8/12: no iNK-only allele, but 8 carries f_iNK + (1 - f_iNK)/2.
        ([{"8"}, {"8", "11"}, {"8", "12"}], [0.2, 0.5, 0.3], [20.0, 50.0, 30.0]),
        # TH01 6/7 vs 6/8 vs 6/7: iNK and recipient identical, only the HSCT donor separates.
        ([{"6", "7"}, {"6", "8"}, {"6", "7"}], [0.4, 0.35, 0.25], [None, 35.0, None]),
        # D13S317 12 vs 11/12 vs 11: the HSCT profile is the mean of the other two: nothing.
        ([{"12"}, {"11", "12"}, {"11"}], [0.3, 0.3, 0.4], [None, None, None]),
    ],
)
def test_locus_fractions_recover_the_dosage_model(
    genotypes: list[set[str]], fractions: list[float], expected: list[float | None]
) -> None:
    """Noise-free peaks from known fractions give those fractions back exactly."""
    signals = {a: 8000.0 * s for a, s in _shares(genotypes, fractions).items()}
    pct, total, which = locus_fractions(genotypes, signals)
    assert total == pytest.approx(8000.0)
    assert which == [e is not None for e in expected]
    for got, want in zip(pct, expected, strict=True):
        assert got == (None if want is None else pytest.approx(want, abs=1e-9))


def test_fractions_stay_on_the_simplex() -> None:
    """Imbalance that implies a negative share gives 0, never below, and the rest sums to 1."""
    dosage = dosage_matrix([{"10", "11"}, {"12"}, {"13"}], ["10", "11", "12", "13"])
    shares = np.array([0.30, 0.10, 0.62, 0.0]) / 1.02
    fractions = solve_fractions(dosage, shares)
    assert fractions.min() >= 0.0
    assert fractions.sum() == pytest.approx(1.0)
    assert fractions[2] == 0.0  # no signal at the recipient's 13
    assert fractions[1] == pytest.approx(0.62 / 1.02, abs=0.02)
    assert separable(dosage) == [True, True, True]


alleles = st.sets(st.sampled_from([str(a) for a in range(8, 14)]), min_size=1, max_size=2)


@given(
    st.lists(alleles, min_size=3, max_size=3),
    st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda w: sum(w) > 0.01),
)
def test_separable_fractions_are_recovered_for_any_genotypes(
    genotypes: list[set[str]], weights: list[float]
) -> None:
    """For any three genotypes, every fraction the profiles determine is recovered exactly."""
    fractions = [w / sum(weights) for w in weights]
    pct, _, which = locus_fractions(genotypes, _shares(genotypes, fractions))
    for got, f, ok in zip(pct, fractions, which, strict=True):
        if ok:
            assert got == pytest.approx(100 * f, abs=1e-6)
        else:
            assert got is None


# --- three-genome patients end to end --------------------------------------------------------

INK = {"A": ["10", "12"], "B": ["20"], "C": ["30", "34"], "D": ["40", "42"], "E": ["50"]}
HSCT = {"A": ["14"], "B": ["22", "24"], "C": ["32"], "D": ["44", "46"], "E": ["52", "54"]}
GERMLINE = {"A": ["16", "18"], "B": ["26"], "C": ["36", "38"], "D": ["48"], "E": ["56", "58"]}
THREE = manifest(
    [
        ("INK", "LOT1", Role.DONOR_REFERENCE, "LOT1"),
        ("HSCT", "P1", Role.HSCT_DONOR, "LOT1"),
        ("GERM", "P1", Role.RECIPIENT_GERMLINE, "LOT1"),
        ("BL", "P1", Role.RECIPIENT_BASELINE, "LOT1"),
        ("S1", "P1", Role.POST_DOSE, "LOT1"),
    ]
)


def _mix(weights: dict[str, float], *, total: float = 10_000.0) -> dict[str, dict[str, float]]:
    """Noise-free dosage-model peaks (alleles two repeats apart: no stutter overlaps)."""
    genomes = {"ink": INK, "hsct": HSCT, "germline": GERMLINE}
    sample: dict[str, dict[str, float]] = {}
    for name, genome in genomes.items():
        for marker, called in genome.items():
            for allele in called:
                share = weights[name] * total / len(called)
                if share > 0:
                    sample.setdefault(marker, {})[allele] = (
                        sample.get(marker, {}).get(allele, 0.0) + share
                    )
    return sample


def _references() -> pl.DataFrame:
    return pl.concat(
        [
            profile_peaks(sid, {m: dict.fromkeys(a, 4000.0) for m, a in genome.items()})
            for sid, genome in (("INK", INK), ("HSCT", HSCT), ("GERM", GERMLINE))
        ]
    )


def _run(
    sample: dict[str, dict[str, float]], *, baseline: bool = True, samples: pl.DataFrame = THREE
) -> tuple[dict, pl.DataFrame]:
    frames = [_references(), profile_peaks("S1", sample)]
    if baseline:  # pre-dose blood of a relapsed patient: 70 % HSCT donor, 30 % own cells
        frames.append(profile_peaks("BL", _mix({"ink": 0.0, "hsct": 0.7, "germline": 0.3})))
    out = compute_str_chimerism(pl.concat(frames).lazy(), samples.lazy(), settings=SETTINGS)
    return out.results.row(0, named=True), out.markers


def test_three_genome_patient_recovers_every_share() -> None:
    """12 % iNK, 60 % HSCT donor, 28 % recipient over five loci, exactly, with CIs."""
    result, markers = _run(_mix({"ink": 0.12, "hsct": 0.60, "germline": 0.28}))
    assert result["genome_model"] == GenomeModel.THREE_GENOME
    assert result["result_status"] == ResultStatus.QUANTIFIED
    assert result["pct_ink"] == pytest.approx(12.0)
    assert result["pct_hsct_donor"] == pytest.approx(60.0)
    assert result["pct_recipient"] == pytest.approx(28.0)
    assert result["pct_recipient_ci_low"] == pytest.approx(28.0)  # SD 0 over loci
    assert result["n_informative"] == 5
    assert result["ci_quantile"] == pytest.approx(t_quantile(0.975, 4))
    assert result["qc_verdict"] == QcVerdict.PASS
    assert markers["sharing"].unique().to_list() == ["3G iNK/HSCT donor/recipient"]
    assert markers["pct_hsct_donor"].to_list() == pytest.approx([60.0] * 5)
    assert markers["pct_recipient"].to_list() == pytest.approx([28.0] * 5)
    assert markers.filter(pl.col("marker") == "A").select(
        "donor_alleles", "hsct_donor_alleles", "recipient_alleles"
    ).row(0) == ("10/12", "14", "16/18")


def test_the_mixed_baseline_is_not_a_genotype() -> None:
    """A three-genome patient's recipient_baseline is blood (a mixture): results ignore it."""
    sample = _mix({"ink": 0.12, "hsct": 0.60, "germline": 0.28})
    with_baseline, _ = _run(sample)
    without, _ = _run(sample, baseline=False)
    assert with_baseline["pct_ink"] == without["pct_ink"] == pytest.approx(12.0)
    assert with_baseline["pct_hsct_donor"] == without["pct_hsct_donor"]


def test_relapse_reads_as_recipient_not_ink() -> None:
    """The patient's own cells rising shows as % recipient; iNK stays where it is (issue 10)."""
    result, _ = _run(_mix({"ink": 0.02, "hsct": 0.38, "germline": 0.60}))
    assert result["pct_recipient"] == pytest.approx(60.0)
    assert result["pct_ink"] == pytest.approx(2.0)
    assert result["result_status"] == ResultStatus.BELOW_LOQ


def test_transplant_donor_alleles_are_not_contamination() -> None:
    """Read as two genomes, the HSCT donor's alleles look foreign; three genomes expect them."""
    sample = _mix({"ink": 0.2, "hsct": 0.5, "germline": 0.3})
    three, _ = _run(sample)
    assert "contamination" not in (three["qc_reasons"] or "")
    two_genome = THREE.with_columns(
        role=pl.when(pl.col("sample_id") == "BL")
        .then(pl.lit(Role.RECIPIENT_BASELINE.value))
        .when(pl.col("sample_id").is_in(["HSCT", "GERM"]))
        .then(pl.lit("negative_control"))
        .otherwise(pl.col("role"))
    )
    peaks = pl.concat(
        [
            _references(),
            profile_peaks("S1", sample),
            profile_peaks("BL", _mix({"ink": 0.0, "hsct": 0.0, "germline": 1.0})),
        ]
    )
    two = compute_str_chimerism(peaks.lazy(), two_genome.lazy(), settings=SETTINGS).results.row(
        0, named=True
    )
    assert two["genome_model"] == GenomeModel.TWO_GENOME
    assert "possible contamination or sample swap" in two["qc_reasons"]


def test_not_detected_genome_has_no_bare_zero() -> None:
    """No recipient peak at all: the recipient is not detected (null, CI 0 to LoD)."""
    result, _ = _run(_mix({"ink": 0.4, "hsct": 0.6, "germline": 0.0}))
    assert result["pct_recipient"] is None
    assert (result["pct_recipient_ci_low"], result["pct_recipient_ci_high"]) == (
        0.0,
        SETTINGS.lod_pct,
    )
    assert "recipient not detected" in result["qc_reasons"]
    assert result["pct_hsct_donor"] == pytest.approx(60.0)


def test_three_genome_patient_waits_for_the_germline_profile() -> None:
    """With an hsct_donor on record the baseline cannot stand in for the patient's genotype."""
    samples = THREE.filter(pl.col("sample_id") != "GERM")
    frames = [
        _references().filter(pl.col("sample_id") != "GERM"),
        profile_peaks("S1", _mix({"ink": 0.1, "hsct": 0.6, "germline": 0.3})),
    ]
    frames.append(profile_peaks("BL", _mix({"ink": 0.0, "hsct": 0.7, "germline": 0.3})))
    out = compute_str_chimerism(pl.concat(frames).lazy(), samples.lazy(), settings=SETTINGS)
    result = out.results.row(0, named=True)
    assert result["result_status"] == ResultStatus.FAILED
    assert "recipient_germline" in result["qc_reasons"]
    assert result["genome_model"] == GenomeModel.TWO_GENOME or result["pct_ink"] is None


# --- methods.md 2.8 D: Rchimerism double-donor and lineage-sorted files ---------------------


DD_SAMPLES = manifest(
    [
        ("D1", "LOT1", Role.DONOR_REFERENCE, "LOT1"),
        ("D2", "P1", Role.HSCT_DONOR, "LOT1"),
        ("R", "P1", Role.RECIPIENT_GERMLINE, "LOT1"),
        ("S1", "P1", Role.POST_DOSE, "LOT1"),
    ]
)


def _double_donor(
    real_exports: Path, sample: str, settings: StrSettings
) -> tuple[dict, pl.DataFrame]:
    peaks = pl.concat(
        [
            real_profile(real_exports, "rchimerism_double_donor_d1data_donor1.txt", "D1"),
            real_profile(real_exports, "rchimerism_double_donor_d2data_donor2.txt", "D2"),
            real_profile(real_exports, "rchimerism_double_donor_rdata_recipient.txt", "R"),
            real_profile(real_exports, f"rchimerism_double_donor_{sample}.txt", "S1"),
        ]
    )
    out = compute_str_chimerism(peaks.lazy(), DD_SAMPLES.lazy(), settings=settings)
    return out.results.row(0, named=True), out.markers


# (sample file, iNK %, HSCT donor %, recipient % or None = not detected): quirk-free column.
QUIRK_FREE = [
    ("cd3_select_sdata", 67.42, 29.98, None),
    ("cd33_select_sdata", 39.30, 41.72, 17.29),
]


@pytest.mark.parametrize(("sample", "ink", "hsct", "recipient"), QUIRK_FREE)
def test_double_donor_lineage_samples_match_the_quirk_free_reference(
    real_exports: Path, sample: str, ink: float, hsct: float, recipient: float | None
) -> None:
    """Default settings land within 1 pp of methods.md 2.8 D (not Rchimerism's 60.99 % etc.)."""
    result, markers = _double_donor(real_exports, sample, SETTINGS)
    assert result["genome_model"] == GenomeModel.THREE_GENOME
    assert result["pct_ink"] == pytest.approx(ink, abs=1.0)
    assert result["pct_hsct_donor"] == pytest.approx(hsct, abs=1.0)
    if recipient is None:  # cd3: no recipient-only allele shows a peak at any locus
        assert result["pct_recipient"] is None
        assert result["pct_recipient_ci_high"] == SETTINGS.lod_pct
    else:
        assert result["pct_recipient"] == pytest.approx(recipient, abs=1.0)
    assert result["n_informative"] == 12
    assert result["qc_verdict"] == QcVerdict.PASS
    separable_for = markers.group_by("sharing").len()
    assert separable_for.filter(pl.col("sharing") == "3G HSCT donor")["len"].to_list() == [
        1
    ]  # TH01


@pytest.mark.parametrize(("sample", "ink", "hsct", "recipient"), QUIRK_FREE)
def test_reference_method_reproduces_the_quirk_free_numbers(
    real_exports: Path, sample: str, ink: float, hsct: float, recipient: float | None
) -> None:
    """Back stutter measured on the three references only: the 2.8 D values to 0.01 pp."""
    result, markers = _double_donor(real_exports, sample, REFERENCE_METHOD)
    assert result["pct_ink"] == pytest.approx(ink, abs=0.01)
    assert result["pct_hsct_donor"] == pytest.approx(hsct, abs=0.01)
    if recipient is not None:
        assert result["pct_recipient"] == pytest.approx(recipient, abs=0.01)
    outliers = {
        row["marker"]: row["exclusion_reason"]
        for row in markers.iter_rows(named=True)
        if "outlier" in (row["exclusion_reason"] or "")
    }
    assert outliers == (
        {"vWA": "outlier; HSCT donor: outlier; recipient: outlier"}
        if sample.startswith("cd3_")
        else {"D7S820": "HSCT donor: outlier; recipient: outlier", "D16S539": "recipient: outlier"}
    )


def test_double_donor_cd3_recipient_by_least_squares(real_exports: Path) -> None:
    """cd3: the fit turns shared-allele imbalance into 2.14 % recipient, yet no recipient-only
    allele has a peak, so the reported state is not detected (methods.md 2.8 D)."""
    _, markers = _double_donor(real_exports, "cd3_select_sdata", REFERENCE_METHOD)
    values = markers.filter(pl.col("pct_recipient").is_not_null())
    assert values.height == 13
    kept = values.filter(pl.col("marker") != "vWA")  # the outlier of every genome here
    assert kept["pct_recipient"].mean() == pytest.approx(2.14, abs=0.01)


def test_dd_example_is_flagged_for_review(real_exports: Path) -> None:
    """The "DD example" does not fit three genomes: donor-2 alleles missing, bimodal loci."""
    result, markers = _double_donor(real_exports, "sdata_posttransplant", SETTINGS)
    assert result["qc_verdict"] == QcVerdict.REVIEW
    reasons = result["qc_reasons"]
    assert "genome-unique alleles missing where the genome is otherwise well above LoD" in reasons
    for missing in ("TH01 8", "D21S11 29", "D8S1179 14", "vWA 14/15"):
        assert f"HSCT donor {missing}" in reasons
    assert "HSCT donor: inter-locus SD" in reasons
    assert 63.8 - 1.0 <= result["pct_ink"] <= 70.5  # defensible range of methods.md 2.8 D
    assert 18.7 - 1.0 <= result["pct_hsct_donor"] <= 24.3 + 1.0
    per_locus = dict(markers.select("marker", "pct_hsct_donor").drop_nulls().iter_rows())
    assert per_locus["TH01"] < 15.0 and per_locus["D7S820"] > 35.0  # bimodal, as published
    reference, _ = _double_donor(real_exports, "sdata_posttransplant", REFERENCE_METHOD)
    assert reference["pct_ink"] == pytest.approx(63.80, abs=0.01)
    assert reference["pct_hsct_donor"] == pytest.approx(24.20, abs=0.01)


@pytest.mark.parametrize(
    ("sample", "expected", "settings", "tolerance"),
    [
        ("cd3_select_sdata", 52.36, REFERENCE_METHOD, 0.01),
        ("cd3_select_sdata", 52.36, SETTINGS, 1.0),
        ("cd33_select_sdata", 99.90, REFERENCE_METHOD, 0.01),
        ("cd33_select_sdata", 99.90, SETTINGS, 0.01),
    ],
)
def test_single_donor_lineage_samples(
    real_exports: Path, sample: str, expected: float, settings: StrSettings, tolerance: float
) -> None:
    """SD cd3 52.36 % (stutter takes D5S818 from 51.15 to 49.53) and SD cd33 99.90 % (2.8 D)."""
    peaks = pl.concat(
        [
            real_profile(real_exports, "rchimerism_single_donor_ddata_donor.txt", "INK"),
            real_profile(real_exports, "rchimerism_single_donor_rdata_recipient.txt", "PRE"),
            real_profile(real_exports, f"rchimerism_single_donor_{sample}.txt", "S1"),
        ]
    )
    out = compute_str_chimerism(peaks.lazy(), SINGLE_DONOR_SAMPLES.lazy(), settings=settings)
    result = out.results.row(0, named=True)
    assert result["genome_model"] == GenomeModel.TWO_GENOME
    assert result["pct_ink"] == pytest.approx(expected, abs=tolerance)
    assert result["n_informative"] == 10
    assert out.markers.filter(pl.col("exclusion_reason") == "outlier")["marker"].to_list() == [
        "D7S820"
    ]
    assert result["ci_quantile"] == pytest.approx(t_quantile(0.975, 8))
    if sample.startswith("cd3_") and settings is REFERENCE_METHOD:
        d5 = out.markers.filter(pl.col("marker") == "D5S818").row(0, named=True)
        assert d5["pct_ink"] == pytest.approx(49.53, abs=0.005)
        assert d5["stutter_ratio"] == pytest.approx(6099 / 46281)
