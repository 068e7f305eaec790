"""A truncated or partial export is never accepted (issue 9 section 3; issue 16 "truncation").

Every supported format is cut at every byte offset inside its last line (and, where the layout
makes it detectable, at line boundaries mid-file) and must be refused with reason
``truncated``. The files are the real exports (read from ``../shared``, skipped when absent)
and the small synthetic files of :mod:`synthetic_exports`.

Known blind spots, asserted below so that they stay visible: a cut exactly at a line boundary
of a file without count information (a sizing table, a one-target qPCR plate, a manifest) and,
in a file re-saved by Excel as "CSV UTF-8" (BOM, no final line end), a cut inside a last field
that is a number, are indistinguishable from a complete file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from export_helpers import read_export
from synthetic_exports import SYNTHETIC, qx_manager_csv

from chimera.detect import detect
from chimera.errors import ChimeraError, RejectReason
from chimera.parsers.common import ParsedExport
from chimera.parsers.dispatch import parse_export
from chimera.settings import Settings

SETTINGS = Settings()
REAL = [
    *[
        ("genemapper", f"rchimerism_{name}.txt")
        for name in (
            "single_donor_ddata_donor",
            "single_donor_rdata_recipient",
            "single_donor_sdata_posttransplant",
            "single_donor_cd3_select_sdata",
            "double_donor_d1data_donor1",
            "double_donor_sdata_posttransplant",
        )
    ],
    ("genemapper", "gmconvert_genotypes_table_test.genemapper.txt"),
    ("qpcr_appbio", "quantstudio7flex_results_only_standard_curve.txt"),
    ("qpcr_appbio", "quantstudio7flex_rnasep_standard_curve_full.txt"),
    ("qpcr_appbio", "stepOnePlus_results_excel_resaved.csv"),
    ("qpcr_biorad_cfx", "cfx96_sybr_quantification_cq_results.csv"),
    ("qpcr_biorad_cfx", "cfx_connect_sybr_two_targets_quantification_cq_results.csv"),
    ("qpcr_biorad_cfx", "allotropy_cfxmaestro_example01.csv"),
    ("ddpcr_biorad", "quantasoft_v1.7_merged_wells_20-0109.csv"),
    ("ddpcr_biorad", "quantasoft_old_small.csv"),
    ("ddpcr_biorad", "qxmanager_cnv_SMN2v2_20220630_162335_752.csv"),
]
WORKBOOKS = [
    ("qpcr_appbio", "quantstudio_fast96_relative_quant_results.xlsx"),
    ("qpcr_appbio", "stepOnePlus_results_native_export.xls"),
]
TEXT_SYNTHETIC = sorted(name for name in SYNTHETIC if not name.endswith(".xlsx"))


def _outcome(data: bytes, name: str) -> ParsedExport | ChimeraError:
    try:
        return parse_export(detect(data, file_name=name), settings=SETTINGS)
    except ChimeraError as err:
        return err


def _assert_truncated(data: bytes, name: str, where: str) -> None:
    outcome = _outcome(data, name)
    assert isinstance(outcome, ChimeraError), f"{name} cut {where} was accepted"
    assert outcome.reason is RejectReason.TRUNCATED, f"{name} cut {where}: {outcome}"
    assert "truncated" in str(outcome)


def _last_line(data: bytes) -> tuple[int, int]:
    """Byte span ``[start, end)`` of the last non-blank line's content (line end excluded)."""
    end = len(data.rstrip(b"\r\n"))
    start = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end)) + 1
    return start, end


def _excel_signature(data: bytes) -> bool:
    return data.startswith(b"\xef\xbb\xbf")


def _assert_every_last_line_cut_is_truncated(data: bytes, name: str) -> None:
    assert isinstance(_outcome(data, name), ParsedExport), f"{name} complete must be accepted"
    start, end = _last_line(data)
    for cut in range(start + 1, end):
        _assert_truncated(data[:cut], name, f"at byte {cut} (last line {start}-{end})")
    if end < len(data) and not _excel_signature(data):
        # The writer ends every line; without its last line end the file was cut.
        _assert_truncated(data[:end], name, "before the last line end")


