"""osteofe: CT-based finite-element femoral strength and fracture risk.

The application package: command line, configuration, the pipeline and reports. It is the
only package that imports all four stages (meshing, material, fea, risk).
"""

from importlib import metadata

try:
    __version__ = metadata.version("osteofe")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"

__all__ = ["__version__"]
