"""Everyday lab practice on qPCR/ddPCR plates (issue 9 §1, issue 11 "Headline and QC").

Labs put the same product reference, the same calibrator, each patient's baseline (as a 0 %
control) and NTCs on every plate; a plate's own control wells belong to that plate. A well's
role comes from the manifest, not from the instrument's sample type. A late background well in
a baseline is not carriage of the marker. Each test here failed on commit 460ddff.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from pcr_builders import (
    MANIFEST_COLUMNS,
    REFERENCE,
    DdpcrPlate,
    QpcrPlate,
    ct_for,
    ddpcr_wells,
    manifest,
    qpcr_wells,
)

from chimera.calculate.ddpcr import compute_ddpcr_chimerism
from chimera.calculate.qpcr import compute_qpcr_chimerism
from chimera.settings import DdpcrSettings, QpcrSettings

QPCR = QpcrSettings()
DDPCR = DdpcrSettings()
MARKER = "iNK-M1"


def _at(pct: float) -> dict[str, float]:
    return {"ink": pct / 100.0, "patient": 1.0 - pct / 100.0}


def _rows(results: pl.DataFrame, sample: str) -> list[dict[str, Any]]:
    rows = results.filter(pl.col("sample_id") == sample).to_dicts()
    return sorted(rows, key=lambda r: str(r.get("source_sha256")))


def _one(results: pl.DataFrame, sample: str) -> dict[str, Any]:
    rows = _rows(results, sample)
    assert len(rows) == 1, rows
    return rows[0]


QPCR_SAMPLES = [
    ("INK-CAL", "LOT1", "calibrator", "LOT1"),
    ("P01-BL", "P01", "recipient_baseline", None),
    ("P01-D10", "P01", "post_dose", "LOT1"),
    ("P01-D1", "P01", "post_dose", "LOT1"),
    ("P01-D5", "P01", "post_dose", "LOT1"),
]


# --- qPCR -------------------------------------------------------------------------------------


def test_qpcr_recurring_control_ids_each_plate_uses_its_own() -> None:
    """Three plates with the same calibrator, baseline and NTC ids and their own thresholds.

    Plate B reads S04 0.9 cycles later and S07 0.6 earlier, plate C RPP30 0.4 later and S04
    0.7 earlier: only the calibrator of the same plate cancels that. P01-D5 is measured on
    plates A and C: two results, one per plate, both 5 %.
    """
    a = QpcrPlate("plate-A")
    b = QpcrPlate("plate-B", shift={"S04": 0.9, "S07": -0.6})
    c = QpcrPlate("plate-C", shift={REFERENCE: 0.4, "S04": -0.7})
    for plate in (a, b, c):
        plate.controls()
    a.dna("P01-D10", _at(10.0))
    a.dna("P01-D5", _at(5.0))
    b.dna("P01-D1", _at(1.0))
    c.dna("P01-D5", _at(5.0), genomes=6_000)
    out = compute_qpcr_chimerism(qpcr_wells(a, b, c), manifest(QPCR_SAMPLES), settings=QPCR)
    assert _one(out.results, "P01-D10")["pct_ink"] == pytest.approx(10.0, rel=1e-9)
    assert _one(out.results, "P01-D1")["pct_ink"] == pytest.approx(1.0, rel=1e-9)
    repeats = _rows(out.results, "P01-D5")
    assert len(repeats) == 2
    assert [r["source_sha256"] for r in repeats] == ["plate-A", "plate-C"]
    assert [r["pct_ink"] for r in repeats] == pytest.approx([5.0, 5.0], rel=1e-9)
    assert all(r["qc_verdict"] == "pass" for r in repeats)
    detail = out.markers.filter(pl.col("sample_id") == "P01-D5")
    assert detail.group_by("source_sha256").len().sort("source_sha256")["len"].to_list() == [9, 9]


def test_qpcr_baseline_run_with_the_ntc_task_is_genomic_dna() -> None:
    """A baseline the lab marked as NTC in the software is still DNA (role from the manifest).

    Its reference gene amplifies at Ct ~22: that is template, not a contaminated NTC.
    """
    plate = QpcrPlate()
    plate.dna("INK-CAL", {"ink": 1.0}, genomes=5_000)
    plate.dna("P01-BL", {"patient": 1.0}, genomes=8_000, task="ntc")
    for target in (REFERENCE, "S04", "S07"):
        plate.add(None, target, [None, None], task="ntc")
    plate.dna("P01-D10", _at(10.0))
    row = _one(
        compute_qpcr_chimerism(qpcr_wells(plate), manifest(QPCR_SAMPLES), settings=QPCR).results,
        "P01-D10",
    )
    assert row["result_status"] == "quantified"
    assert row["qc_verdict"] == "pass"
    assert row["pct_ink"] == pytest.approx(10.0, rel=1e-9)


def test_qpcr_late_background_well_in_the_baseline_is_not_carriage() -> None:
    """One baseline well at Ct 39 (S04) and one at 38.6 (S07), later than the blank cut-off.

    The cut-off is the earlier of ntc_ct_min (38) and the NTCs' LoB Ct: both markers stay
    informative and the 10 % sample is quantified (before: failed).
    """
    plate = QpcrPlate()
    plate.dna("INK-CAL", {"ink": 1.0}, genomes=5_000)
    plate.add("P01-BL", REFERENCE, [ct_for(REFERENCE, 16_000)] * 3)
    plate.add("P01-BL", "S04", [None, 39.0, None])
    plate.add("P01-BL", "S07", [38.6, None, None])
    for target in (REFERENCE, "S04", "S07"):
        plate.add(None, target, [None, None], task="ntc")
    plate.dna("P01-D10", _at(10.0))
    out = compute_qpcr_chimerism(qpcr_wells(plate), manifest(QPCR_SAMPLES), settings=QPCR)
    row = _one(out.results, "P01-D10")
    assert row["result_status"] == "quantified"
    assert row["n_informative"] == 2
    assert row["pct_ink"] == pytest.approx(10.0, rel=1e-9)


def _registered_reference_plate(s07: list[float | None]) -> QpcrPlate:
    """Another plate holding only the registered reference's wells (issue 12)."""
    other = QpcrPlate("plate-Z")
    other.dna("INK-REF", {"ink": 1.0}, genomes=5_000, targets=(REFERENCE, "S04"))
    other.add("INK-REF", "S07", s07)
    return other


