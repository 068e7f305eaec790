"""Prefect flows and deployments for Chimera: thin orchestration over ``chimera`` functions.

``ingest`` polls the inbox once, ``trends`` refreshes trend/kinetics/alert tables, ``nightly``
verifies the warehouse against the archive and rebuilds it, ``deploy`` serves all three.
"""

import chimera  # noqa: F401  (first: Prefect analytics off before any flow imports Prefect)
