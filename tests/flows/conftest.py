"""Flow fixtures: data folders (the Prefect home and harness are in ``tests/conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flow_builders import write_config

FAST_INBOX = """
[inbox_rules]
settle_seconds = 0.5
poll_interval_seconds = 5
"""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A data folder whose settings settle files after 0.5 s."""
    root = tmp_path / "data"
    write_config(root, FAST_INBOX)
    (root / "inbox").mkdir(parents=True)
    return root
