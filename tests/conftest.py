"""Shared fixtures: where the sample trial and the real instrument exports live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

ROOT = Path(__file__).resolve().parents[1]
REAL_EXPORTS = ROOT.parent / "shared" / "real-exports"

# Test runs are reproducible (derandomized); HYPOTHESIS_PROFILE=explore searches new examples.
hypothesis_settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True)
hypothesis_settings.register_profile("dev", max_examples=25, deadline=None, derandomize=True)
hypothesis_settings.register_profile("explore", max_examples=500, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def sample_data_path() -> Path:
    """The bundled synthetic trial."""
    return ROOT / "sample_data"


@pytest.fixture(scope="session")
def real_exports() -> Path:
    """Real instrument exports from ../shared (licensed as test fixtures only); skip when absent."""
    if not REAL_EXPORTS.is_dir():
        pytest.skip("../shared/real-exports is not present in this checkout")
    return REAL_EXPORTS
