"""ddPCR: duplex droplet counts and the QuantaSoft 1.7 / QX Manager well-data exports.

Per well lambda_ref = the extract's reference copies per droplet (U(0.5, 1.0), pipetting 3 %),
lambda_marker = lambda_ref x (sum over genomes of fraction x marker copies) / 2. Positives are
Binomial(accepted, 1 - e^-lambda) per channel: independent Poisson copies in every droplet.
"""

from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass, replace

from .genetics import REFERENCE_GENE, REFERENCE_GENE_COPIES
from .rand import binomial, fmt_sig

DDPCR_DROPLET_VOLUME_UL = 0.85e-3
DDPCR_WELL_VOLUME_UL = 20.0
DDPCR_ACCEPTED = (17_000.0, 1_500.0, 12_000)
"""Accepted droplets ~ N(mean, sd), at least the minimum."""
DDPCR_FAILED_ACCEPTED = (3_500, 7_500)
DDPCR_LAMBDA_REF = (0.5, 1.0)
DDPCR_FAILED_LAMBDA_REF = (0.004, 0.010)
DDPCR_REPLICATES = 2
DDPCR_PIPETTING_SD_LOG = 0.03
DDPCR_PLATE_WELLS = 96
DDPCR_THRESHOLD_RFU = {"FAM": 4150.0, "HEX": 3050.0}
DDPCR_REANALYSED_THRESHOLD_RFU = {"FAM": 3900.0, "HEX": 2900.0}
DDPCR_RAIN_SHARE = 0.004
"""Share of positives added when a re-analysis lowers the threshold into the rain."""
Z95 = 1.959963984540054
SAMPLE_TYPE_UNKNOWN = "Unknown"
SAMPLE_TYPE_POSITIVE = "PosCtrl"
SAMPLE_TYPE_NEGATIVE = "NegCtrl"
SAMPLE_TYPE_NTC = "NTC"


@dataclass
class DdpcrWell:
    """One duplex well (marker FAM + RPP30 HEX) and its simulated droplet counts."""

    sample_name: str
    sample_type: str
    marker: str
    lambda_ref: float
    lambda_marker: float
    failed: bool = False
    false_positive_marker: int = 0
    accepted: int = 0
    pos_marker: int = 0
    pos_ref: int = 0
    reanalysed: bool = False


def plan_wells(
    rng: random.Random,
    name: str,
    sample_type: str,
    marker: str,
    marker_copies_per_genome: float,
    *,
    failed: bool = False,
    replicates: int = DDPCR_REPLICATES,
) -> list[DdpcrWell]:
    """Replicate wells of one extract; ``marker_copies_per_genome`` = sum of fraction x copies."""
    if sample_type == SAMPLE_TYPE_NTC:
        lam = 0.0
    elif failed:
        lam = rng.uniform(*DDPCR_FAILED_LAMBDA_REF)
    else:
        lam = rng.uniform(*DDPCR_LAMBDA_REF)
    wells = []
    for _ in range(replicates):
        lam_well = lam * math.exp(rng.gauss(0.0, DDPCR_PIPETTING_SD_LOG))
        marker_lam = lam_well * marker_copies_per_genome / REFERENCE_GENE_COPIES
        wells.append(DdpcrWell(name, sample_type, marker, lam_well, marker_lam, failed=failed))
    return wells


def simulate_droplets(rng: random.Random, well: DdpcrWell) -> None:
    """Accepted droplets and positives per channel (+ designed false-positive marker droplets)."""
    if well.failed:
        well.accepted = rng.randint(*DDPCR_FAILED_ACCEPTED)
    else:
        mean, sd, minimum = DDPCR_ACCEPTED
        well.accepted = max(minimum, round(rng.gauss(mean, sd)))
    well.pos_marker = binomial(rng, well.accepted, 1.0 - math.exp(-well.lambda_marker))
    well.pos_marker += well.false_positive_marker
    well.pos_ref = binomial(rng, well.accepted, 1.0 - math.exp(-well.lambda_ref))


