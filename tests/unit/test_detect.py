from __future__ import annotations

from pathlib import Path

import pytest

from chimera.detect import Assay, ExportFormat, detect, detect_format
from chimera.errors import (
    BinaryContentError,
    ChimeraError,
    EmptyFileError,
    RejectReason,
    TruncatedExportError,
    UnreadableFileError,
    UnrecognisedExportError,
)

REAL = {
    "genemapper/rchimerism_single_donor_ddata_donor.txt": ExportFormat.GENEMAPPER_SIZING,
    "genemapper/rchimerism_double_donor_sdata_posttransplant.txt": ExportFormat.GENEMAPPER_SIZING,
    "genemapper/gmconvert_genotypes_table_test.genemapper.txt": ExportFormat.GENEMAPPER_GENOTYPES,
    "qpcr_appbio/quantstudio7flex_results_only_standard_curve.txt": ExportFormat.APPBIO_TEXT,
    "qpcr_appbio/quantstudio7flex_rnasep_standard_curve_full.txt": ExportFormat.APPBIO_TEXT,
    "qpcr_appbio/quantstudio_fast96_relative_quant_results.xlsx": ExportFormat.APPBIO_EXCEL,
    "qpcr_appbio/stepOnePlus_results_native_export.xls": ExportFormat.APPBIO_EXCEL,
    "qpcr_appbio/stepOnePlus_results_excel_resaved.csv": ExportFormat.APPBIO_CSV,
    "qpcr_biorad_cfx/cfx96_sybr_quantification_cq_results.csv": ExportFormat.CFX_CSV,
    "qpcr_biorad_cfx/allotropy_cfxmaestro_example01.csv": ExportFormat.CFX_CSV,
    "ddpcr_biorad/quantasoft_v1.7_merged_wells_20-0109.csv": ExportFormat.QUANTASOFT,
    "ddpcr_biorad/quantasoft_old_small.csv": ExportFormat.QUANTASOFT_OLD,
    "ddpcr_biorad/qxmanager_cnv_SMN2v2_20220630_162335_752.csv": ExportFormat.QX_MANAGER,
    "ddpcr_biorad/qxmanager_cnv_SMN2v2_20220630_162335_752_A01_Amplitude.csv": ExportFormat.DDPCR_AMPLITUDE,
}


@pytest.mark.parametrize(("relative", "expected"), sorted(REAL.items()))
def test_every_real_export_is_recognised_from_content(
    real_exports: Path, relative: str, expected: ExportFormat
) -> None:
    """Each real export is recognised from its bytes alone."""
    detection = detect_format((real_exports / relative).read_bytes())
    assert detection is not None
    assert detection.format is expected


def test_file_name_plays_no_part(real_exports: Path, tmp_path: Path) -> None:
    """A CFX export renamed to .txt is still a CFX export."""
    data = (real_exports / "qpcr_biorad_cfx/cfx96_sybr_quantification_cq_results.csv").read_bytes()
    renamed = tmp_path / "genemapper_export.txt"
    renamed.write_bytes(data)
    detection = detect_format(renamed.read_bytes())
    assert detection is not None
    assert detection.format is ExportFormat.CFX_CSV


@pytest.mark.parametrize(
    ("content", "expected", "assay"),
    [
        (
            b"\xef\xbb\xbfsample_id;patient_id;role;collected_at\r\n",
            ExportFormat.MANIFEST,
            Assay.REGISTRY,
        ),
        (b"Patient_ID,Dose_Number,Infused_At,Cells\n", ExportFormat.INFUSION_LOG, Assay.REGISTRY),
        (
            b"Sample Name\tMarker\tAllele 1\tAllele 2\tHeight 1\n",
            ExportFormat.GENEMAPPER_GENOTYPES,
            Assay.STR,
        ),
    ],
)
def test_small_synthetic_headers(content: bytes, expected: ExportFormat, assay: Assay) -> None:
    """Manifests, infusion logs and genotype tables are found by their column names."""
    detection = detect_format(content)
    assert detection is not None
    assert detection.format is expected
    assert detection.assay is assay


@pytest.mark.parametrize(
    "content", [b"", b"hello world\n", b"\x00\x01\x02\x03", b"PK\x03\x04not really a zip"]
)
def test_unknown_content_is_not_recognised(content: bytes) -> None:
    """Empty, prose, binary and corrupt workbook bytes match no format (no exception)."""
    assert detect_format(content) is None


QX_HEADER = (
    "Well,Sample description 1,Target,Conc(copies/µL),TargetType,Accepted Droplets,Positives,"
    "Negatives\r\nA01,P01-D8,S04,12.5,Unknown,20000,250,19750\r\n"
    "A01,P01-D8,RPP30,900.1,Reference,20000,10000,10000\r\n"
)
STEPONE_TEXT = (
    "* Block Type = 96well\r\n* Instrument Type = steponeplus\r\n\r\n[Results]\r\n"
    "Well\tSample Name\tTarget Name\tTask\tReporter\tCт\r\nA1\tP01-D8\tRPP30\tUNKNOWN\tVIC\t25.1\r\n"
)


