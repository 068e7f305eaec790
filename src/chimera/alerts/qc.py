"""``repeated_qc_failure``: at least ``min_failures`` failed or QC-fail results of a patient and specimen.

Counts every current (not superseded) ``Chimerism`` row, any method, headline or not: monitoring
with gaps is a signal of its own, whatever the headline choice hid.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from chimera.alerts.config import RepeatedQcFailureRule
from chimera.alerts.evidence import Episode, jsonable
from chimera.trends import SERIES_KEY, specimen_expr
from schemas.vocab import AlertRuleId, QcVerdict, ResultStatus

_LISTED = 5
_COLUMNS = (
    "sample_id",
    "collected_at",
    "study_day",
    "method",
    "result_status",
    "qc_verdict",
    "qc_reasons",
    "is_headline",
    "source_file",
)


def repeated_qc_failure(chimerism: pl.LazyFrame, rule: RepeatedQcFailureRule) -> list[Episode]:
    """Return one episode per patient x specimen with at least ``min_failures`` failed results."""
    failed = (
        chimerism.filter(
            pl.col("superseded").not_()
            & (
                (pl.col("result_status") == ResultStatus.FAILED)
                | (pl.col("qc_verdict") == QcVerdict.FAIL)
            )
        )
        .with_columns(specimen_expr())
        .select(*SERIES_KEY, *_COLUMNS)
        .sort(*SERIES_KEY, "collected_at", "sample_id", "method", nulls_last=True)
        .collect()
    )
    out = []
    for (patient_id, specimen), group in failed.group_by(SERIES_KEY, maintain_order=True):
        if group.height < rule.min_failures:
            continue
        rows = group.to_dicts()
        listed = "; ".join(
            f"{r['sample_id']} {r['method']} ({r['qc_reasons'] or r['result_status']})"
            for r in rows[:_LISTED]
        )
        message = (
            f"{group.height} results failed QC for this patient (threshold {rule.min_failures}): "
            f"{listed}{' ...' if group.height > _LISTED else ''}. Check sample handling and the "
            "assay; monitoring has gaps."
        )
        evidence: dict[str, Any] = {
            "compared": "the number of current failed or QC-fail results with the threshold",
            "error_model": "count of results (any method, headline or not)",
            "n_failures": group.height,
            "results": [
                {k: jsonable(v) for k, v in r.items() if k not in SERIES_KEY} for r in rows
            ],
        }
        out.append(
            Episode(
                rule_id=AlertRuleId.REPEATED_QC_FAILURE,
                rule=rule,
                patient_id=str(patient_id),
                specimen=str(specimen),
                episode_key="qc failures",
                onset_day=0.0,
                message=message,
                evidence=evidence,
            )
        )
    return out
