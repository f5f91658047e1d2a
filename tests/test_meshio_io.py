"""Bring-your-own meshes: read/write round trips, node orders, orientation, refusals."""

from __future__ import annotations

import functools
import logging
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import needs_ccx

from meshing import volume
from meshing.errors import InputError
from meshing.meshio_io import READ_SUFFIXES, WRITE_SUFFIXES, read_mesh, write_mesh
from meshing.quality import mesh_quality, topology_check
from meshing.types import SurfaceMesh, TetMesh

#: VTK tet10 edges (TetMesh convention): mid-node 4 + e sits on edge VTK_EDGES[e].
VTK_EDGES = [(0, 1), (1, 2), (0, 2), (0, 3), (1, 3), (2, 3)]
FLIP4 = [0, 2, 1, 3]
FLIP10 = [0, 2, 1, 3, 6, 5, 4, 7, 9, 8]


@functools.cache
def _tagged_box(order: int) -> tuple[TetMesh, dict[str, np.ndarray]]:
    """A box mesh with three regions and per-cell arrays (scalar, int-valued, vector)."""
    import pyvista as pv

    poly = pv.Box(bounds=(0.0, 30.0, 0.0, 20.0, 0.0, 10.0), level=2).triangulate().clean()
    box = SurfaceMesh(np.array(poly.points), poly.faces.reshape(-1, 4)[:, 1:])
    mesh = volume.tetrahedralize(box, size_mm=5.0, order=order, optimize_netgen=False)
    x = mesh.centroids()[:, 0]
    tags = np.where(x > 20.0, 2, np.where(x < 8.0, 3, 1)).astype(np.int32)
    mesh = TetMesh(mesh.points, mesh.cells, tags)
    rng = np.random.default_rng(1)
    arrays = {
        "E": rng.uniform(10.0, 20000.0, mesh.num_cells),
        "density": rng.uniform(0.0, 1.8, mesh.num_cells),
        "group": rng.integers(0, 5, mesh.num_cells).astype(np.float64),
        "principal": rng.normal(size=(mesh.num_cells, 3)),
    }
    return mesh, arrays


@pytest.fixture(params=[1, 2], ids=["P1", "P2"])
def tagged(request: pytest.FixtureRequest) -> tuple[TetMesh, dict[str, np.ndarray]]:
    return _tagged_box(request.param)


@pytest.fixture
def tagged_p2() -> tuple[TetMesh, dict[str, np.ndarray]]:
    return _tagged_box(2)


def _same_cells(a: TetMesh, b: TetMesh, perm: np.ndarray | None = None) -> bool:
    """Same cells (by node coordinates, node order included), optionally permuted."""
    cells_b = b.cells if perm is None else b.cells[perm]
    return bool(np.allclose(a.points[a.cells], b.points[cells_b], rtol=0.0, atol=1e-12))


def _meshio_write(path: Path, points: np.ndarray, blocks: list[tuple[str, np.ndarray]],
                  **kwargs: Any) -> Path:
    import meshio

    meshio.write(path, meshio.Mesh(points, blocks, **kwargs))
    return path


# --- round trips --------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".vtu", ".vtk", ".xdmf", ".msh"])
def test_round_trip_keeps_cells_tags_and_arrays(
        tmp_path: Path, tagged: tuple[TetMesh, dict[str, np.ndarray]], suffix: str) -> None:
    mesh, arrays = tagged
    path = write_mesh(tmp_path / f"mesh{suffix}", mesh, arrays)
    back, data = read_mesh(path)
    assert back.order == mesh.order and back.num_cells == mesh.num_cells
    assert back.num_nodes == mesh.num_nodes
    assert _same_cells(back, mesh)
    assert np.array_equal(back.cell_tags, mesh.cell_tags)
    for name, values in arrays.items():
        assert data[name].shape == values.shape, name
        np.testing.assert_allclose(data[name], values, rtol=0, atol=0, err_msg=name)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_msh_22_round_trip_groups_cells_by_tag(
        tmp_path: Path, tagged: tuple[TetMesh, dict[str, np.ndarray]]) -> None:
    mesh, arrays = tagged
    for binary in (True, False):
        path = tmp_path / f"mesh_{binary}.msh"
        volume.write_msh(path, mesh, arrays, version=2.2, binary=binary)
        assert path.read_bytes().startswith(b"$MeshFormat\n2.2")
        back, data = read_mesh(path)
        perm = np.argsort(mesh.cell_tags, kind="stable")
        assert _same_cells(back, mesh, perm)
        assert np.array_equal(back.cell_tags, mesh.cell_tags[perm])
        # ASCII files keep 16 significant digits.
        tol = 0.0 if binary else 1e-15
        np.testing.assert_allclose(data["E"], arrays["E"][perm], rtol=tol, atol=0.0)
        np.testing.assert_allclose(data["principal"], arrays["principal"][perm], rtol=tol,
                                   atol=1e-300)


