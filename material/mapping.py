"""CT -> mesh mapping: HU and Young's modulus per tetrahedron (Bonemat-style integration).

For every tetrahedron the CT is sampled by trilinear interpolation between voxel centres at
the points of a barycentric quadrature rule, and the samples are averaged with the rule's
weights (Bonemat's "HU integration"). The element is the straight-sided tetrahedron of its
four corner nodes, also for 10-node meshes. Within half a voxel of the image edge (the area a
boundary voxel covers) the CT is extended by its edge value; cells reaching further out are an
error.

Two implementations of the sampler exist and are tested against each other: a numba kernel
(:func:`sample_cells_hu`, the one the pipeline uses) and a vectorised numpy reference
(:func:`sample_cells_hu_reference`).

Mapping modes of :func:`map_material` (Bonemat's three, DESIGN.md section 4): ``"hu_average"``
(mean HU per element, then converted), ``"modulus_average"`` (E evaluated at the quadrature
points, then averaged) and ``"centroid"`` (the HU of the voxel that contains the element's
centroid, no interpolation). :func:`map_material_qp` gives E at quadrature points of the
solver's choice instead of one value per element. Cells with chosen tags (lytic lesions) can
be forced to the model's E floor, and every field reports which fraction of its cells lies
outside the law's valid density range.

The voxel <-> world transform comes from :class:`~meshing.types.ImageGrid` alone: the kernel
receives the affine extracted from :meth:`ImageGrid.world_to_index` (see
:func:`world_to_index_affine`) and the reference calls that method directly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from numba import njit
from scipy.special import roots_jacobi, roots_legendre

from core.types import FloatArray
from material.calibration import check_ct_is_rescaled
from material.errors import MappingError
from material.laws import MaterialModel, extrapolation_report
from material.types import MaterialField
from meshing.types import CTVolume, ImageGrid, TetMesh

__all__ = [
    "MAX_QUADRATURE_DEGREE",
    "MappingMode",
    "map_material",
    "map_material_qp",
    "quadrature_rule",
    "sample_cells_centroid_hu",
    "sample_cells_hu",
    "sample_cells_hu_reference",
    "sample_cells_modulus",
    "world_to_index_affine",
]


#: How a cell gets its modulus: from its mean HU ("hu_average"), as the mean of the moduli
#: at its quadrature points ("modulus_average", Bonemat's "E integration"), or from the HU of
#: the voxel containing its centroid ("centroid", Bonemat's voxel lookup).
MappingMode = Literal["hu_average", "modulus_average", "centroid"]

_MODES: tuple[str, ...] = ("hu_average", "modulus_average", "centroid")

#: Highest polynomial degree for which :func:`quadrature_rule` builds a rule.
MAX_QUADRATURE_DEGREE = 9

#: Tolerance, in voxels, beyond the half-voxel band around the image for "inside the CT".
#: A bone cut by the image border (a distal cut at the last slice) is closed by a smoothed
#: iso-surface that bulges up to a fraction of a voxel past the last voxel's face; those
#: points take the edge value, as the rest of the half-voxel band does.
_INSIDE_TOL_VOXELS = 0.5


# --------------------------------------------------------------------------------------------
# Quadrature on the tetrahedron.
# --------------------------------------------------------------------------------------------


@functools.cache
def _quadrature_rule(degree: int) -> tuple[FloatArray, FloatArray]:
    if degree == 1:
        bary = np.full((1, 4), 0.25)
        weights = np.ones(1)
    elif degree == 2:
        # The symmetric 4-point rule (exact for degree 2): a = (5 + 3 sqrt 5) / 20.
        a = (5.0 + 3.0 * math.sqrt(5.0)) / 20.0
        b = (5.0 - math.sqrt(5.0)) / 20.0
        bary = np.full((4, 4), b)
        np.fill_diagonal(bary, a)
        weights = np.full(4, 0.25)
    else:
        # Stroud's conical product rule: Gauss-Jacobi points on the unit cube collapsed onto
        # the tetrahedron, n points per direction, exact for degree 2n - 1, positive weights.
        n = (degree + 2) // 2
        tu, wu = roots_jacobi(n, 2.0, 0.0)  # weight (1 - u)^2 of the collapse Jacobian
        tv, wv = roots_jacobi(n, 1.0, 0.0)  # weight (1 - v)
        tw, ww = roots_legendre(n)
        u, v, w = ((t + 1.0) / 2.0 for t in (tu, tv, tw))
        uu, vv, ww3 = np.meshgrid(u, v, w, indexing="ij")
        x = uu
        y = (1.0 - uu) * vv
        z = (1.0 - uu) * (1.0 - vv) * ww3
        bary = np.stack([1.0 - x - y - z, x, y, z], axis=-1).reshape(-1, 4)
        weights = np.einsum("i,j,k->ijk", wu, wv, ww).reshape(-1)
        weights = weights / weights.sum()
    bary.flags.writeable = False
    weights.flags.writeable = False
    return bary, weights


def quadrature_rule(degree: int) -> tuple[FloatArray, FloatArray]:
    """A quadrature rule on the tetrahedron, in barycentric coordinates.

    Degree 1 is the centroid, degree 2 the symmetric 4-point rule, degree 3 and higher
    Stroud's conical product of Gauss-Jacobi rules (``ceil((degree + 1) / 2)^3`` points, all
    inside the element, all weights positive, so averages stay within the sampled range).

    Args:
        degree: Polynomial degree integrated exactly, 1 .. :data:`MAX_QUADRATURE_DEGREE`.

    Returns:
        ``(bary, weights)``: (q, 4) float64 barycentric coordinates (rows sum to 1) and (q,)
        float64 weights summing to 1, so ``values @ weights`` is the mean over the element.
        Both are read-only.

    Raises:
        MappingError: If ``degree`` is out of range.
    """
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or not (
        1 <= int(degree) <= MAX_QUADRATURE_DEGREE
    ):
        raise MappingError(
            f"quadrature degree {degree!r} is not an integer in 1..{MAX_QUADRATURE_DEGREE}",
            hint="use 1 (centroid), 2 (4 points, the default) or 3+ for elements much larger "
            "than a voxel",
        )
    return _quadrature_rule(int(degree))


# --------------------------------------------------------------------------------------------
# Geometry helpers.
# --------------------------------------------------------------------------------------------


def world_to_index_affine(grid: ImageGrid) -> tuple[FloatArray, FloatArray]:
    """The affine of :meth:`ImageGrid.world_to_index` as plain arrays for kernels.

    ``ijk = matrix @ (xyz - origin)``; extracted by calling ``grid.world_to_index`` on the
    origin plus the three world unit vectors, so the grid stays the only owner of the
    transform.

    Args:
        grid: The CT grid.

    Returns:
        ``(matrix, origin)``: (3, 3) float64 world -> continuous-index matrix (1/mm) and the
        (3,) float64 world origin in mm.
    """
    origin = np.array(grid.origin, dtype=np.float64)
    probes = grid.world_to_index(origin + np.eye(3)) - grid.world_to_index(origin)
    return np.ascontiguousarray(probes.T), origin


def _image_extent(grid: ImageGrid) -> tuple[FloatArray, FloatArray]:
    """World bounding box (mm) of the volume the voxels cover, half a voxel beyond centres."""
    lo = np.full(3, -0.5)
    hi = np.asarray(grid.shape, dtype=np.float64) - 0.5
    corners = np.array(
        [[i, j, k] for i in (lo[0], hi[0]) for j in (lo[1], hi[1]) for k in (lo[2], hi[2])]
    )
    world = grid.index_to_world(corners)
    return world.min(axis=0), world.max(axis=0)


def _fmt_box(lower: FloatArray, upper: FloatArray) -> str:
    return ", ".join(
        f"{axis} [{lo:.1f}, {hi:.1f}]" for axis, lo, hi in zip("xyz", lower, upper, strict=True)
    )


def _check_cells_inside(mesh: TetMesh, grid: ImageGrid) -> None:
    """Raise MappingError if any cell has a corner beyond the half-voxel band of the CT."""
    if mesh.num_cells == 0:
        return
    ijk = grid.world_to_index(mesh.points)
    upper = np.asarray(grid.shape, dtype=np.float64) - 0.5 + _INSIDE_TOL_VOXELS
    outside_node = np.any((ijk < -0.5 - _INSIDE_TOL_VOXELS) | (ijk > upper), axis=1)
    outside_cell = outside_node[mesh.vertex_cells()].any(axis=1)
    count = int(np.count_nonzero(outside_cell))
    if count:
        corners = mesh.points[np.unique(mesh.vertex_cells())]
        ct_lo, ct_hi = _image_extent(grid)
        raise MappingError(
            f"{count} of {mesh.num_cells} cells lie outside the CT: the mesh spans "
            f"{_fmt_box(corners.min(axis=0), corners.max(axis=0))} mm, the CT covers "
            f"{_fmt_box(ct_lo, ct_hi)} mm",
            hint="check the mesh and CT share a coordinate system (world LPS mm: a mesh in RAS "
            "has x and y negated, one in voxel indices needs ImageGrid.index_to_world) and "
            "that the CT was not cropped after meshing",
        )


def _kernel_inputs(
    mesh: TetMesh, ct: CTVolume, degree: int
) -> tuple[FloatArray, npt.NDArray[np.int64], FloatArray, FloatArray, FloatArray, FloatArray]:
    bary, weights = quadrature_rule(degree)
    points, tets, matrix, origin = _geometry_inputs(mesh, ct)
    return points, tets, matrix, origin, bary, weights


def _geometry_inputs(
    mesh: TetMesh, ct: CTVolume
) -> tuple[FloatArray, npt.NDArray[np.int64], FloatArray, FloatArray]:
    _check_cells_inside(mesh, ct.grid)
    matrix, origin = world_to_index_affine(ct.grid)
    # A private C-contiguous copy: always the same array type for numba (one compilation).
    tets = np.array(mesh.vertex_cells(), dtype=np.int64, order="C")
    return mesh.points, tets, matrix, origin


def _reference_to_bary(reference_points: npt.ArrayLike) -> FloatArray:
    """(q, 3) points of the reference tetrahedron -> (q, 4) barycentric coordinates.

    The reference tetrahedron has vertices (0,0,0), (1,0,0), (0,1,0), (0,0,1) (basix, DOLFINx
    and most FE codes), so the point (x, y, z) has barycentric (1 - x - y - z, x, y, z) with
    respect to corners 0, 1, 2, 3 of the cell.
    """
    ref = np.asarray(reference_points, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != 3 or ref.shape[0] == 0:
        raise MappingError(
            f"reference points must be a (q, 3) array, got shape {ref.shape}",
            hint="give the solver's quadrature points on the reference tetrahedron",
        )
    bary = np.column_stack([1.0 - ref.sum(axis=1), ref])
    if not np.all(np.isfinite(bary)) or np.any(bary < -1e-12):
        raise MappingError(
            "reference points lie outside the reference tetrahedron (0,0,0), (1,0,0), "
            "(0,1,0), (0,0,1)",
            hint="pass points with x, y, z >= 0 and x + y + z <= 1",
        )
    return np.ascontiguousarray(bary)


# --------------------------------------------------------------------------------------------
# numba kernels.
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _trilinear(hu: np.ndarray, x: float, y: float, z: float) -> float:  # pragma: no cover
    """Trilinear interpolation of ``hu`` at continuous index (x, y, z), clamped to the grid."""
    ni, nj, nk = hu.shape
    x = min(max(x, 0.0), ni - 1.0)
    y = min(max(y, 0.0), nj - 1.0)
    z = min(max(z, 0.0), nk - 1.0)
    i0 = min(int(x), max(ni - 2, 0))
    j0 = min(int(y), max(nj - 2, 0))
    k0 = min(int(z), max(nk - 2, 0))
    i1 = min(i0 + 1, ni - 1)
    j1 = min(j0 + 1, nj - 1)
    k1 = min(k0 + 1, nk - 1)
    fx = x - i0
    fy = y - j0
    fz = z - k0
    gx = 1.0 - fx
    gy = 1.0 - fy
    gz = 1.0 - fz
    c00 = gz * hu[i0, j0, k0] + fz * hu[i0, j0, k1]
    c01 = gz * hu[i0, j1, k0] + fz * hu[i0, j1, k1]
    c10 = gz * hu[i1, j0, k0] + fz * hu[i1, j0, k1]
    c11 = gz * hu[i1, j1, k0] + fz * hu[i1, j1, k1]
    return gx * (gy * c00 + fy * c01) + fx * (gy * c10 + fy * c11)


@njit(cache=True, nogil=True)
def _corner_indices(
    points: np.ndarray,
    tets: np.ndarray,
    cell: int,
    matrix: np.ndarray,
    origin: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover
    """Continuous voxel indices (4, 3) of the corners of ``cell``, written into ``out``."""
    for a in range(4):
        node = tets[cell, a]
        dx = points[node, 0] - origin[0]
        dy = points[node, 1] - origin[1]
        dz = points[node, 2] - origin[2]
        for r in range(3):
            out[a, r] = matrix[r, 0] * dx + matrix[r, 1] * dy + matrix[r, 2] * dz


@njit(cache=True, nogil=True, inline="always")
def _quadrature_hu(hu: np.ndarray, corners: np.ndarray, bary: np.ndarray,
                   q: int) -> float:  # pragma: no cover
    """Trilinear HU at quadrature point ``q`` of a cell with (4, 3) index-space ``corners``."""
    x = (bary[q, 0] * corners[0, 0] + bary[q, 1] * corners[1, 0]
         + bary[q, 2] * corners[2, 0] + bary[q, 3] * corners[3, 0])
    y = (bary[q, 0] * corners[0, 1] + bary[q, 1] * corners[1, 1]
         + bary[q, 2] * corners[2, 1] + bary[q, 3] * corners[3, 1])
    z = (bary[q, 0] * corners[0, 2] + bary[q, 1] * corners[1, 2]
         + bary[q, 2] * corners[2, 2] + bary[q, 3] * corners[3, 2])
    return _trilinear(hu, x, y, z)


@njit(cache=True, nogil=True)
def _cell_mean_hu_kernel(
    points: np.ndarray,
    tets: np.ndarray,
    hu: np.ndarray,
    matrix: np.ndarray,
    origin: np.ndarray,
    bary: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:  # pragma: no cover
    """Weighted mean of trilinear HU at the quadrature points of every cell: (m,) float64.

    Args:
        points: (n, 3) float64 node coordinates, mm.
        tets: (m, 4) int64 corner nodes.
        hu: (ni, nj, nk) CT values (float32), HU.
        matrix: (3, 3) float64 world -> index matrix, 1/mm.
        origin: (3,) float64 world position of voxel (0, 0, 0), mm.
        bary: (q, 4) float64 barycentric quadrature points.
        weights: (q,) float64 weights summing to 1.
    """
    m = tets.shape[0]
    nq = bary.shape[0]
    out = np.empty(m, dtype=np.float64)
    corners = np.empty((4, 3), dtype=np.float64)
    for cell in range(m):
        _corner_indices(points, tets, cell, matrix, origin, corners)
        acc = 0.0
        for q in range(nq):
            acc += weights[q] * _quadrature_hu(hu, corners, bary, q)
        out[cell] = acc
    return out


@njit(cache=True, nogil=True)
def _point_hu_kernel(
    points: np.ndarray,
    tets: np.ndarray,
    hu: np.ndarray,
    matrix: np.ndarray,
    origin: np.ndarray,
    bary: np.ndarray,
) -> np.ndarray:  # pragma: no cover
    """Trilinear HU at every quadrature point of every cell: (m, q) float64.

    Arguments as in :func:`_cell_mean_hu_kernel`.
    """
    m = tets.shape[0]
    nq = bary.shape[0]
    out = np.empty((m, nq), dtype=np.float64)
    corners = np.empty((4, 3), dtype=np.float64)
    for cell in range(m):
        _corner_indices(points, tets, cell, matrix, origin, corners)
        for q in range(nq):
            out[cell, q] = _quadrature_hu(hu, corners, bary, q)
    return out


@njit(cache=True, nogil=True)
def _centroid_hu_kernel(
    points: np.ndarray,
    tets: np.ndarray,
    hu: np.ndarray,
    matrix: np.ndarray,
    origin: np.ndarray,
) -> np.ndarray:  # pragma: no cover
    """HU of the voxel nearest to each cell's centroid (clamped to the grid): (m,) float64."""
    m = tets.shape[0]
    ni, nj, nk = hu.shape
    out = np.empty(m, dtype=np.float64)
    corners = np.empty((4, 3), dtype=np.float64)
    for cell in range(m):
        _corner_indices(points, tets, cell, matrix, origin, corners)
        x = 0.25 * (corners[0, 0] + corners[1, 0] + corners[2, 0] + corners[3, 0])
        y = 0.25 * (corners[0, 1] + corners[1, 1] + corners[2, 1] + corners[3, 1])
        z = 0.25 * (corners[0, 2] + corners[1, 2] + corners[2, 2] + corners[3, 2])
        i = min(max(int(np.floor(x + 0.5)), 0), ni - 1)
        j = min(max(int(np.floor(y + 0.5)), 0), nj - 1)
        k = min(max(int(np.floor(z + 0.5)), 0), nk - 1)
        out[cell] = hu[i, j, k]
    return out


