"""Property: adding a later sample never removes an alert that was already opened (issue 16).

Every rule is causal (an episode depends only on results up to its onset) and an alert is named by
its earliest episode, so the alerts of a patient's first k samples are still there, with the same
ids, after sample k + 1 arrives, whatever it shows.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl
from chimerism_builders import at, kinetic_patient, result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_alerts import NOW, detect

from chimera.alerts.states import update_alert_states

_KINDS = ("transient", "accumulating", "rejecting", "never", "expanding")


def _recipient(share: float, ink: float | None) -> dict[str, Any]:
    pct = share * (100.0 - (ink or 0.0)) / 100.0
    return {
        "genome_model": "three_genome",
        "pct_recipient": pct,
        "pct_recipient_ci_low": pct / 1.15,
        "pct_recipient_ci_high": min(pct * 1.15, 100.0),
        "pct_hsct_donor": max(100.0 - pct - (ink or 0.0), 0.0),
        "pct_hsct_donor_ci_low": None,
        "pct_hsct_donor_ci_high": None,
    }


@st.composite
def _patient(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A designed patient of a random kind, perturbed: lost doses, review results, extra samples."""
    kind = draw(st.sampled_from(_KINDS))
    half_life = {"accumulating": 27.0}.get(kind, draw(st.floats(0.8, 6.0)))
    top = 4.0 if kind == "accumulating" else 20.0
    peaks = [0.0 if kind == "never" else draw(st.floats(0.3, top)) for _ in range(13)]
    rows = kinetic_patient(
        "P", peaks=peaks, half_life_days=half_life, follow_up=(171.0, 192.0, 248.0)
    )
    lost_from = draw(st.floats(3.0, 60.0)) if kind == "rejecting" else math.inf
    out = []
    for r in rows:
        day = (r["collected_at"] - at(0.0)).total_seconds() / 86400
        new = result("P", r["sample_id"], day, "not_detected") if day > lost_from else dict(r)
        if draw(st.integers(0, 9)) == 0:
            new["qc_verdict"] = "review"
        out.append(new)
    extra = draw(st.lists(st.tuples(st.floats(170.0, 360.0), st.floats(0.0, 30.0)), max_size=5))
    for i, (day, pct) in enumerate(extra):
        grow = pct * (1.0 + i) if kind == "expanding" else pct
        out.append(
            result("P", f"x{i}", day, "quantified", min(grow, 95.0))
            if grow >= 0.2
            else result("P", f"x{i}", day, "not_detected")
        )
    if draw(st.booleans()):
        walk = draw(st.lists(st.floats(-8.0, 15.0), min_size=len(out), max_size=len(out)))
        share = 20.0
        ordered = sorted(out, key=lambda r: r["collected_at"])
        for r, step in zip(ordered, walk, strict=True):
            share = min(max(share + step, 1.0), 95.0)
            r.update(_recipient(share, r["pct_ink"]))
        out = ordered
    return sorted(out, key=lambda r: (r["collected_at"], r["sample_id"]))


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(_patient(), st.floats(0.05, 0.95))
def test_a_later_sample_never_removes_an_opened_alert(
    rows: list[dict[str, Any]], where: float
) -> None:
    """Alerts opened on the first samples are all still open (same ids) with the next one added."""
    times = sorted({r["collected_at"] for r in rows})
    cut = times[min(int(where * len(times)), len(times) - 2)]
    earlier = [r for r in rows if r["collected_at"] <= cut]
    later = [r for r in rows if r["collected_at"] > cut]
    nxt = [r for r in later if r["collected_at"] == later[0]["collected_at"]]
    before = update_alert_states(pl.DataFrame(), detect(earlier), now=NOW)
    after = update_alert_states(before, detect(earlier + nxt), now=NOW)
    still = after.filter(pl.col("alert_id").is_in(before["alert_id"].to_list()))
    assert set(still["state"]) <= {"ongoing"}, still.select("rule", "state", "episode_key").rows()
    assert set(before["alert_id"]) <= set(after["alert_id"])
