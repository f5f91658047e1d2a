"""Binary label mask -> watertight, outward-oriented triangulated surface.

The pipeline is: :func:`clean_mask` (largest 26-connected component, cavities filled) ->
:func:`extract_surface` (pad, light Gaussian smoothing, iso-surface at 0.5 in voxel-index
space, mapping to world through :meth:`ImageGrid.index_to_world`, volume-preserving
windowed-sinc smoothing, optional decimation, watertightness check). :func:`read_surface`
loads a user surface (STL/PLY/OBJ) instead.

VTK/pyvista objects never leave this module: every public function takes and returns numpy
arrays or the frozen records of :mod:`meshing.types`.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from meshing.errors import InputError, MeshingError
from meshing.types import ImageGrid, SurfaceMesh

__all__ = [
    "clean_mask",
    "extract_surface",
    "is_watertight",
    "largest_shell",
    "read_surface",
    "remesh_uniform",
    "shell_labels",
    "surface_check",
    "surface_volume",
]

_LOG = logging.getLogger(__name__)

BoolArray = npt.NDArray[np.bool_]

#: File suffixes :func:`read_surface` accepts.
SURFACE_SUFFIXES = (".stl", ".ply", ".obj", ".vtk", ".vtp")


def clean_mask(mask: npt.ArrayLike) -> BoolArray:
    """Keep the largest 26-connected component of a binary mask and fill its cavities.

    Args:
        mask: (ni, nj, nk) array, non-zero = bone. Any dtype (bool, int labels 0/1).

    Returns:
        (ni, nj, nk) bool array: the largest 26-connected component with every internal hole
        and cavity (background not 6-connected to the image border) filled, i.e. a solid.

    Raises:
        InputError: The mask is not 3-D, is empty, or fills the whole image.
    """
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise InputError(f"label mask must be 3-D, got shape {arr.shape}",
                         hint="pass the (ni, nj, nk) voxel array of one structure")
    binary = arr != 0
    count = int(np.count_nonzero(binary))
    if count == 0:
        raise InputError("label mask is empty (no voxel set)",
                         hint="check the label value selected for the bone and that the "
                              "segmentation belongs to this image")
    if count == binary.size:
        raise InputError(f"label mask fills the whole {arr.shape} image (every voxel set)",
                         hint="select a single label value (e.g. labels == 76), not a "
                              "threshold that keeps the background")
    components, num = ndimage.label(binary, structure=np.ones((3, 3, 3), dtype=bool))
    if num > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        largest = int(np.argmax(sizes))
        binary = components == largest
        _LOG.info("clean_mask: kept the largest of %d components (%d of %d voxels)",
                  num, int(sizes[largest]), count)
    solid = np.asarray(ndimage.binary_fill_holes(binary), dtype=bool)
    filled = int(np.count_nonzero(solid)) - int(np.count_nonzero(binary))
    if filled:
        _LOG.info("clean_mask: filled %d cavity voxels", filled)
    if _touches_border(solid):
        _LOG.warning("label mask touches the image border: the bone may be cut off there and "
                     "its surface will be closed flat at the border (crop or pad the image "
                     "so the whole bone lies inside if this is not intended)")
    return solid


def _touches_border(mask: BoolArray) -> bool:
    """Whether any set voxel lies on one of the six faces of the image."""
    return bool(
        mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
        or mask[:, :, 0].any() or mask[:, :, -1].any()
    )


def extract_surface(
    mask: npt.ArrayLike,
    grid: ImageGrid,
    *,
    smoothing_sigma_vox: float = 0.6,
    taubin_iterations: int = 20,
    taubin_pass_band: float = 0.1,
    target_edge_mm: float | None = None,
) -> SurfaceMesh:
    """Extract a smooth, watertight, outward-oriented world-space surface from a binary mask.

    The mask is padded with background, blurred (Gaussian, ``smoothing_sigma_vox`` voxels),
    iso-surfaced at 0.5 with VTK flying edges in voxel-index space, mapped to world
    coordinates with ``grid.index_to_world`` (direction cosines and anisotropic spacing
    honoured), smoothed with a windowed-sinc (Taubin-type, volume-preserving) filter and
    optionally decimated. Only the largest closed shell is kept.

    Args:
        mask: (ni, nj, nk) array on ``grid``, non-zero = inside. Pass it through
            :func:`clean_mask` first to get one solid component.
        grid: Geometry of the mask.
        smoothing_sigma_vox: Standard deviation of the Gaussian pre-blur in voxels
            (0 disables it; ~0.5-1 removes the staircase without eroding thin cortex).
        taubin_iterations: Windowed-sinc smoothing iterations (0 disables it).
        taubin_pass_band: Pass band of the windowed-sinc filter (smaller = smoother, 0-2).
        target_edge_mm: If given and larger than the extracted mean edge length, decimate the
            surface towards this mean edge length in mm (quadric decimation).

    Returns:
        The closed surface in world mm, triangles counter-clockwise seen from outside.

    Raises:
        InputError: Empty mask, shape differing from the grid, or bad smoothing parameters.
        MeshingError: No surface was found or the result is not a closed manifold.
    """
    import pyvista as pv

    binary = np.asarray(mask) != 0
    if binary.shape != grid.shape:
        raise InputError(f"mask shape {binary.shape} differs from grid shape {grid.shape}",
                         hint="pass the mask that belongs to this grid (same image)")
    if not binary.any():
        raise InputError("label mask is empty (no voxel set)",
                         hint="check the label value selected for the bone")
    if smoothing_sigma_vox < 0 or taubin_iterations < 0 or not 0 < taubin_pass_band <= 2:
        raise InputError(
            f"bad smoothing parameters (sigma {smoothing_sigma_vox} vox, "
            f"{taubin_iterations} iterations, pass band {taubin_pass_band})",
            hint="use sigma >= 0, iterations >= 0 and 0 < pass band <= 2")

    # Crop to the bounding box plus a margin wide enough for the blur to decay to ~0, so
    # the iso-surface is closed even where the mask touches the image border.
    pad = 2 + math.ceil(4.0 * smoothing_sigma_vox)
    nonzero = np.nonzero(binary)
    lo = np.array([int(ax.min()) for ax in nonzero])
    hi = np.array([int(ax.max()) + 1 for ax in nonzero])
    crop = binary[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    field = np.pad(crop.astype(np.float32), pad, mode="constant", constant_values=0.0)
    if smoothing_sigma_vox > 0:
        field = ndimage.gaussian_filter(field, sigma=smoothing_sigma_vox, mode="constant",
                                        cval=0.0, truncate=4.0)

    image = pv.ImageData(dimensions=field.shape, spacing=(1.0, 1.0, 1.0),
                         origin=tuple(float(v) for v in lo - pad))
    image.point_data["inside"] = field.ravel(order="F")
    contour = image.contour([0.5], scalars="inside", method="flying_edges")
    if contour.n_cells == 0:
        raise MeshingError("no surface found at iso-level 0.5 of the mask",
                           hint="the mask is too thin for the smoothing; lower "
                                "smoothing_sigma_vox or segment at a finer voxel size")
    poly = contour.triangulate().clean(tolerance=0.0)
    points_index = np.asarray(poly.points, dtype=np.float64)
    shell = largest_shell(SurfaceMesh(grid.index_to_world(points_index), _triangles_of(poly)))
    world = pv.PolyData(shell.points, _faces_from_triangles(shell.triangles))

    volume_before = surface_volume(shell)
    if taubin_iterations > 0:
        world = world.smooth_taubin(n_iter=taubin_iterations, pass_band=taubin_pass_band,
                                    boundary_smoothing=False, feature_smoothing=False,
                                    non_manifold_smoothing=False, normalize_coordinates=True)
    if target_edge_mm is not None:
        world = _decimate(world, target_edge_mm)

    surface = _to_surface(world)
    if surface_volume(surface) < 0.0:
        surface = SurfaceMesh(surface.points, surface.triangles[:, ::-1])
    problem = surface_check(surface)
    if problem is not None:
        raise MeshingError(f"extracted surface is not a closed manifold: {problem}",
                           hint="increase smoothing_sigma_vox, or clean the mask (clean_mask) "
                                "so thin bridges and single-voxel contacts disappear")
    volume_after = surface_volume(surface)
    _LOG.info("extract_surface: %d points, %d triangles, volume %.1f mm^3 "
              "(%.2f%% change by smoothing/decimation)", surface.points.shape[0],
              surface.triangles.shape[0], volume_after,
              100.0 * (abs(volume_after) - abs(volume_before)) / max(abs(volume_before), 1e-30))
    return surface


def _triangles_of(poly: Any) -> npt.NDArray[np.int64]:
    """(m, 3) int64 triangles of an all-triangle pyvista PolyData."""
    faces = np.asarray(poly.faces, dtype=np.int64)
    if faces.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if faces.size % 4 or np.any(faces[::4] != 3):
        raise MeshingError("surface has non-triangular faces after triangulation",
                           hint="export the surface as a triangle mesh")
    return faces.reshape(-1, 4)[:, 1:].copy()


def _faces_from_triangles(triangles: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """VTK flat face array ``[3, a, b, c, 3, ...]`` from (m, 3) triangles."""
    flat = np.empty((triangles.shape[0], 4), dtype=np.int64)
    flat[:, 0] = 3
    flat[:, 1:] = triangles
    return flat.ravel()


def _to_surface(poly: Any) -> SurfaceMesh:
    """A SurfaceMesh from a pyvista PolyData (points copied)."""
    points = np.array(poly.points, dtype=np.float64)
    return SurfaceMesh(points, _triangles_of(poly))


def shell_labels(surface: SurfaceMesh) -> tuple[int, npt.NDArray[np.int64]]:
    """Label the connected shells of a surface (triangles joined through shared vertices).

    Args:
        surface: Any triangulated surface.

    Returns:
        (number of shells, (m,) int64 shell index of each triangle).
    """
    n = surface.points.shape[0]
    tri = surface.triangles
    if tri.shape[0] == 0:
        return 0, np.zeros(0, dtype=np.int64)
    rows = np.concatenate([tri[:, 0], tri[:, 1]])
    cols = np.concatenate([tri[:, 1], tri[:, 2]])
    graph = sparse.coo_matrix((np.ones(rows.shape[0], dtype=np.int8), (rows, cols)),
                              shape=(n, n))
    _, vertex_label = csgraph.connected_components(graph, directed=False)
    labels = np.asarray(vertex_label, dtype=np.int64)[tri[:, 0]]
    num_used = int(np.unique(labels).shape[0])
    return num_used, labels


def largest_shell(surface: SurfaceMesh) -> SurfaceMesh:
    """Keep the connected shell with the most triangles and drop unused vertices.

    Stray pieces (tiny closed blobs, doubled "pillow" triangles) left by segmentation tools
    would otherwise become separate volumes or make gmsh's classification fail.

    Args:
        surface: Any triangulated surface.

    Returns:
        The largest shell (the input itself when it has a single shell and no unused vertex).
    """
    num, labels = shell_labels(surface)
    tri = surface.triangles
    if num > 1:
        counts = np.bincount(labels)
        keep = labels == int(np.argmax(counts))
        _LOG.warning("surface has %d separate shells; kept the largest (%d of %d triangles)",
                     num, int(keep.sum()), tri.shape[0])
        tri = tri[keep]
    used, inverse = np.unique(tri, return_inverse=True)
    if used.shape[0] == surface.points.shape[0] and num <= 1:
        return surface
    return SurfaceMesh(surface.points[used], inverse.reshape(tri.shape))


def _decimate(poly: Any, target_edge_mm: float) -> Any:
    """Quadric-decimate towards a mean edge length of ``target_edge_mm`` (never refines)."""
    if not target_edge_mm > 0:
        raise InputError(f"target surface edge must be positive, got {target_edge_mm} mm",
                         hint="pass a positive length in mm or None")
    surface = _to_surface(poly)
    mean_edge = float(_mean_edge_length(surface))
    if mean_edge >= target_edge_mm:
        return poly
    reduction = 1.0 - (mean_edge / target_edge_mm) ** 2
    reduction = min(reduction, 1.0 - 200.0 / max(surface.triangles.shape[0], 201))
    if reduction <= 0.0:
        return poly
    decimated = poly.decimate(reduction, volume_preservation=True)
    return decimated.clean(tolerance=0.0)


def _mean_edge_length(surface: SurfaceMesh) -> float:
    """Mean length of the triangle edges (each interior edge counted twice) in mm."""
    p = surface.points[surface.triangles]
    lengths = np.linalg.norm(p - np.roll(p, 1, axis=1), axis=2)
    return float(lengths.mean()) if lengths.size else 0.0


def surface_volume(surface: SurfaceMesh) -> float:
    """Signed enclosed volume of a closed triangulated surface (divergence theorem).

    Args:
        surface: Closed surface; positive result when the triangles are counter-clockwise
            seen from outside (outward normals).

    Returns:
        Volume in mm^3 (negative for inward-oriented surfaces).
    """
    if surface.triangles.shape[0] == 0:
        return 0.0
    centre = surface.points.mean(axis=0)  # reduces cancellation far from the origin
    p = surface.points[surface.triangles] - centre
    return float(np.einsum("ij,ij->", p[:, 0], np.cross(p[:, 1], p[:, 2])) / 6.0)


def surface_check(surface: SurfaceMesh) -> str | None:
    """Describe why a surface is not a closed, consistently oriented, outward manifold.

    Checks: at least four triangles, valid vertex indices, no degenerate (repeated-vertex) or
    duplicated triangle, every edge shared by exactly two triangles traversing it in opposite
    directions (closed, edge-manifold and consistently oriented), positive enclosed volume.

    Args:
        surface: The surface to check.

    Returns:
        None when the surface passes, else a one-line description of the first problem.
    """
    tri = surface.triangles
    n = surface.points.shape[0]
    if tri.shape[0] < 4:
        return f"only {tri.shape[0]} triangles (a closed surface needs at least 4)"
    if tri.min() < 0 or tri.max() >= n:
        return "triangles reference vertices that do not exist"
    degenerate = (tri[:, 0] == tri[:, 1]) | (tri[:, 1] == tri[:, 2]) | (tri[:, 0] == tri[:, 2])
    if degenerate.any():
        return f"{int(degenerate.sum())} degenerate triangles (repeated vertex)"
    if np.unique(np.sort(tri, axis=1), axis=0).shape[0] < tri.shape[0]:
        return "duplicated triangles (the same three vertices used twice)"
    tails = tri.ravel()
    heads = tri[:, [1, 2, 0]].ravel()
    directed = tails * n + heads
    unique, counts = np.unique(directed, return_counts=True)
    if np.any(counts > 1):
        return (f"{int(np.sum(counts > 1))} edges are traversed twice in the same direction "
                "(non-manifold or inconsistently oriented triangles)")
    reverse = heads * n + tails
    missing = ~np.isin(reverse, unique, assume_unique=False)
    if missing.any():
        return f"{int(missing.sum())} edges belong to a single triangle (holes in the surface)"
    if surface_volume(surface) <= 0.0:
        return "normals point inwards (non-positive enclosed volume)"
    return None


def is_watertight(surface: SurfaceMesh) -> bool:
    """Whether the surface is closed, edge-manifold, consistently and outward oriented.

    Args:
        surface: The surface to check.

    Returns:
        True when :func:`surface_check` finds no problem.
    """
    return surface_check(surface) is None


def read_surface(path: str | Path, *, keep_largest_shell: bool = True) -> SurfaceMesh:
    """Read a triangulated surface (STL, PLY, OBJ, VTK/VTP), merging duplicate points.

    Polygons are triangulated; coordinates are taken as mm. The result is not checked for
    watertightness (see :func:`surface_check`), so that callers can report or repair.

    Args:
        path: File to read.
        keep_largest_shell: Drop every connected shell but the largest (stray blobs and
            doubled triangles that segmentation exports often contain; logged).

    Returns:
        The surface with duplicate vertices merged and unused vertices removed.

    Raises:
        InputError: Missing file, unsupported suffix, unreadable file or no triangles.
    """
    import pyvista as pv

    file = Path(path)
    if not file.is_file():
        raise InputError(f"surface file not found: {file}",
                         hint="check the path (STL, PLY, OBJ, VTK or VTP)")
    if file.suffix.lower() not in SURFACE_SUFFIXES:
        raise InputError(f"unsupported surface format {file.suffix!r}: {file}",
                         hint=f"convert it to one of {', '.join(SURFACE_SUFFIXES)}")
    try:
        data = pv.read(str(file))
    except Exception as exc:  # VTK readers raise assorted exception types
        raise InputError(f"could not read surface {file}: {exc}",
                         hint="check that the file is a valid triangle mesh") from exc
    if not isinstance(data, pv.PolyData):
        data = data.extract_surface(algorithm=None)
    poly = data.triangulate().clean(tolerance=0.0)
    if poly.n_cells == 0:
        raise InputError(f"surface file {file} contains no triangles",
                         hint="export the surface as a triangle mesh")
    surface = _to_surface(poly)
    if keep_largest_shell:
        surface = largest_shell(surface)
    _LOG.info("read_surface: %s: %d points, %d triangles", file.name,
              surface.points.shape[0], surface.triangles.shape[0])
    return surface


def remesh_uniform(surface: SurfaceMesh, edge_mm: float) -> SurfaceMesh:
    """Remesh a closed surface into near-equilateral triangles of a given edge length.

    Voronoi clustering of the surface (ACVD, Valette & Chassery 2004, Comput Graph Forum
    23:381; the ``pyacvd`` package) places ``2 A / (sqrt(3) h^2)`` vertices evenly over the
    area ``A``. Marching-cubes surfaces decimated to a size otherwise keep slivers that no
    volume optimiser can remove, because boundary triangles are fixed.

    Args:
        surface: Closed, manifold input surface.
        edge_mm: Target edge length in mm.

    Returns:
        The remeshed surface.

    Raises:
        MeshingError: when the clustering does not give a closed manifold surface.
    """
    import pyacvd
    import pyvista as pv

    if not edge_mm > 0.0:
        raise ValueError(f"edge length must be positive, got {edge_mm}")
    faces = np.hstack([np.full((surface.triangles.shape[0], 1), 3), surface.triangles])
    poly = pv.PolyData(surface.points, faces.ravel())
    target = max(int(2.0 * float(poly.area) / (np.sqrt(3.0) * edge_mm**2)), 50)
    with warnings.catch_warnings():
        # pyacvd calls a pyvista accessor that pyvista has deprecated; harmless here.
        warnings.simplefilter("ignore")
        clustering = pyacvd.Clustering(poly)
        # Clusters need several input vertices each to be well shaped.
        while clustering.mesh.n_points < 4 * target:
            clustering.subdivide(2)
        clustering.cluster(target)
        remeshed = clustering.create_mesh()
    # Cluster centroids lie inside a convex surface: project them back onto it, so that the
    # remeshed surface encloses the same volume (to its chordal error).
    closest: Any = poly.find_closest_cell(np.asarray(remeshed.points),
                                          return_closest_point=True)
    result = SurfaceMesh(np.asarray(closest[1], dtype=np.float64), _triangles_of(remeshed))
    problem = surface_check(result)
    if problem is not None:
        raise MeshingError(f"uniform surface remeshing at {edge_mm} mm failed: {problem}",
                           hint="use a smaller element size or a smoother mask")
    return result
