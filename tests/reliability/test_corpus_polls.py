"""Bad content from the generated corpus: one clear fate per file, and no poll ever fails.

``test_every_damaged_file_gets_its_fate`` drops the whole corpus at once; the property test
drops random mixes under hostile names and checks the run-level invariants.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
from corpus import WAITING, corpus, damaged_entries, valid_entries
from flow_builders import SENTINEL, sha
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_builders import make_home, poll, put, trial_files

from chimera import ingest as ingest_module
from chimera import source_file
from chimera.filing import display_name
from chimera.maintenance import verify_warehouse
from schemas.vocab import FileStatus

CORPUS = corpus()
ASSAYS = {"references", "d01", "d02"}
"""Exports that wait when their manifest or references are not in the same drop."""
NAMES = [
    "plate.txt",
    "Plate.TXT",
    "-leading-dash.csv",
    "résumé.csv",
    "résumé.csv",
    "with space (1).csv",
    "tab\tin name.txt",
    "n" * 230 + ".txt",
]
FOLDERS = ["", "sub/", "sub/deeper/", "other/"]
FUZZ_EXAMPLES = 25
"""Random polls per run (each ~1 s); the corpus test covers every kind every run."""


def test_every_damaged_file_gets_its_fate(tmp_path: Path) -> None:
    """The whole corpus in one poll: each file its allowed fate and reason, the trial accepted."""
    home = make_home(tmp_path)
    put(home.inbox, {f"{kind}.dat": entry.data for kind, entry in CORPUS.items()})

    result = poll(home)

    assert result.failure is None
    assert result.errors == ()
    fates = {o.file_name.removesuffix(".dat"): o for o in result.outcomes}
    assert set(fates) == set(CORPUS)
    for kind, entry in CORPUS.items():
        outcome = fates[kind]
        assert outcome.status in entry.fates, (kind, outcome.status, outcome.reason)
        if entry.reason_code is not None:
            assert outcome.reason_code == entry.reason_code, (kind, outcome.reason)
        if outcome.status is FileStatus.QUARANTINED:
            assert outcome.reason
            assert Path(f"{outcome.destination}.problems.txt").is_file()
    assert verify_warehouse(home).ok


@st.composite
def drops(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A random mix of corpus files (repeats allowed) under random hostile names."""
    kinds = draw(st.lists(st.sampled_from(sorted(CORPUS)), min_size=1, max_size=8))
    placed: dict[str, str] = {}
    for kind in kinds:
        path = draw(st.sampled_from(FOLDERS)) + draw(st.sampled_from(NAMES))
        while path in placed:
            path = "again/" + path
        placed[path] = kind
    return sorted(placed.items())


def _allowed(kind: str, repeated: bool) -> frozenset[FileStatus]:
    fates = CORPUS[kind].fates
    if kind in ASSAYS and FileStatus.ACCEPTED in fates:
        fates = fates | WAITING
    if repeated:
        fates = fates | {FileStatus.DUPLICATE}
    return fates


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(dropped=drops())
def test_a_poll_over_any_mix_never_fails_and_gives_each_file_one_fate(
    dropped: list[tuple[str, str]],
) -> None:
    """Property: no exception, every file exactly one fate, each where its fate says, intact."""
    with tempfile.TemporaryDirectory() as tmp:
        home = make_home(Path(tmp))
        put(home.inbox, {path: CORPUS[kind].data for path, kind in dropped})
        contents = Counter(sha(CORPUS[kind].data) for _, kind in dropped)

        result = poll(home)

        assert result.failure is None
        assert result.errors == ()
        seen = Counter((o.file_name, o.sha256) for o in result.outcomes)
        expected = Counter(
            (display_name(Path(path).name), sha(CORPUS[kind].data)) for path, kind in dropped
        )
        assert seen == expected
        by_sha = {sha(CORPUS[kind].data): kind for _, kind in dropped}
        for outcome in result.outcomes:
            kind = by_sha[outcome.sha256]
            assert outcome.status in _allowed(kind, contents[outcome.sha256] > 1), (kind, outcome)
        where = {
            FileStatus.ACCEPTED: home.archive,
            FileStatus.DUPLICATE: home.archive,
            FileStatus.QUARANTINED: home.quarantine,
        }
        for outcome in result.outcomes:
            if outcome.status is FileStatus.WAITING:
                assert outcome.destination is None
                continue
            assert outcome.destination is not None
            assert outcome.destination.is_relative_to(where[outcome.status])
            assert sha(outcome.destination.read_bytes()) == outcome.sha256
        left = Counter(sha(p.read_bytes()) for p in home.inbox.rglob("*") if p.is_file())
        assert left == Counter(o.sha256 for o in result.outcomes if o.status is FileStatus.WAITING)
        assert verify_warehouse(home).ok


def test_the_corpus_covers_every_kind_of_damage() -> None:
    """The corpus README counts: valid and damaged kinds (README "Reliability" quotes these)."""
    assert len(valid_entries()) == 5
    assert len(damaged_entries()) == 18


def test_a_crashing_detector_or_parser_never_stops_the_other_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (not a refusal) while recognising one file quarantines it as unreadable; a bug
    while ingesting another leaves it in the inbox; the rest of the poll is accepted."""
    settings = make_home(tmp_path)
    put(settings.inbox, trial_files() | {"odd.txt": b"odd\n", "crash.csv": b"x,y\n1,2\n"})
    detect = source_file.detect

    def flaky_detect(data: bytes, *, file_name: str) -> object:
        if file_name == "odd.txt":
            raise ValueError(SENTINEL)
        return detect(data, file_name=file_name)

    ingest = ingest_module._ingest_content

    def flaky_ingest(source: source_file.SourceFile, run: object) -> object:
        if source.name == "crash.csv":
            raise KeyError(SENTINEL)
        return ingest(source, run)  # type: ignore[arg-type]

    monkeypatch.setattr(source_file, "detect", flaky_detect)
    monkeypatch.setattr(ingest_module, "_ingest_content", flaky_ingest)
    result = poll(settings)
    fates = {o.file_name: o for o in result.outcomes}
    assert fates.pop("odd.txt").reason == (
        "unreadable: odd.txt: the content could not be decoded or recognised (ValueError)"
    )
    assert {o.status for o in fates.values()} == {FileStatus.ACCEPTED}
    assert set(fates) == set(trial_files())
    assert result.errors == ("crash.csv",)
    assert (settings.inbox / "crash.csv").is_file()
