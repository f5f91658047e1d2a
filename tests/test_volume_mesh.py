"""Tetrahedral meshing with gmsh, 10-node ordering, lesion tagging, mask -> mesh."""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meshing import volume
from meshing.errors import InputError
from meshing.quality import check_quality, mesh_quality
from meshing.surface import read_surface, surface_volume
from meshing.types import ImageGrid, LabelMap, SurfaceMesh, TetMesh

#: VTK tet10 edges (TetMesh convention): mid-node 4 + e sits on edge VTK_EDGES[e].
VTK_EDGES = [(0, 1), (1, 2), (0, 2), (0, 3), (1, 3), (2, 3)]


def _from_pyvista(poly: Any) -> SurfaceMesh:
    poly = poly.triangulate().clean()
    return SurfaceMesh(np.array(poly.points), poly.faces.reshape(-1, 4)[:, 1:])


@pytest.fixture(scope="module")
def sphere() -> SurfaceMesh:
    import pyvista as pv

    return _from_pyvista(pv.Icosphere(radius=20.0, nsub=4))


@pytest.fixture(scope="module")
def cylinder() -> SurfaceMesh:
    import pyvista as pv

    return _from_pyvista(pv.Cylinder(center=(0, 0, 0), direction=(0, 0, 1), radius=10.0,
                                     height=40.0, resolution=128, capping=True))


@pytest.fixture(scope="module")
def box() -> SurfaceMesh:
    import pyvista as pv

    return _from_pyvista(pv.Box(bounds=(0.0, 30.0, 0.0, 20.0, 0.0, 10.0), level=2))


def _edge_mid_distance(mesh: TetMesh) -> np.ndarray:
    """(m, 6) distance of each mid-node from the midpoint of its VTK edge."""
    p, c = mesh.points, mesh.cells
    return np.stack([np.linalg.norm(p[c[:, 4 + e]] - 0.5 * (p[c[:, a]] + p[c[:, b]]), axis=1)
                     for e, (a, b) in enumerate(VTK_EDGES)], axis=1)


@pytest.mark.parametrize("size_mm", [4.0, 2.0])
def test_sphere_volume_and_positive_tets(sphere: SurfaceMesh, size_mm: float) -> None:
    mesh = volume.tetrahedralize(sphere, size_mm=size_mm, optimize_netgen=False)
    exact = 4.0 / 3.0 * math.pi * 20.0**3
    vols = mesh.cell_volumes()
    assert mesh.order == 1 and mesh.cells.shape[1] == 4
    assert np.all(vols > 0.0)
    assert abs(vols.sum() / exact - 1.0) < 0.02
    assert np.all(mesh.cell_tags == 1)
    # Size honoured: about (volume / (h^3 / (6 sqrt 2))) * ~1.5 cells; never 10x off.
    regular = size_mm**3 / (6.0 * math.sqrt(2.0))
    assert 0.5 < mesh.num_cells * regular / exact < 4.0
    # Every node is used (orphans dropped) and nodes lie inside the sphere.
    assert np.unique(mesh.cells).shape[0] == mesh.num_nodes
    assert np.linalg.norm(mesh.points, axis=1).max() <= 20.0 + 1e-6
    quality = mesh_quality(mesh)
    assert quality.num_inverted == 0 and quality.min_dihedral_deg > 5.0
    check_quality(quality, min_dihedral_deg=5.0)


def test_sphere_refinement_converges(sphere: SurfaceMesh) -> None:
    exact = 4.0 / 3.0 * math.pi * 20.0**3
    errors = [abs(volume.tetrahedralize(sphere, size_mm=h, optimize_netgen=False)
                  .cell_volumes().sum() / exact - 1.0) for h in (4.0, 2.0)]
    assert errors[1] < 0.6 * errors[0]


@pytest.mark.parametrize("size_mm", [3.0, 1.5])
def test_cylinder_volume_and_sharp_caps(cylinder: SurfaceMesh, size_mm: float) -> None:
    mesh = volume.tetrahedralize(cylinder, size_mm=size_mm)
    exact = math.pi * 10.0**2 * 40.0
    vols = mesh.cell_volumes()
    assert np.all(vols > 0.0)
    assert abs(vols.sum() / exact - 1.0) < 0.02
    # The 90-degree rims survive classification: caps stay flat at z = +-20.
    assert mesh.points[:, 2].min() == pytest.approx(-20.0, abs=1e-9)
    assert mesh.points[:, 2].max() == pytest.approx(20.0, abs=1e-9)
    quality = mesh_quality(mesh)
    assert quality.num_inverted == 0 and quality.min_dihedral_deg > 8.0


