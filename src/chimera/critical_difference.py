"""Whether two results differ beyond their measurement error (methods.md 9.1).

Each result's standard uncertainty combines its own CI with the assay's between-run variation
(``CriticalDifferenceSettings.between_run``, defaults in ``defaults/alert_rules.toml``):

* **within-sample** part from the CI, converted with the quantile that built it (``ci_quantile``:
  t for a few loci or replicates, 1.96 for Poisson; null = 1.96): ``w = half-width / q``, using
  the larger half-width (CIs are clamped at 0 % and asymmetric on the % scale for PCR);
* **between-run** part: ``sd_pct`` (points) and ``cv`` (fraction of the value) of the method.

Rules, with ``z`` = ``CriticalDifferenceSettings.z``:

* **additive** (any STR in the pair, or no ln-scale SE): significant when
  ``|x2 - x1| > z * sqrt(u1^2 + u2^2)``, ``u^2 = w^2 + sd^2 + (cv * x)^2``;
  equal ``u`` gives CD = 2.77 u (STR SD 2 points: CD = 5.5 points).
* **multiplicative** (qPCR/ddPCR on both sides, both values > 0): significant when
  ``|ln(x2 / x1)| > z * sqrt(se1^2 + se2^2)``, ``se^2 = w_ln^2 + ln(1 + cv^2) + (sd / x)^2`` with
  ``w_ln`` the larger half-width of the CI on the ln scale / q.
* **detection** (a ``not_detected`` side; no CI exists for "nothing"): ``not_detected -> value`` is
  a significant rise when the value's lower bound ``x - sqrt((x - ci_low)^2 * (z/q)^2 + z^2 *
  (sd^2 + (cv x)^2))`` exceeds the earlier sample's LoD; ``value -> not_detected`` is a significant
  fall when the earlier value's lower bound exceeds the later LoD; ``not_detected ->
  not_detected`` is no change. The LoD is ``lod_pct``, else ``ci_high``; ``critical_difference_pct``
  is then the level the detected value had to exceed (LoD + its margin).

``below_loq`` results keep their estimate and CI (methods.md 4) and are compared numerically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import polars as pl

from chimera.alerts.config import CriticalDifferenceSettings
from schemas.vocab import CdScale, ChangeDirection, Method, ResultStatus

DEFAULT_CI_QUANTILE = 1.96
"""Quantile assumed for a CI whose ``ci_quantile`` is null (a normal 95 % CI)."""

PCR_METHODS = (Method.QPCR, Method.DDPCR)
RESULT_FIELDS: dict[str, pl.DataType] = {
    "pct_ink": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "ci_quantile": pl.Float64(),
    "lod_pct": pl.Float64(),
    "result_status": pl.String(),
    "method": pl.String(),
}
"""The columns a comparison reads from each result (prefixed, e.g. ``prev_pct_ink``)."""

CHANGE_COLUMNS: dict[str, pl.DataType] = {
    "change_pct": pl.Float64(),
    "change_ln": pl.Float64(),
    "critical_difference_pct": pl.Float64(),
    "critical_difference_ln": pl.Float64(),
    "cd_scale": pl.String(),
    "change_direction": pl.String(),
    "significant_change": pl.Boolean(),
}
"""What :func:`judge_change` returns (the trend table's change columns)."""

_HAS_VALUE = frozenset({ResultStatus.QUANTIFIED.value, ResultStatus.BELOW_LOQ.value})
_METHOD_OF = {m.value: m for m in Method}
_PCR_NAMES = frozenset(m.value for m in PCR_METHODS)
_NOT_DETECTED = ResultStatus.NOT_DETECTED.value
_RISE, _FALL, _NONE = (
    d.value for d in (ChangeDirection.RISE, ChangeDirection.FALL, ChangeDirection.NONE)
)
_DETECTION, _ADDITIVE, _MULTIPLICATIVE = (
    s.value for s in (CdScale.DETECTION, CdScale.ADDITIVE, CdScale.MULTIPLICATIVE)
)

Result = Mapping[str, Any]
"""A result with the ``RESULT_FIELDS`` keys (missing keys are null), e.g. a trend row."""


class _Side(NamedTuple):
    """One result's value, state, LoD, uncertainties and lower bound (module docstring)."""

    x: float | None
    status: str | None
    pcr: bool
    lod: float | None
    u2: float | None
    se_ln2: float | None
    lower: float | None
    margin: float | None


def _optional_max(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return b if a is None else a
    return max(a, b)


def _side(row: Result, cd: CriticalDifferenceSettings) -> _Side:
    get = row.get
    return _side_of(
        get("pct_ink"), get("ci_low"), get("ci_high"), get("ci_quantile"), get("lod_pct"),
        get("result_status"), get("method"), cd=cd,
    )  # fmt: skip


def _side_of(
    x: float | None,
    lo: float | None,
    hi: float | None,
    ci_quantile: float | None,
    lod_pct: float | None,
    status: str | None,
    method: str | None,
    *,
    cd: CriticalDifferenceSettings,
) -> _Side:
    q = ci_quantile or DEFAULT_CI_QUANTILE
    run = cd.between_run.get(_METHOD_OF[method]) if method in _METHOD_OF else None
    sd, cv = (run.sd_pct, run.cv) if run is not None else (0.0, 0.0)
    analytical = sd**2 + (cv * x) ** 2 if x is not None else None
    within = within_ln = margin = None
    if x is not None:
        within = _optional_max(None if hi is None else hi - x, None if lo is None else x - lo)
        if x > 0:
            upper_ln = math.log(hi) - math.log(x) if hi is not None and hi > 0 else None
            lower_ln = math.log(x) - math.log(lo) if lo is not None and lo > 0 else None
            within_ln = _optional_max(upper_ln, lower_ln)
        if lo is not None and analytical is not None:
            margin = math.sqrt((x - lo) ** 2 * (cd.z / q) ** 2 + cd.z**2 * analytical)
    u2 = None if within is None or analytical is None else (within / q) ** 2 + analytical
    se_ln2 = None
    if within_ln is not None and x is not None and x > 0:
        se_ln2 = (within_ln / q) ** 2 + math.log(1 + cv**2) + (sd / x) ** 2
        se_ln2 = se_ln2 if se_ln2 > 0 else None
    return _Side(
        x=x,
        status=status,
        pcr=method in _PCR_NAMES,
        lod=lod_pct if lod_pct is not None else hi,
        u2=u2,
        se_ln2=se_ln2,
        lower=None if margin is None or x is None else x - margin,
        margin=margin,
    )


def _greater(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a > b


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _combined(z: float, a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else z * math.sqrt(a + b)


def _detection(a: _Side, b: _Side) -> dict[str, Any]:
    """The detection rule: a not-detected side against a value (or both not detected)."""
    nd = _NOT_DETECTED
    if a.status == nd and b.status == nd:
        return {"cd_scale": _DETECTION, "change_direction": _NONE,
                "significant_change": False}  # fmt: skip
    if a.status == nd and b.status in _HAS_VALUE and b.x is not None:
        return {"cd_scale": _DETECTION, "change_direction": _RISE,
                "critical_difference_pct": _plus(a.lod, b.margin),
                "significant_change": _greater(b.lower, a.lod)}  # fmt: skip
    if a.status in _HAS_VALUE and a.x is not None and b.status == nd:
        return {"cd_scale": _DETECTION, "change_direction": _FALL,
                "critical_difference_pct": _plus(b.lod, a.margin),
                "significant_change": _greater(a.lower, b.lod)}  # fmt: skip
    return {}


def _numeric(a: _Side, b: _Side, cd: CriticalDifferenceSettings) -> dict[str, Any]:
    """Additive or multiplicative rule for two results with values."""
    x1, x2 = float(a.x or 0.0), float(b.x or 0.0)
    direction = _RISE if x2 > x1 else _FALL if x2 < x1 else _NONE
    out: dict[str, Any] = {"change_pct": x2 - x1, "change_direction": direction}
    if x1 > 0 and x2 > 0:
        out["change_ln"] = math.log(x2 / x1)
    cd_ln = _combined(cd.z, a.se_ln2, b.se_ln2)
    if a.pcr and b.pcr and cd_ln is not None and "change_ln" in out:
        factor = math.exp(cd_ln) - 1 if x2 >= x1 else 1 - math.exp(-cd_ln)
        out.update(cd_scale=_MULTIPLICATIVE, critical_difference_ln=cd_ln,
                   critical_difference_pct=x1 * factor,
                   significant_change=abs(out["change_ln"]) > cd_ln)  # fmt: skip
        return out
    cd_add = _combined(cd.z, a.u2, b.u2)
    if cd_add is not None:
        out.update(cd_scale=_ADDITIVE, critical_difference_pct=cd_add,
                   significant_change=abs(x2 - x1) > cd_add)  # fmt: skip
    return out


def judge_change(
    first: Result, second: Result, *, cd: CriticalDifferenceSettings
) -> dict[str, Any]:
    """Return the change from result ``first`` to result ``second`` (the ``CHANGE_COLUMNS``).

    The module docstring states the additive, multiplicative and detection rules.

    Examples
    --------
    methods.md 9.1: two STR results with negligible own error and a between-run SD of 2 points
    differ significantly only beyond 1.96 * sqrt(2) * 2 = 5.54 points:

    >>> from chimera.alerts.config import packaged_alert_settings
    >>> cd = packaged_alert_settings().critical_difference
    >>> a = {"pct_ink": 10.0, "ci_low": 10.0, "ci_high": 10.0, "result_status": "quantified",
    ...      "method": "STR"}
    >>> change = judge_change(a, {**a, "pct_ink": 16.0, "ci_low": 16.0, "ci_high": 16.0}, cd=cd)
    >>> round(change["critical_difference_pct"], 2), change["significant_change"]
    (5.54, True)
    """
    return _judge(_side(first, cd), _side(second, cd), cd)


def _judge(a: _Side, b: _Side, cd: CriticalDifferenceSettings) -> dict[str, Any]:
    both = a.status in _HAS_VALUE and b.status in _HAS_VALUE and a.x is not None and b.x is not None
    found = _numeric(a, b, cd) if both else _detection(a, b)
    return {name: found.get(name) for name in CHANGE_COLUMNS}


def compare_pairs(
    pairs: Sequence[tuple[Result, Result]], *, cd: CriticalDifferenceSettings
) -> list[dict[str, Any]]:
    """Judge each (earlier, later) pair of results with :func:`judge_change`.

    A result in several pairs (consecutive pairs of a series) is read once: ``pairs`` holds
    every result for the whole call, so its ``id`` names it.
    """
    known: dict[int, _Side] = {}

    def side(row: Result) -> _Side:
        found = known.get(id(row))
        if found is None:
            found = known[id(row)] = _side(row, cd)
        return found

    return [_judge(side(a), side(b), cd) for a, b in pairs]


def compare_results(
    frame: pl.DataFrame, first: str, second: str, *, cd: CriticalDifferenceSettings
) -> pl.DataFrame:
    """Return ``frame`` with the ``CHANGE_COLUMNS`` judged from prefixed result columns.

    Both results are read from the ``RESULT_FIELDS`` columns with the given prefixes (e.g.
    ``"prev_"`` and ``""``).
    """
    judged = [
        _judge(a, b, cd)
        for a, b in zip(_sides(frame, first, cd), _sides(frame, second, cd), strict=True)
    ]
    changes = pl.DataFrame(
        {name: [change[name] for change in judged] for name in CHANGE_COLUMNS},
        schema=CHANGE_COLUMNS,
    )
    return frame.drop(list(CHANGE_COLUMNS), strict=False).hstack(changes)


def _sides(frame: pl.DataFrame, prefix: str, cd: CriticalDifferenceSettings) -> list[_Side]:
    """Each row's side from the ``RESULT_FIELDS`` columns with ``prefix``, read column-wise."""
    columns = [frame[f"{prefix}{name}"].to_list() for name in RESULT_FIELDS]
    return [_side_of(*values, cd=cd) for values in zip(*columns, strict=True)]


def standard_uncertainty(result: Result, *, cd: CriticalDifferenceSettings) -> float | None:
    """Return a result's standard uncertainty in points: sqrt(w^2 + sd^2 + (cv x)^2)."""
    u2 = _side(result, cd).u2
    return None if u2 is None else math.sqrt(u2)


def significant_direction(change: Mapping[str, Any]) -> ChangeDirection | None:
    """Return the direction of a significant change, None when not significant."""
    if change.get("significant_change") is not True:
        return None
    return ChangeDirection(change["change_direction"])
