"""Closed surface -> tetrahedral volume mesh with gmsh; lesion and cortex tagging; .msh output.

:func:`mesh_from_mask` (label mask) and :func:`mesh_from_surface` (closed surface) remesh the
boundary at the element size(s) and fill it (:func:`tetrahedralize`), optionally with finer
elements at the surface growing inwards and curvature-based surface sizes. :func:`tag_cells`
and :func:`tag_cortex` set region tags (:data:`TAG_NAMES`); :func:`write_msh` and
:func:`read_msh` are the .msh side of :mod:`meshing.meshio_io`.

This module and :mod:`meshing.msh` (which reads .msh files, in a child process for user
files) are the only ones of osteofe that import gmsh; no gmsh object leaves their functions.
gmsh keeps global state, so every call runs under one lock (:data:`meshing.msh.GMSH_LOCK`),
initialises gmsh without signal handlers (it may run in a worker thread) and always
finalises it.

Node order of 10-node tetrahedra follows :class:`meshing.types.TetMesh` (VTK): 4 vertices,
then the mid-nodes of edges 01, 12, 02, 03, 13, 23. gmsh numbers the last two edges 32, 31,
so its nodes 8 and 9 are swapped on the way out.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.atomic import atomic_path
from meshing.errors import InputError, MeshingError
from meshing.msh import GMSH_LOCK, GMSH_TET4, GMSH_TET10, GMSH_TO_VTK_TET10, read_msh
from meshing.quality import jacobian_determinants
from meshing.surface import (
    MAX_SECOND_FRACTION,
    clean_mask,
    curvature_sizes,
    extract_surface,
    remesh_sized,
    remesh_uniform,
    shell_labels,
    surface_check,
)
from meshing.types import CTVolume, ImageGrid, LabelMap, SurfaceMesh, TetMesh

__all__ = [
    "BONE_TAG",
    "CORTEX_TAG",
    "LESION_TAG",
    "TAG_NAMES",
    "mesh_from_mask",
    "mesh_from_surface",
    "read_msh",
    "tag_cells",
    "tag_cortex",
    "tetrahedralize",
    "write_msh",
]

#: Cell tags (region ids) of osteofe meshes; also the physical group ids of .msh output.
BONE_TAG, LESION_TAG, CORTEX_TAG = 1, 2, 3
#: Names of the tags in mesh files (physical group names, Abaqus ELSETs); a tag missing here
#: is written as ``tag<N>``. Tag 1 is all bone, or the trabecular bone once a cortex is tagged.
TAG_NAMES: dict[int, str] = {BONE_TAG: "bone", LESION_TAG: "lesion", CORTEX_TAG: "cortex"}

_LOG = logging.getLogger(__name__)
_GMSH_LOCK = GMSH_LOCK

#: gmsh element type ids: 4-node and 10-node tetrahedron, 3-node triangle.
_GMSH_TET4, _GMSH_TET10, _GMSH_TRI3 = GMSH_TET4, GMSH_TET10, 2
#: gmsh 3-D algorithm ids.
_ALGO_DELAUNAY, _ALGO_HXT = 1, 10
#: Largest patch (input triangles) gmsh reparametrises, tried in turn. Small patches keep
#: the parametrisation of long, curved bone surfaces undistorted (a CT-derived femur STL gave
#: 0.6 mm triangles at a 6 mm target with gmsh's default 250000); too small a value can make
#: createGeometry fail ("Wrong topology of boundary mesh"), hence the fallback.
_REPARAM_MAX_TRIANGLES = (10_000, 250_000)
#: Column permutation gmsh tet10 -> VTK tet10 (swap the mid-nodes of edges 13 and 23).
_GMSH_TO_VTK_TET10 = GMSH_TO_VTK_TET10
#: Columns exchanged to flip a tetrahedron's orientation (swap vertices 1 and 2).
_FLIP_TET4 = np.array([0, 2, 1, 3])
_FLIP_TET10 = np.array([0, 2, 1, 3, 6, 5, 4, 7, 9, 8])


def tetrahedralize(
    surface: SurfaceMesh,
    *,
    size_mm: float,
    order: int = 1,
    size_min_mm: float | None = None,
    optimize: bool = True,
    optimize_netgen: bool = True,
    curved: bool = False,
    feature_angle_deg: float = 40.0,
    num_threads: int = 1,
    remesh_boundary: bool = True,
    surface_size_mm: float | None = None,
    transition_mm: float | None = None,
) -> TetMesh:
    """Fill a closed surface with tetrahedra (gmsh: classify, reparametrise, HXT).

    The triangulation is added as a discrete surface, split into smooth patches
    (``classifySurfaces``, sharp edges above ``feature_angle_deg`` kept) and reparametrised,
    so gmsh remeshes the boundary at ``size_mm`` before filling the volume with HXT
    (Delaunay if HXT fails). If the classification fails, it is retried with gmsh's default
    patch size, and then the volume bounded by the given triangles is meshed as-is (logged).
    Nodes are renumbered 0-based without orphans and every tetrahedron is oriented positively.

    Args:
        surface: Closed, outward-oriented surface in mm (see :func:`surface_check`).
        size_mm: Target (maximum) element edge length in mm.
        order: 1 for 4-node, 2 for 10-node tetrahedra.
        size_min_mm: Minimum element size in mm (default ``size_mm / 4``).
        optimize: Run gmsh's tetrahedron optimiser after meshing.
        optimize_netgen: Also run the Netgen optimiser (with ``optimize``). It removes the
            near-flat boundary slivers gmsh's own optimiser leaves (a femur at 3 mm: smallest
            dihedral angle 0.1-0.5 deg -> 16 deg) at roughly twice the meshing time.
        curved: For ``order=2``, put boundary mid-nodes on the surface (curved faces);
            cells that gmsh's curving inverts are straightened again. The default keeps every
            edge straight, so no quadratic element can invert. Only with
            ``remesh_boundary`` (gmsh needs the surface parametrisation; for a given
            boundary :func:`mesh_from_surface` curves onto the input surface itself).
        feature_angle_deg: Dihedral angle between triangles above which an edge is kept as
            a sharp feature when classifying the surface.
        num_threads: Threads gmsh may use (HXT is parallel).
        remesh_boundary: False keeps the given triangles as the mesh boundary (for a surface
            already triangulated at the element size, e.g. by
            :func:`meshing.surface.remesh_uniform`): no classification, and no second
            chordal error.
        surface_size_mm: Finer elements at the surface (cortex) than inside. With
            ``remesh_boundary`` gmsh first remeshes the surface at this size (then
            ``curved`` moves boundary mid-nodes onto the input surface by closest point);
            with a given boundary its triangles set the surface sizes and this only
            switches grading on. Either way the size then grows from the local boundary
            triangle size to ``size_mm`` over ``transition_mm`` of depth (gmsh's
            ``Extend`` size field, linear in the distance to the boundary).
        transition_mm: Depth over which element sizes grow from the boundary size to
            ``size_mm`` (default ``2 * size_mm`` when grading is on). Giving it switches
            grading on as well. Without grading (both None), sizes are interpolated from the
            boundary inwards and capped at ``size_mm``, so a fine boundary gives a fine
            interior.

    Returns:
        The tetrahedral mesh, every ``cell_tags`` equal to 1 (bone).

    Raises:
        InputError: Bad sizes or order, or a surface that is not closed.
        MeshingError: gmsh produced no tetrahedra with either algorithm.
    """
    if not (np.isfinite(size_mm) and size_mm > 0):
        raise InputError(f"mesh size must be positive, got {size_mm} mm",
                         hint="pass size_mm > 0, e.g. 2-3 mm for a femur")
    if order not in (1, 2):
        raise InputError(f"tetrahedron order must be 1 or 2, got {order}",
                         hint="use order=1 (4-node) or order=2 (10-node)")
    size_min = size_mm / 4.0 if size_min_mm is None else float(size_min_mm)
    if not 0 < size_min <= size_mm:
        raise InputError(f"minimum mesh size {size_min} mm is not in (0, {size_mm}] mm",
                         hint="pass 0 < size_min_mm <= size_mm")
    grading = _grading(size_mm, size_min, surface_size_mm, transition_mm)
    problem = surface_check(surface)
    if problem is not None:
        raise InputError(f"surface to tetrahedralize is not closed: {problem}",
                         hint="repair the surface (close holes, fix orientation) or rebuild "
                              "it from the mask with extract_surface")
    num_shells, _ = shell_labels(surface)
    if num_shells != 1:
        raise InputError(f"surface to tetrahedralize has {num_shells} separate shells",
                         hint="keep one closed shell, e.g. meshing.surface.largest_shell(...)")

    import gmsh

    start = time.perf_counter()
    given = surface
    if grading is not None and remesh_boundary:
        # Two stages: gmsh re-creates the mesh of the whole model when a size option
        # changes between generate(2) and generate(3), so the boundary is remeshed at the
        # surface size first and then filled as a given boundary with the graded field.
        given = _remesh_surface(gmsh, surface, size=grading.surface_mm, size_min=size_min,
                                feature_angle_deg=feature_angle_deg, num_threads=num_threads)
        remesh_boundary = False
    with _GMSH_LOCK:
        gmsh.initialize(readConfigFiles=False, interruptible=False)
        try:
            _set_options(gmsh, size_mm=size_mm, size_min=size_min, num_threads=num_threads,
                         curved=curved and remesh_boundary)
            if remesh_boundary:
                _mesh_volume(gmsh, surface, feature_angle_deg)
            else:
                gmsh.model.add("osteofe-given-boundary")
                _build_raw(gmsh, given)
                _generate(gmsh, grading)
            if optimize:
                gmsh.model.mesh.optimize("")
                if optimize_netgen:
                    gmsh.model.mesh.optimize("Netgen")
            if order == 2:
                gmsh.model.mesh.setOrder(2)
            points, cells = _extract_tets(gmsh, order)
        finally:
            gmsh.finalize()

    cells = _orient_positive(points, cells)
    points, cells = _compact(points, cells)
    if order == 2 and curved:
        if given is not surface:
            points = _curve_boundary(TetMesh(points, cells, np.ones(cells.shape[0], np.int32)),
                                     surface).points
        else:
            points = _straighten_inverted(points, cells)
    _LOG.info("tetrahedralize: %d tetrahedra (order %d), %d nodes at %.3g mm in %.2f s",
              cells.shape[0], order, points.shape[0], size_mm, time.perf_counter() - start)
    return TetMesh(points, cells, np.ones(cells.shape[0], dtype=np.int32))


def _set_options(gmsh: Any, *, size_mm: float, size_min: float, num_threads: int,
                 curved: bool) -> None:
    """Quiet gmsh and set sizes, algorithm and threads."""
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.option.setNumber("General.Verbosity", 2)
    gmsh.option.setNumber("General.NumThreads", max(int(num_threads), 1))
    gmsh.option.setNumber("Mesh.MaxNumThreads3D", max(int(num_threads), 1))
    gmsh.option.setNumber("Mesh.MeshSizeMax", float(size_mm))
    gmsh.option.setNumber("Mesh.MeshSizeMin", float(size_min))
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
    gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 1)
    gmsh.option.setNumber("Mesh.Algorithm3D", _ALGO_HXT)
    gmsh.option.setNumber("Mesh.Optimize", 0)  # optimised explicitly after generation
    gmsh.option.setNumber("Mesh.SecondOrderLinear", 0 if curved else 1)


def _remesh_surface(gmsh: Any, surface: SurfaceMesh, *, size: float, size_min: float,
                    feature_angle_deg: float, num_threads: int) -> SurfaceMesh:
    """The surface remeshed by gmsh (classified, reparametrised patches) at ``size``.

    Falls back to the given triangles (logged) when no patch size gives a closed,
    consistently oriented surface.
    """
    with _GMSH_LOCK:
        gmsh.initialize(readConfigFiles=False, interruptible=False)
        try:
            _set_options(gmsh, size_mm=size, size_min=size_min, num_threads=num_threads,
                         curved=False)
            for max_triangles in _REPARAM_MAX_TRIANGLES:
                gmsh.model.add(f"osteofe-surface-{max_triangles}")
                gmsh.option.setNumber("Mesh.ReparamMaxTriangles", max_triangles)
                try:
                    _build_classified(gmsh, surface, feature_angle_deg)
                    gmsh.model.mesh.generate(2)
                    remeshed = _extract_triangles(gmsh)
                except Exception as exc:  # gmsh raises a bare Exception with its last error
                    _LOG.warning("tetrahedralize: remeshing the surface in patches of at most "
                                 "%d triangles failed (%s)", max_triangles, exc)
                    gmsh.model.remove()
                    continue
                problem = surface_check(remeshed)
                if problem is None:
                    return remeshed
                _LOG.warning("tetrahedralize: surface remeshed in patches of at most %d "
                             "triangles is not closed (%s)", max_triangles, problem)
                gmsh.model.remove()
        finally:
            gmsh.finalize()
    _LOG.warning("tetrahedralize: gmsh could not remesh the surface at %.3g mm; meshing the "
                 "given triangles as the boundary", size)
    return surface


def _extract_triangles(gmsh: Any) -> SurfaceMesh:
    """All 3-node triangles of the model as a compact surface."""
    node_tags, coords, _ = gmsh.model.mesh.getNodes(-1, -1, False, False)
    node_tags = np.asarray(node_tags, dtype=np.int64)
    _, tri_nodes = gmsh.model.mesh.getElementsByType(_GMSH_TRI3)
    lookup = np.full(int(node_tags.max()) + 1, -1, dtype=np.int64)
    lookup[node_tags] = np.arange(node_tags.shape[0], dtype=np.int64)
    triangles = lookup[np.asarray(tri_nodes, dtype=np.int64).reshape(-1, 3)]
    used, inverse = np.unique(triangles, return_inverse=True)
    points = np.asarray(coords, dtype=np.float64).reshape(-1, 3)[used]
    return SurfaceMesh(points, inverse.reshape(triangles.shape))


@dataclass(frozen=True)
class _Grading:
    """Sizes of a graded mesh: boundary size, interior size, transition depth (mm)."""

    surface_mm: float
    interior_mm: float
    transition_mm: float


def _grading(size_mm: float, size_min: float, surface_size_mm: float | None,
             transition_mm: float | None) -> _Grading | None:
    """Validate the grading arguments of :func:`tetrahedralize` (None: no grading)."""
    if surface_size_mm is None and transition_mm is None:
        return None
    surface = size_mm if surface_size_mm is None else float(surface_size_mm)
    if not size_min <= surface <= size_mm:
        raise InputError(f"surface mesh size {surface} mm is not in [{size_min}, {size_mm}] mm",
                         hint="pass size_min_mm <= surface_size_mm <= size_mm")
    depth = 2.0 * size_mm if transition_mm is None else float(transition_mm)
    if not (np.isfinite(depth) and depth > 0.0):
        raise InputError(f"transition depth must be positive, got {depth} mm",
                         hint="pass transition_mm > 0, e.g. 2 * size_mm")
    return _Grading(surface, float(size_mm), depth)


def _mesh_volume(gmsh: Any, surface: SurfaceMesh, feature_angle_deg: float) -> None:
    """Mesh the volume, trying strategies until one gives tetrahedra.

    First reparametrised patches of bounded size, then gmsh's default patch size, then the
    volume bounded by the given triangles as-is.
    """
    for max_triangles in _REPARAM_MAX_TRIANGLES:
        gmsh.model.add(f"osteofe-{max_triangles}")
        gmsh.option.setNumber("Mesh.ReparamMaxTriangles", max_triangles)
        gmsh.option.setNumber("Mesh.Algorithm3D", _ALGO_HXT)
        try:
            _build_classified(gmsh, surface, feature_angle_deg)
            _generate(gmsh)
            return
        except Exception as exc:  # gmsh raises a bare Exception with its last error
            _LOG.warning("tetrahedralize: classifying/remeshing the surface in patches of "
                         "at most %d triangles failed (%s)", max_triangles, exc)
            gmsh.model.remove()
    _LOG.warning("tetrahedralize: gmsh could not reparametrise the surface; meshing the "
                 "volume bounded by the given triangles as-is (boundary not remeshed)")
    gmsh.model.add("osteofe-raw")
    gmsh.option.setNumber("Mesh.Algorithm3D", _ALGO_HXT)
    _build_raw(gmsh, surface)
    _generate(gmsh)


def _add_discrete_surface(gmsh: Any, surface: SurfaceMesh) -> int:
    """Add the triangulation as discrete surface 1 (nodes 1..n, triangles 1..m)."""
    tag = int(gmsh.model.addDiscreteEntity(2))
    n = surface.points.shape[0]
    m = surface.triangles.shape[0]
    gmsh.model.mesh.addNodes(2, tag, np.arange(1, n + 1, dtype=np.uint64),
                             surface.points.ravel())
    gmsh.model.mesh.addElementsByType(tag, _GMSH_TRI3, np.arange(1, m + 1, dtype=np.uint64),
                                      (surface.triangles + 1).astype(np.uint64).ravel())
    return tag


def _build_classified(gmsh: Any, surface: SurfaceMesh, feature_angle_deg: float) -> None:
    """Discrete surface -> classified, reparametrised patches -> one volume."""
    _add_discrete_surface(gmsh, surface)
    gmsh.model.mesh.classifySurfaces(np.deg2rad(feature_angle_deg), True, True, np.pi)
    gmsh.model.mesh.createGeometry()
    patches = [tag for _, tag in gmsh.model.getEntities(2)]
    if not patches:
        raise MeshingError("classification produced no surface patch")
    loop = gmsh.model.geo.addSurfaceLoop(patches)
    gmsh.model.geo.addVolume([loop])
    gmsh.model.geo.synchronize()


def _build_raw(gmsh: Any, surface: SurfaceMesh) -> None:
    """Discrete surface kept as-is (no remeshing of the boundary) -> one volume."""
    tag = _add_discrete_surface(gmsh, surface)
    loop = gmsh.model.geo.addSurfaceLoop([tag])
    gmsh.model.geo.addVolume([loop])
    gmsh.model.geo.synchronize()


def _generate(gmsh: Any, grading: _Grading | None = None) -> None:
    """Mesh in 3-D with HXT, falling back to Delaunay."""
    try:
        _generate_once(gmsh, grading)
        if _count_tets(gmsh) > 0:
            return
        _LOG.warning("tetrahedralize: HXT produced no tetrahedra; retrying with Delaunay")
    except Exception as exc:
        _LOG.warning("tetrahedralize: HXT failed (%s); retrying with Delaunay", exc)
    gmsh.model.mesh.clear()
    gmsh.option.setNumber("Mesh.Algorithm3D", _ALGO_DELAUNAY)
    try:
        _generate_once(gmsh, grading)
    except Exception as exc:
        raise MeshingError(f"gmsh could not tetrahedralize the surface: {exc}",
                           hint="smooth the surface (larger smoothing_sigma_vox), remove "
                                "self-intersections, or try a different size_mm") from exc
    if _count_tets(gmsh) == 0:
        raise MeshingError("gmsh produced no tetrahedra from the surface",
                           hint="check that the surface is closed and not self-intersecting")


def _generate_once(gmsh: Any, grading: _Grading | None) -> None:
    """One meshing attempt; graded: the volume is filled under gmsh's ``Extend`` field.

    Grading is only used with a given (already meshed) boundary: the field grows the size
    from the local boundary triangle size to the interior size over the transition depth.
    """
    if grading is None:
        gmsh.model.mesh.generate(3)
        return
    extend = gmsh.model.mesh.field.add("Extend")
    try:
        gmsh.model.mesh.field.setNumbers(extend, "SurfacesList",
                                         [tag for _, tag in gmsh.model.getEntities(2)])
        gmsh.model.mesh.field.setNumber(extend, "DistMax", grading.transition_mm)
        gmsh.model.mesh.field.setNumber(extend, "SizeMax", grading.interior_mm)
        gmsh.model.mesh.field.setNumber(extend, "Power", 1.0)
        gmsh.model.mesh.field.setAsBackgroundMesh(extend)
        gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
        gmsh.model.mesh.generate(3)
    finally:
        gmsh.model.mesh.field.remove(extend)
        gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 1)


def _count_tets(gmsh: Any) -> int:
    """Number of linear tetrahedra in the current model."""
    tags, _ = gmsh.model.mesh.getElementsByType(_GMSH_TET4)
    return len(tags)


def _extract_tets(gmsh: Any, order: int) -> tuple[npt.NDArray[np.float64],
                                                  npt.NDArray[np.int64]]:
    """All nodes (by gmsh tag) and tetrahedra of the model, as 0-based dense arrays."""
    node_tags, coords, _ = gmsh.model.mesh.getNodes(-1, -1, False, False)
    node_tags = np.asarray(node_tags, dtype=np.int64)
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    element_type = _GMSH_TET4 if order == 1 else _GMSH_TET10
    _, tet_nodes = gmsh.model.mesh.getElementsByType(element_type)
    width = 4 if order == 1 else 10
    cells_tagged = np.asarray(tet_nodes, dtype=np.int64).reshape(-1, width)
    if order == 2:
        cells_tagged = cells_tagged[:, _GMSH_TO_VTK_TET10]
    lookup = np.full(int(node_tags.max()) + 1, -1, dtype=np.int64)
    lookup[node_tags] = np.arange(node_tags.shape[0], dtype=np.int64)
    cells = lookup[cells_tagged]
    if np.any(cells < 0):
        raise MeshingError("gmsh returned tetrahedra referencing unknown nodes",
                           hint="report this mesh; retry with a different size_mm")
    return coords, cells


def _orient_positive(points: npt.NDArray[np.float64],
                     cells: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Swap vertices 1 and 2 (and matching mid-nodes) of negatively oriented tetrahedra."""
    p = points[cells[:, :4]]
    d1, d2, d3 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]
    negative = np.einsum("ij,ij->i", d1, np.cross(d2, d3)) < 0.0
    if negative.any():
        flip = _FLIP_TET4 if cells.shape[1] == 4 else _FLIP_TET10
        cells = cells.copy()
        cells[negative] = cells[negative][:, flip]
        _LOG.debug("tetrahedralize: re-oriented %d tetrahedra", int(negative.sum()))
    return cells