def test_order2_box_mid_nodes_and_conformity(box: SurfaceMesh) -> None:
    mesh = volume.tetrahedralize(box, size_mm=4.0, order=2)
    assert mesh.order == 2 and mesh.cells.shape[1] == 10
    assert mesh.cell_volumes().sum() == pytest.approx(6000.0, rel=1e-9)
    # Each mid-node is the midpoint of the VTK edge (01, 12, 02, 03, 13, 23) it belongs to.
    assert _edge_mid_distance(mesh).max() < 1e-9
    # Conforming: one mid-node per distinct edge, no orphan node.
    edges = np.sort(mesh.cells[:, np.array(VTK_EDGES)].reshape(-1, 2), axis=1)
    num_edges = np.unique(edges, axis=0).shape[0]
    num_vertices = np.unique(mesh.cells[:, :4]).shape[0]
    assert mesh.num_nodes == num_vertices + num_edges
    assert np.unique(mesh.cells[:, 4:]).shape[0] == num_edges
    assert mesh_quality(mesh).num_inverted == 0


def _straight_and_curved_p2(mesher: Any, sphere: SurfaceMesh) -> tuple[TetMesh, TetMesh]:
    """P2 meshes of the sphere without and with curving; checks that curving moved only
    boundary mid-nodes, onto the sphere, and inverted nothing."""
    straight = mesher(sphere, size_mm=5.0, order=2, optimize_netgen=False)
    curved = mesher(sphere, size_mm=5.0, order=2, curved=True, optimize_netgen=False)
    assert _edge_mid_distance(straight).max() < 1e-9
    moved = np.unique(curved.cells[:, 4:][_edge_mid_distance(curved) > 1e-9])
    assert moved.size > 0
    # Moved mid-nodes lie on the (triangulated) sphere, not on the chord inside it.
    assert np.abs(np.linalg.norm(curved.points[moved], axis=1) - 20.0).max() < 0.05
    assert mesh_quality(curved).num_inverted == 0
    return straight, curved


def test_order2_curved_sphere_moves_boundary_mid_nodes_only(sphere: SurfaceMesh) -> None:
    _straight_and_curved_p2(volume.tetrahedralize, sphere)


