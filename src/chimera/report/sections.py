"""Report sections shared by the patient and cohort reports: alerts, change, kinetics, footer."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime

import polars as pl

from chimera import __version__
from chimera.report.html import Cell, badge, esc, missing, number, table, text
from chimera.report.summary import evidence_rows, format_result
from chimera.settings import Settings
from schemas.vocab import AlertState, CdScale, Method, QcVerdict, Severity

METHOD_NOTES = {
    "STR": "STR fragment analysis (GeneMapper peak tables): per informative locus, iNK share "
    "of the allele signal by allele-sharing configuration; mean of retained loci, 95 % CI from "
    "the locus spread (t quantile) (methods.md 2).",
    "qPCR": "qPCR of an iNK-specific marker against a reference gene, ΔΔCt against a 100 % "
    "product calibrator, efficiency-corrected; 95 % CI from replicate spread (methods.md 3).",
    "ddPCR": "ddPCR marker/reference copies from Poisson-corrected droplet counts; 95 % CI "
    "from the Poisson counts (methods.md 5).",
}


def source_hashes(frames: Iterable[pl.DataFrame]) -> set[str]:
    """Every ``source_sha256`` in the frames (the files a report rests on)."""
    return {
        h
        for f in frames
        if "source_sha256" in f.columns
        for h in f["source_sha256"].drop_nulls().to_list()
    }


def methods_used(chimerism: pl.DataFrame) -> list[str]:
    """The methods with at least one result, in the vocabulary's order."""
    present = set(chimerism["method"].to_list())
    return [m.value for m in Method if m in present]


def result_text(row: dict[str, object]) -> str:
    """One result as the lab reports it (never a bare 0)."""

    def num(key: str) -> float | None:
        value = row.get(key)
        return float(value) if isinstance(value, int | float) else None

    return format_result(
        num("pct_ink"), str(row.get("result_status")), num("lod_pct"), num("ci_low"), num("ci_high")
    )


def qc_badge(verdict: object, reasons: object) -> str:
    """The QC badge (pass / review / fail) with its reasons beside it."""
    kind = str(verdict) if verdict in list(QcVerdict) else "review"
    label = str(verdict) if verdict is not None else "no QC verdict"
    why = f" <span class='note'>{esc(reasons)}</span>" if reasons else ""
    return badge(label, kind) + why


def change_text(trend: dict[str, object] | None) -> str:
    """The change since the previous sample, with its critical difference and significance."""
    if trend is None:
        return "<span class='missing'>no trend row (not a headline result)</span>"
    previous = trend.get("previous_sample_id")
    if previous is None:
        return "<span class='note'>first sample: no previous result to compare</span>"
    cd = trend.get("critical_difference_pct")
    change = trend.get("change_pct")
    significant = trend.get("significant_change")
    scale = trend.get("cd_scale")
    direction = trend.get("change_direction") or "change"
    if significant is None:
        verdict = badge("not judged", "ns", "the pair lacks the CIs needed")
    else:
        verdict = badge("significant", "sig") if significant else badge("not significant", "ns")
    if scale == CdScale.DETECTION:
        detail = f"{direction} across the detection limit; critical difference = LoD {_g(cd)} %"
    else:
        amount = f"{change:+.3g} points" if isinstance(change, float) else "change unknown"
        ln = trend.get("critical_difference_ln")
        ln_text = f", ln scale {ln:.3g}" if isinstance(ln, float) else ""
        detail = f"{direction} {amount}; critical difference {_g(cd)} points{ln_text}"
    return f"{verdict} {esc(detail)} <span class='note'>vs {esc(previous)}</span>"