def _straighten_inverted(points: npt.NDArray[np.float64],
                         cells: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Move the mid-nodes of inverted curved 10-node cells back onto their straight edges.

    gmsh's curving can invert a few cells near strongly curved boundaries (a femur at 6 mm:
    ~7 of 17k). A cell whose edges are all straight is valid because its corner tetrahedron
    is positive, so repeating this on the cells still inverted terminates.
    """
    points = points.copy()
    edges = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])
    tags = np.ones(cells.shape[0], dtype=np.int32)
    total = 0
    for _ in range(20):
        inverted = np.any(jacobian_determinants(TetMesh(points, cells, tags)) <= 0.0, axis=1)
        if not inverted.any():
            break
        bad = cells[inverted]
        total += int(inverted.sum())
        points[bad[:, 4:].ravel()] = 0.5 * (points[bad[:, edges[:, 0]].ravel()]
                                            + points[bad[:, edges[:, 1]].ravel()])
    if total:
        _LOG.info("tetrahedralize: straightened the edges of %d inverted curved cells", total)
    return points


def _compact(points: npt.NDArray[np.float64], cells: npt.NDArray[np.int64]
             ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Drop nodes no cell uses and renumber the rest contiguously (order preserved)."""
    used, inverse = np.unique(cells, return_inverse=True)
    return points[used], inverse.reshape(cells.shape).astype(np.int64)


