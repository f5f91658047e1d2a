"""Mesh topology helpers in plain numpy: boundary faces, surface nodes, nodal averages."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import sparse

from meshing.types import TetMesh

__all__ = [
    "boundary_faces",
    "cell_to_node_average",
    "face_normals_and_areas",
    "node_areas",
]

# Faces of a tetrahedron (vertex indices), each ordered so that its normal points outwards
# for a positively oriented tet (v0, v1, v2, v3).
_TET_FACES = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]], dtype=np.int64)


def boundary_faces(mesh: TetMesh) -> npt.NDArray[np.int64]:
    """Exterior triangles of a tetrahedral mesh, oriented outwards.

    Args:
        mesh: Tetrahedral mesh with positively oriented cells.

    Returns:
        (f, 3) int64 node indices of the faces that belong to exactly one cell.
    """
    tets = mesh.vertex_cells()
    faces = tets[:, _TET_FACES].reshape(-1, 3)
    keys = np.sort(faces, axis=1)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    return np.ascontiguousarray(faces[counts[inverse.ravel()] == 1])


def face_normals_and_areas(
    points: npt.NDArray[np.float64], faces: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Unit normals (f, 3) and areas (f,) in mm^2 of triangles."""
    p = points[faces]
    cross = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    twice_area = np.linalg.norm(cross, axis=1)
    normals = cross / np.maximum(twice_area, np.finfo(float).tiny)[:, None]
    return normals, 0.5 * twice_area


def node_areas(
    num_nodes: int, points: npt.NDArray[np.float64], faces: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Lumped surface area per node (one third of each adjacent triangle), (n,) mm^2."""
    _, areas = face_normals_and_areas(points, faces)
    lumped = np.zeros(num_nodes)
    np.add.at(lumped, faces.ravel(), np.repeat(areas / 3.0, 3))
    return lumped


def cell_to_node_average(
    mesh: TetMesh, cell_values: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Volume-weighted average of per-cell values at the corner nodes.

    Args:
        mesh: The mesh.
        cell_values: (m, ...) values per cell.

    Returns:
        (n, ...) values per node; nodes not at a cell corner (e.g. mid-edge nodes) get 0.
    """
    tets = mesh.vertex_cells()
    weights = np.abs(mesh.cell_volumes())
    m = tets.shape[0]
    rows = tets.ravel()
    cols = np.repeat(np.arange(m), 4)
    vals = np.repeat(weights, 4)
    incidence = sparse.csr_matrix((vals, (rows, cols)), shape=(mesh.num_nodes, m))
    total = np.asarray(incidence.sum(axis=1)).ravel()
    flat = cell_values.reshape(m, -1)
    summed = incidence @ flat
    averaged = summed / np.maximum(total, np.finfo(float).tiny)[:, None]
    return np.asarray(averaged.reshape((mesh.num_nodes, *cell_values.shape[1:])))
