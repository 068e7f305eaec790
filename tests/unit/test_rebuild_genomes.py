"""Issue 10 through the ingest path: three genomes, sorted fractions, product lots and banks.

STR tables mix the product, the patient and a prior HSCT donor in known shares
(``ingest_builders.sizing_table``: every allele genome-specific, no stutter), so each expected
value is the share put into the sample.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from ingest_builders import (
    LabTrial,
    appbio_text,
    infusion_csv,
    manifest_csv,
    quantasoft_csv,
    sample,
    sizing_table,
)
from pcr_builders import REFERENCE, DdpcrPlate, QpcrPlate, ct_for

from chimera.finish import NO_NK_COUNT
from schemas.vocab import FileStatus, GenomeModel, Method, ResultStatus, Role, Specimen

INK = {"ink": 1.0}
PATIENT = {"patient": 1.0}


def _mix(ink: float, hsct: float = 0.0) -> dict[str, float]:
    return {"ink": ink, "hsct": hsct, "patient": 1.0 - ink - hsct}


def _three_genome_manifest() -> bytes:
    return manifest_csv(
        [
            sample("INK-REF", "LOT1", Role.DONOR_REFERENCE, product_lot="LOT1", specimen="iNK"),
            sample("INK-CAL", "LOT1", Role.CALIBRATOR, product_lot="LOT1", specimen="iNK"),
            sample("P09-BL", "P09", Role.RECIPIENT_BASELINE, at=-5, wbc_per_ul=3000),
            sample("P09-GL", "P09", Role.RECIPIENT_GERMLINE, specimen="buccal swab"),
            sample("P09-HSCTD", "P09", Role.HSCT_DONOR, specimen="HSCT donor DNA"),
            sample("P09-D1", "P09", Role.POST_DOSE, at=1, wbc_per_ul=2000),
            sample("P09-D2", "P09", Role.POST_DOSE, at=2, wbc_per_ul=2000),
        ]
    )


def _start(trial: LabTrial, manifest: bytes, doses: bytes) -> None:
    outcomes = trial.ingest(trial.drop("manifest.csv", manifest), trial.drop("doses.csv", doses))
    assert {o.status for o in outcomes} == {FileStatus.ACCEPTED}


def test_three_genome_str_waits_for_the_germline_then_reports_each_genome(tmp_path: Path) -> None:
    """A patient with an hsct_donor sample waits for recipient_germline; the mixed pre-dose
    baseline is never read as the patient's genotype."""
    trial = LabTrial(tmp_path)
    _start(trial, _three_genome_manifest(), infusion_csv([("P09", 1, 0, "LOT1")]))
    references = sizing_table(
        [("INK-REF", INK), ("P09-HSCTD", {"hsct": 1.0}), ("P09-BL", _mix(0.0, 0.7))]
    )
    post = sizing_table([("P09-D1", _mix(0.10, 0.60)), ("P09-D2", _mix(0.25, 0.45))])
    assert trial.ingest_one(trial.drop("refs.txt", references)).status is FileStatus.ACCEPTED
    waiting = trial.ingest_one(trial.drop("post.txt", post))
    assert waiting.status is FileStatus.WAITING
    assert "recipient_germline" in (waiting.reason or "")
    assert "recipient_baseline" not in (waiting.reason or "")
    germline = trial.ingest_one(trial.drop("germline.txt", sizing_table([("P09-GL", PATIENT)])))
    assert germline.status is FileStatus.ACCEPTED
    assert trial.ingest_one(trial.folder / "post.txt").status is FileStatus.ACCEPTED
    rows = trial.chimerism().sort("sample_id")
    assert rows["sample_id"].to_list() == ["P09-D1", "P09-D2"]
    assert set(rows["genome_model"]) == {GenomeModel.THREE_GENOME}
    assert rows["pct_ink"].to_list() == pytest.approx([10.0, 25.0], abs=0.5)
    assert rows["pct_hsct_donor"].to_list() == pytest.approx([60.0, 45.0], abs=1.0)
    assert rows["pct_recipient"].to_list() == pytest.approx([30.0, 30.0], abs=1.0)
    d3 = trial.markers().filter((pl.col("sample_id") == "P09-D1") & (pl.col("marker") == "D3S1358"))
    assert d3.select("donor_alleles", "recipient_alleles", "hsct_donor_alleles").row(0) == (
        "11/14",
        "17/20",
        "23/26",
    )


