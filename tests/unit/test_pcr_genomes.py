"""Three genomes, product lots of one cell bank, and marker copy number (issue 10), qPCR/ddPCR.

A three-genome patient (relapse after an allogeneic transplant) has a typed germline
(``recipient_germline``) and HSCT donor (``hsct_donor``); a marker measures the genome that alone
carries it (methods.md 2.3). Expected values are the genome shares put into the simulated wells.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import polars as pl
import pytest
from pcr_builders import (
    MANIFEST_COLUMNS,
    REFERENCE,
    DdpcrPlate,
    QpcrPlate,
    ddpcr_wells,
    manifest,
    qpcr_wells,
)

from chimera.calculate.common import DEFAULT_BANK, ProductBanks, SampleInfo, is_no_template
from chimera.calculate.ddpcr import compute_ddpcr_chimerism
from chimera.calculate.genomes import ShareEstimate, remainder
from chimera.calculate.qpcr import compute_qpcr_chimerism
from chimera.settings import DdpcrSettings, QpcrSettings
from schemas.vocab import Role

QPCR = QpcrSettings()
DDPCR = DdpcrSettings()
TRUTH = {"ink": 0.10, "hsct": 0.60, "patient": 0.30}


def _one(results: pl.DataFrame, sample: str) -> dict[str, Any]:
    rows = results.filter(pl.col("sample_id") == sample).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


THREE_GENOME_SAMPLES = [
    ("INK-REF", "LOT1", "donor_reference", "LOT1"),
    ("P03-GL", "P03", "recipient_germline", None),
    ("P03-HD", "P03", "hsct_donor", None),
    ("P03-BL", "P03", "recipient_baseline", None),
    ("P03-D10", "P03", "post_dose", "LOT1"),
]


# --- ddPCR three genomes -----------------------------------------------------------------------


def _ddpcr_three_genome_plate(*, markers: tuple[str, ...], germline: bool = True) -> DdpcrPlate:
    plate = DdpcrPlate()
    refs = {
        "INK-REF": {"ink": 1.0},
        "P03-HD": {"hsct": 1.0},
        "P03-BL": {"hsct": 0.7, "patient": 0.3},
    }
    if germline:
        refs["P03-GL"] = {"patient": 1.0}
    for sample, mix in refs.items():
        plate.dna(sample, mix, markers=(*markers, "SHARED"))
    plate.dna("P03-D10", TRUTH, markers=(*markers, "SHARED"))
    plate.counts("NTC", "iNK-M1", 0, 0, sample_type="ntc")
    return plate


def test_ddpcr_three_genomes_fill_every_share() -> None:
    """iNK 10 %, HSCT donor 60 %, recipient 30 %: each read from its own marker, truth in CI."""
    plate = _ddpcr_three_genome_plate(markers=("iNK-M1", "HD-M1", "R-M1"))
    out = compute_ddpcr_chimerism(
        ddpcr_wells(plate), manifest(THREE_GENOME_SAMPLES), settings=DDPCR
    )
    row = _one(out.results, "P03-D10")
    assert row["genome_model"] == "three_genome"
    assert row["result_status"] == "quantified"
    assert row["n_informative"] == 1
    for column, truth in (("pct_ink", 10.0), ("pct_hsct_donor", 60.0), ("pct_recipient", 30.0)):
        assert row[column] == pytest.approx(truth, rel=0.01)
    assert row["pct_hsct_donor_ci_low"] < 60.0 < row["pct_hsct_donor_ci_high"]
    assert row["pct_recipient_ci_low"] < 30.0 < row["pct_recipient_ci_high"]
    assert row["ci_low"] < 10.0 < row["ci_high"]
    sharing = dict(
        out.markers.filter(pl.col("sample_id") == "P03-D10")
        .select("marker", "sharing")
        .unique()
        .iter_rows()
    )
    assert sharing == {
        "iNK-M1": "donor_only",
        "HD-M1": "hsct_donor_only",
        "R-M1": "recipient_only",
        "SHARED": "not_informative",
    }
    shared = out.markers.filter((pl.col("sample_id") == "P03-D10") & (pl.col("marker") == "SHARED"))
    assert "the HSCT donor carries it" in shared["exclusion_reason"][0]


def test_ddpcr_three_genome_recipient_is_the_remainder_without_its_marker() -> None:
    """Without a recipient-only marker: % recipient = 100 - % iNK - % HSCT donor, SEs combined."""
    plate = _ddpcr_three_genome_plate(markers=("iNK-M1", "HD-M1"))
    out = compute_ddpcr_chimerism(
        ddpcr_wells(plate), manifest(THREE_GENOME_SAMPLES), settings=DDPCR
    )
    row = _one(out.results, "P03-D10")
    se_ink = (row["ci_high"] - row["ci_low"]) / (2 * 1.96)
    se_hsct = (row["pct_hsct_donor_ci_high"] - row["pct_hsct_donor_ci_low"]) / (2 * 1.96)
    expected = 100 - row["pct_ink"] - row["pct_hsct_donor"]
    half = 1.96 * math.sqrt(se_ink**2 + se_hsct**2)
    assert row["pct_recipient"] == pytest.approx(expected, rel=1e-9)
    assert row["pct_recipient"] == pytest.approx(30.0, abs=1.0)
    assert row["pct_recipient_ci_low"] == pytest.approx(expected - half, rel=1e-9)
    assert row["pct_recipient_ci_high"] == pytest.approx(expected + half, rel=1e-9)
    assert "% recipient = 100 - % iNK - % HSCT donor" in row["qc_reasons"]


def test_ddpcr_three_genome_patient_without_germline_fails() -> None:
    """The baseline of a transplanted patient is a mixed chimera: never the germline reference."""
    plate = _ddpcr_three_genome_plate(markers=("iNK-M1", "HD-M1"), germline=False)
    rows = [r for r in THREE_GENOME_SAMPLES if r[0] != "P03-GL"]
    row = _one(
        compute_ddpcr_chimerism(ddpcr_wells(plate), manifest(rows), settings=DDPCR).results,
        "P03-D10",
    )
    assert row["result_status"] == "failed"
    assert row["genome_model"] == "three_genome"
    assert "no recipient_germline sample" in row["qc_reasons"]


def test_remainder_rule_by_hand() -> None:
    """100 - 10 - 30 = 60 with SE √(1² + 1²): CI 60 ± 1.96·√2."""
    share = remainder(ShareEstimate(10, 8.04, 11.96, 1.96), ShareEstimate(30, 28.04, 31.96, 1.96))
    assert (share.pct, share.low, share.high) == pytest.approx(
        (60.0, 60 - 1.96 * math.sqrt(2), 60 + 1.96 * math.sqrt(2))
    )


# --- qPCR three genomes ------------------------------------------------------------------------

QPCR_TARGETS = (REFERENCE, "S04", "S07", "H1", "R1")


def _qpcr_three_genome_plate(*, hsct_on_plate: bool = True) -> list[QpcrPlate]:
    screening, plate = QpcrPlate("plate-screen"), QpcrPlate("plate-1")
    plate.dna("INK-REF", {"ink": 1.0}, genomes=5_000, targets=QPCR_TARGETS)
    plate.dna("P03-GL", {"patient": 1.0}, genomes=6_000, targets=QPCR_TARGETS)
    (plate if hsct_on_plate else screening).dna(
        "P03-HD", {"hsct": 1.0}, genomes=7_000, targets=QPCR_TARGETS
    )
    plate.dna("P03-BL", {"hsct": 0.7, "patient": 0.3}, genomes=8_000, targets=QPCR_TARGETS)
    plate.dna("P03-D10", TRUTH, targets=QPCR_TARGETS)
    return [screening, plate]


def test_qpcr_three_genomes_fill_every_share() -> None:
    """S04 reads iNK, H1 the HSCT donor, R1 the recipient against their own DNA on the plate.

    S07 is carried by the product and the HSCT donor: not informative for either.
    """
    out = compute_qpcr_chimerism(
        qpcr_wells(*_qpcr_three_genome_plate()), manifest(THREE_GENOME_SAMPLES), settings=QPCR
    )
    row = _one(out.results, "P03-D10")
    assert row["genome_model"] == "three_genome"
    assert row["pct_ink"] == pytest.approx(10.0, rel=1e-9)
    assert row["pct_hsct_donor"] == pytest.approx(60.0, rel=1e-9)
    assert row["pct_recipient"] == pytest.approx(30.0, rel=1e-9)
    assert row["pct_hsct_donor_ci_low"] < 60.0 < row["pct_hsct_donor_ci_high"]
    assert row["n_informative"] == 1
    s07 = out.markers.filter((pl.col("sample_id") == "P03-D10") & (pl.col("marker") == "S07"))
    assert set(s07["sharing"]) == {"not_informative"}
    assert "the HSCT donor carries it" in s07["exclusion_reason"][0]


def test_qpcr_hsct_share_without_its_reference_on_the_plate_is_the_remainder() -> None:
    """The HSCT donor DNA only on the screening plate: H1 unused, % HSCT donor = 100 - 10 - 30."""
    out = compute_qpcr_chimerism(
        qpcr_wells(*_qpcr_three_genome_plate(hsct_on_plate=False)),
        manifest(THREE_GENOME_SAMPLES),
        settings=QPCR,
    )
    row = _one(out.results, "P03-D10")
    assert row["pct_hsct_donor"] == pytest.approx(60.0, rel=1e-9)
    assert "HSCT donor reference (hsct_donor) on plate" in row["qc_reasons"]
    assert "% HSCT donor = 100 - % iNK - % recipient" in row["qc_reasons"]


def test_two_genome_results_keep_recipient_as_the_complement() -> None:
    """A two-genome patient: genome_model two_genome, % recipient = 100 - % iNK."""
    plate = QpcrPlate()
    plate.controls()
    plate.dna("P01-D10", {"ink": 0.1, "patient": 0.9})
    samples = manifest(
        [
            ("INK-CAL", "LOT1", "calibrator", "LOT1"),
            ("P01-BL", "P01", "recipient_baseline", None),
            ("P01-D10", "P01", "post_dose", "LOT1"),
        ]
    )
    row = _one(compute_qpcr_chimerism(qpcr_wells(plate), samples, settings=QPCR).results, "P01-D10")
    assert row["genome_model"] == "two_genome"
    assert row["pct_recipient"] == pytest.approx(90.0, rel=1e-9)
    assert row["pct_hsct_donor"] is None


# --- product lots and cell banks ---------------------------------------------------------------

BANK_COLUMNS = [*MANIFEST_COLUMNS, "cell_bank"]


def _bank_plates() -> list[QpcrPlate]:
    screening, plate = QpcrPlate("plate-screen"), QpcrPlate("plate-1")
    screening.dna("INK-L1-REF", {"ink": 1.0}, genomes=5_000)
    screening.dna("P01-BL", {"patient": 1.0}, genomes=8_000)
    plate.dna("INK-L2-CAL", {"ink": 1.0}, genomes=5_000)
    plate.dna("P01-D10", {"ink": 0.1, "patient": 0.9})
    return [screening, plate]


def _bank_samples(bank_l1: str | None, bank_l2: str | None) -> list[tuple[object, ...]]:
    return [
        ("INK-L1-REF", "LOT1", "donor_reference", "LOT1", bank_l1),
        ("INK-L2-CAL", "LOT2", "calibrator", "LOT2", bank_l2),
        ("P01-BL", "P01", "recipient_baseline", None, None),
        ("P01-D10", "P01", "post_dose", "LOT1", None),
    ]


def test_calibrator_of_another_lot_of_the_same_bank_is_valid() -> None:
    """The patient received LOT1; the plate's calibrator is LOT2 of the same master cell bank."""
    samples = manifest(_bank_samples("MCB-1", "MCB-1"), BANK_COLUMNS)
    row = _one(
        compute_qpcr_chimerism(qpcr_wells(*_bank_plates()), samples, settings=QPCR).results,
        "P01-D10",
    )
    assert row["result_status"] == "quantified"
    assert row["pct_ink"] == pytest.approx(10.0, rel=1e-9)


