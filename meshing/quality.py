"""Shape quality of tetrahedral meshes: dihedral angles, radius ratio, inverted elements.

All metrics are vectorised over cells. For 10-node tetrahedra the shape metrics use the four
corner vertices (the straight-sided tetrahedron), while inversion is judged on the Jacobian of
the quadratic map, evaluated at the four vertices and at the centroid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core.types import FloatArray
from meshing.errors import MeshQualityError
from meshing.types import TetMesh

__all__ = [
    "MeshQuality",
    "check_quality",
    "jacobian_determinants",
    "mesh_quality",
    "min_dihedral_angles",
    "radius_ratios",
    "topology_check",
]


#: The six edges (i, j) of a tetrahedron and, for each, the two vertices (k, l) not on it.
_EDGES = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])
_OPPOSITE = np.array([[2, 3], [0, 3], [1, 3], [1, 2], [0, 2], [0, 1]])
#: Faces opposite vertex 0, 1, 2, 3 (any orientation; normals are made outward below).
_FACES = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])


@dataclass(frozen=True)
class MeshQuality:
    """Summary of the shape quality of a tetrahedral mesh.

    Attributes:
        num_cells: Number of tetrahedra.
        num_nodes: Number of nodes.
        order: 1 (4-node) or 2 (10-node).
        min_dihedral_deg: Smallest dihedral angle over all cells in degrees (regular tet:
            70.53; slivers: near 0).
        mean_dihedral_deg: Mean over cells of each cell's smallest dihedral angle, degrees.
        min_radius_ratio: Smallest radius ratio ``3 * inradius / circumradius`` (regular tet
            = 1, degenerate = 0).
        mean_radius_ratio: Mean radius ratio.
        num_inverted: Cells with a non-positive Jacobian determinant at any sample point.
        worst_cells: (k,) int64 indices of the worst cells, worst first (inverted ones
            first, then by smallest dihedral angle).
        worst_centroids_mm: (k, 3) float64 centroids of those cells in mm.
        worst_min_dihedral_deg: (k,) float64 smallest dihedral angle of those cells, degrees.
        worst_inverted: (k,) bool, whether each of those cells is inverted.
    """

    num_cells: int
    num_nodes: int
    order: int
    min_dihedral_deg: float
    mean_dihedral_deg: float
    min_radius_ratio: float
    mean_radius_ratio: float
    num_inverted: int
    worst_cells: npt.NDArray[np.int64]
    worst_centroids_mm: FloatArray
    worst_min_dihedral_deg: FloatArray
    worst_inverted: npt.NDArray[np.bool_]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (plain ints, floats and lists)."""
        return {
            "num_cells": int(self.num_cells),
            "num_nodes": int(self.num_nodes),
            "order": int(self.order),
            "min_dihedral_deg": float(self.min_dihedral_deg),
            "mean_dihedral_deg": float(self.mean_dihedral_deg),
            "min_radius_ratio": float(self.min_radius_ratio),
            "mean_radius_ratio": float(self.mean_radius_ratio),
            "num_inverted": int(self.num_inverted),
            "worst_cells": [int(i) for i in self.worst_cells],
            "worst_centroids_mm": [[float(v) for v in row] for row in self.worst_centroids_mm],
            "worst_min_dihedral_deg": [float(v) for v in self.worst_min_dihedral_deg],
            "worst_inverted": [bool(v) for v in self.worst_inverted],
        }


def _corners(mesh: TetMesh) -> FloatArray:
    """(m, 4, 3) corner coordinates of every cell in mm."""
    return np.asarray(mesh.points[mesh.vertex_cells()])


def min_dihedral_angles(mesh: TetMesh) -> FloatArray:
    """Smallest of the six dihedral angles of each (straight-sided) tetrahedron.

    Args:
        mesh: Linear or quadratic tetrahedral mesh (corner vertices used).

    Returns:
        (m,) float64 angles in degrees; 0 for a degenerate (flat) cell.
    """
    return np.asarray(_dihedral_angles(_corners(mesh)).min(axis=1))


def _dihedral_angles(p: FloatArray) -> FloatArray:
    """(m, 6) dihedral angles in degrees at edges 01, 12, 02, 03, 13, 23 of (m, 4, 3) tets."""
    a, b, c = p[:, _FACES[:, 0]], p[:, _FACES[:, 1]], p[:, _FACES[:, 2]]
    normals = np.cross(b - a, c - a)  # (m, 4, 3), face opposite vertex v
    # Make each normal point away from the opposite vertex (outward for any orientation).
    towards = np.einsum("mvk,mvk->mv", normals, p - a)
    normals = normals * np.where(towards > 0.0, -1.0, 1.0)[:, :, np.newaxis]
    length = np.linalg.norm(normals, axis=2, keepdims=True)
    unit = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0.0)
    n_k = unit[:, _OPPOSITE[:, 0]]
    n_l = unit[:, _OPPOSITE[:, 1]]
    cosine = -np.einsum("mek,mek->me", n_k, n_l)
    angles = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    degenerate = (length[:, :, 0] <= 0.0).any(axis=1) | np.all(towards == 0.0, axis=1)
    angles[degenerate] = 0.0
    return np.asarray(angles)