@pytest.mark.parametrize(("folder", "name"), REAL)
def test_real_export_cut_inside_its_last_line_is_truncated(
    real_exports: Path, folder: str, name: str
) -> None:
    """Every byte offset inside the last line of a real export gives reason 'truncated'."""
    _assert_every_last_line_cut_is_truncated(read_export(real_exports, folder, name), name)


@pytest.mark.parametrize("name", TEXT_SYNTHETIC)
def test_synthetic_export_cut_inside_its_last_line_is_truncated(name: str) -> None:
    """Every byte offset inside the last line of each synthetic format gives 'truncated'.

    ``appbio_excel.csv`` is an Excel "CSV UTF-8" re-save (BOM, no final line end): its last
    field is a one-letter flag filled on every row, so even a cut that empties it is caught.
    """
    _assert_every_last_line_cut_is_truncated(SYNTHETIC[name], name)


def test_manifest_saved_as_csv_utf8_blind_spot() -> None:
    """Known blind spot: a BOM manifest without a final line end cut inside its last number.

    ``...,2800`` cut to ``...,28`` has every field and no line end to miss; cuts before the last
    delimiter are still caught.
    """
    data = b"\xef\xbb\xbf" + SYNTHETIC["manifest.csv"].rstrip(b"\n")
    start, end = _last_line(data)
    last_comma = data.rfind(b",", start, end)
    for cut in range(start + 1, last_comma + 1):
        _assert_truncated(data[:cut], "manifest.csv", f"at byte {cut}")
    blind = data[: end - 2]
    assert isinstance(_outcome(blind, "manifest.csv"), ParsedExport)


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


@pytest.mark.parametrize(
    ("folder", "name", "keep"),
    [
        ("ddpcr_biorad", "quantasoft_v1.7_merged_wells_20-0109.csv", 80),  # inside the Ch2 block
        ("ddpcr_biorad", "quantasoft_v1.7_merged_wells_20-0109.csv", 10),  # merged Ch2 rows
        ("ddpcr_biorad", "quantasoft_v1.7_merged_wells_20-0109.csv", 106),  # H06 Ch2 missing
        ("ddpcr_biorad", "quantasoft_old_small.csv", 9),
        ("ddpcr_biorad", "qxmanager_cnv_SMN2v2_20220630_162335_752.csv", 32),
        ("ddpcr_biorad", "qxmanager_cnv_SMN2v2_20220630_162335_752.csv", 12),
        ("genemapper", "gmconvert_genotypes_table_test.genemapper.txt", 60),
        ("qpcr_appbio", "quantstudio7flex_rnasep_standard_curve_full.txt", 2000),
        ("qpcr_appbio", "quantstudio7flex_rnasep_standard_curve_full.txt", 3981),
    ],
)
def test_real_export_cut_at_a_line_boundary_the_layout_reveals(
    real_exports: Path, folder: str, name: str, keep: int
) -> None:
    """Wells short of a channel, a sample short of markers, or an AB section without its
    results table at the end of the file: the cut is caught even at a line boundary."""
    data = read_export(real_exports, folder, name)
    _assert_truncated(b"".join(_lines(data)[:keep]), name, f"after line {keep}")


LINE_BOUNDARIES = {
    # QuantaSoft lists every Ch1 row, then every Ch2 row (formats.md 9): once Ch2 has begun, a
    # cut leaves the last wells without Ch2. A cut inside the Ch1 block reads as a one-channel
    # plate (blind here; the ingest's chimerism check refuses a plate without a reference).
    "quantasoft.csv": ({5, 6}, {2, 3, 4}),
    # QX Manager lists each well's Unknown then Reference row: a cut between them is caught, a
    # cut between wells is blind (and so is a file reduced to its first row).
    "qx_manager.csv": ({4, 6}, {2, 3, 5}),
    # A Genotypes Table has one row per sample x marker: a cut inside the second sample is caught.
    "genemapper_genotypes.txt": ({4}, {2, 3}),
}
"""Lines kept (header included) -> (cuts the layout reveals, cuts it cannot reveal)."""


