"""The product DNA samples every run and plate carries (reference and calibrators)."""

from __future__ import annotations

import datetime as dt

from .model import Sample
from .protocol import (
    CALIBRATORS,
    CELL_BANK,
    PRODUCT_REFERENCE_ID,
    PRODUCT_REFERENCE_LOT,
    SPECIMEN_PRODUCT,
    calibrator_on,
)
from .vocab import Role


def product_sample(sample_id: str, lot: str, role: str) -> Sample:
    """100 % product DNA (``patient_id`` = the lot, ``cell_bank`` named)."""
    return Sample(
        sample_id,
        lot,
        role,
        specimen=SPECIMEN_PRODUCT,
        specimen_normalised=SPECIMEN_PRODUCT,
        pct_ink=100.0,
        pct_recipient=0.0,
        product_lot=lot,
        cell_bank=CELL_BANK,
    )


def product_reference() -> Sample:
    """The product reference typed on every STR run and run on every PCR plate."""
    return product_sample(PRODUCT_REFERENCE_ID, PRODUCT_REFERENCE_LOT, str(Role.DONOR_REFERENCE))


def calibrators() -> list[Sample]:
    """Every calibrator the lab used (one per lot of the bank)."""
    return [
        product_sample(sample_id, lot, str(Role.CALIBRATOR)) for sample_id, lot, _ in CALIBRATORS
    ]


def calibrator_for(run_day: dt.date) -> Sample:
    """The calibrator of a plate run on ``run_day``."""
    sample_id, lot = calibrator_on(run_day)
    return product_sample(sample_id, lot, str(Role.CALIBRATOR))
