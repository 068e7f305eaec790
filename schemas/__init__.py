"""Chimera's data contracts: one Pandera DataFrameModel per input and per warehouse table.

``from schemas import Chimerism`` works as always; the models (and Pandera) are imported on
first use, so ``schemas.vocab`` alone costs no Pandera import (issue 12: CLI start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schemas.inputs import DdpcrWells, InfusionLog, Manifest, QpcrWells, StrPeaks
    from schemas.trends import AlertDeliveries, Alerts, CohortKinetics, Kinetics, Trends
    from schemas.warehouse import Chimerism, Infusions, IngestLog, Markers, Samples

_MODULE_OF = {
    **dict.fromkeys(("DdpcrWells", "InfusionLog", "Manifest", "QpcrWells", "StrPeaks"), "inputs"),
    **dict.fromkeys(
        ("AlertDeliveries", "Alerts", "CohortKinetics", "Kinetics", "Trends"), "trends"
    ),
    **dict.fromkeys(("Chimerism", "Infusions", "IngestLog", "Markers", "Samples"), "warehouse"),
}

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


def __getattr__(name: str) -> object:
    """A contract named in :data:`__all__`, imported from its module on first use."""
    module = _MODULE_OF.get(name)
    if module is None:
        message = f"module 'schemas' has no attribute {name!r}"
        raise AttributeError(message)
    value = getattr(importlib.import_module(f"schemas.{module}"), name)
    globals()[name] = value
    return value
