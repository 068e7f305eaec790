"""The ingest time on every raw row is the instant given, whichever way it was written."""

from __future__ import annotations

from datetime import UTC as UTC_ZONE
from datetime import datetime
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from chimera.ingest import _utc_literal
from schemas.base import UTC


@pytest.mark.parametrize(
    "when",
    [
        datetime(2025, 1, 1, 12, 3, 4, 567891),  # noqa: DTZ001 - a naive time counts as UTC
        datetime(2025, 1, 1, 12, 3, 4, 567891, tzinfo=UTC_ZONE),
        datetime(2025, 6, 1, tzinfo=ZoneInfo("UTC")),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC_ZONE),
    ],
)
def test_the_ingest_time_literal_equals_polars_own(when: datetime) -> None:
    ours, polars_own = pl.select(_utc_literal(when)), pl.select(pl.lit(when, dtype=UTC))
    assert ours.schema == polars_own.schema
    assert ours.item() == polars_own.item()
