"""Two-level p-multigrid for P2 elasticity: the P1 space of the same mesh as coarse level.

The P2 stiffness is smoothed by Chebyshev/Jacobi; the coarse correction solves the P1
stiffness of the same cells, assembled directly from the same bilinear form (same moduli,
same quadrature), with one GAMG V-cycle. Because P1 is a subspace of P2, that P1 matrix
*is* the Galerkin product I^T A I of the natural embedding I (rows of constrained dofs
aside), so no parallel triple-matrix product is formed: GAMG applied to the P2 matrix
itself spends most of its set-up, and under MPI most of its memory, in that product
(benchmarks/README, "Memory per MPI rank"). The method is p-multigrid (Ronquist & Patera
1987; Helenbrook, Mavriplis & Atkins 2003), with an algebraic solver on the lowest order.

Constrained dofs: the interpolation's rows of constrained P2 dofs and columns of
constrained P1 dofs (vertices whose P2 dof is constrained) are zero, and the P1 matrix has
unit rows/columns there, so a coarse correction never moves a prescribed value.

The PETSc options of the method are data, in :meth:`fea.types.SolverOptions.petsc_options`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from fea.backend import load_backend

__all__ = ["BASIX_TET_EDGES", "P1CoarseLevel", "rigid_body_modes"]

load_backend()

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import ufl  # noqa: E402
from petsc4py import PETSc as _PETSc  # noqa: E402

PETSc: Any = _PETSc

#: Local vertex pairs of the six edges of basix's reference tetrahedron, in the order of the
#: edge dofs of a P2 cell (after its four vertex dofs).
BASIX_TET_EDGES = np.array([[2, 3], [1, 3], [1, 2], [0, 3], [0, 2], [0, 1]], dtype=np.int64)


def rigid_body_modes(space: Any) -> Any:
    """The six rigid-body modes of a vector Lagrange space as a PETSc near-nullspace.

    GAMG's aggregates interpolate them exactly. Collective.
    """
    size_local = space.dofmap.index_map.size_local
    coords = space.tabulate_dof_coordinates()[:size_local]
    vec = PETSc.Vec().createWithArray(np.ascontiguousarray(coords.ravel()), bsize=3,
                                      comm=space.mesh.comm)
    return PETSc.NullSpace().createRigidBody(vec)


def _embedding(fine_space: Any, coarse_map: Any, fine_cells: npt.NDArray[np.int32],
               coarse_cells: npt.NDArray[np.int32], fine_free: npt.NDArray[np.bool_],
               coarse_free: npt.NDArray[np.bool_]) -> Any:
    """The P1 -> P2 embedding I as a PETSc AIJ matrix (rows: P2 dofs, columns: P1 dofs).

    A P2 vertex dof takes its vertex's P1 value, a P2 edge dof the mean of its two
    vertices' (exact for straight-sided cells). Built from the dofmaps: one or two entries
    per row, where dolfinx's general interpolation matrix stores every (P2, P1) pair of a
    cell (~45 per row: ~0.5 GB at 1e6 dofs). Entries of constrained rows/columns are left
    out.

    Args:
        fine_space: The P2 vector space.
        coarse_map: Index map of the P1 vertices (blocks of 3 dofs).
        fine_cells: (c, 10) P2 blocks of each local cell.
        coarse_cells: (c, 4) P1 blocks of each local cell.
        fine_free: (3 n2,) bool over the local P2 dofs (owned and ghosts).
        coarse_free: (3 n1,) bool over the local P1 dofs (owned and ghosts).
    """
    bs = 3
    fine_map = fine_space.dofmap.index_map
    ends = coarse_cells[:, BASIX_TET_EDGES]  # (c, 6, 2)
    row = np.concatenate([fine_cells[:, :4].ravel(), np.repeat(fine_cells[:, 4:].ravel(), 2)])
    col = np.concatenate([coarse_cells.ravel(), ends.ravel()])
    weight = np.concatenate([np.ones(coarse_cells.size), np.full(ends.size, 0.5)])
    owned = row < fine_map.size_local
    num_coarse = coarse_map.size_local + coarse_map.num_ghosts
    _, first = np.unique(row[owned].astype(np.int64) * num_coarse + col[owned],
                         return_index=True)  # every cell around a dof gives the same pair
    row, col, weight = row[owned][first], col[owned][first], weight[owned][first]
    rows = (bs * row[:, None] + np.arange(bs)).ravel()
    cols = (bs * col[:, None] + np.arange(bs)).ravel()
    weights = np.repeat(weight, bs)
    keep = fine_free[rows] & coarse_free[cols]
    rows, cols, weights = rows[keep], cols[keep], weights[keep]
    global_block = coarse_map.local_to_global(np.arange(num_coarse, dtype=np.int32))
    global_cols = bs * np.asarray(global_block, dtype=np.int64)[cols // bs] + cols % bs
    order = np.lexsort((global_cols, rows))
    num_rows = bs * fine_map.size_local
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_rows))])
    matrix = PETSc.Mat().createAIJ(
        size=((num_rows, PETSc.DETERMINE), (bs * coarse_map.size_local, PETSc.DETERMINE)),
        csr=(indptr.astype(PETSc.IntType), global_cols[order].astype(PETSc.IntType),
             weights[order]), comm=fine_space.mesh.comm)
    matrix.assemble()
    return matrix


class P1CoarseLevel:
    """The P1 level of a P2 model: space, stiffness, interpolation, rigid-body modes.

    Collective (every rank of the mesh's communicator constructs it).

    Args:
        fine_space: The P2 vector space of the model.
        bilinear_form: ``(trial, test) -> ufl form`` of the model's stiffness (same
            moduli and measure), applied to the P1 trial/test functions.
        fine_constrained: (n_local,) bool over the fine space's local unrolled dofs
            (owned and ghosts): the dofs a Dirichlet condition prescribes.
    """

    def __init__(self, fine_space: Any, bilinear_form: Callable[[Any, Any], Any],
                 fine_constrained: npt.NDArray[np.bool_]) -> None:
        domain = fine_space.mesh
        self.space = dolfinx.fem.functionspace(domain, ("Lagrange", 1, (3,)))
        self.form = dolfinx.fem.form(bilinear_form(ufl.TrialFunction(self.space),
                                                   ufl.TestFunction(self.space)))
        bs = 3
        coarse_map = self.space.dofmap.index_map
        fine_cells = np.asarray(fine_space.dofmap.list)
        coarse_cells = np.asarray(self.space.dofmap.list)
        num_coarse = coarse_map.size_local + coarse_map.num_ghosts
        # basix numbers a P2 cell's four vertex dofs first, in P1's order.
        fine_block = np.empty(num_coarse, dtype=np.int64)
        fine_block[coarse_cells.ravel()] = fine_cells[:, :4].ravel()
        fine_fixed = np.asarray(fine_constrained, dtype=bool)
        coarse_fixed = dolfinx.la.vector(coarse_map, bs, dtype=np.int8)
        coarse_fixed.array[:] = fine_fixed[bs * fine_block[:, None] + np.arange(bs)].ravel()
        coarse_fixed.scatter_forward()  # the owner's value on ghosts
        constrained = coarse_fixed.array.astype(bool)
        self._bcs = [
            dolfinx.fem.dirichletbc(PETSc.ScalarType(0.0),
                                    (np.flatnonzero(constrained[comp::bs]) * bs + comp)
                                    .astype(np.int32),
                                    self.space.sub(comp))
            for comp in range(bs)
        ]
        self.matrix = dolfinx.fem.petsc.assemble_matrix(self.form, bcs=self._bcs)
        self.matrix.assemble()
        self.nullspace = rigid_body_modes(self.space)
        self.matrix.setNearNullSpace(self.nullspace)
        self.interpolation = _embedding(fine_space, coarse_map, fine_cells, coarse_cells,
                                        ~fine_fixed, ~constrained)

    def reassemble(self) -> None:
        """Reassemble the P1 stiffness in place (after the moduli changed; collective)."""
        self.matrix.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(self.matrix, self.form,  # type: ignore[misc]
                                          bcs=self._bcs)
        self.matrix.assemble()

    def attach(self, pc: Any) -> None:
        """Make ``pc`` the two-level method on this coarse level (before setFromOptions)."""
        pc.setType("mg")
        pc.setMGLevels(2)
        pc.setMGType(PETSc.PC.MGType.MULTIPLICATIVE)
        pc.setMGInterpolation(1, self.interpolation)

    def set_coarse_operator(self, pc: Any) -> None:
        """Give the coarse solver the P1 stiffness (after setFromOptions, before setUp)."""
        pc.getMGCoarseSolve().setOperators(self.matrix)

    def destroy(self) -> None:
        """Free the PETSc objects (collective)."""
        self.interpolation.destroy()
        self.matrix.destroy()
        self.nullspace.destroy()
