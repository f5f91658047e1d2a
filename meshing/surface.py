"""Binary label mask -> watertight, outward-oriented triangulated surface.

The pipeline is: :func:`clean_mask` (largest 26-connected component, cavities filled) ->
:func:`extract_surface` (pad, light Gaussian smoothing, iso-surface at 0.5 in voxel-index
space, mapping to world through :meth:`ImageGrid.index_to_world`, volume-preserving
windowed-sinc smoothing, optional decimation, watertightness check). :func:`read_surface`
loads a user surface (STL/PLY/OBJ) instead, and :func:`clip_surface` cuts one with a plane.

Before volume meshing a surface is remeshed into near-equilateral triangles by clustering
(ACVD): :func:`remesh_uniform` at one edge length, :func:`remesh_sized` at per-vertex
lengths, e.g. from :func:`curvature_sizes` (finer where the surface is curved tightly).
A remeshed surface with slivers or folds (sharp edges clustering cannot follow) is refused
with :class:`MeshingError` rather than handed to gmsh.

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

from core.types import BoolArray
from meshing.errors import InputError, MeshingError
from meshing.types import ImageGrid, SurfaceMesh

__all__ = [
    "clean_mask",
    "clip_surface",
    "curvature_sizes",
    "extract_surface",
    "is_watertight",
    "largest_shell",
    "principal_curvatures",
    "read_surface",
    "remesh_sized",
    "remesh_uniform",
    "shell_labels",
    "surface_check",
    "surface_volume",
]

_LOG = logging.getLogger(__name__)


#: File suffixes :func:`read_surface` accepts.
SURFACE_SUFFIXES = (".stl", ".ply", ".obj", ".vtk", ".vtp")


#: Default of ``clean_mask(max_second_fraction=...)``: a second piece of the mask larger than
#: this fraction of the largest is taken as a second structure (another bone), not a fragment.
MAX_SECOND_FRACTION = 0.1


def clean_mask(
    mask: npt.ArrayLike,
    *,
    grid: ImageGrid | None = None,
    max_second_fraction: float = MAX_SECOND_FRACTION,
) -> BoolArray:
    """Keep the largest 26-connected component of a binary mask and fill its cavities.

    A mask of several bones (both femurs, femur and pelvis) is refused rather than silently
    reduced to its largest piece: when the second-largest 26-connected piece holds more than
    ``max_second_fraction`` of the voxels of the largest, :class:`InputError` names the
    piece sizes. Smaller pieces (segmentation specks, islands cut off by the image border)
    are dropped with a WARNING.

    Args:
        mask: (ni, nj, nk) array, non-zero = bone. Any dtype (bool, int labels 0/1).
        grid: Geometry of the mask, only used to report piece sizes in mm^3 as well.
        max_second_fraction: Largest accepted size of the second piece relative to the
            largest (default 0.1); 1.0 or more keeps the largest piece whatever the others.

    Returns:
        (ni, nj, nk) bool array: the largest 26-connected component with every internal hole
        and cavity (background not 6-connected to the image border) filled, i.e. a solid.

    Raises:
        InputError: The mask is not 3-D, is empty, fills the whole image, or holds a second
            piece larger than ``max_second_fraction`` of the largest.
    """
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise InputError(f"label mask must be 3-D, got shape {arr.shape}",
                         hint="pass the (ni, nj, nk) voxel array of one structure")
    if not max_second_fraction >= 0.0:
        raise InputError(f"max_second_fraction must be >= 0, got {max_second_fraction}",
                         hint="use e.g. 0.1 (a second piece above 10% of the largest is an "
                              "error)")
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
        order = np.argsort(sizes)[::-1][:num]
        largest, second = int(sizes[order[0]]), int(sizes[order[1]])
        if second > max_second_fraction * largest:
            raise InputError(
                f"label mask holds {num} separate pieces: the largest are "
                f"{_describe_pieces(sizes[order[:5]], grid)}; the second is "
                f"{100.0 * second / largest:.0f}% of the largest, so the mask looks like "
                "several bones, not one bone with fragments",
                hint="select the label of one bone (e.g. labels == 76 for femur_right; "
                     "meshing.segmentation.select_femur) or crop the image to one bone "
                     "(meshing.segmentation.crop_to_mask); max_second_fraction=1 keeps the "
                     "largest piece anyway")
        binary = components == int(order[0])
        dropped = count - largest
        _LOG.warning("label mask: dropped %d small fragment(s) of %s (%.2f%% of the mask); "
                     "kept the largest piece of %s", num - 1,
                     _describe_pieces(np.array([dropped]), grid), 100.0 * dropped / count,
                     _describe_pieces(np.array([largest]), grid))
    solid = np.asarray(ndimage.binary_fill_holes(binary), dtype=bool)
    filled = int(np.count_nonzero(solid)) - int(np.count_nonzero(binary))
    if filled:
        _LOG.info("clean_mask: filled %d cavity voxels", filled)
    if _touches_border(solid):
        _LOG.warning("label mask touches the image border: the bone may be cut off there and "
                     "its surface will be closed flat at the border (crop or pad the image "
                     "so the whole bone lies inside if this is not intended)")
    return solid


def _describe_pieces(sizes: npt.NDArray[np.int64], grid: ImageGrid | None) -> str:
    """'1200, 300 voxels' or, with a grid, '1200, 300 voxels (960, 240 mm^3)'."""
    voxels = ", ".join(str(int(v)) for v in sizes)
    if grid is None:
        return f"{voxels} voxels"
    voxel_mm3 = float(np.prod(grid.spacing))
    return f"{voxels} voxels ({', '.join(f'{v * voxel_mm3:.0f}' for v in sizes)} mm^3)"


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
    if not edge_mm > 0.0:
        raise ValueError(f"edge length must be positive, got {edge_mm}")
    return _remesh_acvd(surface, np.full(surface.points.shape[0], float(edge_mm)),
                        f"at {edge_mm} mm")


def remesh_sized(surface: SurfaceMesh, sizes_mm: npt.ArrayLike) -> SurfaceMesh:
    """Remesh a closed surface into near-equilateral triangles of locally varying size.

    Weighted ACVD: each input vertex carries the density ``1 / h^2`` of its target edge
    length ``h``, so every cluster (output vertex) covers about the same weighted area and
    the output edges are about ``h`` long where the input asks for ``h``. The target sizes
    should vary smoothly (see the grading of :func:`curvature_sizes`); the output has about
    ``sum(2 A_i / (sqrt(3) h_i^2))`` vertices over the vertex areas ``A_i``.

    Args:
        surface: Closed, manifold input surface.
        sizes_mm: (n,) target edge length at each vertex of ``surface`` in mm (all > 0).

    Returns:
        The remeshed surface.

    Raises:
        InputError: ``sizes_mm`` has the wrong length or a non-positive value.
        MeshingError: when the clustering does not give a closed manifold surface.
    """
    sizes = np.asarray(sizes_mm, dtype=np.float64).reshape(-1)
    if sizes.shape[0] != surface.points.shape[0]:
        raise InputError(f"{sizes.shape[0]} sizes for {surface.points.shape[0]} vertices",
                         hint="pass one target edge length per surface vertex")
    if not np.all(np.isfinite(sizes)) or np.any(sizes <= 0.0):
        raise InputError("target edge lengths must be finite and positive",
                         hint="clip the sizes to [size_min_mm, size_mm]")
    return _remesh_acvd(surface, sizes,
                        f"with sizes {sizes.min():.3g}-{sizes.max():.3g} mm")


def _remesh_acvd(surface: SurfaceMesh, sizes: npt.NDArray[np.float64],
                 what: str) -> SurfaceMesh:
    """Weighted ACVD remeshing towards per-vertex edge lengths ``sizes`` (see remesh_sized)."""
    import pyacvd
    import pyvista as pv
    from scipy.spatial import cKDTree

    poly = pv.PolyData(surface.points, _faces_from_triangles(surface.triangles))
    uniform = bool(np.ptp(sizes) == 0.0)
    if uniform:
        target = int(2.0 * float(poly.area) / (math.sqrt(3.0) * float(sizes[0]) ** 2))
    else:
        target = int(np.sum(2.0 * _vertex_areas(surface) / (math.sqrt(3.0) * sizes**2)))
    target = max(target, 50)
    with warnings.catch_warnings():
        # pyacvd calls a pyvista accessor that pyvista has deprecated; harmless here.
        warnings.simplefilter("ignore")
        clustering = pyacvd.Clustering(poly.copy())
        # Clusters need several input vertices each to be well shaped.
        while clustering.mesh.n_points < 4 * target:
            clustering.subdivide(2)
        if not uniform:
            # pyacvd's own ``weights`` argument scales only the weighted centroids, not the
            # cluster areas, so the density is applied to both here.
            nearest = cKDTree(surface.points).query(np.asarray(clustering.mesh.points))[1]
            density = sizes[nearest] ** -2.0
            clustering.area = clustering.area * density
            clustering.wcent = clustering.wcent * density[:, np.newaxis]
        problem: str | None = "not remeshed"
        for factor in _ACVD_RETRY_FACTORS:
            result = _cluster_once(clustering, poly, max(int(target * factor), 50))
            problem = _remesh_defect(result)
            if problem is None:
                return result
            _LOG.info("surface remeshing %s with %d clusters: %s", what,
                      int(target * factor), problem)
    raise MeshingError(f"surface remeshing {what} failed: {problem}",
                       hint="the surface may have sharp edges (e.g. a flat cut) that uniform "
                            "remeshing cannot follow: let gmsh remesh it "
                            "(tetrahedralize(..., remesh_boundary=True)), or use a smaller "
                            "element size or a smoother mask")


#: Cluster counts tried by the ACVD remeshing, relative to the target: a clustering that
#: leaves a defect at a sharp fold usually does not with a slightly different count.
_ACVD_RETRY_FACTORS = (1.0, 1.03, 0.97)
#: Defects refused in a remeshed surface: a triangle angle below this (slivers)...
_MIN_TRIANGLE_ANGLE_DEG = 5.0
#: ... or neighbouring triangles whose normals point this much apart (a fold back onto
#: itself; gmsh's HXT can crash on such a boundary).
_FOLD_NORMAL_DOT = -0.5


def _cluster_once(clustering: Any, poly: Any, count: int) -> SurfaceMesh:
    """One ACVD clustering into ``count`` clusters -> oriented surface on the input."""
    clustering.cluster(count)
    # moveclus=False: pyacvd's own move of the centroids onto the surface (a 1000-face
    # neighbour search and ray cast per cluster) took >95% of the remeshing time; the
    # closest-point projection below does that job.
    remeshed = clustering.create_mesh(moveclus=False)
    # Cluster centroids lie inside a convex surface: project them back onto it, so that the
    # remeshed surface encloses the same volume (to its chordal error).
    closest: Any = poly.find_closest_cell(np.asarray(remeshed.points),
                                          return_closest_point=True)
    return _orient_consistently(
        SurfaceMesh(np.asarray(closest[1], dtype=np.float64), _triangles_of(remeshed)))


def _remesh_defect(surface: SurfaceMesh) -> str | None:
    """Why a remeshed surface is unusable: not closed, slivers, or folds (None if fine)."""
    problem = surface_check(surface)
    if problem is not None:
        return problem
    p = surface.points[surface.triangles]
    smallest = 180.0
    for i in range(3):
        a, b = p[:, (i + 1) % 3] - p[:, i], p[:, (i + 2) % 3] - p[:, i]
        cosine = np.einsum("ij,ij->i", a, b) / np.maximum(
            np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)
        smallest = min(smallest, float(np.degrees(np.arccos(np.clip(cosine, -1, 1))).min()))
    if smallest < _MIN_TRIANGLE_ANGLE_DEG:
        return f"sliver triangles (smallest angle {smallest:.2f} deg)"
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-300)
    tri = surface.triangles
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1)
    owner = np.tile(np.arange(tri.shape[0]), 3)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    pairs = np.flatnonzero(np.all(edges[order][1:] == edges[order][:-1], axis=1))
    dots = np.einsum("ij,ij->i", normal[owner[order[pairs]]], normal[owner[order[pairs + 1]]])
    if dots.size and dots.min() < _FOLD_NORMAL_DOT:
        return (f"{int(np.sum(dots < _FOLD_NORMAL_DOT))} folded edges (neighbouring "
                f"triangles at {np.degrees(np.arccos(max(dots.min(), -1.0))):.0f} deg)")
    return None


def _orient_consistently(surface: SurfaceMesh) -> SurfaceMesh:
    """Flip triangles so that neighbours traverse shared edges oppositely, outward overall.

    pyacvd orients each output triangle by its cluster normals, which can flip a triangle
    where the surface folds sharply (the rim of a flat cut). On an edge-manifold surface
    (every edge in exactly two triangles) the flips are found by a breadth-first walk over
    the triangles; any other surface is returned unchanged for :func:`surface_check`.
    """
    tri = surface.triangles
    m = tri.shape[0]
    if m == 0:
        return surface
    directed = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    owner = np.tile(np.arange(m), 3)
    undirected = np.sort(directed, axis=1)
    order = np.lexsort((undirected[:, 1], undirected[:, 0]))
    sorted_edges = undirected[order]
    first = np.flatnonzero(np.all(sorted_edges[1:] == sorted_edges[:-1], axis=1))
    if first.shape[0] * 2 != directed.shape[0] or np.any(np.diff(first) < 2):
        return surface  # not edge-manifold: leave it to surface_check
    a, b = order[first], order[first + 1]
    same = directed[a, 0] == directed[b, 0]  # both traverse the edge the same way
    if not same.any():
        return _outward(surface)
    pair_i, pair_j = owner[a], owner[b]
    graph = sparse.coo_matrix((np.ones(a.shape[0], dtype=np.int8), (pair_i, pair_j)),
                              shape=(m, m))
    key = np.minimum(pair_i, pair_j) * m + np.maximum(pair_i, pair_j)
    key_order = np.argsort(key)
    flip = np.zeros(m, dtype=bool)
    visited = np.zeros(m, dtype=bool)
    for root in range(m):
        if visited[root]:
            continue
        nodes, parents = csgraph.breadth_first_order(graph, root, directed=False,
                                                     return_predecessors=True)
        visited[nodes] = True
        child = nodes[1:]
        parent = parents[child]
        wanted = np.minimum(parent, child) * m + np.maximum(parent, child)
        swap = same[key_order[np.searchsorted(key, wanted, sorter=key_order)]].tolist()
        flips = flip.tolist()
        for node, up, change in zip(child.tolist(), parent.tolist(), swap, strict=True):
            flips[node] = flips[up] ^ change  # parents come first in breadth-first order
        flip = np.asarray(flips, dtype=bool)
    fixed = SurfaceMesh(surface.points, np.where(flip[:, np.newaxis], tri[:, ::-1], tri))
    _LOG.info("surface: re-oriented %d of %d triangles", int(flip.sum()), m)
    return _outward(fixed)


def _outward(surface: SurfaceMesh) -> SurfaceMesh:
    """The surface with all triangles flipped if it encloses a negative volume."""
    if surface_volume(surface) < 0.0:
        return SurfaceMesh(surface.points, surface.triangles[:, ::-1])
    return surface


def _vertex_areas(surface: SurfaceMesh) -> npt.NDArray[np.float64]:
    """(n,) one third of the area of the triangles around each vertex, mm^2."""
    p = surface.points[surface.triangles]
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    return np.bincount(surface.triangles.ravel(), weights=np.repeat(area / 3.0, 3),
                       minlength=surface.points.shape[0])


def _vertex_normals(surface: SurfaceMesh) -> npt.NDArray[np.float64]:
    """(n, 3) unit area-weighted vertex normals (outward for an outward surface)."""
    p = surface.points[surface.triangles]
    face = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])  # length = 2 * area
    normals = np.zeros_like(surface.points)
    for corner in range(3):
        np.add.at(normals, surface.triangles[:, corner], face)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0.0)


def principal_curvatures(surface: SurfaceMesh, *, neighbours: int = 24
                         ) -> npt.NDArray[np.float64]:
    """Principal curvatures at each vertex from a local quadric fit.

    Around each vertex the ``neighbours`` nearest vertices are expressed in the tangent frame
    of the vertex normal and fitted (least squares) with
    ``w = a u^2 + b u v + c v^2 + d u + e v + f``; the eigenvalues of ``[[2a, b], [b, 2c]]``
    are the principal curvatures. Fitting over a neighbourhood (not the one-ring) makes the
    estimate robust to the small-scale noise of segmented and STL surfaces: its scale is
    the radius of the neighbourhood, about ``2.5`` edge lengths for 24 neighbours.

    Args:
        surface: Outward-oriented surface (vertex spacing sets the scale of the estimate).
        neighbours: Vertices in each fit (at least 6).

    Returns:
        (n, 2) float64 principal curvatures in 1/mm, largest first; positive where the
        surface is convex (a sphere of radius R gives ``1/R`` twice).
    """
    from scipy.spatial import cKDTree

    points = surface.points
    k = min(max(int(neighbours), 6), points.shape[0])
    _, idx = cKDTree(points).query(points, k=k)
    normal = _vertex_normals(surface)
    helper = np.where(np.abs(normal[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]),
                      np.array([[0.0, 1.0, 0.0]]))
    tangent_u = np.cross(normal, helper)
    tangent_u /= np.linalg.norm(tangent_u, axis=1, keepdims=True)
    tangent_v = np.cross(normal, tangent_u)
    d = points[idx] - points[:, np.newaxis, :]  # (n, k, 3)
    u = np.einsum("nkc,nc->nk", d, tangent_u)
    v = np.einsum("nkc,nc->nk", d, tangent_v)
    w = -np.einsum("nkc,nc->nk", d, normal)  # convex (outward normal) -> positive
    design = np.stack([u * u, u * v, v * v, u, v, np.ones_like(u)], axis=2)  # (n, k, 6)
    scale = np.maximum(np.abs(u).max(axis=1) + np.abs(v).max(axis=1), 1e-12)
    lhs = np.einsum("nki,nkj->nij", design, design)
    lhs += np.eye(6) * 1e-10 * (scale**4)[:, np.newaxis, np.newaxis]
    rhs = np.einsum("nki,nk->ni", design, w)
    coef = np.linalg.solve(lhs, rhs[:, :, np.newaxis])[:, :, 0]
    hessian = np.empty((points.shape[0], 2, 2))
    hessian[:, 0, 0] = 2.0 * coef[:, 0]
    hessian[:, 0, 1] = hessian[:, 1, 0] = coef[:, 1]
    hessian[:, 1, 1] = 2.0 * coef[:, 2]
    return np.asarray(np.linalg.eigvalsh(hessian)[:, ::-1])


def curvature_sizes(
    surface: SurfaceMesh,
    *,
    size_mm: float,
    size_min_mm: float,
    elements_per_circle: float = 16.0,
    grading: float = 0.3,
    sample_mm: float | None = None,
) -> npt.NDArray[np.float64]:
    """Target edge length at each vertex from the local curvature of the surface.

    ``h = 2 pi R / elements_per_circle`` with ``R`` the smallest radius of curvature (the
    same rule as gmsh's ``Mesh.MeshSizeFromCurvature``), clipped to
    ``[size_min_mm, size_mm]`` and graded so that it grows by at most ``grading`` mm per mm
    of distance (``h_i = min_j h_j + grading |x_i - x_j|``). Curvature is estimated by
    :func:`principal_curvatures` on a uniform remesh of the surface at ``sample_mm`` (default
    ``max(size_min_mm, size_mm / 2)``): that scale filters out voxel steps and STL noise
    that would otherwise read as tight curvature everywhere.

    Args:
        surface: Closed, outward-oriented surface.
        size_mm: Largest edge length (flat regions) in mm.
        size_min_mm: Smallest edge length in mm.
        elements_per_circle: Elements along a full circle of the local radius of curvature.
        grading: Largest growth of the size per unit distance (dimensionless, > 0).
        sample_mm: Sampling edge length of the curvature estimate in mm.

    Returns:
        (n,) float64 target edge lengths at the vertices of ``surface`` in mm, for
        :func:`remesh_sized`.

    Raises:
        InputError: Bad sizes, grading or elements per circle.
    """
    from scipy.spatial import cKDTree

    if not 0.0 < size_min_mm <= size_mm:
        raise InputError(f"sizes must satisfy 0 < size_min_mm ({size_min_mm}) <= size_mm "
                         f"({size_mm})", hint="pass positive sizes in mm, minimum first")
    if not (elements_per_circle > 0.0 and grading > 0.0):
        raise InputError(f"elements_per_circle ({elements_per_circle}) and grading "
                         f"({grading}) must be positive",
                         hint="use e.g. elements_per_circle=16, grading=0.3")
    sample_edge = max(size_min_mm, size_mm / 2.0) if sample_mm is None else float(sample_mm)
    sample = remesh_uniform(surface, sample_edge)
    kappa = np.abs(principal_curvatures(sample)).max(axis=1)
    sizes = np.clip(2.0 * math.pi / (elements_per_circle * np.maximum(kappa, 1e-12)),
                    size_min_mm, size_mm)
    # Grading: only samples closer than (size_mm - size_min_mm) / grading can lower a size.
    reach = (size_mm - size_min_mm) / grading
    if reach > 0.0:
        tree = cKDTree(sample.points)
        pairs = tree.sparse_distance_matrix(tree, reach, output_type="coo_matrix")
        candidate = sizes[pairs.col] + grading * pairs.data
        graded = sizes.copy()
        np.minimum.at(graded, pairs.row, candidate)
        sizes = graded
    nearest = cKDTree(sample.points).query(surface.points)[1]
    _LOG.info("curvature_sizes: %d samples at %.3g mm, sizes %.3g-%.3g mm (median %.3g)",
              sample.points.shape[0], sample_edge, sizes.min(), sizes.max(),
              float(np.median(sizes)))
    return np.asarray(sizes[nearest], dtype=np.float64)


def clip_surface(surface: SurfaceMesh, origin: npt.ArrayLike,
                 normal: npt.ArrayLike) -> SurfaceMesh:
    """Cut a closed surface with a plane and close the cut with a flat cap.

    Keeps the part on the side the ``normal`` points to (e.g. the proximal femur with the
    normal along the shaft towards the head). The cap is triangulated as it comes; remesh
    the result (:func:`remesh_uniform`) before meshing a volume as given.

    Args:
        surface: Closed, outward-oriented surface.
        origin: (3,) a point of the plane in mm.
        normal: (3,) plane normal pointing into the part to keep.

    Returns:
        The closed, outward-oriented part (largest shell if the cut leaves several).

    Raises:
        InputError: The plane misses the surface or a zero normal.
        MeshingError: The capped surface is not closed.
    """
    import pyvista as pv

    o = np.asarray(origin, dtype=np.float64).reshape(3)
    n = np.asarray(normal, dtype=np.float64).reshape(3)
    if not np.linalg.norm(n) > 0.0:
        raise InputError("clip plane normal is zero", hint="pass a direction, e.g. (0, 0, 1)")
    n = n / np.linalg.norm(n)
    side = (surface.points - o) @ n
    if side.max() <= 0.0:
        raise InputError("the clip plane leaves nothing of the surface on its normal side",
                         hint="flip the normal or move the origin into the surface")
    if side.min() >= 0.0:
        return surface
    poly = pv.PolyData(surface.points, _faces_from_triangles(surface.triangles))
    # pyvista's clip_closed_surface keeps the half-space the plane normal points into.
    clipped = poly.clip_closed_surface(normal=tuple(n), origin=tuple(o))
    result = largest_shell(_to_surface(clipped.triangulate().clean(tolerance=0.0)))
    if surface_volume(result) < 0.0:
        result = SurfaceMesh(result.points, result.triangles[:, ::-1])
    problem = surface_check(result)
    if problem is not None:
        raise MeshingError(f"capped surface after clipping is not closed: {problem}",
                           hint="move the plane away from thin or self-touching parts")
    return result