REGISTERED = [*QPCR_SAMPLES, ("INK-REF", "LOT1", "donor_reference", "LOT1")]


def test_qpcr_carriage_comes_from_the_patients_own_plates_when_they_hold_the_product() -> None:
    """The calibrator on the patient's plate carries S07 (3/3 wells); the registered reference
    on another plate shows S07 in none of 3 wells. The patient's own plate decides (issue 12):
    S07 stays informative (pooled over every plate it was 3/6, ambiguous)."""
    plate = QpcrPlate("plate-A")
    plate.controls()
    plate.dna("P01-D10", _at(10.0))
    other = _registered_reference_plate([None, None, None])
    out = compute_qpcr_chimerism(qpcr_wells(plate, other), manifest(REGISTERED), settings=QPCR)
    row = _one(out.results, "P01-D10")
    assert row["n_informative"] == 2
    assert row["pct_ink"] == pytest.approx(10.0, rel=1e-9)


def test_qpcr_carriage_reads_every_plate_when_the_own_plates_lack_the_marker() -> None:
    """No product S07 well on the patient's plate: S07 carriage comes from the registered
    reference on the other plate (3/3 amplified: the product carries it)."""
    plate = QpcrPlate("plate-A")
    plate.controls(targets=(REFERENCE, "S04"))
    plate.dna("P01-D10", _at(10.0))
    plate.dna("P01-BL", {"patient": 1.0}, genomes=8_000, targets=("S07",))
    ct = ct_for("S07", 10_000.0)
    other = _registered_reference_plate([ct, ct, ct])
    out = compute_qpcr_chimerism(qpcr_wells(plate, other), manifest(REGISTERED), settings=QPCR)
    s07 = out.markers.filter((pl.col("sample_id") == "P01-D10") & (pl.col("marker") == "S07"))
    assert set(s07["sharing"].to_list()) == {"donor_only"}
    alone = compute_qpcr_chimerism(qpcr_wells(plate), manifest(REGISTERED), settings=QPCR)
    s07 = alone.markers.filter((pl.col("sample_id") == "P01-D10") & (pl.col("marker") == "S07"))
    assert set(s07["sharing"].to_list()) == {"not_informative"}


