from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import pytest

from chimera.detect import detect
from chimera.errors import (
    DirectIdentifierError,
    Problem,
    TruncatedExportError,
    UnreadableFileError,
    ValidationFailedError,
)
from chimera.ingest import ingest_source
from chimera.parsers.common import ParsedExport
from chimera.parsers.manifest import parse_infusion_log, parse_manifest, parse_timestamp
from chimera.parsers.specimen import normalise_specimen
from chimera.registry import read_ledger
from chimera.settings import Settings
from chimera.warehouse import Warehouse
from schemas.vocab import FileStatus, Role, Specimen

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


def _manifest(text: str, *, now: datetime | None = None) -> ParsedExport:
    return parse_manifest(detect(text.encode(), file_name="m.csv"), now=now)


def _problems(text: str, *, now: datetime | None = None) -> list[Problem]:
    with pytest.raises(ValidationFailedError) as info:
        _manifest(text, now=now)
    return info.value.problems


THREE_GENOME = (
    "sample_id,patient_id,role,collected_at,specimen,nk_per_ul,purity_pct,cell_bank,product_lot\n"
    "LOT2-REF,LOT2,donor_reference,,,,,MCB-1,LOT2\n"
    "P07-GL,P07,Recipient germline,2024-12-01,buccal swab,,,,\n"
    "P07-HSCT,P07,HSCT donor,2024-12-01,,,,,\n"
    "P07-BL,P07,baseline,2025-01-05,Peripheral blood,,,,\n"
    "P07-D8-NK,P07,post_dose,2025-01-13,NK (CD56+),210,96.5,,\n"
    "P07-D8-T,P07,post_dose,2025-01-13,PB CD3+,,92,,\n"
    "P07-D8,P07,post_dose,2025-01-13,whole blood,,,,\n"
    "P07-BM,P07,post_dose,2025-02-10,bone marrow,,,,\n"
)


def test_three_genome_roles_sorted_fractions_and_cell_bank() -> None:
    """recipient_germline / hsct_donor roles, NK counts, purity and the cell bank are read."""
    parsed = _manifest(THREE_GENOME)
    frame = parsed.frame
    assert frame["role"].to_list() == [
        Role.DONOR_REFERENCE,
        Role.RECIPIENT_GERMLINE,
        Role.HSCT_DONOR,
        Role.RECIPIENT_BASELINE,
        Role.POST_DOSE,
        Role.POST_DOSE,
        Role.POST_DOSE,
        Role.POST_DOSE,
    ]
    assert frame["specimen"].to_list() == [
        None,
        "buccal swab",
        None,
        Specimen.PB,
        Specimen.PB_CD56,
        Specimen.PB_CD3,
        Specimen.PB,
        Specimen.BM,
    ]
    assert frame["specimen_raw"][4] == "NK (CD56+)"
    assert frame["nk_per_ul"][4] == 210.0
    assert frame["purity_pct"].to_list()[4:6] == [96.5, 92.0]
    assert frame["cell_bank"][0] == "MCB-1"
    vocabulary = "PB, PB CD56+, PB CD3+, PB CD33+, BM"
    assert parsed.notes == (
        f"specimen 'buccal swab' (1 row(s)) is not one of {vocabulary}; kept as written",
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("whole blood", Specimen.PB),
        ("PBMC", Specimen.PB),
        ("Peripheral blood", Specimen.PB),
        ("CD56+ sorted PB", Specimen.PB_CD56),
        ("PB CD56+", Specimen.PB_CD56),
        ("NK (CD56+)", Specimen.PB_CD56),
        ("CD3+ T cells", Specimen.PB_CD3),
        ("PB CD33+", Specimen.PB_CD33),
        ("Bone marrow", Specimen.BM),
        ("BM", Specimen.BM),
    ],
)
def test_specimen_spellings_normalise(raw: str, expected: Specimen) -> None:
    """The lab's spellings of blood, sorted fractions and marrow map to the vocabulary."""
    assert normalise_specimen(raw) == (expected.value, True)


@pytest.mark.parametrize("raw", ["CD56- PB", "CD3+CD56+", "BM CD56+", "saliva", "PB CD19+"])
def test_other_specimens_are_kept_as_written(raw: str) -> None:
    """Negative, double, marrow-sorted or unknown fractions are never guessed."""
    assert normalise_specimen(raw) == (raw, False)


@pytest.mark.parametrize("purity", ["0", "-5", "100.5"])
def test_purity_outside_0_to_100_is_refused(purity: str) -> None:
    """Purity is a percentage of a sorted fraction: above 0 and at most 100."""
    text = THREE_GENOME.replace(",96.5,", f",{purity},")
    assert any(p.column == "purity_pct" and p.row == 6 for p in _problems(text))


def test_purity_written_as_fractions_is_noted() -> None:
    """Purities all at most 1 are most likely fractions: the note says to write percent."""
    text = THREE_GENOME.replace(",96.5,", ",0.965,").replace(",92,", ",0.92,")
    assert any("fractions" in note for note in _manifest(text).notes)