def test_calibrator_of_another_bank_is_never_used() -> None:
    """LOT2 comes from another bank: a different genome, so the plate has no calibrator."""
    samples = manifest(_bank_samples("MCB-1", "MCB-2"), BANK_COLUMNS)
    row = _one(
        compute_qpcr_chimerism(qpcr_wells(*_bank_plates()), samples, settings=QPCR).results,
        "P01-D10",
    )
    assert row["result_status"] == "failed"
    assert "calibrator (donor_reference or calibrator) of MCB-1 on plate" in row["qc_reasons"]


def test_lots_without_a_cell_bank_are_one_bank() -> None:
    """No cell_bank column: every lot is the trial's one master cell bank."""
    samples = manifest([r[:4] for r in _bank_samples(None, None)])
    row = _one(
        compute_qpcr_chimerism(qpcr_wells(*_bank_plates()), samples, settings=QPCR).results,
        "P01-D10",
    )
    assert row["pct_ink"] == pytest.approx(10.0, rel=1e-9)


def test_product_banks_rules() -> None:
    """A lot without a bank joins the only named bank; with two named banks it stands alone."""
    one = ProductBanks(
        {
            "A": SampleInfo("A", "LOT1", Role.DONOR_REFERENCE, "LOT1", "MCB-1"),
            "B": SampleInfo("B", "LOT2", Role.CALIBRATOR, "LOT2", None),
        }
    )
    assert one.bank_of_lot("LOT2") == "MCB-1"
    assert one.members["MCB-1"] == ("A", "B")
    assert one.bank_of_lot("LOT9") == "MCB-1"
    two = ProductBanks(
        {
            "A": SampleInfo("A", "LOT1", Role.DONOR_REFERENCE, "LOT1", "MCB-1"),
            "B": SampleInfo("B", "LOT2", Role.CALIBRATOR, "LOT2", "MCB-2"),
            "C": SampleInfo("C", "LOT3", Role.CALIBRATOR, "LOT3", None),
        }
    )
    assert two.bank_of_lot("LOT3") == "lot LOT3"
    assert two.bank_of_lot("LOT9") is None
    assert ProductBanks({}).bank_of_lot(None) == DEFAULT_BANK