def tag_cells(mesh: TetMesh, labels: LabelMap, lesion_values: Sequence[int],
              tag: int = 2) -> TetMesh:
    """Tag the cells whose centroid lies in a lesion label.

    Each centroid (mean of the four vertices) is mapped to the nearest voxel with
    ``labels.grid.world_to_index``; if that voxel's label is one of ``lesion_values`` the cell
    gets ``tag``, otherwise (including centroids outside the image) it keeps its tag.

    Args:
        mesh: The mesh to tag.
        labels: Label image in the same world frame as the mesh.
        lesion_values: Label values that mark lesion tissue.
        tag: Tag given to lesion cells.

    Returns:
        A new mesh with the same nodes and cells and updated ``cell_tags``.

    Raises:
        InputError: ``lesion_values`` is empty.
    """
    values = np.asarray(list(lesion_values), dtype=np.int64)
    if values.size == 0:
        raise InputError("no lesion label values given",
                         hint="pass the label value(s) of the lesion, e.g. [2]")
    ijk = np.rint(labels.grid.world_to_index(mesh.centroids())).astype(np.int64)
    shape = np.asarray(labels.grid.shape, dtype=np.int64)
    inside = np.all((ijk >= 0) & (ijk < shape), axis=1)
    hit = np.zeros(mesh.num_cells, dtype=bool)
    idx = ijk[inside]
    hit[inside] = np.isin(labels.labels[idx[:, 0], idx[:, 1], idx[:, 2]], values)
    tags = np.where(hit, np.int32(tag), mesh.cell_tags).astype(np.int32)
    _LOG.info("tag_cells: %d of %d cells tagged %d", int(hit.sum()), mesh.num_cells, tag)
    return TetMesh(mesh.points, mesh.cells, tags)