# --------------------------------------------------------------------------------------------
# numpy reference.
# --------------------------------------------------------------------------------------------


def _trilinear_reference(hu: np.ndarray, ijk: FloatArray) -> FloatArray:
    """Vectorised trilinear interpolation at (p, 3) continuous indices, clamped: (p,)."""
    shape = np.asarray(hu.shape)
    c = np.clip(ijk, 0.0, shape - 1.0)
    lower = np.minimum(np.floor(c).astype(np.int64), np.maximum(shape - 2, 0))
    upper = np.minimum(lower + 1, shape - 1)
    f = c - lower
    g = 1.0 - f
    i0, j0, k0 = lower.T
    i1, j1, k1 = upper.T
    fx, fy, fz = f.T
    gx, gy, gz = g.T
    c00 = gz * hu[i0, j0, k0] + fz * hu[i0, j0, k1]
    c01 = gz * hu[i0, j1, k0] + fz * hu[i0, j1, k1]
    c10 = gz * hu[i1, j0, k0] + fz * hu[i1, j0, k1]
    c11 = gz * hu[i1, j1, k0] + fz * hu[i1, j1, k1]
    return np.asarray(gx * (gy * c00 + fy * c01) + fx * (gy * c10 + fy * c11))


def _point_hu_reference(mesh: TetMesh, ct: CTVolume, bary: FloatArray) -> FloatArray:
    """(m, q) trilinear HU at the quadrature points, numpy only."""
    corners = ct.grid.world_to_index(mesh.points)[mesh.vertex_cells()]  # (m, 4, 3)
    ijk = np.einsum("qa,mad->mqd", bary, corners)  # (m, q, 3)
    values = _trilinear_reference(ct.hu, ijk.reshape(-1, 3))
    return values.reshape(mesh.num_cells, bary.shape[0])


