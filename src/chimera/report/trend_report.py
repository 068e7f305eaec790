"""Per-patient trend reports: a PNG per patient and an HTML index of headline values.

The plot shows % iNK on a log axis with doses marked. Reads the warehouse; computes nothing new.

matplotlib (Agg backend) is used because it renders static PNGs without a display or browser.
"""

from __future__ import annotations

import html
from pathlib import Path

import polars as pl

from chimera.report.summary import format_result
from chimera.settings import Settings
from chimera.warehouse import ALERTS, CHIMERISM, INFUSIONS, Warehouse, file_key

_COLOURS = {"STR": "#1f77b4", "qPCR": "#2ca02c", "ddPCR": "#d62728"}


def plot_patient(
    chimerism: pl.DataFrame, infusions: pl.DataFrame, patient: str, path: Path
) -> Path:
    """Draw one patient's % iNK by method over study days; not-detected results at their LoD."""
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(9, 4.2))
    rows = chimerism.filter(~pl.col("superseded") & pl.col("study_day").is_not_null())
    for method, colour in _COLOURS.items():
        m = rows.filter(pl.col("method") == method).sort("study_day")
        seen = m.filter(pl.col("pct_ink").is_not_null() & (pl.col("pct_ink") > 0))
        if seen.height:
            low = (seen["pct_ink"] - seen["ci_low"].fill_null(seen["pct_ink"])).clip(0)
            high = (seen["ci_high"].fill_null(seen["pct_ink"]) - seen["pct_ink"]).clip(0)
            ax.errorbar(
                seen["study_day"].to_list(),
                seen["pct_ink"].to_list(),
                yerr=[low.to_list(), high.to_list()],
                fmt="o-",
                ms=3,
                lw=1,
                color=colour,
                label=method,
            )
        nd = m.filter((pl.col("result_status") == "not_detected") & pl.col("lod_pct").is_not_null())
        if nd.height:
            ax.scatter(
                nd["study_day"].to_list(),
                nd["lod_pct"].to_list(),
                marker="v",
                s=14,
                color=colour,
                alpha=0.5,
                label=f"{method} not detected (at LoD)",
            )
    doses = infusions.filter(pl.col("patient_id") == patient)
    first = doses["infused_at"].min()
    if first is not None:
        for when in doses["infused_at"].to_list():
            ax.axvline((when - first).total_seconds() / 86400, color="grey", lw=0.5, alpha=0.5)
    ax.set_yscale("log")
    ax.set_xlabel("study day (day 0 = first infusion; grey lines = doses)")
    ax.set_ylabel("% iNK (log scale)")
    ax.set_title(f"{patient}: iNK chimerism in peripheral blood")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(settings: Settings, out: Path) -> Path:
    """Write ``<out>/<patient>.png`` for every patient and ``<out>/index.html``; return the index."""
    warehouse = Warehouse(settings.warehouse)
    chimerism = warehouse.read(CHIMERISM)
    infusions = warehouse.read(INFUSIONS)
    alerts = warehouse.read(ALERTS)
    out.mkdir(parents=True, exist_ok=True)
    parts = [
        "<html><head><meta charset='utf-8'><title>iNK chimerism</title></head><body>",
        "<h1>iNK chimerism per patient</h1>",
    ]
    for patient in sorted(chimerism["patient_id"].unique().to_list()) if chimerism.height else []:
        rows = chimerism.filter(pl.col("patient_id") == patient)
        image = plot_patient(rows, infusions, patient, out / f"{file_key(patient)}.png")
        head = rows.filter(pl.col("is_headline") & ~pl.col("superseded")).sort("collected_at")
        parts.append(f"<h2>{html.escape(patient)}</h2><img src='{image.name}' width='800'>")
        open_alerts = (
            alerts.filter((pl.col("patient_id") == patient) & (pl.col("state") != "resolved"))
            if alerts.height
            else alerts
        )
        for alert in open_alerts.iter_rows(named=True):
            parts.append(
                f"<p><b>ALERT {html.escape(alert['rule'])}</b>: {html.escape(alert['message'])}</p>"
            )
        parts.append(
            "<table border='1' cellspacing='0'><tr><th>day</th><th>sample</th><th>method</th><th>% iNK</th><th>rule</th></tr>"
        )
        for r in head.iter_rows(named=True):
            value = format_result(
                r["pct_ink"], r["result_status"], r["lod_pct"], r["ci_low"], r["ci_high"]
            )
            parts.append(
                f"<tr><td>{r['study_day']}</td><td>{html.escape(r['sample_id'])}</td><td>{r['method']}</td>"
                f"<td>{html.escape(value)}</td><td>{html.escape(r['headline_rule'] or '')}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index
