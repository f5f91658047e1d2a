"""Frozen records passed between the stages of osteofe.

All arrays use one row per entity, 0-based indices, explicit dtypes, and millimetres for
lengths. World coordinates are the patient coordinates of ITK/DICOM (LPS: +x towards the
patient's left, +y posterior, +z superior).

The voxel-index <-> world transform is owned by :class:`ImageGrid` alone
(:meth:`ImageGrid.index_to_world` and :meth:`ImageGrid.world_to_index`); every other module
calls these instead of re-deriving the affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from core.types import FloatArray, IntArray

__all__ = ["CTVolume", "ImageGrid", "LabelMap", "SurfaceMesh", "TetMesh"]


def _readonly(array: np.ndarray) -> np.ndarray:
    """Return ``array`` flagged read-only, so frozen records are frozen all the way down.

    A writeable array is copied first (an already read-only one is shared), so freezing a
    record never makes the caller's own array read-only.
    """
    if array.flags.writeable:
        array = array.copy()
        array.flags.writeable = False
    return array


@dataclass(frozen=True)
class ImageGrid:
    """Geometry of a 3-D image: voxel (i, j, k) centre -> world position in mm.

    ``world = origin + direction @ (spacing * [i, j, k])``.

    Attributes:
        shape: Number of voxels along the image axes (ni, nj, nk).
        spacing: (3,) float64, voxel size along i, j, k in mm (all > 0).
        origin: (3,) float64, world position of the centre of voxel (0, 0, 0) in mm.
        direction: (3, 3) float64 orthonormal matrix whose columns are the world directions of
            the i, j and k axes (ITK's direction cosines).
    """

    shape: tuple[int, int, int]
    spacing: FloatArray
    origin: FloatArray
    direction: FloatArray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        spacing = np.asarray(self.spacing, dtype=np.float64).reshape(3)
        origin = np.asarray(self.origin, dtype=np.float64).reshape(3)
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"image shape must be three positive sizes, got {self.shape}")
        if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0.0):
            raise ValueError(f"voxel spacing must be finite and positive, got {spacing} mm")
        if not np.all(np.isfinite(origin)):
            raise ValueError(f"image origin must be finite, got {origin} mm")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise ValueError("image direction cosines are not orthonormal")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "spacing", _readonly(spacing))
        object.__setattr__(self, "origin", _readonly(origin))
        object.__setattr__(self, "direction", _readonly(direction))

    @property
    def index_to_world_matrix(self) -> FloatArray:
        """(3, 3) matrix M with ``world = origin + M @ ijk`` (direction times spacing)."""
        return np.asarray(self.direction * self.spacing[np.newaxis, :], dtype=np.float64)

    def index_to_world(self, ijk: npt.ArrayLike) -> FloatArray:
        """Map continuous voxel indices to world coordinates.

        Args:
            ijk: (n, 3) or (3,) voxel indices (float allowed; integer = voxel centre).

        Returns:
            World coordinates in mm, same shape as ``ijk``.
        """
        ijk_arr = np.asarray(ijk, dtype=np.float64)
        return np.asarray(ijk_arr @ self.index_to_world_matrix.T + self.origin)

    def world_to_index(self, xyz: npt.ArrayLike) -> FloatArray:
        """Map world coordinates (mm) to continuous voxel indices (inverse of index_to_world).

        Args:
            xyz: (n, 3) or (3,) world coordinates in mm.

        Returns:
            Continuous voxel indices, same shape as ``xyz``.
        """
        xyz_arr = np.asarray(xyz, dtype=np.float64)
        inverse = np.linalg.inv(self.index_to_world_matrix)
        return np.asarray((xyz_arr - self.origin) @ inverse.T)

    def world_bounds(self) -> tuple[FloatArray, FloatArray]:
        """Axis-aligned world bounding box of the voxel centres, as (lower, upper) in mm."""
        corners = np.array(
            [[i, j, k] for i in (0, self.shape[0] - 1) for j in (0, self.shape[1] - 1)
             for k in (0, self.shape[2] - 1)],
            dtype=np.float64,
        )
        world = self.index_to_world(corners)
        return world.min(axis=0), world.max(axis=0)

    def same_as(self, other: ImageGrid, tol_mm: float = 1e-3) -> bool:
        """Whether two grids describe the same voxels (shape, spacing, origin, direction)."""
        return (
            self.shape == other.shape
            and bool(np.allclose(self.spacing, other.spacing, atol=tol_mm))
            and bool(np.allclose(self.origin, other.origin, atol=tol_mm))
            and bool(np.allclose(self.direction, other.direction, atol=1e-5))
        )


@dataclass(frozen=True)
class CTVolume:
    """A CT image in Hounsfield units.

    Attributes:
        grid: Geometry of the image.
        hu: float32 array of shape ``grid.shape``, indexed [i, j, k], in HU.
    """

    grid: ImageGrid
    hu: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu, dtype=np.float32)
        if hu.shape != self.grid.shape:
            raise ValueError(f"HU array shape {hu.shape} differs from grid {self.grid.shape}")
        object.__setattr__(self, "hu", _readonly(hu))


@dataclass(frozen=True)
class LabelMap:
    """An integer label image on a grid (0 = background).

    Attributes:
        grid: Geometry of the image.
        labels: int32 array of shape ``grid.shape``, indexed [i, j, k].
        names: Optional mapping label value -> structure name (e.g. 76 -> "femur_right").
    """

    grid: ImageGrid
    labels: npt.NDArray[np.int32]
    names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels, dtype=np.int32)
        if labels.shape != self.grid.shape:
            raise ValueError(
                f"label array shape {labels.shape} differs from grid {self.grid.shape}"
            )
        object.__setattr__(self, "labels", _readonly(labels))


@dataclass(frozen=True)
class SurfaceMesh:
    """A closed triangulated surface.

    Attributes:
        points: (n, 3) float64 vertex coordinates in mm.
        triangles: (m, 3) int64 vertex indices, counter-clockwise seen from outside.
    """

    points: FloatArray
    triangles: IntArray

    def __post_init__(self) -> None:
        points = np.asarray(self.points, dtype=np.float64)
        triangles = np.asarray(self.triangles, dtype=np.int64)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"surface points must be (n, 3), got {points.shape}")
        if triangles.ndim != 2 or triangles.shape[1] != 3:
            raise ValueError(f"surface triangles must be (m, 3), got {triangles.shape}")
        object.__setattr__(self, "points", _readonly(points))
        object.__setattr__(self, "triangles", _readonly(triangles))


@dataclass(frozen=True)
class TetMesh:
    """A tetrahedral volume mesh.

    Attributes:
        points: (n, 3) float64 node coordinates in mm.
        cells: (m, 4) int64 linear or (m, 10) int64 quadratic tetrahedra, node order as in
            VTK/gmsh (for 10 nodes: 4 vertices, then edges 01, 12, 02, 03, 13, 23).
        cell_tags: (m,) int32 region tag per cell (1 = bone, 2 = lesion, ...).
    """

    points: FloatArray
    cells: IntArray
    cell_tags: npt.NDArray[np.int32]

    def __post_init__(self) -> None:
        points = np.asarray(self.points, dtype=np.float64)
        cells = np.asarray(self.cells, dtype=np.int64)
        tags = np.asarray(self.cell_tags, dtype=np.int32)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"mesh points must be (n, 3), got {points.shape}")
        if cells.ndim != 2 or cells.shape[1] not in (4, 10):
            raise ValueError(f"tetrahedra must be (m, 4) or (m, 10), got {cells.shape}")
        if tags.shape != (cells.shape[0],):
            raise ValueError(f"cell_tags must be ({cells.shape[0]},), got {tags.shape}")
        if cells.size and (cells.min() < 0 or cells.max() >= points.shape[0]):
            raise ValueError("tetrahedra reference nodes that do not exist")
        object.__setattr__(self, "points", _readonly(points))
        object.__setattr__(self, "cells", _readonly(cells))
        object.__setattr__(self, "cell_tags", _readonly(tags))

    @property
    def num_cells(self) -> int:
        """Number of tetrahedra."""
        return int(self.cells.shape[0])

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return int(self.points.shape[0])

    @property
    def order(self) -> int:
        """Polynomial order of the geometry: 1 (4-node) or 2 (10-node)."""
        return 1 if self.cells.shape[1] == 4 else 2

    def vertex_cells(self) -> IntArray:
        """(m, 4) int64: the four corner nodes of each cell (whatever the order)."""
        return np.asarray(self.cells[:, :4])

    def cell_volumes(self) -> FloatArray:
        """(m,) float64 signed volumes of the straight-sided tetrahedra in mm^3."""
        p = self.points[self.vertex_cells()]
        d1, d2, d3 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]
        return np.asarray(np.einsum("ij,ij->i", d1, np.cross(d2, d3)) / 6.0)

    def centroids(self) -> FloatArray:
        """(m, 3) float64 cell centroids (mean of the 4 vertices) in mm."""
        return np.asarray(self.points[self.vertex_cells()].mean(axis=1))
