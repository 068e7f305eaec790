"""Terminal summaries for ``chimera demo`` and ``chimera alerts`` (read-only)."""

from __future__ import annotations

import json

import polars as pl
from rich.console import Console
from rich.table import Table

from chimera.settings import Settings
from chimera.warehouse import ALERTS, CHIMERISM, KINETICS_COHORT, Warehouse

METHODS = ("STR", "qPCR", "ddPCR")


def format_result(
    pct: float | None, status: str | None, lod: float | None, low: float | None, high: float | None
) -> str:
    """One result the way a report prints it; never a bare 0.

    Examples
    --------
    >>> format_result(0.42, "quantified", 0.03, 0.31, 0.55)
    '0.42 % (0.31–0.55)'
    >>> format_result(None, "not_detected", 0.03, None, None)
    'not detected (< LoD 0.03 %)'
    """
    if status == "quantified" and pct is not None:
        ci = f" ({low:.3g}–{high:.3g})" if low is not None and high is not None else ""
        return f"{pct:.3g} %{ci}"
    if status == "below_loq" and pct is not None:
        return f"detected, < LoQ ({pct:.2g} %)"
    if status == "not_detected":
        return f"not detected (< LoD {lod:.2g} %)" if lod is not None else "not detected"
    if status == "failed":
        return "not reportable"
    return "–"


def _status_counts(frame: pl.DataFrame, method: str) -> str:
    rows = frame.filter(pl.col("method") == method)
    if rows.height == 0:
        return "–"
    counts = rows["result_status"].value_counts()
    get = dict(zip(counts["result_status"].to_list(), counts["count"].to_list(), strict=True))
    return f"{get.get('quantified', 0)}/{get.get('below_loq', 0)}/{get.get('not_detected', 0)}/{get.get('failed', 0)}"


def print_demo_summary(settings: Settings, console: Console) -> None:
    """Per-patient results by method, the cohort kinetics and the alerts raised."""
    warehouse = Warehouse(settings.warehouse)
    chimerism = warehouse.read(CHIMERISM)
    if chimerism.height == 0:
        console.print("No chimerism results in the warehouse yet.")
        return
    current = chimerism.filter(~pl.col("superseded"))
    alerts = warehouse.read(ALERTS)
    table = Table(title="Per patient (results: quantified/below LoQ/not detected/failed)")
    for column in (
        "patient",
        "samples",
        *METHODS,
        "peak % iNK (day)",
        "last quantified day",
        "open alerts",
    ):
        table.add_column(column)
    for (patient,), rows in current.sort("patient_id").group_by(
        ["patient_id"], maintain_order=True
    ):
        head = rows.filter(pl.col("is_headline")).sort("collected_at")
        quantified = head.filter(pl.col("result_status") == "quantified")
        peak = quantified.sort("pct_ink", descending=True).head(1)
        peak_text = f"{peak['pct_ink'][0]:.3g} (d{peak['study_day'][0]})" if peak.height else "–"
        last = quantified["study_day"].max() if quantified.height else None
        open_alerts = (
            alerts.filter((pl.col("patient_id") == patient) & (pl.col("state") != "resolved"))[
                "rule"
            ].to_list()
            if alerts.height
            else []
        )
        table.add_row(
            str(patient),
            str(head.height),
            *(_status_counts(rows, m) for m in METHODS),
            peak_text,
            "–" if last is None else str(last),
            ", ".join(sorted(set(open_alerts))) or "–",
        )
    console.print(table)
    _print_side_by_side(current, console)
    _print_kinetics(warehouse, console)
    print_alerts(settings, console, include_resolved=False)
    console.print("\nOutputs:")
    for name in (
        "chimerism",
        "markers",
        "trends",
        "kinetics",
        "kinetics_cohort",
        "alerts",
        "ingest_log",
    ):
        console.print(f"  {name:16s} {(settings.warehouse / name).resolve()}")
    console.print(f"  {'archive':16s} {settings.archive.resolve()}")
    console.print(f"  {'quarantine':16s} {settings.quarantine.resolve()}")
    console.print(
        f'Query: chimera query "select * from chimerism limit 5" --warehouse {settings.warehouse}'
    )


