"""Chimera: chimerism monitoring for an iPSC-derived NK cell (iNK) product."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chimera")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
