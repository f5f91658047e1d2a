"""Lazy, checked import of the DOLFINx wheel (dolfinx-solver-real).

``dolfinx_solver`` must be imported before ``dolfinx`` and ``petsc4py`` so that the wheel's
bundled PETSc/MPI libraries are found; this module is the one place that does it.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from meshing.errors import OsteofeError

__all__ = ["BackendMissingError", "load_backend"]


class BackendMissingError(OsteofeError):
    """DOLFINx/PETSc are not installed in this environment."""


#: PETSc's default signal handlers take SIGPIPE, SIGTERM, SIGHUP, SIGSEGV... from Python and
#: turn each into MPI_Abort. SIGPIPE is the harmful one: Python ignores it so that a write to a
#: closed socket raises an exception; with PETSc's handler, a Dask scheduler in this process
#: that writes to a worker which has just died aborts the whole process (a cohort test did,
#: at random, in CI). SIGTERM must reach Python's own handler (a cohort run stops cleanly).
PETSC_INIT_OPTIONS: tuple[str, ...] = ("-no_signal_handler",)


def _init_petsc_without_signal_handlers() -> None:
    """Initialise PETSc (once per process) with :data:`PETSC_INIT_OPTIONS`.

    A no-op when petsc4py's PETSc was initialised already (its options are then fixed).
    """
    petsc4py = importlib.import_module("petsc4py")
    if "petsc4py.PETSc" not in sys.modules:
        petsc4py.init(list(PETSC_INIT_OPTIONS))


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
        _init_petsc_without_signal_handlers()
        return importlib.import_module("dolfinx")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendMissingError(
            f"the finite-element backend is not available ({exc})",
            hint="install osteofe with its dependencies: `make env` or "
            "`pip install dolfinx-solver-real==0.11.0.post0`",
        ) from exc
