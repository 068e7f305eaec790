"""Bench baseline (b): the same arithmetic as a lab analyst would write it in pandas.

    python bench/baseline_pandas.py INBOX OUT

Reads every manifest, infusion log and export under INBOX with ``pandas.read_csv`` and writes one
``results.parquet`` to OUT with % iNK per post-dose sample and method:

- STR (GeneMapper sizing tables): reference genotypes = numeric alleles above half the marker's
  largest peak area; per-locus formula by allele sharing (methods.md 2.2); mean of the
  informative autosomal loci;
- qPCR (QuantStudio text, CFX CSV): ΔΔCt per sample and marker against the plate's calibrator,
  informative markers = amplified in the product, not in the patient's baseline; geometric mean
  over markers;
- ddPCR (QuantaSoft / QX Manager CSV): Poisson λ per target pooled over replicate wells,
  % iNK = 100 · k · λ_M / λ_ref with k from the product's marker copy number.

Written the way a reasonable analyst would (groupby / apply, no deliberate slowness); it skips
what Chimera adds on top (QC, limits, CIs, supersession, lineage, validation, trends, alerts).
"""

from __future__ import annotations

import io
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REFERENCE_GENES = {"RPP30", "RNASEP", "ALB", "GAPDH", "ACTB", "B2M", "TERT", "RPPH1"}
SEX_MARKERS = {"AMEL", "AMELOGENIN", "DYS391", "Y INDEL"}
CT_CUTOFF = 35.0


def read_inbox(inbox: Path) -> dict[str, list[tuple[Path, str]]]:
    """Group every file by what its first lines say it is (text of each file)."""
    kinds: dict[str, list[tuple[Path, str]]] = {}
    for path in sorted(p for p in inbox.rglob("*") if p.is_file() and "truth" not in p.parts):
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
        head = text[:2000]
        if head.startswith("sample_id,"):
            kind = "manifest"
        elif head.startswith("patient_id,dose_number"):
            kind = "infusions"
        elif "Dye/Sample Peak" in head:
            kind = "str"
        elif "[Results]" in head or "* Experiment" in head:
            kind = "quantstudio"
        elif ",Cq," in head:
            kind = "cfx"
        elif "Positives" in head and ("AcceptedDroplets" in head or "Accepted Droplets" in head):
            kind = "ddpcr"
        else:
            continue
        kinds.setdefault(kind, []).append((path, text))
    return kinds


