"""Each parser reports the run identity the file itself carries, and a layout fingerprint.

Issue 9 section 1: a re-export or re-analysis of one run (same header identity, same wells and
samples) must be told from another plate that repeats the control ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from export_helpers import read_export
from synthetic_exports import SYNTHETIC

from chimera.detect import detect
from chimera.parsers.common import ParsedExport
from chimera.parsers.dispatch import parse_export
from chimera.settings import Settings

SETTINGS = Settings()


def _parse(data: bytes, name: str = "x.csv") -> ParsedExport:
    return parse_export(detect(data, file_name=name), settings=SETTINGS)


@pytest.mark.parametrize(
    ("folder", "name", "run_id"),
    [
        (
            "qpcr_appbio",
            "quantstudio7flex_results_only_standard_curve.txt",
            "Experiment Name: 01OCT2024; Experiment Run End Time: 2024-10-01 15:02:50 PM EST",
        ),
        (
            "qpcr_appbio",
            "quantstudio7flex_rnasep_standard_curve_full.txt",
            (
                "Experiment Name: QuantStudio 96-Well Standard Curve Example; "
                "Experiment Run End Time: 2010-10-21 00:51:26 AM EDT"
            ),
        ),
        (
            "qpcr_appbio",
            "quantstudio_fast96_relative_quant_results.xlsx",
            "Experiment Name: 2022-08-12 145003; Experiment Run End Time: 2022-08-12 16:28:28 PM EDT",
        ),
        (
            "qpcr_appbio",
            "stepOnePlus_results_native_export.xls",
            "Experiment Run End Time: 2020-10-07 16:54:21 PM PDT",
        ),
        (
            "genemapper",
            "gmconvert_genotypes_table_test.genemapper.txt",
            "Run Name: GowaP-A90314QN, GowaP-A90314QR, GowaP-A90314QU",
        ),
        ("genemapper", "rchimerism_single_donor_ddata_donor.txt", None),
        ("qpcr_biorad_cfx", "cfx96_sybr_quantification_cq_results.csv", None),
        ("ddpcr_biorad", "quantasoft_v1.7_merged_wells_20-0109.csv", None),
        ("ddpcr_biorad", "qxmanager_cnv_SMN2v2_20220630_162335_752.csv", None),
    ],
)
def test_run_identity_from_the_files_own_header(
    real_exports: Path, folder: str, name: str, run_id: str | None
) -> None:
    """AB preamble, GeneMapper Run Name; none where the file has none.

    QuantaSoft/QX write the experiment *type* (``ABS``, ``DQ``) in ``Experiment``: two
    different plates share it, so it is no identity.
    """
    assert _parse(read_export(real_exports, folder, name), name).run_id == run_id


def test_cfx_run_information_rows_give_the_run(real_exports: Path) -> None:
    """CFX run-information rows above the table identify the run."""
    name = "cfx_connect_sybr_two_targets_quantification_cq_results.csv"
    preamble = (
        "File Name,sam_2024-03-25.pcrd\r\nCreated By User,sam\r\n"
        "Run Started,03/25/2024 06:10:54 UTC\r\nCFX Maestro Version,2.3\r\n\r\n"
    )
    parsed = _parse(preamble.encode() + read_export(real_exports, "qpcr_biorad_cfx", name))
    assert parsed.run_id == "File Name: sam_2024-03-25.pcrd; Run Started: 03/25/2024 06:10:54 UTC"


def test_ddpcr_experiment_name_is_an_identity_when_it_is_a_name() -> None:
    """An ``Experiment`` value that is not a type code (ABS, CNV, ...) names the run."""
    data = SYNTHETIC["quantasoft.csv"].replace(b'"ABS"', b'"iNK-plate-42"')
    assert _parse(data).run_id == "Experiment: iNK-plate-42"
    assert _parse(SYNTHETIC["quantasoft.csv"]).run_id is None


@pytest.mark.parametrize("name", ["appbio.txt", "cfx.csv", "quantasoft.csv", "qx_manager.csv"])
def test_re_export_of_the_same_plate_has_the_same_fingerprint(name: str) -> None:
    """Other line ends, another row order and re-analysed values: still the same plate."""
    data = SYNTHETIC[name]
    original = _parse(data)
    lines = data.splitlines()
    header = next(
        i for i, line in enumerate(lines) if line.lstrip(b"\xef\xbb\xbf,").startswith(b"Well")
    )
    reordered = [*lines[: header + 1], *reversed(lines[header + 1 :])]
    re_export = (
        b"\n".join(reordered).replace(b"1.5,", b"1.6,").replace(b"25.100", b"25.300") + b"\n"
    )
    again = _parse(re_export)
    assert original.layout_fingerprint is not None
    assert len(original.layout_fingerprint) == 64
    assert again.layout_fingerprint == original.layout_fingerprint
    assert again.run_id == original.run_id


@pytest.mark.parametrize(
    ("name", "patient_sample"),
    [("appbio.txt", b"P01-D8"), ("cfx.csv", b"P01-D8"), ("quantasoft.csv", b"P01-D8")],
)
def test_another_plate_repeating_the_controls_has_another_fingerprint(
    name: str, patient_sample: bytes
) -> None:
    """The same calibrator and NTC ids with other patients' samples are another plate."""
    data = SYNTHETIC[name]
    other = data.replace(patient_sample, b"P05-D15")
    assert b"CAL-1" in other
    assert _parse(other).layout_fingerprint != _parse(data).layout_fingerprint


def test_str_fingerprint_covers_samples_and_markers() -> None:
    """A sizing table's fingerprint changes with its sample files, not with peak heights."""
    data = SYNTHETIC["genemapper_sizing.txt"]
    original = _parse(data, "s.txt").layout_fingerprint
    assert _parse(data.replace(b"\t941\t", b"\t944\t"), "s.txt").layout_fingerprint == original
    assert _parse(data.replace(b"A01_P01", b"B01_P02"), "s.txt").layout_fingerprint != original
