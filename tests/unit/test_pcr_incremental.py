"""One new PCR plate touches only the patients it changes, and file order never matters (issue 12).

A patient's product marker carriage (qPCR) and n_M (ddPCR) come from the product's wells on the
patient's own plates when those hold wells of the marker, else from the registered reference
(``donor_reference``) on every plate (:mod:`chimera.method_rows`). So a plate with the registered
reference touches the patients on it and the bank patients whose plates lack the product's wells
of some marker; a warehouse filled plate by plate in any order equals one filled at once.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from ingest_builders import (
    LabTrial,
    appbio_text,
    bank_manifest,
    infusion_csv,
    quantasoft_csv,
)
from pcr_builders import REFERENCE, DdpcrPlate, QpcrPlate, ct_for

from schemas.vocab import FileStatus

PATIENTS = ("P01", "P02", "P03", "P04")
TARGETS = (REFERENCE, "S04", "S07")
RESULT_COLUMNS = (
    "sample_id", "method", "result_status", "pct_ink", "ci_low", "ci_high", "lod_pct",
    "qc_verdict", "qc_reasons", "n_informative", "superseded",
)  # fmt: skip
MARKER_COLUMNS = (
    "sample_id", "marker", "replicate", "sharing", "ct", "positives", "pct_ink", "included",
    "exclusion_reason",
)  # fmt: skip


def _doses() -> bytes:
    return infusion_csv([(p, 1, 0, "LOT1") for p in PATIENTS])


def _patient(plate: QpcrPlate, patient: str, ink: float) -> None:
    plate.dna(f"{patient}-BL", {"patient": 1.0}, genomes=8_000)
    plate.dna(f"{patient}-D1", {"ink": ink, "patient": 1.0 - ink})
    for target in TARGETS:
        plate.add(None, target, [None, None], task="ntc")


def _registered_s07(plate: QpcrPlate, amplified: int) -> None:
    """The registered reference with ``amplified`` of 3 S07 wells amplifying (others late)."""
    plate.dna("INK-REF", {"ink": 1.0}, genomes=5_000, targets=(REFERENCE, "S04"))
    ct = ct_for("S07", 10_000.0)
    assert ct is not None
    plate.add("INK-REF", "S07", [ct if i < amplified else None for i in range(3)])


def _qpcr_plates() -> dict[str, bytes]:
    """Four plates, one per patient, each with the calibrator.

    qp1 (P01) holds the registered reference with one of three S07 wells amplified; qp2
    (P02) holds the calibrator without S07 wells, so P02's S07 carriage reads the registered
    reference on every plate; qp4 (P04) holds the product's wells of every marker but H1, a
    target no product well has anywhere; qp3 (P03) brings the registered reference with S07
    amplified in all three wells (and no H1 well).
    """
    plates: dict[str, bytes] = {}
    for name, patient, ink in (("qp1", "P01", 0.2), ("qp2", "P02", 0.1), ("qp4", "P04", 0.3)):
        plate = QpcrPlate(name)
        targets = (REFERENCE, "S04") if patient == "P02" else TARGETS
        plate.dna("INK-CAL", {"ink": 1.0}, genomes=5_000, targets=targets)
        if patient == "P01":
            _registered_s07(plate, amplified=1)
        if patient == "P04":
            plate.dna("P04-BL", {"patient": 1.0}, targets=("H1",))
        _patient(plate, patient, ink)
        plates[name] = appbio_text(plate, experiment=f"QP-{name}", run_end="2026-01-09 10:00")
    plate = QpcrPlate("qp3")
    plate.dna("INK-CAL", {"ink": 1.0}, genomes=5_000)
    _registered_s07(plate, amplified=3)
    _patient(plate, "P03", 0.05)
    plates["qp3"] = appbio_text(plate, experiment="QP-qp3", run_end="2026-01-10 10:00")
    return plates


def _ddpcr_plates() -> dict[str, bytes]:
    """dd1 (P01) holds the registered reference; dd2 (P02) no product well (its n_M reads the
    registered reference on every plate); dd4 (P04) the calibrator; dd3 (P03) brings the
    registered reference reading 1.4 copies per genome of the marker."""
    plates: dict[str, bytes] = {}
    for name, patient, ink in (("dd1", "P01", 0.2), ("dd2", "P02", 0.1), ("dd4", "P04", 0.3)):
        plate = DdpcrPlate(name)
        if patient == "P01":
            plate.dna("INK-REF", {"ink": 1.0})
        if patient == "P04":
            plate.dna("INK-CAL", {"ink": 1.0})
        plate.dna(f"{patient}-BL", {"patient": 1.0})
        plate.dna(f"{patient}-D1", {"ink": ink, "patient": 1.0 - ink})
        plates[name] = quantasoft_csv(plate, experiment=f"DD-{name}")
    plate = DdpcrPlate("dd3")
    plate.dna("INK-REF", {"ink": 1.0}, copies={"ink": 1.4})
    plate.dna("P03-BL", {"patient": 1.0})
    plate.dna("P03-D1", {"ink": 0.05, "patient": 0.95})
    plates["dd3"] = quantasoft_csv(plate, experiment="DD-dd3")
    return plates


def _trial(root: Path) -> LabTrial:
    trial = LabTrial(root)
    outcomes = trial.ingest(
        trial.drop("manifest.csv", bank_manifest(PATIENTS)), trial.drop("d.csv", _doses())
    )
    assert {o.status for o in outcomes} == {FileStatus.ACCEPTED}
    return trial


def _tables(trial: LabTrial) -> tuple[pl.DataFrame, pl.DataFrame]:
    results = trial.chimerism()
    markers = trial.markers()
    results = results.select(c for c in RESULT_COLUMNS if c in results.columns)
    markers = markers.select(c for c in MARKER_COLUMNS if c in markers.columns)
    return results.sort(results.columns, nulls_last=True), markers.sort(
        markers.columns, nulls_last=True
    )


def _fill(root: Path, plates: dict[str, bytes], order: list[list[str]]) -> LabTrial:
    """Ingest ``plates`` batch by batch, in ``order``."""
    trial = _trial(root)
    for batch in order:
        paths = [trial.drop(f"{name}.txt", plates[name]) for name in batch]
        outcomes = trial.ingest(*paths)
        assert {o.status for o in outcomes} == {FileStatus.ACCEPTED}, [o.reason for o in outcomes]
    return trial


PLATES = {"qpcr": _qpcr_plates, "ddpcr": _ddpcr_plates}


@pytest.mark.parametrize("method", sorted(PLATES))
def test_warehouse_rows_do_not_depend_on_file_order(tmp_path: Path, method: str) -> None:
    """All plates at once, one by one, and in the reverse order give the same rows."""
    plates = PLATES[method]()
    names = sorted(plates)
    at_once = _tables(_fill(tmp_path / "once", plates, [names]))
    one_by_one = _tables(_fill(tmp_path / "one", plates, [[n] for n in names]))
    reverse = _tables(_fill(tmp_path / "rev", plates, [[n] for n in reversed(names)]))
    assert at_once[0].height == len(PATIENTS)
    for other in (one_by_one, reverse):
        assert other[0].equals(at_once[0])
        assert other[1].equals(at_once[1])


def test_a_plate_with_the_registered_reference_touches_only_patients_it_changes(
    tmp_path: Path,
) -> None:
    """qp3 touches P03 (on it) and P02 (its plate lacks the product's S07 wells), never P01,
    whose own plate holds the product's wells of every marker, nor P04, whose plate lacks only
    H1, which qp3's registered reference does not bring. P02's S07 measures iNK
    once qp3's registered reference shows the product carries it (1/3 wells amplified before,
    4/6 after)."""
    plates = _qpcr_plates()
    trial = _fill(tmp_path, plates, [["qp1", "qp2", "qp4"]])
    assert _sharing(trial, "P02-D1", "S07") == {"not_informative"}
    assert _sharing(trial, "P01-D1", "S07") == {"donor_only"}
    outcome = trial.ingest_one(trial.drop("qp3.txt", plates["qp3"]))
    assert outcome.status is FileStatus.ACCEPTED
    assert outcome.patients == frozenset({"P02", "P03"})
    assert _sharing(trial, "P02-D1", "S07") == {"donor_only"}


def _sharing(trial: LabTrial, sample_id: str, marker: str) -> set[str]:
    rows = trial.markers().filter((pl.col("sample_id") == sample_id) & (pl.col("marker") == marker))
    return set(rows["sharing"].to_list())


def test_a_ddpcr_plate_with_the_registered_reference_touches_plates_without_product_wells(
    tmp_path: Path,
) -> None:
    """dd3 touches P03 (on it) and P02 (no product well on its plate: n_M from every plate)."""
    plates = _ddpcr_plates()
    trial = _fill(tmp_path, plates, [["dd1", "dd2", "dd4"]])
    outcome = trial.ingest_one(trial.drop("dd3.txt", plates["dd3"]))
    assert outcome.status is FileStatus.ACCEPTED
    assert outcome.patients == frozenset({"P02", "P03"})
