"""Chimera's data contracts: one Pandera DataFrameModel per input and per warehouse table."""

from schemas.inputs import DdpcrWells, InfusionLog, Manifest, QpcrWells, StrPeaks
from schemas.warehouse import Chimerism, Infusions, IngestLog, Markers, Samples

__all__ = [
    "Chimerism",
    "DdpcrWells",
    "InfusionLog",
    "Infusions",
    "IngestLog",
    "Manifest",
    "Markers",
    "QpcrWells",
    "Samples",
    "StrPeaks",
]