def test_ddpcr_reference_of_another_lot_of_the_same_bank_serves() -> None:
    """ddPCR: LOT2's product reference gives the copy number for a LOT1 patient (one bank)."""
    plate = DdpcrPlate()
    plate.dna("INK-L2-REF", {"ink": 1.0})
    plate.dna("P01-BL", {"patient": 1.0})
    plate.dna("P01-D10", {"ink": 0.1, "patient": 0.9})
    rows = [
        ("INK-L2-REF", "LOT2", "donor_reference", "LOT2", "MCB-1"),
        ("P01-BL", "P01", "recipient_baseline", None, None),
        ("P01-D10", "P01", "post_dose", "LOT1", None),
    ]
    out = compute_ddpcr_chimerism(ddpcr_wells(plate), manifest(rows, BANK_COLUMNS), settings=DDPCR)
    row = _one(out.results, "P01-D10")
    assert row["ci_low"] < 10.0 < row["ci_high"]
    other = [(*r[:4], "MCB-2") if r[0] == "INK-L2-REF" else r for r in rows]
    other.append(("INK-L1-REF", "LOT1", "donor_reference", "LOT1", "MCB-1"))
    out = compute_ddpcr_chimerism(ddpcr_wells(plate), manifest(other, BANK_COLUMNS), settings=DDPCR)
    row = _one(out.results, "P01-D10")
    assert row["result_status"] == "failed"
    assert "the iNK product was not tested" in row["qc_reasons"]


