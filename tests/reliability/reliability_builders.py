"""Shared helpers of the reliability tests: a data folder, a one-call poll, the file fates.

The corpus of valid and corrupted inputs lives in ``corpus.py``; valid exports come from
``tests/flows/flow_builders.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flow_builders import (
    FakeClock,
    infusion_csv,
    manifest_csv,
    post_dose_table,
    references_table,
    sha,
    write_config,
)

from chimera.poll import Poll, poll_inbox
from chimera.settings import Settings, load_settings

INSTANT = "[inbox_rules]\nsettle_seconds = 0.0\nincomplete_settle_seconds = 0.0\n"
"""Files are read at the first look (the settling rules have tests of their own)."""


def make_home(root: Path, config: str = INSTANT) -> Settings:
    """A data folder under ``root`` with an inbox, and its settings."""
    home = root / "data"
    write_config(home, config)
    (home / "inbox").mkdir(parents=True, exist_ok=True)
    return load_settings(home=home)


def trial_files(samples: range = range(1, 3)) -> dict[str, bytes]:
    """A manifest, an infusion log, the references and one table per post-dose sample."""
    files = {
        "manifest.csv": manifest_csv(samples),
        "infusions.csv": infusion_csv(),
        "gm_refs.txt": references_table(),
    }
    return files | {f"gm_d{n:02d}.txt": post_dose_table(n, 10.0 * n) for n in samples}


def put(inbox: Path, files: Mapping[str, bytes]) -> dict[str, str]:
    """Write ``files`` (relative paths) into the inbox; return path -> SHA-256."""
    for name, data in files.items():
        path = inbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {name: sha(data) for name, data in files.items()}


def poll(settings: Settings, clock: FakeClock | None = None) -> Poll:
    """One in-process poll (inbox lock, no waiting, no trend refresh)."""
    clock = clock or FakeClock()
    return poll_inbox(settings, clock=clock, refresh=False, max_wait_seconds=0)


def files_under(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` (relative path -> SHA-256); links are not followed."""
    if not root.is_dir():
        return {}
    return {
        str(p.relative_to(root)): sha(p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def temporaries(root: Path) -> list[Path]:
    """Half-written files left anywhere under ``root`` (``*.tmp``)."""
    return sorted(p for p in root.rglob("*.tmp"))
