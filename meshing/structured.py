"""Structured tetrahedral meshes of boxes, for verification problems and benchmarks."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import numpy.typing as npt

from meshing.types import TetMesh

__all__ = ["box_mesh"]


def box_mesh(
    lower: npt.ArrayLike, upper: npt.ArrayLike, divisions: tuple[int, int, int]
) -> TetMesh:
    """Split an axis-aligned box into hexahedra and each into 6 tetrahedra (Kuhn).

    The Kuhn subdivision (all tets share the cube's main diagonal) is conforming between
    neighbouring cubes, and every tetrahedron is returned positively oriented.

    Args:
        lower: (3,) lower corner, mm.
        upper: (3,) upper corner, mm.
        divisions: Number of cubes along x, y, z (each >= 1).

    Returns:
        A linear tetrahedral mesh with all cell tags 1.
    """
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    nx, ny, nz = (int(n) for n in divisions)
    if min(nx, ny, nz) < 1 or np.any(hi <= lo):
        raise ValueError("box_mesh needs upper > lower and at least one division per axis")
    axes = [np.linspace(lo[d], hi[d], n + 1) for d, n in enumerate((nx, ny, nz))]
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")
    points = np.column_stack([gx.ravel(), gy.ravel(), gz.ravel()])

    def node(i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        return np.asarray((i * (ny + 1) + j) * (nz + 1) + k)

    ci, cj, ck = (c.ravel() for c in np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz),
                                                 indexing="ij"))
    tets = []
    for perm in permutations(range(3)):
        corner = np.zeros((3, ci.size), dtype=np.int64)
        path = [node(ci, cj, ck)]
        for axis in perm:
            corner[axis] += 1
            path.append(node(ci + corner[0], cj + corner[1], ck + corner[2]))
        tets.append(np.column_stack(path))
    cells = np.vstack(tets)
    p = points[cells]
    signed = np.einsum("ij,ij->i", p[:, 1] - p[:, 0],
                       np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]))
    flip = signed < 0
    cells[flip] = cells[flip][:, [0, 2, 1, 3]]
    return TetMesh(points=points, cells=cells, cell_tags=np.ones(cells.shape[0], dtype=np.int32))