def _print_side_by_side(current: pl.DataFrame, console: Console) -> None:
    """The first post-dose sample of each patient measured by every method, methods side by side."""
    wide = current.filter(pl.col("result_status") != "failed")
    table = Table(title="First sample measured by every method (headline marked *)")
    for column in ("patient", "sample", "day", *METHODS):
        table.add_column(column)
    for (patient,), rows in wide.sort("patient_id").group_by(["patient_id"], maintain_order=True):
        by_sample = rows.group_by("sample_id").agg(
            pl.col("method").n_unique().alias("n"), pl.col("collected_at").first()
        )
        full = by_sample.filter(pl.col("n") == by_sample["n"].max()).sort("collected_at")
        if full.height == 0:
            continue
        sample = full["sample_id"][0]
        cells = []
        for method in METHODS:
            row = rows.filter((pl.col("sample_id") == sample) & (pl.col("method") == method))
            if row.height == 0:
                cells.append("–")
                continue
            r = row.row(0, named=True)
            text = format_result(
                r["pct_ink"], r["result_status"], r["lod_pct"], r["ci_low"], r["ci_high"]
            )
            cells.append(("* " if r["is_headline"] else "") + text)
        day = rows.filter(pl.col("sample_id") == sample)["study_day"][0]
        table.add_row(str(patient), str(sample), str(day), *cells)
    console.print(table)


def _print_kinetics(warehouse: Warehouse, console: Console) -> None:
    cohort = warehouse.read(KINETICS_COHORT)
    if cohort.height == 0:
        return
    wanted = ["cmax_pct", "auc_pct_days", "half_life_days"]
    rows = cohort.filter(pl.col("parameter").is_in(wanted))
    table = Table(title="Cohort kinetics per dose: median (range), n patients")
    table.add_column("dose")
    for parameter in wanted:
        table.add_column(parameter)
    for (scope, dose), group in rows.sort("scope", "dose_number", nulls_last=True).group_by(
        ["scope", "dose_number"], maintain_order=True
    ):
        label = "overall" if scope == "overall" else str(dose)
        cells = []
        for parameter in wanted:
            r = group.filter(pl.col("parameter") == parameter)
            if r.height == 0 or r["median"][0] is None:
                cells.append("–")
            else:
                cells.append(
                    f"{r['median'][0]:.3g} ({r['min'][0]:.3g}–{r['max'][0]:.3g}), n={r['n_values'][0]}"
                )
        table.add_row(label, *cells)
    console.print(table)


def evidence_rows(evidence: object) -> list[dict[str, object]]:
    """Every result cited in an alert's evidence (any dict with a ``sample_id``), in order."""
    found: list[dict[str, object]] = []
    if isinstance(evidence, dict):
        if "sample_id" in evidence:
            found.append(evidence)
        for value in evidence.values():
            found += evidence_rows(value)
    elif isinstance(evidence, list):
        for item in evidence:
            found += evidence_rows(item)
    return found


def _evidence_line(row: dict[str, object]) -> str:
    def number(key: str) -> float | None:
        value = row.get(key)
        return float(value) if isinstance(value, int | float) else None

    value = format_result(
        number("pct_ink"),
        str(row.get("result_status")),
        number("lod_pct"),
        number("ci_low"),
        number("ci_high"),
    )
    day = row.get("study_day")
    return f"{row['sample_id']} (day {day}, {row.get('method', '?')}): {value}"


def print_alerts(settings: Settings, console: Console, *, include_resolved: bool) -> int:
    """List alerts (open and ongoing, or all) with the evidence behind each; return exit code 0."""
    alerts = Warehouse(settings.warehouse).read(ALERTS)
    if alerts.height and not include_resolved:
        alerts = alerts.filter(pl.col("state") != "resolved")
    if alerts.height == 0:
        console.print("No open alerts.")
        return 0
    console.print(f"[bold]{alerts.height} alert(s)[/bold]")
    order = {"critical": 0, "warning": 1, "info": 2}
    rows = sorted(
        alerts.iter_rows(named=True),
        key=lambda r: (order.get(r["severity"], 3), r["patient_id"], r["rule"]),
    )
    for row in rows:
        console.print(
            f"\n[bold]{row['patient_id']}[/bold] {row['rule']} ({row['severity']}, {row['state']}, "
            f"rule v{row['rule_version']}, since {row['first_detected_at']:%Y-%m-%d})"
        )
        console.print(f"  {row['message']}")
        try:
            evidence = json.loads(row["evidence"])
        except (TypeError, ValueError):
            evidence = None
        cited = evidence_rows(evidence)
        seen: set[object] = set()
        for item in cited:
            key = (item["sample_id"], item.get("method"))
            if key in seen:
                continue
            seen.add(key)
            if len(seen) > 8:
                console.print(f"    … {len(cited) - 8} more result(s) in alerts/ evidence")
                break
            console.print(f"    evidence: {_evidence_line(item)}")
    return 0
