"""What a batch knows of every stored assay file, kept between runs (no rows, only facts).

A batch (:mod:`chimera.batch`) needs three facts of each stored assay file: which sample ids it
holds (what is measured: :func:`chimera.prerequisites.missing_prerequisites`), which targets
each sample has wells of there (PCR: which patients a new plate touches,
:class:`chimera.plate_targets.PlateTargets`) and its run summary (which file a re-export
replaces: :func:`chimera.runs.summary_frame`). Each depends on the file's own rows only, and a
raw file is written once, so the facts are kept per file like a table snapshot
(:meth:`chimera.warehouse.Warehouse.read_derived`, ``.cache/<table>.<view>``): a batch derives
the facts of the files added since the copy was written and nothing else, so its start costs
the same in a full warehouse as in an empty one, apart from loading the facts. A missing,
stale or damaged copy only costs the time to derive the facts again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import polars as pl

from chimera.runs import summary_frame
from chimera.table_cache import FILE_COLUMN, Derive
from chimera.warehouse import OBSERVATIONS, Warehouse
from schemas.vocab import Method

FORMAT = 1
"""Raised whenever what a view keeps changes (an older copy is then never read)."""
WELL_COLUMNS: dict[Method, tuple[str, ...]] = {
    Method.STR: ("source_sha256", "sample_id"),
    Method.QPCR: ("source_sha256", "sample_id", "target"),
    Method.DDPCR: ("source_sha256", "sample_id", "target", "channel"),
}
"""The columns of a method's rows the batch indexes (:class:`chimera.batch.Observed`)."""


def _file_column(rows: pl.DataFrame) -> list[str]:
    """:data:`~chimera.table_cache.FILE_COLUMN` when ``rows`` have it (a view keeps it)."""
    return [FILE_COLUMN] if FILE_COLUMN in rows.columns else []


def wells(rows: pl.DataFrame, method: Method) -> pl.DataFrame:
    """Distinct :data:`WELL_COLUMNS` rows of one method's assay rows (absent columns null)."""
    schema = OBSERVATIONS[method].schema
    columns = [
        pl.col(c) if c in rows.columns else pl.lit(None, dtype=schema[c]).alias(c)
        for c in WELL_COLUMNS[method]
    ]
    return rows.select(*columns, *_file_column(rows)).unique(maintain_order=True)


def summaries(rows: pl.DataFrame, method: Method) -> pl.DataFrame:
    """:func:`chimera.runs.summary_frame` of one method's assay rows (per file)."""
    return summary_frame(rows, method, by=_file_column(rows))


_VIEWS: dict[Method, dict[str, Derive]] = {
    method: {
        f"wells-v{FORMAT}": partial(wells, method=method),
        f"runs-v{FORMAT}-polars{pl.__version__.replace('.', '_')}": partial(
            summaries, method=method
        ),
    }
    for method in OBSERVATIONS
}
"""Each method's two views (one derive function each, made once: views compare by it). The
run summary's layout is a polars hash, so its copy is named after the polars version too."""


@dataclass(frozen=True)
class StoredFiles:
    """The facts of every stored file of one assay method."""

    wells: pl.DataFrame
    """:func:`wells` of every file."""
    summaries: pl.DataFrame
    """:func:`chimera.runs.summary_frame` of every file (one row per file)."""


def stored_files(warehouse: Warehouse, method: Method) -> StoredFiles:
    """The facts of every stored file of ``method`` (derived only for files not seen before)."""
    table = OBSERVATIONS[method]
    found = [warehouse.read_derived(table, name, derive) for name, derive in _VIEWS[method].items()]
    return StoredFiles(*found)
