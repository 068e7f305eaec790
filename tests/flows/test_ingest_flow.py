"""The inbox flow under a temporary Prefect backend: every file accounted for, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from flow_builders import (
    SENTINEL,
    FakeClock,
    archived,
    drop,
    files_with_sentinel,
    infusion_csv,
    ledger,
    manifest_csv,
    post_dose_id,
    post_dose_table,
    quarantined,
    references_table,
    sha,
    table,
    write_config,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker

import flows.common
from chimera import maintenance
from chimera.poll import Poll, poll_inbox
from chimera.settings import load_settings
from flows.common import INBOX_LIMIT, ensure_concurrency_limit
from flows.deploy import NIGHTLY_CRON, build_deployments
from flows.ingest import ingest_inbox
from flows.nightly import nightly_rebuild
from flows.trends import refresh_trends
from schemas.vocab import FileStatus
from waiting import wait_until

pytestmark = pytest.mark.flows
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every event the flows emit."""

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(flows.common, "emit_event", lambda **kw: seen.append(kw))
    return seen


def poll(home: Path) -> dict[str, Any]:

    result: dict[str, Any] = ingest_inbox(str(home))
    return result


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {f["file_name"]: f["status"] for f in result["files"]}


def registry_files(inbox: Path) -> dict[str, bytes]:
    files = {
        "manifest.csv": manifest_csv(),
        "infusions.csv": infusion_csv(),
        "gm_refs.txt": references_table(),
    }
    for name, data in files.items():
        drop(inbox, name, data)
    return files


def warehouse_snapshot(home: Path) -> dict[str, str]:
    """Every data file of the warehouse (the ledger and the inbox poller's state left out)."""
    root = home / "warehouse"
    return {
        str(p.relative_to(root)): sha(p.read_bytes())
        for p in root.rglob("*.parquet")
        if not {"ingest_log", "inbox_state"} & set(p.parts)
    }


def assert_no_duplicate_rows(home: Path) -> None:
    for name in ("chimerism", "markers"):
        frame = table(home, name)
        key = ["sample_id", "method", "source_sha256"] + (["marker"] if name == "markers" else [])
        assert frame.height > 0, name
        assert frame.select(key).is_duplicated().sum() == 0, f"duplicate rows in {name}"


def accepted_counts(home: Path) -> dict[str, int]:
    log = ledger(home).filter(pl.col("status") == "accepted")
    return dict(log.group_by("source_sha256").len().iter_rows())


def test_accepts_archives_logs_and_ignores_temp_files(
    prefect_harness: str, home: Path, events: list[dict[str, Any]]
) -> None:
    """Settled files are accepted, archived under archive/YYYY/MM and logged; temp files stay."""
    inbox = home / "inbox"
    files = registry_files(inbox)
    files["gm_d01.txt"] = post_dose_table(1, 12.0)
    drop(inbox, "gm_d01.txt", files["gm_d01.txt"])
    ignored = ["~$manifest.xlsx", "late.part", ".~lock.manifest.csv#", ".hidden.csv"]
    for name in ignored:  # readable manifests: only the name keeps them out
        drop(inbox, name, manifest_csv(range(5, 7)))

    result = poll(home)

    assert statuses(result) == dict.fromkeys(files, "accepted")
    assert sorted(p.name for p in inbox.iterdir()) == sorted(ignored)
    month = datetime.now(UTC).strftime("%Y/%m")
    for name, data in files.items():
        assert (home / "archive" / month / name).read_bytes() == data
    log = ledger(home)
    accepted = log.filter(pl.col("status") == "accepted")
    assert sorted(accepted["file_name"]) == sorted(files)
    assert set(log["status"]) <= {"accepted", "waiting"}  # gm_d01 sorts before gm_refs: waits once
    assert accepted["flow_run_id"].null_count() == 0
    chimerism = table(home, "chimerism")
    assert chimerism.filter(pl.col("sample_id") == post_dose_id(1))[
        "pct_ink"
    ].item() == pytest.approx(12.0, abs=0.5)
    accepted_events = [e for e in events if e["event"] == "chimera.file.accepted"]
    assert sorted(e["resource"]["prefect.resource.id"] for e in accepted_events) == sorted(
        f"chimera.file.{sha(d)}" for d in files.values()
    )
    ingested = [e for e in events if e["event"] == "chimera.inbox.ingested"]
    assert len(ingested) == 1
    assert ingested[0]["payload"]["patients"] == ["P01"]
    assert (home / "warehouse" / "trends").is_dir()