def test_three_genome_ddpcr_reads_the_germline_from_the_qpcr_screening_plate(
    tmp_path: Path,
) -> None:
    """The germline is typed once, on a qPCR marker-screening plate; the ddPCR plates carry the
    product, the HSCT donor and the baseline. iNK-M1 (product only) gives % iNK, HD-M1 (HSCT
    donor only) % HSCT donor."""
    trial = LabTrial(tmp_path)
    _start(trial, _three_genome_manifest(), infusion_csv([("P09", 1, 0, "LOT1")]))
    screen = QpcrPlate("screen")
    for target, copies in ((REFERENCE, 20_000), ("iNK-M1", 0), ("HD-M1", 0)):
        ct = ct_for(REFERENCE, copies) if copies else None
        screen.add("P09-GL", target, [ct, ct, ct])
    screen.add(None, REFERENCE, [None, None], task="ntc")
    screening = appbio_text(screen, experiment="QS-P09", run_end="2026-01-02")
    plate = DdpcrPlate("dp")
    plate.dna("INK-CAL", INK, markers=("iNK-M1", "HD-M1"))
    plate.dna("P09-HSCTD", {"hsct": 1.0}, markers=("iNK-M1", "HD-M1"))
    plate.dna("P09-BL", _mix(0.0, 0.9), markers=("iNK-M1", "HD-M1"))
    plate.dna("P09-D1", _mix(0.05, 0.60), markers=("iNK-M1", "HD-M1"))
    for _ in range(2):
        plate.counts(None, "iNK-M1", 0, 0)
    files = [trial.drop("screen.txt", screening), trial.drop("dp.csv", quantasoft_csv(plate))]
    assert {o.status for o in trial.ingest(*files)} == {FileStatus.ACCEPTED}
    row = trial.chimerism().filter(pl.col("method") == Method.DDPCR).row(0, named=True)
    assert row["genome_model"] == GenomeModel.THREE_GENOME
    assert row["result_status"] == ResultStatus.QUANTIFIED
    assert row["ci_low"] <= 5.0 <= row["ci_high"]
    assert row["pct_hsct_donor_ci_low"] <= 60.0 <= row["pct_hsct_donor_ci_high"]


def test_sorted_fractions_keep_their_specimen_and_denominator(tmp_path: Path) -> None:
    """CD56+ x nk_per_ul, whole blood x WBC, CD3+ without a count; purity correction on CD56+."""
    trial = LabTrial(tmp_path)
    manifest = manifest_csv(
        [
            sample("INK-REF", "LOT1", Role.DONOR_REFERENCE, product_lot="LOT1", specimen="iNK"),
            sample("P01-BL", "P01", Role.RECIPIENT_BASELINE, at=-5, wbc_per_ul=3000),
            sample("P01-D1", "P01", Role.POST_DOSE, at=1, wbc_per_ul=4000),
            sample("P01-D1-CD56", "P01", Role.POST_DOSE, at=1, specimen="CD56+ sorted PB",
                   wbc_per_ul=4000, nk_per_ul=300, purity_pct=95),
            sample("P01-D1-CD3", "P01", Role.POST_DOSE, at=1, specimen="PB CD3+",
                   wbc_per_ul=4000, purity_pct=97),
            sample("P01-D2-CD56", "P01", Role.POST_DOSE, at=2, specimen="PB CD56+", purity_pct=90),
        ]
    )  # fmt: skip
    _start(trial, manifest, infusion_csv([("P01", 1, 0, "LOT1")]))
    truth = {"P01-D1": 8.0, "P01-D1-CD56": 57.0, "P01-D1-CD3": 0.0, "P01-D2-CD56": 60.0}
    table = sizing_table(
        [("INK-REF", INK), ("P01-BL", PATIENT)]
        + [(sid, {"ink": pct / 100, "patient": 1 - pct / 100}) for sid, pct in truth.items()]
    )
    assert trial.ingest(trial.drop("run.txt", table))[0].status is FileStatus.ACCEPTED
    rows = {r["sample_id"]: r for r in trial.chimerism().iter_rows(named=True)}
    assert {s: r["specimen"] for s, r in rows.items()} == {
        "P01-D1": Specimen.PB, "P01-D1-CD56": Specimen.PB_CD56, "P01-D1-CD3": Specimen.PB_CD3,
        "P01-D2-CD56": Specimen.PB_CD56,
    }  # fmt: skip
    assert all(r["is_headline"] for r in rows.values())
    whole, cd56, cd3, no_nk = (rows[s] for s in truth)
    assert whole["ink_cells_per_ul"] == pytest.approx(whole["pct_ink"] / 100 * 4000)
    assert cd56["ink_cells_per_ul"] == pytest.approx(cd56["pct_ink"] / 100 * 300)
    assert cd56["pct_ink_purity_corrected"] == pytest.approx(cd56["pct_ink"] / 0.95)
    assert cd56["purity_pct"] == 95
    assert no_nk["ink_cells_per_ul"] is None
    assert NO_NK_COUNT in (no_nk["qc_reasons"] or "")
    assert no_nk["pct_ink_purity_corrected"] == pytest.approx(min(no_nk["pct_ink"] / 0.9, 100))
    assert cd3["ink_cells_per_ul"] is None
    assert cd3["pct_ink_purity_corrected"] is None
    assert whole["pct_ink_purity_corrected"] is None


