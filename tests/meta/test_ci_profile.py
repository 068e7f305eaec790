"""CI never skips a fixture test in silence, and runs the ``ci`` Hypothesis profile."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PROBE = "def test_uses_fixtures(real_exports):\n    assert real_exports.is_dir()\n"
PROFILE_PROBE = (
    "import os\n"
    "from hypothesis import settings\n\n"
    "def test_profile():\n"
    "    assert settings().max_examples == int(os.environ['EXPECTED_EXAMPLES'])\n"
)


@pytest.fixture
def probe(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A throw-away test module inside tests/ (so it sees tests/conftest.py)."""
    path = ROOT / "tests" / "meta" / f"probe_{tmp_path.name}_test.py"
    path.write_text(request.param, encoding="utf-8")
    try:
        yield path
    finally:
        path.unlink()


def _pytest(test_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"CI", "HYPOTHESIS_PROFILE"}}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("probe", [FIXTURE_PROBE], indirect=True)
def test_missing_fixtures_fail_the_run_under_ci(probe: Path, tmp_path: Path) -> None:
    """With CI=true and no real-export folder the run exits 1 naming the folder."""
    missing = tmp_path / "no-such-folder"
    result = _pytest(probe, CI="true", CHIMERA_REAL_EXPORTS=str(missing))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "real-export fixtures are missing" in output
    assert str(missing) in output


@pytest.mark.parametrize("probe", [FIXTURE_PROBE], indirect=True)
def test_missing_fixtures_skip_outside_ci(probe: Path, tmp_path: Path) -> None:
    """Without CI the same test is reported as skipped."""
    result = _pytest(probe, CHIMERA_REAL_EXPORTS=str(tmp_path / "no-such-folder"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout


@pytest.mark.parametrize("probe", [PROFILE_PROBE], indirect=True)
@pytest.mark.parametrize(("ci", "examples"), [("true", "100"), ("", "25")])
def test_ci_selects_the_ci_hypothesis_profile(probe: Path, ci: str, examples: str) -> None:
    """CI=true loads the ``ci`` profile (100 examples); a local run loads ``dev`` (25)."""
    result = _pytest(probe, CI=ci, EXPECTED_EXAMPLES=examples)
    assert result.returncode == 0, result.stdout + result.stderr
