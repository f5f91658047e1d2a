"""Domain exceptions: re-exported from :mod:`core.errors`, where they live.

Kept so that ``from meshing.errors import InputError`` goes on working in every stage.
"""

from core.errors import ImageReadError, InputError, MeshingError, MeshQualityError, OsteofeError

__all__ = ["ImageReadError", "InputError", "MeshQualityError", "MeshingError", "OsteofeError"]