# --- ddPCR ------------------------------------------------------------------------------------

DDPCR_SAMPLES = [
    ("PROD", "LOT1", "donor_reference", "LOT1"),
    ("P01-BL", "P01", "recipient_baseline", None),
    ("S-5", "P01", "post_dose", "LOT1"),
    ("S-10", "P01", "post_dose", "LOT1"),
    ("S-LOW", "P01", "post_dose", "LOT1"),
]


def _controls(plate: DdpcrPlate, *, product: bool = True) -> None:
    if product:
        plate.dna("PROD", {"ink": 1.0})
    plate.dna("P01-BL", {"patient": 1.0})
    plate.counts("NTC", MARKER, 0, 0, sample_type="ntc")


def _ddpcr(*plates: DdpcrPlate, rows: list[tuple[object, ...]] | None = None) -> Any:
    samples = manifest(rows or DDPCR_SAMPLES)
    return compute_ddpcr_chimerism(ddpcr_wells(*plates), samples, settings=DDPCR)


def test_ddpcr_repeat_measurement_on_another_plate_is_a_result_of_its_own() -> None:
    """The same product, baseline and NTC ids on two plates; S-5 measured on both."""
    a, b = DdpcrPlate("plate-A"), DdpcrPlate("plate-B")
    for plate in (a, b):
        _controls(plate)
        plate.dna("S-5", _at(5.0))
    a.dna("S-10", _at(10.0))
    out = _ddpcr(a, b)
    repeats = _rows(out.results, "S-5")
    assert len(repeats) == 2
    assert [r["source_sha256"] for r in repeats] == ["plate-A", "plate-B"]
    for r in repeats:
        assert r["result_status"] == "quantified"
        assert r["ci_low"] < 5.0 < r["ci_high"]
        assert r["qc_verdict"] == "pass"
    assert _one(out.results, "S-10")["source_sha256"] == "plate-A"


def test_ddpcr_background_is_judged_per_plate() -> None:
    """Plate A's baseline shows 8 false-positive droplets; plate B's blanks are clean.

    S-LOW on plate B has 4 marker droplets in 40,000: above plate B's LoB (0), so detected.
    Pooling plate A's background would expect ~2 false positives and call it not detected.
    """
    a, b = DdpcrPlate("plate-A"), DdpcrPlate("plate-B")
    a.dna("PROD", {"ink": 1.0})
    for _ in range(2):
        a.counts("P01-BL", MARKER, 4, 9_024)
        b.counts("P01-BL", MARKER, 0, 9_024)
        b.counts("S-LOW", MARKER, 2, 9_024)
    for plate in (a, b):
        plate.counts("NTC", MARKER, 0, 0, sample_type="ntc")
    row = _one(_ddpcr(a, b).results, "S-LOW")
    assert row["result_status"] == "below_loq"
    assert row["pct_ink"] == pytest.approx(100 * 2 * (4 / 40_000) / 0.6, rel=0.02)
    assert row["source_sha256"] == "plate-B"


def test_ddpcr_product_control_is_read_per_plate() -> None:
    """Plate B's product reference reads 0.8 copies per genome: noted on plate B only.

    The control-normalised value (reported / 0.8) goes into plate B's pooled marker row.
    """
    a, b = DdpcrPlate("plate-A"), DdpcrPlate("plate-B")
    _controls(a)
    _controls(b, product=False)
    b.dna("PROD", {"ink": 1.0}, copies={"ink": 0.8})
    for plate in (a, b):
        plate.dna("S-10", _at(10.0))
    out = _ddpcr(a, b)
    rows = _rows(out.results, "S-10")
    assert len(rows) == 2
    on_a, on_b = rows
    assert "control-normalised" not in (on_a["qc_reasons"] or "")
    assert "reads 0.8 copies per genome" in on_b["qc_reasons"]
    pooled = out.markers.filter((pl.col("sample_id") == "S-10") & (pl.col("replicate") == "pooled"))
    pooled = pooled.sort("source_sha256") if "source_sha256" in pooled.columns else pooled
    assert pooled["pct_ink_control_normalised"][0] is None
    normalised = pooled["pct_ink_control_normalised"][1]
    assert normalised == pytest.approx(pooled["pct_ink"][1] / 0.8, rel=0.01)


