"""Small valid exports of every supported format, built in code (no real file copied).

Each builder returns bytes laid out the way the instrument software (or a spreadsheet) writes
them (formats.md sections 2-10); the truncation, fuzz and bad-content tests cut and mutate
them. ``SYNTHETIC`` maps a case name to its bytes.
"""

from __future__ import annotations

import io

import openpyxl

CRLF = "\r\n"


def sizing_table() -> bytes:
    """GeneMapper Sizing Table: CRLF, TAB, a trailing TAB on every line (formats.md 2)."""
    header = "Dye/Sample Peak\tSample File Name\tMarker\tAllele\tSize\tHeight\tArea\tData Point\t"
    rows = [
        '"B,1"\tA01_P01-D8.fsa\tD3S1358\t14\t120.33\t941\t5862\t2086\t',
        '"B,2"\tA01_P01-D8.fsa\tD3S1358\t16\t128.41\t412\t2571\t2131\t',
        '"G,1"\tA01_P01-D8.fsa\tTH01\t9.3\t183.50\t1200\t7002\t2390\t',
        '"Y,1"\tA01_P01-D8.fsa\tAMEL\tX\t104.29\t2300\t12500\t1790\t',
    ]
    return (CRLF.join([header, *rows]) + CRLF).encode()


def genotypes_table() -> bytes:
    """GeneMapper Genotypes Table: LF, TAB, one row per sample x marker (formats.md 3)."""
    header = ["Sample File", "Sample Name", "Run Name", "Marker", "Dye", "Allele 1", "Allele 2"]
    header += ["Size 1", "Size 2", "Height 1", "Height 2", "Peak Area 1", "Peak Area 2", "GQ"]
    rows = []
    for sample in ("P01-BL", "P01-D8"):
        for marker, alleles in (("D3S1358", ("14", "16")), ("TH01", ("6", "9.3"))):
            sizes = ["120.1", "128.4", "900", "850", "5000.0", "4800.0", "0.98"]
            rows.append([f"{sample}.fsa", sample, "RUN-2025-03-04", marker, "B", *alleles, *sizes])
    return ("\n".join("\t".join(r) + "\t" for r in [header, *rows]) + "\n").encode()


def appbio_text() -> bytes:
    """QuantStudio text export: ``* key = value`` preamble, ``[Results]`` (formats.md 5)."""
    lines = [
        "* Block Type = 96-Well Block (0.2mL)",
        "* Experiment Barcode = PLATE-0042",
        "* Experiment Name = iNK qPCR 2025-03-04",
        "* Experiment Run End Time = 2025-03-04 09:10:11 AM CET",
        "* Instrument Type = QuantStudio(TM) 5 System",
        "",
        "[Results]",
        "Well\tWell Position\tOmit\tSample Name\tTarget Name\tTask\tReporter\tCT",
        "1\tA1\tfalse\tP01-D8\tRPP30\tUNKNOWN\tVIC\t25.100",
        "2\tA2\tfalse\tP01-D8\tS04\tUNKNOWN\tFAM\t33.412",
        "3\tA3\tfalse\tCAL-1\tS04\tUNKNOWN\tFAM\t24.871",
        "13\tB1\tfalse\tNTC\tS04\tNTC\tFAM\tUndetermined",
    ]
    return (CRLF.join(lines) + CRLF).encode()


def appbio_excel_csv() -> bytes:
    """The AB table re-saved by Excel as "CSV UTF-8": BOM, padded commas, no final line end."""
    width = 10
    preamble = [["Block Type", "96well"], ["Instrument Type", "steponeplus"], []]
    header = ["Well", "Sample Name", "Target Name", "Task", "Reporter", "Cт"]
    header += ["HIGHSD", "NOAMP", "OUTLIERRG", "EXPFAIL"]
    rows = [
        ["A1", "P01-D8", "RPP30", "UNKNOWN", "VIC", "25.1", "N", "N", "N", "N"],
        ["A2", "P01-D8", "S04", "UNKNOWN", "FAM", "33.41", "N", "N", "N", "N"],
        ["B1", "NTC", "S04", "NTC", "FAM", "Undetermined", "N", "Y", "N", "Y"],
    ]
    lines = [",".join(r + [""] * (width - len(r))) for r in [*preamble, header, *rows]]
    return b"\xef\xbb\xbf" + CRLF.join(lines).encode()


def cfx_csv() -> bytes:
    """CFX "Quantification Cq Results": leading empty column, CRLF, FAM then VIC (formats.md 8)."""
    header = (
        ",Well,Fluor,Target,Content,Sample,Biological Set Name,Cq,Cq Mean,Cq Std. Dev,"
        "Starting Quantity (SQ),Log Starting Quantity,SQ Mean,SQ Std. Dev,Set Point,Well Note"
    )
    rows = []
    for fluor, target, cq in (("FAM", "S04", "31.25"), ("VIC", "RPP30", "24.80")):
        for well, sample in (("A01", "P01-D8"), ("A02", "P01-D8"), ("B01", "CAL-1")):
            rows.append(f",{well},{fluor},{target},Unkn-01,{sample},,{cq},0,0,NaN,NaN,0,0,60,")
    return (CRLF.join([header, *rows]) + CRLF).encode()


