"""The reports in headless Chromium: no console error, no network request, every point drawn.

Needs Debian's ``chromium`` (``make browser`` installs it) and the ``playwright`` package; the
browser is never downloaded (``executable_path``). Screenshots for review go to ``tmp/browser/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from report_builders import HOSTILE_PATIENT

from chimera.report.build import write_cohort_report, write_patient_report
from chimera.report.data import load_report_data
from chimera.settings import Settings
from chimera.warehouse import file_key

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "tmp" / "browser"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")
if not CHROMIUM.is_file():
    pytest.skip(
        f"{CHROMIUM} not found: run `make browser` (apt-get install chromium) to run the browser tests",
        allow_module_level=True,
    )


@dataclass
class Visit:
    """What a page did while it loaded."""

    page: sync_api.Page
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def visit(browser: sync_api.Browser, path: Path) -> Visit:
    """Open a report file and record console errors, requests and dialogs until it has loaded."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    seen = Visit(page)
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("dialog", lambda d: (seen.dialogs.append(d.message), d.dismiss()))
    page.goto(path.as_uri(), wait_until="load")
    return seen


@pytest.fixture(scope="module")
def reports(report_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("browser-reports")
    patient = load_report_data(report_settings.warehouse).patients()[0]
    return {
        "patient": write_patient_report(
            report_settings, patient, out=folder / "patient.html", now=NOW
        ),
        "cohort": write_cohort_report(report_settings, out=folder / "cohort.html", now=NOW),
        "patient_id": Path(patient),
    }


def _screenshot(page: sync_api.Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.mark.parametrize("report", ["patient", "cohort"])
def test_report_loads_offline_without_errors(
    browser: sync_api.Browser, reports: dict[str, Path], report: str
) -> None:
    """The file is the only request; nothing is logged as an error; a screenshot is written."""
    seen = visit(browser, reports[report])
    assert seen.errors == []
    assert seen.requests == [reports[report].as_uri()]
    assert seen.page.locator("figure.chart svg").count() >= 1
    assert _screenshot(seen.page, report).stat().st_size > 10_000
    seen.page.context.close()


def test_patient_chart_shows_every_result(
    browser: sync_api.Browser, reports: dict[str, Path], report_settings: Settings
) -> None:
    """The rendered chart has one marker per current, dated result of the patient."""
    patient = str(reports["patient_id"])
    results = load_report_data(report_settings.warehouse).for_patient(patient).chimerism
    expected = results.filter(pl.col("study_day").is_not_null()).height
    seen = visit(browser, reports["patient"])
    chart = seen.page.locator(f"#trend-{file_key(patient)}")
    assert chart.locator("g[id^='pts-'] use").count() == expected
    not_detected = results.filter(
        pl.col("study_day").is_not_null() & (pl.col("result_status") == "not_detected")
    ).height
    assert chart.locator("g[id$='-not_detected'] use").count() == not_detected
    assert chart.locator("g[id^='pts-'] use title").count() == expected
    seen.page.context.close()


@pytest.mark.parametrize("kind", ["svg", "png"])
def test_charts_export_for_slides(
    browser: sync_api.Browser, reports: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    """Save SVG / Save PNG download the chart as a file of that format, without a request."""
    seen = visit(browser, reports["cohort"])
    with seen.page.expect_download() as download:
        seen.page.locator(f"#cohort-all button[data-export='{kind}']").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    head = saved.read_bytes()[:200]
    assert saved.suffix == f".{kind}"
    assert head.startswith(b"\x89PNG") if kind == "png" else b"<svg" in head
    assert seen.errors == []
    assert [u for u in seen.requests if not u.startswith(("data:", "blob:"))] == [
        reports["cohort"].as_uri()
    ]
    seen.page.context.close()


def test_hostile_ids_run_no_script(
    browser: sync_api.Browser, hostile_settings: Settings, tmp_path: Path
) -> None:
    """A patient whose ids and reasons are HTML opens no dialog and logs no error."""
    path = write_patient_report(hostile_settings, HOSTILE_PATIENT, out=tmp_path / "h.html", now=NOW)
    seen = visit(browser, path)
    assert seen.dialogs == []
    assert seen.errors == []
    assert seen.requests == [path.as_uri()]
    assert HOSTILE_PATIENT in seen.page.locator("h1").inner_text()
    shutil.copy(_screenshot(seen.page, "hostile"), tmp_path / "hostile.png")
    seen.page.context.close()