# --- copy number -------------------------------------------------------------------------------


def test_ddpcr_multi_copy_transgene_is_a_marker() -> None:
    """A product transgene with 4 copies per genome (ratio 2.0): k = 0.5, 10 % recovered."""
    plate = DdpcrPlate()
    for sample, mix in (
        ("PROD", {"ink": 1.0}),
        ("P01-BL", {"patient": 1.0}),
        ("S", {"ink": 0.1, "patient": 0.9}),
    ):
        plate.dna(sample, mix, copies={"ink": 4})
    rows = [
        ("PROD", "LOT1", "donor_reference", "LOT1"),
        ("P01-BL", "P01", "recipient_baseline", None),
        ("S", "P01", "post_dose", "LOT1"),
    ]
    row = _one(
        compute_ddpcr_chimerism(ddpcr_wells(plate), manifest(rows), settings=DDPCR).results, "S"
    )
    assert row["pct_ink"] == pytest.approx(10.0, rel=0.01)
    assert row["ci_low"] < 10.0 < row["ci_high"]


def test_ddpcr_configured_copies_override_the_product_reading() -> None:
    """Configured n_M = 2 for a product reading 1.4 copies (would round to 1): k = 1.

    The sample (true 10 % with 2 copies per iNK genome) reads 10 %; the product reads 30 %
    off, so the control-normalised value 10 x 2/1.4 is reported beside it.
    """
    plate = DdpcrPlate()
    plate.dna("PROD", {"ink": 1.0}, copies={"ink": 1.4})
    plate.dna("P01-BL", {"patient": 1.0})
    plate.dna("S", {"ink": 0.1, "patient": 0.9}, copies={"ink": 2})
    rows = [
        ("PROD", "LOT1", "donor_reference", "LOT1"),
        ("P01-BL", "P01", "recipient_baseline", None),
        ("S", "P01", "post_dose", "LOT1"),
    ]
    settings = replace(DDPCR, product_marker_copies={"iNK-M1": 2})
    out = compute_ddpcr_chimerism(ddpcr_wells(plate), manifest(rows), settings=settings)
    row = _one(out.results, "S")
    assert row["pct_ink"] == pytest.approx(10.0, rel=0.01)
    assert "(n_M = 2)" in row["qc_reasons"]
    pooled = out.markers.filter((pl.col("sample_id") == "S") & (pl.col("replicate") == "pooled"))
    assert pooled["pct_ink_control_normalised"][0] == pytest.approx(10.0 * 2 / 1.4, rel=0.01)
    inferred = compute_ddpcr_chimerism(ddpcr_wells(plate), manifest(rows), settings=DDPCR)
    assert _one(inferred.results, "S")["pct_ink"] == pytest.approx(20.0, rel=0.01)


