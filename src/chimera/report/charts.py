"""Charts of the reports as inline SVG, drawn server-side with matplotlib.

Every result is one marker in an SVG group whose id says what it is (``pts-<series>-<status>``),
so a test (or a browser) counts the points drawn; each marker carries a ``<title>`` tooltip with
the sample, day and value. Text is drawn as paths (no font files needed) and ``$`` in an id is
never read as mathtext. Reads frames only; computes nothing new.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from chimera.report.summary import format_result
from schemas.vocab import Method, QcVerdict, ResultStatus

METHOD_COLOURS = {Method.STR: "#1f77b4", Method.QPCR: "#2ca02c", Method.DDPCR: "#d62728"}
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
_LINESTYLES = ("-", "--", "-.", ":")
_VALUE_STATES = (ResultStatus.QUANTIFIED, ResultStatus.BELOW_LOQ)
_FAIL_RED = "#b42318"

POINT_COLUMNS = (
    "series", "colour", "sample_id", "study_day", "pct_ink", "ci_low", "ci_high", "lod_pct",
    "result_status", "qc_verdict",
)  # fmt: skip
"""Columns a point frame passed to :func:`trend_chart` must have."""


@dataclass(frozen=True)
class Chart:
    """An SVG chart ready to inline: ``key`` is its element id, ``points`` the results drawn."""

    key: str
    svg: str
    points: int
    caption: str


@dataclass(frozen=True)
class _Group:
    gid: str
    titles: list[str]


def _pyplot() -> Any:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _render(fig: Any, key: str, groups: Sequence[_Group]) -> str:
    """The figure as an inline ``<svg>`` element with a tooltip on every marker of ``groups``."""
    import matplotlib as mpl  # noqa: PLC0415

    buffer = io.StringIO()
    with mpl.rc_context({"svg.hashsalt": key, "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    _pyplot().close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    # matplotlib keeps each drawn text in an XML comment; the glyph paths are enough.
    svg = re.sub(r"<metadata>.*?</metadata>|<!--.*?-->", "", svg, flags=re.DOTALL)
    for group in groups:
        svg = _add_titles(svg, group)
    return svg


def _add_titles(svg: str, group: _Group) -> str:
    """Give the first ``len(titles)`` markers after the group's start their tooltips."""
    import html  # noqa: PLC0415

    start = svg.find(f'<g id="{group.gid}">')
    if start < 0:
        return svg
    head, tail = svg[:start], svg[start:]
    titles = iter(group.titles)

    def titled(match: re.Match[str]) -> str:
        label = next(titles, None)
        if label is None:
            return match.group(0)
        return f"{match.group(1)}><title>{html.escape(label)}</title></use>"

    return head + re.sub(r"(<use [^>]*?)\s*/>", titled, tail, count=len(group.titles))


def _axes_floor(points: pl.DataFrame) -> float:
    """A log-axis floor below every value, CI bound and LoD drawn (a decade step)."""
    values = [
        v
        for column in ("pct_ink", "ci_low", "lod_pct")
        if column in points.columns
        for v in points[column].drop_nulls().to_list()
        if v > 0
    ]
    low = min(values) if values else 0.01
    return float(10 ** math.floor(math.log10(low / 1.5)))


def _title(row: dict[str, object]) -> str:
    value = format_result(
        _num(row.get("pct_ink")),
        str(row.get("result_status")),
        _num(row.get("lod_pct")),
        _num(row.get("ci_low")),
        _num(row.get("ci_high")),
    )
    qc = row.get("qc_verdict")
    qc_text = "" if qc in (None, QcVerdict.PASS) else f" · QC {qc}"
    return f"{row.get('series')} · {row.get('sample_id')} · day {row.get('study_day')}: {value}{qc_text}"


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _dose_lines(ax: Any, doses: Sequence[tuple[float, int]], *, label: bool) -> None:
    """Grey vertical lines at each dose; dose numbers on top where they do not overlap."""
    if not doses:
        return
    span = max(d for d, _ in doses) - min(d for d, _ in doses) or 1.0
    last_label = -math.inf
    for day, number in doses:
        ax.axvline(day, color="#9aa5b1", lw=0.6, alpha=0.7, zorder=0, gid=f"dose-{number}")
        if label and day - last_label > span / 40:
            ax.text(
                day, 1.01, str(number), transform=ax.get_xaxis_transform(),
                fontsize=6, color="#616e7c", ha="center", va="bottom",
            )  # fmt: skip
            last_label = day