def test_raw_fallback_keeps_given_triangles(sphere: SurfaceMesh, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("forced classification failure")

    monkeypatch.setattr(volume, "_build_classified", fail)
    with caplog.at_level(logging.WARNING, logger="meshing.volume"):
        mesh = volume.tetrahedralize(sphere, size_mm=4.0, optimize_netgen=False)
    assert any("as-is" in r.getMessage() for r in caplog.records)
    # Boundary not remeshed: the tets fill exactly the given polyhedron.
    assert mesh.cell_volumes().sum() == pytest.approx(surface_volume(sphere), rel=1e-9)
    assert np.all(mesh.cell_volumes() > 0.0)


def test_tetrahedralize_runs_in_worker_threads(box: SurfaceMesh) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        meshes = list(pool.map(lambda h: volume.tetrahedralize(box, size_mm=h), [5.0, 5.0]))
    assert meshes[0].num_cells == meshes[1].num_cells > 0
    for mesh in meshes:
        assert mesh.cell_volumes().sum() == pytest.approx(6000.0, rel=1e-9)


def test_tetrahedralize_input_errors(box: SurfaceMesh) -> None:
    with pytest.raises(InputError, match="size must be positive"):
        volume.tetrahedralize(box, size_mm=0.0)
    with pytest.raises(InputError, match="order"):
        volume.tetrahedralize(box, size_mm=2.0, order=3)
    with pytest.raises(InputError, match="minimum mesh size"):
        volume.tetrahedralize(box, size_mm=2.0, size_min_mm=3.0)
    holed = SurfaceMesh(box.points, box.triangles[1:])
    with pytest.raises(InputError, match="not closed") as err:
        volume.tetrahedralize(holed, size_mm=2.0)
    assert "extract_surface" in err.value.hint
    two = SurfaceMesh(np.vstack([box.points, box.points + 100.0]),
                      np.vstack([box.triangles, box.triangles + box.points.shape[0]]))
    with pytest.raises(InputError, match="2 separate shells"):
        volume.tetrahedralize(two, size_mm=2.0)


def test_tag_cells_marks_exactly_the_lesion_box(box: SurfaceMesh) -> None:
    mesh = volume.tetrahedralize(box, size_mm=2.0, optimize_netgen=False)
    # 1 mm voxels whose centres sit at x = -2.5 + i etc.; lesion voxels i 10..19, j 5..14,
    # k 3..8, i.e. the world box [7, 17) x [2, 12) x [-1, 5) mm.
    grid = ImageGrid((40, 30, 20), np.ones(3), np.array([-2.5, -2.5, -3.5]))
    labels = np.zeros(grid.shape, dtype=np.int32)
    labels[10:20, 5:15, 3:9] = 7
    labels[0:2, 0:2, 0:2] = 9  # another label, not a lesion
    tagged = volume.tag_cells(mesh, LabelMap(grid, labels), lesion_values=[7])
    c = mesh.centroids()
    expected = ((c[:, 0] >= 7.0) & (c[:, 0] < 17.0) & (c[:, 1] >= 2.0) & (c[:, 1] < 12.0)
                & (c[:, 2] >= -1.0) & (c[:, 2] < 5.0))
    assert np.array_equal(tagged.cell_tags == 2, expected)
    assert np.all(tagged.cell_tags[~expected] == 1)
    lesion_volume = mesh.cell_volumes()[expected].sum()
    assert lesion_volume == pytest.approx(10.0 * 10.0 * 5.0, rel=0.15)
    assert np.array_equal(tagged.cells, mesh.cells)
    with pytest.raises(InputError, match="no lesion"):
        volume.tag_cells(mesh, LabelMap(grid, labels), lesion_values=[])


def test_tag_cells_ignores_centroids_outside_image(box: SurfaceMesh) -> None:
    mesh = volume.tetrahedralize(box, size_mm=5.0, optimize_netgen=False)
    grid = ImageGrid((5, 5, 5), np.ones(3), np.array([100.0, 100.0, 100.0]))
    tagged = volume.tag_cells(mesh, LabelMap(grid, np.full(grid.shape, 3)), [3])
    assert np.all(tagged.cell_tags == 1)


def test_mesh_from_mask_sphere() -> None:
    h, r, n = 1.0, 12.0, 32
    grid = ImageGrid((n, n, n), np.full(3, h), np.full(3, -(n - 1) / 2 * h))
    ijk = np.indices(grid.shape).reshape(3, -1).T
    mask = (np.linalg.norm(grid.index_to_world(ijk), axis=1) < r).reshape(grid.shape)
    mesh = volume.mesh_from_mask(mask, grid, size_mm=3.0, optimize_netgen=False)
    exact = 4.0 / 3.0 * math.pi * r**3
    assert abs(mesh.cell_volumes().sum() / exact - 1.0) < 0.04
    assert mesh_quality(mesh).num_inverted == 0


# --- real anatomy -------------------------------------------------------------------------

def _check_femur_mesh(path: Path, size_mm: float) -> None:
    surface = read_surface(path)
    mesh = volume.tetrahedralize(surface, size_mm=size_mm)
    vols = mesh.cell_volumes()
    assert np.all(vols > 0.0)
    assert abs(vols.sum() / surface_volume(surface) - 1.0) < 0.03
    quality = mesh_quality(mesh)
    assert quality.num_inverted == 0
    check_quality(quality)
    extent = mesh.points.max(axis=0) - mesh.points.min(axis=0)
    assert 395.0 < extent.max() < 420.0


_REAL_FEMURS = ("tlem2_femur_r", "tlem2ct_femur_r", "vakhum_femur_r")


def _real_femur_sizes(coarse_mm: float, fine_mm: float) -> list[Any]:
    """One femur at a coarse size (fast), every femur at a fine size (``slow``)."""
    return [pytest.param(_REAL_FEMURS[0], coarse_mm, id=f"{_REAL_FEMURS[0]}-{coarse_mm:g}mm"),
            *(pytest.param(name, fine_mm, marks=pytest.mark.slow, id=f"{name}-{fine_mm:g}mm")
              for name in _REAL_FEMURS)]


@pytest.mark.data
@pytest.mark.parametrize(("name", "size_mm"), _real_femur_sizes(8.0, 6.0))
def test_real_femur_meshes(shared_data: Path, name: str, size_mm: float) -> None:
    _check_femur_mesh(shared_data / "femur_surfaces" / f"{name}.stl", size_mm)


@pytest.mark.data
@pytest.mark.slow
def test_real_femur_curved_order2_has_no_inverted_cells(shared_data: Path) -> None:
    surface = read_surface(shared_data / "femur_surfaces" / "tlem2_femur_r.stl")
    mesh = volume.tetrahedralize(surface, size_mm=6.0, order=2, curved=True)
    assert mesh.cells.shape[1] == 10
    assert mesh_quality(mesh).num_inverted == 0
    # Curving really happened on the boundary: some mid-nodes left their chord midpoints.
    assert _edge_mid_distance(mesh).max() > 0.01


# --- size control -------------------------------------------------------------------------

def _boundary_edges(mesh: TetMesh) -> np.ndarray:
    """Edge lengths of the boundary triangles (faces of one cell only)."""
    faces = np.sort(mesh.vertex_cells()[:, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]]
                    .reshape(-1, 3), axis=1)
    unique, counts = np.unique(faces, axis=0, return_counts=True)
    p = mesh.points[unique[counts == 1]]
    return np.linalg.norm(p - np.roll(p, 1, axis=1), axis=2).ravel()