def tag_cortex(
    mesh: TetMesh,
    source: CTVolume | LabelMap | npt.ArrayLike,
    *,
    threshold_hu: float | None = None,
    label_values: Sequence[int] | None = None,
    tag: int = CORTEX_TAG,
    retag: int = BONE_TAG,
) -> TetMesh:
    """Tag the cortical cells of a bone mesh, from CT numbers or from a cortex mask.

    Only cells currently tagged ``retag`` (bone) can become cortex, so lesion cells keep
    their tag whichever of :func:`tag_cells` and this function runs first. The source is one
    of:

    - a :class:`CTVolume`: a cell is cortex when the HU of the voxel nearest its centroid
      is at least ``threshold_hu`` (centroids outside the image are left alone);
    - a (num_cells,) array of per-cell HU (e.g. the element means of the material mapping):
      cortex when the value is at least ``threshold_hu``;
    - a :class:`LabelMap` of the cortex (e.g. a cortical-bone segmentation on any grid in
      the same world frame): cortex when the label of the voxel nearest the centroid is in
      ``label_values`` (default: any non-zero label).

    No HU threshold is built in: the HU of cortical bone depend on scanner and calibration,
    so take it from the calibration line (the HU of the density chosen as the
    cortical/trabecular boundary). Cells are tagged whole: a cortex thinner than the
    elements is only captured with finer elements at the surface (``surface_size_mm`` of
    :func:`mesh_from_mask` / :func:`tetrahedralize`).

    Args:
        mesh: Mesh to tag.
        source: CT, per-cell HU, or cortex label map (see above).
        threshold_hu: HU at and above which a cell is cortex (CT or per-cell HU source).
        label_values: Label values of the cortex (label map source).
        tag: Tag given to cortical cells.
        retag: Only cells with this tag may change.

    Returns:
        A new mesh with the same nodes and cells and updated ``cell_tags``.

    Raises:
        InputError: Missing threshold for HU input, or per-cell values of the wrong
            length or not finite.
    """
    if isinstance(source, LabelMap):
        values = None if label_values is None else np.asarray(list(label_values), np.int64)
        label = _nearest_voxel_values(mesh, source.grid, source.labels)
        hit = label != 0 if values is None else np.isin(label, values)
        what = "cortex labels"
    else:
        if threshold_hu is None or not np.isfinite(threshold_hu):
            raise InputError("tag_cortex needs threshold_hu with a CT or per-cell HU",
                             hint="pass threshold_hu, the HU of the cortical/trabecular "
                                  "boundary density from the scanner calibration")
        if isinstance(source, CTVolume):
            hu = _nearest_voxel_values(mesh, source.grid, source.hu, fill=np.nan)
        else:
            hu = np.asarray(source, dtype=np.float64)
            if hu.shape != (mesh.num_cells,):
                raise InputError(f"per-cell HU must have shape ({mesh.num_cells},), got "
                                 f"{hu.shape}",
                                 hint="pass one value per cell, a CTVolume or a LabelMap")
            if not np.all(np.isfinite(hu)):
                raise InputError("per-cell HU contain NaN or infinite values",
                                 hint="sample the CT inside its grid")
        with np.errstate(invalid="ignore"):
            hit = hu >= float(threshold_hu)
        what = f"HU >= {threshold_hu:g}"
    change = hit & (mesh.cell_tags == retag)
    tags = np.where(change, np.int32(tag), mesh.cell_tags).astype(np.int32)
    _LOG.info("tag_cortex: %d of %d cells tagged %d (%s)", int(change.sum()), mesh.num_cells,
              tag, what)
    return TetMesh(mesh.points, mesh.cells, tags)