def radius_ratios(mesh: TetMesh) -> FloatArray:
    """Normalised radius ratio ``3 * inradius / circumradius`` of each tetrahedron.

    Uses ``r = 3 V / S`` (S = total face area) and the circumradius formula
    ``R = sqrt((aA+bB+cC)(aA+bB-cC)(aA-bB+cC)(-aA+bB+cC)) / (24 V)`` with a, A lengths of
    opposite edges, so ``3 r / R = 216 V^2 / (S sqrt(...))`` needs no division by V.

    Args:
        mesh: Linear or quadratic tetrahedral mesh (corner vertices used).

    Returns:
        (m,) float64 in [0, 1]: 1 for the regular tetrahedron, 0 for a flat one.
    """
    p = _corners(mesh)
    d1, d2, d3 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]
    volume = np.einsum("ij,ij->i", d1, np.cross(d2, d3)) / 6.0
    a, b, c = p[:, _FACES[:, 0]], p[:, _FACES[:, 1]], p[:, _FACES[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=2).sum(axis=1)
    length = np.linalg.norm(p[:, _EDGES[:, 1]] - p[:, _EDGES[:, 0]], axis=2)
    # Opposite edge pairs: 01-23, 02-13, 03-12.
    aa = length[:, 0] * length[:, 5]
    bb = length[:, 2] * length[:, 4]
    cc = length[:, 3] * length[:, 1]
    product = (aa + bb + cc) * (aa + bb - cc) * (aa - bb + cc) * (-aa + bb + cc)
    denominator = area * np.sqrt(np.clip(product, 0.0, None))
    ratio = np.divide(216.0 * volume**2, denominator, out=np.zeros_like(volume),
                      where=denominator > 0.0)
    return np.asarray(np.clip(ratio, 0.0, 1.0))


def _tet10_shape_gradients(xi: FloatArray) -> FloatArray:
    """(q, 10, 3) gradients of the VTK-ordered quadratic tet shape functions at (q, 3) points."""
    lam = np.column_stack([1.0 - xi.sum(axis=1), xi])  # (q, 4) barycentric coordinates
    dlam = np.array([[-1.0, -1.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    grads = np.empty((xi.shape[0], 10, 3))
    grads[:, :4] = (4.0 * lam - 1.0)[:, :, np.newaxis] * dlam[np.newaxis]
    for e, (i, j) in enumerate(_EDGES):
        grads[:, 4 + e] = 4.0 * (lam[:, i, np.newaxis] * dlam[j] + lam[:, j, np.newaxis] * dlam[i])
    return grads


#: Reference points where the quadratic Jacobian is sampled: the 4 vertices and the centroid.
_SAMPLE_POINTS = np.array(
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.25, 0.25, 0.25]])
_TET10_GRADIENTS = _tet10_shape_gradients(_SAMPLE_POINTS)


def jacobian_determinants(mesh: TetMesh) -> FloatArray:
    """Determinant of the reference-to-physical Jacobian of each cell.

    For 4-node cells this is ``6 V`` (one column); for 10-node cells it is sampled at the
    four vertices and the centroid of the reference tetrahedron.

    Args:
        mesh: Linear or quadratic tetrahedral mesh.

    Returns:
        (m, 1) float64 for order 1 or (m, 5) float64 for order 2, in mm^3.
    """
    if mesh.order == 1:
        p = _corners(mesh)
        d1, d2, d3 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]
        return np.asarray(np.einsum("ij,ij->i", d1, np.cross(d2, d3))[:, np.newaxis])
    x = mesh.points[mesh.cells]  # (m, 10, 3)
    jac = np.einsum("mai,qaj->mqij", x, _TET10_GRADIENTS)  # (m, q, 3, 3)
    return np.asarray(np.linalg.det(jac))


def mesh_quality(mesh: TetMesh, *, num_worst: int = 5) -> MeshQuality:
    """Compute the quality summary of a tetrahedral mesh.

    Args:
        mesh: Linear or quadratic tetrahedral mesh.
        num_worst: How many worst cells to report.

    Returns:
        The quality summary (all zeros / empty for a mesh without cells).
    """
    if mesh.num_cells == 0:
        empty = np.zeros(0)
        return MeshQuality(0, mesh.num_nodes, mesh.order, 0.0, 0.0, 0.0, 0.0, 0,
                           np.zeros(0, dtype=np.int64), np.zeros((0, 3)), empty,
                           np.zeros(0, dtype=bool))
    dihedral = min_dihedral_angles(mesh)
    ratio = radius_ratios(mesh)
    inverted = np.any(jacobian_determinants(mesh) <= 0.0, axis=1)
    # Worst first: inverted cells, then by smallest dihedral angle.
    order = np.lexsort((dihedral, ~inverted))[: max(int(num_worst), 0)]
    return MeshQuality(
        num_cells=mesh.num_cells,
        num_nodes=mesh.num_nodes,
        order=mesh.order,
        min_dihedral_deg=float(dihedral.min()),
        mean_dihedral_deg=float(dihedral.mean()),
        min_radius_ratio=float(ratio.min()),
        mean_radius_ratio=float(ratio.mean()),
        num_inverted=int(inverted.sum()),
        worst_cells=order.astype(np.int64),
        worst_centroids_mm=mesh.centroids()[order],
        worst_min_dihedral_deg=dihedral[order],
        worst_inverted=inverted[order],
    )


def check_quality(quality: MeshQuality, *, min_dihedral_deg: float = 1.0,
                  max_inverted: int = 0) -> None:
    """Raise if a mesh is too poor to be solved reliably.

    Args:
        quality: Summary from :func:`mesh_quality`.
        min_dihedral_deg: Smallest acceptable dihedral angle in degrees.
        max_inverted: Largest acceptable number of inverted cells.

    Raises:
        MeshQualityError: Too many inverted cells, or a dihedral angle below the threshold;
            the message names the worst cells and their centroids in mm.
    """
    worst = "; ".join(
        f"cell {int(c)} at ({x[0]:.1f}, {x[1]:.1f}, {x[2]:.1f}) mm, "
        f"min dihedral {d:.2f} deg{' (inverted)' if inv else ''}"
        for c, x, d, inv in zip(quality.worst_cells[:3], quality.worst_centroids_mm[:3],
                                quality.worst_min_dihedral_deg[:3], quality.worst_inverted[:3],
                                strict=True)
    )
    if quality.num_inverted > max_inverted:
        raise MeshQualityError(
            f"{quality.num_inverted} of {quality.num_cells} tetrahedra are inverted "
            f"(allowed {max_inverted}); worst: {worst}",
            hint="remesh with a smaller size_mm or a smoother surface (larger "
                 "smoothing_sigma_vox / more taubin_iterations); for order 2 use straight "
                 "edges (curved=False)")
    if quality.num_cells and quality.min_dihedral_deg < min_dihedral_deg:
        raise MeshQualityError(
            f"smallest dihedral angle {quality.min_dihedral_deg:.2f} deg is below "
            f"{min_dihedral_deg:.2f} deg; worst: {worst}",
            hint="remesh with a smaller size_mm, a smoother surface, or optimize_netgen=True")


def topology_check(mesh: TetMesh) -> str | None:
    """Describe why a tetrahedral mesh is not a valid, non-overlapping partition of space.

    Checks, on the corner vertices: no cell uses a vertex twice; every triangular face is
    shared by at most two cells; and across every interior face the two cells lie on
    opposite sides of it. A cell on the same side as its neighbour overlaps it (a fold):
    that happens when a mesh is tangled, and it is the case that reorienting a negatively
    numbered cell cannot repair. Orientation itself is not checked (see
    :func:`jacobian_determinants`), nor are coincident duplicate nodes.

    Args:
        mesh: Linear or quadratic tetrahedral mesh.

    Returns:
        None when the mesh passes, else a one-line description of the first problem,
        naming how many faces are affected and where (centroid of one, mm).
    """
    cells = mesh.vertex_cells()
    m = cells.shape[0]
    if m == 0:
        return None
    ordered = np.sort(cells, axis=1)
    repeated = np.any(ordered[:, 1:] == ordered[:, :-1], axis=1)
    if repeated.any():
        first = int(np.flatnonzero(repeated)[0])
        return (f"{int(repeated.sum())} cells use a vertex twice (e.g. cell {first} at "
                f"{_where(mesh.centroids()[first])})")
    faces = np.sort(cells[:, _FACES].reshape(-1, 3), axis=1)  # face f opposite vertex f % 4
    apex = cells.reshape(-1)
    order = np.lexsort((faces[:, 2], faces[:, 1], faces[:, 0]))
    faces, apex = faces[order], apex[order]
    same = np.all(faces[1:] == faces[:-1], axis=1)
    triple = same[1:] & same[:-1]
    if triple.any():
        face = faces[int(np.flatnonzero(triple)[0])]
        return (f"{int(triple.sum())} faces are shared by more than two cells (e.g. at "
                f"{_where(mesh.points[face].mean(axis=0))}): the mesh is non-manifold or "
                "holds duplicated cells")
    pair = np.flatnonzero(same)
    p = mesh.points
    a, b, c = p[faces[pair, 0]], p[faces[pair, 1]], p[faces[pair, 2]]
    normal = np.cross(b - a, c - a)
    side_1 = np.einsum("ij,ij->i", normal, p[apex[pair]] - a)
    side_2 = np.einsum("ij,ij->i", normal, p[apex[pair + 1]] - a)
    folded = side_1 * side_2 >= 0.0
    if folded.any():
        first = int(pair[np.flatnonzero(folded)[0]])
        return (f"{int(folded.sum())} interior faces have both their cells on the same side "
                f"(overlapping, folded cells; e.g. at "
                f"{_where(p[faces[first]].mean(axis=0))})")
    return None


def _where(x: np.ndarray) -> str:
    """'(x, y, z) mm' with one decimal."""
    return f"({x[0]:.1f}, {x[1]:.1f}, {x[2]:.1f}) mm"
