"""Mesh topology helpers in plain numpy: boundary faces, surface nodes, nodal averages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

from meshing.types import TetMesh

__all__ = [
    "TET_FACES",
    "SurfaceFacets",
    "bone_surface_facets",
    "boundary_faces",
    "cell_to_node_average",
    "face_normals_and_areas",
    "node_areas",
]

#: Faces of a tetrahedron (local vertex indices): face k is opposite vertex k, ordered so that
#: its normal points outwards for a positively oriented tet (v0, v1, v2, v3).
TET_FACES = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]], dtype=np.int64)


def boundary_faces(mesh: TetMesh) -> npt.NDArray[np.int64]:
    """Exterior triangles of a tetrahedral mesh, oriented outwards.

    Args:
        mesh: Tetrahedral mesh with positively oriented cells.

    Returns:
        (f, 3) int64 node indices of the faces that belong to exactly one cell.
    """
    return bone_surface_facets(mesh).faces


@dataclass(frozen=True)
class SurfaceFacets:
    """Triangles of a bone surface, each with the tetrahedron of bone it bounds.

    Attributes:
        faces: (f, 3) int64 node indices, oriented outwards of ``cells``.
        cells: (f,) int64 cell owning each face.
        opposite: (f,) int64 local index (0-3) of the cell vertex opposite the face.
        interior: (f,) bool, True for a face between bone and a lesion (inner wall of a
            defect), False for the outer surface.
    """

    faces: npt.NDArray[np.int64]
    cells: npt.NDArray[np.int64]
    opposite: npt.NDArray[np.int64]
    interior: npt.NDArray[np.bool_]


def bone_surface_facets(mesh: TetMesh, soft_tags: tuple[int, ...] = ()) -> SurfaceFacets:
    """The outer surface of the bone and the walls between bone and soft (lesion) cells.

    Args:
        mesh: Tetrahedral mesh with positively oriented cells.
        soft_tags: Cell tags that are not bone (e.g. lytic lesion tissue): a face between a
            bone cell and a cell with one of these tags is a bone surface too (the wall of a
            cortical defect), owned by the bone cell. Faces of soft cells on the outer
            boundary are left out.

    Returns:
        The facets; outer faces first.
    """
    tets = mesh.vertex_cells()
    m = tets.shape[0]
    faces = tets[:, TET_FACES].reshape(-1, 3)
    owner = np.repeat(np.arange(m, dtype=np.int64), 4)
    local = np.tile(np.arange(4, dtype=np.int64), m)
    keys = np.sort(faces, axis=1)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    soft = np.isin(mesh.cell_tags, np.asarray(soft_tags, dtype=mesh.cell_tags.dtype))
    soft_face = soft[owner]
    outer = (counts[inverse] == 1) & ~soft_face
    # A shared face is a wall when its two cells differ in softness: count soft owners.
    soft_count = np.bincount(inverse, weights=soft_face.astype(float), minlength=counts.size)
    wall = (counts[inverse] == 2) & ~soft_face & (soft_count[inverse] == 1)
    pick = np.concatenate([np.flatnonzero(outer), np.flatnonzero(wall)])
    return SurfaceFacets(
        faces=np.ascontiguousarray(faces[pick]),
        cells=owner[pick],
        opposite=local[pick],
        interior=np.concatenate([np.zeros(int(outer.sum()), dtype=bool),
                                 np.ones(int(wall.sum()), dtype=bool)]),
    )


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
