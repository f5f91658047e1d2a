"""Lazy, checked import of the DOLFINx wheel (dolfinx-solver-real).

``dolfinx_solver`` must be imported before ``dolfinx`` and ``petsc4py`` so that the wheel's
bundled PETSc/MPI libraries are found; this module is the one place that does it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from meshing.errors import OsteofeError

__all__ = ["BackendMissingError", "load_backend"]


class BackendMissingError(OsteofeError):
    """DOLFINx/PETSc are not installed in this environment."""


def load_backend() -> ModuleType:
    """Import ``dolfinx_solver`` then ``dolfinx`` and return the dolfinx module.

    Raises:
        BackendMissingError: when the DOLFINx wheel is not installed.
    """
    try:
        # h5py (meshio's XDMF) must load its own HDF5 before the wheel's PETSc pulls in a
        # different HDF5: the other way round h5py fails with "Not a datatype".
        importlib.import_module("h5py")
    except ImportError:  # pragma: no cover - h5py is optional (XDMF only)
        pass
    try:
        importlib.import_module("dolfinx_solver")
        return importlib.import_module("dolfinx")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendMissingError(
            f"the finite-element backend is not available ({exc})",
            hint="install osteofe with its dependencies: `make env` or "
            "`pip install dolfinx-solver-real==0.11.0.post0`",
        ) from exc