def sample_cells_hu_reference(
    mesh: TetMesh, ct: CTVolume, *, quadrature_degree: int = 2
) -> FloatArray:
    """Numpy reference of :func:`sample_cells_hu` (vectorised over all cells and points).

    Same arguments, result and errors; uses ``ct.grid.world_to_index`` directly. Memory grows
    as ~100 bytes per cell and quadrature point, so use it for testing, not production.
    """
    bary, weights = quadrature_rule(quadrature_degree)
    _check_cells_inside(mesh, ct.grid)
    if mesh.num_cells == 0:
        return np.zeros(0)
    return np.asarray(_point_hu_reference(mesh, ct, bary) @ weights)


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------


def sample_cells_hu(mesh: TetMesh, ct: CTVolume, *, quadrature_degree: int = 2) -> FloatArray:
    """Mean HU over every tetrahedron (Bonemat "HU integration").

    The CT is interpolated trilinearly between voxel centres at the points of
    :func:`quadrature_rule` (``quadrature_degree``) of the straight-sided tetrahedron of the
    cell's 4 corner nodes, and the samples are averaged with the rule's weights. Runs a
    single-threaded numba kernel.

    Args:
        mesh: Tetrahedral mesh in world mm (4- or 10-node cells).
        ct: CT in HU, on a grid in the same world frame.
        quadrature_degree: Degree of the rule, 1..:data:`MAX_QUADRATURE_DEGREE`.

    Returns:
        (m,) float64 mean HU per cell.

    Raises:
        MappingError: If a cell reaches beyond the CT, or the degree is out of range.
    """
    points, tets, matrix, origin, bary, weights = _kernel_inputs(mesh, ct, quadrature_degree)
    return np.asarray(_cell_mean_hu_kernel(points, tets, ct.hu, matrix, origin, bary, weights))