def reanalysed(rng: random.Random, wells: list[DdpcrWell]) -> list[DdpcrWell]:
    """The same wells after lowering both thresholds: ~0.4 % more positives from the rain."""
    out = []
    for well in wells:
        extra_marker = binomial(rng, well.pos_marker, DDPCR_RAIN_SHARE)
        extra_ref = binomial(rng, well.pos_ref, DDPCR_RAIN_SHARE)
        out.append(
            replace(
                well,
                pos_marker=min(well.pos_marker + extra_marker, well.accepted),
                pos_ref=min(well.pos_ref + extra_ref, well.accepted),
                reanalysed=True,
            )
        )
    return out


@dataclass
class ChannelStats:
    """Poisson estimate of one channel of one well (p-scale Wald CIs as in QX Manager)."""

    positives: int
    accepted: int
    conc: float
    conc_max: float
    conc_min: float
    conc_max68: float
    conc_min68: float
    se_lambda: float
    lam: float


def channel_stats(positives: int, accepted: int) -> ChannelStats:
    """Lambda = -ln(1 - p), concentration lambda/V_d; CI from p +- z sqrt(p(1-p)/N) transformed."""
    p = positives / accepted
    lam = -math.log(1.0 - p)

    def bound(z: float, sign: int) -> float:
        if positives == 0:
            return -math.log(0.05) / accepted if sign > 0 else 0.0
        q = min(max(p + sign * z * math.sqrt(p * (1.0 - p) / accepted), 0.0), 1.0 - 1e-9)
        return -math.log(1.0 - q)

    se = math.sqrt(p / (accepted * (1.0 - p))) if positives else 0.0
    v = DDPCR_DROPLET_VOLUME_UL
    return ChannelStats(
        positives,
        accepted,
        lam / v,
        bound(Z95, 1) / v,
        bound(Z95, -1) / v,
        bound(1.0, 1) / v,
        bound(1.0, -1) / v,
        se,
        lam,
    )


def ratio_bounds(
    marker: ChannelStats, ref: ChannelStats, z: float
) -> tuple[float, float, float] | None:
    """Ratio c_marker/c_ref with a linear-delta CI (QX Manager PoissonRatioMax/Min)."""
    if marker.positives == 0 or ref.positives == 0:
        return None
    ratio = marker.lam / ref.lam
    rel = math.sqrt((marker.se_lambda / marker.lam) ** 2 + (ref.se_lambda / ref.lam) ** 2)
    return ratio, ratio * (1 + z * rel), max(ratio * (1 - z * rel), 0.0)


def _cluster_counts(rng: random.Random, well: DdpcrWell) -> tuple[int, int, int, int]:
    both = binomial(rng, well.pos_marker, well.pos_ref / well.accepted)
    only_marker, only_ref = well.pos_marker - both, well.pos_ref - both
    return both, only_marker, only_ref, well.accepted - both - only_marker - only_ref


def _amplitudes(
    rng: random.Random, dye: str, positives: int, accepted: int
) -> tuple[str, str, str]:
    pos_mean = rng.uniform(8000, 10000) if dye == "FAM" else rng.uniform(5000, 6500)
    neg_mean = rng.uniform(1800, 2400) if dye == "FAM" else rng.uniform(1100, 1500)
    total = (pos_mean * positives + neg_mean * (accepted - positives)) / accepted
    return (f"{pos_mean:.15g}" if positives else "", f"{neg_mean:.15g}", f"{total:.15g}")


