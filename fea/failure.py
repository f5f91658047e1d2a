"""Linear, strain-based failure criterion (Schileo et al. 2008) and the load to failure.

Strains are taken *on the bone surface*: at three quadrature points of every surface
triangle, from the tetrahedron of bone it bounds (the cell's constant strain for P1; the
linear P2 strain evaluated at the point). The strain tensor at each surface node is the
area-weighted mean of those samples over the bone surface within a sphere of fixed radius
(:attr:`StrainLimits.averaging_radius_mm`) around the node: a fixed physical region, so that
the average, and with it the failure load, does not depend on the element size once the
elements are smaller than the region (the point of Schileo's averaging; a fixed number of
neighbouring nodes would shrink with the mesh). The principal strains of the mean tensor are
compared with the yield strains of bone in tension and compression. The surface includes the
walls of lytic defects (faces between bone and lesion cells), where a metastatic femur often
fails. In a linear model the failure load is the applied load times ``1 / max(risk factor)``,
the risk factor being the peak strain divided by its limit.

The limits are yield strains of bone tissue. Where a label takes voxels without bone density
(soft tissue or partial-volume voxels at the modulus floor), the strain of that filler is no
bone strain, and the failure load would follow which boundary voxels the segmentation
included. Given the cells at the floor, the criterion evaluates only the surface nodes
whose averaged region is mostly bone (floor share at most :data:`MAX_FLOOR_SHARE`) and
reports the lowest load of the nodes it left out (an unlabelled lytic lesion would be
there: labelled as a lesion, its walls are evaluated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.spatial import cKDTree

from core.types import FloatArray
from fea.errors import BoundaryConditionError
from fea.partition import positions
from fea.topology import TET_FACES, SurfaceFacets, bone_surface_facets, face_normals_and_areas
from meshing.types import TetMesh

__all__ = ["MAX_FLOOR_SHARE", "SCHILEO_2008", "FailureAnalysis", "StrainCriterion", "StrainLimits",
           "principal_strains", "strain_failure"]


#: Barycentric coordinates (on a triangle's three vertices) of the 3-point rule exact to
#: degree 2 (Strang & Fix), each with weight 1/3 of the area.
_FACE_RULE = np.array([[2 / 3, 1 / 6, 1 / 6], [1 / 6, 2 / 3, 1 / 6], [1 / 6, 1 / 6, 2 / 3]])


@dataclass(frozen=True)
class StrainLimits:
    """Limit principal strains of bone and the region they are averaged over.

    Attributes:
        tension: Maximum principal strain at failure (> 0).
        compression: Magnitude of the minimum principal strain at failure (> 0).
        averaging_radius_mm: Radius of the sphere around a surface node whose bone surface
            the strain tensor is averaged over.
        source: Citation.
    """

    tension: float
    compression: float
    averaging_radius_mm: float
    source: str

    def __post_init__(self) -> None:
        if self.tension <= 0 or self.compression <= 0 or self.averaging_radius_mm <= 0:
            raise ValueError("strain limits and the averaging radius must be positive")


#: Schileo E, Taddei F, Cristofolini L, Viceconti M (2008) Subject-specific finite element
#: models implementing a maximum principal strain criterion are able to estimate failure risk
#: and fracture location on human femurs tested in vitro. J Biomech 41:356-367,
#: doi:10.1016/j.jbiomech.2007.09.009. Limits 0.73 % tension, 1.04 % compression (from the
#: yield strains of Bayraktar et al. 2004, J Biomech 37:27-35). Averaging: Schileo's models
#: averaged surface strains over a few mm^2 of their ~1 mm meshes; osteofe averages over the
#: bone surface within a fixed 3 mm sphere, which spans several elements at the clinical
#: sizes (1.5-3 mm) and so does not change with the mesh (deviation, recorded in
#: result.json; benchmarks/bench_convergence.py shows the convergence).
SCHILEO_2008 = StrainLimits(
    tension=0.0073,
    compression=0.0104,
    averaging_radius_mm=3.0,
    source="Schileo et al. 2008, J Biomech 41:356, doi:10.1016/j.jbiomech.2007.09.009; "
    "limits from Bayraktar et al. 2004, J Biomech 37:27",
)


#: Largest share (by area) of a node's averaged surface samples that may lie in cells at the
#: modulus floor for the node to be bone surface. Above it the average is mostly the strain
#: of non-bone filler: on the 3 mm TotalSegmentator example CT, with every node evaluated,
#: removing 79 soft-tissue voxels from TotalSegmentator's label moved the failure load by
#: 27 % and the automatic label was 25 % below it; with nodes above one half left out the
#: four label variants agree within 4 % (benchmarks/diag_segmentation_strength.py). The
#: deviation from Schileo et al. (who evaluated every surface node of bone-only models) is
#: recorded in result.json.
MAX_FLOOR_SHARE = 0.5


def principal_strains(strain: FloatArray) -> FloatArray:
    """Principal strains (eigenvalues, ascending) of symmetric tensors.

    Args:
        strain: (..., 3, 3) strain tensors.

    Returns:
        (..., 3) eigenvalues sorted ascending (min, mid, max).
    """
    sym = 0.5 * (strain + np.swapaxes(strain, -1, -2))
    return np.asarray(np.linalg.eigvalsh(sym))


@dataclass(frozen=True)
class FailureAnalysis:
    """Outcome of the strain criterion for one load case at its applied load.

    Attributes:
        load_factor: Failure load divided by the applied load.
        mode: "tension" or "compression": the limit reached first.
        critical_node: Mesh node index where failure starts.
        critical_point_mm: (3,) world position of that node.
        peak_tension_strain: Largest patch-averaged max principal strain at the applied load.
        peak_compression_strain: Most negative patch-averaged min principal strain.
        surface_nodes: (k,) int64 the surface nodes the criterion looked at (mesh numbers).
        surface_risk_factor: (k,) risk factor (peak strain / limit) at those nodes at the
            applied load; 0 at those left out as mostly non-bone.
        surface_bone: (k,) bool, those nodes evaluated as bone surface.
        num_nodes: Nodes of the mesh (the length of :attr:`node_risk_factor`).
        critical_on_defect_wall: True when failure starts on the wall of a lytic defect
            (a face between bone and lesion) rather than on the outer surface.
        critical_floor_share: Share (0-1, by area) of the surface samples averaged at the
            critical node that lie in cells at the modulus floor (``floor_cells`` of the
            criterion: no bone density, not a labelled lesion), 0 when not given.
        non_bone_load_factor: The lowest load factor of the surface nodes left out as
            mostly non-bone (floor share above the criterion's limit), or None when none was
            left out or none of them is strained.
        non_bone_point_mm: (3,) world position of that node, or None.
    """

    load_factor: float
    mode: Literal["tension", "compression"]
    critical_node: int
    critical_point_mm: FloatArray
    peak_tension_strain: float
    peak_compression_strain: float
    surface_nodes: npt.NDArray[np.int64]
    surface_risk_factor: FloatArray
    surface_bone: npt.NDArray[np.bool_]
    num_nodes: int
    critical_on_defect_wall: bool = False
    critical_floor_share: float = 0.0
    non_bone_load_factor: float | None = None
    non_bone_point_mm: FloatArray | None = None

    @property
    def node_risk_factor(self) -> FloatArray:
        """(n,) risk factor per mesh node (0 where not evaluated: interior, excluded zones).

        Built on demand from the surface values (the result itself stays surface-sized).
        """
        out = np.zeros(self.num_nodes)
        out[self.surface_nodes] = self.surface_risk_factor
        return out

    @property
    def evaluated(self) -> npt.NDArray[np.bool_]:
        """(n,) bool mask of the nodes where the criterion was evaluated as bone surface."""
        out = np.zeros(self.num_nodes, dtype=bool)
        out[self.surface_nodes[self.surface_bone]] = True
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "load_factor": self.load_factor,
            "mode": self.mode,
            "critical_node": self.critical_node,
            "critical_point_mm": self.critical_point_mm.round(3).tolist(),
            "peak_tension_strain": self.peak_tension_strain,
            "peak_compression_strain": self.peak_compression_strain,
            "max_risk_factor": 1.0 / self.load_factor,
            "evaluated_surface_nodes": int(np.count_nonzero(self.surface_bone)),
            "critical_on_defect_wall": self.critical_on_defect_wall,
            "critical_floor_share": round(self.critical_floor_share, 4),
            "non_bone_load_factor": self.non_bone_load_factor,
        }


def _averaging_matrix(node_points: FloatArray, node_normals: FloatArray,
                      sample_points: FloatArray, sample_normals: FloatArray,
                      sample_weights: FloatArray, radius: float) -> sparse.csr_matrix:
    """Row-normalised (k, s) matrix: weighted mean of the samples within ``radius``.

    Only samples on the same side of the bone as the node count (normals less than 90 deg
    apart), so that a thin cortex's far side or a defect wall behind it is not mixed in. A
    node with no sample within the radius (a radius below the element size) takes its
    nearest sample.
    """
    near = cKDTree(node_points).sparse_distance_matrix(
        cKDTree(sample_points), radius, output_type="coo_matrix")
    rows, cols = near.row, near.col
    same_side = np.einsum("ij,ij->i", node_normals[rows], sample_normals[cols]) > 0.0
    rows, cols = rows[same_side], cols[same_side]
    k = node_points.shape[0]
    lonely = np.setdiff1d(np.arange(k), rows)
    if lonely.size:
        _, nearest = cKDTree(sample_points).query(node_points[lonely])
        rows = np.concatenate([rows, lonely])
        cols = np.concatenate([cols, np.asarray(nearest, dtype=np.int64)])
    w = sparse.csr_matrix((sample_weights[cols], (rows, cols)),
                          shape=(k, sample_points.shape[0]))
    w.sum_duplicates()
    total = np.asarray(w.sum(axis=1)).ravel()
    return sparse.csr_matrix(sparse.diags(1.0 / total) @ w)


class StrainCriterion:
    """The principal-strain criterion set up once for a mesh and its evaluated surface.

    Building the surface samples and the averaging is the costly part; it is done here
    once, so that many load cases or load directions are cheap to evaluate.

    Args:
        mesh: The mesh.
        boundary: Optional (f, 3) outer boundary triangles to evaluate (default: the whole
            outer surface); each must be a boundary face of the mesh.
        excluded_nodes: (n,) bool, nodes not evaluated (load patch, supports, distal stump).
        limits: Limit strains and averaging radius.
        soft_tags: Cell tags of non-bone tissue (lesion): their faces with bone are defect
            walls (evaluated), their own outer faces are not bone surface.
        floor_cells: Optional (m,) bool, cells at the modulus floor that are not tagged
            soft (no bone density inside the label: partial-volume or soft-tissue voxels).
            Nodes whose averaged samples lie in them by more than ``max_floor_share`` (by
            area) are not bone surface: left out of the failure load, their lowest load
            is reported (:attr:`FailureAnalysis.non_bone_load_factor`).
        max_floor_share: See ``floor_cells`` (:data:`MAX_FLOOR_SHARE`; 1 evaluates every
            node).

    Raises:
        BoundaryConditionError: when no surface node is left to evaluate (also when every
            one is mostly non-bone: the label is not on bone).
    """

    def __init__(
        self,
        mesh: TetMesh,
        boundary: npt.NDArray[np.int64] | None = None,
        *,
        excluded_nodes: npt.NDArray[np.bool_] | None = None,
        limits: StrainLimits = SCHILEO_2008,
        soft_tags: tuple[int, ...] = (),
        floor_cells: npt.NDArray[np.bool_] | None = None,
        max_floor_share: float = MAX_FLOOR_SHARE,
    ) -> None:
        if not 0.0 < max_floor_share <= 1.0:
            raise ValueError(f"max_floor_share must be in (0, 1], got {max_floor_share}")
        facets = bone_surface_facets(mesh, soft_tags)
        if boundary is not None:
            facets = _restrict(facets, boundary)
        n = mesh.num_nodes
        on_surface = np.zeros(n, dtype=bool)
        on_surface[np.unique(facets.faces)] = True
        evaluated = on_surface if excluded_nodes is None else on_surface & ~excluded_nodes
        self.nodes = np.flatnonzero(evaluated)
        if self.nodes.size == 0:
            raise BoundaryConditionError(
                "no surface node left to evaluate the failure criterion",
                hint="reduce the excluded zones around loads/supports")
        # No reference to the mesh is kept: a criterion is small (surface-sized) and may be
        # built on one rank and sent to the others, which never hold the whole mesh.
        self.num_nodes = mesh.num_nodes
        self.num_cells = mesh.num_cells
        self._node_points = np.array(mesh.points[self.nodes], dtype=np.float64)
        self.limits = limits
        self.facets = facets
        wall_node = np.zeros(n, dtype=bool)
        wall_node[facets.faces[facets.interior].ravel()] = True
        outer_node = np.zeros(n, dtype=bool)
        outer_node[facets.faces[~facets.interior].ravel()] = True
        self._on_wall_only = (wall_node & ~outer_node)[self.nodes]
        normals, areas = face_normals_and_areas(mesh.points, facets.faces)
        # Samples: 3 per face; the cell-local corners of the face and weights.
        self._face_corners = TET_FACES[facets.opposite]  # (f, 3) local corner indices
        points = np.einsum("qj,fjd->fqd", _FACE_RULE, mesh.points[facets.faces]).reshape(-1, 3)
        weights = np.repeat(areas / 3.0, 3)
        sample_normals = np.repeat(normals, 3, axis=0)
        node_normals = np.zeros((n, 3))
        np.add.at(node_normals, facets.faces.ravel(), np.repeat(normals * areas[:, None], 3,
                                                                axis=0))
        self._average = _averaging_matrix(mesh.points[self.nodes], node_normals[self.nodes],
                                          points, sample_normals, weights,
                                          limits.averaging_radius_mm)
        self._floor_share = np.zeros(self.nodes.size)
        if floor_cells is not None:
            floor = np.asarray(floor_cells, dtype=bool)
            if floor.shape != (mesh.num_cells,):
                raise ValueError(f"floor_cells must have shape ({mesh.num_cells},), got "
                                 f"{floor.shape}")
            # The averaging rows sum to 1: the row times the samples' indicator is the share.
            self._floor_share = np.asarray(
                self._average @ np.repeat(floor[facets.cells], 3).astype(np.float64))
        # (the shares are sums of weights: a share of 1 may come out as 1 + 1e-16)
        self._bone = self._floor_share <= max_floor_share + 1e-12
        if not self._bone.any():
            raise BoundaryConditionError(
                "no bone surface to evaluate the failure criterion: around every surface "
                f"node more than {100 * max_floor_share:.0f} % of the surface is material "
                "at the modulus floor (no bone density inside the label)",
                hint="check that the label lies on the femur in this CT (and the density "
                     "calibration), or label non-bone tissue as a lesion")

    def _samples(self, strain: FloatArray, faces: npt.NDArray[np.int64] | None = None,
                 rows: npt.NDArray[np.int64] | None = None) -> FloatArray:
        """(s, 9) strain at the surface samples from per-cell or per-corner strains.

        ``faces``/``rows``: only the samples of these faces, whose cells are rows ``rows``
        of ``strain`` (a rank's part); default all faces, ``strain`` indexed by cell.
        """
        cells = self.facets.cells if rows is None else rows
        corners_of = self._face_corners if faces is None else self._face_corners[faces]
        if strain.ndim == 3:  # (m, 3, 3): constant per cell
            return np.asarray(strain.reshape(-1, 9)[np.repeat(cells, 3)])
        if strain.shape[1:] != (4, 3, 3):
            raise ValueError(f"strain must be (m, 3, 3) or (m, 4, 3, 3), got {strain.shape}")
        corners = strain.reshape(strain.shape[0], 4, 9)[cells[:, None], corners_of]  # (f, 3, 9)
        return np.asarray(np.einsum("qj,fjc->fqc", _FACE_RULE, corners).reshape(-1, 9))

    def surface_strain(self, strain: FloatArray, cell_ids: npt.NDArray[np.int64] | None = None,
                       comm: Any = None) -> FloatArray:
        """(k, 3, 3) averaged strain tensors at the evaluated nodes (linear in the input).

        Args:
            strain: (m, 3, 3) per cell (P1), or (m, 4, 3, 3) at each cell's corners (P2,
                :attr:`fea.solver.CaseSolution.vertex_strain`).
            cell_ids: For a distributed strain (each rank holds some cells' rows, every cell
                on exactly one rank): (c,) mesh cell of each row of ``strain``. Each rank
                averages the samples of its cells' faces; the (k, 9) partial sums are added
                over ``comm`` (``Allreduce``), so that every rank gets the same tensors
                without any rank holding the whole field. Collective then.
            comm: The MPI communicator of a distributed strain.
        """
        if cell_ids is None:
            return np.asarray((self._average @ self._samples(strain)).reshape(-1, 3, 3))
        if comm is None:
            raise ValueError("a distributed strain (cell_ids) needs its communicator")
        from mpi4py import MPI

        rows = positions(cell_ids, self.facets.cells)
        faces = np.flatnonzero(rows >= 0)
        columns = (3 * faces[:, None] + np.arange(3)).ravel()
        partial = np.ascontiguousarray(
            self._average[:, columns] @ self._samples(strain, faces, rows[faces]))
        total = np.empty_like(partial)
        comm.Allreduce(partial, total, op=MPI.SUM)
        return total.reshape(-1, 3, 3)

    def evaluate_surface(self, node_strain: FloatArray) -> FailureAnalysis:
        """Criterion from averaged strain tensors at the evaluated surface nodes (k, 3, 3)."""
        eig = principal_strains(node_strain)
        eps_min, eps_max = eig[:, 0], eig[:, 2]
        tension_rf = np.maximum(eps_max, 0.0) / self.limits.tension
        compression_rf = np.maximum(-eps_min, 0.0) / self.limits.compression
        all_risk = np.maximum(tension_rf, compression_rf)
        risk = np.where(self._bone, all_risk, 0.0)
        non_bone_rf = np.where(self._bone, 0.0, all_risk)
        j = int(np.argmax(non_bone_rf))
        strained_non_bone = bool(non_bone_rf[j] > 0.0)
        k = int(np.argmax(risk))
        if not risk[k] > 0.0:
            raise BoundaryConditionError("the load produces no strain on the evaluated surface",
                                         hint="check that loads are applied")
        mode: Literal["tension", "compression"] = (
            "tension" if tension_rf[k] >= compression_rf[k] else "compression"
        )
        critical = int(self.nodes[k])
        return FailureAnalysis(
            load_factor=float(1.0 / risk[k]),
            mode=mode,
            critical_node=critical,
            critical_point_mm=self._node_points[k].copy(),
            peak_tension_strain=float(eps_max.max()),
            peak_compression_strain=float(eps_min.min()),
            surface_nodes=self.nodes,
            surface_risk_factor=risk,
            surface_bone=self._bone,
            num_nodes=self.num_nodes,
            critical_on_defect_wall=bool(self._on_wall_only[k]),
            critical_floor_share=float(self._floor_share[k]),
            non_bone_load_factor=float(1.0 / non_bone_rf[j]) if strained_non_bone else None,
            non_bone_point_mm=(self._node_points[j].copy() if strained_non_bone
                               else None),
        )

    def evaluate(self, strain: FloatArray, cell_ids: npt.NDArray[np.int64] | None = None,
                 comm: Any = None) -> FailureAnalysis:
        """Criterion for a strain field ((m, 3, 3) per cell or (m, 4, 3, 3) per corner).

        ``cell_ids``/``comm``: a distributed strain (:meth:`surface_strain`); the result,
        then the same on every rank, is the one of the whole field.
        """
        return self.evaluate_surface(self.surface_strain(strain, cell_ids, comm))


def _restrict(facets: SurfaceFacets, boundary: npt.NDArray[np.int64]) -> SurfaceFacets:
    """Keep the defect walls and those outer faces that are in ``boundary``."""
    def keys(faces: npt.NDArray[np.int64]) -> npt.NDArray[np.void]:
        rows = np.ascontiguousarray(np.sort(np.asarray(faces, dtype=np.int64), axis=1))
        return rows.view(np.dtype((np.void, 3 * rows.itemsize))).ravel()

    keep = facets.interior | np.isin(keys(facets.faces), keys(boundary))
    return SurfaceFacets(facets.faces[keep], facets.cells[keep], facets.opposite[keep],
                         facets.interior[keep])


def strain_failure(
    mesh: TetMesh,
    strain: FloatArray,
    boundary: npt.NDArray[np.int64] | None = None,
    *,
    excluded_nodes: npt.NDArray[np.bool_] | None = None,
    limits: StrainLimits = SCHILEO_2008,
    soft_tags: tuple[int, ...] = (),
    floor_cells: npt.NDArray[np.bool_] | None = None,
    max_floor_share: float = MAX_FLOOR_SHARE,
) -> FailureAnalysis:
    """Apply the principal-strain criterion on the bone surface (one load case).

    Args:
        mesh: The mesh.
        strain: (m, 3, 3) strain per cell, or (m, 4, 3, 3) per cell corner (P2), at the
            applied load.
        boundary: Optional (f, 3) outer boundary triangles to evaluate (default: all).
        excluded_nodes: (n,) bool, nodes not evaluated (load patch, supports, distal stump).
        limits: Limit strains and averaging radius.
        soft_tags: Cell tags of lesion tissue (their walls with bone are evaluated).
        floor_cells: Optional (m,) bool, untagged cells at the modulus floor: nodes mostly
            on them are left out (:class:`StrainCriterion`).
        max_floor_share: Their largest share at an evaluated node.

    Returns:
        The load factor to failure, mode, location and the nodal risk-factor field.

    Raises:
        BoundaryConditionError: when no surface node is left to evaluate.
    """
    criterion = StrainCriterion(mesh, boundary, excluded_nodes=excluded_nodes, limits=limits,
                                soft_tags=soft_tags, floor_cells=floor_cells,
                                max_floor_share=max_floor_share)
    return criterion.evaluate(strain)