def _nearest_voxel_values(mesh: TetMesh, grid: ImageGrid, image: np.ndarray,
                          fill: float = 0) -> np.ndarray:
    """Image value at the voxel nearest each cell centroid (``fill`` outside the image)."""
    ijk = np.rint(grid.world_to_index(mesh.centroids())).astype(np.int64)
    inside = np.all((ijk >= 0) & (ijk < np.asarray(grid.shape, dtype=np.int64)), axis=1)
    out = np.full(mesh.num_cells, fill, dtype=np.result_type(image.dtype, type(fill)))
    idx = ijk[inside]
    out[inside] = image[idx[:, 0], idx[:, 1], idx[:, 2]]
    return out


def mesh_from_surface(
    surface: SurfaceMesh,
    *,
    size_mm: float,
    order: int = 1,
    size_min_mm: float | None = None,
    surface_size_mm: float | None = None,
    curvature_elements: float = 0.0,
    transition_mm: float | None = None,
    optimize: bool = True,
    optimize_netgen: bool = True,
    curved: bool = False,
    num_threads: int = 1,
) -> TetMesh:
    """Remesh a closed surface at the element size(s) and fill it with tetrahedra.

    The surface is remeshed into near-equilateral triangles (:func:`remesh_uniform` at
    ``surface_size_mm``, or :func:`remesh_sized` with curvature-based sizes) and meshed as
    given (no second reparametrisation). With finer surface elements than ``size_mm`` the
    size grows to ``size_mm`` inside over ``transition_mm``. Where that remeshing leaves
    slivers or folds (sharp edges such as a flat cut, which clustering cannot follow), gmsh
    remeshes the surface instead (classified patches, sharp edges kept; logged).

    Args:
        surface: Closed, outward-oriented surface in mm (any triangle sizes).
        size_mm: Element edge length inside the bone (the largest size) in mm.
        order: 1 (4-node) or 2 (10-node) tetrahedra.
        size_min_mm: Smallest element size in mm (default ``size_mm / 4``).
        surface_size_mm: Element edge length at the surface in mm (default ``size_mm``).
        curvature_elements: Elements per full circle of the local radius of curvature
            (e.g. 16-24; 0 = off): where the surface is curved tighter, surface elements
            shrink to ``2 pi R / curvature_elements`` (not below ``size_min_mm``), graded
            (see :func:`meshing.surface.curvature_sizes`).
        transition_mm: Depth over which sizes grow from the surface to ``size_mm``
            (default ``2 * size_mm``); only used when the surface is finer than ``size_mm``.
        optimize: Run gmsh's tetrahedron optimiser.
        optimize_netgen: Also run the Netgen optimiser (see :func:`tetrahedralize`).
        curved: For ``order=2``, move the boundary mid-nodes onto the input ``surface``
            (closest point); cells this would invert keep straight edges.
        num_threads: Threads gmsh may use.

    Returns:
        The tetrahedral mesh, all cells tagged 1.

    Raises:
        InputError: Bad sizes.
    """
    if not (np.isfinite(size_mm) and size_mm > 0):
        raise InputError(f"mesh size must be positive, got {size_mm} mm",
                         hint="pass size_mm > 0, e.g. 2-3 mm for a femur")
    size_min = size_mm / 4.0 if size_min_mm is None else float(size_min_mm)
    surface_size = size_mm if surface_size_mm is None else float(surface_size_mm)
    if not 0.0 < size_min <= surface_size <= size_mm:
        raise InputError(f"sizes must satisfy 0 < size_min_mm ({size_min}) <= "
                         f"surface_size_mm ({surface_size}) <= size_mm ({size_mm})",
                         hint="give the surface size between the minimum and the interior "
                              "size")
    if curvature_elements < 0.0:
        raise InputError(f"curvature_elements must be >= 0, got {curvature_elements}",
                         hint="use 0 (off) or e.g. 16 elements per circle")
    try:
        if curvature_elements > 0.0:
            sizes = curvature_sizes(surface, size_mm=surface_size, size_min_mm=size_min,
                                    elements_per_circle=curvature_elements)
            boundary = remesh_sized(surface, sizes)
            graded = True
        else:
            boundary = remesh_uniform(surface, surface_size)
            graded = surface_size < size_mm
    except MeshingError as exc:
        _LOG.warning("mesh_from_surface: %s; gmsh remeshes the surface instead (sharp edges "
                     "kept%s)", exc.message,
                     ", curvature sizing not applied" if curvature_elements > 0.0 else "")
        return tetrahedralize(surface, size_mm=size_mm, order=order, size_min_mm=size_min,
                              optimize=optimize, optimize_netgen=optimize_netgen,
                              curved=curved, num_threads=num_threads, remesh_boundary=True,
                              surface_size_mm=surface_size if surface_size < size_mm else None,
                              transition_mm=transition_mm if surface_size < size_mm else None)
    mesh = tetrahedralize(boundary, size_mm=size_mm, order=order, size_min_mm=size_min,
                          optimize=optimize, optimize_netgen=optimize_netgen,
                          num_threads=num_threads, remesh_boundary=False,
                          transition_mm=(transition_mm or 2.0 * size_mm) if graded else None)
    if order == 2 and curved:
        mesh = _curve_boundary(mesh, surface)
    return mesh


