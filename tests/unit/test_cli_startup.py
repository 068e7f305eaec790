"""The command line starts without the ingest machinery; the contracts stay importable."""

from __future__ import annotations

import subprocess
import sys

import schemas

HEAVY = ("pandera", "pandas", "scipy", "chimera.poll", "chimera.rebuild")
"""Modules a light command (``version``, ``--help``, ``status``) need not import to start."""


def test_importing_the_cli_leaves_the_heavy_modules_unimported() -> None:
    """``import chimera.cli`` (every command's start) imports none of :data:`HEAVY`."""
    probe = f"import sys, chimera.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    assert done.stdout.strip() == ""


def test_every_contract_is_importable_from_the_package() -> None:
    """``from schemas import X`` gives the model of its module for every name in ``__all__``."""
    from schemas import inputs, trends, warehouse  # noqa: PLC0415

    modules = (inputs, trends, warehouse)
    for name in schemas.__all__:
        model = getattr(schemas, name)
        assert any(getattr(m, name, None) is model for m in modules), name
