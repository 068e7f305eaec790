"""A patient's PCR rebuild reads only the plates that can change their results (issue 12).

Of the plates without the patient's samples, only the registered reference's wells of the
markers the product has no well of on the patient's own plates can enter a result (the
every-plate fallback of :mod:`chimera.method_rows`). The rows computed from those must equal the
rows of the same calculation given the registered reference on every plate.
"""

from __future__ import annotations

import polars as pl
import pytest
from ingest_builders import LabTrial, appbio_text
from pcr_builders import REFERENCE, QpcrPlate
from test_pcr_incremental import _ddpcr_plates, _fill, _qpcr_plates

from chimera import method_rows as rows_module
from chimera.method_rows import method_rows, patient_samples
from chimera.plate_targets import FileMarkers, plates_by_target
from chimera.rebuild import method_inputs
from chimera.registry import read_registry
from chimera.row_index import RowIndex
from schemas.vocab import Method

PLATES = {Method.QPCR: _qpcr_plates, Method.DDPCR: _ddpcr_plates}


def _with_reference_plate(plates: dict[str, bytes]) -> dict[str, bytes]:
    """``plates`` plus qp5: P04's baseline and the registered reference without S07 wells."""
    plate = QpcrPlate("qp5")
    plate.dna("INK-REF", {"ink": 1.0}, genomes=5_000, targets=(REFERENCE, "S04"))
    plate.dna("P04-BL", {"patient": 1.0}, genomes=8_000, targets=(REFERENCE, "S04"))
    plates["qp5"] = appbio_text(plate, experiment="QP-qp5", run_end="2026-01-11 10:00")
    return plates


@pytest.fixture(scope="module", params=sorted(PLATES))
def trial(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Method, LabTrial]:
    """Every plate of one method ingested at once (qPCR with qp5)."""
    method: Method = request.param
    plates = PLATES[method]()
    if method == Method.QPCR:
        plates = _with_reference_plate(plates)
    return method, _fill(tmp_path_factory.mktemp(method.value), plates, [sorted(plates)])


def _rows(
    method: Method,
    trial: LabTrial,
    patient: str,
    *,
    every_plate: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[pl.DataFrame, pl.DataFrame, set[str]]:
    """(results, markers, files read) of one patient, scoped or with every plate."""
    registry = read_registry(trial.warehouse)
    inputs = method_inputs(trial.warehouse, registry, settings=trial.settings)[method]
    if every_plate:
        # Unscoped: every marker reads the registered reference on every plate.
        every = set(plates_by_target(inputs.current))
        monkeypatch.setattr(rows_module, "fallback_targets", lambda *_: every)
    read = rows_module._relevant(
        inputs, patient, registry, patient_samples(registry, patient), trial.settings
    )
    results, markers = method_rows(inputs, patient, registry, trial.settings)
    monkeypatch.undo()
    files = set(read["source_file"].unique().to_list())
    return results.sort(results.columns), markers.sort(markers.columns), files


@pytest.mark.parametrize(
    ("patient", "own"),
    [("P01", {"1"}), ("P02", {"2"}), ("P03", {"3"}), ("P04", {"4", "5"})],
)
def test_scoped_rows_equal_the_rows_given_every_plate(
    trial: tuple[Method, LabTrial],
    patient: str,
    own: set[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """P02's plate lacks the product's wells of a marker (S07 on qp2, the ddPCR marker on dd2):
    it reads the registered reference of qp1/qp3 (dd1/dd3), and its rows equal those computed
    with every plate. P01 and P03 hold the product's wells of every marker: only their own
    plate is read. P04 lacks only H1 on qp4, which no registered reference well holds."""
    method, lab = trial
    prefix = "qp" if method == Method.QPCR else "dd"
    results, markers, files = _rows(
        method, lab, patient, every_plate=False, monkeypatch=monkeypatch
    )
    every = _rows(method, lab, patient, every_plate=True, monkeypatch=monkeypatch)
    assert results.height > 0
    assert results.equals(every[0])
    assert markers.equals(every[1])
    expected = {f"{prefix}{n}.txt" for n in own}
    if method == Method.DDPCR:
        expected &= {"dd1.txt", "dd2.txt", "dd3.txt", "dd4.txt"}
    if patient == "P02":
        expected |= {f"{prefix}1.txt", f"{prefix}3.txt"}
        assert len(every[2]) > len(files) or method == Method.DDPCR
    assert files == expected


def test_every_file_indexed_in_one_pass_equals_each_file_alone(
    trial: tuple[Method, LabTrial],
) -> None:
    """Files indexed together (in one pass, a few at a time) give the markers of each alone."""
    method, lab = trial
    registry = read_registry(lab.warehouse)
    inputs = method_inputs(lab.warehouse, registry, settings=lab.settings)[method]
    genes = lab.settings.qpcr.reference_genes
    together = FileMarkers.by_file(inputs.current, genes)
    files = inputs.current.partition_by("source_sha256", as_dict=True)
    alone = {str(sha): FileMarkers.of(rows, genes) for (sha,), rows in files.items()}
    assert len(alone) >= 4
    assert together == alone
    index = RowIndex.of(inputs.current)
    shas = sorted(alone)
    assert index.markers(shas[:2], genes) == [alone[sha] for sha in shas[:2]]
    assert index.markers([*shas, "not-a-file"], genes)[:-1] == [alone[sha] for sha in shas]
    assert any(markers.wells for markers in together.values())