#: Local corner indices of the face opposite each vertex of a tetrahedron.
_TET_FACES = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
#: VTK tet10 edges (mid-node 4 + e on edge e) and, per face, the edges it holds.
_TET_EDGES = np.array([[0, 1], [1, 2], [0, 2], [0, 3], [1, 3], [2, 3]])
_FACE_EDGES = np.array([[e for e, (a, b) in enumerate(_TET_EDGES) if v not in (a, b)]
                        for v in range(4)])


def _curve_boundary(mesh: TetMesh, surface: SurfaceMesh) -> TetMesh:
    """Move the boundary mid-nodes of a 10-node mesh onto ``surface`` (closest point).

    The corner nodes of the remeshed boundary already lie on the input surface, its edges
    are chords; putting their mid-nodes on the surface halves the geometric error to second
    order. Cells this inverts are straightened again (:func:`_straighten_inverted`).
    """
    import pyvista as pv

    cells = mesh.cells
    faces = np.sort(cells[:, _TET_FACES].reshape(-1, 3), axis=1)
    _, first, counts = np.unique(faces, axis=0, return_index=True, return_counts=True)
    boundary = first[counts == 1]  # face index = 4 * cell + opposite vertex
    owner, opposite = boundary // 4, boundary % 4
    mids = np.unique(cells[owner[:, np.newaxis], 4 + _FACE_EDGES[opposite]])
    poly = pv.PolyData(surface.points, _faces_of(surface.triangles))
    closest: Any = poly.find_closest_cell(mesh.points[mids], return_closest_point=True)
    points = mesh.points.copy()
    points[mids] = np.asarray(closest[1], dtype=np.float64)
    points = _straighten_inverted(points, cells)
    _LOG.info("mesh_from_surface: %d boundary mid-nodes moved onto the surface (largest "
              "move %.3g mm)", mids.shape[0],
              float(np.linalg.norm(points[mids] - mesh.points[mids], axis=1).max())
              if mids.size else 0.0)
    return TetMesh(points, cells, mesh.cell_tags)