def _sample_points_hu(mesh: TetMesh, ct: CTVolume, quadrature_degree: int) -> FloatArray:
    """(m, q) HU at the quadrature points (numba), after the same checks."""
    points, tets, matrix, origin, bary, _ = _kernel_inputs(mesh, ct, quadrature_degree)
    return np.asarray(_point_hu_kernel(points, tets, ct.hu, matrix, origin, bary))


def sample_cells_modulus(
    mesh: TetMesh, ct: CTVolume, model: MaterialModel, *, quadrature_degree: int = 2
) -> FloatArray:
    """Mean Young's modulus over every tetrahedron (Bonemat "E integration").

    The model (calibration, density chain, law, floor) is applied at every quadrature point,
    then the moduli are averaged with the rule's weights. For a nonlinear law this differs
    from converting the mean HU (by Jensen's inequality it is larger for convex laws).

    Args:
        mesh: Tetrahedral mesh in world mm.
        ct: CT in HU.
        model: HU -> modulus model.
        quadrature_degree: Degree of the rule.

    Returns:
        (m,) float64 E in MPa.

    Raises:
        MappingError: As :func:`sample_cells_hu`.
    """
    _, weights = quadrature_rule(quadrature_degree)
    hu_points = _sample_points_hu(mesh, ct, quadrature_degree)
    return np.asarray(model.modulus(hu_points) @ weights)