@pytest.mark.parametrize(
    "column", ["DOB", "Patient Name", "MRN", "date_of_birth", "E-mail", "Phone", "Address"]
)
def test_direct_identifier_columns_are_refused(column: str) -> None:
    """A column of names, birth dates, record numbers or contacts refuses the whole file."""
    lines = MANIFEST.splitlines()
    text = "\n".join(
        [f"{lines[0]},{column}"] + [f"{line},secret-{i}" for i, line in enumerate(lines[1:])]
    )
    with pytest.raises(DirectIdentifierError) as info:
        _manifest(text + "\n")
    message = str(info.value)
    assert f"remove column '{column}': Chimera stores only pseudonymised ids" in message
    assert "secret" not in message
    assert info.value.reason == "direct_identifier"


def test_infusion_log_with_a_name_column_is_refused() -> None:
    """Infusion logs are checked for direct identifiers too."""
    text = "patient_id,dose_number,infused_at,first name\nP01,1,2025-03-03,Ann\n"
    with pytest.raises(DirectIdentifierError, match="'first name'"):
        parse_infusion_log(detect(text.encode(), file_name="log.csv"))


def test_sample_name_is_not_a_personal_name() -> None:
    """'Sample Name' is an alias of sample_id, not a direct identifier."""
    frame = _manifest(MANIFEST.replace("sample_id,", "Sample Name,", 1)).frame
    assert frame.height == 3


def test_dates_in_the_future_are_refused() -> None:
    """A collection after the ingest's clock (beyond a day's time-zone slack) is impossible."""
    now = datetime(2025, 3, 2, 12, 0, tzinfo=UTC)
    problems = _problems(MANIFEST, now=now)
    assert [(p.rule, p.row, p.value) for p in problems] == [
        ("timestamp_in_future", 4, "2025-03-04 09:30")
    ]
    assert _manifest(MANIFEST, now=datetime(2025, 3, 3, 10, 0, tzinfo=UTC)).frame.height == 3


def test_post_dose_before_baseline_is_refused() -> None:
    """A post-dose sample collected before its patient's baseline is an impossible date."""
    text = MANIFEST.replace("2025-03-04 09:30", "2025-02-20")
    assert any("not before baseline" in p.message for p in _problems(text))


def test_dates_before_2000_are_refused() -> None:
    """A collection in 1925 is a typo for 2025."""
    text = MANIFEST.replace("2025-03-04 09:30", "1925-03-04")
    assert any(p.column == "collected_at" and p.row == 4 for p in _problems(text))


@pytest.mark.parametrize(("value", "rule"), [("abc", "not_a_number"), ("-5", "greater_than")])
def test_bad_counts_are_refused(value: str, rule: str) -> None:
    """A count that is text or negative is refused with its row, not silently dropped."""
    text = MANIFEST.replace(",2800\n", f",{value}\n")
    assert any(p.row == 4 and p.rule.startswith(rule) for p in _problems(text))


def test_nan_count_is_missing() -> None:
    """NaN (as pandas writes a missing value) is an empty cell."""
    assert _manifest(MANIFEST.replace(",2800\n", ",NaN\n")).frame["wbc_per_ul"][2] is None


def test_duplicate_sample_ids_are_refused() -> None:
    """One manifest naming the same sample twice is refused with both rows' rule."""
    text = MANIFEST + "P01-D1,P01,post_dose,2025-03-05,peripheral blood,2700\n"
    assert any(p.rule == "field_uniqueness" for p in _problems(text))


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ("P01,1,2025-03-06\nP01,2,2025-03-03\n", "doses in time order"),
        ("P01,2.5,2025-03-06\n", "whole number"),
        ("P01,1e12,2025-03-06\n", "whole number"),
        ("P01,1,2031-03-06\n", "in the future"),
    ],
)
def test_impossible_doses_are_refused(rows: str, needle: str) -> None:
    """Doses out of time order, fractional or huge dose numbers, future infusions: refused."""
    text = "patient_id,dose_number,infused_at\n" + rows
    now = datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(ValidationFailedError) as info:
        parse_infusion_log(detect(text.encode(), file_name="log.csv"), now=now)
    assert any(needle in p.message for p in info.value.problems)


def test_manifest_cut_mid_line_is_truncated() -> None:
    """A manifest whose last line lost its end (and part of itself) is truncated."""
    with pytest.raises(TruncatedExportError, match="truncated"):
        _manifest(MANIFEST[:-3])
    assert _manifest("\ufeff" + MANIFEST[:-1]).frame.height == 3  # Excel CSV UTF-8: no final end


def test_specimens_kept_as_written_are_noted_in_the_ledger(tmp_path: Path) -> None:
    """The ingest puts the parser's notes in the ledger reason of the accepted manifest."""
    settings = Settings().with_home(tmp_path / "data")
    path = tmp_path / "manifest.csv"
    path.write_text(THREE_GENOME)
    outcome = ingest_source(
        path, settings=settings, now=datetime(2025, 3, 1, tzinfo=UTC), move=False
    )
    assert outcome.status is FileStatus.ACCEPTED
    ledger = read_ledger(Warehouse(settings.warehouse))
    assert "specimen 'buccal swab' (1 row(s))" in ledger["reason"][0]