def quantasoft_csv() -> bytes:
    """QuantaSoft 1.7: LF, one row per well per channel, trailing comma (formats.md 9)."""
    header = (
        "Well,ExptType,Experiment,Sample,TargetType,Target,Status,Concentration,Positives,"
        "Negatives,Ch1+Ch2+,Ch1+Ch2-,Ch1-Ch2+,Ch1-Ch2-,AcceptedDroplets,MergedWells"
    )
    wells = {"A01": "P01-D8", "B01": "CAL-1", "C01": "NTC"}
    # Ch1 (marker) 20 and Ch2 (reference) 9000 positives of 16000; quadrants add up to 16000.
    quadrants = {"A01": "12,8,8988,6992", "B01": "12,8,8988,6992", "C01": "0,0,0,16000"}
    rows = []
    for channel, target, positives in (("Ch1Unknown", "S04", 20), ("Ch2Unknown", "RPP30", 9000)):
        for well, sample in wells.items():
            count = 0 if sample == "NTC" else positives
            rows.append(
                f'"{well}",Absolute Quantification,"ABS","{sample}",{channel},"{target}",Manual,'
                f'1.5,{count},{16000 - count},{quadrants[well]},16000,"",'
            )
    return ("\n".join([header, *rows]) + "\n").encode()


def quantasoft_old_csv() -> bytes:
    """Older QuantaSoft: ``TypeAssay``/``Assay``, rows one field short of the header (formats.md 9)."""
    header = (
        "Well,ExptType,Experiment,Sample,TypeAssay,Assay,Status,Concentration,Positives,"
        "Negatives,AcceptedDroplets,ExperimentComments,MergedWells"
    )
    rows = []
    for channel, assay, pos in (("Ch1Unknown", "S04", 20), ("Ch2Unknown", "RPP30", 9000)):
        for well in ("A01", "B01"):
            rows.append(
                f'"{well}",Absolute Quantification,"","P01-D8",{channel},"{assay}",Manual,'
                f'1.5,{pos},{15000 - pos},15000,""'
            )
    return ("\n".join([header, *rows]) + "\n").encode()


def qx_manager_csv() -> bytes:
    """QX Manager: BOM, CRLF, ``µ`` headers, Unknown/Reference rows, no final line end (10)."""
    header = (
        "Well,Sample description 1,Target,Conc(copies/µL),Status,SampleType,TargetType,"
        "DyeName(s),Accepted Droplets,Positives,Negatives,MergedWells,"
        "Ch1+Ch2+,Ch1+Ch2-,Ch1-Ch2+,Ch1-Ch2-"
    )
    rows = []
    for well, sample in (("A01", "P01-D8"), ("B01", "CAL-1"), ("C01", "P02-D8")):
        rows.append(
            f"{well},{sample},S04,12.5,OK,Unknown,Unknown,FAM,20000,250,19750,,130,120,9870,9880"
        )
        rows.append(
            f"{well},{sample},RPP30,900.1,OK,Unknown,Reference,HEX,20000,10000,10000,,130,120,9870,9880"
        )
    return b"\xef\xbb\xbf" + CRLF.join([header, *rows]).encode()


MANIFEST_ROWS = [
    "sample_id,patient_id,role,collected_at,specimen,wbc_per_ul",
    "LOT1-REF,LOT1,donor_reference,,,",
    "P01-BL,P01,recipient_baseline,2025-03-01T08:00:00Z,peripheral blood,3200",
    "P01-D8,P01,post_dose,2025-03-09 09:30,whole blood,2800",
]


def manifest_csv() -> bytes:
    """A sample manifest as pandas/polars/LIMS write it: LF after every row."""
    return ("\n".join(MANIFEST_ROWS) + "\n").encode()


def manifest_xlsx() -> bytes:
    """The same manifest saved from Excel (.xlsx)."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for line in MANIFEST_ROWS:
        sheet.append(line.split(","))
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def infusion_log_csv() -> bytes:
    """An infusion log: one row per dose, CRLF."""
    rows = [
        "patient_id,dose_number,infused_at,cells,product_lot",
        "P01,1,2025-03-02T10:00:00Z,500000000,LOT1",
        "P01,2,2025-03-05T10:00:00Z,500000000,LOT1",
        "P02,1,2025-03-03T10:00:00Z,1000000000,LOT1",
    ]
    return (CRLF.join(rows) + CRLF).encode()


SYNTHETIC = {
    "genemapper_sizing.txt": sizing_table(),
    "genemapper_genotypes.txt": genotypes_table(),
    "appbio.txt": appbio_text(),
    "appbio_excel.csv": appbio_excel_csv(),
    "cfx.csv": cfx_csv(),
    "quantasoft.csv": quantasoft_csv(),
    "quantasoft_old.csv": quantasoft_old_csv(),
    "qx_manager.csv": qx_manager_csv(),
    "manifest.csv": manifest_csv(),
    "manifest.xlsx": manifest_xlsx(),
    "infusion_log.csv": infusion_log_csv(),
}
