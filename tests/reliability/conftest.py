"""Reliability tests share the small valid inputs of ``tests/flows/flow_builders.py``."""

from __future__ import annotations

import sys
from pathlib import Path

FLOWS = Path(__file__).resolve().parents[1] / "flows"
if str(FLOWS) not in sys.path:
    sys.path.insert(0, str(FLOWS))
