"""Generate the synthetic Chimera sample trial: manifest, infusion log, instrument exports, truth.

Run ``.venv/bin/python sample_data/generate.py``. The output is deterministic (fixed seeds,
stdlib ``random`` + ``math`` + openpyxl): every run writes byte-identical files into
``sample_data/``. The design (patients, controls recurring on every plate, stutter, three-genome
patients, sorted fractions, designed file fates) is described in ``sample_data/README.md``; the
code lives in ``sample_data/trial/``.
"""

from __future__ import annotations

from pathlib import Path

from trial.patients import sample_trial_patients
from trial.protocol import SEED
from trial.trial import Batching, DesignedEvents, TrialConfig, build_trial
from trial.writer import write_trial

OUT_DIR = Path(__file__).resolve().parent

SAMPLE_TRIAL_EVENTS = DesignedEvents(
    reexported_qpcr_plate="QP2506A",
    reanalysed_ddpcr_plate="DP2508A",
    truncated_ddpcr_plate="DP2509A",
    repeat_ddpcr_sample="P03-D248",
    late_background_wells=(("QS250226", "P01-BL", "S02", 39.2), ("QP2507", "P03-BL", "S05", 38.9)),
    ntc_late_ct_plates=("QP2505A", "QP2601A"),
    ntc_false_positive_droplets=(("DP2506A", 1), ("DP2510A", 2), ("DP2603A", 1)),
    baseline_false_positive=("DP2511A", "P07-BL"),
    cfx_plates=(("QP2511A", False), ("QP2603A", True)),
)


def sample_trial_config() -> TrialConfig:
    """The committed trial: 10 designed patients, monthly runs, the designed lab events."""
    return TrialConfig(
        name="sample trial",
        seed=SEED,
        patients=sample_trial_patients(),
        batching=Batching(),
        genotypes_table_batches=("2025-06",),
        events=SAMPLE_TRIAL_EVENTS,
    )


def main() -> None:
    """Generate every file of the sample trial."""
    trial = build_trial(sample_trial_config())
    write_trial(trial, OUT_DIR)
    total = sum(
        p.stat().st_size for p in OUT_DIR.rglob("*") if p.is_file() and "trial" not in p.parts
    )
    print(f"sample trial written to {OUT_DIR} ({len(trial.files)} files, {total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