def test_msh_has_named_physical_groups_for_gmsh(
        tmp_path: Path, tagged: tuple[TetMesh, dict[str, np.ndarray]]) -> None:
    import gmsh

    mesh, _ = tagged
    path = write_mesh(tmp_path / "mesh.msh", mesh)
    one_region = write_mesh(tmp_path / "bone.msh", TetMesh(mesh.points, mesh.cells,
                                                           np.ones(mesh.num_cells, dtype=np.int32)))
    gmsh.initialize(readConfigFiles=False, interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.open(str(path))
        groups = {tag: gmsh.model.getPhysicalName(dim, tag)
                  for dim, tag in gmsh.model.getPhysicalGroups()}
        counts = {tag: sum(len(gmsh.model.mesh.getElements(3, e)[1][0])
                           for e in gmsh.model.getEntitiesForPhysicalGroup(3, tag))
                  for tag in groups}
        gmsh.clear()
        gmsh.open(str(one_region))
        single = [(d, t, gmsh.model.getPhysicalName(d, t))
                  for d, t in gmsh.model.getPhysicalGroups()]
    finally:
        gmsh.finalize()
    assert groups == {1: "bone", 2: "lesion", 3: "cortex"}
    assert counts == {t: int(np.sum(mesh.cell_tags == t)) for t in (1, 2, 3)}
    assert single == [(3, 1, "bone")]


def test_inp_round_trip_tags_as_elsets(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                       tagged: tuple[TetMesh, dict[str, np.ndarray]]) -> None:
    mesh, arrays = tagged
    with caplog.at_level(logging.WARNING, logger="meshing.meshio_io"):
        path = write_mesh(tmp_path / "mesh.inp", mesh, arrays)
    assert any("no per-element arrays" in r.getMessage() for r in caplog.records)
    text = path.read_text()
    assert f"TYPE={'C3D4' if mesh.order == 1 else 'C3D10'}" in text
    assert "*ELSET, ELSET=BONE" in text and "*ELSET, ELSET=CORTEX" in text
    # Data lines: at most 16 entries, no trailing comma.
    body = [ln for ln in text.splitlines() if ln and not ln.startswith("*")]
    assert max(ln.count(",") for ln in body) <= 15
    assert not any(ln.rstrip().endswith(",") for ln in body)
    back, data = read_mesh(path)
    assert _same_cells(back, mesh)
    assert np.array_equal(back.cell_tags, mesh.cell_tags)
    assert np.array_equal(data["set:LESION"], mesh.cell_tags == 2)
    assert data["set:EALL"].all()


@needs_ccx
def test_calculix_accepts_written_deck(tmp_path: Path,
                                       tagged: tuple[TetMesh, dict[str, np.ndarray]]) -> None:
    mesh, _ = tagged
    path = write_mesh(tmp_path / "job.inp", mesh)
    fixed = np.flatnonzero(mesh.points[:, 0] < 1e-9) + 1
    top = int(np.argmax(mesh.points[:, 0])) + 1
    extra = ["*MATERIAL, NAME=M1", "*ELASTIC", "1000., 0.3",
             "*MATERIAL, NAME=M2", "*ELASTIC", "500., 0.3"]
    for elset, material in (("BONE", "M1"), ("LESION", "M2"), ("CORTEX", "M1")):
        extra.append(f"*SOLID SECTION, ELSET={elset}, MATERIAL={material}")
    extra += ["*NSET, NSET=FIX"] + [", ".join(map(str, fixed[i:i + 16]))
                                    for i in range(0, fixed.size, 16)]
    extra += ["*STEP", "*STATIC", "*BOUNDARY", "FIX, 1, 3, 0.", "*CLOAD",
              f"{top}, 1, 1.", "*NODE PRINT, NSET=FIX, TOTALS=ONLY", "RF", "*END STEP"]
    path.write_text(path.read_text() + "\n".join(extra) + "\n")
    run = subprocess.run(["ccx", "-i", "job"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    dat = (tmp_path / "job.dat").read_text()
    assert "total force" in dat


# --- node order and orientation -----------------------------------------------------------

def test_gmsh_ordered_tet10_in_a_vtu_is_reordered(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        tagged_p2: tuple[TetMesh, dict[str, np.ndarray]]) -> None:
    mesh, _ = tagged_p2
    gmsh_order = mesh.cells[:, [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]]  # last two mid-nodes swapped
    path = _meshio_write(tmp_path / "gmsh_order.vtu", mesh.points, [("tetra10", gmsh_order)])
    with caplog.at_level(logging.WARNING, logger="meshing.meshio_io"):
        back, _ = read_mesh(path)
    assert any("reordered" in r.getMessage() for r in caplog.records)
    assert _same_cells(back, mesh)


def test_scrambled_tet10_mid_nodes_are_refused(
        tmp_path: Path, tagged_p2: tuple[TetMesh, dict[str, np.ndarray]]) -> None:
    mesh, _ = tagged_p2
    cells = mesh.cells.copy()
    rng = np.random.default_rng(0)
    for row in cells:
        row[4:] = rng.permutation(row[4:])
    path = _meshio_write(tmp_path / "scrambled.vtu", mesh.points, [("tetra10", cells)])
    with pytest.raises(InputError, match="mid-nodes") as err:
        read_mesh(path)
    assert "node order" in err.value.hint


def test_med_orientation_is_reoriented(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                       tagged: tuple[TetMesh, dict[str, np.ndarray]]) -> None:
    mesh, arrays = tagged
    flip = FLIP4 if mesh.order == 1 else FLIP10
    # MED/Salome number tetrahedra with the opposite orientation; meshio passes them as-is.
    path = _meshio_write(tmp_path / "salome.med", mesh.points,
                         [("tetra" if mesh.order == 1 else "tetra10", mesh.cells[:, flip])],
                         cell_data={"E": [arrays["E"]]})
    with caplog.at_level(logging.WARNING, logger="meshing.meshio_io"):
        back, data = read_mesh(path)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"{mesh.num_cells} of {mesh.num_cells}" in message and "MED" in message
    assert _same_cells(back, mesh)
    np.testing.assert_array_equal(data["E"], arrays["E"])
    assert np.all(back.cell_volumes() > 0.0)
    with pytest.raises(InputError, match="inverted"):
        read_mesh(path, reorient=False)


def test_some_negatively_numbered_cells_are_reoriented(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        tagged: tuple[TetMesh, dict[str, np.ndarray]]) -> None:
    mesh, _ = tagged
    flip = FLIP4 if mesh.order == 1 else FLIP10
    cells = mesh.cells.copy()
    cells[::3] = cells[::3][:, flip]
    path = _meshio_write(tmp_path / "mixed.vtu", mesh.points,
                         [("tetra" if mesh.order == 1 else "tetra10", cells)])
    with caplog.at_level(logging.WARNING, logger="meshing.meshio_io"):
        back, _ = read_mesh(path)
    assert any(f"{len(cells[::3])} of {mesh.num_cells} tetrahedra had negative"
               in r.getMessage() for r in caplog.records)
    assert _same_cells(back, mesh)
    assert mesh_quality(back).num_inverted == 0


def _two_tets(apex_below: float) -> tuple[np.ndarray, np.ndarray]:
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.2, 0.2, 1.0],
                       [0.3, 0.3, apex_below]], dtype=float)
    return points, np.array([[0, 1, 2, 3], [0, 2, 1, 4]])