def test_ddpcr_plate_without_product_uses_the_patients_other_plate() -> None:
    """No product wells on plate B: the copy number comes from the product's wells on the
    patient's other plate A (the patient's baseline is on both)."""
    a, b = DdpcrPlate("plate-A"), DdpcrPlate("plate-B")
    _controls(a)
    _controls(b, product=False)
    b.dna("S-10", _at(10.0))
    row = _one(_ddpcr(a, b).results, "S-10")
    assert row["result_status"] == "quantified"
    assert row["ci_low"] < 10.0 < row["ci_high"]
    assert "from the reference on the patient's plates" in row["qc_reasons"]


def test_ddpcr_genomic_negative_control_is_not_contamination() -> None:
    """A 0 % control of unrelated DNA (negative_control, specimen PB) run as NegCtrl.

    Its ~9,000 reference-gene droplets are its DNA; with no marker droplets it is clean.
    """
    plate = DdpcrPlate()
    _controls(plate)
    plate.dna("NEG-1", {"patient": 1.0}, sample_type="negative_control")
    plate.dna("S-10", _at(10.0))
    rows = [(*r, None) for r in DDPCR_SAMPLES] + [("NEG-1", "NEG", "negative_control", None, "PB")]
    samples = manifest(rows, [*MANIFEST_COLUMNS, "specimen"])
    out = compute_ddpcr_chimerism(ddpcr_wells(plate), samples, settings=DDPCR)
    row = _one(out.results, "S-10")
    assert row["qc_verdict"] == "pass", row["qc_reasons"]
    assert "contamination" not in (row["qc_reasons"] or "")


def test_ddpcr_another_patients_baseline_as_negctrl_is_not_an_ntc() -> None:
    """P02's baseline run as NegCtrl (no manifest row here) is genomic DNA, not an NTC."""
    plate = DdpcrPlate()
    _controls(plate)
    plate.dna("P02-BL", {"patient": 1.0}, sample_type="negative_control")
    plate.dna("S-10", _at(10.0))
    row = _one(_ddpcr(plate).results, "S-10")
    assert row["qc_verdict"] == "pass", row["qc_reasons"]


def test_ddpcr_few_false_positive_droplets_in_ntcs_are_not_contamination() -> None:
    """Four NTCs with 3-4 marker droplets each: every one is within the others' LoB."""
    plate = DdpcrPlate()
    _controls(plate)
    for positives in (3, 4, 3, 3):
        plate.counts("NTC", MARKER, positives, 0, sample_type="ntc")
    plate.dna("S-10", _at(10.0))
    row = _one(_ddpcr(plate).results, "S-10")
    assert row["qc_verdict"] == "pass", row["qc_reasons"]
    assert row["result_status"] == "quantified"


def test_ddpcr_contaminated_ntc_flags_its_own_plate_only() -> None:
    """60 marker and 150 reference droplets in plate A's NTC: review on plate A, not on B."""
    a, b = DdpcrPlate("plate-A"), DdpcrPlate("plate-B")
    for plate in (a, b):
        _controls(plate)
        plate.dna("S-10", _at(10.0))
    a.counts("NTC", MARKER, 60, 150, sample_type="ntc")
    rows = _rows(_ddpcr(a, b).results, "S-10")
    assert len(rows) == 2
    on_a, on_b = rows
    assert on_a["qc_verdict"] == "review"
    assert "genomic DNA contamination" in on_a["qc_reasons"]
    assert "60 iNK-M1 positive droplets" in on_a["qc_reasons"]
    assert on_b["qc_verdict"] == "pass"
