"""Linear, strain-based failure criterion (Schileo et al. 2008) and the load to failure.

Principal strains are taken at surface nodes (volume-weighted average of the adjacent cells'
strain tensors), averaged over a small surface patch, and compared with the yield strains of
bone in tension and compression. In a linear model the failure load is the applied load times
``1 / max(risk factor)``, the risk factor being the peak strain divided by its limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.spatial import cKDTree

from fea.errors import BoundaryConditionError
from fea.topology import cell_to_node_average, node_areas
from meshing.types import TetMesh

__all__ = ["SCHILEO_2008", "FailureAnalysis", "StrainCriterion", "StrainLimits",
           "principal_strains", "strain_failure"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class StrainLimits:
    """Limit principal strains of bone and the patch they are averaged over.

    Attributes:
        tension: Maximum principal strain at failure (> 0).
        compression: Magnitude of the minimum principal strain at failure (> 0).
        patch_area_mm2: Surface area over which principal strains are averaged.
        source: Citation.
    """

    tension: float
    compression: float
    patch_area_mm2: float
    source: str

    def __post_init__(self) -> None:
        if self.tension <= 0 or self.compression <= 0 or self.patch_area_mm2 <= 0:
            raise ValueError("strain limits and patch area must be positive")

    @property
    def patch_radius_mm(self) -> float:
        """Radius of a disc of the patch area."""
        return float(np.sqrt(self.patch_area_mm2 / np.pi))


#: Schileo E, Taddei F, Cristofolini L, Viceconti M (2008) Subject-specific finite element
#: models implementing a maximum principal strain criterion are able to estimate failure risk
#: and fracture location on human femurs tested in vitro. J Biomech 41:356-367,
#: doi:10.1016/j.jbiomech.2007.09.009. Limits 0.73 % tension, 1.04 % compression (from the
#: yield strains of Bayraktar et al. 2004, J Biomech 37:27-35); strains averaged over ~3 mm^2.
SCHILEO_2008 = StrainLimits(
    tension=0.0073,
    compression=0.0104,
    patch_area_mm2=3.0,
    source="Schileo et al. 2008, J Biomech 41:356, doi:10.1016/j.jbiomech.2007.09.009; "
    "limits from Bayraktar et al. 2004, J Biomech 37:27",
)


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
        node_risk_factor: (n,) risk factor per node at the applied load (0 where not
            evaluated: interior nodes and excluded zones).
        evaluated: (n,) bool mask of the nodes where the criterion was evaluated.
    """

    load_factor: float
    mode: Literal["tension", "compression"]
    critical_node: int
    critical_point_mm: FloatArray
    peak_tension_strain: float
    peak_compression_strain: float
    node_risk_factor: FloatArray
    evaluated: npt.NDArray[np.bool_]

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
            "evaluated_surface_nodes": int(self.evaluated.sum()),
        }


def _patch_average_matrix(points: FloatArray, weights: FloatArray,
                          radius: float) -> sparse.csr_matrix:
    """Row-normalised matrix of area-weighted averages over points within ``radius``."""
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    n = points.shape[0]
    diagonal = np.arange(n)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], diagonal])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], diagonal])
    w = sparse.csr_matrix((weights[cols], (rows, cols)), shape=(n, n))
    total = np.asarray(w.sum(axis=1)).ravel()
    return sparse.csr_matrix(sparse.diags(1.0 / total) @ w)


