"""Exceptions of the material stage (HU -> density -> modulus).

Each carries a one-line message naming the problem and a ``hint`` naming the fix, like every
:class:`~meshing.errors.OsteofeError`.
"""

from __future__ import annotations

from meshing.errors import OsteofeError

__all__ = ["CalibrationError", "MappingError", "MaterialError", "MaterialLawError"]


class MaterialError(OsteofeError):
    """Base class of the errors raised by :mod:`material`."""


class CalibrationError(MaterialError):
    """The HU -> density calibration is implausible, or the CT was never rescaled to HU."""


class MaterialLawError(MaterialError):
    """A density chain or density-property law is unknown or used for the wrong quantity."""


class MappingError(MaterialError):
    """CT values could not be mapped to the mesh (cells outside the CT, bad quadrature)."""
