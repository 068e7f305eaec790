"""Which plates' samples read a product's registered reference: kept up to date file by file.

:class:`chimera.plate_targets.PlateTargets` answers :meth:`~PlateTargets.reading` from an index
brought up to date with the files added since the last question (issue 12 speed); the answer
must stay the rule's, computed from every file, whatever the order of files and questions.
"""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from chimera.plate_targets import PlateTargets

SAMPLES = ["REF", "CAL", "P01-D1", "P02-D1", None]
TARGETS = ["M1", "M2", "M3", "RPP30"]
PRODUCTS = (["REF"], ["REF", "CAL"], ["CAL"])


def _by_rule(index: PlateTargets, product_ids: list[str], targets: set[str]) -> set[str]:
    """Samples on the files where a wanted target has no well of the product (from scratch)."""
    found: set[str] = set()
    for samples in index.by_file.values():
        held = set().union(*(samples.get(sid, set()) for sid in product_ids))
        if (set().union(*samples.values()) - held) & targets:
            found.update(samples)
    return found


wells = st.tuples(
    st.sampled_from(["f1", "f2", "f3", "f4"]), st.sampled_from(SAMPLES), st.sampled_from(TARGETS)
)
steps = st.lists(
    st.one_of(
        st.lists(wells, min_size=1, max_size=6).map(lambda rows: ("add", rows)),
        st.tuples(st.sampled_from(range(len(PRODUCTS))), st.sets(st.sampled_from(TARGETS))).map(
            lambda ask: ("ask", ask)
        ),
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_reading_answers_as_the_rule_over_every_file_12(script: list[tuple[str, object]]) -> None:
    """Files added (also to a file seen before) between questions about several products."""
    index = PlateTargets()
    for kind, step in script:
        if kind == "add":
            sha, sample_id, target = zip(*step, strict=True)  # type: ignore[call-overload]
            index.add(
                pl.DataFrame(
                    {"source_sha256": sha, "sample_id": sample_id, "target": target},
                    schema=dict.fromkeys(("source_sha256", "sample_id", "target"), pl.String),
                )
            )
        else:
            which, targets = step  # type: ignore[misc]
            product = PRODUCTS[which]
            assert index.reading(product, targets) == _by_rule(index, product, set(targets))