def _draw_series(
    ax: Any, rows: pl.DataFrame, k: int, floor: float, *, lod_lines: bool
) -> list[_Group]:
    """One series: CI band, line through detected values, LoD step, a marker per result."""
    colour = str(rows["colour"][0])
    style = _LINESTYLES[k % len(_LINESTYLES)]
    rows = rows.sort("study_day")
    seen = rows.filter(pl.col("result_status").is_in(_VALUE_STATES))
    if seen.height:
        band = seen.filter(pl.col("ci_low").is_not_null() & pl.col("ci_high").is_not_null())
        if band.height:
            ax.fill_between(
                band["study_day"].to_list(), [max(v, floor) for v in band["ci_low"].to_list()],
                band["ci_high"].to_list(), color=colour, alpha=0.13, lw=0, gid=f"ci-{k}",
            )  # fmt: skip
        ax.plot(
            seen["study_day"].to_list(), seen["pct_ink"].to_list(), color=colour, lw=1, ls=style
        )
    lod = rows.filter(pl.col("lod_pct").is_not_null() & (pl.col("lod_pct") > 0))
    if lod.height and lod_lines:
        ax.step(
            lod["study_day"].to_list(),
            lod["lod_pct"].to_list(),
            where="post",
            color=colour,
            lw=0.8,
            ls=":",
            alpha=0.8,
            gid=f"lod-{k}",
        )
    groups = []
    styles = {
        ResultStatus.QUANTIFIED: {"marker": "o", "s": 16, "c": colour},
        ResultStatus.BELOW_LOQ: {"marker": "o", "s": 16, "facecolors": "white", "edgecolors": colour},
        ResultStatus.NOT_DETECTED: {"marker": "v", "s": 20, "facecolors": "white", "edgecolors": colour},
        ResultStatus.FAILED: {"marker": "x", "s": 20, "c": _FAIL_RED},
    }  # fmt: skip
    for status, kwargs in styles.items():
        part = rows.filter(pl.col("result_status") == status)
        if part.height == 0:
            continue
        if status in _VALUE_STATES:
            ys = part["pct_ink"].to_list()
        elif status is ResultStatus.NOT_DETECTED:
            ys = [v if v is not None and v > 0 else floor for v in part["lod_pct"].to_list()]
        else:
            ys = [floor] * part.height
        gid = f"pts-{k}-{status.value}"
        ax.scatter(part["study_day"].to_list(), ys, zorder=3, linewidths=0.9, gid=gid, **kwargs)
        groups.append(_Group(gid, [_title(r) for r in part.iter_rows(named=True)]))
    flagged = rows.filter(
        (pl.col("qc_verdict") != QcVerdict.PASS) & pl.col("result_status").is_in(_VALUE_STATES)
    )
    if flagged.height:
        ax.scatter(
            flagged["study_day"].to_list(), flagged["pct_ink"].to_list(), marker="o", s=70,
            facecolors="none", edgecolors=_FAIL_RED, linewidths=1.1, zorder=4, gid=f"qc-{k}",
        )  # fmt: skip
    return groups