QUANTASOFT_HEADER = [
    "Well",
    "ExptType",
    "Experiment",
    "Sample",
    "TargetType",
    "Target",
    "Status",
    "Concentration",
    "Supermix",
    "CopiesPer20uLWell",
    "TotalConfMax",
    "TotalConfMin",
    "PoissonConfMax",
    "PoissonConfMin",
    "Positives",
    "Negatives",
    "Ch1+Ch2+",
    "Ch1+Ch2-",
    "Ch1-Ch2+",
    "Ch1-Ch2-",
    "Linkage",
    "AcceptedDroplets",
    "CNV",
    "TotalCNVMax",
    "TotalCNVMin",
    "PoissonCNVMax",
    "PoissonCNVMin",
    "ReferenceCopies",
    "UnknownCopies",
    "Ratio",
    "TotalRatioMax",
    "TotalRatioMin",
    "PoissonRatioMax",
    "PoissonRatioMin",
    "FractionalAbundance",
    "TotalFractionalAbundanceMax",
    "TotalFractionalAbundanceMin",
    "PoissonFractionalAbundanceMax",
    "PoissonFractionalAbundanceMin",
    "ReferenceAssayNumber",
    "TargetAssayNumber",
    "Threshold",
    "MeanAmplitudeofPositives",
    "MeanAmplitudeofNegatives",
    "MeanAmplitudeTotal",
    "ExperimentComments",
    "MergedWells",
    "TotalConfMax68",
    "TotalConfMin68",
    "PoissonConfMax68",
    "PoissonConfMin68",
    "TotalCNVMax68",
    "TotalCNVMin68",
    "PoissonCNVMax68",
    "PoissonCNVMin68",
    "TotalRatioMax68",
    "TotalRatioMin68",
    "PoissonRatioMax68",
    "PoissonRatioMin68",
    "TotalFractionalAbundanceMax68",
    "TotalFractionalAbundanceMin68",
    "PoissonFractionalAbundanceMax68",
    "PoissonFractionalAbundanceMin68",
]
QUANTASOFT_QUOTED = {"Well", "Experiment", "Sample", "Target", "Status", "ExperimentComments"}
MU = "\u00b5"
QX_HEADER = (
    f"Well,Sample description 1,Sample description 2,Sample description 3,Sample description 4,"
    f"Target,Conc(copies/{MU}L),pg/{MU}L,Status,Status Reason,Experiment,SampleType,TargetType,"
    f"Supermix,DyeName(s),Copies/20{MU}LWell,TotalConfMax,TotalConfMin,PoissonConfMax,"
    f"PoissonConfMin,Accepted Droplets,Positives,Negatives,Copies/uL linked molecules,CNV,"
    f"TotalCNVMax,TotalCNVMin,PoissonCNVMax,PoissonCNVMin,ReferenceCopies,UnknownCopies,Threshold1,"
    f"Threshold2,Threshold3,ThresholdSigmaAbove,ThresholdSigmaBelow,ReferenceUsed,Ratio,"
    f"TotalRatioMax,TotalRatioMin,PoissonRatioMax,PoissonRatioMin,Fractional Abundance,"
    f"TotalFractionalAbundanceMax,TotalFractionalAbundanceMin,PoissonFractionalAbundanceMax,"
    f"PoissonFractionalAbundanceMin,MeanAmplitudeOfPositives,MeanAmplitudeOfNegatives,"
    f"MeanAmplitudeTotal,ExperimentComments,MergedWells,TotalConfidenceMax68,TotalConfidenceMin68,"
    f"PoissonConfidenceMax68,PoissonConfidenceMin68,TotalCNVMax68,TotalCNVMin68,PoissonCNVMax68,"
    f"PoissonCNVMin68,TotalRatioMax68,TotalRatioMin68,PoissonRatioMax68,PoissonRatioMin68,"
    f"TotalFractionalAbundanceMax68,TotalFractionalAbundanceMin68,PoissonFractionalAbundanceMax68,"
    f"PoissonFractionalAbundanceMin68,TiltCorrected,Ch1+Ch2+,Ch1+Ch2-,Ch1-Ch2+,Ch1-Ch2-"
).split(",")
SUPERMIX_QUANTASOFT = "ddPCR Supermix for Probes (no dUTP)"
SUPERMIX_QX = "ddPCR Supermix for Probes (No dUTP)"


def _ratio_fields(
    ratio95: tuple[float, float, float], ratio68: tuple[float, float, float], digits: int | None
) -> dict[str, str]:
    def text(value: float) -> str:
        return f"{value:.15g}" if digits is None else fmt_sig(value, digits)

    def abundance(r: float) -> str:
        return text(100 * r / (1 + r))

    return {
        "Ratio": text(ratio95[0]),
        "PoissonRatioMax": text(ratio95[1]),
        "PoissonRatioMin": text(ratio95[2]),
        "PoissonRatioMax68": text(ratio68[1]),
        "PoissonRatioMin68": text(ratio68[2]),
        "PoissonFractionalAbundanceMax": abundance(ratio95[1]),
        "PoissonFractionalAbundanceMin": abundance(ratio95[2]),
        "PoissonFractionalAbundanceMax68": abundance(ratio68[1]),
        "PoissonFractionalAbundanceMin68": abundance(ratio68[2]),
    }


