"""STR run by run for many patients (issue 12 speed): same rows as one calculation per run.

A rebuild computes each patient once over all its runs (:func:`compute_str_runs`), sharing
reference genotypes and stutter lookups between patients (:class:`StrCache`) and reading
every profile's signals, AMEL heights and peak shapes in one ``group_by``. These tests hold
those paths to the definitions they replace: one :func:`compute_str_chimerism` call per run
and per patient, and the per-profile rules of methods.md 2.4 and 2.8 written out directly.
"""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from str_simulation import draw_genotype, make_loci, simulate_peaks, simulate_trial

from chimera.calculate.str_chimerism import compute_str_chimerism, compute_str_runs
from chimera.calculate.str_profiles import (
    NUMERIC_ALLELE_PATTERN,
    amel_heights,
    call_genotype,
    marker_key,
    profile_broad_peaks,
    profile_genotypes,
    profile_signals,
    profile_y_heights,
    sample_signals,
)
from chimera.calculate.str_sources import StrCache
from chimera.calculate.str_three_genome import (
    _systems,
    dosage_matrix,
    solve_fractions,
    solve_fractions_many,
)
from chimera.calculate.stutter_ratios import StutterIndex, estimate_stutter_ratios
from chimera.settings import StrSettings
from schemas.vocab import Role, StutterSource

SETTINGS = StrSettings()


def _trial() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Three two-genome patients on three runs, one repeat measurement, a three-genome patient.

    The three-genome patient (P9, product lot LOT9) has a germline and an HSCT-donor reference
    and post-dose samples on two runs; one two-genome sample is measured again on a fourth run.
    """
    trial = simulate_trial(5, patients=3, levels_pct=(0.0, 2.0, 10.0, 30.0))
    rng = random.Random(9)
    loci = make_loci(rng)
    germline, donor = draw_genotype(rng, loci), draw_genotype(rng, loci)
    product = draw_genotype(rng, loci)
    rows = [
        {**row, "source_sha256": "run00"}
        for row in simulate_peaks(rng, "P9-GERM", loci, [(1.0, germline)])
        + simulate_peaks(rng, "P9-HSCT", loci, [(1.0, donor)])
        + simulate_peaks(rng, "INK-9", loci, [(1.0, product)])
    ]
    for i, (ink, hsct) in enumerate([(0.05, 0.6), (0.2, 0.5), (0.0, 0.9)]):
        mixture = [(ink, product), (hsct, donor), (1 - ink - hsct, germline)]
        rows += [
            {**row, "source_sha256": f"run{i % 2:02d}"}
            for row in simulate_peaks(rng, f"P9-S{i}", loci, mixture)
        ]
    again = trial.peaks.filter(pl.col("sample_id") == "P02-S03").with_columns(
        source_sha256=pl.lit("run03"),
        area_rfu=pl.col("area_rfu")
        * pl.when(pl.int_range(pl.len()) % 2 == 0).then(1.2).otherwise(1.0),
    )
    extra = pl.DataFrame(rows).with_columns(source_row=pl.lit(1, dtype=pl.Int32))
    peaks = pl.concat([trial.peaks, again, extra.select(trial.peaks.columns)])
    samples = pl.concat(
        [
            trial.samples,
            pl.DataFrame(
                [
                    ("INK-9", "LOT9", Role.DONOR_REFERENCE, "LOT9"),
                    ("P9-GERM", "P9", Role.RECIPIENT_GERMLINE, "LOT9"),
                    ("P9-HSCT", "P9", Role.HSCT_DONOR, "LOT9"),
                    *((f"P9-S{i}", "P9", Role.POST_DOSE, "LOT9") for i in range(3)),
                ],
                schema=trial.samples.schema,
                orient="row",
            ),
        ]
    )
    return peaks, samples


_LOTS = {"P01": "LOT1", "P02": "LOT1", "P03": "LOT1", "P9": "LOT9"}


def _patient(
    peaks: pl.DataFrame, samples: pl.DataFrame, patient: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The patient's and its product's rows and samples, as a rebuild hands them over."""
    mine = samples.filter(pl.col("patient_id").is_in([patient, _LOTS[patient]]))
    return peaks.filter(pl.col("sample_id").is_in(mine["sample_id"].implode())), mine