def test_run_is_named_and_reported(prefect_harness: str, home: Path) -> None:
    """The flow run's name says what it processed and it leaves a Markdown artifact."""

    registry_files(home / "inbox")
    drop(home / "inbox", "gm_d02.txt", post_dose_table(2, 40.0))
    drop(home / "inbox", "not_an_export.txt", b"hello, this is not an export\n")
    state = ingest_inbox(str(home), return_state=True)
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.name == "5 files: 4 accepted, 1 quarantined"

        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["chimera-inbox-poll"]))
        )
    mine = [a for a in artifacts if a.flow_run_id == run.id]
    assert len(mine) == 1
    assert "not_an_export.txt | quarantined" in str(mine[0].data)


def test_file_contents_never_reach_prefect(
    prefect_harness: str, home: Path, events: list[dict[str, Any]]
) -> None:
    """A sentinel planted in file contents is in no flow or task run, log, artifact or event.

    Ids and values may appear there; the content of a file (its free text, a cut line, the
    bytes of an unreadable file) never does.
    """
    write_config(home, "[inbox_rules]\nsettle_seconds = 0.5\nincomplete_settle_seconds = 0\n")
    inbox = home / "inbox"
    registry_files(inbox)
    for name, data in files_with_sentinel().items():
        drop(inbox, name, data)
    state = ingest_inbox(str(home), return_state=True)
    APILogWorker.drain_all(timeout=60)
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["chimera-inbox-poll"]))
        )
    mine = [a for a in artifacts if a.flow_run_id == run.id]
    assert len(mine) == 1 and len(tasks) >= 7
    assert any(log.message.startswith("7 files: ") for log in logs), [log.message for log in logs][
        -3:
    ]
    seen = [
        run.model_dump_json(),
        *(t.model_dump_json() for t in tasks),
        *(log.message for log in logs),
        *(str(a.data) for a in mine),
        *(repr(e) for e in events),
    ]
    assert not [text for text in seen if SENTINEL in text]


def test_duplicate_bytes_under_another_name(
    prefect_harness: str, home: Path, events: list[dict[str, Any]]
) -> None:
    """The same bytes under another name are a duplicate: archived, warehouse unchanged."""
    inbox = home / "inbox"
    registry_files(inbox)
    data = post_dose_table(1, 12.0)
    drop(inbox, "gm_d01.txt", data)
    poll(home)
    before = warehouse_snapshot(home)
    drop(inbox, "gm_d01 (copy).txt", data)

    result = poll(home)

    assert statuses(result) == {"gm_d01 (copy).txt": "duplicate"}
    assert warehouse_snapshot(home) == before
    assert not any(inbox.iterdir())
    month = datetime.now(UTC).strftime("%Y/%m")
    assert (home / "archive" / month / "gm_d01 (copy).txt").read_bytes() == data
    assert accepted_counts(home)[sha(data)] == 1
    assert ledger(home).filter(pl.col("file_name") == "gm_d01 (copy).txt")["status"].to_list() == [
        "duplicate"
    ]
    assert not [e for e in events if e["payload"].get("file_name") == "gm_d01 (copy).txt"]


def test_corrected_reexport_supersedes(prefect_harness: str, home: Path) -> None:
    """A corrected re-export of a sample is accepted and supersedes the earlier export."""
    inbox = home / "inbox"
    registry_files(inbox)
    first = post_dose_table(1, 12.0)
    drop(inbox, "gm_d01.txt", first)
    poll(home)
    corrected = post_dose_table(1, 30.0, scale=1.1)
    drop(inbox, "gm_d01_corrected.txt", corrected)

    result = poll(home)

    assert statuses(result) == {"gm_d01_corrected.txt": "accepted"}
    row = ledger(home).filter(pl.col("source_sha256") == sha(corrected)).row(0, named=True)
    assert row["supersedes"] == "gm_d01.txt"
    rows = table(home, "chimerism").filter(pl.col("sample_id") == post_dose_id(1))
    current = rows.filter(~pl.col("superseded"))
    assert current["source_sha256"].to_list() == [sha(corrected)]
    assert current["pct_ink"].item() == pytest.approx(30.0, abs=0.5)
    assert rows.filter(pl.col("superseded"))["source_sha256"].to_list() == [sha(first)]