def sample_cells_centroid_hu(mesh: TetMesh, ct: CTVolume) -> FloatArray:
    """HU of the voxel containing each cell's centroid (Bonemat's voxel lookup).

    The centroid (mean of the 4 corners) is mapped to continuous voxel indices and rounded to
    the nearest voxel centre, i.e. the voxel whose box contains it (ties, exactly on a face,
    go to the higher index); within half a voxel outside the image the edge voxel is used.
    Runs a single-threaded numba kernel.

    Args:
        mesh: Tetrahedral mesh in world mm.
        ct: CT in HU.

    Returns:
        (m,) float64 HU.

    Raises:
        MappingError: If a cell reaches beyond the CT.
    """
    points, tets, matrix, origin = _geometry_inputs(mesh, ct)
    return np.asarray(_centroid_hu_kernel(points, tets, ct.hu, matrix, origin))


def _floor_mask(mesh: TetMesh, floor_tags: Sequence[int]) -> npt.NDArray[np.bool_]:
    tags = np.asarray(list(floor_tags), dtype=np.int64)
    if tags.size == 0:
        return np.zeros(mesh.num_cells, dtype=bool)
    return np.asarray(np.isin(mesh.cell_tags, tags))


def map_material_qp(
    mesh: TetMesh,
    ct: CTVolume,
    model: MaterialModel,
    *,
    quadrature_degree: int = 2,
    reference_points: npt.ArrayLike | None = None,
    floor_tags: Sequence[int] = (),
    check_rescaled: bool = True,
) -> FloatArray:
    """Young's modulus at quadrature points of every cell, for solvers that integrate E.

    The CT is interpolated trilinearly at each point and converted with the model (floor
    included); cells whose tag is in ``floor_tags`` get the floor at every point.

    Args:
        mesh: Tetrahedral mesh in world mm (the straight-sided tetrahedron of the 4 corners is
            the element geometry, also for 10-node cells).
        ct: CT in HU.
        model: HU -> modulus model.
        quadrature_degree: Use :func:`quadrature_rule` of this degree (ignored when
            ``reference_points`` is given).
        reference_points: (q, 3) points on the reference tetrahedron (vertices (0,0,0),
            (1,0,0), (0,1,0), (0,0,1), corner order of the cell), e.g. the solver's own
            quadrature points.
        floor_tags: Cell tags forced to the model's E floor (e.g. lytic lesion tag 2).
        check_rescaled: Refuse a CT that looks like raw storage.

    Returns:
        (m, q) float64 E in MPa; column j is point j (of the rule, or of
        ``reference_points``).

    Raises:
        CalibrationError: If the CT looks like raw storage (with ``check_rescaled``).
        MappingError: Cells outside the CT, a bad degree or bad reference points.
    """
    if reference_points is None:
        bary, _ = quadrature_rule(quadrature_degree)
    else:
        bary = _reference_to_bary(reference_points)
    if check_rescaled:
        check_ct_is_rescaled(ct.hu)
    points, tets, matrix, origin = _geometry_inputs(mesh, ct)
    hu_points = np.asarray(_point_hu_kernel(points, tets, ct.hu, matrix, origin, bary))
    e_mpa = model.modulus(hu_points)
    e_mpa[_floor_mask(mesh, floor_tags)] = model.E_floor_MPa
    return e_mpa