def _one_call_per_run(
    peaks: pl.DataFrame, samples: pl.DataFrame, stutter: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    post = samples.filter(pl.col("role") == Role.POST_DOSE)["sample_id"].implode()
    genotypes = peaks.filter(~pl.col("sample_id").is_in(post))
    results, markers = [], []
    for (sha,), run in sorted(
        peaks.filter(pl.col("sample_id").is_in(post))
        .partition_by("source_sha256", as_dict=True)
        .items()
    ):
        out = compute_str_chimerism(
            pl.concat([run, genotypes]).lazy(), samples.lazy(), settings=SETTINGS, stutter=stutter
        )
        results.append(out.results.with_columns(source_sha256=pl.lit(sha)))
        markers.append(out.markers.with_columns(source_sha256=pl.lit(sha)))
    return pl.concat(results), pl.concat(markers)


def test_runs_of_many_patients_equal_one_calculation_per_run() -> None:
    """Every result and marker row, in order, exactly; the product reference typed once."""
    peaks, samples = _trial()
    stutter = estimate_stutter_ratios(peaks, samples, settings=SETTINGS)
    cache = StrCache()
    for patient in _LOTS:
        rows, mine = _patient(peaks, samples, patient)
        expected = _one_call_per_run(rows, mine, stutter)
        got = compute_str_runs(rows, mine, settings=SETTINGS, stutter=stutter, cache=cache)
        assert_frame_equal(got.results, expected[0], check_exact=True)
        assert_frame_equal(got.markers, expected[1], check_exact=True)
    rows, mine = _patient(peaks, samples, "P02")
    repeat = compute_str_runs(rows, mine, settings=SETTINGS, stutter=stutter).results
    repeat = repeat.filter(pl.col("sample_id") == "P02-S03")
    assert sorted(repeat["source_sha256"]) == ["run00", "run03"]
    assert repeat["pct_ink"].n_unique() == 2
    # One genotype per reference set: each product once, each baseline, P9's germline and
    # HSCT donor.
    assert len(cache.genotypes) == 2 + 3 + 2
    assert cache.stutter is not None and cache.stutter.table is stutter


def test_three_genome_runs_recover_the_hsct_donor() -> None:
    """P9 is modelled with three genomes on both of its runs."""
    peaks, samples = _trial()
    stutter = estimate_stutter_ratios(peaks, samples, settings=SETTINGS)
    rows, mine = _patient(peaks, samples, "P9")
    out = compute_str_runs(rows, mine, settings=SETTINGS, stutter=stutter)
    assert out.results["genome_model"].unique().to_list() == ["three_genome"]
    assert out.results.sort("sample_id")["pct_hsct_donor"].to_list() == pytest.approx(
        [60.0, 50.0, 90.0], abs=5.0
    )


def _direct_broad(peaks: pl.DataFrame, factor: float) -> list[str]:
    """Broad peaks of one profile as methods.md 2.8 words it, with the Series median."""
    called = peaks.filter(
        pl.col("marker").is_not_null()
        & pl.col("allele").str.contains(NUMERIC_ALLELE_PATTERN).fill_null(value=False)
        & (pl.col("height_rfu") > 0)
        & pl.col("area_rfu").is_not_null()
    ).with_columns(ratio=pl.col("area_rfu") / pl.col("height_rfu"))
    if called.height < 4:
        return []
    median = float(called["ratio"].median())  # type: ignore[arg-type]
    odd = called.filter((pl.col("ratio") > factor * median) | (pl.col("ratio") < median / factor))
    return [
        f"{r['marker']} {r['allele']} (area/height {r['ratio']:.1f} vs {median:.1f})"
        for r in odd.iter_rows(named=True)
    ]


_PEAK = st.tuples(
    st.sampled_from(["S1", "S2"]),
    st.sampled_from(["run1", "run1", "run2"]),
    st.sampled_from(["AMEL", "Amelogenin", "D3S1358", "d3s1358", "TH01", "TH01", "vWA", None]),
    st.sampled_from(["X", "Y", "9", "9.3", "10", "12", "14", "15", "16", "OL", " 11", None]),
    st.one_of(st.floats(900, 1000).map(round), st.floats(0, 5000).map(round), st.none()),
    st.one_of(st.floats(6000, 6500).map(round), st.floats(0, 40000).map(round), st.none()),
)
_BROAD = [
    ("S1", "run1", "A", "8", 950.0, 6000.0),
    ("S1", "run1", "A", "10", 250.0, 5700.0),
    ("S1", "run1", "B", "12", 1000.0, 6500.0),
]


def _peak_frame(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    """Peak rows of two samples on two runs (``_PEAK`` tuples) as a frame."""
    return pl.DataFrame(
        rows,
        schema={"sample_id": pl.String, "source_sha256": pl.String, "marker": pl.String,
                "allele": pl.String, "height_rfu": pl.Float64, "area_rfu": pl.Float64},
        orient="row",
    )  # fmt: skip


@example(rows=_BROAD)
@example(rows=[*_BROAD, ("S1", "run1", "B", "13", 1000.0, 6200.0)])
@example(
    rows=[*_BROAD, ("S1", "run1", "B", "13", 1000.0, 6200.0), ("S1", "run1", "C", "7", 1.0, 2.5)]
)
@settings(max_examples=80, deadline=None)
@given(st.lists(_PEAK, min_size=1, max_size=30))
def test_grouped_profile_facts_equal_each_profile_alone(rows: list[tuple[object, ...]]) -> None:
    """Signals, AMEL heights and broad peaks per profile equal the one-profile definitions."""
    frame = _peak_frame(rows)
    by = ["sample_id", "source_sha256"]
    signals = profile_signals(frame, by, signal="area")
    heights = profile_y_heights(frame, by)
    broad = profile_broad_peaks(frame, by, factor=2.5)
    for (sample_id, sha), profile in frame.partition_by(by, as_dict=True).items():
        key = (sample_id, sha)
        assert signals.get(key, {}) == sample_signals(profile, signal="area")
        amel = profile.filter(pl.col("marker").str.to_uppercase().str.starts_with("AMEL"))
        x = amel.filter(pl.col("allele") == "X")["height_rfu"].sum()
        y = amel.filter(pl.col("allele") == "Y")["height_rfu"].sum()
        assert heights[key] == amel_heights(profile) == (float(x), float(y))
        assert broad.get(key, []) == _direct_broad(profile, 2.5)


def test_stutter_index_serves_each_locus_set_from_its_panel() -> None:
    """One lookup per locus set; a set matching no panel gets the published ratios."""
    peaks, samples = _trial()
    table = estimate_stutter_ratios(peaks, samples, settings=SETTINGS)
    index = StutterIndex(table, settings=SETTINGS)
    panel = table["marker"].unique().to_list()
    first = index.lookup(panel)
    assert index.lookup(list(reversed(panel))) is first
    measured = table.filter(pl.col("direction") == "back").row(0, named=True)
    assert first.at(measured["marker"]).back == measured["ratio"]
    other = index.lookup(["CSF1PO-X", "FOO"])
    assert other.at("Penta E").source is StutterSource.PUBLISHED


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
def test_prebuilt_systems_solve_exactly_as_building_them(weights: list[float]) -> None:
    """:func:`solve_fractions` with the cached KKT systems gives the same bits."""
    dosage = dosage_matrix([{"15", "18"}, {"15"}, {"16", "17"}], ["15", "16", "17", "18"])
    shares = np.array(weights) / (sum(weights) or 1.0)
    assert solve_fractions(dosage, shares).tolist() == (
        solve_fractions(dosage, shares, _systems(dosage)).tolist()
    )


def test_shared_cache_keeps_each_settings_apart() -> None:
    """A cache used under two settings gives what a fresh cache gives under each."""
    peaks, samples = _trial()
    stutter = estimate_stutter_ratios(peaks, samples, settings=SETTINGS)
    rows, mine = _patient(peaks, samples, "P01")
    strict = StrSettings(reference_filter_fraction=0.9, signal="height")
    cache = StrCache()
    for settings_now in (SETTINGS, strict, SETTINGS):
        shared = compute_str_runs(rows, mine, settings=settings_now, stutter=stutter, cache=cache)
        fresh = compute_str_runs(rows, mine, settings=settings_now, stutter=stutter)
        assert_frame_equal(shared.markers, fresh.markers, check_exact=True)
        assert_frame_equal(shared.results, fresh.results, check_exact=True)
    assert len(cache.genotypes) == 2 * 2


@settings(max_examples=80, deadline=None)
@given(st.lists(_PEAK, min_size=1, max_size=30))
def test_profile_genotypes_equal_each_profiles_own_call(rows: list[tuple[object, ...]]) -> None:
    """The reference filter over many profiles at once calls each profile as alone (2.5)."""
    frame = _peak_frame(rows)
    by = ["sample_id", "source_sha256"]
    found = profile_genotypes(frame, by, settings=SETTINGS)
    for key, profile in frame.partition_by(by, as_dict=True).items():
        alone: dict[str, set[str]] = {}
        for marker, allele in call_genotype(profile.lazy(), settings=SETTINGS).collect().rows():
            alone.setdefault(marker_key(marker), set()).add(allele)
        assert found.get(key, {}) == alone


_GENOTYPE = st.sets(st.sampled_from([str(a) for a in range(8, 14)]), min_size=1, max_size=2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_GENOTYPE, min_size=3, max_size=3),
    st.lists(st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6), min_size=1, max_size=12),
)
def test_fractions_of_many_samples_are_the_bits_of_each_alone(
    genotypes: list[set[str]], weights: list[list[float]]
) -> None:
    """Solving a locus's samples together gives each sample's one-sample solution, bit for bit."""
    alleles = sorted(set().union(*genotypes), key=int)
    dosage = dosage_matrix(genotypes, alleles)
    rows = [w[: len(alleles)] for w in weights if sum(w[: len(alleles)]) > 0]
    if not rows:
        return
    shares = np.array([[v / sum(w) for v in w] for w in rows])
    together = solve_fractions_many(dosage, shares)
    for row, fractions in zip(shares, together, strict=True):
        assert solve_fractions(dosage, row).tolist() == fractions.tolist()
