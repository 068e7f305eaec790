"""Plates built from genome copy numbers for the qPCR and ddPCR tests.

qPCR: a target with N template copies crosses at Ct = C1 - log_E(N) (C1 = the assay's Ct of one
copy), so a sample's expected % iNK is the share of product genomes put into it, not a value
read back through the ΔΔCt formula. ddPCR: droplet counts are the expected Poisson counts
round(N·(1 - e^-λ)) of the copies put into a well (deterministic) unless a generator is given.
Only polars, numpy and the standard library: the regression tests also run on older code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

REFERENCE = "RPP30"
C1 = {REFERENCE: 35.0, "S04": 36.2, "S07": 37.1, "S09": 36.6, "H1": 36.4, "R1": 36.9}
"""Ct of one template copy per assay (each assay has its own threshold)."""
COPIES: dict[str, dict[str, int]] = {
    # copies per genome: RPP30 diploid; S04 heterozygous, S07 homozygous in the product
    "ink": {REFERENCE: 2, "S04": 1, "S07": 2, "S09": 1, "H1": 0, "R1": 0},
    "patient": {REFERENCE: 2, "S04": 0, "S07": 0, "S09": 1, "H1": 0, "R1": 1},
    "hsct": {REFERENCE: 2, "S04": 0, "S07": 1, "S09": 0, "H1": 1, "R1": 0},
}
JITTER = (-0.05, 0.0, 0.05)


def ct_for(target: str, copies: float, *, efficiency: float = 2.0) -> float | None:
    """Ct of ``copies`` templates: C1 - log_E(copies); None (Undetermined) without template."""
    if copies <= 0:
        return None
    return C1[target] - math.log(copies) / math.log(efficiency)


class QpcrPlate:
    """``QpcrWells`` rows of one plate; ``shift`` adds cycles per target (plate thresholds)."""

    def __init__(self, plate: str = "plate-1", *, shift: Mapping[str, float] | None = None) -> None:
        self.plate = plate
        self.shift = dict(shift or {})
        self.rows: list[dict[str, object]] = []

    def add(
        self,
        sample: str | None,
        target: str,
        cts: Sequence[float | None],
        *,
        task: str = "unknown",
        slope: float | None = None,
        omitted: bool = False,
    ) -> None:
        for ct in cts:
            n = len(self.rows)
            self.rows.append(
                {
                    "sample_id": sample,
                    "well": f"{'ABCDEFGHIJKLMNOP'[n // 24]}{n % 24 + 1}",
                    "target": target,
                    "task": task,
                    "reporter": "FAM",
                    "ct": None if ct is None else ct + self.shift.get(target, 0.0),
                    "omitted": omitted,
                    "quantity": None,
                    "slope": slope,
                    "intercept": None,
                    "r_squared": None,
                    "efficiency_pct": None,
                    "source_row": n + 2,
                    "source_sha256": self.plate,
                }
            )

    def dna(
        self,
        sample: str,
        mix: Mapping[str, float],
        *,
        genomes: float = 10_000.0,
        targets: Sequence[str] = (REFERENCE, "S04", "S07"),
        jitter: Sequence[float] = JITTER,
        task: str = "unknown",
    ) -> None:
        """Wells of a DNA sample holding ``genomes`` genomes mixed as ``mix`` (genome: share)."""
        for target in targets:
            copies = genomes * sum(share * COPIES[g][target] for g, share in mix.items())
            ct = ct_for(target, copies)
            self.add(sample, target, [None if ct is None else ct + j for j in jitter], task=task)

    def controls(self, *, ntc_ct: float | None = None, targets: Sequence[str] = ()) -> None:
        """The controls labs put on every plate: calibrator, the baseline, two NTC wells."""
        wanted = targets or (REFERENCE, "S04", "S07")
        self.dna("INK-CAL", {"ink": 1.0}, genomes=5_000, targets=wanted)
        self.dna("P01-BL", {"patient": 1.0}, genomes=8_000, targets=wanted)
        for target in wanted:
            self.add(None, target, [ntc_ct, None], task="ntc")

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows).with_columns(
            pl.col("ct", "slope", "quantity", "intercept", "r_squared", "efficiency_pct").cast(
                pl.Float64
            ),
            pl.col("source_row").cast(pl.Int32),
            pl.col("sample_id").cast(pl.String),
        )


MANIFEST_COLUMNS = ["sample_id", "patient_id", "role", "product_lot"]


def manifest(
    rows: Sequence[tuple[object, ...]], columns: Sequence[str] = MANIFEST_COLUMNS
) -> pl.LazyFrame:
    """A samples frame (``Manifest`` columns) from row tuples."""
    return pl.LazyFrame(list(rows), schema=list(columns), orient="row")


DDPCR_MARKERS = {
    "iNK-M1": {"ink": 1},
    "HD-M1": {"hsct": 1},
    "R-M1": {"patient": 1},
    "SHARED": {"ink": 1, "hsct": 1},
}
"""Marker copies per genome of each ddPCR test marker (absent genomes have 0)."""


def ddpcr_row(
    plate: str,
    well: str,
    sample: str | None,
    target: str,
    positives: int,
    accepted: int,
    *,
    sample_type: str = "unknown",
    merged_wells: str | None = None,
) -> dict[str, object]:
    """One ``DdpcrWells`` row (QX Manager, 0.85 nL droplets); RPP30 is the reference."""
    return {
        "sample_id": sample,
        "well": well,
        "target": target,
        "channel": "HEX" if target == REFERENCE else "FAM",
        "target_role": "reference" if target == REFERENCE else "marker",
        "sample_type": sample_type,
        "status": "OK",
        "accepted_droplets": accepted,
        "positives": positives,
        "negatives": accepted - positives,
        "concentration_copies_per_ul": None,
        "droplet_volume_nl": 0.85,
        "merged_wells": merged_wells,
        "is_merged": merged_wells is not None,
        "software": "qx_manager",
        "source_row": 2,
        "source_sha256": plate,
    }


class DdpcrPlate:
    """``DdpcrWells`` rows of one plate: duplex wells of one marker and RPP30."""

    def __init__(self, plate: str = "plate-1", *, rng: np.random.Generator | None = None) -> None:
        self.plate = plate
        self.rng = rng
        self.rows: list[dict[str, object]] = []

    def counts(
        self,
        sample: str | None,
        marker: str,
        marker_positives: int,
        reference_positives: int,
        *,
        droplets: int = 20_000,
        sample_type: str = "unknown",
    ) -> str:
        """Add one duplex well with the given counts; returns the well name."""
        n = len({r["well"] for r in self.rows})
        well = f"{'ABCDEFGH'[n % 8]}{n // 8 + 1:02d}"
        for target, positives in ((marker, marker_positives), (REFERENCE, reference_positives)):
            self.rows.append(
                ddpcr_row(
                    self.plate, well, sample, target, positives, droplets, sample_type=sample_type
                )
            )
        return well

    def positives(self, lam: float, droplets: int) -> int:
        """Positive droplets for λ copies per droplet: expected count, or a binomial draw."""
        p = 1.0 - math.exp(-lam)
        if self.rng is None:
            return round(droplets * p)
        return int(self.rng.binomial(droplets, p))

    def dna(
        self,
        sample: str,
        mix: Mapping[str, float],
        *,
        markers: Sequence[str] = ("iNK-M1",),
        lam_ref: float = 0.6,
        droplets: int = 20_000,
        wells: int = 2,
        sample_type: str = "unknown",
        copies: Mapping[str, float] | None = None,
    ) -> None:
        """Duplex wells of a DNA sample whose genomes are mixed as ``mix`` (genome: share).

        λ_ref = 0.6 RPP30 copies per droplet = 0.3 genomes per droplet; a marker's λ is
        genomes per droplet x Σ share x copies per genome (``copies`` overrides per marker).
        """
        for marker in markers:
            per_genome = dict(DDPCR_MARKERS.get(marker, {}))
            per_genome.update(copies or {})
            lam_m = lam_ref / 2 * sum(share * per_genome.get(g, 0) for g, share in mix.items())
            for _ in range(wells):
                self.counts(
                    sample,
                    marker,
                    self.positives(lam_m, droplets),
                    self.positives(lam_ref, droplets),
                    droplets=droplets,
                    sample_type=sample_type,
                )

    def frame(self) -> pl.DataFrame:
        overrides = {
            "merged_wells": pl.String,
            "concentration_copies_per_ul": pl.Float64,
            "sample_id": pl.String,
        }
        return pl.DataFrame(self.rows, schema_overrides=overrides)


def ddpcr_wells(*plates: DdpcrPlate) -> pl.LazyFrame:
    """Every plate's rows as one ``DdpcrWells`` frame."""
    return pl.concat([p.frame() for p in plates if p.rows], how="vertical_relaxed").lazy()


def qpcr_wells(*plates: QpcrPlate) -> pl.LazyFrame:
    """Every plate's rows as one ``QpcrWells`` frame."""
    return pl.concat([p.frame() for p in plates if p.rows], how="vertical_relaxed").lazy()