def map_material(
    mesh: TetMesh,
    ct: CTVolume,
    model: MaterialModel,
    *,
    mode: MappingMode = "hu_average",
    quadrature_degree: int = 2,
    check_rescaled: bool = True,
    floor_tags: Sequence[int] = (),
) -> MaterialField:
    """Map a CT onto a mesh: densities and Young's modulus per cell.

    Args:
        mesh: Tetrahedral mesh in world mm.
        ct: CT in HU, same world frame.
        model: Calibration, density chain, modulus law, Poisson ratio and E floor.
        mode: ``"hu_average"``: E from each cell's mean HU; ``"modulus_average"``: E averaged
            over each cell's quadrature points (densities from the mean HU: the chain is
            linear up to the clamp at zero); ``"centroid"``: everything from the HU of the
            voxel containing the centroid (no quadrature).
        quadrature_degree: Degree of the quadrature rule, 1..:data:`MAX_QUADRATURE_DEGREE`
            (checked but unused in ``"centroid"`` mode).
        check_rescaled: Run :func:`~material.calibration.check_ct_is_rescaled` on the CT.
        floor_tags: Cell tags whose E is forced to the model's floor whatever their HU (lytic
            lesions, whose HU may be raised by blastic rims or partial volume). Their
            densities stay as mapped.

    Returns:
        The per-cell :class:`~material.types.MaterialField`. Its description holds the mode,
        quadrature, the model with sources, the cells at the floor, and
        ``"law_extrapolation"``: how many cells (not forced to the floor) have a density of
        the law's kind outside the law's valid range.

    Raises:
        CalibrationError: If the CT looks like raw storage (with ``check_rescaled``).
        MappingError: If a cell reaches beyond the CT, or mode/degree are invalid.
    """
    if mode not in _MODES:
        raise MappingError(
            f"unknown material mapping mode {mode!r}",
            hint="use 'hu_average' (Bonemat HU integration), 'modulus_average' (Bonemat E "
            "integration) or 'centroid' (voxel lookup)",
        )
    bary, weights = quadrature_rule(quadrature_degree)
    if check_rescaled:
        check_ct_is_rescaled(ct.hu)
    if mode == "hu_average":
        hu = sample_cells_hu(mesh, ct, quadrature_degree=quadrature_degree)
        rho_qct, rho_ash, rho_app, e_mpa = model.evaluate(hu)
        mode_text = "mean HU per element (trilinear samples at quadrature points), converted"
        interpolation = ("trilinear between voxel centres; edge value within half a voxel "
                         "of the image boundary")
    elif mode == "modulus_average":
        hu_points = _sample_points_hu(mesh, ct, quadrature_degree)
        hu = np.asarray(hu_points @ weights)
        rho_qct, rho_ash, rho_app = model.densities(hu)
        e_mpa = np.asarray(model.modulus(hu_points) @ weights)
        mode_text = "E evaluated at each quadrature point (trilinear HU), averaged per element"
        interpolation = ("trilinear between voxel centres; edge value within half a voxel "
                         "of the image boundary")
    else:
        hu = sample_cells_centroid_hu(mesh, ct)
        rho_qct, rho_ash, rho_app, e_mpa = model.evaluate(hu)
        mode_text = "HU of the voxel containing the element centroid, converted"
        interpolation = "none: nearest voxel to the centroid"
    forced = _floor_mask(mesh, floor_tags)
    e_mpa[forced] = model.E_floor_MPa
    law_density = {"qct": rho_qct, "ash": rho_ash, "app": rho_app}[model.law.density_kind]
    extrapolation = extrapolation_report(model.law, law_density[~forced])
    extrapolation["cells"] = ("per-element density of the law's kind (mean HU converted), "
                              "cells forced to the floor by tag excluded")
    description = {
        "mode": mode,
        "mode_text": mode_text,
        "quadrature_degree": None if mode == "centroid" else int(quadrature_degree),
        "quadrature_points": 1 if mode == "centroid" else int(bary.shape[0]),
        "interpolation": interpolation,
        "element_geometry": "straight-sided tetrahedron of the 4 corner nodes",
        **model.to_dict(),
        "cells_at_E_floor": int(np.count_nonzero(e_mpa <= model.E_floor_MPa)),
        "floor_tags": [int(t) for t in floor_tags],
        "cells_forced_to_floor": int(np.count_nonzero(forced)),
        "law_extrapolation": extrapolation,
    }
    return MaterialField(
        E_MPa=e_mpa,
        rho_qct_g_cm3=rho_qct,
        rho_ash_g_cm3=rho_ash,
        rho_app_g_cm3=rho_app,
        hu=hu,
        poisson_ratio=model.poisson_ratio,
        description=description,
    )