def _cell_edges(mesh: TetMesh) -> np.ndarray:
    """(m,) mean edge length of each cell (corners)."""
    p = mesh.points[mesh.vertex_cells()]
    return np.stack([np.linalg.norm(p[:, b] - p[:, a], axis=1) for a, b in VTK_EDGES],
                    axis=1).mean(axis=1)


def test_surface_refinement_grows_inwards(sphere: SurfaceMesh) -> None:
    uniform = volume.mesh_from_surface(sphere, size_mm=4.0, optimize_netgen=False)
    graded = volume.mesh_from_surface(sphere, size_mm=4.0, surface_size_mm=1.5,
                                      transition_mm=8.0, optimize_netgen=False)
    r = np.linalg.norm(graded.centroids(), axis=1)
    near, deep = _boundary_edges(graded).mean(), _cell_edges(graded)[r < 8.0].mean()
    assert near == pytest.approx(1.5, rel=0.15)
    assert _boundary_edges(uniform).mean() == pytest.approx(4.0, rel=0.15)
    # Deep inside, the graded mesh is as coarse as the uniform one (gmsh's interior edges
    # run ~1.4x the nominal size in both), and sizes grow monotonically towards the centre.
    uniform_deep = _cell_edges(uniform)[np.linalg.norm(uniform.centroids(), axis=1) < 8.0]
    assert deep == pytest.approx(uniform_deep.mean(), rel=0.15) and deep > 2.5 * near
    shells = [_cell_edges(graded)[(r >= a) & (r < a + 3.0)].mean() for a in (17.0, 14.0, 11.0)]
    assert shells[0] < shells[1] < shells[2]
    # Far fewer cells than a uniformly fine mesh, same volume, good shapes.
    fine_count = 4.0 / 3.0 * math.pi * 20.0**3 / (1.5**3 / (6.0 * math.sqrt(2.0)))
    assert graded.num_cells < 0.3 * fine_count
    assert graded.cell_volumes().sum() == pytest.approx(4.0 / 3.0 * math.pi * 20.0**3,
                                                        rel=0.02)
    quality = mesh_quality(graded)
    assert quality.num_inverted == 0 and quality.min_dihedral_deg > 5.0


