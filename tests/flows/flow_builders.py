"""Small valid inputs built in code: a manifest, an infusion log, GeneMapper sizing tables."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

LOT = "LOT-A"
PATIENT = "P01"
REFERENCE = "REF-LOTA"
BASELINE = "BL-P01"
FIRST_DOSE = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)

# marker -> (iNK product alleles, patient alleles, size of the first allele); none shared, so
# every locus is informative. No two alleles sit one repeat apart: these tables carry no
# stutter peaks, so STR stutter correction (on by default) must have nothing to subtract.
LOCI: dict[str, tuple[tuple[str, str], tuple[str, str], float]] = {
    "D3S1358": (("13", "15"), ("17", "19"), 120.0),
    "TH01": (("6", "8"), ("9.3", "11"), 162.0),
    "D21S11": (("28", "30"), ("32.2", "34"), 215.0),
    "D18S51": (("12", "14"), ("16", "19"), 290.0),
    "Penta E": (("7", "9"), ("12", "14"), 387.0),
    "vWA": (("14", "16"), ("18", "20"), 160.0),
}


@contextmanager
def prefect_unconfigured() -> Iterator[None]:
    """No ``PREFECT_API_URL`` in Prefect's settings (the session harness may have set one)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: PLC0415

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post_dose_id(n: int) -> str:
    """Sample id of the n-th post-dose sample."""
    return f"{PATIENT}-D{n:02d}"


def manifest_csv(post_dose: Iterable[int] = range(1, 4)) -> bytes:
    """Manifest: product reference, patient baseline and post-dose samples ``post_dose``."""
    rows = [
        "sample_id,patient_id,role,collected_at,specimen,wbc_per_ul,product_lot",
        f"{REFERENCE},{LOT},donor_reference,2025-01-05T08:00:00Z,product,,{LOT}",
        f"{BASELINE},{PATIENT},recipient_baseline,2025-01-08T08:00:00Z,PB,5200,{LOT}",
    ]
    for n in post_dose:
        at = FIRST_DOSE + timedelta(days=n)
        rows.append(
            f"{post_dose_id(n)},{PATIENT},post_dose,{at:%Y-%m-%dT%H:%M:%SZ},PB,{4800 + n},{LOT}"
        )
    return ("\n".join(rows) + "\n").encode()


def infusion_csv() -> bytes:
    """Infusion log: one dose of the lot to the patient."""
    return (
        "patient_id,dose_number,infused_at,cells,product_lot\n"
        f"{PATIENT},1,{FIRST_DOSE:%Y-%m-%dT%H:%M:%SZ},1.0e9,{LOT}\n"
    ).encode()


def _peaks(
    sample_id: str, pct_ink: float, scale: float
) -> list[tuple[str, str, str, float, float]]:
    """(sample, marker, allele, size, area) of a mixture with ``pct_ink`` % product DNA."""
    out = []
    for marker, (ink, patient, size) in LOCI.items():
        for i, allele in enumerate(ink):
            out.append((sample_id, marker, allele, size + 4 * i, 10000 * scale * pct_ink / 100))
        for i, allele in enumerate(patient):
            out.append(
                (
                    sample_id,
                    marker,
                    allele,
                    size + 12 + 4 * i,
                    10000 * scale * (100 - pct_ink) / 100,
                )
            )
    return [p for p in out if p[4] > 0]


def genemapper_table(samples: Sequence[tuple[str, float]], *, scale: float = 1.0) -> bytes:
    """A GeneMapper Sizing Table (CRLF, trailing TAB) for ``(sample_id, pct_ink)`` pairs."""
    header = "Dye/Sample Peak\tSample File Name\tMarker\tAllele\tSize\tHeight\tArea\tData Point\t"
    lines = [header]
    for sample_id, pct in samples:
        for n, (sid, marker, allele, size, area) in enumerate(
            _peaks(sample_id, pct, scale), start=1
        ):
            height = round(area / 6)
            lines.append(
                f'"B,{n}"\t{sid}\t{marker}\t{allele}\t{size:.2f}\t{height}\t{round(area)}\t{1000 + n}\t'
            )
    return ("\r\n".join(lines) + "\r\n").encode()


def references_table() -> bytes:
    """The product reference (100 % iNK) and the patient baseline (0 % iNK)."""
    return genemapper_table([(REFERENCE, 100.0), (BASELINE, 0.0)])


def post_dose_table(n: int, pct_ink: float, *, scale: float = 1.0) -> bytes:
    """One post-dose sample's sizing table."""
    return genemapper_table([(post_dose_id(n), pct_ink)], scale=scale)


def drop(inbox: Path, name: str, data: bytes, *, age_seconds: float = 60.0) -> Path:
    """Write a file into the inbox, already settled (mtime ``age_seconds`` in the past)."""
    path = inbox / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    past = time.time() - age_seconds
    os.utime(path, (past, past))
    return path


def sha(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def write_config(home: Path, text: str) -> None:
    """Write ``<home>/chimera.toml``."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "chimera.toml").write_text(text, encoding="utf-8")


def ledger(home: Path) -> pl.DataFrame:
    """Every ledger event under ``<home>/warehouse``."""
    files = sorted((home / "warehouse" / "ingest_log").rglob("*.parquet"))
    if not files:
        return pl.DataFrame(
            schema={"source_sha256": pl.String, "file_name": pl.String, "status": pl.String}
        )
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed").sort("logged_at")


def table(home: Path, name: str) -> pl.DataFrame:
    """A whole warehouse table (empty frame when absent)."""
    files = sorted((home / "warehouse" / name).rglob("*.parquet"))
    return (
        pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
        if files
        else pl.DataFrame()
    )


def archived(home: Path) -> dict[str, Path]:
    """SHA-256 -> archived file."""
    root = home / "archive"
    return {sha(p.read_bytes()): p for p in root.rglob("*") if p.is_file()} if root.is_dir() else {}


def quarantined(home: Path) -> dict[str, Path]:
    """SHA-256 -> quarantined export (reports excluded)."""
    root = home / "quarantine"
    if not root.is_dir():
        return {}
    return {
        sha(p.read_bytes()): p
        for p in root.iterdir()
        if p.is_file() and not p.name.endswith((".problems.txt", ".failures.parquet"))
    }


class FakeClock:
    """A clock the test moves: ``sleep`` advances it instead of waiting (deterministic settling)."""

    def __init__(self, start: datetime = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        """The poll's injected wait: the clock moves, nothing waits."""
        self.slept.append(seconds)
        self.advance(seconds)


SENTINEL = "SENTINEL-5f1c-CONTENT"
"""Planted in file contents (never in an id or a value) to prove contents never leave."""


def files_with_sentinel() -> dict[str, bytes]:
    """Files whose content, not their ids or values, carries :data:`SENTINEL`."""
    plate = genemapper_table([(post_dose_id(1), 12.0)])
    return {
        "letter.txt": f"Dear lab, {SENTINEL} attached.\n".encode(),
        "binary.dat": b"\x00\x01\xfe" + SENTINEL.encode() + b"\x8f\x90\x00",
        "cut.txt": plate + f'"B,99"\t{post_dose_id(1)}\tvWA\t{SENTINEL}'.encode(),
        "manifest_notes.csv": (
            b"sample_id,patient_id,role,collected_at,specimen,lab_note\n"
            + f"{post_dose_id(2)},{PATIENT},post_dose,2025-01-12T09:00:00Z,PB,{SENTINEL}\n".encode()
        ),
    }
