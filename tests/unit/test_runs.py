"""Run-file summaries kept between calls are exactly what summarising the rows again gives."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from chimera import runs
from chimera.runs import RunBook, run_files
from schemas.vocab import Method

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def _str_rows(sha: str, name: str, run_id: str | None, samples: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source_sha256": [sha] * (2 * len(samples)),
            "source_file": [name] * (2 * len(samples)),
            "ingested_at": [T0] * (2 * len(samples)),
            "run_id": [run_id] * (2 * len(samples)),
            "sample_id": [s for s in samples for _ in range(2)],
            "marker": ["D8S1179", "TH01"] * len(samples),
        }
    )


def test_kept_summaries_equal_fresh_ones_and_are_new_objects() -> None:
    """A second call reuses the summaries, returns equal but separate objects (a RunBook links
    them), and a file whose rows changed is summarised again."""
    first = _str_rows("a" * 64, "run1.txt", "RUN1", ["S1", "S2"])
    again = _str_rows("b" * 64, "run1_again.txt", "RUN1", ["S1", "S2"])
    rows = pl.concat([first, again])
    runs._summaries.clear()
    fresh = run_files(rows, Method.STR)
    book = RunBook(Method.STR, fresh)
    assert [len(r) for r in book.runs] == [2]
    assert fresh[1].link is not None
    kept = run_files(rows, Method.STR)
    assert [f.sha256 for f in kept] == ["a" * 64, "b" * 64]
    assert all(f.link is None for f in kept)
    runs._summaries.clear()
    assert kept == run_files(rows, Method.STR)
    changed = pl.concat([first, _str_rows("b" * 64, "run1_again.txt", "RUN2", ["S3"])])
    summary = run_files(changed, Method.STR)[1]
    assert (summary.run_id, summary.positions) == ("RUN2", frozenset({"S3"}))