def test_manifest_after_assay_waits_then_accepts(prefect_harness: str, home: Path) -> None:
    """Assays dropped before their manifest wait, then are accepted on the poll after it lands."""
    inbox = home / "inbox"
    drop(inbox, "infusions.csv", infusion_csv())
    drop(inbox, "gm_refs.txt", references_table())
    drop(inbox, "gm_d01.txt", post_dose_table(1, 12.0))

    first = poll(home)

    assert statuses(first) == {
        "infusions.csv": "accepted",
        "gm_refs.txt": "waiting",
        "gm_d01.txt": "waiting",
    }
    assert sorted(p.name for p in inbox.iterdir()) == ["gm_d01.txt", "gm_refs.txt"]
    waiting = ledger(home).filter(pl.col("status") == "waiting")
    assert all(r.startswith("waiting for manifest rows") for r in waiting["reason"])

    drop(inbox, "manifest.csv", manifest_csv())
    second = poll(home)

    assert statuses(second) == {
        "manifest.csv": "accepted",
        "gm_refs.txt": "accepted",
        "gm_d01.txt": "accepted",
    }
    assert not any(inbox.iterdir())
    assert table(home, "chimerism").filter(pl.col("sample_id") == post_dose_id(1)).height == 1


def test_waiting_too_long_is_quarantined_with_report(tmp_path: Path) -> None:
    """A file waiting longer than the time-out goes to quarantine with a problems.txt.

    Deterministic: explicit polls with an injected clock (the time-out is 1 h, nobody waits).
    """
    home = tmp_path / "data"
    write_config(home, "[inbox_rules]\nsettle_seconds = 1.0\nwaiting_timeout_hours = 1.0\n")
    settings = load_settings(home=home)
    clock = FakeClock()

    def poll_at(seconds_later: float) -> dict[str, FileStatus]:
        clock.advance(seconds_later)
        result = poll_inbox(settings, clock=clock, refresh=False, max_wait_seconds=0)
        return {o.file_name: o.status for o in result.outcomes}

    data = post_dose_table(1, 12.0)
    drop(home / "inbox", "gm_d01.txt", data)
    assert poll_at(0) == {}  # first look
    assert poll_at(1) == {"gm_d01.txt": FileStatus.WAITING}  # settled: waits from now
    assert poll_at(3599) == {"gm_d01.txt": FileStatus.WAITING}  # 1 s short of the time-out
    assert poll_at(1) == {"gm_d01.txt": FileStatus.QUARANTINED}

    assert not (home / "inbox" / "gm_d01.txt").exists()
    assert (home / "quarantine" / "gm_d01.txt").read_bytes() == data
    report = (home / "quarantine" / "gm_d01.txt.problems.txt").read_text(encoding="utf-8")
    assert "waited 1 h (limit 1 h)" in report
    assert "manifest rows" in report


