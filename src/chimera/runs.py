"""Which raw assay files count: files grouped into runs, a re-export replacing its run's files.

The rule is the registry's [R] "Re-exports" (:mod:`chimera.registry`): :func:`supersession` is
the one place that decides it. Each file's summary (:class:`RunFile`) depends on its own rows
only, which never change once stored, so :func:`run_files` keeps the summaries it computed (or
was given: :func:`remember`, from :mod:`chimera.assay_index`) and summarises only files it has
not seen (a batch and its rebuild read every stored file).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache

import polars as pl

from schemas.vocab import Method

LAYOUT_COLUMNS: dict[Method, tuple[str, ...]] = {
    Method.STR: ("sample_id", "marker"),
    Method.QPCR: ("well", "sample_id", "target"),
    Method.DDPCR: ("well", "sample_id", "target"),
}
"""What a file's layout is: its set of these rows (a re-export keeps them, another plate not)."""
POSITION_COLUMN = {Method.STR: "sample_id", Method.QPCR: "well", Method.DDPCR: "well"}
"""Where a file holds a measurement: the well (PCR) or the sample file (STR)."""
SAME_RUN_OVERLAP = 0.5
"""Two files with one header run id are one run when they share this share of positions."""

SUPERSESSION_SCHEMA = {
    "source_sha256": pl.String(),
    "source_file": pl.String(),
    "ingested_at": pl.Datetime("us", "UTC"),
    "replaced_by": pl.String(),
    "replaced_by_file": pl.String(),
    "link": pl.String(),
    "reason": pl.String(),
}


@dataclass
class RunFile:
    """One raw file as :func:`supersession` sees it: its run id, layout and positions."""

    sha256: str
    name: str
    ingested_at: datetime
    run_id: str | None
    layout: int
    positions: frozenset[str]
    link: str | None = None

    @property
    def order(self) -> tuple[datetime, str, str]:
        """Where the file comes in ingest order (time, then name, then hash)."""
        return (self.ingested_at, self.name, self.sha256)


def _same_run(new: RunFile, old: RunFile, method: Method) -> str | None:
    """Why ``new`` holds the same run as ``old`` (the module docstring's rule), else None."""
    if new.run_id is not None and old.run_id is not None:
        if new.run_id != old.run_id:
            return None
        shared = len(new.positions & old.positions)
        smaller = min(len(new.positions), len(old.positions))
        if smaller and shared >= SAME_RUN_OVERLAP * smaller:
            return f"same run id in the file header ({new.run_id})"
        return None
    if new.layout == old.layout:
        what = "samples and markers" if method == Method.STR else "wells, samples and targets"
        return f"the same {what}"
    return None


_SUMMARIES_KEPT = 200_000
_summaries: dict[tuple[Method, str, int, datetime], RunFile] = {}
"""File summaries by (method, SHA-256, row count, latest ingest time): a stored file's rows."""


def run_files(observations: pl.DataFrame, method: Method) -> list[RunFile]:
    """One :class:`RunFile` per raw file in ``observations``, in ingest order.

    Files summarised before (same rows: same hash, row count and ingest time; or named by
    :func:`remember`) are not summarised again; every call returns new objects (a
    :class:`RunBook` sets their links).
    """
    files = (
        observations.group_by("source_sha256")
        .agg(pl.len().alias("n_rows"), pl.col("source_file").first(), pl.col("ingested_at").max())
        .sort("ingested_at", "source_file", "source_sha256")
    )
    keys = [(method, sha, n, at) for sha, n, _, at in files.iter_rows()]
    if len(_summaries) > _SUMMARIES_KEPT:
        _summaries.clear()
    new = [key[1] for key in keys if key not in _summaries]
    if new:
        fresh = (
            observations
            if len(new) == len(keys)
            else observations.filter(pl.col("source_sha256").is_in(new))
        )
        remember(summary_frame(fresh, method), method)
    return [replace(_summaries[key]) for key in keys]


def remember(summaries: pl.DataFrame, method: Method) -> list[RunFile]:
    """Keep the files of a :func:`summary_frame` (their rows need not be summarised again).

    Returns their :class:`RunFile` s in ingest order, new objects.
    """
    ordered = (
        summaries
        if summaries.height < 2
        else summaries.sort("ingested_at", "source_file", "source_sha256")
    )
    files = []
    for r in ordered.iter_rows(named=True):
        file = RunFile(
            sha256=r["source_sha256"],
            name=r["source_file"],
            ingested_at=r["ingested_at"],
            run_id=r["run_id"],
            layout=r["layout"],
            positions=frozenset(r["positions"]),
        )
        _summaries[(method, file.sha256, r["n_rows"], file.ingested_at)] = file
        files.append(replace(file))
    return files


def summary_frame(
    observations: pl.DataFrame, method: Method, *, by: Sequence[str] = ()
) -> pl.DataFrame:
    """Per raw file in ``observations``: what its :class:`RunFile` holds, and its row count.

    ``by``: more columns to keep, each with one value per file.
    """
    return observations.group_by("source_sha256", *by).agg(*_summary(observations, method))


def file_summary(rows: pl.DataFrame, method: Method) -> pl.DataFrame:
    """:func:`summary_frame` of the rows of one raw file (one pass, no grouping)."""
    return rows.select(_file_summary(method, has_run_id="run_id" in rows.columns))


