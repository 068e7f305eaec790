"""Flow ``nightly_rebuild``: verify the warehouse against the archive, then rebuild it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from chimera.maintenance import Verification
from flows.common import emit_alert_events, exclusive_inbox, md_cell, rename_run, settings_for
from flows.tasks import (
    describe_alerts,
    rebuild_all_patients,
    recover_dirty,
    refresh_patients,
    verify_warehouse,
)


class ArchiveMismatchError(RuntimeError):
    """The nightly verification found accepted files whose archive or raw rows are not intact."""


def _now() -> datetime:
    return datetime.now(UTC)


def verification_markdown(
    verification: Verification, recovered: set[str], rebuilt: list[str]
) -> str:
    """The nightly artifact: verification verdict and every mismatch."""
    verdict = "OK" if verification.ok else f"{len(verification.mismatches)} MISMATCH(ES)"
    lines = [
        f"# Nightly rebuild: {verdict}",
        "",
        f"- accepted files in the ledger: {verification.accepted_files}",
        f"- files in the archive: {verification.archived_files}",
        f"- patients recovered from an interrupted run: {', '.join(sorted(recovered)) or 'none'}",
        f"- patients rebuilt: {len(rebuilt)}",
        "",
    ]
    if verification.mismatches:
        lines += ["| problem | file | sha256 | detail |", "|---|---|---|---|"]
        lines += [
            f"| {m.code.value} | {md_cell(m.file_name)} | {m.sha256[:12]} | {md_cell(m.detail)} |"
            for m in verification.mismatches
        ]
    else:
        lines.append(
            "Every accepted file is archived with the same SHA-256 and has its raw table file."
        )
    return "\n".join(lines) + "\n"


@flow(name="nightly-rebuild")
def nightly_rebuild(
    home: str | None = None, *, lock_timeout_seconds: float = 3600.0
) -> dict[str, Any]:
    """Verify archive and ledger, recover interrupted patients, rebuild every patient and trend.

    Ends ``Failed`` (after rebuilding) when verification found mismatches, so automations notice.
    """
    settings = settings_for(home)
    with exclusive_inbox(settings, timeout_seconds=lock_timeout_seconds):
        verification = verify_warehouse(settings)
        recovered = recover_dirty.with_options(retries=0)(settings=settings, now=_now())
        rebuilt = rebuild_all_patients(settings, now=_now())
        summary = refresh_patients(None, settings=settings, now=_now())
        alerts = describe_alerts(settings, summary.opened_alert_ids)
    emit_alert_events(alerts)
    create_markdown_artifact(
        markdown=verification_markdown(verification, recovered, rebuilt),
        key="chimera-nightly-verification",
        description="Warehouse vs archive verification and rebuild",
    )
    verdict = "verified" if verification.ok else f"{len(verification.mismatches)} mismatches"
    rename_run(f"{verdict}, {len(rebuilt)} patients rebuilt")
    result = {
        "ok": verification.ok,
        "mismatches": [
            {"code": m.code.value, "file_name": m.file_name, "sha256": m.sha256, "detail": m.detail}
            for m in verification.mismatches
        ],
        "recovered": sorted(recovered),
        "rebuilt": rebuilt,
        "opened_alerts": [a["alert_id"] for a in alerts],
    }
    if not verification.ok:
        for m in verification.mismatches:
            get_run_logger().error("%s %s: %s", m.code.value, m.file_name, m.detail)
        msg = f"{len(verification.mismatches)} archive/warehouse mismatch(es); see the artifact"
        raise ArchiveMismatchError(msg)
    return result