def test_slowly_copied_file_is_read_only_once_settled(tmp_path: Path) -> None:
    """A file still being copied is never read; it is read once two looks 30 s apart agree.

    Deterministic: explicit polls with an injected clock (no thread, no sleep). Every chunk
    of the copy keeps the source's old mtime, as Explorer and ``cp -p`` do, so only the
    looks remembered across polls can tell the copy is still going.
    """
    home = tmp_path / "data"
    write_config(home, "[inbox_rules]\nsettle_seconds = 30.0\nincomplete_settle_seconds = 120.0\n")
    settings = load_settings(home=home)
    inbox = home / "inbox"
    clock = FakeClock()

    def poll_at(seconds_later: float) -> Poll:
        clock.advance(seconds_later)
        return poll_inbox(settings, clock=clock, refresh=False, max_wait_seconds=0)

    registry_files(inbox)
    assert poll_at(0).outcomes == ()  # first look: nothing is read yet
    assert {o.status for o in poll_at(30).outcomes} == {FileStatus.ACCEPTED}
    data = post_dose_table(1, 12.0)
    target = inbox / "gm_d01.txt"
    step = len(data) // 6 + 1
    old_mtime = time.time() - 3600
    unread: list[str] = []
    for start in range(0, len(data), step):
        with target.open("ab") as fh:
            fh.write(data[start : start + step])
        os.utime(target, (old_mtime, old_mtime))
        result = poll_at(40)  # longer than settle_seconds between looks, yet still changing
        assert result.outcomes == ()
        unread += [u.render() for u in result.unread]
    assert len(unread) == -(-len(data) // step)
    assert "still being copied" in unread[1]
    assert set(ledger(home)["file_name"]) == {"manifest.csv", "infusions.csv", "gm_refs.txt"}
    assert poll_at(29.9).outcomes == ()  # unchanged, but not yet for 30 s
    finished = poll_at(0.1)
    assert [(o.file_name, o.status) for o in finished.outcomes] == [
        ("gm_d01.txt", FileStatus.ACCEPTED)
    ]
    assert ledger(home).filter(pl.col("file_name") == "gm_d01.txt")["source_sha256"].to_list() == [
        sha(data)
    ]


def test_cut_off_copy_with_an_old_mtime_waits_for_the_rest(
    prefect_harness: str, home: Path
) -> None:
    """A partial copy whose mtime is old (a stalled or timestamp-keeping copy) is not read.

    The old rule (mtime older than settle_seconds) read and quarantined it at the first poll.
    """
    inbox = home / "inbox"
    registry_files(inbox)
    data = post_dose_table(1, 12.0)
    cut = data.rindex(b"\r\n", 0, len(data) - 2) + 20  # inside the last line
    drop(inbox, "gm_d01.txt", data[:cut], age_seconds=3600)

    first = poll(home)

    assert "gm_d01.txt" not in statuses(first)
    assert first["settling"] == ["gm_d01.txt"]
    assert "gm_d01.txt" not in set(ledger(home)["file_name"])
    drop(inbox, "gm_d01.txt", data, age_seconds=3600)  # the copy finished
    assert statuses(poll(home)) == {"gm_d01.txt": "accepted"}
    assert ledger(home).filter(pl.col("file_name") == "gm_d01.txt")["source_sha256"].to_list() == [
        sha(data)
    ]


def test_concurrent_polls_never_double_ingest(prefect_harness: str, home: Path) -> None:
    """Two polls racing over one inbox (global limit + file lock) ingest each file exactly once."""

    assert ensure_concurrency_limit()
    try:
        _race(home)
    finally:  # a later SIGKILL test must not wait for a lease of this limit
        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(INBOX_LIMIT)


def _race(home: Path) -> None:
    inbox = home / "inbox"
    registry_files(inbox)
    drop(inbox, "manifest.csv", manifest_csv(range(1, 5)))
    for n in range(1, 5):
        drop(inbox, f"gm_d{n:02d}.txt", post_dose_table(n, 10.0 * n))
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        results.append(poll(home))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert len(results) == 2
    names = [n for r in results for n in statuses(r)]
    assert sorted(names) == sorted(
        ["manifest.csv", "infusions.csv", "gm_refs.txt"] + [f"gm_d{n:02d}.txt" for n in range(1, 5)]
    )
    assert set(accepted_counts(home).values()) == {1}
    assert len(accepted_counts(home)) == 7
    assert_no_duplicate_rows(home)
    assert not any(inbox.iterdir())


PAUSING_WORKER = """
import sys, threading
from pathlib import Path
import chimera.warehouse as warehouse
home, paused = sys.argv[1], Path(sys.argv[2])
store, written = warehouse.Warehouse.store, []
def pausing(self, table, key, frame):
    stored = store(self, table, key, frame)
    if table.name == "observations_str":
        written.append(key)
        if len(written) == 4:  # the 4th export's raw rows are written, its ledger row is not
            paused.write_text(key)
            threading.Event().wait()  # never set: blocks until the test SIGKILLs the worker
    return stored
warehouse.Warehouse.store = pausing
from flows.ingest import main
raise SystemExit(main(["--home", home]))
"""
"""The inbox flow in a worker that stops dead mid-file (the test then SIGKILLs it there)."""


def test_sigkill_mid_ingest_loses_nothing(prefect_harness: str, home: Path) -> None:
    """A worker killed mid-ingest loses no file and leaves no duplicate; a restart finishes the job."""
    inbox = home / "inbox"
    n_samples = 12
    files = {
        "manifest.csv": manifest_csv(range(1, n_samples + 1)),
        "infusions.csv": infusion_csv(),
        "gm_refs.txt": references_table(),
    }
    files |= {f"gm_d{n:02d}.txt": post_dose_table(n, 3.0 * n) for n in range(1, n_samples + 1)}
    for name, data in files.items():
        drop(inbox, name, data)
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_harness,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }
    paused = home.parent / "paused"
    worker = subprocess.Popen(
        [sys.executable, "-c", PAUSING_WORKER, str(home), str(paused)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: paused.exists() or worker.poll() is not None,
            "the worker reaching the pause",
        )
        assert paused.exists(), f"the worker never reached the pause (exit {worker.poll()})"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    done_before = sum(accepted_counts(home).values())
    # One batch per poll: the ledger is written after every raw file, so a kill mid-flush
    # leaves each file in the inbox and unrecorded.
    assert done_before == 0
    settings = load_settings({"CHIMERA_HOME": str(home)})
    half_done = maintenance.verify_warehouse(settings).mismatches
    assert {m.code.value for m in half_done} == {"raw_without_ledger"}  # killed mid-flush

    result = poll(home)

    expected = {sha(d) for d in files.values()}
    placed = set(archived(home)) | set(quarantined(home))
    left = {sha(p.read_bytes()) for p in inbox.iterdir()}
    assert expected <= placed
    assert not left
    counts = accepted_counts(home)
    assert set(counts) == expected
    assert set(counts.values()) == {1}
    assert_no_duplicate_rows(home)
    current = table(home, "chimerism").filter(~pl.col("superseded"))
    assert sorted(current["sample_id"]) == sorted(post_dose_id(n) for n in range(1, n_samples + 1))
    assert len(statuses(result)) + done_before >= len(files)
    verification = maintenance.verify_warehouse(settings)
    assert verification.ok, verification.mismatches


def test_nightly_rebuild_verifies_and_flags_a_changed_archive(
    prefect_harness: str, home: Path
) -> None:
    """Nightly verification passes on a clean warehouse and fails when an archived file changed."""

    registry_files(home / "inbox")
    drop(home / "inbox", "gm_d01.txt", post_dose_table(1, 12.0))
    poll(home)
    chimerism = home / "warehouse" / "chimerism" / "P01.parquet"
    before = pl.read_parquet(chimerism)
    chimerism.unlink()

    clean = nightly_rebuild(str(home))

    assert clean["ok"] is True
    assert clean["rebuilt"] == ["P01"]
    assert pl.read_parquet(chimerism).equals(before)
    month = datetime.now(UTC).strftime("%Y/%m")
    archived_copy = home / "archive" / month / "gm_d01.txt"
    archived_copy.write_bytes(archived_copy.read_bytes() + b"tampered\r\n")
    state = nightly_rebuild(str(home), return_state=True)
    assert state.is_failed()
    codes = {
        m.code.value
        for m in maintenance.verify_warehouse(load_settings({"CHIMERA_HOME": str(home)})).mismatches
    }
    assert codes == {"archived_copy_differs", "unknown_archive_file"}


def test_refresh_trends_flow_for_named_patients(prefect_harness: str, home: Path) -> None:
    """The trend flow rebuilds the named patients' trend tables."""

    registry_files(home / "inbox")
    drop(home / "inbox", "gm_d01.txt", post_dose_table(1, 12.0))
    poll(home)
    trend = home / "warehouse" / "trends" / "P01.parquet"
    before = pl.read_parquet(trend)
    trend.unlink()

    result = refresh_trends(["P01"], str(home))

    assert result["patients"] == ["P01"]
    assert pl.read_parquet(trend).equals(before)
    assert before["sample_id"].to_list() == [post_dose_id(1)]


def test_deployments_build() -> None:
    """The served deployments: interval poll, event-triggered trends, nightly cron."""

    settings = load_settings({"CHIMERA_HOME": "/nonexistent-chimera-home"})
    poll_d, trends_d, nightly_d = build_deployments(settings)
    assert poll_d.name == "inbox-poll"
    assert poll_d.schedules[0].schedule.interval.total_seconds() == 60  # type: ignore[union-attr]
    assert poll_d.parameters == {"refresh_trends": False}
    assert [t.expect for t in trends_d.triggers] == [{"chimera.inbox.ingested"}]  # type: ignore[union-attr]
    assert nightly_d.schedules[0].schedule.cron == NIGHTLY_CRON  # type: ignore[union-attr]


def test_alert_notifications_escape_html_from_lab_ids() -> None:
    """The Prefect notification of a new alert renders ids and message with HTML escaped."""
    from prefect.server.utilities.user_templates import render_user_template_sync  # noqa: PLC0415

    from flows.common import ALERT_BODY, ALERT_SUBJECT  # noqa: PLC0415

    payload = {
        "severity": "high",
        "rule": "persistence",
        "patient_id": "<img src=x onerror=alert(1)>",
        "message": "iNK still quantified in <script>alert(1)</script> & more",
    }
    context = {"event": {"payload": payload}}
    subject = render_user_template_sync(ALERT_SUBJECT, context)
    body = render_user_template_sync(ALERT_BODY, context)
    assert subject == "Chimera high alert: persistence (&lt;img src=x onerror=alert(1)&gt;)"
    assert body == "iNK still quantified in &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"