def test_surface_size_with_gmsh_remeshed_boundary(sphere: SurfaceMesh) -> None:
    mesh = volume.tetrahedralize(sphere, size_mm=5.0, surface_size_mm=2.0,
                                 optimize_netgen=False)
    r = np.linalg.norm(mesh.centroids(), axis=1)
    assert _boundary_edges(mesh).mean() == pytest.approx(2.0, rel=0.2)
    assert _cell_edges(mesh)[r < 8.0].mean() > 1.8 * _boundary_edges(mesh).mean()
    assert mesh_quality(mesh).num_inverted == 0
    # Order 2, curved: boundary mid-nodes on the input sphere.
    curved = volume.tetrahedralize(sphere, size_mm=5.0, surface_size_mm=2.5, order=2,
                                   curved=True, optimize_netgen=False)
    moved = np.unique(curved.cells[:, 4:][_edge_mid_distance(curved) > 1e-9])
    assert moved.size > 0
    assert np.abs(np.linalg.norm(curved.points[moved], axis=1) - 20.0).max() < 0.05
    assert mesh_quality(curved).num_inverted == 0
    with pytest.raises(InputError, match="surface mesh size"):
        volume.tetrahedralize(sphere, size_mm=5.0, surface_size_mm=6.0)
    with pytest.raises(InputError, match="transition"):
        volume.tetrahedralize(sphere, size_mm=5.0, transition_mm=-1.0)
    with pytest.raises(InputError, match="surface_size_mm"):
        volume.mesh_from_surface(sphere, size_mm=2.0, surface_size_mm=3.0)


def test_curvature_sizing_refines_the_tight_end() -> None:
    import pyvista as pv

    # An egg: a sphere of radius 20 mm squeezed to a tight tip (radius ~2 mm) at +x.
    poly = pv.Icosphere(radius=1.0, nsub=5)
    p = np.array(poly.points)
    x = p[:, 0]
    scale = np.where(x > 0.0, 1.0 - 0.85 * x**2, 1.0)
    points = np.column_stack([20.0 * x, 20.0 * p[:, 1] * scale, 20.0 * p[:, 2] * scale])
    egg = SurfaceMesh(points, np.asarray(poly.faces, dtype=np.int64).reshape(-1, 4)[:, 1:])
    mesh = volume.mesh_from_surface(egg, size_mm=4.0, size_min_mm=0.8, curvature_elements=20,
                                    optimize_netgen=False)
    c = mesh.centroids()
    edges = _cell_edges(mesh)
    assert edges[c[:, 0] > 17.0].mean() < 0.6 * edges[c[:, 0] < -10.0].mean()
    assert mesh_quality(mesh).num_inverted == 0


def test_mesh_from_surface_curved_p2_lies_on_the_surface(sphere: SurfaceMesh) -> None:
    straight, curved = _straight_and_curved_p2(volume.mesh_from_surface, sphere)
    # The curved boundary encloses the sphere better: compare quadratic volumes.
    assert abs(_p2_volume(curved) - _p2_volume(straight)) > 0.0
    exact = 4.0 / 3.0 * math.pi * 20.0**3
    assert abs(_p2_volume(curved) / exact - 1) < 0.5 * abs(_p2_volume(straight) / exact - 1)


def _p2_volume(mesh: TetMesh) -> float:
    """Volume of a 10-node mesh by 4-point quadrature of its Jacobian (exact for quadratics)."""
    from meshing.quality import _tet10_shape_gradients

    a, b = 0.5854101966249685, 0.1381966011250105
    xi = np.array([[b, b, b], [a, b, b], [b, a, b], [b, b, a]])
    grads = _tet10_shape_gradients(xi)
    jac = np.einsum("mai,qaj->mqij", mesh.points[mesh.cells], grads)
    return float(np.linalg.det(jac).sum() / 24.0)


# --- cortex tags --------------------------------------------------------------------------