def _legend(ax: Any, series: list[tuple[str, str, str]], *, compact: bool) -> None:
    from matplotlib.lines import Line2D  # noqa: PLC0415

    grey = "#3e4c59"
    handles = [Line2D([], [], color=c, ls=s, lw=1.4, label=label) for label, c, s in series]
    handles += [
        Line2D([], [], color=grey, marker="o", ls="", label="quantified (band = 95 % CI)"),
        Line2D([], [], color=grey, marker="o", ls="", mfc="white", label="detected, < LoQ"),
        Line2D([], [], color=grey, marker="v", ls="", mfc="white", label="not detected: at LoD (upper bound)"),
        Line2D([], [], color=_FAIL_RED, marker="x", ls="", label="failed (at axis floor)"),
        Line2D([], [], color=_FAIL_RED, marker="o", ls="", mfc="none", ms=9, label="QC review / fail"),
        Line2D([], [], color=grey, ls=":", label="sample LoD"),
        Line2D([], [], color="#9aa5b1", lw=0.8, label="dose (number on top)"),
    ]  # fmt: skip
    if compact:
        return
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=4,
        fontsize=7,
        frameon=False,
    )


def trend_chart(
    points: pl.DataFrame,
    doses: Sequence[tuple[float, int]],
    *,
    key: str,
    caption: str,
    compact: bool = False,
    title: str | None = None,
    lod_lines: bool = True,
) -> Chart:
    """% iNK over study days on a log axis: one series per ``series`` label (POINT_COLUMNS).

    ``doses`` are (study day, dose number). Not-detected results sit at their LoD as an upper
    bound; failed results at the axis floor; QC review/fail results are ringed in red.
    """
    plt = _pyplot()
    rows = points.filter(pl.col("study_day").is_not_null())
    fig, ax = plt.subplots(figsize=(3.6, 2.4) if compact else (10.5, 4.6))
    floor = _axes_floor(rows)
    groups: list[_Group] = []
    legend: list[tuple[str, str, str]] = []
    for k, ((label,), part) in enumerate(rows.group_by(["series"], maintain_order=True)):
        groups += _draw_series(ax, part, k, floor, lod_lines=lod_lines)
        legend.append((str(label), str(part["colour"][0]), _LINESTYLES[k % len(_LINESTYLES)]))
    _dose_lines(ax, doses, label=not compact)
    ax.set_yscale("log")
    ax.set_ylim(
        bottom=floor * 0.8, top=max(100.0, *(rows["ci_high"].drop_nulls().to_list() or [1.0])) * 1.2
    )
    ax.set_xlabel("study day (day 0 = first infusion)", fontsize=7 if compact else 9)
    ax.set_ylabel("% iNK (log)", fontsize=7 if compact else 9)
    ax.tick_params(labelsize=6 if compact else 8)
    ax.grid(True, which="major", axis="y", color="#eef2f6", lw=0.6)
    if title:
        ax.set_title(title, fontsize=8 if compact else 10)
    _legend(ax, legend, compact=compact)
    fig.tight_layout()
    return Chart(key, _render(fig, key, groups), sum(len(g.titles) for g in groups), caption)


