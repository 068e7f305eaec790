"""Chimera's data contracts: one Pandera DataFrameModel per input and per warehouse table."""

from schemas.inputs import DdpcrWells, InfusionLog, Manifest, QpcrWells, StrPeaks
from schemas.trends import AlertDeliveries, Alerts, CohortKinetics, Kinetics, Trends
from schemas.warehouse import Chimerism, Infusions, IngestLog, Markers, Samples

__all__ = [
    "AlertDeliveries",
    "Alerts",
    "Chimerism",
    "CohortKinetics",
    "DdpcrWells",
    "InfusionLog",
    "Infusions",
    "IngestLog",
    "Kinetics",
    "Manifest",
    "Markers",
    "QpcrWells",
    "Samples",
    "StrPeaks",
    "Trends",
]
