from __future__ import annotations

import io
from datetime import UTC, datetime

import openpyxl
import pytest

from chimera.detect import detect
from chimera.errors import UnreadableFileError, ValidationFailedError
from chimera.parsers.manifest import parse_infusion_log, parse_manifest, parse_timestamp

MANIFEST = (
    "sample_id,patient_id,role,collected_at,specimen,wbc_per_ul\n"
    "LOT1-REF,LOT1,donor_reference,,product,\n"
    "P01-BL,P01,recipient_baseline,2025-03-01T08:00:00Z,peripheral blood,3200\n"
    "P01-D1,P01,post_dose,2025-03-04 09:30,peripheral blood,2800\n"
)


def test_manifest_csv_parses_to_contract() -> None:
    """Roles, UTC timestamps and optional counts come through typed."""
    frame = parse_manifest(detect(MANIFEST.encode(), file_name="m.csv")).frame
    assert frame.height == 3
    assert frame["role"].to_list() == ["donor_reference", "recipient_baseline", "post_dose"]
    assert frame["collected_at"][2] == datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    assert frame["wbc_per_ul"][1] == 3200.0
    assert frame["product_lot"].null_count() == 3


def test_manifest_xlsx_is_read_like_csv() -> None:
    """An Excel manifest gives the same rows as the CSV."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for line in MANIFEST.strip().split("\n"):
        sheet.append(line.split(","))
    buffer = io.BytesIO()
    book.save(buffer)
    frame = parse_manifest(detect(buffer.getvalue(), file_name="m.xlsx")).frame
    assert frame["sample_id"].to_list() == ["LOT1-REF", "P01-BL", "P01-D1"]


def test_manifest_problems_name_row_column_value_and_rule() -> None:
    """A bad role and a duplicate id are reported with spreadsheet row numbers."""
    bad = MANIFEST + "P01-D1,P01,postdose,2025-03-05,peripheral blood,\n"
    with pytest.raises(ValidationFailedError) as err:
        parse_manifest(detect(bad.encode(), file_name="m.csv"))
    rendered = [p.render() for p in err.value.problems]
    assert any("row 5" in r and "'role'" in r and "postdose" in r for r in rendered)
    assert any("row 4" in r and "unique" in r for r in rendered)


def test_missing_required_column_is_a_readable_problem() -> None:
    """A manifest without a role column is rejected with the column named."""
    with pytest.raises(ValidationFailedError) as err:
        parse_manifest(detect(b"sample_id,patient_id\nS1,P1\n", file_name="m.csv"))
    assert err.value.problems[0].column == "role"


def test_unreadable_timestamp_is_reported_with_its_row() -> None:
    """A date Chimera cannot read is named with its row."""
    with pytest.raises(ValidationFailedError) as err:
        parse_manifest(
            detect(MANIFEST.replace("2025-03-04 09:30", "4th of March").encode(), file_name="m.csv")
        )
    assert err.value.problems[0].row == 4
    assert err.value.problems[0].value == "4th of March"


def test_empty_file_is_unreadable() -> None:
    """An empty manifest is rejected, not crashed on."""
    with pytest.raises(UnreadableFileError):
        parse_manifest(detect(b"\n\n", file_name="m.csv"))


def test_infusion_log_semicolon_decimal_comma() -> None:
    """A ;-separated log with decimal commas reads cell counts correctly."""
    text = "patient_id;dose_number;infused_at;cells\nP01;1;2025-03-03T10:00:00+01:00;5,5E8\nP01;2;2025-03-06;1000000000\n"
    frame = parse_infusion_log(detect(text.encode(), file_name="log.csv")).frame
    assert frame["dose_number"].to_list() == [1, 2]
    assert frame["infused_at"][0] == datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    assert frame["cells"][1] == 1e9


def test_infusion_log_rejects_repeated_dose() -> None:
    """Dose 1 twice for one patient breaks the one-row-per-dose rule."""
    text = "patient_id,dose_number,infused_at\nP01,1,2025-03-03\nP01,1,2025-03-06\n"
    with pytest.raises(ValidationFailedError) as err:
        parse_infusion_log(detect(text.encode(), file_name="log.csv"))
    assert any("one row per patient dose" in p.message for p in err.value.problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-03T09:30:00Z", datetime(2025, 3, 3, 9, 30, tzinfo=UTC)),
        ("2025-03-03T11:30:00+02:00", datetime(2025, 3, 3, 9, 30, tzinfo=UTC)),
        ("2025-03-03 09:30", datetime(2025, 3, 3, 9, 30, tzinfo=UTC)),
        ("03.03.2025", datetime(2025, 3, 3, tzinfo=UTC)),
        ("", None),
        ("soon", None),
    ],
)
def test_parse_timestamp(text: str, expected: datetime | None) -> None:
    """Zones are honoured; naive values are UTC."""
    assert parse_timestamp(text) == expected
