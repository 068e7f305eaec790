"""Hostile texts the report tests plant in a warehouse (HTML, script and spreadsheet formulas)."""

import shutil
from pathlib import Path

from chimera.settings import Settings, load_settings

HOSTILE_PATIENT = '<script>alert("p")</script>"onload="x'
HOSTILE_PREFIX = '=HYPERLINK("x")<script>'
HOSTILE_REASON = "<img src=x onerror=alert(1)> reason"


def copy_home(settings: Settings, home: Path) -> Settings:
    """Settings of a new home holding a copy of ``settings``' warehouse (to alter freely)."""
    shutil.copytree(settings.warehouse, home / "warehouse")
    return load_settings(env={}, home=home)
