"""Pick one headline value per sample when several methods measured it (methods.md section 7).

Declared rule, in order:

1. STR quantified at or above ``str_headline_above_pct`` (its LoQ, default 5 %) -> STR
   ("STR above its LoQ"): STR is validated in the mixed range where qPCR is least accurate.
2. Otherwise the first non-failed result in ``pcr_preference`` order (ddPCR, qPCR, STR)
   ("PCR below STR LoQ"): only PCR sees the 0.01-5 % range.
3. Otherwise (every method failed) the first failed row ("all methods failed").

Values are never averaged across methods. When two methods both quantified and differ by more
than 1.96·√(u_a² + u_b²) (u = CI half-width / 1.96), the headline row's rule names the
discordance (``METHOD_DISCORDANCE``) so a reviewer sees both.
"""

from __future__ import annotations

import math

import polars as pl

from chimera.settings import ReconcileSettings

_Z95 = 1.959963984540054


def _uncertainty(row: dict[str, object]) -> float | None:
    low, high = row.get("ci_low"), row.get("ci_high")
    if not isinstance(low, float) or not isinstance(high, float):
        return None
    return (high - low) / (2 * _Z95)


def discordant(a: dict[str, object], b: dict[str, object]) -> bool:
    """Whether two quantified results differ beyond 1.96·√(u_a² + u_b²) (methods.md 9.1).

    Examples
    --------
    >>> discordant({"pct_ink": 10.0, "ci_low": 9.0, "ci_high": 11.0},
    ...            {"pct_ink": 20.0, "ci_low": 19.0, "ci_high": 21.0})
    True
    """
    ua, ub = _uncertainty(a), _uncertainty(b)
    xa, xb = a.get("pct_ink"), b.get("pct_ink")
    if ua is None or ub is None or not isinstance(xa, float) or not isinstance(xb, float):
        return False
    return abs(xa - xb) > _Z95 * math.sqrt(ua**2 + ub**2)


def choose_headline(results: pl.DataFrame, *, settings: ReconcileSettings) -> pl.DataFrame:
    """Add ``is_headline`` and ``headline_rule`` to current (not superseded) result rows.

    ``results`` holds ``sample_id, method, pct_ink, ci_low, ci_high, result_status,
    qc_verdict`` for one or more samples, one row per sample x method.
    """
    flags: dict[tuple[str, str], str] = {}
    for (sample_id,), group in results.group_by(["sample_id"], maintain_order=True):
        rows = {str(r["method"]): r for r in group.iter_rows(named=True)}
        chosen, rule = _pick(rows, settings=settings)
        quantified = [r for r in rows.values() if r["result_status"] == "quantified"]
        others = [r for r in quantified if r["method"] != chosen]
        if chosen in rows and rows[chosen]["result_status"] == "quantified":
            clash = [r["method"] for r in others if discordant(rows[chosen], r)]
            if clash:
                rule += f"; METHOD_DISCORDANCE with {', '.join(sorted(clash))}"
        flags[(str(sample_id), chosen)] = rule
    chosen_frame = pl.DataFrame(
        [{"sample_id": k[0], "method": k[1], "headline_rule": v} for k, v in flags.items()],
        schema={"sample_id": pl.String, "method": pl.String, "headline_rule": pl.String},
    )
    return (
        results.drop("is_headline", "headline_rule", strict=False)
        .join(chosen_frame, on=["sample_id", "method"], how="left", maintain_order="left")
        .with_columns(is_headline=pl.col("headline_rule").is_not_null())
    )


def _pick(rows: dict[str, dict[str, object]], *, settings: ReconcileSettings) -> tuple[str, str]:
    str_row = rows.get("STR")
    if (
        str_row is not None
        and str_row["result_status"] == "quantified"
        and isinstance(str_row["pct_ink"], float)
        and str_row["pct_ink"] >= settings.str_headline_above_pct
    ):
        return "STR", f"STR above its LoQ ({settings.str_headline_above_pct:g} %)"
    for method in settings.pcr_preference:
        row = rows.get(method)
        if row is not None and row["result_status"] != "failed":
            if len(rows) == 1:
                return method, "only method measured"
            return method, f"preference {' > '.join(settings.pcr_preference)} below STR LoQ"
    first = next(iter(rows))
    return first, "all methods failed"