def _bank_manifest() -> bytes:
    return manifest_csv(
        [
            sample("REF-A1", "LOT-A1", Role.DONOR_REFERENCE, product_lot="LOT-A1",
                   cell_bank="MCB-A", specimen="iNK"),
            sample("CAL-A2", "LOT-A2", Role.CALIBRATOR, product_lot="LOT-A2", cell_bank="MCB-A",
                   specimen="iNK"),
            sample("CAL-B1", "LOT-B1", Role.CALIBRATOR, product_lot="LOT-B1", cell_bank="MCB-B",
                   specimen="iNK"),
            sample("P01-BL", "P01", Role.RECIPIENT_BASELINE, at=-5, wbc_per_ul=3000),
            sample("P01-D1", "P01", Role.POST_DOSE, at=1, wbc_per_ul=3000),
            sample("P02-BL", "P02", Role.RECIPIENT_BASELINE, at=-5, wbc_per_ul=3000),
            sample("P02-D1", "P02", Role.POST_DOSE, at=1, wbc_per_ul=3000),
        ]
    )  # fmt: skip


def test_lots_of_one_bank_share_a_reference_and_banks_never_mix(tmp_path: Path) -> None:
    """P01 received LOT-A1 then LOT-A2 (bank A, reference typed from LOT-A1): computed. P02
    received LOT-B1 (bank B): bank A's reference never serves it, its file waits."""
    trial = LabTrial(tmp_path)
    doses = infusion_csv(
        [("P01", 1, 0, "LOT-A1"), ("P01", 2, 3, "LOT-A2"), ("P02", 1, 0, "LOT-B1")]
    )
    _start(trial, _bank_manifest(), doses)
    refs = sizing_table([("REF-A1", INK), ("P01-BL", PATIENT), ("P02-BL", PATIENT)])
    assert trial.ingest_one(trial.drop("refs.txt", refs)).status is FileStatus.ACCEPTED
    p01 = trial.ingest_one(trial.drop("p01.txt", sizing_table([("P01-D1", _mix(0.2))])))
    assert p01.status is FileStatus.ACCEPTED
    p02 = trial.ingest_one(trial.drop("p02.txt", sizing_table([("P02-D1", _mix(0.2))])))
    assert p02.status is FileStatus.WAITING
    assert "cell bank MCB-B" in (p02.reason or "")
    row = trial.chimerism().row(0, named=True)
    assert (row["sample_id"], row["result_status"]) == ("P01-D1", ResultStatus.QUANTIFIED)
    assert row["pct_ink"] == pytest.approx(20.0, abs=0.5)


def test_a_calibrator_of_another_lot_of_the_bank_is_valid_on_the_plate(tmp_path: Path) -> None:
    """P01 received LOT-A1 only; the plate's calibrator is CAL-A2 (LOT-A2, same bank): used."""
    trial = LabTrial(tmp_path)
    _start(trial, _bank_manifest(), infusion_csv([("P01", 1, 0, "LOT-A1")]))
    plate = QpcrPlate("q")
    plate.dna("CAL-A2", INK, genomes=5_000)
    plate.dna("P01-BL", PATIENT, genomes=8_000)
    plate.dna("P01-D1", _mix(0.05), genomes=10_000)
    plate.add(None, REFERENCE, [None, None], task="ntc")
    outcome = trial.ingest(trial.drop("q.txt", appbio_text(plate, experiment="Q", run_end="1")))
    assert outcome[0].status is FileStatus.ACCEPTED
    row = trial.chimerism().row(0, named=True)
    assert row["result_status"] == ResultStatus.QUANTIFIED
    assert row["pct_ink"] == pytest.approx(5.0, rel=0.25)


