"""Any bytes give a validated frame or a clean ChimeraError, never another exception (issue 13).

Hypothesis feeds :func:`chimera.detect.detect` and every parser (a) arbitrary bytes and (b)
damaged copies of valid files: the synthetic exports of every format and, when present, the
real exports: truncations, byte flips, inserted delimiters, quotes, NULs and line ends,
duplicated or dropped lines, and numbers replaced by huge, negative, NaN or infinite values.
A frame that comes back must still pass its own contract. Runs use the active Hypothesis
profile (``ci``: 100 examples per property; ``dev``: 25); deadlines are off, the suite's
timeout catches a hang.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from export_helpers import REAL_EXPORTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandera.api.polars.model import DataFrameModel
from synthetic_exports import SYNTHETIC

from chimera.detect import DecodedExport, ExportFormat, detect
from chimera.errors import ChimeraError
from chimera.parsers.cfx import parse_cfx
from chimera.parsers.common import ParsedExport
from chimera.parsers.genemapper import parse_genemapper
from chimera.parsers.manifest import parse_infusion_log, parse_manifest
from chimera.parsers.quantasoft import parse_ddpcr
from chimera.parsers.quantstudio import parse_appbio
from chimera.settings import DdpcrSettings
from schemas.inputs import DdpcrWells, InfusionLog, Manifest, QpcrWells, StrPeaks

VOLUMES = DdpcrSettings().droplet_volume_nl
PARSERS: dict[str, tuple[Callable[[DecodedExport], ParsedExport], type[DataFrameModel]]] = {
    "genemapper": (parse_genemapper, StrPeaks),
    "appbio": (parse_appbio, QpcrWells),
    "cfx": (parse_cfx, QpcrWells),
    "ddpcr": (lambda export: parse_ddpcr(export, droplet_volume_nl=VOLUMES), DdpcrWells),
    "manifest": (parse_manifest, Manifest),
    "infusion_log": (parse_infusion_log, InfusionLog),
}
"""Parser name -> (parser, the contract of the frame it returns)."""

SEEDS: dict[str, list[bytes]] = {
    "genemapper": [SYNTHETIC["genemapper_sizing.txt"], SYNTHETIC["genemapper_genotypes.txt"]],
    "appbio": [SYNTHETIC["appbio.txt"], SYNTHETIC["appbio_excel.csv"]],
    "cfx": [SYNTHETIC["cfx.csv"]],
    "ddpcr": [
        SYNTHETIC["quantasoft.csv"],
        SYNTHETIC["quantasoft_old.csv"],
        SYNTHETIC["qx_manager.csv"],
    ],
    "manifest": [SYNTHETIC["manifest.csv"], SYNTHETIC["manifest.xlsx"]],
    "infusion_log": [SYNTHETIC["infusion_log.csv"]],
}
_REAL_SEEDS = {
    "genemapper": [
        "genemapper/rchimerism_single_donor_sdata_posttransplant.txt",
        "genemapper/gmconvert_genotypes_table_test.genemapper.txt",
    ],
    "appbio": [
        "qpcr_appbio/quantstudio7flex_results_only_standard_curve.txt",
        "qpcr_appbio/stepOnePlus_results_excel_resaved.csv",
    ],
    "cfx": ["qpcr_biorad_cfx/cfx_connect_sybr_two_targets_quantification_cq_results.csv"],
    "ddpcr": [
        "ddpcr_biorad/quantasoft_old_small.csv",
        "ddpcr_biorad/qxmanager_cnv_SMN2v2_20220630_162335_752.csv",
    ],
}
for _parser, _paths in _REAL_SEEDS.items():
    SEEDS[_parser] += [
        (REAL_EXPORTS / p).read_bytes() for p in _paths if (REAL_EXPORTS / p).is_file()
    ]

_NUMBER = re.compile(rb"\d+(\.\d+)?")
_ODD_NUMBERS = [b"1e308", b"1e999", b"-1", b"-0", b"NaN", b"inf", b"-inf", b"99999999999999999999"]
_INSERTS = [b"\t", b",", b";", b'"', b"\x00", b"\n", b"\r", b"\r\n", b"\xff\xfe", b"=", b"\xc2"]


@st.composite
def damaged(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid seed file with one to three damages applied."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["cut", "flip", "insert", "number", "line"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "cut":
            del data[at:]
        elif kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(_INSERTS))
        elif kind == "number":
            numbers = list(_NUMBER.finditer(bytes(data)))
            if numbers:
                hit = draw(st.sampled_from(numbers))
                data[hit.start() : hit.end()] = draw(st.sampled_from(_ODD_NUMBERS))
        else:
            lines = bytes(data).splitlines(keepends=True)
            if lines:
                index = draw(st.integers(0, len(lines) - 1))
                lines[index : index + 1] = draw(st.sampled_from([[], [lines[index]] * 2]))
                data = bytearray(b"".join(lines))
    return bytes(data)


def _parse(
    data: bytes, parse: Callable[[DecodedExport], ParsedExport]
) -> ParsedExport | ChimeraError:
    try:
        return parse(detect(data, file_name="fuzz.csv"))
    except ChimeraError as err:
        return err


def _frame_or_chimera_error(
    data: bytes, parse: Callable[[DecodedExport], ParsedExport], model: type[DataFrameModel]
) -> None:
    outcome = _parse(data, parse)
    if isinstance(outcome, ChimeraError):
        assert str(outcome), "a rejection says why"
        return
    model.validate(outcome.frame)
    assert outcome.frame.height > 0


@settings(deadline=None)
@given(st.binary(max_size=3000))
def test_detect_gives_a_decoded_export_or_a_chimera_error(data: bytes) -> None:
    """detect never raises anything but a ChimeraError, and finds its header inside the rows."""
    try:
        export = detect(data, file_name="fuzz.bin")
    except ChimeraError:
        return
    assert isinstance(export.format, ExportFormat)
    assert 0 <= export.header_row < len(export.rows)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_detect_on_damaged_files(data: st.DataObject) -> None:
    """Damaged copies of every format detect or fail cleanly."""
    seeds = [seed for group in SEEDS.values() for seed in group]
    damaged_bytes = data.draw(damaged(seeds))
    try:
        export = detect(damaged_bytes, file_name="fuzz.bin")
    except ChimeraError:
        return
    assert isinstance(export.format, ExportFormat)
    assert 0 <= export.header_row < len(export.rows)


@pytest.mark.parametrize("parser", sorted(PARSERS))
@settings(deadline=None)
@given(data=st.binary(max_size=3000))
def test_parser_on_any_bytes(parser: str, data: bytes) -> None:
    """Arbitrary bytes: a validated frame or a ChimeraError, for every parser."""
    parse, model = PARSERS[parser]
    _frame_or_chimera_error(data, parse, model)


@pytest.mark.parametrize("parser", sorted(PARSERS))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parser_on_damaged_files(parser: str, data: st.DataObject) -> None:
    """Damaged valid files of the parser's own formats: a validated frame or a ChimeraError."""
    parse, model = PARSERS[parser]
    _frame_or_chimera_error(data.draw(damaged(SEEDS[parser])), parse, model)


@pytest.mark.parametrize("parser", sorted(PARSERS))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parser_on_other_formats(parser: str, data: st.DataObject) -> None:
    """Damaged files of every other format handed to a parser are refused cleanly."""
    others = [seed for name, group in SEEDS.items() if name != parser for seed in group]
    parse, model = PARSERS[parser]
    _frame_or_chimera_error(data.draw(damaged(others)), parse, model)