class StrainCriterion:
    """The principal-strain criterion set up once for a mesh and its evaluated surface.

    Building the nodal averaging and the surface-patch averaging is the costly part; it is
    done here once, so that many load cases or load directions are cheap to evaluate.

    Args:
        mesh: The mesh.
        boundary: (f, 3) boundary triangles (node indices).
        excluded_nodes: (n,) bool, nodes not evaluated (load patch, supports, distal stump).
        limits: Limit strains and averaging patch.

    Raises:
        BoundaryConditionError: when no surface node is left to evaluate.
    """

    def __init__(
        self,
        mesh: TetMesh,
        boundary: npt.NDArray[np.int64],
        *,
        excluded_nodes: npt.NDArray[np.bool_] | None = None,
        limits: StrainLimits = SCHILEO_2008,
    ) -> None:
        n = mesh.num_nodes
        surface = np.zeros(n, dtype=bool)
        surface[np.unique(boundary)] = True
        self.evaluated = surface if excluded_nodes is None else surface & ~excluded_nodes
        self.nodes = np.flatnonzero(self.evaluated)
        if self.nodes.size == 0:
            raise BoundaryConditionError(
                "no surface node left to evaluate the failure criterion",
                hint="reduce the excluded zones around loads/supports")
        self.mesh = mesh
        self.limits = limits
        weights = node_areas(n, mesh.points, boundary)[self.nodes]
        self._patch = _patch_average_matrix(mesh.points[self.nodes], weights,
                                            limits.patch_radius_mm)

    def surface_strain(self, cell_strain: FloatArray) -> FloatArray:
        """(k, 3, 3) strain tensors at the evaluated surface nodes (linear in the input)."""
        return np.asarray(cell_to_node_average(self.mesh, cell_strain)[self.nodes])

    def evaluate_surface(self, node_strain: FloatArray) -> FailureAnalysis:
        """Criterion from strain tensors at the evaluated surface nodes (k, 3, 3)."""
        eig = principal_strains(node_strain)
        averaged = self._patch @ eig[:, [0, 2]]
        eps_min, eps_max = averaged[:, 0], averaged[:, 1]
        tension_rf = np.maximum(eps_max, 0.0) / self.limits.tension
        compression_rf = np.maximum(-eps_min, 0.0) / self.limits.compression
        risk = np.maximum(tension_rf, compression_rf)
        k = int(np.argmax(risk))
        if not risk[k] > 0.0:
            raise BoundaryConditionError("the load produces no strain on the evaluated surface",
                                         hint="check that loads are applied")
        node_rf = np.zeros(self.mesh.num_nodes)
        node_rf[self.nodes] = risk
        mode: Literal["tension", "compression"] = (
            "tension" if tension_rf[k] >= compression_rf[k] else "compression"
        )
        critical = int(self.nodes[k])
        return FailureAnalysis(
            load_factor=float(1.0 / risk[k]),
            mode=mode,
            critical_node=critical,
            critical_point_mm=self.mesh.points[critical].copy(),
            peak_tension_strain=float(eps_max.max()),
            peak_compression_strain=float(eps_min.min()),
            node_risk_factor=node_rf,
            evaluated=self.evaluated,
        )

    def evaluate(self, cell_strain: FloatArray) -> FailureAnalysis:
        """Criterion for a strain field given per cell (m, 3, 3) at the applied load."""
        return self.evaluate_surface(self.surface_strain(cell_strain))


def strain_failure(
    mesh: TetMesh,
    cell_strain: FloatArray,
    boundary: npt.NDArray[np.int64],
    *,
    excluded_nodes: npt.NDArray[np.bool_] | None = None,
    limits: StrainLimits = SCHILEO_2008,
) -> FailureAnalysis:
    """Apply the principal-strain criterion on the bone surface (one load case).

    Args:
        mesh: The mesh.
        cell_strain: (m, 3, 3) strain per cell at the applied load.
        boundary: (f, 3) boundary triangles (node indices).
        excluded_nodes: (n,) bool, nodes not evaluated (load patch, supports, distal stump).
        limits: Limit strains and averaging patch.

    Returns:
        The load factor to failure, mode, location and the nodal risk-factor field.

    Raises:
        BoundaryConditionError: when no surface node is left to evaluate.
    """
    criterion = StrainCriterion(mesh, boundary, excluded_nodes=excluded_nodes, limits=limits)
    return criterion.evaluate(cell_strain)