def test_stutter_table_is_measured_once_and_used_by_every_str_result(tmp_path: Path) -> None:
    """The single-source profiles' back stutter lands in stutter_ratios with lineage, and the
    marker rows subtract that ratio."""
    trial = LabTrial(tmp_path)
    manifest = manifest_csv(
        [
            sample("INK-REF", "LOT1", Role.DONOR_REFERENCE, product_lot="LOT1", specimen="iNK"),
            sample("P01-BL", "P01", Role.RECIPIENT_BASELINE, at=-5, wbc_per_ul=3000),
            sample("P01-D1", "P01", Role.POST_DOSE, at=1, wbc_per_ul=3000),
        ]
    )
    _start(trial, manifest, infusion_csv([("P01", 1, 0, "LOT1")]))
    refs = _with_back_stutter(sizing_table([("INK-REF", INK), ("P01-BL", PATIENT)]), 0.08)
    files = [
        trial.drop("refs.txt", refs),
        trial.drop("post.txt", sizing_table([("P01-D1", _mix(0.3))])),
    ]
    trial.ingest(*files)
    table = trial.stutter()
    d3 = table.filter((pl.col("marker") == "D3S1358") & (pl.col("direction") == "back"))
    assert d3["source"].to_list() == ["measured"]
    assert d3["ratio"][0] == pytest.approx(0.08, abs=0.002)
    assert table["source_sha256"].n_unique() == 1
    used = trial.markers().filter(pl.col("marker") == "D3S1358")["stutter_ratio"]
    assert used.to_list() == pytest.approx([d3["ratio"][0]])


def _with_back_stutter(table: bytes, ratio: float) -> bytes:
    """Add an n-1 stutter peak of ``ratio`` x the parent under every allele of the table."""
    lines = table.decode().split("\r\n")
    out = [lines[0]]
    for line in lines[1:]:
        if not line:
            continue
        peak, sample_id, marker, allele, size, _height, area, point, _ = line.split("\t")
        stutter = round(int(area) * ratio)
        out.append(
            f"{peak}s\t{sample_id}\t{marker}\t{int(allele) - 1}\t{float(size) - 4:.2f}\t"
            f"{round(stutter / 6)}\t{stutter}\t{point}\t"
        )
        out.append(line)
    return ("\r\n".join(out) + "\r\n").encode()


def test_a_sample_on_two_str_runs_gives_two_results_never_one_mixed_profile(
    tmp_path: Path,
) -> None:
    """P01-D1 typed on run 1 (20 %) and again on run 2 (read 24 %, another aliquot): two rows,
    each from its own run's peaks; run 2 is current."""
    trial = LabTrial(tmp_path)
    manifest = manifest_csv(
        [
            sample("INK-REF", "LOT1", Role.DONOR_REFERENCE, product_lot="LOT1", specimen="iNK"),
            sample("P01-BL", "P01", Role.RECIPIENT_BASELINE, at=-5, wbc_per_ul=3000),
            sample("P01-D1", "P01", Role.POST_DOSE, at=1, wbc_per_ul=3000),
            sample("P01-D2", "P01", Role.POST_DOSE, at=2, wbc_per_ul=3000),
        ]
    )
    _start(trial, manifest, infusion_csv([("P01", 1, 0, "LOT1")]))
    run1 = sizing_table([("INK-REF", INK), ("P01-BL", PATIENT), ("P01-D1", _mix(0.20))])
    run2 = sizing_table([("INK-REF", INK), ("P01-D1", _mix(0.24)), ("P01-D2", _mix(0.05))])
    outcomes = trial.ingest(trial.drop("run1.txt", run1), trial.drop("run2.txt", run2))
    assert [o.supersedes for o in outcomes] == [None, None]
    rows = trial.chimerism().filter(pl.col("sample_id") == "P01-D1").sort("source_file")
    assert rows["pct_ink"].to_list() == pytest.approx([20.0, 24.0], abs=0.3)
    assert rows["superseded"].to_list() == [True, False]
    markers = trial.markers().filter(pl.col("sample_id") == "P01-D1")
    assert markers.group_by("source_file").len().sort("source_file")["len"].to_list() == [8, 8]