def _faces_of(triangles: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """VTK flat face array ``[3, a, b, c, 3, ...]``."""
    return np.column_stack([np.full(triangles.shape[0], 3, dtype=np.int64), triangles]).ravel()


def mesh_from_mask(
    mask: npt.ArrayLike,
    grid: ImageGrid,
    *,
    size_mm: float,
    order: int = 1,
    size_min_mm: float | None = None,
    smoothing_sigma_vox: float = 0.6,
    taubin_iterations: int = 20,
    surface_edge_mm: float | None = None,
    optimize: bool = True,
    optimize_netgen: bool = True,
    num_threads: int = 1,
    surface_size_mm: float | None = None,
    curvature_elements: float = 0.0,
    transition_mm: float | None = None,
    max_second_fraction: float = MAX_SECOND_FRACTION,
) -> TetMesh:
    """Binary mask -> solid -> smooth surface -> tetrahedral mesh, in one call.

    Args:
        mask: (ni, nj, nk) array on ``grid``, non-zero = bone.
        grid: Geometry of the mask.
        size_mm: Target element edge length in mm (inside the bone when graded).
        order: 1 (4-node) or 2 (10-node) tetrahedra.
        size_min_mm: Minimum element size in mm (default ``size_mm / 4``).
        smoothing_sigma_vox: Gaussian pre-blur of the mask in voxels.
        taubin_iterations: Windowed-sinc surface smoothing iterations.
        surface_edge_mm: None (default): the iso-surface is remeshed at the element size(s)
            and meshed as given (:func:`mesh_from_surface`); a value: the iso-surface is
            only decimated to that edge length and gmsh remeshes it at ``size_mm`` (the
            sizing options below are then not used).
        optimize: Run gmsh's tetrahedron optimiser.
        optimize_netgen: Also run the Netgen optimiser (see :func:`tetrahedralize`).
        num_threads: Threads gmsh may use.
        surface_size_mm: Finer elements at the surface (cortex), growing to ``size_mm``
            inside (see :func:`mesh_from_surface`).
        curvature_elements: Curvature-based surface sizing, elements per circle (0 = off).
        transition_mm: Depth of the growth from surface to interior size.
        max_second_fraction: A second piece of the mask above this fraction of the largest
            is refused as a second bone (see :func:`meshing.surface.clean_mask`).

    Returns:
        The tetrahedral mesh, all cells tagged 1.

    Raises:
        InputError: Bad mask (empty, several bones) or sizes.
    """
    solid = clean_mask(mask, grid=grid, max_second_fraction=max_second_fraction)
    if surface_edge_mm is None:
        # Full-resolution iso-surface, then near-equilateral triangles at the element size.
        return mesh_from_surface(
            extract_surface(solid, grid, smoothing_sigma_vox=smoothing_sigma_vox,
                            taubin_iterations=taubin_iterations),
            size_mm=size_mm, order=order, size_min_mm=size_min_mm,
            surface_size_mm=surface_size_mm, curvature_elements=curvature_elements,
            transition_mm=transition_mm, optimize=optimize, optimize_netgen=optimize_netgen,
            num_threads=num_threads)
    surface = extract_surface(solid, grid, smoothing_sigma_vox=smoothing_sigma_vox,
                              taubin_iterations=taubin_iterations,
                              target_edge_mm=surface_edge_mm)
    return tetrahedralize(surface, size_mm=size_mm, order=order, size_min_mm=size_min_mm,
                          optimize=optimize, optimize_netgen=optimize_netgen,
                          num_threads=num_threads, remesh_boundary=True)


def write_msh(
    path: str | os.PathLike[str],
    mesh: TetMesh,
    cell_data: Mapping[str, npt.ArrayLike] | None = None,
    *,
    tag_names: Mapping[int, str] | None = None,
    version: float = 4.1,
    binary: bool = True,
) -> Path:
    """Atomically write a gmsh .msh file with one physical group per cell tag.

    Each tag becomes a discrete volume entity carrying a physical group of the same id,
    named from ``tag_names`` (default :data:`TAG_NAMES`, else ``tag<N>``), so solvers that
    read physical groups (DOLFINx ``gmshio``, gmsh itself, meshio ``gmsh:physical``) see the
    regions. Elements are written per entity, i.e. grouped by tag (stable within a tag). In
    MSH 4.1 element ``i + 1`` is cell ``i`` of ``mesh`` whatever the grouping, so
    :func:`read_msh` restores the cell order; MSH 2.2 numbers the elements in the grouped
    order (its writer renumbers them), so cells come back grouped by tag. 10-node cells are
    written in gmsh's node order. ``cell_data`` arrays become ``$ElementData`` (float64;
    one component per column).

    Args:
        path: Output file (.msh).
        mesh: Mesh to write (tags must be positive: gmsh physical ids are).
        cell_data: name -> (m,) or (m, k) per-cell arrays.
        tag_names: tag -> physical group name.
        version: MSH format version, 4.1 (default) or 2.2.
        binary: Binary (default) or ASCII file.

    Returns:
        The path written.

    Raises:
        InputError: Non-positive tags, cell arrays of the wrong length, bad version.
    """
    import gmsh

    out = Path(path)
    tags = np.unique(mesh.cell_tags)
    if tags.size and tags.min() <= 0:
        raise InputError(f"cell tags must be positive for gmsh physical groups, got "
                         f"{tags.min()}", hint="renumber the regions from 1")
    if version not in (2.2, 4.1):
        raise InputError(f"unsupported MSH version {version}", hint="use 4.1 or 2.2")
    arrays = _cell_arrays(mesh, cell_data)
    names = {**TAG_NAMES, **dict(tag_names or {})}
    element_type = _GMSH_TET4 if mesh.order == 1 else _GMSH_TET10
    cells = mesh.cells if mesh.order == 1 else mesh.cells[:, _GMSH_TO_VTK_TET10]
    with atomic_path(out, suffix=".msh") as tmp_path, _GMSH_LOCK:
        tmp = str(tmp_path)
        gmsh.initialize(readConfigFiles=False, interruptible=False)
        try:
            gmsh.option.setNumber("General.Terminal", 0)
            gmsh.model.add("osteofe")
            gmsh.option.setNumber("Mesh.MshFileVersion", float(version))
            gmsh.option.setNumber("Mesh.Binary", 1 if binary else 0)
            gmsh.option.setNumber("Mesh.SaveAll", 0)
            gmsh.option.setNumber("PostProcessing.SaveMesh", 0)
            entities = [int(gmsh.model.addDiscreteEntity(3)) for _ in tags]
            if entities:
                gmsh.model.mesh.addNodes(3, entities[0],
                                         np.arange(1, mesh.num_nodes + 1, dtype=np.uint64),
                                         mesh.points.ravel())
            # Cells grouped by tag (one entity each); element numbers: the cell index + 1
            # for MSH 4, which keeps them, or the grouped position for MSH 2, whose
            # writer renumbers elements in the order it writes them.
            order = np.concatenate([np.flatnonzero(mesh.cell_tags == t) for t in tags]
                                   ) if tags.size else np.zeros(0, dtype=np.int64)
            numbers = np.empty(mesh.num_cells, dtype=np.uint64)
            numbers[order] = (np.arange(mesh.num_cells) + 1 if version == 2.2
                              else order + 1)
            for entity, tag in zip(entities, tags, strict=True):
                index = np.flatnonzero(mesh.cell_tags == tag)
                gmsh.model.mesh.addElementsByType(
                    entity, element_type, numbers[index],
                    (cells[index] + 1).astype(np.uint64).ravel())
                gmsh.model.addPhysicalGroup(3, [entity], int(tag),
                                            names.get(int(tag), f"tag{int(tag)}"))
            gmsh.write(tmp)
            for name, values in arrays.items():
                view = gmsh.view.add(name)
                data = values[order].reshape(order.shape[0], -1)
                gmsh.view.addHomogeneousModelData(
                    view, 0, "osteofe", "ElementData", numbers[order], data.ravel(),
                    numComponents=data.shape[1])
                gmsh.view.write(view, tmp, append=True)
        finally:
            gmsh.finalize()
    _LOG.info("write_msh: %s (%d cells, physical groups %s)", out, mesh.num_cells,
              ", ".join(f"{int(t)}={names.get(int(t), f'tag{int(t)}')}" for t in tags))
    return out


def _cell_arrays(mesh: TetMesh, cell_data: Mapping[str, npt.ArrayLike] | None
                 ) -> dict[str, npt.NDArray[np.float64]]:
    """Per-cell arrays as float64, checked against the cell count."""
    arrays: dict[str, npt.NDArray[np.float64]] = {}
    for name, values in (cell_data or {}).items():
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.shape[0] != mesh.num_cells:
            raise InputError(f"cell array {name!r} has shape {arr.shape}, expected "
                             f"({mesh.num_cells},) or ({mesh.num_cells}, k)",
                             hint="pass one value (or row) per cell")
        arrays[str(name)] = arr
    return arrays
