"""Exceptions of the finite-element stage."""

from __future__ import annotations

from meshing.errors import OsteofeError

__all__ = ["BoundaryConditionError", "LandmarkError", "SolverError"]


class LandmarkError(OsteofeError):
    """Anatomical landmarks (head, shaft axis) could not be found reliably."""


class BoundaryConditionError(OsteofeError):
    """Loads or supports could not be placed (empty patch, no fixed nodes, ...)."""


class SolverError(OsteofeError):
    """The linear solver did not converge; carries the residual history in the message."""