def genome_chart(
    points: pl.DataFrame, doses: Sequence[tuple[float, int]], *, key: str, caption: str
) -> Chart:
    """Three-genome patients: % iNK, % recipient and % HSCT donor (linear 0-100, 95 % CI bands).

    ``points`` has ``study_day, sample_id`` and ``pct_<share>`` with ``_ci_low``/``_ci_high`` for
    ``ink``, ``recipient`` and ``hsct_donor`` (missing columns are skipped).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10.5, 3.2))
    shares = (
        ("ink", "iNK", "#d62728"),
        ("recipient", "recipient", "#1f77b4"),
        ("hsct_donor", "HSCT donor", "#9467bd"),
    )
    groups = []
    rows = points.filter(pl.col("study_day").is_not_null()).sort("study_day")
    for share, label, colour in shares:
        column = f"pct_{share}"
        if column not in rows.columns:
            continue
        part = rows.filter(pl.col(column).is_not_null())
        if part.height == 0:
            continue
        low, high = f"{column}_ci_low", f"{column}_ci_high"
        if share == "ink":
            low, high = "ci_low", "ci_high"
        if {low, high} <= set(part.columns):
            band = part.filter(pl.col(low).is_not_null() & pl.col(high).is_not_null())
            ax.fill_between(
                band["study_day"].to_list(),
                band[low].to_list(),
                band[high].to_list(),
                color=colour,
                alpha=0.15,
                lw=0,
            )
        gid = f"genome-{share}"
        ax.plot(
            part["study_day"].to_list(),
            part[column].to_list(),
            color=colour,
            lw=1,
            label=f"% {label}",
        )
        ax.scatter(
            part["study_day"].to_list(),
            part[column].to_list(),
            color=colour,
            s=12,
            zorder=3,
            gid=gid,
        )
        titles = [
            f"{label} · {r['sample_id']} · day {r['study_day']}: {r[column]:.3g} %"
            for r in part.iter_rows(named=True)
        ]
        groups.append(_Group(gid, titles))
    _dose_lines(ax, doses, label=True)
    ax.set_ylim(0, 100)
    ax.set_xlabel("study day (day 0 = first infusion)", fontsize=9)
    ax.set_ylabel("% of the sample's DNA", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    fig.tight_layout()
    return Chart(key, _render(fig, key, groups), sum(len(g.titles) for g in groups), caption)


def swimmer_chart(lanes: pl.DataFrame, doses: pl.DataFrame, *, key: str, caption: str) -> Chart:
    """One lane per patient: follow-up bar, a tick per dose, a marker per headline result.

    ``lanes``: ``patient_id, study_day, result_status, sample_id, pct_ink, ...`` (POINT_COLUMNS
    without ``series``); ``doses``: ``patient_id, study_day, dose_number``.
    """
    plt = _pyplot()
    patients = sorted(set(lanes["patient_id"].to_list()) | set(doses["patient_id"].to_list()))
    fig, ax = plt.subplots(figsize=(10.5, 0.45 * len(patients) + 1.4))
    groups = []
    styles = {
        ResultStatus.QUANTIFIED: {"marker": "o", "s": 18, "c": "#1b7f3b"},
        ResultStatus.BELOW_LOQ: {"marker": "o", "s": 18, "facecolors": "white", "edgecolors": "#1b7f3b"},
        ResultStatus.NOT_DETECTED: {"marker": ".", "s": 14, "c": "#9aa5b1"},
        ResultStatus.FAILED: {"marker": "x", "s": 18, "c": _FAIL_RED},
    }  # fmt: skip
    for y, patient in enumerate(patients):
        mine = lanes.filter((pl.col("patient_id") == patient) & pl.col("study_day").is_not_null())
        given = doses.filter(pl.col("patient_id") == patient)
        days = mine["study_day"].to_list() + given["study_day"].to_list()
        if days:
            ax.plot([0, max(days)], [y, y], color="#d9e2ec", lw=6, solid_capstyle="butt", zorder=1)
        ax.scatter(
            given["study_day"].to_list(),
            [y] * given.height,
            marker="|",
            s=90,
            c="#3e4c59",
            zorder=2,
            gid=f"swim-dose-{y}",
        )
        for status, kwargs in styles.items():
            part = mine.filter(pl.col("result_status") == status)
            if part.height:
                gid = f"swim-{y}-{status.value}"
                ax.scatter(
                    part["study_day"].to_list(), [y] * part.height, zorder=3, gid=gid, **kwargs
                )
                groups.append(
                    _Group(
                        gid,
                        [
                            f"{patient}: " + _title({**r, "series": "headline"})
                            for r in part.iter_rows(named=True)
                        ],
                    )
                )
    ax.set_yticks(range(len(patients)), [str(p) for p in patients], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(
        "study day (day 0 = first infusion); | = dose; ● quantified, ○ < LoQ, · not detected, × failed",
        fontsize=8,
    )
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return Chart(key, _render(fig, key, groups), sum(len(g.titles) for g in groups), caption)


def palette(i: int) -> str:
    """The i-th colour of the cohort palette (cycles)."""
    return _PALETTE[i % len(_PALETTE)]
