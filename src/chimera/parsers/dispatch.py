"""One decoded export to its validated frame: the parser each format needs, then plausibility.

The ingest reads a file once (:func:`chimera.detect.detect`), passes the
:class:`~chimera.detect.DecodedExport` to :func:`parse_export` and the frame to
:func:`check_plausible`; no step decodes or detects again (issue 12).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from chimera.calculate import ddpcr, qpcr
from chimera.detect import APPBIO_FORMATS, Assay, DecodedExport, ExportFormat
from chimera.parsers import cfx, genemapper, quantasoft, quantstudio
from chimera.parsers.common import ParsedExport
from chimera.parsers.manifest import parse_infusion_log, parse_manifest
from chimera.settings import Settings


def parse_export(
    export: DecodedExport, *, settings: Settings, now: datetime | None = None
) -> ParsedExport:
    """Parse a detected export into its validated tidy frame, run identity and notes.

    ``now`` (the ingest's clock) lets registry files refuse dates in the future.

    Raises
    ------
    ChimeraError
        Every problem with the file, as the subclass the parser raises.
    """
    fmt = export.format
    if fmt is ExportFormat.MANIFEST:
        return parse_manifest(export, now=now)
    if fmt is ExportFormat.INFUSION_LOG:
        return parse_infusion_log(export, now=now)
    if fmt in (ExportFormat.GENEMAPPER_SIZING, ExportFormat.GENEMAPPER_GENOTYPES):
        return genemapper.parse_genemapper(export)
    if fmt in APPBIO_FORMATS:
        return quantstudio.parse_appbio(export)
    if fmt is ExportFormat.CFX_CSV:
        return cfx.parse_cfx(export)
    return quantasoft.parse_ddpcr(export, droplet_volume_nl=settings.ddpcr.droplet_volume_nl)


def check_plausible(
    frame: pl.DataFrame, assay: Assay, *, settings: Settings, file_name: str
) -> None:
    """Reject readable exports that hold no chimerism assay (no reference gene, no markers)."""
    if assay is Assay.QPCR:
        qpcr.assert_chimerism_plate(frame, settings=settings.qpcr, file_name=file_name)
    elif assay is Assay.DDPCR:
        ddpcr.assert_chimerism_plate(frame, settings=settings.ddpcr, file_name=file_name)
