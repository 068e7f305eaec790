"""Prefect fixtures: a temporary Prefect home, a session-wide test harness, data folders."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: never touch ~/.prefect or send analytics.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="chimera-prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.pop("PREFECT_API_URL", None)
# The flows/ package sits at the repository root (not installed); tests/flows must not shadow it.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flow_builders import write_config

FAST_INBOX = """
[inbox_rules]
settle_seconds = 0.5
poll_interval_seconds = 5
"""


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[str]:
    """One temporary Prefect backend for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL  # noqa: PLC0415
    from prefect.testing.utilities import prefect_test_harness  # noqa: PLC0415

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A data folder whose settings settle files after 0.5 s."""
    root = tmp_path / "data"
    write_config(root, FAST_INBOX)
    (root / "inbox").mkdir(parents=True)
    return root
