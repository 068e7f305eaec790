"""Which settings computed a derived row: a snapshot by hash in the ``parameters`` table.

Every ``chimerism``, ``markers`` and ``assay_limits`` row names the SHA-256 of the computation
settings that produced it (``parameters_sha256``); ``parameters/<sha256>.parquet`` holds those
settings as canonical JSON, written once per distinct snapshot. Paths, ports and secrets are not
part of a snapshot: moving the data folder does not change a result's lineage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from typing import Any

import polars as pl

from chimera.settings import Settings
from chimera.warehouse import PARAMETERS, PIPELINE_VERSION, Warehouse

COMPUTATION_SECTIONS = ("str", "qpcr", "ddpcr", "reconcile")
"""The settings sections that change a computed result."""


def settings_snapshot(settings: Settings) -> str:
    """The computation settings as canonical JSON (sorted keys, no whitespace)."""
    sections: dict[str, Any] = {
        name: dataclasses.asdict(getattr(settings, name)) for name in COMPUTATION_SECTIONS
    }
    return json.dumps(sections, sort_keys=True, separators=(",", ":"), default=str)


def parameters_sha256(settings: Settings) -> str:
    """SHA-256 of :func:`settings_snapshot`.

    Examples
    --------
    >>> from pathlib import Path
    >>> parameters_sha256(Settings()) == parameters_sha256(Settings().with_home(Path("x")))
    True
    """
    return hashlib.sha256(settings_snapshot(settings).encode()).hexdigest()


def record_parameters(warehouse: Warehouse, settings: Settings, *, now: datetime) -> str:
    """Store the snapshot of ``settings`` unless it is stored already; return its hash."""
    sha = parameters_sha256(settings)
    if not warehouse.has(PARAMETERS, sha):
        row = {
            "parameters_sha256": sha,
            "settings_json": settings_snapshot(settings),
            "pipeline_version": PIPELINE_VERSION,
            "recorded_at": now,
        }
        warehouse.write(PARAMETERS, sha, pl.DataFrame([row], schema=PARAMETERS.schema))
    return sha
