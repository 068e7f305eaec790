"""Chimera: chimerism monitoring for an iPSC-derived NK cell (iNK) product."""

import os
from importlib.metadata import PackageNotFoundError, version

# Prefect reads its settings once, when first imported: with these (Prefect's documented
# opt-outs for the server and for the SDK) no Chimera process sends usage analytics, even one
# started by hand in a terminal with a temporary Prefect server. Child processes inherit them.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"

try:
    __version__ = version("chimera")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