def quantasoft_lines(rng: random.Random, wells: list[tuple[str, DdpcrWell]]) -> list[str]:
    """Rows of a QuantaSoft 1.7 export: one per well per channel, 3-significant-digit values."""
    lines = [",".join(QUANTASOFT_HEADER)]
    for position, well in wells:
        marker, ref = (
            channel_stats(well.pos_marker, well.accepted),
            channel_stats(well.pos_ref, well.accepted),
        )
        clusters = _cluster_counts(rng, well)
        ratio95, ratio68 = ratio_bounds(marker, ref, Z95), ratio_bounds(marker, ref, 1.0)
        kind = "NTC" if well.sample_type == SAMPLE_TYPE_NTC else "Unknown"
        for channel, (stats, target, dye) in enumerate(
            ((marker, well.marker, "FAM"), (ref, REFERENCE_GENE, "HEX")), start=1
        ):
            amp_pos, amp_neg, amp_total = _amplitudes(rng, dye, stats.positives, stats.accepted)
            conc = float(fmt_sig(stats.conc, 3))
            values = {
                "Well": position,
                "ExptType": "Absolute Quantification",
                "Experiment": "ABS",
                "Sample": well.sample_name,
                "TargetType": f"Ch{channel}{kind}",
                "Target": target,
                "Status": "Manual",
                "Concentration": fmt_sig(stats.conc, 3),
                "Supermix": SUPERMIX_QUANTASOFT,
                "CopiesPer20uLWell": fmt_sig(conc * DDPCR_WELL_VOLUME_UL, 3),
                "PoissonConfMax": fmt_sig(stats.conc_max, 3),
                "PoissonConfMin": fmt_sig(stats.conc_min, 3),
                "Positives": str(stats.positives),
                "Negatives": str(stats.accepted - stats.positives),
                "Ch1+Ch2+": str(clusters[0]),
                "Ch1+Ch2-": str(clusters[1]),
                "Ch1-Ch2+": str(clusters[2]),
                "Ch1-Ch2-": str(clusters[3]),
                "Linkage": "0",
                "AcceptedDroplets": str(stats.accepted),
                "ReferenceAssayNumber": "2",
                "TargetAssayNumber": "1",
                "Threshold": f"{DDPCR_THRESHOLD_RFU[dye]:.0f}",
                "MeanAmplitudeofPositives": fmt_sig(float(amp_pos), 5) if amp_pos else "",
                "MeanAmplitudeofNegatives": fmt_sig(float(amp_neg), 5),
                "MeanAmplitudeTotal": fmt_sig(float(amp_total), 5),
                "ExperimentComments": "",
                "PoissonConfMax68": fmt_sig(stats.conc_max68, 3),
                "PoissonConfMin68": fmt_sig(stats.conc_min68, 3),
            }
            if ratio95 is not None and ratio68 is not None:
                values |= _ratio_fields(ratio95, ratio68, 3)
                values["FractionalAbundance"] = fmt_sig(100 * ratio95[0] / (1 + ratio95[0]), 3)
            cells = [
                f'"{values.get(n, "")}"' if n in QUANTASOFT_QUOTED else values.get(n, "")
                for n in QUANTASOFT_HEADER
            ]
            lines.append(",".join(cells) + ",")
    return lines


def _qx_channel(stats: ChannelStats, well: DdpcrWell) -> dict[str, str]:
    if well.sample_type == SAMPLE_TYPE_NTC and stats.positives == 0:
        return {
            f"Conc(copies/{MU}L)": "No Call",
            "Status": "CHECK",
            "Status Reason": "Automatic Analysis Unsuccessful",
        }
    return {
        f"Conc(copies/{MU}L)": f"{stats.conc:.15g}",
        "Status": "OK",
        f"Copies/20{MU}LWell": f"{stats.conc * DDPCR_WELL_VOLUME_UL:.15g}",
        "PoissonConfMax": f"{stats.conc_max:.15g}",
        "PoissonConfMin": f"{stats.conc_min:.15g}",
        "PoissonConfidenceMax68": f"{stats.conc_max68:.15g}",
        "PoissonConfidenceMin68": f"{stats.conc_min68:.15g}",
    }