def test_folded_mesh_is_refused_not_reoriented(tmp_path: Path) -> None:
    points, cells = _two_tets(-1.0)
    good = _meshio_write(tmp_path / "good.vtu", points, [("tetra", cells)])
    assert read_mesh(good)[0].num_cells == 2
    # Second apex above the shared face too: both cells on the same side (overlap). Its
    # node order is then negative; reorienting it would hide the fold.
    points, cells = _two_tets(0.5)
    bad = _meshio_write(tmp_path / "folded.vtu", points, [("tetra", cells)])
    with pytest.raises(InputError, match="same side") as err:
        read_mesh(bad)
    assert "remesh" in err.value.hint


def test_degenerate_and_inverted_curved_cells_are_refused(tmp_path: Path) -> None:
    flat = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=float)
    path = _meshio_write(tmp_path / "flat.vtu", flat, [("tetra", np.array([[0, 1, 2, 3]]))])
    with pytest.raises(InputError, match="degenerate"):
        read_mesh(path)
    corner = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    mids = np.array([0.5 * (corner[a] + corner[b]) for a, b in VTK_EDGES])
    mids[0] = [0.15, 0.0, 0.0]  # mid-node of edge 01 slid towards vertex 0: det < 0 there
    path = _meshio_write(tmp_path / "curved.vtu", np.vstack([corner, mids]),
                         [("tetra10", np.arange(10)[np.newaxis])])
    with pytest.raises(InputError, match="curved 10-node"):
        read_mesh(path)