@pytest.mark.parametrize(
    ("codec", "bom"),
    [
        ("utf-16-le", b"\xff\xfe"),
        ("utf-16-be", b"\xfe\xff"),
        ("utf-16-le", b""),
        ("utf-16-be", b""),
        ("utf-8", b"\xef\xbb\xbf"),
        ("utf-8", b""),
    ],
)
def test_unicode_exports_keep_micro_and_cyrillic_te(codec: str, bom: bytes) -> None:
    """UTF-16 (LE/BE, with or without BOM) and UTF-8 exports read µ and Cт headers alike."""
    for text, expected, header in (
        (QX_HEADER, ExportFormat.QX_MANAGER, "Conc(copies/µL)"),
        (STEPONE_TEXT, ExportFormat.APPBIO_TEXT, "Cт"),
    ):
        export = detect(bom + text.encode(codec), file_name="x.csv")
        assert export.format is expected
        assert export.encoding == codec
        assert export.bom == bool(bom)
        assert header in export.rows[export.header_row]


def test_cp1252_and_latin1_exports_read_micro() -> None:
    """A single-byte export (µ = 0xB5 in cp1252 and Latin-1) is decoded, not rejected."""
    data = QX_HEADER.encode("cp1252")
    assert b"\xb5" in data
    export = detect(data, file_name="x.csv")
    assert export.encoding == "cp1252"
    assert "Conc(copies/µL)" in export.rows[0]
    latin1 = detect(QX_HEADER.replace("S04", "S04\x81").encode("latin-1"), file_name="y.csv")
    assert latin1.encoding == "latin-1"
    assert latin1.format is ExportFormat.QX_MANAGER


def test_utf16_with_bad_bytes_is_refused_naming_the_encoding() -> None:
    """A UTF-16 file with an unpaired surrogate is refused with the encoding named."""
    data = b"\xff\xfe" + "Well,Target\r\n".encode("utf-16-le") + b"\x00\xd8A\x00"
    with pytest.raises(UnreadableFileError, match="UTF-16 LE"):
        detect(data, file_name="x.csv")


@pytest.mark.parametrize(
    ("content", "error", "reason", "needle"),
    [
        (b"", EmptyFileError, RejectReason.EMPTY_FILE, "empty"),
        (b" \r\n\t\r\n", EmptyFileError, RejectReason.EMPTY_FILE, "empty"),
        ("\r\n".encode("utf-16"), EmptyFileError, RejectReason.EMPTY_FILE, "blanks"),
        (bytes(range(256)) * 4, BinaryContentError, RejectReason.UNRECOGNISED_FORMAT, "binary"),
        (
            b"\x01\x02\x03garbage\x04\x05" * 50,
            BinaryContentError,
            RejectReason.UNRECOGNISED_FORMAT,
            "binary",
        ),
        (b"a,b,c\n1,2,3\n", UnrecognisedExportError, RejectReason.UNRECOGNISED_FORMAT, "no known"),
        (b"PK\x03\x04" + b"\x00" * 64, TruncatedExportError, RejectReason.TRUNCATED, "truncated"),
        (
            b"\xd0\xcf\x11\xe0" + b"\x00" * 600,
            TruncatedExportError,
            RejectReason.TRUNCATED,
            "truncated",
        ),
    ],
)
def test_bad_bytes_get_a_clear_reason(
    content: bytes, error: type[ChimeraError], reason: RejectReason, needle: str
) -> None:
    """Empty, blank, binary, wrong-schema and cut workbook bytes each get their reason code."""
    with pytest.raises(error, match=needle) as info:
        detect(content, file_name="x.bin")
    assert info.value.reason is reason
    assert "x.bin" in str(info.value)


def test_decoded_export_holds_rows_lines_and_header() -> None:
    """detect splits every line once with the header's delimiter; parsers reuse the rows."""
    data = b'* Block Type = 96well\r\n\r\n[Results]\r\nWell\tCT\r\n1\t"2,5"\r\n'
    export = detect(data, file_name="x.txt")
    assert export.format is ExportFormat.APPBIO_TEXT
    assert export.header_row == 3
    assert export.delimiter == "\t"
    assert export.rows == [
        ["* Block Type = 96well"],
        [],
        ["[Results]"],
        ["Well", "CT"],
        ["1", "2,5"],
    ]
    assert export.lines[4] == '1\t"2,5"'
    assert export.ends_with_newline
    assert export.numbered(3)[1] == (5, ["1", "2,5"])
    assert export.detection.header_line == 3
    assert not detect(data.rstrip(), file_name="x.txt").ends_with_newline


def test_workbook_rows_come_from_the_results_sheet(real_exports: Path) -> None:
    """An AB .xlsx is detected on its first sheet but read from its Results sheet."""
    data = (
        real_exports / "qpcr_appbio/quantstudio_fast96_relative_quant_results.xlsx"
    ).read_bytes()
    export = detect(data, file_name="x.xlsx")
    assert export.sheet == "Results"
    assert export.header_row == 42  # spreadsheet row 43 (formats.md 6)
    assert export.rows[export.header_row][:2] == ["Well", "Well Position"]
    assert set(export.sheets) >= {"Sample Setup", "Results"}
