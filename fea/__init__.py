"""Finite-element stage: landmarks, load cases, the DOLFINx/PETSc solver, failure criteria.

The pure-numpy parts (``fea.landmarks``, ``fea.loads``, ``fea.failure``, ``fea.topology``)
import without DOLFINx; ``fea.solver`` imports DOLFINx/PETSc/MPI lazily through
:func:`fea.backend.load_backend`, which fails with a clear message where they are missing.
"""

from fea.errors import BoundaryConditionError, LandmarkError, SolverError

__all__ = ["BoundaryConditionError", "LandmarkError", "SolverError"]
