"""One Pandera pass over many registry files judges each file as validating it alone would."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chimera.errors import ValidationFailedError
from chimera.validation import validate_many
from schemas.base import polars_schema
from schemas.vocab import Role
from schemas.warehouse import Infusions, Samples

_DAY = datetime(2025, 3, 1, tzinfo=UTC)


def _samples(rows: list[tuple[str, str, Role, int]]) -> pl.DataFrame:
    """Samples rows (sample id, patient, role, day of March) with lineage."""
    base = dict.fromkeys(polars_schema(Samples)) | {
        "specimen": "PB",
        "source_sha256": "a" * 64,
        "pipeline_version": "test",
        "ingested_at": _DAY,
    }
    return pl.DataFrame(
        [
            base
            | {
                "sample_id": sid,
                "patient_id": patient,
                "role": role.value,
                "collected_at": _DAY.replace(day=day),
            }
            for sid, patient, role, day in rows
        ],
        schema=polars_schema(Samples),
    )


def _alone_breaks(frame: pl.DataFrame) -> bool:
    try:
        Samples.validate(frame, lazy=True)
    except Exception:  # noqa: BLE001 - any Pandera failure
        return True
    return False


_ROW = st.tuples(
    st.sampled_from(["S1", "S2", "S3", ""]),
    st.sampled_from(["P1", "P2"]),
    st.sampled_from([Role.RECIPIENT_BASELINE, Role.POST_DOSE]),
    st.integers(1, 9),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_ROW, min_size=1, max_size=4), min_size=2, max_size=4))
def test_a_batch_of_sample_files_fails_exactly_at_the_first_file_that_fails_alone(
    parts: list[list[tuple[str, str, Role, int]]],
) -> None:
    """Same sample ids and patients across files: never a reason to pass or fail a file."""
    frames = [_samples(rows) for rows in parts]
    names = [f"samples/{i}" for i in range(len(frames))]
    first_bad = next((i for i, f in enumerate(frames) if _alone_breaks(f)), None)
    if first_bad is None:
        checked = validate_many(frames, Samples, file_names=names)
        assert all(a.equals(b) for a, b in zip(checked, frames, strict=True))
    else:
        with pytest.raises(ValidationFailedError, match=rf"^samples/{first_bad}: "):
            validate_many(frames, Samples, file_names=names)


def test_files_that_only_break_the_contract_together_pass() -> None:
    """A re-issued manifest repeats sample ids; a later one's post-dose predates a baseline."""
    first = _samples([("S1", "P1", Role.RECIPIENT_BASELINE, 5)])
    again = _samples([("S1", "P1", Role.RECIPIENT_BASELINE, 5)])
    earlier = _samples([("S2", "P1", Role.POST_DOSE, 2)])
    assert _alone_breaks(pl.concat([first, again]))
    assert _alone_breaks(pl.concat([first, earlier]))
    validate_many([first, again, earlier], Samples, file_names=["a", "b", "c"])
    doses = pl.DataFrame(
        {
            "patient_id": ["P1"],
            "dose_number": [1],
            "infused_at": [_DAY],
            "cells": [5e8],
            "product_lot": ["L1"],
            "source_sha256": ["b" * 64],
            "pipeline_version": ["test"],
            "ingested_at": [_DAY],
        },
        schema=polars_schema(Infusions),
    )
    later = doses.with_columns(infused_at=pl.lit(_DAY.replace(day=2)))
    validate_many([doses, later], Infusions, file_names=["a", "b"])
    with pytest.raises(ValidationFailedError, match=r"^b: "):
        validate_many([doses, pl.concat([doses, later])], Infusions, file_names=["a", "b"])
