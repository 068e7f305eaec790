from __future__ import annotations

from pathlib import Path

import pytest

from chimera.detect import Assay, ExportFormat, detect_format

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