def registry(kinds: dict[str, list[tuple[Path, str]]]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Latest manifest row per sample, and each patient's product reference sample."""
    samples = pd.concat(
        [pd.read_csv(io.StringIO(t), dtype=str) for _, t in kinds.get("manifest", [])]
    ).drop_duplicates("sample_id", keep="last")
    doses = pd.concat(
        [pd.read_csv(io.StringIO(t), dtype=str) for _, t in kinds.get("infusions", [])]
    )
    lot_of = doses.dropna(subset=["product_lot"]).groupby("patient_id")["product_lot"].last()
    products = samples[samples["role"] == "donor_reference"]
    bank_of_lot = samples.dropna(subset=["cell_bank"]).groupby("patient_id")["cell_bank"].last()
    reference = {}
    for patient, lot in lot_of.items():
        bank = bank_of_lot.get(lot)
        match = products[(products["patient_id"] == lot) | (products["cell_bank"] == bank)]
        if len(match):
            reference[patient] = match["sample_id"].iloc[0]
    return samples, reference


def str_results(
    texts: list[tuple[Path, str]], samples: pd.DataFrame, reference: dict
) -> pd.DataFrame:
    """STR % iNK per post-dose sample and run."""
    peaks = pd.concat(
        [pd.read_csv(io.StringIO(t), sep="\t").assign(run=p.name) for p, t in texts]
    ).rename(columns={"Sample File Name": "sample_id"})
    peaks = peaks.dropna(subset=["Allele"])
    peaks = peaks[peaks["Allele"].astype(str).str.contains(r"\d")]

    def genotype(sample_id: str) -> dict[str, set[str]]:
        rows = peaks[peaks["sample_id"] == sample_id]
        keep = rows[rows["Area"] > 0.5 * rows.groupby("Marker")["Area"].transform("max")]
        return keep.groupby("Marker")["Allele"].apply(lambda a: set(a.astype(str))).to_dict()

    roles = samples.set_index("sample_id")["role"]
    patient_of = samples.set_index("sample_id")["patient_id"]
    baseline = (
        samples[samples["role"] == "recipient_baseline"].groupby("patient_id")["sample_id"].first()
    )
    genotypes: dict[str, dict[str, set[str]]] = {}

    def locus(rows: pd.DataFrame, donor: dict, recipient: dict) -> float:
        marker = rows.name[1]
        d, r = donor.get(marker, set()), recipient.get(marker, set())
        if not d or not r or d == r or marker.upper() in SEX_MARKERS:
            return np.nan
        allele = rows["Allele"].astype(str)

        def sig(alleles: set[str]) -> float:
            return float(rows.loc[allele.isin(alleles), "Area"].sum())

        d_only, r_only, shared = d - r, r - d, d & r
        if not shared:
            total = sig(d | r)
            return 100 * sig(d_only) / total if total else np.nan
        if len(d) == 2 and len(r) == 2 and len(shared) == 1:
            total = sig(d_only) + sig(r_only)
            return 100 * sig(d_only) / total if total else np.nan
        if len(d) == 2 and r == shared:
            total = sig(d_only) + sig(shared)
            return 100 * 2 * sig(d_only) / total if total else np.nan
        if len(r) == 2 and d == shared:
            total = sig(r_only) + sig(shared)
            return 100 - 100 * 2 * sig(r_only) / total if total else np.nan
        total = sig(d | r)
        return 100 * sig(d_only) / total if total else np.nan

    post = peaks[peaks["sample_id"].map(roles) == "post_dose"]
    out = []
    for (run, sample_id), rows in post.groupby(["run", "sample_id"]):
        patient = patient_of[sample_id]
        if patient not in reference or patient not in baseline:
            continue
        for sid in (reference[patient], baseline[patient]):
            if sid not in genotypes:
                genotypes[sid] = genotype(sid)
        donor, recipient = genotypes[reference[patient]], genotypes[baseline[patient]]
        per_locus = rows.groupby(["sample_id", "Marker"]).apply(
            locus, donor, recipient, include_groups=False
        )
        out.append({"sample_id": sample_id, "source": run, "pct_ink": per_locus.mean()})
    return pd.DataFrame(out).assign(method="STR")


def qpcr_wells(kinds: dict[str, list[tuple[Path, str]]]) -> pd.DataFrame:
    """Every qPCR well: plate, sample, target, Ct (NaN = no amplification)."""
    frames = []
    for path, text in kinds.get("quantstudio", []):
        body = text[text.index("[Results]") + len("[Results]") :].strip("\r\n")
        body = body.split("\n[", 1)[0]
        wells = pd.read_csv(io.StringIO(body), sep="\t", dtype=str)
        frames.append(
            pd.DataFrame(
                {
                    "plate": path.name,
                    "sample_id": wells["Sample Name"],
                    "target": wells["Target Name"],
                    "ct": pd.to_numeric(wells["CT"], errors="coerce"),
                }
            )
        )
    for path, text in kinds.get("cfx", []):
        wells = pd.read_csv(io.StringIO(text), dtype=str)
        frames.append(
            pd.DataFrame(
                {
                    "plate": path.name,
                    "sample_id": wells["Sample"],
                    "target": wells["Target"],
                    "ct": pd.to_numeric(wells["Cq"], errors="coerce"),
                }
            )
        )
    wells = pd.concat(frames)
    wells.loc[wells["ct"] > CT_CUTOFF, "ct"] = np.nan
    return wells


def qpcr_results(wells: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """ΔΔCt % iNK per post-dose sample and plate (geometric mean over informative markers)."""
    wells = wells.merge(samples[["sample_id", "patient_id", "role"]], on="sample_id", how="left")
    is_ref = wells["target"].str.upper().isin(REFERENCE_GENES)
    product = wells[wells["role"].isin(["calibrator", "donor_reference"]) & ~is_ref]
    carried = set(
        product.groupby("target")["ct"]
        .apply(lambda c: c.notna().mean() > 0.5)
        .pipe(lambda s: s[s].index)
    )
    baseline = wells[(wells["role"] == "recipient_baseline") & ~is_ref]
    absent = baseline.groupby(["patient_id", "target"])["ct"].apply(lambda c: c.isna().all())
    mean_ct = wells.groupby(["plate", "sample_id", "target"])["ct"].mean().reset_index()
    mean_ct["is_ref"] = mean_ct["target"].str.upper().isin(REFERENCE_GENES)
    ref_ct = (
        mean_ct[mean_ct["is_ref"]].groupby(["plate", "sample_id"])["ct"].mean().rename("ref_ct")
    )
    mean_ct = mean_ct[~mean_ct["is_ref"]].join(ref_ct, on=["plate", "sample_id"])
    mean_ct["dct"] = mean_ct["ct"] - mean_ct["ref_ct"]
    roles = samples.set_index("sample_id")["role"]
    patient_of = samples.set_index("sample_id")["patient_id"]
    cal = mean_ct[mean_ct["sample_id"].map(roles) == "calibrator"]
    cal_dct = cal.groupby(["plate", "target"])["dct"].mean().rename("cal_dct")
    post = mean_ct[mean_ct["sample_id"].map(roles) == "post_dose"].join(
        cal_dct, on=["plate", "target"]
    )

    def informative(row: pd.Series) -> bool:
        key = (patient_of[row["sample_id"]], row["target"])
        return row["target"] in carried and bool(absent.get(key, False))

    post = post[post.apply(informative, axis=1)]
    post["f"] = 2.0 ** -(post["dct"].fillna(np.inf) - post["cal_dct"])
    result = post.groupby(["plate", "sample_id"])["f"].apply(
        lambda f: 100 * math.exp(np.log(f[f > 0]).mean()) if (f > 0).any() else 0.0
    )
    return (
        result.rename("pct_ink")
        .reset_index()
        .rename(columns={"plate": "source"})
        .assign(method="qPCR")
    )


def ddpcr_results(texts: list[tuple[Path, str]], samples: pd.DataFrame) -> pd.DataFrame:
    """Poisson % iNK per post-dose sample and plate, pooled over replicate wells."""
    frames = []
    for path, text in texts:
        wells = pd.read_csv(io.StringIO(text), dtype=str)
        sample = "Sample" if "Sample" in wells else "Sample description 1"
        accepted = "AcceptedDroplets" if "AcceptedDroplets" in wells else "Accepted Droplets"
        frames.append(
            pd.DataFrame(
                {
                    "plate": path.name,
                    "sample_id": wells[sample],
                    "target": wells["Target"],
                    "positives": pd.to_numeric(wells["Positives"], errors="coerce"),
                    "accepted": pd.to_numeric(wells[accepted], errors="coerce"),
                }
            )
        )
    wells = pd.concat(frames).dropna()
    pooled = wells.groupby(["plate", "sample_id", "target"])[["positives", "accepted"]].sum()
    pooled["lam"] = -np.log1p(-pooled["positives"] / pooled["accepted"])
    pooled = pooled.reset_index()
    pooled["is_ref"] = pooled["target"].str.upper().isin(REFERENCE_GENES)
    ref = pooled[pooled["is_ref"]].set_index(["plate", "sample_id"])["lam"].rename("lam_ref")
    markers = pooled[~pooled["is_ref"]].join(ref, on=["plate", "sample_id"])
    markers["ratio"] = markers["lam"] / markers["lam_ref"]
    markers = markers.merge(
        samples[["sample_id", "patient_id", "role"]], on="sample_id", how="left"
    )
    product = markers[markers["role"].isin(["calibrator", "donor_reference"])]
    copies = product.groupby("target")["ratio"].median() * 2
    k = (2 / copies.round().clip(lower=1)).where(copies >= 0.5)
    baseline = markers[markers["role"] == "recipient_baseline"]
    absent = baseline.groupby(["patient_id", "target"])["ratio"].max() < 0.001
    post = markers[markers["role"] == "post_dose"].copy()
    post["k"] = post["target"].map(k)
    post["informative"] = [
        bool(absent.get((p, t), False)) and not math.isnan(kk)
        for p, t, kk in zip(
            post["patient_id"], post["target"], post["k"].fillna(np.nan), strict=True
        )
    ]
    post = post[post["informative"]]
    post["pct"] = 100 * post["k"] * post["ratio"]
    result = post.groupby(["plate", "sample_id"])["pct"].mean()
    return (
        result.rename("pct_ink")
        .reset_index()
        .rename(columns={"plate": "source"})
        .assign(method="ddPCR")
    )


def main() -> None:
    """Read INBOX, compute, write OUT/results.parquet; print rows and seconds."""
    start = time.perf_counter()
    inbox, out = Path(sys.argv[1]), Path(sys.argv[2])
    kinds = read_inbox(inbox)
    samples, reference = registry(kinds)
    results = [
        str_results(kinds.get("str", []), samples, reference),
        qpcr_results(qpcr_wells(kinds), samples),
        ddpcr_results(kinds.get("ddpcr", []), samples),
    ]
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.concat(results, ignore_index=True)
    frame.to_parquet(out / "results.parquet")
    print(f"{len(frame)} results in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
