"""osteofe: CT-based finite-element femoral strength and fracture risk.

The application package: command line, configuration, the pipeline and reports. It is the
only package that imports all four stages (meshing, material, fea, risk).

Public API: :func:`analyze` (one femur -> :class:`StrengthResult`) and :func:`load_result`
(read a result folder). They are imported on first use, so ``import osteofe`` stays light.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("osteofe")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from osteofe.api import analyze, load_result
    from osteofe.result import StrengthResult

__all__ = ["StrengthResult", "__version__", "analyze", "load_result"]


def __getattr__(name: str) -> Any:
    """Lazy access to the public API (DOLFINx and friends load only when analysing)."""
    if name in ("analyze", "load_result"):
        from osteofe import api

        return getattr(api, name)
    if name == "StrengthResult":
        from osteofe.result import StrengthResult

        return StrengthResult
    raise AttributeError(f"module 'osteofe' has no attribute {name!r}")