# --- wells without DNA -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "name", "kind", "expected"),
    [
        (SampleInfo("P01-BL", "P01", Role.RECIPIENT_BASELINE), "P01-BL", "negative_control", False),
        (SampleInfo("INK-REF", "LOT1", Role.DONOR_REFERENCE), "INK-REF", "ntc", False),
        (SampleInfo("NTC-1", "NTC", Role.NEGATIVE_CONTROL, specimen="water"), "NTC-1", None, True),
        (SampleInfo("NEG-1", "NEG", Role.NEGATIVE_CONTROL, specimen="PB"), "NEG-1", "ntc", False),
        (SampleInfo("NEG-BLANK", "NEG", Role.NEGATIVE_CONTROL), "NEG-BLANK", None, True),
        (SampleInfo("NEG-2", "NEG", Role.NEGATIVE_CONTROL), "NEG-2", "negative_control", False),
        (None, "H2O", None, True),
        (None, None, "ntc", True),
        (None, "P02-BL", "negative_control", False),
    ],
)
def test_wells_without_dna_follow_the_manifest(
    info: SampleInfo | None, name: str | None, kind: str | None, expected: bool
) -> None:
    """Only NTC/water/blank wells are without DNA; the manifest role decides (issue 9 §1)."""
    assert is_no_template(info, name, kind) is expected