@cache
def _file_summary(method: Method, *, has_run_id: bool) -> tuple[pl.Expr, ...]:
    """:func:`file_summary`'s expressions, built once (building them costs more than a file)."""
    *columns, positions = _summary_of(method, has_run_id=has_run_id)
    return (pl.col("source_sha256").first(), *columns, positions.implode())


def _summary(observations: pl.DataFrame, method: Method) -> tuple[pl.Expr, ...]:
    """The per-file aggregates of :func:`summary_frame`, the file's positions last."""
    return _summary_of(method, has_run_id="run_id" in observations.columns)


@cache
def _summary_of(method: Method, *, has_run_id: bool) -> tuple[pl.Expr, ...]:
    """:func:`_summary` of frames with (or without) a ``run_id`` column, built once."""
    layout = [pl.col(c).cast(pl.String).fill_null("") for c in LAYOUT_COLUMNS[method]]
    run_id = pl.col("run_id").drop_nulls().first() if has_run_id else pl.lit(None, dtype=pl.String)
    return (
        pl.col("source_file").first(),
        pl.col("ingested_at").max(),
        pl.len().alias("n_rows"),
        run_id.alias("run_id"),
        pl.concat_str(layout, separator="\x1f")
        .unique()
        .sort()
        .str.join("\x1e")
        .hash(0)
        .alias("layout"),
        pl.col(POSITION_COLUMN[method]).drop_nulls().unique().alias("positions"),
    )


class RunBook:
    """The raw files of one method grouped into runs, in ingest order (module docstring rule).

    Files are added one by one; a file that comes after every file added so far is placed in
    one step (what a batch does with each accepted file), any other regroups every file.
    """

    def __init__(self, method: Method, files: list[RunFile] | None = None) -> None:
        self.method = method
        self._reset(files or [])

    def _reset(self, files: list[RunFile]) -> None:
        self.runs: list[list[RunFile]] = []
        self.current: set[str] = set()
        """The current (latest) file of every run, by SHA-256."""
        self._latest: tuple[datetime, str, str] | None = None
        self._run_of: dict[str, int] = {}
        self._by_run_id: dict[str, list[int]] = {}
        self._by_layout: dict[int, list[int]] = {}
        for file in files:
            self._place(file)

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._run_of

    def add(self, file: RunFile) -> list[RunFile]:
        """Add one file; the members of the run it belongs to, the run's current file last."""
        latest = self._latest
        if latest is not None and file.order < latest:
            files = sorted([*(f for run in self.runs for f in run), file], key=lambda f: f.order)
            for member in files:
                member.link = None
            self._reset(files)
        else:
            self._place(file)
        return self.runs[self._run_of[file.sha256]]

    def _place(self, file: RunFile) -> None:
        candidates = self._by_run_id.get(file.run_id or "", []) + self._by_layout.get(
            file.layout, []
        )
        joined = None
        for index in dict.fromkeys(candidates):
            ids = {m.run_id for m in self.runs[index] if m.run_id is not None}
            if file.run_id is not None and ids - {file.run_id}:
                continue  # the run's header id is another run's
            members = self.runs[index]
            link = next((w for w in (_same_run(file, m, self.method) for m in members) if w), None)
            if link is not None:
                file.link, joined = link, index
                break
        if joined is None:
            joined = len(self.runs)
            self.runs.append([])
        else:
            self.current.discard(self.runs[joined][-1].sha256)
        self.runs[joined].append(file)
        self.current.add(file.sha256)
        self._latest = max(file.order, self._latest or file.order)
        self._run_of[file.sha256] = joined
        if file.run_id is not None:
            self._by_run_id.setdefault(file.run_id, []).append(joined)
        self._by_layout.setdefault(file.layout, []).append(joined)


def supersession(observations: pl.DataFrame, method: Method) -> pl.DataFrame:
    """One row per raw file of ``method``: the later file of its run that replaces it, and why.

    ``replaced_by``/``replaced_by_file`` name the run's current (latest) file, null for a file
    that is current; ``link`` says why a file joined an earlier file's run (null for the first
    of a run); ``reason`` is the plain-language note of a replaced file. Rules: module docstring.
    """
    if observations.height == 0:
        return pl.DataFrame(schema=SUPERSESSION_SCHEMA)
    rows = []
    for members in RunBook(method, run_files(observations, method)).runs:
        current = members[-1]
        for file in members:
            replaced = file is not current
            rows.append(
                {
                    "source_sha256": file.sha256,
                    "source_file": file.name,
                    "ingested_at": file.ingested_at,
                    "replaced_by": current.sha256 if replaced else None,
                    "replaced_by_file": current.name if replaced else None,
                    "link": file.link,
                    "reason": (
                        f"re-export: replaced by {current.name} ({current.link or file.link})"
                        if replaced
                        else None
                    ),
                }
            )
    return pl.DataFrame(rows, schema=SUPERSESSION_SCHEMA)


def split_current(observations: pl.DataFrame, method: Method) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the rows of the files no re-export replaced, the :func:`supersession` table)."""
    table = supersession(observations, method)
    replaced = table.filter(pl.col("replaced_by").is_not_null())["source_sha256"]
    return observations.filter(~pl.col("source_sha256").is_in(replaced.implode())), table