@pytest.mark.parametrize("name", sorted(LINE_BOUNDARIES))
def test_synthetic_export_cut_at_each_line_boundary(name: str) -> None:
    """Every line-boundary cut that leaves a well (sample) short of a channel (marker) is
    truncated; the others are the documented blind spot and read as a smaller file."""
    lines = _lines(SYNTHETIC[name])
    caught, blind = LINE_BOUNDARIES[name]
    assert caught | blind == set(range(2, len(lines)))
    for keep in sorted(caught):
        _assert_truncated(b"".join(lines[:keep]), name, f"after line {keep}")
    for keep in sorted(blind):
        assert isinstance(_outcome(b"".join(lines[:keep]), name), ParsedExport)


def test_qx_manager_cut_in_the_last_count_breaks_the_quadrant_sum() -> None:
    """QX Manager writes no final line end; the last field (Ch1-Ch2-) cut is a wrong sum."""
    data = qx_manager_csv()
    assert not data.endswith(b"\n")
    assert data.endswith(b",9880")
    for keep in (1, 2, 3):
        _assert_truncated(data[: len(data) - keep], "qx.csv", f"{keep} byte(s) short")


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("genemapper", "rchimerism_single_donor_ddata_donor.txt"),
        ("qpcr_appbio", "quantstudio7flex_results_only_standard_curve.txt"),
        ("qpcr_biorad_cfx", "cfx96_sybr_quantification_cq_results.csv"),
    ],
)
def test_line_boundary_cut_without_count_information_is_a_known_blind_spot(
    real_exports: Path, folder: str, name: str
) -> None:
    """Known blind spot: a whole last line removed from a file that promises no row count.

    A sizing table lists peaks, a one-target qPCR plate lists wells; neither says how many, so
    a cut exactly at a line boundary reads as a complete, shorter file (README: Reliability).
    """
    lines = _lines(read_export(real_exports, folder, name))
    outcome = _outcome(b"".join(lines[:-2]), name)
    assert isinstance(outcome, ParsedExport)


@pytest.mark.parametrize(("folder", "name"), WORKBOOKS)
def test_real_workbook_cut_anywhere_is_truncated(
    real_exports: Path, folder: str, name: str
) -> None:
    """A cut .xlsx (zip) or .xls (OLE2) is refused as truncated: the last 600 bytes one by
    one, and every 509th byte across the file."""
    data = read_export(real_exports, folder, name)
    assert isinstance(_outcome(data, name), ParsedExport)
    cuts = sorted({*range(max(4, len(data) - 600), len(data)), *range(4, len(data), 509)})
    for cut in cuts:
        _assert_truncated(data[:cut], name, f"at byte {cut} of {len(data)}")


def test_synthetic_manifest_workbook_cut_anywhere_is_truncated() -> None:
    """A manifest .xlsx cut at any of its last 400 bytes, or every 97th byte, is truncated."""
    data = SYNTHETIC["manifest.xlsx"]
    cuts = sorted({*range(len(data) - 400, len(data)), *range(4, len(data), 97)})
    for cut in cuts:
        _assert_truncated(data[:cut], "manifest.xlsx", f"at byte {cut}")


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-16"])
def test_utf16_export_cut_inside_its_last_line_is_truncated(codec: str) -> None:
    """UTF-16 has two bytes per character: a cut at any byte of the last line is truncated
    (an odd byte count, or a last line without its line end)."""
    text = SYNTHETIC["appbio.txt"].decode("utf-8")
    data = text.encode(codec)
    assert isinstance(_outcome(data, "utf16.txt"), ParsedExport)
    bom = 2 if codec == "utf-16" else 0  # Python writes a BOM for plain "utf-16"
    start = text.rstrip("\r\n").rfind("\n") + 1
    end = len(text.rstrip("\r\n"))
    cuts = range(bom + 2 * start + 1, bom + 2 * end + 2)
    assert len(cuts) == 2 * (end - start) + 1
    for cut in cuts:
        _assert_truncated(data[:cut], "utf16.txt", f"at byte {cut}")


HEADER_LINE = {"appbio.txt": 7, "appbio_excel.csv": 3}
"""0-based line of the table header where it is not the first line."""


@pytest.mark.parametrize("name", TEXT_SYNTHETIC)
def test_header_only_file_is_truncated(name: str) -> None:
    """A file cut right after its table header has no rows: refused as truncated."""
    lines = _lines(SYNTHETIC[name])
    _assert_truncated(b"".join(lines[: HEADER_LINE.get(name, 0) + 1]), name, "after the header")
