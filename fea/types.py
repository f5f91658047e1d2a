"""Plain types of the FE stage: solver settings, supports, nodal forces, solutions.

They hold numbers only (no DOLFINx, PETSc or MPI object), so that the configuration, the
pipeline, reports and tests can use them without the solver's libraries; the DOLFINx
adapter :mod:`fea.solver` re-exports them. The solver defaults live here, once:
:mod:`osteofe.config` takes its ``[solver]`` defaults from :class:`SolverOptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from core.types import FloatArray, IntArray

__all__ = ["CaseSolution", "DisplacementFunction", "NodalForces", "SolveStats", "SolverOptions",
           "Support"]

DisplacementFunction = Callable[[FloatArray], FloatArray]


@dataclass(frozen=True)
class SolverOptions:
    """Discretisation and linear-solver settings (PETSc options are data).

    Attributes:
        degree: Polynomial degree of the displacement (1 = P1, 2 = P2).
        ksp_type: PETSc Krylov method.
        pc_type: PETSc preconditioner ("gamg", "jacobi", "lu", ...).
        rtol: Relative residual tolerance.
        atol: Absolute residual tolerance.
        max_it: Iteration limit; not converging is an error, never a number.
        near_nullspace: Attach the six rigid-body modes for GAMG.
        extra: Further PETSc options (without prefix), override the defaults.
        modulus_quadrature_degree: Quadrature degree of the stiffness integral when moduli
            are given per quadrature point ((m, q) arrays; the points are
            :func:`modulus_quadrature_points` of this degree).
        p_multigrid: With degree 2 and GAMG: precondition with a two-level p-multigrid
            (Chebyshev/Jacobi on P2, one GAMG V-cycle on the P1 stiffness of the same mesh,
            :mod:`fea.pmultigrid`) instead of GAMG on the P2 matrix. Same answer to the
            tolerance; on the 946k-DOF phantom it needs a fraction of GAMG's set-up time and
            memory (benchmarks/README, "p-multigrid"). False restores GAMG on P2.
    """

    degree: int = 1
    ksp_type: str = "cg"
    pc_type: str = "gamg"
    rtol: float = 1e-8
    atol: float = 1e-14
    max_it: int = 2000
    near_nullspace: bool = True
    extra: dict[str, str] = field(default_factory=dict)
    modulus_quadrature_degree: int = 2
    p_multigrid: bool = True

    def __post_init__(self) -> None:
        if self.degree not in (1, 2):
            raise ValueError(f"displacement degree must be 1 or 2, got {self.degree}")
        if not 0.0 < self.rtol < 1.0:
            raise ValueError(f"rtol must lie in (0, 1), got {self.rtol}")

    @property
    def uses_p_multigrid(self) -> bool:
        """Whether a model with these options is preconditioned by the two-level method."""
        return self.p_multigrid and self.degree == 2 and self.pc_type == "gamg"

    def petsc_options(self, *, algebraic: bool = False) -> dict[str, Any]:
        """The PETSc options dictionary (without prefix).

        Args:
            algebraic: Give GAMG's options on the operator itself even where the model
                uses the two-level p-multigrid (for solvers that cannot hand PETSc the P1
                level, e.g. the KSP of a Newton tangent).
        """
        options: dict[str, Any] = {
            "ksp_type": self.ksp_type,
            "pc_type": self.pc_type,
            "ksp_rtol": self.rtol,
            "ksp_atol": self.atol,
            "ksp_max_it": self.max_it,
        }
        if self.pc_type == "gamg":
            options.update(
                {
                    "pc_gamg_type": "agg",
                    "pc_gamg_agg_nsmooths": 1,
                    "pc_gamg_threshold": 0.02,
                    "pc_gamg_square_graph": 1,
                    "pc_gamg_coarse_eq_limit": 1000,
                    "mg_levels_ksp_type": "chebyshev",
                    "mg_levels_pc_type": "jacobi",
                    "mg_levels_ksp_chebyshev_esteig_steps": 20,
                    # Chebyshev's upper bound is the estimated largest eigenvalue times this
                    # safety factor (PETSc's 1.1): P2 models with 5 MPa lytic/marrow cells
                    # beside 20 GPa cortex under the pinned fall supports underestimated it
                    # and made the smoother indefinite (KSP_DIVERGED_INDEFINITE_PC).
                    "mg_levels_ksp_chebyshev_esteig": "0,0.1,0,1.3",
                    # Free the Galerkin product's intermediates (A P, the transposed local
                    # blocks of P) once the fine-level coarse operator exists: kept for a
                    # numeric-only reuse GAMG never does (a refresh rebuilds it), they
                    # doubled the set-up's memory per rank under MPI (PETSc's
                    # MatProductClear; GAMG's products read it without a prefix, see
                    # fea.solver._UNPREFIXED_OPTIONS).
                    "mat_product_clear": 1,
                }
            )
        if self.pc_type in ("lu", "cholesky"):
            options["ksp_type"] = "preonly"
            options["pc_factor_mat_solver_type"] = "mumps"
        if self.uses_p_multigrid and not algebraic:
            options = _two_level_options(options)
            # A GAMG setting given by the user tunes the coarse level's GAMG.
            options.update({("mg_coarse_" + k if k.startswith("pc_gamg_") else k): v
                            for k, v in self.extra.items()})
            return options
        options.update(self.extra)
        return options

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {"degree": self.degree, "petsc_options": self.petsc_options(),
                "near_nullspace": self.near_nullspace,
                "preconditioner": ("two-level p-multigrid: Chebyshev/Jacobi on P2, GAMG on "
                                   "the P1 stiffness of the same mesh (Ronquist & Patera "
                                   "1987, J Sci Comput 2:389; Helenbrook, "
                                   "Mavriplis & Atkins 2003, AIAA 2003-3989)"
                                   if self.uses_p_multigrid else self.pc_type)}


#: Smoother of the P2 level of the two-level method: GAMG's level smoother (Chebyshev,
#: Jacobi, PETSc's 2 sweeps) with the same eigenvalue safety factor as GAMG's levels above.
_P2_SMOOTHER = {
    "mg_levels_ksp_type": "chebyshev",
    "mg_levels_pc_type": "jacobi",
    "mg_levels_ksp_max_it": 2,
    "mg_levels_ksp_chebyshev_esteig_steps": 20,
    "mg_levels_ksp_chebyshev_esteig": "0,0.1,0,1.3",
    # The operator is SPD: estimate its largest eigenvalue by CG (Lanczos), which keeps 4
    # vectors, not GMRES' one per step (20 vectors of the P2 space, held after the set-up).
    "mg_levels_esteig_ksp_type": "cg",
}


def _two_level_options(gamg_options: dict[str, Any]) -> dict[str, Any]:
    """The two-level method's options from those of CG + GAMG on the P2 matrix.

    The Krylov settings stay; the preconditioner becomes ``mg`` with the P2 smoother, a
    coarse operator given directly (not a Galerkin product), and GAMG's own settings
    moved under the coarse solver's ``mg_coarse_`` prefix (one V-cycle: ``preonly``).
    """
    options: dict[str, Any] = {}
    for key, value in gamg_options.items():
        if key != "pc_type":
            gamg_own = key.startswith(("pc_gamg_", "mg_levels_", "mg_coarse_"))
            options["mg_coarse_" + key if gamg_own else key] = value
    options.update({"pc_type": "mg", "pc_mg_galerkin": "none", "mg_coarse_ksp_type": "preonly",
                    "mg_coarse_pc_type": "gamg", **_P2_SMOOTHER})
    return options


@dataclass(frozen=True)
class Support:
    """A Dirichlet condition on a set of mesh nodes.

    Attributes:
        name: Label used for the reaction force report.
        nodes: (k,) int64 mesh node indices.
        components: Displacement components constrained (0 = x, 1 = y, 2 = z).
        displacement_mm: None for zero, a constant (3,) vector, a (k, 3) array of values per
            node of ``nodes`` (only the ``components`` columns are used), or a vectorised
            function mapping world points (3, n) to displacements (3, n) in mm.
        facets: True: besides the given nodes, constrain every dof of the boundary facets
            whose vertices are all support nodes (the P2 mid-edge dofs; per-node values are
            interpolated there unless the mid-edge node itself is given). False: exactly the
            dofs of the given nodes (vertices, and the mid-edge nodes of a 10-node mesh with
            degree 2), the meaning of an Abaqus/CalculiX node set; every node must carry a dof.
    """

    name: str
    nodes: npt.NDArray[np.int64]
    components: tuple[int, ...] = (0, 1, 2)
    displacement_mm: (
        tuple[float, float, float] | FloatArray | DisplacementFunction | None) = None
    facets: bool = True


@dataclass(frozen=True)
class NodalForces:
    """Concentrated forces on mesh nodes (an Abaqus ``*CLOAD``), a load next to LoadPatch.

    Attributes:
        nodes: (k,) int64 mesh node indices: vertices, or mid-edge nodes of a 10-node mesh
            solved with degree 2 (a node must carry a dof). Repeated nodes add up.
        forces_n: (k, 3) float64 force on each node in world N.
    """

    nodes: npt.NDArray[np.int64]
    forces_n: FloatArray

    def __post_init__(self) -> None:
        nodes = np.asarray(self.nodes, dtype=np.int64).reshape(-1)
        forces = np.asarray(self.forces_n, dtype=np.float64)
        if forces.shape != (nodes.size, 3):
            raise ValueError(f"need one (3,) force per node ({nodes.size}), got {forces.shape}")
        if not np.all(np.isfinite(forces)):
            raise ValueError("nodal forces must be finite")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "forces_n", forces)

    @property
    def total_n(self) -> FloatArray:
        """(3,) resultant force, N."""
        return np.asarray(self.forces_n.sum(axis=0))


@dataclass(frozen=True)
class SolveStats:
    """Performance and convergence record of one solve.

    Attributes:
        iterations: Krylov iterations.
        residual_norm: Final (preconditioned) residual norm.
        converged_reason: PETSc converged reason (> 0 converged).
        solve_s: Wall time of the Krylov solve, s.
        rhs_s: Wall time of right-hand side assembly, s.
    """

    iterations: int
    residual_norm: float
    converged_reason: int
    solve_s: float
    rhs_s: float


@dataclass(frozen=True)
class CaseSolution:
    """The solution of one load case, in the mesh's original numbering (all ranks).

    Attributes:
        displacement_mm: (n, 3) nodal displacement at the mesh's corner nodes, and at the
            mid-edge nodes of a 10-node mesh solved with degree 2 (0 elsewhere).
        strain: (m, 3, 3) small-strain tensor per cell (value at the cell centroid).
        reactions_n: Support name -> (3,) total reaction force (N) that the support exerts.
        stats: Convergence and timing.
        set_reactions_n: Name -> (3,) total reaction force (N) on the constrained dofs of the
            nodes of each set passed as ``reaction_sets`` to :meth:`ElasticModel.solve`
            (CalculiX's ``RF`` totals of a node set).
        vertex_strain: (m, 4, 3, 3) strain at each cell's four corner nodes (in the order of
            ``mesh.vertex_cells()``) for degree 2, where the strain is linear in each cell;
            None for degree 1 (constant per cell: ``strain``).
        node_ids: None for a gathered solution (every row above, on every rank). For a
            distributed one (``ElasticModel.solve(gather=False)``): (k,) int64 mesh node of
            each row of ``displacement_mm``, the nodes whose dofs this rank owns; the rows
            of all ranks together are every node once.
        cell_ids: None, or (c,) int64 mesh cell of each row of ``strain`` and
            ``vertex_strain``: this rank's owned cells (distributed solution).
    """

    displacement_mm: FloatArray
    strain: FloatArray
    reactions_n: dict[str, FloatArray]
    stats: SolveStats
    set_reactions_n: dict[str, FloatArray] = field(default_factory=dict)
    vertex_strain: FloatArray | None = None
    node_ids: IntArray | None = None
    cell_ids: IntArray | None = None

    @property
    def distributed(self) -> bool:
        """True when the rows are this rank's part only (``node_ids``/``cell_ids``)."""
        return self.cell_ids is not None

    def rotated_back(self, rotation: FloatArray) -> CaseSolution:
        """This solution, computed on a mesh rotated by ``rotation``, in world axes.

        Args:
            rotation: (3, 3) whose rows are the solver's axes in world coordinates (the mesh
                was solved at ``points @ rotation.T``).
        """
        r = np.asarray(rotation, dtype=np.float64)

        def tensor(t: FloatArray | None) -> FloatArray | None:
            return None if t is None else np.asarray(np.einsum("ai,...ab,bj->...ij", r, t, r))

        strain = tensor(self.strain)
        assert strain is not None
        return CaseSolution(self.displacement_mm @ r, strain,
                            {k: v @ r for k, v in self.reactions_n.items()}, self.stats,
                            {k: v @ r for k, v in self.set_reactions_n.items()},
                            tensor(self.vertex_strain), self.node_ids, self.cell_ids)

    @staticmethod
    def combine(units: Sequence[CaseSolution], weights: npt.ArrayLike) -> CaseSolution:
        """Linear combination of solutions of one model (superposition of load cases).

        Distributed solutions of one model share their rows (``node_ids``/``cell_ids``).
        """
        w = np.asarray(weights, dtype=np.float64)

        def mix(values: Sequence[FloatArray]) -> FloatArray:
            return np.asarray(sum(wi * v for wi, v in zip(w, values, strict=True)))

        vertex = None
        if units[0].vertex_strain is not None:
            vertex = mix([u.vertex_strain for u in units])  # type: ignore[misc]
        stats = SolveStats(
            iterations=max(u.stats.iterations for u in units),
            residual_norm=max(u.stats.residual_norm for u in units),
            converged_reason=min(u.stats.converged_reason for u in units),
            solve_s=sum(u.stats.solve_s for u in units),
            rhs_s=sum(u.stats.rhs_s for u in units),
        )
        return CaseSolution(
            mix([u.displacement_mm for u in units]), mix([u.strain for u in units]),
            {k: mix([u.reactions_n[k] for u in units]) for k in units[0].reactions_n}, stats,
            {k: mix([u.set_reactions_n[k] for u in units]) for k in units[0].set_reactions_n},
            vertex, units[0].node_ids, units[0].cell_ids)