def _g(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else "–"


def kinetics_table(kinetics: pl.DataFrame) -> str:
    """Per-dose (and overall) kinetics of one patient, with every missing half-life's reason."""
    if kinetics.height == 0:
        return missing("No kinetics yet: they need the infusion log and post-dose results.")
    rows = []
    for r in kinetics.sort("scope", "dose_number", nulls_last=True).iter_rows(named=True):
        half = (
            number(r["half_life_days"])
            if r["half_life_days"] is not None
            else text(r["half_life_reason"])
        )
        rows.append(
            [
                text(r["dose_number"] if r["scope"] == "dose" else "overall"),
                Cell(f"{r['interval_start_day']:.1f}–{_g(r['interval_end_day'])}", numeric=True),
                Cell(f"{r['n_quantified']}/{r['n_samples']}", numeric=True),
                number(r["cmax_pct"]),
                text(r["cmax_sample_id"]),
                number(r["tmax_days"]),
                Cell(
                    f"{_g(r['predose_pct'])} <span class='note'>{esc(r['predose_status'] or '')}</span>",
                    numeric=True,
                ),
                Cell(
                    f"{_g(r['trough_pct'])} <span class='note'>{esc(r['trough_status'] or '')}</span>",
                    numeric=True,
                ),
                number(r["auc_pct_days"]),
                number(r["auc_0_28_pct_days"]),
                number(r["tlast_days"]),
                half,
                number(r["accumulation_ratio_trough"]),
                number(r["accumulation_ratio_auc"]),
            ]
        )
    headers = (
        "dose", "interval (days since dose 1)", "quantified/samples", "Cmax %", "Cmax sample",
        "Tmax (d)", "pre-dose %", "trough %", "AUC (%·d)", "AUC0–28d (%·d)", "Tlast (d)",
        "t½ (d) or why not", "R_ac trough", "R_ac AUC",
    )  # fmt: skip
    return table(headers, rows)


def alerts_section(alerts: pl.DataFrame, *, show_patient: bool) -> str:
    """Open alerts first, then resolved ones, each with its message and cited evidence."""
    if alerts.height == 0:
        return "<p class='note'>No alerts raised.</p>"
    order = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
    parts = []
    ranked = sorted(
        alerts.iter_rows(named=True),
        key=lambda r: (
            r["state"] == AlertState.RESOLVED,
            order.get(r["severity"], 3),
            r["patient_id"],
            r["rule"],
        ),
    )
    for r in ranked:
        who = f"{esc(r['patient_id'])} · " if show_patient else ""
        since = f"since {r['first_detected_at']:%Y-%m-%d}"
        if r["resolved_at"] is not None:
            since += f", resolved {r['resolved_at']:%Y-%m-%d}"
        parts.append(
            f"<h3>{who}{esc(r['rule'])} {badge(r['state'], r['state'])} "
            f"<span class='note'>{esc(r['severity'])}, rule v{esc(r['rule_version'])}, {esc(since)}</span></h3>"
            f"<p>{esc(r['message'])}</p>{_evidence(r['evidence'])}"
        )
    return "".join(parts)


def _evidence(raw: object) -> str:
    try:
        evidence = json.loads(str(raw))
    except ValueError:
        return missing("Evidence is not readable JSON.")
    cited = evidence_rows(evidence)
    rows = [
        [
            text(c.get("sample_id")),
            text(c.get("study_day")),
            text(c.get("method")),
            text(result_text(c)),
            number(_float(c.get("lod_pct"))),
            text(c.get("result_status")),
        ]
        for c in cited
    ]
    cited_table = (
        table(("sample", "day", "method", "value (95 % CI)", "LoD %", "state"), rows)
        if rows
        else ""
    )
    dump = esc(json.dumps(evidence, indent=1, sort_keys=True))
    return (
        f"{cited_table}<details><summary>all evidence (JSON)</summary><pre>{dump}</pre></details>"
    )


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def parameters_table(settings: Settings) -> str:
    """The thresholds that produced the numbers (per method, reconciliation)."""
    rows = []
    for section in ("str", "qpcr", "ddpcr", "reconcile"):
        for key, value in asdict(getattr(settings, section)).items():
            rows.append([text(section), text(key), text(json.dumps(value, default=str))])
    return table(("section", "parameter", "value"), rows)


def sources_table(hashes: set[str], ledger: pl.DataFrame) -> str:
    """Every source file behind the report: name, format, fate and SHA-256."""
    if not hashes:
        return missing("No source files: nothing has been ingested for this report.")
    known = ledger.filter(pl.col("source_sha256").is_in(sorted(hashes))).sort("file_name")
    rows = [
        [
            text(r["file_name"]),
            text(r["detected_format"]),
            text(r["status"]),
            Cell(f"<span class='sha'>{esc(r['source_sha256'])}</span>"),
        ]
        for r in known.iter_rows(named=True)
    ]
    unknown = sorted(hashes - set(known["source_sha256"].to_list()))
    rows += [
        [
            Cell("<span class='missing'>not in the ledger</span>"),
            text(None),
            text(None),
            Cell(f"<span class='sha'>{esc(h)}</span>"),
        ]
        for h in unknown
    ]
    return table(("file", "format", "fate", "sha256"), rows)


def footer(
    *,
    methods: list[str],
    settings: Settings,
    hashes: set[str],
    ledger: pl.DataFrame,
    generated_at: datetime,
) -> str:
    """Methods, software version, parameters and every source file's SHA-256."""
    notes = "".join(
        f"<li><b>{esc(m)}</b>: {esc(METHOD_NOTES.get(m, 'method not described'))}</li>"
        for m in methods
    )
    return (
        "<footer><h2>Methods, software and sources</h2>"
        f"<ul>{notes or '<li>No results, so no method to describe.</li>'}</ul>"
        f"<p>Chimera {esc(__version__)}; generated {generated_at:%Y-%m-%d %H:%M} UTC from the "
        "current (not superseded) warehouse rows. Results are never a bare 0: quantified, "
        "detected below LoQ, not detected (&lt; the sample's LoD) or failed (methods.md 4). "
        "Change significance: critical difference 1.96·√(u₁²+u₂²) (methods.md 9.1).</p>"
        f"<details><summary>Parameters</summary>{parameters_table(settings)}</details>"
        f"<details open><summary>Source files ({len(hashes)})</summary>{sources_table(hashes, ledger)}</details>"
        "</footer>"
    )
