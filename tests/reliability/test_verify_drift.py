"""``chimera verify``: exit 0 on a consistent warehouse, exit 1 with the list on every drift."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from flow_builders import sha
from reliability_builders import make_home, poll, put, trial_files
from typer.testing import CliRunner

from chimera.cli import app
from chimera.settings import Settings, load_settings


@pytest.fixture(scope="module")
def clean_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse built by one poll of a two-sample trial (copied for each test)."""
    settings = make_home(tmp_path_factory.mktemp("verify"))
    put(settings.inbox, trial_files())
    poll(settings)
    return settings.home


def _archived(settings: Settings, name: str) -> Path:
    return next(settings.archive.rglob(name))


def _raw(settings: Settings, name: str) -> Path:
    return settings.warehouse / "observations_str" / f"{sha(trial_files()[name])}.parquet"


def _rewrite(path: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    frame = change(pl.read_parquet(path))
    path.unlink()
    frame.write_parquet(path)


DRIFTS: dict[str, tuple[Callable[[Settings], object], set[str]]] = {
    "archived copy edited": (
        lambda s: _archived(s, "gm_d01.txt").write_bytes(b"edited\n"),
        {"archived_copy_differs", "unknown_archive_file"},
    ),
    "archived copy deleted": (
        lambda s: _archived(s, "manifest.csv").unlink(),
        {"missing_from_archive"},
    ),
    "raw rows deleted": (lambda s: _raw(s, "gm_d02.txt").unlink(), {"missing_raw_rows"}),
    "raw rows lost one row": (
        lambda s: _rewrite(_raw(s, "gm_d02.txt"), lambda f: f.head(f.height - 1)),
        {"raw_rows_differ"},
    ),
    "raw file without a ledger entry": (
        lambda s: shutil.copy(_raw(s, "gm_d02.txt"), _raw(s, "gm_d02.txt").with_stem("f" * 64)),
        {"raw_without_ledger"},
    ),
    "derived row of an unknown source": (
        lambda s: _rewrite(
            s.warehouse / "chimerism" / "P01.parquet",
            lambda f: f.with_columns(source_sha256=pl.lit("e" * 64)),
        ),
        {"rows_without_source"},
    ),
    "stray file in the archive": (
        lambda s: (s.archive / "stray.csv").write_bytes(b"who put this here\n"),
        {"unknown_archive_file"},
    ),
}


def _verify(home: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["verify", "--home", str(home)])
    return result.exit_code, " ".join(result.output.split())


def test_a_consistent_warehouse_verifies(clean_home: Path, tmp_path: Path) -> None:
    """Exit 0 and the counts: 5 accepted files, 5 archived."""
    home = tmp_path / "data"
    shutil.copytree(clean_home, home)
    code, said = _verify(home)
    assert code == 0, said
    assert "5 accepted files in the ledger, 5 files in the archive" in said
    assert "OK: every accepted file is archived intact" in said


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_every_drift_is_listed_and_fails_verify(
    clean_home: Path, tmp_path: Path, drift: str
) -> None:
    """Each kind of drift: exit 1 and exactly the expected mismatch codes in the list."""
    home = tmp_path / "data"
    shutil.copytree(clean_home, home)
    damage, codes = DRIFTS[drift]
    damage(load_settings(home=home))
    code, said = _verify(home)
    assert code == 1, said
    listed = {c for c in said.split() if c.replace("_", "").isalpha() and "_" in c}
    assert (
        listed
        & {
            "missing_from_archive",
            "archived_copy_differs",
            "missing_raw_rows",
            "raw_rows_differ",
            "accepted_twice",
            "unknown_archive_file",
            "raw_without_ledger",
            "rows_without_source",
        }
        == codes
    )
