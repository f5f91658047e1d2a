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


def test_order2_curved_sphere_moves_boundary_mid_nodes_only(sphere: SurfaceMesh) -> None:
    straight = volume.tetrahedralize(sphere, size_mm=5.0, order=2, optimize_netgen=False)
    curved = volume.tetrahedralize(sphere, size_mm=5.0, order=2, curved=True,
                                   optimize_netgen=False)
    assert _edge_mid_distance(straight).max() < 1e-9
    offsets = _edge_mid_distance(curved)
    moved = np.unique(curved.cells[:, 4:][offsets > 1e-9])
    assert moved.size > 0
    # Moved mid-nodes lie on the (triangulated) sphere, not on the chord inside it.
    assert np.abs(np.linalg.norm(curved.points[moved], axis=1) - 20.0).max() < 0.05
    assert mesh_quality(curved).num_inverted == 0


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


@pytest.mark.data
def test_real_femur_coarse_mesh(shared_data: Path) -> None:
    _check_femur_mesh(shared_data / "femur_surfaces" / "tlem2_femur_r.stl", 8.0)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("name", ["tlem2_femur_r", "tlem2ct_femur_r", "vakhum_femur_r"])
def test_real_femurs_at_6mm(shared_data: Path, name: str) -> None:
    _check_femur_mesh(shared_data / "femur_surfaces" / f"{name}.stl", 6.0)


@pytest.mark.data
@pytest.mark.slow
def test_real_femur_curved_order2_has_no_inverted_cells(shared_data: Path) -> None:
    surface = read_surface(shared_data / "femur_surfaces" / "tlem2_femur_r.stl")
    mesh = volume.tetrahedralize(surface, size_mm=6.0, order=2, curved=True)
    assert mesh.cells.shape[1] == 10
    assert mesh_quality(mesh).num_inverted == 0
    # Curving really happened on the boundary: some mid-nodes left their chord midpoints.
    assert _edge_mid_distance(mesh).max() > 0.01