def qx_manager_lines(rng: random.Random, wells: list[tuple[str, DdpcrWell]]) -> list[str]:
    """Rows of a QX Manager well-data export: Unknown (FAM marker) + Reference (HEX RPP30)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(QX_HEADER)
    for position, well in wells:
        marker, ref = (
            channel_stats(well.pos_marker, well.accepted),
            channel_stats(well.pos_ref, well.accepted),
        )
        clusters = [str(c) for c in _cluster_counts(rng, well)]
        ratio95, ratio68 = ratio_bounds(marker, ref, Z95), ratio_bounds(marker, ref, 1.0)
        thresholds = DDPCR_REANALYSED_THRESHOLD_RFU if well.reanalysed else DDPCR_THRESHOLD_RFU
        for role, stats, target, dye in (
            ("Unknown", marker, well.marker, "FAM"),
            ("Reference", ref, REFERENCE_GENE, "HEX"),
        ):
            amp_pos, amp_neg, amp_total = _amplitudes(rng, dye, stats.positives, stats.accepted)
            values = {
                "Well": position,
                "Sample description 1": well.sample_name,
                "Target": target,
                "Experiment": "DQ",
                "SampleType": well.sample_type,
                "TargetType": role,
                "Supermix": SUPERMIX_QX,
                "DyeName(s)": dye,
                "Accepted Droplets": str(stats.accepted),
                "Positives": str(stats.positives),
                "Negatives": str(stats.accepted - stats.positives),
                "Threshold1": f"{thresholds[dye]:.15g}",
                "MeanAmplitudeOfPositives": amp_pos,
                "MeanAmplitudeOfNegatives": amp_neg,
                "MeanAmplitudeTotal": amp_total,
                "TiltCorrected": "No",
                "Ch1+Ch2+": clusters[0],
                "Ch1+Ch2-": clusters[1],
                "Ch1-Ch2+": clusters[2],
                "Ch1-Ch2-": clusters[3],
            }
            values |= _qx_channel(stats, well)
            if role == "Unknown" and ratio95 is not None and ratio68 is not None:
                values |= _ratio_fields(ratio95, ratio68, None)
                values |= {
                    "CNV": f"{2 * ratio95[0]:.15g}",
                    "PoissonCNVMax": f"{2 * ratio95[1]:.15g}",
                    "PoissonCNVMin": f"{2 * ratio95[2]:.15g}",
                    "ReferenceCopies": "2",
                    "ReferenceUsed": "2",
                    "Fractional Abundance": f"{100 * ratio95[0] / (1 + ratio95[0]):.15g}",
                    "PoissonCNVMax68": f"{2 * ratio68[1]:.15g}",
                    "PoissonCNVMin68": f"{2 * ratio68[2]:.15g}",
                }
            writer.writerow([values.get(name, "") for name in QX_HEADER])
    return out.getvalue().rstrip("\n").split("\n")


def export_bytes(
    rng: random.Random, wells: list[tuple[str, DdpcrWell]], *, qx_manager: bool
) -> bytes:
    """The whole file: QX Manager (BOM, UTF-8, CRLF) or QuantaSoft 1.7 (ASCII, CRLF)."""
    if qx_manager:
        lines = qx_manager_lines(rng, wells)
        return b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode("utf-8")
    return ("\r\n".join(quantasoft_lines(rng, wells)) + "\r\n").encode("ascii")


def truncated_copy(data: bytes, share: float) -> bytes:
    """The first ``share`` of a file, cut in the middle of a row (an interrupted copy)."""
    cut = int(len(data) * share)
    line_start = data.rfind(b"\n", 0, cut) + 1
    next_end = data.find(b"\n", cut)
    middle = line_start + (next_end - line_start) // 2
    return data[:middle]
