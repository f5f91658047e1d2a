"""Linear elasticity with DOLFINx/PETSc: the adapter that owns every dolfinx object.

One :class:`ElasticModel` assembles the stiffness operator and sets up the preconditioner
once (CG + GAMG with the rigid-body near-nullspace; P2 models: a two-level p-multigrid with
GAMG on the P1 level, :mod:`fea.pmultigrid`); each load case is then one right-hand side and
one Krylov solve, so many load cases reuse one set-up.

MPI: every rank constructs the model and calls :meth:`ElasticModel.solve` (collective). Each
rank passes either the same full :class:`~meshing.types.TetMesh` or only its block of it
(:class:`fea.partition.MeshPart`, with the per-cell values of that block): DOLFINx partitions
the mesh from the blocks, and the values a rank's partition needs are fetched from the ranks
that hold them (:func:`fea.partition.fetch_rows`), so that no rank needs the whole mesh.
Results come back gathered, in the mesh's original node/cell numbering, on all ranks, or
kept distributed (``solve(gather=False)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from core.types import FloatArray
from fea.backend import load_backend
from fea.errors import BoundaryConditionError, SolverError
from fea.loads import LoadPatch
from fea.partition import MeshPart, fetch_rows, positions, push_rows
from fea.pmultigrid import BASIX_TET_EDGES, P1CoarseLevel, rigid_body_modes
from fea.types import (
    CaseSolution,
    NodalForces,
    SolverOptions,
    SolveStats,
    Support,
)
from meshing.types import TetMesh

__all__ = [
    "CaseSolution",
    "ElasticModel",
    "NodalForces",
    "SolveStats",
    "SolverOptions",
    "Support",
    "modulus_quadrature_points",
]

load_backend()

import dolfinx  # noqa: E402
import dolfinx.fem.petsc  # noqa: E402
import ufl  # noqa: E402
from basix.ufl import element, quadrature_element  # noqa: E402
from mpi4py import MPI  # noqa: E402
from petsc4py import PETSc as _PETSc  # noqa: E402

# petsc4py's stubs disagree with its runtime (enums, Comm types): use it untyped.
PETSc: Any = _PETSc

#: A field to write: the full array (the same on every rank), (ids, rows) of this rank, or
#: (ids, rows, fill) where no rank holds some rows (they take the value ``fill``).
FieldRows = (npt.NDArray[Any] | tuple[npt.NDArray[np.int64], npt.NDArray[Any]]
             | tuple[npt.NDArray[np.int64], npt.NDArray[Any], float])

_COORD_TOL_MM = 1e-6
#: Options read by objects PETSc creates inside the GAMG set-up without the KSP's prefix
#: (the Galerkin product's coarse matrix): set unprefixed for the set-up only.
#: ``matptap_via`` picks that product's algorithm: ``allatonce`` does without the A P
#: intermediate whose transient is the peak of a run per rank under MPI (946k P2 DOFs on 2
#: ranks: 2313 -> 1822 MB on the largest rank) but made the set-up 15x slower there
#: (benchmarks/results/memory_ranks_allatonce.json): a knob for memory-bound runs only.
_UNPREFIXED_OPTIONS = frozenset({"mat_product_clear", "matptap_via"})
#: Vertices of basix's reference tetrahedron (points of the P2 corner-strain evaluation).
_REFERENCE_VERTICES = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                                [0.0, 0.0, 1.0]])
#: Column of the mid-edge node between corner columns (i, j) of a VTK 10-node tetrahedron.
_VTK_MID_COLUMN = np.array([[-1, 4, 6, 7], [4, -1, 5, 8], [6, 5, -1, 9], [7, 8, 9, -1]],
                           dtype=np.int64)


def _per_node_values(support: Support, nodes: npt.NDArray[np.int64]) -> FloatArray | None:
    """The (k, 3) per-node displacements of a support, or None for the other kinds."""
    value = support.displacement_mm
    if value is None or callable(value) or np.ndim(value) != 2:
        return None
    values = np.asarray(value, dtype=np.float64)
    if values.shape != (nodes.size, 3):
        raise ValueError(f"support '{support.name}': per-node displacements must be "
                         f"({nodes.size}, 3), got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"support '{support.name}': prescribed displacements must be finite")
    return values


def _allgather_rows(comm: MPI.Comm, ids: npt.NDArray[np.int64], values: npt.NDArray[Any],
                    num_rows: int) -> FloatArray:
    """The (num_rows, ...) array whose rows ``ids`` are each rank's ``values`` (collective).

    Received straight into one numpy buffer (``Allgatherv``), not as pickled per-rank
    pieces: the transient is one full copy besides the result, not three or four.
    Rows no rank sends stay 0.
    """
    shape = values.shape[1:]
    width = int(np.prod(shape))
    counts = np.asarray(comm.allgather(int(ids.size)), dtype=np.int64)
    all_ids = np.empty(int(counts.sum()), dtype=np.int64)
    comm.Allgatherv(np.ascontiguousarray(ids, dtype=np.int64), [all_ids, counts])
    received = np.empty((all_ids.size, width))
    comm.Allgatherv(np.ascontiguousarray(values, dtype=np.float64).reshape(-1, width),
                    [received, counts * width])
    out = np.zeros((num_rows, width))
    out[all_ids] = received
    return out.reshape(num_rows, *shape)


def _rows_for(comm: MPI.Comm, ids: npt.NDArray[np.int64], values: npt.NDArray[Any],
              wanted: npt.NDArray[np.int64], num_rows: int,
              fill: float | None = None) -> FloatArray:
    """Rows ``wanted`` of a distributed array of which each rank holds rows ``ids`` (collective).

    Every wanted row must be held by exactly one rank, or take ``fill`` (rows no rank
    holds, e.g. the interior nodes of a surface result); held rows no rank wants (the
    mid-edge nodes of a 10-node mesh, when only corners are written) are dropped. Where each
    rank already holds the rows it wants (the same partition), nothing is sent; otherwise
    the rows go through the row blocks (:func:`fea.partition.push_rows`, then
    :func:`fea.partition.fetch_rows`): no rank forms a table over all rows. Returns
    (wanted.size, ...) float64.
    """
    shape = values.shape[1:]
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(
        ids.size, int(np.prod(shape, dtype=np.int64)))
    same = bool(ids.size == wanted.size and np.array_equal(np.sort(ids), np.sort(wanted)))
    if comm.allreduce(same, op=MPI.LAND):
        out = np.empty_like(flat)
        out[np.argsort(wanted)] = flat[np.argsort(ids)]
        return out.reshape(wanted.size, *shape)
    block = push_rows(comm, ids, flat, num_rows, fill=fill)
    return fetch_rows(comm, block, num_rows, wanted).reshape(wanted.size, *shape)


def modulus_quadrature_points(degree: int) -> FloatArray:
    """(q, 3) reference-tetrahedron points where per-point moduli are expected.

    These are the points of basix's default tetrahedron rule of ``degree`` (the rule the
    stiffness integral then uses), in the reference cell of vertices (0,0,0), (1,0,0),
    (0,1,0), (0,0,1) taken in each cell's node order.
    """
    points, _ = quadrature_element("tetrahedron", value_shape=(), degree=degree
                                   ).custom_quadrature()
    return np.asarray(points, dtype=np.float64)


class ElasticModel:
    """Isotropic linear elasticity on a tetrahedral mesh with per-cell Young's modulus.

    Args:
        mesh: The mesh: the same full copy on every rank, or this rank's block of it
            (:class:`fea.partition.MeshPart`, e.g. from :func:`fea.partition.scatter_part`):
            then no rank needs the whole mesh.
        youngs_modulus_mpa: Young's modulus, MPa: (m,) per cell or (m, q) per cell and
            quadrature point (:func:`modulus_quadrature_points`); with a ``MeshPart`` the
            rows of its cells only ((c,) or (c, q)).
        poisson_ratio: Poisson's ratio (scalar) or per cell ((m,), or (c,) with a part).
        supports: Dirichlet conditions, shared by every load case (global node numbers).
        options: Discretisation and solver settings.
        comm: MPI communicator.
    """

    def __init__(
        self,
        mesh: TetMesh | MeshPart,
        youngs_modulus_mpa: npt.ArrayLike,
        poisson_ratio: float | npt.ArrayLike,
        supports: Sequence[Support],
        options: SolverOptions | None = None,
        comm: MPI.Comm = MPI.COMM_WORLD,
    ) -> None:
        self.options = options or SolverOptions()
        self.comm = comm
        # A full mesh (the same on every rank) is handed to DOLFINx as one block per rank
        # too: the dual graph and the partition are then computed in parallel.
        self._replicated = isinstance(mesh, TetMesh)
        part = MeshPart.of(mesh, comm.rank, comm.size) if isinstance(mesh, TetMesh) else mesh
        self.num_nodes = part.num_nodes
        self.num_cells = part.num_cells
        self.order = part.order
        self.timings_s: dict[str, float] = {}
        modulus = np.asarray(youngs_modulus_mpa, dtype=np.float64)
        rows = part.num_cells if self._replicated else part.cells.shape[0]
        nu = np.broadcast_to(np.asarray(poisson_ratio, dtype=np.float64), (rows,))
        # Validate before any collective so that no rank can hang on a bad input; a part's
        # values differ between ranks, so its verdict is shared first.
        problem = self._input_problem(modulus, nu, rows)
        if not self._replicated:
            problem = next((p for p in comm.allgather(problem) if p is not None), None)
        if problem is not None:
            raise ValueError(problem)
        if not supports:
            raise BoundaryConditionError("no support given: the model can move freely",
                                         hint="fix the distal cut or give a support")

        t0 = time.perf_counter()
        domain = element("Lagrange", "tetrahedron", 1, shape=(3,))
        self.domain = dolfinx.mesh.create_mesh(
            comm, np.ascontiguousarray(part.cells[:, :4]), ufl.Mesh(domain),
            np.ascontiguousarray(part.points))
        tdim = self.domain.topology.dim
        self.domain.topology.create_connectivity(tdim - 1, tdim)
        self.num_local_cells = self.domain.topology.index_map(tdim).size_local
        self._cell_map = np.asarray(self.domain.topology.original_cell_index, dtype=np.int64)
        self.original_cells = self._cell_map[: self.num_local_cells]
        # Mesh nodes of every local cell (owned and ghost), in the mesh's node order: the
        # P2 space's mid-edge nodes and corner strains need them (the same on every rank).
        self._cell_nodes = (self._cell_rows(mesh.cells if isinstance(mesh, TetMesh)
                                            else part.cells)
                            if self.options.degree == 2 else np.zeros((0, 4), np.int64))
        self.V = dolfinx.fem.functionspace(self.domain, ("Lagrange", self.options.degree, (3,)))
        dg0 = dolfinx.fem.functionspace(self.domain, ("DG", 0))
        self._per_point = modulus.ndim == 2
        self._dx = ufl.dx
        if self._per_point:
            # E lives on the quadrature points of the stiffness integral itself.
            degree = self.options.modulus_quadrature_degree
            q_element = quadrature_element("tetrahedron", value_shape=(), degree=degree)
            self._modulus_space = dolfinx.fem.functionspace(self.domain, q_element)
            self._dx = ufl.dx(metadata={"quadrature_degree": degree})
            self._E = dolfinx.fem.Function(self._modulus_space)
        else:
            self._E = dolfinx.fem.Function(dg0)
        self._set_modulus(modulus)
        self._nu = dolfinx.fem.Function(dg0)
        self._nu.x.array[:] = self._cell_rows(np.ascontiguousarray(nu))
        self.timings_s["mesh_distribute"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        self.u = dolfinx.fem.Function(self.V, name="displacement")
        self._trial = ufl.TrialFunction(self.V)
        self._test = ufl.TestFunction(self.V)
        self.a_form = dolfinx.fem.form(self._stiffness(self._trial, self._test))
        self._action_form = dolfinx.fem.form(self._stiffness(self.u, self._test))
        self.supports = list(supports)
        self._local_nodes, self._local_blocks, self._edge_blocks = self._node_block_map()
        self._collapsed: dict[int, tuple[Any, npt.NDArray[np.int64], npt.NDArray[np.int32]]] = {}
        self._bc_values: dict[str, dict[int, Any]] = {}
        self._bcs, self._support_dofs = self._make_bcs(self.supports)
        self._constrained = np.zeros(self.u.x.array.size, dtype=bool)
        for dof_lists in self._support_dofs.values():
            for dofs in dof_lists:
                self._constrained[dofs] = True
        self.A = dolfinx.fem.petsc.assemble_matrix(self.a_form, bcs=self._bcs)
        self.A.assemble()
        self.timings_s["assembly"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        self._nullspace: Any = None
        self._coarse: P1CoarseLevel | None = None
        self.ksp = PETSc.KSP().create(comm)
        self.ksp.setOperators(self.A)
        self._petsc_prefix = f"osteofe_{id(self)}_"
        # Before attach(): PCMG's level solvers take the prefix the PC has when it makes them.
        self.ksp.setOptionsPrefix(self._petsc_prefix)
        if self.options.uses_p_multigrid:
            self._coarse = P1CoarseLevel(self.V, self._stiffness, self._constrained)
            self._coarse.attach(self.ksp.getPC())
        elif self.options.near_nullspace and self.options.pc_type == "gamg":
            self.A.setNearNullSpace(self.rigid_body_modes())
        self.ksp.setConvergenceHistory()
        self._set_up_solver()
        self.timings_s["preconditioner_setup"] = time.perf_counter() - t0
        self._strain_space = dolfinx.fem.functionspace(self.domain, ("DG", 0, (3, 3)))
        self._strain_expr = dolfinx.fem.Expression(
            self._epsilon(self.u), self._strain_space.element.interpolation_points
        )
        # P2 strains are linear in each (straight-sided) cell: its corner values carry it all.
        self._vertex_strain_expr = None if self.options.degree == 1 else (
            dolfinx.fem.Expression(self._epsilon(self.u), _REFERENCE_VERTICES))
        self._node_dof_map = self._owned_node_dof_map()

    def _set_up_solver(self) -> None:
        """Configure the KSP from this model's PETSc options and build the preconditioner.

        GAMG reads its smoother/coarse-solver options (mg_levels_*, mg_coarse_*) only while
        it builds the hierarchy in setUp, so the options stay in PETSc's database until then,
        and are removed afterwards so that no model leaks options into another.
        """
        petsc_opts = PETSc.Options()
        options = self.options.petsc_options()
        names = {key: key if key in _UNPREFIXED_OPTIONS else self._petsc_prefix + key
                 for key in options}
        # An unprefixed option the user set globally wins and stays.
        names = {key: name for key, name in names.items()
                 if name.startswith(self._petsc_prefix) or not petsc_opts.hasName(name)}
        for key, name in names.items():
            petsc_opts[name] = options[key]
        try:
            self.ksp.setFromOptions()
            if self._coarse is not None:
                self._coarse.set_coarse_operator(self.ksp.getPC())
            self.ksp.setUp()
        finally:
            for name in names.values():
                petsc_opts.delValue(name)

    def _input_problem(self, modulus: FloatArray, nu: FloatArray, rows: int) -> str | None:
        """What is wrong with the moduli or Poisson ratios given for ``rows`` cells, or None."""
        num_points = modulus_quadrature_points(self.options.modulus_quadrature_degree).shape[0]
        if modulus.shape not in ((rows,), (rows, num_points)):
            return (f"need one modulus per cell ({rows},) or per quadrature point "
                    f"({rows}, {num_points}), got {modulus.shape}")
        if not np.all(np.isfinite(modulus)) or np.any(modulus <= 0.0):
            return "Young's moduli must be finite and positive"
        if np.any(nu <= -1.0) or np.any(nu >= 0.5):
            return "Poisson's ratio must lie in (-1, 0.5)"
        return None

    def _cell_rows(self, values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Rows of every local cell (owned, then ghost) of a per-cell array (collective).

        ``values`` is the full (m, ...) array (a replicated mesh) or this rank's block of it
        (a :class:`~fea.partition.MeshPart`: the rows are fetched from their blocks' ranks).
        """
        if self._replicated:
            return np.asarray(values[self._cell_map])
        return fetch_rows(self.comm, values, self.num_cells, self._cell_map)

    def _set_modulus(self, modulus: FloatArray) -> None:
        """Copy moduli (per cell, or per cell and quadrature point) into the dolfinx field."""
        self._modulus_shape = modulus.shape
        local = self._cell_rows(modulus)
        if modulus.ndim == 1:
            self._E.x.array[:] = local
            return
        # Quadrature dofs of local cell c are its points in the rule's order.
        dofs = np.asarray(self._modulus_space.dofmap.list)
        values = np.empty_like(self._E.x.array)
        values[dofs.ravel()] = local.ravel()
        self._E.x.array[:] = values

    # -- constitutive law ---------------------------------------------------------------
    def _stiffness(self, trial: Any, test: Any) -> Any:
        """The stiffness bilinear form a(trial, test) (UFL), in this model's measure."""
        return ufl.inner(self._sigma(trial), self._epsilon(test)) * self._dx

    def _epsilon(self, w: Any) -> Any:
        return ufl.sym(ufl.grad(w))

    def _sigma(self, w: Any) -> Any:
        mu = self._E / (2.0 * (1.0 + self._nu))
        lmbda = self._E * self._nu / ((1.0 + self._nu) * (1.0 - 2.0 * self._nu))
        eps = self._epsilon(w)
        return 2.0 * mu * eps + lmbda * ufl.tr(eps) * ufl.Identity(3)

    # -- boundary conditions ------------------------------------------------------------
    def _node_marker(self, nodes: npt.NDArray[np.int64]) -> Callable[[FloatArray], Any]:
        """A dolfinx marker of the points of ``nodes`` this rank holds (its geometry's).

        Nodes elsewhere cannot be points of this rank's entities, so the rank's own
        geometry is all it needs.
        """
        geometry = self.domain.geometry
        original = np.asarray(geometry.input_global_indices, dtype=np.int64)
        points = np.asarray(geometry.x[np.isin(original, nodes)], dtype=np.float64)
        if points.shape[0] == 0:
            return lambda x: np.zeros(x.shape[1], dtype=bool)
        tree = cKDTree(points)

        def marker(x: FloatArray) -> Any:
            dist, _ = tree.query(x.T, distance_upper_bound=_COORD_TOL_MM)
            return np.isfinite(dist)

        return marker

    def _make_bcs(
        self, supports: Sequence[Support]
    ) -> tuple[list[Any], dict[str, list[npt.NDArray[np.int32]]]]:
        tdim = self.domain.topology.dim
        bs = self.V.dofmap.index_map_bs
        bcs: list[Any] = []
        support_dofs: dict[str, list[npt.NDArray[np.int32]]] = {}
        for support in supports:
            nodes = np.asarray(support.nodes, dtype=np.int64).reshape(-1)
            value = support.displacement_mm
            per_node = _per_node_values(support, nodes)
            if support.facets:
                marker = self._node_marker(nodes)
                facets = dolfinx.mesh.locate_entities_boundary(self.domain, tdim - 1, marker)
                vertices = dolfinx.mesh.locate_entities(self.domain, 0, marker)
                found = self.comm.allreduce(vertices.size, op=MPI.SUM)
            else:
                facets = vertices = np.zeros(0, dtype=np.int32)
                found = self._count_owned_nodes(nodes)
                missing = np.unique(nodes).size - found
                if found and missing:
                    raise BoundaryConditionError(
                        f"support '{support.name}': {missing} of its nodes carry no degree "
                        "of freedom",
                        hint="with degree 1 only the corner nodes of 10-node cells carry "
                        "one; solve 10-node meshes with degree 2",
                    )
            if found == 0:
                raise BoundaryConditionError(
                    f"support '{support.name}' matches no mesh node",
                    hint="support nodes must be nodes of the mesh",
                )
            blocks = self._blocks_of(nodes)
            blocks = np.unique(blocks[blocks >= 0])
            support_dofs[support.name] = []
            prescribed = None
            if per_node is not None:
                prescribed = self._nodal_function(nodes, per_node, support.facets)
            elif callable(value) and not support.facets:
                prescribed = dolfinx.fem.Function(self.V)
                prescribed.interpolate(value)
            for comp in support.components:
                sub = self.V.sub(comp)
                located = [bs * blocks + comp]
                if support.facets:
                    located += [dolfinx.fem.locate_dofs_topological(sub, tdim - 1, facets),
                                dolfinx.fem.locate_dofs_topological(sub, 0, vertices)]
                dofs = np.unique(np.concatenate(located)).astype(np.int32)
                support_dofs[support.name].append(dofs)
                if prescribed is not None:
                    bcs.append(self._component_bc(prescribed, comp, dofs))
                elif not callable(value):
                    constant = dolfinx.fem.Constant(
                        self.domain,
                        PETSc.ScalarType(0.0 if value is None else float(value[comp])))
                    self._bc_values.setdefault(support.name, {})[comp] = constant
                    bcs.append(dolfinx.fem.dirichletbc(constant, dofs, sub))
            if callable(value) and support.facets:
                if tuple(support.components) != (0, 1, 2):
                    raise ValueError("a displacement function constrains all 3 components")
                prescribed = dolfinx.fem.Function(self.V)
                prescribed.interpolate(value)
                all_blocks = np.unique(np.concatenate([
                    dolfinx.fem.locate_dofs_topological(self.V, tdim - 1, facets),
                    dolfinx.fem.locate_dofs_topological(self.V, 0, vertices),
                    blocks,
                ])).astype(np.int32)
                bcs.append(dolfinx.fem.dirichletbc(prescribed, all_blocks))
        return bcs, support_dofs

    def _node_block_map(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
               tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None]:
        """Mesh node -> local dof block on this rank, found through the cells (no geometry).

        Returns:
            (k,) int64 sorted mesh nodes that carry a dof on this rank (owned or ghost), and
            (k,) int64 their local dof blocks (no array over the whole mesh's nodes); and,
            for degree 2, the local edge dof blocks with the blocks of their two end
            vertices (three (e,) arrays), else None.
        """
        dofs = np.asarray(self.V.dofmap.list, dtype=np.int64)
        num_cells = dofs.shape[0]
        geometry = np.asarray(self.domain.geometry.dofmaps[0], dtype=np.int64)[:num_cells, :4]
        original = np.asarray(self.domain.geometry.input_global_indices, dtype=np.int64)
        vertex_nodes = original[geometry]  # (c, 4) mesh node of each dolfinx cell vertex
        nodes = [vertex_nodes.ravel()]
        blocks = [dofs[:, :4].ravel()]
        edges = None
        if self.options.degree == 2:
            edge_blocks = dofs[:, 4:10]
            ends = dofs[:, :4][:, BASIX_TET_EDGES]  # (c, 6, 2)
            edges = (edge_blocks.ravel(), ends[:, :, 0].ravel(), ends[:, :, 1].ravel())
            if self.order == 2:
                cells = self._cell_nodes[:num_cells]
                # Position of each dolfinx cell vertex among the mesh cell's corners.
                position = np.argmax(cells[:, None, :4] == vertex_nodes[:, :, None], axis=2)
                column = _VTK_MID_COLUMN[position[:, BASIX_TET_EDGES[:, 0]],
                                         position[:, BASIX_TET_EDGES[:, 1]]]
                nodes.append(np.take_along_axis(cells, column, axis=1).ravel())
                blocks.append(edge_blocks.ravel())
        local_nodes, first = np.unique(np.concatenate(nodes), return_index=True)
        return local_nodes, np.concatenate(blocks)[first], edges

    def _blocks_of(self, nodes: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """(k,) int64 local dof block of each of ``nodes`` (mesh numbers), -1 where none here."""
        at = positions(self._local_nodes, nodes)
        return np.where(at >= 0, self._local_blocks[at], -1)

    def _owned_node_dof_map(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(mesh nodes, local dof blocks) of the nodes whose dofs this rank owns."""
        owned = self._local_blocks < self.V.dofmap.index_map.size_local
        return self._local_nodes[owned], self._local_blocks[owned]

    def _count_owned_nodes(self, nodes: npt.NDArray[np.int64]) -> int:
        """Number of distinct ``nodes`` that carry a dof, over all ranks (collective)."""
        size_local = self.V.dofmap.index_map.size_local
        blocks = self._blocks_of(nodes)
        owned = np.unique(nodes[(blocks >= 0) & (blocks < size_local)]).size
        return int(self.comm.allreduce(owned, op=MPI.SUM))

    def _nodal_function(self, nodes: npt.NDArray[np.int64], values: FloatArray,
                        facets: bool) -> Any:
        """A displacement function holding per-node values (edge dofs interpolated)."""
        prescribed = dolfinx.fem.Function(self.V)
        array = prescribed.x.array.reshape(-1, 3)
        blocks = self._blocks_of(nodes)
        here = blocks >= 0
        array[blocks[here]] = values[here]
        if facets and self._edge_blocks is not None:
            edge, end_a, end_b = self._edge_blocks
            given = np.zeros(array.shape[0], dtype=bool)
            given[blocks[here]] = True
            fill = ~given[edge] & given[end_a] & given[end_b]
            array[edge[fill]] = 0.5 * (array[end_a[fill]] + array[end_b[fill]])
        return prescribed

    def _component_bc(self, prescribed: Any, comp: int, dofs: npt.NDArray[np.int32]) -> Any:
        """Dirichlet condition on one component with values taken from a vector function."""
        if comp not in self._collapsed:
            space, maps = self.V.sub(comp).collapse()
            to_parent = np.asarray(maps[0] if isinstance(maps, list) else maps, dtype=np.int64)
            inverse = np.full(self.u.x.array.size, -1, dtype=np.int32)
            inverse[to_parent] = np.arange(to_parent.size, dtype=np.int32)
            self._collapsed[comp] = (space, to_parent, inverse)
        space, to_parent, inverse = self._collapsed[comp]
        values = dolfinx.fem.Function(space)
        values.x.array[:] = prescribed.x.array[to_parent]
        pair: Any = [dofs.astype(np.int32), inverse[dofs].astype(np.int32)]
        return dolfinx.fem.dirichletbc(values, pair, self.V.sub(comp))

    def rigid_body_modes(self) -> Any:
        """The six rigid-body modes of the displacement space as a PETSc near-nullspace.

        GAMG needs them. Built on first use and kept (6 vectors of the space: the
        two-level method only needs them on its P1 level, so it never builds these).
        Collective.
        """
        if self._nullspace is None:
            self._nullspace = rigid_body_modes(self.V)
        return self._nullspace

    # -- updates between solves ----------------------------------------------------------
    def set_support_displacement(self, name: str, displacement_mm: npt.ArrayLike) -> None:
        """Change the constant prescribed displacement of a support (e.g. a load increment).

        Args:
            name: Support name (its displacement must have been given as None or a constant).
            displacement_mm: (3,) new value; only the constrained components are used.
        """
        values = np.asarray(displacement_mm, dtype=np.float64).reshape(3)
        if name not in self._bc_values:
            raise KeyError(f"support {name!r} has no constant prescribed displacement")
        for comp, constant in self._bc_values[name].items():
            constant.value = values[comp]

    def update_moduli(self, youngs_modulus_mpa: npt.ArrayLike, *,
                      refresh_preconditioner: bool = True) -> None:
        """Replace the per-cell moduli and reassemble the operator.

        Collective. Used by incremental nonlinear analyses (secant moduli).

        Args:
            youngs_modulus_mpa: (m,) or (m, q) new moduli, MPa (the shape given at creation).
            refresh_preconditioner: Rebuild the preconditioner for the new operator (GAMG:
                a full set-up). False keeps the one built for earlier moduli: CG still
                solves the new operator exactly (to its tolerance) as long as that
                preconditioner stays symmetric positive definite, in more iterations; where
                moduli only fall (softening) this saves the set-up, the dominant cost.
        """
        modulus = np.asarray(youngs_modulus_mpa, dtype=np.float64)
        if modulus.shape != self._modulus_shape or np.any(~(modulus > 0.0)):
            raise ValueError(f"need finite, positive moduli of shape {self._modulus_shape}")
        self._set_modulus(modulus)
        t0 = time.perf_counter()
        self.A.zeroEntries()
        # In-place assembly: assemble_matrix dispatches on a PETSc Mat as first argument.
        dolfinx.fem.petsc.assemble_matrix(self.A, self.a_form, bcs=self._bcs)  # type: ignore[misc]
        self.A.assemble()
        if self._coarse is not None:
            self._coarse.reassemble()
        self.ksp.getPC().setReusePreconditioner(not refresh_preconditioner)
        self.ksp.setOperators(self.A)
        if refresh_preconditioner:
            self._set_up_solver()
        key = "reassembly_and_setup" if refresh_preconditioner else "reassembly"
        self.timings_s[key] = self.timings_s.get(key, 0.0) + time.perf_counter() - t0

    def set_warm_start(self, enabled: bool) -> None:
        """Start each Krylov solve from the previous solution instead of zero (collective).

        For sequences of nearby problems (load increments, secant iterations); the
        converged answer is the same to the solver tolerance.
        """
        self.ksp.setInitialGuessNonzero(bool(enabled))

    def reset_solution(self) -> None:
        """Zero the displacement iterate (the next warm-started solve starts from zero)."""
        self.u.x.array[:] = 0.0

    # -- solving ------------------------------------------------------------------------
    def _patch_tags(self, patch: LoadPatch) -> Any:
        tdim = self.domain.topology.dim
        facets = dolfinx.mesh.locate_entities_boundary(
            self.domain, tdim - 1, self._node_marker(patch.nodes)
        )
        facets = np.sort(facets).astype(np.int32)
        return dolfinx.mesh.meshtags(self.domain, tdim - 1, facets,
                                     np.ones(facets.size, dtype=np.int32))

    def load_vector(self, patches: Sequence[LoadPatch]) -> Any:
        """Assemble the right-hand side for forces spread uniformly over surface patches."""
        v = self._test
        integrand = None
        for patch in patches:
            tags = self._patch_tags(patch)
            ds = ufl.Measure("ds", domain=self.domain, subdomain_data=tags)
            area = self.comm.allreduce(
                dolfinx.fem.assemble_scalar(dolfinx.fem.form(1.0 * ds(1))), op=MPI.SUM
            )
            if area <= 0.0:
                raise BoundaryConditionError("a load patch has no area in the mesh",
                                             hint="check the load patch selection")
            traction = dolfinx.fem.Constant(
                self.domain, np.asarray(patch.force_n / area, dtype=PETSc.ScalarType)
            )
            term = ufl.dot(traction, v) * ds(1)
            integrand = term if integrand is None else integrand + term
        if integrand is None:
            zero = dolfinx.fem.Constant(self.domain, np.zeros(3, dtype=PETSc.ScalarType))
            integrand = ufl.dot(zero, v) * ufl.dx
        return dolfinx.fem.petsc.assemble_vector(dolfinx.fem.form(integrand))

    def solve(
        self,
        patches: Sequence[LoadPatch | NodalForces],
        *,
        reaction_sets: Mapping[str, npt.ArrayLike] | None = None,
        gather: bool = True,
    ) -> CaseSolution:
        """Solve one load case (collective).

        Args:
            patches: Forces, each spread over its surface patch (:class:`LoadPatch`) or
                concentrated on nodes (:class:`NodalForces`); may be empty when the load
                comes from prescribed displacements.
            reaction_sets: Optional name -> node indices: report the total reaction force on
                the constrained dofs of each set's nodes (``CaseSolution.set_reactions_n``).
            gather: Return the fields gathered on every rank (full arrays, the mesh's
                numbering). False keeps them distributed: each rank gets the rows of the
                nodes and cells it owns (``CaseSolution.node_ids``/``cell_ids``), nothing
                is communicated; reactions are totals on every rank either way.

        Returns:
            Displacements, strains and reactions.

        Raises:
            BoundaryConditionError: when a nodal force acts on a node without a dof.
            SolverError: when the Krylov solver does not converge.
        """
        t0 = time.perf_counter()
        b = self.load_vector([p for p in patches if isinstance(p, LoadPatch)])
        nodal = [p for p in patches if isinstance(p, NodalForces)]
        if nodal:
            self._add_nodal_forces(b, nodal)
        external = b.copy()
        external.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        dolfinx.fem.petsc.apply_lifting(b, [self.a_form], bcs=[self._bcs])
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        dolfinx.fem.petsc.set_bc(b, self._bcs)
        rhs_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        self.ksp.solve(b, self.u.x.petsc_vec)
        self.u.x.scatter_forward()
        solve_s = time.perf_counter() - t0
        reason = int(self.ksp.getConvergedReason())
        iterations = int(self.ksp.getIterationNumber())
        if reason <= 0:
            history = np.asarray(self.ksp.getConvergenceHistory())
            shown = ", ".join(f"{r:.2e}" for r in history[-5:])
            raise SolverError(
                f"linear solver did not converge (PETSc reason {reason}) after {iterations} "
                f"iterations; last residuals: {shown}",
                hint="check supports (rigid-body motion?) and moduli, or use --pc lu on a "
                "small model",
            )
        stats = SolveStats(iterations, float(self.ksp.getResidualNorm()), reason, solve_s,
                           rhs_s)
        reactions, set_reactions = self._reactions(external, reaction_sets or {})
        b.destroy()
        external.destroy()
        if not gather:
            nodes, blocks = self._node_dof_map
            return CaseSolution(np.asarray(self.u.x.array.reshape(-1, 3)[blocks],
                                           dtype=np.float64), self._local_strain(),
                                reactions, stats, set_reactions, self._local_vertex_strain(),
                                node_ids=nodes, cell_ids=self.original_cells)
        return CaseSolution(self._gather_displacement(), self._gather_strain(), reactions, stats,
                            set_reactions, self._gather_vertex_strain())

    def _add_nodal_forces(self, b: Any, loads: Sequence[NodalForces]) -> None:
        """Add concentrated forces to the owned entries of an assembled load vector."""
        size_local = self.V.dofmap.index_map.size_local
        with b.localForm() as local:
            array = local.array.reshape(-1, 3)
            for load in loads:
                if load.nodes.size and (load.nodes.min() < 0
                                        or load.nodes.max() >= self.num_nodes):
                    raise ValueError("nodal forces reference nodes that are not in the mesh")
                missing = np.unique(load.nodes).size - self._count_owned_nodes(load.nodes)
                if missing:
                    raise BoundaryConditionError(
                        f"{missing} node(s) with a concentrated force carry no degree of "
                        "freedom",
                        hint="with degree 1 only the corner nodes of 10-node cells carry "
                        "one; solve 10-node meshes with degree 2",
                    )
                blocks = self._blocks_of(load.nodes)
                owned = (blocks >= 0) & (blocks < size_local)
                np.add.at(array, blocks[owned], load.forces_n[owned])

    def _reactions(
        self, external: Any, reaction_sets: Mapping[str, npt.ArrayLike]
    ) -> tuple[dict[str, FloatArray], dict[str, FloatArray]]:
        internal = dolfinx.fem.petsc.assemble_vector(self._action_form)
        internal.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        residual = internal.array - external.array  # K u - f on owned dofs (blocked, bs=3)
        internal.destroy()
        size_local = self.V.dofmap.index_map.size_local * 3
        set_totals: dict[str, FloatArray] = {}
        for name, set_nodes in reaction_sets.items():
            blocks = self._blocks_of(set_nodes)
            blocks = np.unique(blocks[(blocks >= 0) & (blocks < size_local // 3)])
            dofs = (3 * blocks[:, None] + np.arange(3)).reshape(-1)
            local = np.where(self._constrained[dofs], residual[dofs], 0.0).reshape(-1, 3)
            set_totals[name] = np.asarray(self.comm.allreduce(local.sum(axis=0), op=MPI.SUM))
        out: dict[str, FloatArray] = {}
        for support in self.supports:
            total = np.zeros(3)
            for comp, dofs in zip(support.components, self._support_dofs[support.name],
                                  strict=True):
                owned = dofs[dofs < size_local]
                total[comp] = residual[owned].sum()
            # K u = f + r: r = K u - f is the force the support exerts on the bone.
            out[support.name] = np.asarray(self.comm.allreduce(total, op=MPI.SUM))
        return out, set_totals

    def _local_strain(self) -> FloatArray:
        """(c, 3, 3) strain of this rank's owned cells (rows: ``original_cells``)."""
        strain = dolfinx.fem.Function(self._strain_space)
        strain.interpolate(self._strain_expr)
        return np.array(strain.x.array.reshape(-1, 9)[: self.num_local_cells],
                        dtype=np.float64).reshape(-1, 3, 3)

    def _gather_strain(self) -> FloatArray:
        return _allgather_rows(self.comm, self.original_cells, self._local_strain(),
                               self.num_cells)

    def _gather_vertex_strain(self) -> FloatArray | None:
        """(m, 4, 3, 3) strain at every cell's corners in the mesh's node order (degree 2)."""
        local = self._local_vertex_strain()
        if local is None:
            return None
        return _allgather_rows(self.comm, self.original_cells, local, self.num_cells)

    def _local_vertex_strain(self) -> FloatArray | None:
        """(c, 4, 3, 3) corner strains of this rank's owned cells (degree 2), else None."""
        if self._vertex_strain_expr is None:
            return None
        cells = np.arange(self.num_local_cells, dtype=np.int32)
        values = self._vertex_strain_expr.eval(self.domain, cells).reshape(cells.size, 4, 9)
        # Reference vertex j of a local cell is its geometry node j; match those to the
        # corners of the original cell (DOLFINx may keep another vertex order).
        geometry = np.asarray(self.domain.geometry.input_global_indices, dtype=np.int64)[
            np.asarray(self.domain.geometry.dofmaps[0])[: cells.size]]
        corners = self._cell_nodes[: cells.size, :4]
        order = np.argmax(corners[:, :, None] == geometry[:, None, :], axis=2)
        local = np.take_along_axis(values, order[:, :, None], axis=1)
        return np.asarray(local, dtype=np.float64).reshape(-1, 4, 3, 3)

    def _gather_displacement(self) -> FloatArray:
        nodes, blocks = self._node_dof_map
        values = self.u.x.array.reshape(-1, 3)[blocks]
        return _allgather_rows(self.comm, nodes, values, self.num_nodes)

    def write_xdmf(self, path: str | Path, point_data: Mapping[str, FieldRows],
                   cell_data: Mapping[str, FieldRows], *,
                   rotation: npt.NDArray[np.float64] | None = None) -> None:
        """Write the mesh and fields to XDMF + HDF5 (``path``, ``path.with_suffix('.h5')``).

        Collective: every rank writes its own cells and nodes into the one file pair
        (DOLFINx's parallel HDF5); nothing is gathered. The mesh is this model's DOLFINx
        mesh (its P1 geometry), in world axes when ``rotation`` is given (the model was
        solved at ``points @ rotation.T``, :class:`fea.loads.FallSupport`); the values are
        written as given (give them in world axes).

        Args:
            path: The ``.xdmf`` file to write (replaced).
            point_data: Name -> values at the mesh's corner nodes: either the full (n, ...)
                array (the same on every rank), or ``(node_ids, values)`` with the rows each
                rank holds (a distributed solution's ``node_ids``, any model's partition),
                or ``(node_ids, values, fill)`` where the ranks hold only some nodes (a
                surface result; the others take ``fill``). Scalars and 3-vectors.
            cell_data: Name -> per-cell values, full (m, ...) or ``(cell_ids, values)``;
                scalars, 3-vectors or (3, 3) tensors.
            rotation: (3, 3) rotation of this model's mesh (a fall), or None.
        """
        from dolfinx.io import XDMFFile

        p1 = dolfinx.fem.functionspace(self.domain, ("Lagrange", 1))
        imap = p1.dofmap.index_map
        geometry = np.asarray(self.domain.geometry.dofmaps[0], dtype=np.int64)[:, :4]
        original = np.asarray(self.domain.geometry.input_global_indices, dtype=np.int64)
        p1_dofs = np.asarray(p1.dofmap.list, dtype=np.int64)
        p1_node = np.full(imap.size_local + imap.num_ghosts, -1, dtype=np.int64)
        p1_node[p1_dofs.ravel()] = original[geometry[: p1_dofs.shape[0]]].ravel()
        owned_nodes = p1_node[: imap.size_local]
        if np.any(owned_nodes < 0):
            raise ValueError("mesh nodes without a P1 dof: cannot write point data")

        def rows(field: FieldRows, wanted: npt.NDArray[np.int64], num: int) -> FloatArray:
            if isinstance(field, tuple):
                ids, values, *fill = field
                return _rows_for(self.comm, np.asarray(ids, dtype=np.int64), np.asarray(values),
                                 wanted, num, fill=float(fill[0]) if fill else None)
            return np.asarray(np.asarray(field, dtype=np.float64)[wanted])

        def space(kind: str, shape: tuple[int, ...]) -> Any:
            family, degree = ("Lagrange", 1) if kind == "point" else ("DG", 0)
            return dolfinx.fem.functionspace(
                self.domain, (family, degree, shape) if shape else (family, degree))

        functions = []
        for kind, data, wanted, num in (
                ("point", point_data, owned_nodes, self.num_nodes),
                ("cell", cell_data, self.original_cells, self.num_cells)):
            for name, field in data.items():
                values = rows(field, wanted, num)
                shape = tuple(values.shape[1:])
                function = dolfinx.fem.Function(space(kind, shape), name=name)
                width = int(np.prod(shape)) if shape else 1
                array = function.x.array.reshape(-1, width)
                array[: wanted.size] = values.reshape(wanted.size, width)
                function.x.scatter_forward()
                functions.append(function)
        x = self.domain.geometry.x
        saved = None if rotation is None else x.copy()
        try:
            if rotation is not None:
                x[:] = x @ np.asarray(rotation, dtype=np.float64)
            with XDMFFile(self.comm, str(path), "w") as xdmf:
                xdmf.write_mesh(self.domain)
                for function in functions:
                    xdmf.write_function(function, 0.0)
        finally:
            if saved is not None:
                x[:] = saved

    @property
    def num_dofs(self) -> int:
        """Global number of displacement unknowns."""
        imap = self.V.dofmap.index_map
        return int(imap.size_global * self.V.dofmap.index_map_bs)

    def destroy(self) -> None:
        """Free PETSc objects (call on all ranks)."""
        self.ksp.destroy()
        if self._coarse is not None:
            self._coarse.destroy()
        if self._nullspace is not None:
            self._nullspace.destroy()
        self.A.destroy()
