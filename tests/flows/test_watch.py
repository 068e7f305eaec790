"""`chimera watch`: files dropped into a local inbox are ingested on the file event."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from flow_builders import infusion_csv, ledger, manifest_csv, post_dose_table, references_table
from rich.console import Console

from chimera.poll import watch_inbox
from chimera.settings import load_settings
from waiting import wait_until

pytestmark = pytest.mark.flows


def test_watch_ingests_dropped_files_then_stops(home: Path) -> None:
    """Each file lands in the ledger as accepted and leaves the inbox; the stop event ends the loop."""
    settings = load_settings(home=home)
    stop = threading.Event()
    console = Console(record=True)
    worker = threading.Thread(target=watch_inbox, args=(settings, console), kwargs={"stop": stop})
    worker.start()
    try:
        # No wait for the watcher to start: files already there are found by its first poll,
        # files that land before its watch begins by the re-poll every 5 s (FAST_INBOX).
        for name, data in [
            ("manifest.csv", manifest_csv()),
            ("infusions.csv", infusion_csv()),
            ("references.txt", references_table()),
            ("d01.txt", post_dose_table(1, 12.0)),
        ]:
            (settings.inbox / name).write_bytes(data)
        names = {"manifest.csv", "infusions.csv", "references.txt", "d01.txt"}

        def accepted() -> set[str]:
            log = ledger(home)
            return (
                set(log.filter(log["status"] == "accepted")["file_name"]) if log.height else set()
            )

        # The ledger row comes before the move out of the inbox: wait for both.
        wait_until(
            lambda: accepted() >= names and not any(settings.inbox.iterdir()),
            "every dropped file accepted and moved out of the inbox",
            every=0.5,
            diagnose=lambda: (accepted(), sorted(p.name for p in settings.inbox.iterdir())),
        )
        assert accepted() == names
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()
    assert "d01.txt: accepted" in console.export_text()
