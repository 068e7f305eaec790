"""How a result reads to a clinician: value, CI and state, never a bare 0 (methods.md 4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.vocab import QcVerdict, ResultStatus


def describe(row: Mapping[str, Any]) -> str:
    """Return a result as a clinician reads it, e.g. ``0.42 % (95 % CI 0.31-0.55)``.

    Examples
    --------
    >>> describe({"pct_ink": 0.42, "ci_low": 0.31, "ci_high": 0.55, "result_status": "quantified"})
    '0.42 % (95 % CI 0.31-0.55)'
    >>> describe({"result_status": "not_detected", "lod_pct": 0.05})
    'not detected (< LoD 0.05 %)'
    """
    status = row.get("result_status")
    lod = row.get("lod_pct")
    if lod is None and status == ResultStatus.NOT_DETECTED:
        lod = row.get("ci_high")
    if status == ResultStatus.NOT_DETECTED:
        return "not detected" + (f" (< LoD {lod:.3g} %)" if lod is not None else "")
    if status == ResultStatus.FAILED:
        return "not reportable (failed)"
    value = row.get("pct_ink")
    text = "no value" if value is None else f"{value:.3g} %"
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is not None and hi is not None:
        text += f" (95 % CI {lo:.3g}-{hi:.3g})"
    if status == ResultStatus.BELOW_LOQ:
        text += ", below LoQ"
    if row.get("qc_verdict") == QcVerdict.REVIEW:
        text += ", QC review"
    return text
