"""Bench baseline (a): read every file with polars and write it as Parquet (the practical limit).

    python bench/baseline_polars.py INBOX OUT

For each manifest, infusion log and export under INBOX: find the table's header line (after a
QuantStudio ``[Results]`` line, else the first line with at least three separators), read the
table with ``polars.read_csv`` and write it to ``OUT/<n>.parquet``. No validation, no
calculation: the least work that turns the same files into Parquet.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import polars as pl


def table_text(text: str) -> tuple[str, str]:
    """The table part of an export and its separator."""
    lines = text.splitlines()
    first = lines[0] if lines else ""
    separator = "\t" if first.count("\t") > first.count(",") or "[Results]" in text else ","
    start = next((i + 1 for i, line in enumerate(lines) if line.startswith("[Results]")), None)
    if start is None:
        start = next((i for i, line in enumerate(lines[:60]) if line.count(separator) >= 3), 0)
    body = lines[start:]
    end = next((i for i, line in enumerate(body) if line.startswith("[")), len(body))
    return "\n".join(body[:end]), separator


def main() -> None:
    """Convert every file under INBOX; print the file count and seconds."""
    start = time.perf_counter()
    inbox, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in inbox.rglob("*") if p.is_file() and "truth" not in p.parts)
    for n, path in enumerate(paths):
        text, separator = table_text(path.read_bytes().decode("utf-8-sig", errors="replace"))
        frame = pl.read_csv(
            io.StringIO(text),
            separator=separator,
            infer_schema_length=10_000,
            truncate_ragged_lines=True,
            ignore_errors=True,
        )
        frame.write_parquet(out / f"{n}.parquet")
    print(f"{len(paths)} files in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
