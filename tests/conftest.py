"""Shared fixtures: where the sample trial and the real instrument exports live.

The real exports are licensed as test fixtures only, so they are read from ``../shared`` (or
``CHIMERA_REAL_EXPORTS``) and never copied here. Outside CI a missing folder skips the tests that
need it; under CI (``CI=true``) it fails the run at start, so a fixture test is never skipped
silently. CI also selects the ``ci`` Hypothesis profile.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: never touch ~/.prefect or send analytics.
# The temporary home goes when the test process ends, so test runs leave nothing in /tmp.
_PREFECT_HOME = tempfile.mkdtemp(prefix="chimera-prefect-home-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)
from hypothesis import settings as hypothesis_settings

ROOT = Path(__file__).resolve().parents[1]
# The flows/ package sits at the repository root (not installed); tests/flows must not shadow it.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
REAL_EXPORTS = Path(os.environ.get("CHIMERA_REAL_EXPORTS", ROOT.parent / "shared" / "real-exports"))
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}

# Test runs are reproducible (derandomized); HYPOTHESIS_PROFILE=explore searches new examples.
hypothesis_settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True)
hypothesis_settings.register_profile("dev", max_examples=25, deadline=None, derandomize=True)
hypothesis_settings.register_profile("explore", max_examples=500, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI, stop before any test runs when the real-export fixtures are missing."""
    del session
    if IN_CI and not REAL_EXPORTS.is_dir():
        pytest.exit(
            f"CI=true but the real-export fixtures are missing: expected the folder {REAL_EXPORTS} "
            "(../shared/real-exports beside the checkout, or set CHIMERA_REAL_EXPORTS). "
            "Fixture tests must not be skipped in CI.",
            returncode=1,
        )


@pytest.fixture(scope="session")
def sample_data_path() -> Path:
    """The bundled synthetic trial."""
    return ROOT / "sample_data"


@pytest.fixture(scope="session")
def real_exports() -> Path:
    """Real instrument exports (licensed as test fixtures only); skip when absent outside CI."""
    if not REAL_EXPORTS.is_dir():
        pytest.skip(f"{REAL_EXPORTS} is not present in this checkout")
    return REAL_EXPORTS


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[str]:
    """One temporary Prefect backend for the whole session (flow and scale tests); its API URL."""
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415
    from prefect.testing.utilities import prefect_test_harness  # noqa: PLC0415

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())