def test_topology_check_duplicated_and_nonmanifold() -> None:
    points, cells = _two_tets(-1.0)
    def check(c: np.ndarray) -> str:
        return topology_check(TetMesh(points, c, np.ones(c.shape[0], dtype=np.int32))) or ""

    assert check(cells) == ""
    assert "more than two" in check(np.vstack([cells, cells[:1]]))
    assert "vertex twice" in check(np.array([[0, 1, 2, 2]]))


# --- cell types, tags, sets ---------------------------------------------------------------

def test_other_cells_dropped_and_orphans_removed(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    points, cells = _two_tets(-1.0)
    cube = np.array([[x, y, z] for z in (5, 6) for y in (5, 6) for x in (5, 6)], dtype=float)
    cube = cube[[0, 1, 3, 2, 4, 5, 7, 6]]
    all_points = np.vstack([points, cube])
    path = _meshio_write(
        tmp_path / "mixed.vtu", all_points,
        [("triangle", np.array([[0, 1, 2]])), ("tetra", cells),
         ("hexahedron", np.arange(5, 13)[np.newaxis])],
        cell_data={"E": [np.array([0.0]), np.array([1.0, 2.0]), np.array([3.0])]})
    with caplog.at_level(logging.INFO, logger="meshing.meshio_io"):
        mesh, data = read_mesh(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("1 hexahedron cells" in m for m in warnings)
    assert any("1 triangle cells" in m for m in infos)
    assert mesh.num_cells == 2 and mesh.num_nodes == 5
    np.testing.assert_array_equal(data["E"], [1.0, 2.0])
    tri_only = _meshio_write(tmp_path / "surface.vtu", points, [("triangle", cells[:, :3])])
    with pytest.raises(InputError, match="no tetrahedra"):
        read_mesh(tri_only)


def test_mixed_orders_refused(tmp_path: Path) -> None:
    corner = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    mids = np.array([0.5 * (corner[a] + corner[b]) for a, b in VTK_EDGES])
    points = np.vstack([corner, mids, corner + 3.0])
    path = _meshio_write(tmp_path / "mixed.vtu", points,
                         [("tetra10", np.arange(10)[np.newaxis]),
                          ("tetra", np.arange(10, 14)[np.newaxis])])
    with pytest.raises(InputError, match="mixes 4-node and 10-node"):
        read_mesh(path)


def test_user_abaqus_deck_with_generate_and_own_set_names(tmp_path: Path) -> None:
    points, cells = _two_tets(-1.0)
    lines = ["*HEADING", "user deck", "*NODE"]
    lines += [f"{i + 101}, {x:.3f}, {y:.3f}, {z:.3f}" for i, (x, y, z) in enumerate(points)]
    lines += ["*ELEMENT, TYPE=C3D4, ELSET=PART"]
    lines += [f"{j + 11}, " + ", ".join(str(n + 101) for n in c) for j, c in enumerate(cells)]
    lines += ["*ELSET, ELSET=Lesion, GENERATE", "12, 12, 1", "*ELSET, ELSET=trabecular", "11",
              "*MATERIAL, NAME=M", "*ELASTIC", "100., 0.3"]
    path = tmp_path / "user.inp"
    path.write_text("\n".join(lines) + "\n")
    mesh, data = read_mesh(path)
    assert mesh.cell_tags.tolist() == [1, 2]  # LESION by name (any case); others bone
    assert data["set:trabecular"].tolist() == [True, False]
    assert data["set:PART"].all()


def test_region_tag_array_and_float_tags(tmp_path: Path) -> None:
    points, cells = _two_tets(-1.0)
    path = _meshio_write(tmp_path / "fields.vtu", points, [("tetra", cells)],
                         cell_data={"region_tag": [np.array([2.0, 1.0])]})
    mesh, data = read_mesh(path)
    assert mesh.cell_tags.tolist() == [2, 1]
    assert data["region_tag"].dtype == np.float64


def test_unit_scale_and_metre_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    points, cells = _two_tets(-1.0)
    path = _meshio_write(tmp_path / "metres.vtu", points * 0.01, [("tetra", cells)])
    with caplog.at_level(logging.WARNING, logger="meshing.meshio_io"):
        read_mesh(path)
    assert any("unit_scale=1000" in r.getMessage() for r in caplog.records)
    mesh, _ = read_mesh(path, unit_scale=1000.0)
    np.testing.assert_allclose(mesh.points, points * 10.0)


def test_read_write_errors(tmp_path: Path) -> None:
    points, cells = _two_tets(-1.0)
    mesh = TetMesh(points, cells, np.ones(2, dtype=np.int32))
    with pytest.raises(InputError, match="not found"):
        read_mesh(tmp_path / "missing.vtu")
    (tmp_path / "mesh.stl").write_text("solid x\nendsolid x\n")
    with pytest.raises(InputError, match="unsupported mesh format"):
        read_mesh(tmp_path / "mesh.stl")
    (tmp_path / "broken.vtu").write_text("<VTKFile>")
    with pytest.raises(InputError, match="could not read"):
        read_mesh(tmp_path / "broken.vtu")
    with pytest.raises(InputError, match="unsupported output"):
        write_mesh(tmp_path / "mesh.stl", mesh)
    with pytest.raises(InputError, match="does not exist"):
        write_mesh(tmp_path / "no" / "mesh.vtu", mesh)
    with pytest.raises(InputError, match="shape"):
        write_mesh(tmp_path / "mesh.vtu", mesh, {"E": np.ones(3, dtype=np.int32)})
    with pytest.raises(InputError, match="reserved"):
        write_mesh(tmp_path / "mesh.vtu", mesh, {"cell_tags": np.ones(2, dtype=np.int32)})
    with pytest.raises(InputError, match="positive"):
        write_mesh(tmp_path / "mesh.msh", TetMesh(points, cells, np.zeros(2, dtype=np.int32)))
    assert not (tmp_path / "mesh.vtu").exists() and not (tmp_path / "mesh.msh").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert set(WRITE_SUFFIXES) <= set(READ_SUFFIXES)


def test_write_replaces_existing_file_atomically(tmp_path: Path) -> None:
    points, cells = _two_tets(-1.0)
    path = tmp_path / "mesh.xdmf"
    write_mesh(path, TetMesh(points, cells, np.ones(2, dtype=np.int32)), {"E": [1.0, 2.0]})
    write_mesh(path, TetMesh(points, cells, np.array([1, 2], dtype=np.int32)), {"E": [3.0, 4.0]})
    mesh, data = read_mesh(path)
    assert mesh.cell_tags.tolist() == [1, 2] and data["E"].tolist() == [3.0, 4.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.h5", "mesh.xdmf"]


# --- real anatomy -------------------------------------------------------------------------

@pytest.mark.data
def test_real_femur_p2_mesh_survives_every_format(shared_data: Path, tmp_path: Path) -> None:
    from meshing.surface import read_surface

    surface = read_surface(shared_data / "femur_surfaces" / "tlem2_femur_r.stl")
    mesh = volume.mesh_from_surface(surface, size_mm=10.0, order=2, curved=True)
    mesh = TetMesh(mesh.points, mesh.cells,
                   np.where(mesh.centroids()[:, 1] > 300.0, 2, 1).astype(np.int32))
    e_mod = np.linspace(100.0, 20000.0, mesh.num_cells)
    for suffix in (".msh", ".vtu", ".xdmf", ".inp"):
        back, data = read_mesh(write_mesh(tmp_path / f"femur{suffix}", mesh, {"E": e_mod}))
        assert _same_cells(back, mesh), suffix
        assert np.array_equal(back.cell_tags, mesh.cell_tags), suffix
        if suffix != ".inp":
            np.testing.assert_array_equal(data["E"], e_mod)
        assert mesh_quality(back).num_inverted == 0
