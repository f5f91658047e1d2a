"""Mask cleaning, iso-surface extraction, surface checks and surface reading."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import rotation

from meshing.errors import InputError, MeshingError
from meshing.surface import (
    clean_mask,
    clip_surface,
    curvature_sizes,
    extract_surface,
    is_watertight,
    largest_shell,
    principal_curvatures,
    read_surface,
    remesh_sized,
    remesh_uniform,
    shell_labels,
    surface_check,
    surface_volume,
)
from meshing.types import ImageGrid, SurfaceMesh

RADIUS = 20.0
VOXEL = 0.8
SphereMask = tuple[np.ndarray, ImageGrid]




def _world_of_voxels(grid: ImageGrid) -> np.ndarray:
    ijk = np.indices(grid.shape).reshape(3, -1).T
    return grid.index_to_world(ijk).reshape(*grid.shape, 3)


def _volume_centroid(surface: SurfaceMesh) -> np.ndarray:
    """Centroid of the enclosed solid (sum over signed tetrahedra from the origin)."""
    p = surface.points[surface.triangles]
    vol = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])) / 6.0
    return (vol[:, None] * p.sum(axis=1) / 4.0).sum(axis=0) / vol.sum()


def _unit_cube() -> SurfaceMesh:
    pts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                    [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=float)
    tri = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                    [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    return SurfaceMesh(pts, tri)


@pytest.fixture(scope="module")
def sphere_mask() -> SphereMask:
    n = 60
    grid = ImageGrid((n, n, n), np.full(3, VOXEL), np.full(3, -(n - 1) / 2 * VOXEL))
    mask = np.linalg.norm(_world_of_voxels(grid), axis=-1) < RADIUS
    return mask, grid


# --- clean_mask ---------------------------------------------------------------------------

def test_clean_mask_keeps_largest_blob_and_fills_cavity() -> None:
    mask = np.zeros((30, 30, 30), dtype=np.uint8)
    mask[2:14, 2:14, 2:14] = 1          # 12^3 = 1728 voxels, with a cavity below
    mask[6:9, 6:9, 6:9] = 0             # 27-voxel closed cavity
    mask[20:24, 20:24, 20:24] = 1       # 64-voxel second blob
    mask[14, 14, 14] = 1                # touches the big cube only through a corner (26-conn.)
    out = clean_mask(mask)
    assert out.dtype == np.bool_
    assert int(out.sum()) == 1728 + 1
    assert out[7, 7, 7] and not out[21, 21, 21]


def test_clean_mask_errors_and_border_warning(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(InputError, match="empty") as err:
        clean_mask(np.zeros((5, 5, 5)))
    assert err.value.hint
    with pytest.raises(InputError, match="fills the whole"):
        clean_mask(np.ones((5, 5, 5)))
    with pytest.raises(InputError, match="3-D"):
        clean_mask(np.ones((5, 5)))
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[0:3, 2:5, 2:5] = True
    with caplog.at_level(logging.WARNING, logger="meshing.surface"):
        out = clean_mask(mask)
    assert int(out.sum()) == 27
    assert any("touches the image border" in r.getMessage() for r in caplog.records)


# --- extract_surface ----------------------------------------------------------------------

def test_voxel_sphere_surface_volume_and_watertight(sphere_mask: SphereMask) -> None:
    mask, grid = sphere_mask
    surface = extract_surface(clean_mask(mask), grid)
    exact = 4.0 / 3.0 * math.pi * RADIUS**3
    assert surface_check(surface) is None
    assert is_watertight(surface)
    assert abs(surface_volume(surface) / exact - 1.0) < 0.015
    radii = np.linalg.norm(surface.points, axis=1)
    assert abs(radii.mean() - RADIUS) < 0.5 * VOXEL
    # Euler characteristic of one closed sphere-like shell: V - E + F = 2.
    v, f = surface.points.shape[0], surface.triangles.shape[0]
    assert v - 3 * f // 2 + f == 2


def test_taubin_smoothing_preserves_volume(sphere_mask: SphereMask) -> None:
    mask, grid = sphere_mask
    raw = extract_surface(mask, grid, taubin_iterations=0)
    smooth = extract_surface(mask, grid, taubin_iterations=40)
    v_raw, v_smooth = surface_volume(raw), surface_volume(smooth)
    assert abs(v_smooth / v_raw - 1.0) < 0.01
    # ... while it really smooths: the radial scatter of the vertices drops.
    scatter_raw = np.linalg.norm(raw.points, axis=1).std()
    scatter_smooth = np.linalg.norm(smooth.points, axis=1).std()
    assert scatter_smooth < 0.8 * scatter_raw


def test_decimation_towards_target_edge(sphere_mask: SphereMask) -> None:
    mask, grid = sphere_mask
    full = extract_surface(mask, grid)
    coarse = extract_surface(mask, grid, target_edge_mm=2.0)
    assert is_watertight(coarse)
    assert coarse.triangles.shape[0] < full.triangles.shape[0] / 4
    p = coarse.points[coarse.triangles]
    mean_edge = np.linalg.norm(p - np.roll(p, 1, axis=1), axis=2).mean()
    assert 1.2 < mean_edge < 2.6
    exact = 4.0 / 3.0 * math.pi * RADIUS**3
    assert abs(surface_volume(coarse) / exact - 1.0) < 0.015


@pytest.mark.parametrize("reflect", [False, True])
def test_rotated_anisotropic_grid_places_surface_in_world(reflect: bool) -> None:
    """An ellipsoid aligned with the WORLD axes, sampled on a rotated, anisotropic grid."""
    direction = rotation([1.0, 2.0, 3.0], 35.0)
    if reflect:
        direction = direction @ np.diag([1.0, -1.0, 1.0])  # left-handed index frame
    spacing = np.array([0.6, 0.8, 1.1])
    centre = np.array([12.0, -30.0, 55.0])
    semi = np.array([16.0, 10.0, 6.0])
    n = (70, 55, 45)
    origin = centre - direction @ (spacing * (np.array(n) - 1) / 2.0) + np.array([1.3, -0.7, 0.4])
    grid = ImageGrid(n, spacing, origin, direction)
    x = _world_of_voxels(grid) - centre
    mask = (((x / semi) ** 2).sum(axis=-1) < 1.0)
    surface = extract_surface(clean_mask(mask), grid)
    assert is_watertight(surface)
    assert surface_volume(surface) > 0.0
    exact = 4.0 / 3.0 * math.pi * semi.prod()
    assert abs(surface_volume(surface) / exact - 1.0) < 0.03
    np.testing.assert_allclose(_volume_centroid(surface), centre, atol=0.5 * spacing.min())
    extent = surface.points.max(axis=0) - surface.points.min(axis=0)
    np.testing.assert_allclose(extent, 2.0 * semi, atol=spacing.max())


def test_extract_surface_errors() -> None:
    grid = ImageGrid((6, 6, 6), np.ones(3), np.zeros(3))
    with pytest.raises(InputError, match="empty"):
        extract_surface(np.zeros((6, 6, 6)), grid)
    with pytest.raises(InputError, match="differs from grid"):
        extract_surface(np.ones((5, 6, 6)), grid)
    single = np.zeros((6, 6, 6), dtype=bool)
    single[3, 3, 3] = True
    # One voxel blurred by sigma = 2 voxels never reaches 0.5: no surface.
    with pytest.raises(MeshingError, match="no surface"):
        extract_surface(single, grid, smoothing_sigma_vox=2.0)


def test_surface_touching_border_is_closed() -> None:
    grid = ImageGrid((10, 10, 10), np.ones(3), np.zeros(3))
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[:, 2:8, 2:8] = True  # runs through the whole image along i
    surface = extract_surface(mask, grid)
    assert is_watertight(surface)
    assert surface.points[:, 0].min() < 0.0 and surface.points[:, 0].max() > 9.0


# --- checks and volume --------------------------------------------------------------------

def test_surface_volume_and_checks_on_cube() -> None:
    cube = _unit_cube()
    assert surface_volume(cube) == pytest.approx(1.0, abs=1e-12)
    assert is_watertight(cube)
    flipped = SurfaceMesh(cube.points, cube.triangles[:, ::-1])
    assert surface_volume(flipped) == pytest.approx(-1.0, abs=1e-12)
    assert "inwards" in (surface_check(flipped) or "")
    holed = SurfaceMesh(cube.points, cube.triangles[1:])
    assert "single triangle" in (surface_check(holed) or "")
    one_flipped = cube.triangles.copy()
    one_flipped[0] = one_flipped[0, ::-1]
    assert "same direction" in (surface_check(SurfaceMesh(cube.points, one_flipped)) or "")
    doubled = np.vstack([cube.triangles, cube.triangles[:1, ::-1]])
    assert "duplicated" in (surface_check(SurfaceMesh(cube.points, doubled)) or "")
    degenerate = np.vstack([cube.triangles, [[0, 0, 1]]])
    assert "degenerate" in (surface_check(SurfaceMesh(cube.points, degenerate)) or "")


def test_largest_shell_drops_small_pieces() -> None:
    cube = _unit_cube()
    big = SurfaceMesh(cube.points * 3.0, cube.triangles)
    two = SurfaceMesh(np.vstack([big.points, cube.points + 10.0]),
                      np.vstack([big.triangles, cube.triangles + 8]))
    num, labels = shell_labels(two)
    assert num == 2 and np.bincount(labels).tolist() == [12, 12]
    kept = largest_shell(two)
    assert kept.points.shape == (8, 3)
    assert surface_volume(kept) == pytest.approx(27.0)


# --- read_surface -------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".stl", ".ply", ".obj"])
def test_read_surface_merges_duplicate_points(tmp_path: Path, suffix: str) -> None:
    import pyvista as pv

    cube = _unit_cube()
    # Unshared vertices (as an STL stores them): 36 points for 12 triangles.
    points = cube.points[cube.triangles].reshape(-1, 3) * 5.0 + np.array([1.0, 2.0, 3.0])
    faces = np.column_stack([np.full(12, 3), np.arange(36).reshape(12, 3)]).ravel()
    path = tmp_path / f"cube{suffix}"
    pv.PolyData(points, faces).save(str(path))
    surface = read_surface(path)
    assert surface.points.shape == (8, 3)
    assert surface.triangles.shape == (12, 3)
    assert is_watertight(surface)
    assert surface_volume(surface) == pytest.approx(125.0, rel=1e-6)


def test_read_surface_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_surface(tmp_path / "missing.stl")
    bad = tmp_path / "mesh.xyz"
    bad.write_text("1 2 3\n")
    with pytest.raises(InputError, match="unsupported"):
        read_surface(bad)


# --- real anatomy -------------------------------------------------------------------------

@pytest.mark.data
def test_real_femur_surfaces_are_closed(shared_data: Path) -> None:
    files = sorted((shared_data / "femur_surfaces").glob("*.stl"))
    assert len(files) >= 3
    for path in files:
        surface = read_surface(path)
        assert surface_check(surface) is None, path.name
        volume = surface_volume(surface)
        extent = surface.points.max(axis=0) - surface.points.min(axis=0)
        # Whole adult femurs: 400-420 mm long, 4.0-4.8e5 mm^3 of bone envelope.
        assert 400.0 < extent.max() < 420.0, path.name
        assert 4.0e5 < volume < 4.8e5, path.name


# --- several bones vs fragments -----------------------------------------------------------

def test_clean_mask_refuses_two_bones_and_names_sizes() -> None:
    mask = np.zeros((40, 20, 20), dtype=bool)
    mask[2:14, 2:14, 2:14] = True      # 1728 voxels
    mask[20:30, 2:12, 2:12] = True     # 1000 voxels: 58% of the largest
    grid = ImageGrid(mask.shape, np.array([0.5, 0.5, 2.0]), np.zeros(3))
    with pytest.raises(InputError, match="2 separate pieces") as err:
        clean_mask(mask, grid=grid)
    message = str(err.value)
    assert "1728, 1000 voxels (864, 500 mm^3)" in message and "58%" in message
    assert "select the label of one bone" in err.value.hint and "crop" in err.value.hint
    # The threshold is configurable; at 1.0 the largest piece is kept anyway.
    assert int(clean_mask(mask, max_second_fraction=1.0).sum()) == 1728
    with pytest.raises(InputError, match="max_second_fraction"):
        clean_mask(mask, max_second_fraction=-1.0)


def test_clean_mask_drops_small_fragments_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    mask = np.zeros((40, 20, 20), dtype=bool)
    mask[2:14, 2:14, 2:14] = True      # 1728 voxels
    mask[20:25, 2:7, 2:7] = True       # 125 voxels: 7% of the largest
    mask[30, 15, 15] = True            # a speck
    with caplog.at_level(logging.WARNING, logger="meshing.surface"):
        out = clean_mask(mask)
    assert int(out.sum()) == 1728
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "dropped 2 small fragment(s) of 126 voxels" in warning


def test_mesh_from_mask_refuses_both_femurs() -> None:
    from meshing.volume import mesh_from_mask

    grid = ImageGrid((40, 20, 20), np.ones(3), np.zeros(3))
    mask = np.zeros(grid.shape, dtype=bool)
    mask[2:14, 4:16, 4:16] = True
    mask[24:36, 4:16, 4:16] = True
    with pytest.raises(InputError, match="several bones"):
        mesh_from_mask(mask, grid, size_mm=3.0)


@pytest.mark.data
def test_real_segmentation_one_femur_passes_both_femurs_refused(shared_data: Path) -> None:
    from meshing.imaging import read_labels

    labels = read_labels(shared_data / "ct" / "totalseg_example_seg.nii.gz")
    right = clean_mask(labels.labels == 76, grid=labels.grid)
    assert right.sum() >= 0.99 * np.count_nonzero(labels.labels == 76)
    with pytest.raises(InputError, match=r"2 separate pieces.*mm\^3"):
        clean_mask(np.isin(labels.labels, [75, 76]), grid=labels.grid)


# --- curvature, sized remeshing, clipping --------------------------------------------------

def _icosphere(radius: float, nsub: int = 5) -> SurfaceMesh:
    import pyvista as pv

    poly = pv.Icosphere(radius=radius, nsub=nsub)
    faces = np.asarray(poly.faces, dtype=np.int64).reshape(-1, 4)[:, 1:]
    return SurfaceMesh(np.array(poly.points), faces)


def _edge_lengths(surface: SurfaceMesh) -> tuple[np.ndarray, np.ndarray]:
    """(per-triangle mean edge length, triangle centroids)."""
    p = surface.points[surface.triangles]
    return (np.linalg.norm(p - np.roll(p, 1, axis=1), axis=2).mean(axis=1), p.mean(axis=1))


def test_principal_curvatures_closed_forms() -> None:
    sphere = _icosphere(20.0)
    kappa = principal_curvatures(sphere)
    np.testing.assert_allclose(kappa, 1.0 / 20.0, rtol=5e-3)
    # Ellipsoid with semi-axes (a, b, c) = (20, 10, 5): at the tip (a, 0, 0) the principal
    # curvatures are a / b^2 and a / c^2.
    ellipsoid = SurfaceMesh(sphere.points * np.array([1.0, 0.5, 0.25]), sphere.triangles)
    tip = int(np.argmax(ellipsoid.points[:, 0]))
    np.testing.assert_allclose(principal_curvatures(ellipsoid)[tip], [0.8, 0.2], rtol=0.03)
    # Concave regions are negative: the inner side of a torus.
    import pyvista as pv

    torus = pv.ParametricTorus(ringradius=20.0, crosssectionradius=5.0).triangulate().clean()
    t_surface = SurfaceMesh(np.array(torus.points), torus.faces.reshape(-1, 4)[:, 1:])
    if surface_volume(t_surface) < 0:
        t_surface = SurfaceMesh(t_surface.points, t_surface.triangles[:, ::-1])
    k = principal_curvatures(t_surface)
    inner = np.argmin(np.linalg.norm(t_surface.points[:, :2], axis=1))
    outer = np.argmax(np.linalg.norm(t_surface.points[:, :2], axis=1))
    # Tube curvature 1/5 everywhere; around the axis 1/25 outside and -1/15 inside.
    np.testing.assert_allclose(k[outer], [0.2, 1.0 / 25.0], rtol=0.05)
    np.testing.assert_allclose(sorted(k[inner]), [-1.0 / 15.0, 0.2], rtol=0.05)


def test_remesh_sized_follows_local_sizes() -> None:
    sphere = _icosphere(20.0, nsub=5)
    sizes = np.where(sphere.points[:, 2] > 0.0, 1.5, 3.0)
    remeshed = remesh_sized(sphere, sizes)
    assert surface_check(remeshed) is None
    edge, centre = _edge_lengths(remeshed)
    assert edge[centre[:, 2] > 5.0].mean() == pytest.approx(1.5, rel=0.15)
    assert edge[centre[:, 2] < -5.0].mean() == pytest.approx(3.0, rel=0.15)
    assert surface_volume(remeshed) == pytest.approx(surface_volume(sphere), rel=0.01)
    with pytest.raises(InputError, match="sizes for"):
        remesh_sized(sphere, sizes[:-1])
    with pytest.raises(InputError, match="positive"):
        remesh_sized(sphere, np.zeros_like(sizes))


def test_curvature_sizes_refine_tight_curvature_and_are_graded() -> None:
    sphere = _icosphere(20.0)
    ellipsoid = SurfaceMesh(sphere.points * np.array([1.0, 0.5, 0.25]), sphere.triangles)
    sizes = curvature_sizes(ellipsoid, size_mm=3.0, size_min_mm=0.5, elements_per_circle=16,
                            grading=0.3)
    assert sizes.shape == (ellipsoid.points.shape[0],)
    assert sizes.min() >= 0.5 and sizes.max() <= 3.0
    tip = int(np.argmax(ellipsoid.points[:, 0]))   # R = 1.25 mm -> 2 pi R / 16 = 0.49
    flat = int(np.argmax(ellipsoid.points[:, 2]))  # R = 40 mm (at the pole of the c axis)
    assert sizes[tip] < 0.7 and sizes[flat] == pytest.approx(3.0)
    # Graded: sizes grow by at most ~grading per mm (plus the sampling step).
    d = np.linalg.norm(ellipsoid.points[tip] - ellipsoid.points, axis=1)
    assert np.all(sizes <= sizes[tip] + 0.3 * d + 1.5)
    remeshed = remesh_sized(ellipsoid, sizes)
    edge, centre = _edge_lengths(remeshed)
    assert edge[centre[:, 0] > 18.0].mean() < 0.5 * edge[np.abs(centre[:, 0]) < 5.0].mean()
    with pytest.raises(InputError, match="size_min_mm"):
        curvature_sizes(ellipsoid, size_mm=1.0, size_min_mm=2.0)


def test_clip_surface_caps_the_cut() -> None:
    sphere = _icosphere(20.0)
    upper = clip_surface(sphere, (0.0, 0.0, 5.0), (0.0, 0.0, 1.0))
    assert surface_check(upper) is None
    assert upper.points[:, 2].min() == pytest.approx(5.0, abs=1e-6)
    h = 15.0  # spherical cap of height h: pi h^2 (3 R - h) / 3
    assert surface_volume(upper) == pytest.approx(math.pi * h**2 * (60.0 - h) / 3.0, rel=0.01)
    lower = clip_surface(sphere, (0.0, 0.0, 5.0), (0.0, 0.0, -1.0))
    assert surface_volume(lower) + surface_volume(upper) == pytest.approx(
        surface_volume(sphere), rel=1e-6)
    assert clip_surface(sphere, (0.0, 0.0, -30.0), (0.0, 0.0, 1.0)) is sphere
    with pytest.raises(InputError, match="nothing"):
        clip_surface(sphere, (0.0, 0.0, 30.0), (0.0, 0.0, 1.0))


def test_orientation_repair_flips_stray_triangles() -> None:
    from meshing.surface import _orient_consistently

    cube = _unit_cube()
    tri = cube.triangles.copy()
    tri[[0, 5, 9]] = tri[[0, 5, 9]][:, ::-1]
    assert "same direction" in (surface_check(SurfaceMesh(cube.points, tri)) or "")
    fixed = _orient_consistently(SurfaceMesh(cube.points, tri))
    assert surface_check(fixed) is None and surface_volume(fixed) == pytest.approx(1.0)
    inward = _orient_consistently(SurfaceMesh(cube.points, cube.triangles[:, ::-1]))
    assert surface_volume(inward) == pytest.approx(1.0)


def test_remeshing_a_sharp_cut_is_refused_not_passed_on() -> None:
    import pyvista as pv

    # A thin disc: two flat faces meeting a narrow rim at sharp edges all round.
    poly = pv.Cylinder(radius=20.0, height=1.0, resolution=256).triangulate().clean()
    disc = SurfaceMesh(np.array(poly.points), poly.faces.reshape(-1, 4)[:, 1:])
    if surface_volume(disc) < 0:
        disc = SurfaceMesh(disc.points, disc.triangles[:, ::-1])
    with pytest.raises(MeshingError, match=r"sliver|folded|edges") as err:
        remesh_uniform(disc, 3.0)
    assert "remesh_boundary=True" in err.value.hint