def test_tag_cortex_from_ct_per_cell_hu_and_mask(sphere: SurfaceMesh) -> None:
    from meshing.types import CTVolume

    mesh = volume.mesh_from_surface(sphere, size_mm=4.0, surface_size_mm=2.0,
                                    optimize_netgen=False)
    n = 50
    grid = ImageGrid((n, n, n), np.ones(3), np.full(3, -(n - 1) / 2.0))
    ijk = np.indices(grid.shape).reshape(3, -1).T
    radius = np.linalg.norm(grid.index_to_world(ijk), axis=1).reshape(grid.shape)
    hu = np.where(radius > 17.0, 1400.0, 200.0).astype(np.float32)
    # A lesion cell keeps its tag.
    lesion = int(np.argmax(np.linalg.norm(mesh.centroids(), axis=1)))
    tags = np.ones(mesh.num_cells, dtype=np.int32)
    tags[lesion] = volume.LESION_TAG
    mesh = TetMesh(mesh.points, mesh.cells, tags)
    by_ct = volume.tag_cortex(mesh, CTVolume(grid, hu), threshold_hu=700.0)
    ijk_c = np.rint(grid.world_to_index(mesh.centroids())).astype(int)
    expected = radius[ijk_c[:, 0], ijk_c[:, 1], ijk_c[:, 2]] > 17.0
    expected[lesion] = False
    assert np.array_equal(by_ct.cell_tags == volume.CORTEX_TAG, expected)
    assert by_ct.cell_tags[lesion] == volume.LESION_TAG
    assert np.all(by_ct.cell_tags[~expected & (tags == 1)] == volume.BONE_TAG)
    per_cell = np.where(np.linalg.norm(mesh.centroids(), axis=1) > 17.0, 1500.0, 100.0)
    by_values = volume.tag_cortex(mesh, per_cell, threshold_hu=700.0, tag=5)
    assert np.array_equal(by_values.cell_tags == 5,
                          (per_cell >= 700.0) & (tags == 1))
    cortex = LabelMap(grid, np.where(radius > 17.0, 4, 0).astype(np.int32))
    by_mask = volume.tag_cortex(mesh, cortex, label_values=[4])
    assert np.array_equal(by_mask.cell_tags, by_ct.cell_tags)
    assert np.array_equal(volume.tag_cortex(mesh, cortex).cell_tags, by_ct.cell_tags)
    with pytest.raises(InputError, match="threshold_hu"):
        volume.tag_cortex(mesh, per_cell)
    with pytest.raises(InputError, match="per-cell HU"):
        volume.tag_cortex(mesh, per_cell[:-1], threshold_hu=700.0)


# --- quadratic meshes of real femurs ------------------------------------------------------

def _check_femur_p2(path: Path, size_mm: float) -> None:
    surface = read_surface(path)
    mesh = volume.mesh_from_surface(surface, size_mm=size_mm, order=2, curved=True)
    assert mesh.order == 2 and mesh.cells.shape[1] == 10
    quality = mesh_quality(mesh)
    assert quality.num_inverted == 0, quality.to_dict()["worst_centroids_mm"]
    check_quality(quality, min_dihedral_deg=5.0)
    assert abs(_p2_volume(mesh) / surface_volume(surface) - 1.0) < 0.01
    # Curved: boundary mid-nodes were moved onto the input surface.
    assert _edge_mid_distance(mesh).max() > 0.1


@pytest.mark.data
@pytest.mark.parametrize(("name", "size_mm"), _real_femur_sizes(10.0, 4.0))
def test_real_femur_p2_meshes(shared_data: Path, name: str, size_mm: float) -> None:
    _check_femur_p2(shared_data / "femur_surfaces" / f"{name}.stl", size_mm)


def test_mesh_from_surface_falls_back_to_gmsh_on_sharp_edges(
        caplog: pytest.LogCaptureFixture) -> None:
    import pyvista as pv

    poly = pv.Cylinder(radius=20.0, height=4.0, resolution=256).triangulate().clean()
    disc = _from_pyvista(poly)
    if surface_volume(disc) < 0:
        disc = SurfaceMesh(disc.points, disc.triangles[:, ::-1])
    with caplog.at_level(logging.WARNING, logger="meshing.volume"):
        mesh = volume.mesh_from_surface(disc, size_mm=3.0, optimize_netgen=False)
    assert any("gmsh remeshes the surface instead" in r.getMessage() for r in caplog.records)
    assert mesh.cell_volumes().sum() == pytest.approx(surface_volume(disc), rel=0.01)
    # The flat faces stay flat (sharp rims kept by gmsh's classification).
    assert mesh.points[:, 0].max() == pytest.approx(2.0, abs=1e-9)  # axis along x
    assert mesh_quality(mesh).num_inverted == 0
