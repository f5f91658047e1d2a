"""Closed surface -> tetrahedral volume mesh with gmsh, and lesion tagging.

This is the only module of osteofe that imports gmsh; no gmsh object leaves its functions.
gmsh keeps global state, so every call runs under one module lock, initialises gmsh without
signal handlers (it may run in a worker thread) and always finalises it.

Node order of 10-node tetrahedra follows :class:`meshing.types.TetMesh` (VTK): 4 vertices,
then the mid-nodes of edges 01, 12, 02, 03, 13, 23. gmsh numbers the last two edges 32, 31,
so its nodes 8 and 9 are swapped on the way out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from meshing.errors import InputError, MeshingError
from meshing.quality import jacobian_determinants
from meshing.surface import (
    clean_mask,
    extract_surface,
    remesh_uniform,
    shell_labels,
    surface_check,
)
from meshing.types import ImageGrid, LabelMap, SurfaceMesh, TetMesh

__all__ = ["mesh_from_mask", "tag_cells", "tetrahedralize"]

_LOG = logging.getLogger(__name__)
_GMSH_LOCK = threading.Lock()

#: gmsh element type ids: 4-node and 10-node tetrahedron, 3-node triangle.
_GMSH_TET4, _GMSH_TET10, _GMSH_TRI3 = 4, 11, 2
#: gmsh 3-D algorithm ids.
_ALGO_DELAUNAY, _ALGO_HXT = 1, 10
#: Largest patch (input triangles) gmsh reparametrises, tried in turn. Small patches keep
#: the parametrisation of long, curved bone surfaces undistorted (a CT-derived femur STL gave
#: 0.6 mm triangles at a 6 mm target with gmsh's default 250000); too small a value can make
#: createGeometry fail ("Wrong topology of boundary mesh"), hence the fallback.
_REPARAM_MAX_TRIANGLES = (10_000, 250_000)
#: Column permutation gmsh tet10 -> VTK tet10 (swap the mid-nodes of edges 13 and 23).
_GMSH_TO_VTK_TET10 = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 8])
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
            edge straight, so no quadratic element can invert.
        feature_angle_deg: Dihedral angle between triangles above which an edge is kept as
            a sharp feature when classifying the surface.
        num_threads: Threads gmsh may use (HXT is parallel).
        remesh_boundary: False keeps the given triangles as the mesh boundary (for a surface
            already triangulated at the element size, e.g. by
            :func:`meshing.surface.remesh_uniform`): no classification, and no second
            chordal error.

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
    with _GMSH_LOCK:
        gmsh.initialize(readConfigFiles=False, interruptible=False)
        try:
            _set_options(gmsh, size_mm=size_mm, size_min=size_min, num_threads=num_threads,
                         curved=curved)
            if remesh_boundary:
                _mesh_volume(gmsh, surface, feature_angle_deg)
            else:
                gmsh.model.add("osteofe-given-boundary")
                _build_raw(gmsh, surface)
                _generate(gmsh)
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


def _generate(gmsh: Any) -> None:
    """Mesh in 3-D with HXT, falling back to Delaunay."""
    try:
        gmsh.model.mesh.generate(3)
        if _count_tets(gmsh) > 0:
            return
        _LOG.warning("tetrahedralize: HXT produced no tetrahedra; retrying with Delaunay")
    except Exception as exc:
        _LOG.warning("tetrahedralize: HXT failed (%s); retrying with Delaunay", exc)
    gmsh.model.mesh.clear()
    gmsh.option.setNumber("Mesh.Algorithm3D", _ALGO_DELAUNAY)
    try:
        gmsh.model.mesh.generate(3)
    except Exception as exc:
        raise MeshingError(f"gmsh could not tetrahedralize the surface: {exc}",
                           hint="smooth the surface (larger smoothing_sigma_vox), remove "
                                "self-intersections, or try a different size_mm") from exc
    if _count_tets(gmsh) == 0:
        raise MeshingError("gmsh produced no tetrahedra from the surface",
                           hint="check that the surface is closed and not self-intersecting")


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
) -> TetMesh:
    """Binary mask -> solid -> smooth surface -> tetrahedral mesh, in one call.

    Args:
        mask: (ni, nj, nk) array on ``grid``, non-zero = bone.
        grid: Geometry of the mask.
        size_mm: Target element edge length in mm.
        order: 1 (4-node) or 2 (10-node) tetrahedra.
        size_min_mm: Minimum element size in mm (default ``size_mm / 4``).
        smoothing_sigma_vox: Gaussian pre-blur of the mask in voxels.
        taubin_iterations: Windowed-sinc surface smoothing iterations.
        surface_edge_mm: None (default): the iso-surface is remeshed uniformly at
            ``size_mm`` (:func:`meshing.surface.remesh_uniform`); a value: the iso-surface is
            only decimated to that edge length and gmsh remeshes it.
        optimize: Run gmsh's tetrahedron optimiser.
        optimize_netgen: Also run the Netgen optimiser (see :func:`tetrahedralize`).
        num_threads: Threads gmsh may use.

    Returns:
        The tetrahedral mesh, all cells tagged 1.
    """
    solid = clean_mask(mask)
    if surface_edge_mm is None:
        # Full-resolution iso-surface, then near-equilateral triangles at the element size.
        surface = remesh_uniform(
            extract_surface(solid, grid, smoothing_sigma_vox=smoothing_sigma_vox,
                            taubin_iterations=taubin_iterations),
            size_mm,
        )
    else:
        surface = extract_surface(solid, grid, smoothing_sigma_vox=smoothing_sigma_vox,
                                  taubin_iterations=taubin_iterations,
                                  target_edge_mm=surface_edge_mm)
    return tetrahedralize(surface, size_mm=size_mm, order=order, size_min_mm=size_min_mm,
                          optimize=optimize, optimize_netgen=optimize_netgen,
                          num_threads=num_threads, remesh_boundary=surface_edge_mm is not None)
