"""``osteofe.mapping_tool.run_map``: CT + any tetrahedral mesh -> mesh with E, rho, HU."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import meshio
import numpy as np
import pytest

from material import (
    LAWS,
    CalibrationError,
    LinearCalibration,
    MappingError,
    MaterialField,
    MaterialModel,
    map_material,
)
from meshing.errors import InputError, OsteofeError
from meshing.imaging import read_ct, write_ct
from meshing.structured import box_mesh
from meshing.types import CTVolume, ImageGrid, TetMesh
from osteofe.mapping_tool import load_table, read_tet_mesh, run_map

Inputs = tuple[Path, Path, CTVolume, TetMesh]
CALIBRATION = {"slope": 0.0008, "intercept": -0.01, "name": "test_line"}


def _ct() -> CTVolume:
    """Anisotropic grid, offset origin; HU: a smooth ramp, a dense core and an air slab."""
    grid = ImageGrid((24, 20, 18), spacing=np.array([1.5, 1.2, 2.0]),
                     origin=np.array([-30.0, 12.0, 400.0]))
    i, j, k = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    hu = 150.0 + 25.0 * i - 10.0 * j + 30.0 * k
    hu[8:16, 6:14, 5:13] = 1400.0  # "cortex" block
    hu[:, :, 0] = -1000.0  # air slab: a CT always holds some negative HU
    return CTVolume(grid, np.rint(hu).astype(np.float32))


def _mesh(ct: CTVolume) -> TetMesh:
    """A box mesh well inside the CT, in world mm, with tag 2 on the cells with x < -15."""
    lower = ct.grid.index_to_world(np.array([2.0, 2.0, 2.0]))
    upper = ct.grid.index_to_world(np.array([21.0, 17.0, 15.0]))
    mesh = box_mesh(lower, upper, (6, 5, 4))
    tags = np.where(mesh.centroids()[:, 0] < -15.0, 2, 1).astype(np.int32)
    return TetMesh(mesh.points, mesh.cells, tags)


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    ct = _ct()
    ct_path = write_ct(ct, tmp_path / "in" / "ct.nii.gz")
    mesh = _mesh(ct)
    mesh_path = tmp_path / "in" / "mesh.msh"
    meshio.write(mesh_path, meshio.Mesh(mesh.points, [("tetra", mesh.cells)],
                                        cell_data={"gmsh:physical": [mesh.cell_tags],
                                                   "gmsh:geometrical": [mesh.cell_tags]}),
                 file_format="gmsh22", binary=False)
    read, _ = read_tet_mesh(mesh_path)  # the mesh as the tool sees it (gmsh may renumber)
    assert read.num_cells == mesh.num_cells
    np.testing.assert_allclose(np.sort(read.centroids(), axis=0),
                               np.sort(mesh.centroids(), axis=0), atol=1e-12)
    np.testing.assert_array_equal(np.sort(read.cell_tags), np.sort(mesh.cell_tags))
    return ct_path, mesh_path, read_ct(ct_path), read


def _expected(ct: CTVolume, mesh: TetMesh, **kwargs: Any) -> MaterialField:
    model = MaterialModel(LinearCalibration(0.0008, -0.01))
    return map_material(mesh, ct, model, **kwargs)


def _group(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, text
    return match.group(1)


def _parse_inp(path: Path) -> tuple[np.ndarray, dict[int, str], dict[str, float], float]:
    """Nodes, element -> material set, material -> E, Poisson ratio from a written deck."""
    nodes: list[list[float]] = []
    element_set: dict[int, str] = {}
    moduli: dict[str, float] = {}
    nu = float("nan")
    block, current = "", ""
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines):
        if line.startswith("**"):
            continue
        if line.startswith("*"):
            upper = line.upper()
            block = upper.split(",")[0]
            if block == "*ELEMENT":
                current = _group(r"ELSET=(\w+)", upper)
            if block == "*MATERIAL":
                current = _group(r"NAME=(\w+)", upper)
            if block == "*ELASTIC":
                e, nu = (float(v) for v in lines[n + 1].split(","))
                moduli[current] = e
            continue
        if block == "*NODE":
            nodes.append([float(v) for v in line.split(",")[1:]])
        elif block == "*ELEMENT":
            element_set[int(line.split(",")[0])] = current
    return np.array(nodes), element_set, moduli, nu


def _no_output(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == [], "something was written"


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


def test_round_trip_vtu(inputs: Inputs, tmp_path: Path) -> None:
    ct_path, mesh_path, ct, mesh = inputs
    out = tmp_path / "out" / "femur.vtu"
    summary = run_map(ct_path, mesh_path, out, calibration=CALIBRATION, law="morgan2003_neck",
                      mode="hu_average", quadrature_degree=2)
    expected = _expected(ct, mesh)
    back = meshio.read(out)
    np.testing.assert_array_equal(back.cells_dict["tetra"], mesh.cells)
    np.testing.assert_allclose(back.points, mesh.points, rtol=0, atol=0)
    for key, values in (("E_MPa", expected.E_MPa), ("rho_ash_g_cm3", expected.rho_ash_g_cm3),
                        ("HU", expected.hu), ("rho_app_g_cm3", expected.rho_app_g_cm3)):
        np.testing.assert_allclose(back.cell_data[key][0], values, rtol=1e-15)
    np.testing.assert_array_equal(back.cell_data["cell_tags"][0], mesh.cell_tags)
    # the JSON summary beside it: the same record as returned, with provenance
    written = json.loads((tmp_path / "out" / "femur.json").read_text())
    assert written == summary
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["femur.json", "femur.vtu"]
    assert len(summary["inputs"]["ct_sha256"]) == 64
    description = summary["material"]["description"]
    assert description["calibration"]["line"] == "rho_QCT = -0.01 + 0.0008 * HU [g/cm^3]"
    assert description["calibration"]["name"] == "test_line"
    assert description["law"]["name"] == "morgan2003_neck"
    assert description["law_extrapolation"]["valid_range_g_cm3"] == [0.26, 0.75]
    assert summary["mesh"]["tags"] == {"1": int(np.sum(mesh.cell_tags == 1)),
                                       "2": int(np.sum(mesh.cell_tags == 2))}
    volume = np.abs(mesh.cell_volumes())
    assert summary["mass"]["mass_ash_g"] == pytest.approx(
        float(expected.rho_ash_g_cm3 @ volume) / 1000.0, rel=1e-12)
    assert summary["groups"] is None and summary["warnings"] != []  # extrapolation warned


def test_round_trip_xdmf_and_centroid_mode(inputs: Inputs, tmp_path: Path) -> None:
    # In a fresh interpreter: h5py breaks in a process where PETSc (fea.solver, imported by
    # other tests) loaded its own HDF5 library first.
    ct_path, mesh_path, ct, mesh = inputs
    out = tmp_path / "femur.xdmf"
    code = (
        "import json, sys\n"
        "from osteofe.mapping_tool import run_map\n"
        f"s = run_map({str(ct_path)!r}, {str(mesh_path)!r}, {str(out)!r}, "
        f"calibration={CALIBRATION!r}, law='keyak2005_modulus', mode='centroid', "
        "quadrature_degree=1)\n"
        "import meshio\n"
        f"e = meshio.read({str(out)!r}).cell_data['E_MPa'][0]\n"
        "print(json.dumps(s['output']['files']))\n"
        "print(json.dumps(e.tolist()))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    files_line, e_line = run.stdout.strip().splitlines()[-2:]
    files = json.loads(files_line)
    assert files == [str(tmp_path / "femur.h5"), str(out), str(tmp_path / "femur.json")]
    summary = json.loads((tmp_path / "femur.json").read_text())
    assert summary["material"]["description"]["mode"] == "centroid"
    expected = map_material(mesh, ct, MaterialModel(LinearCalibration(0.0008, -0.01),
                                                    law=LAWS["keyak2005_modulus"]),
                            mode="centroid")
    np.testing.assert_allclose(json.loads(e_line), expected.E_MPa, rtol=1e-15)


def test_inp_with_groups(inputs: Inputs, tmp_path: Path) -> None:
    ct_path, mesh_path, ct, mesh = inputs
    out = tmp_path / "femur.inp"
    summary = run_map(ct_path, mesh_path, out, calibration=CALIBRATION, law="morgan2003_neck",
                      mode="modulus_average", quadrature_degree=3, groups=8)
    exact = _expected(ct, mesh, mode="modulus_average", quadrature_degree=3).E_MPa
    nodes, element_set, moduli, nu = _parse_inp(out)
    np.testing.assert_array_equal(nodes, mesh.points)  # %.17g round-trips exactly
    assert nu == 0.3
    assert sorted(element_set) == list(range(1, mesh.num_cells + 1))  # every element once
    assert 2 <= len(moduli) <= 8
    deck_e = np.array([moduli[element_set[j + 1]] for j in range(mesh.num_cells)])
    rel = np.abs(deck_e - exact) / exact
    groups = summary["groups"]
    assert groups["num_groups"] == len(moduli)
    assert rel.max() == pytest.approx(groups["max_rel_error"], rel=1e-9)
    ratio = groups["bin_ratio"]
    assert ratio == pytest.approx((exact.max() / exact.min()) ** (1 / 8), rel=1e-9)
    assert rel.max() <= (ratio - 1.0) / (ratio + 1.0) + 1e-12  # the binning error bound
    # groups are the log-spaced bins: same bin <=> same material, E within the members' range
    bins = np.minimum((np.log(exact / exact.min()) / np.log(ratio)).astype(int), 7)
    for e in moduli.values():
        members = deck_e == e
        assert np.unique(bins[members]).size == 1
        assert exact[members].min() <= e <= exact[members].max()
    assert np.unique(bins).size == len(moduli)
    assert summary["output"]["inp"]["num_materials"] == len(moduli)


def test_inp_without_groups_is_exact_and_floor_tags(inputs: Inputs, tmp_path: Path) -> None:
    ct_path, mesh_path, ct, mesh = inputs
    out = tmp_path / "exact.inp"
    summary = run_map(ct_path, mesh_path, out, calibration=CALIBRATION, law="morgan2003_neck",
                      mode="hu_average", quadrature_degree=2, floor_tags=(2,),
                      E_floor_MPa=7.5)
    exact = _expected(ct, mesh, floor_tags=(2,)).E_MPa
    exact = np.where(mesh.cell_tags == 2, 7.5, exact)
    _, element_set, moduli, _ = _parse_inp(out)
    deck_e = np.array([moduli[element_set[j + 1]] for j in range(mesh.num_cells)])
    np.testing.assert_array_equal(deck_e, exact)
    assert np.all(deck_e[mesh.cell_tags == 2] == 7.5)
    assert summary["material"]["description"]["cells_forced_to_floor"] == int(
        np.sum(mesh.cell_tags == 2))


def test_user_law_and_phantom_rods_from_tables(inputs: Inputs, tmp_path: Path) -> None:
    ct_path, mesh_path, ct, mesh = inputs
    table = tmp_path / "model.toml"
    table.write_text(
        "[calibration]\nmaterial = 'K2HPO4'\ndensity_unit = 'mg/cm3'\n"
        "rods = [{hu = 12.5, density = 0.0}, {hu = 137.5, density = 100.0}, "
        "{hu = 262.5, density = 200.0}]\n"
        "[law]\nname = 'my_keyak'\ndensity = 'ash'\ncoefficient = 14900.0\nexponent = 1.86\n"
        "source = 'Keyak 2005 typed in by hand'\n"
    )
    spec = load_table(table)
    summary = run_map(ct_path, mesh_path, tmp_path / "user.vtu", calibration=spec["calibration"],
                      law=spec["law"], mode="hu_average", quadrature_degree=2)
    cal = summary["material"]["description"]["calibration"]
    assert cal["slope_g_cm3_per_HU"] == pytest.approx(0.0008, rel=1e-12)
    assert cal["intercept_g_cm3"] == pytest.approx(-0.01, abs=1e-12)
    assert cal["fit"]["n"] == 3 and cal["fit"]["r2"] == pytest.approx(1.0)
    back = meshio.read(tmp_path / "user.vtu")
    keyak = map_material(mesh, ct, MaterialModel(LinearCalibration(0.0008, -0.01),
                                                 law=LAWS["keyak2005_modulus"]))
    np.testing.assert_allclose(back.cell_data["E_MPa"][0], keyak.E_MPa, rtol=1e-11)
    assert summary["material"]["description"]["law"]["source"]["reference"] == (
        "Keyak 2005 typed in by hand")


def test_default_calibration_is_named_and_warned(inputs: Inputs, tmp_path: Path) -> None:
    ct_path, mesh_path, _, _ = inputs
    summary = run_map(ct_path, mesh_path, tmp_path / "d.vtu", calibration=None,
                      law="morgan2003_neck", mode="hu_average", quadrature_degree=2)
    assert summary["material"]["description"]["calibration"]["name"] == "osteofe_phantom_line"
    assert any("no calibration given" in w for w in summary["warnings"])


def test_mesh_in_metres_is_scaled(inputs: Inputs, tmp_path: Path) -> None:
    ct_path, _, ct, mesh = inputs
    metres = tmp_path / "metres.vtu"
    meshio.write(metres, meshio.Mesh(mesh.points / 1000.0, [("tetra", mesh.cells)],
                                     cell_data={"cell_tags": [mesh.cell_tags]}))
    summary = run_map(ct_path, metres, tmp_path / "m.vtu", calibration=CALIBRATION,
                      law="morgan2003_neck", mode="hu_average", quadrature_degree=2,
                      mesh_unit_scale=1000.0)
    back = meshio.read(tmp_path / "m.vtu")
    np.testing.assert_allclose(back.points, mesh.points, rtol=1e-12)
    np.testing.assert_allclose(back.cell_data["E_MPa"][0], _expected(ct, mesh).E_MPa,
                               rtol=1e-9)
    assert summary["mesh"]["unit_scale"] == 1000.0 and summary["mesh"]["cell_type"] == "tetra"


# ---------------------------------------------------------------------------------------------
# Errors: the right error, nothing written
# ---------------------------------------------------------------------------------------------


def _refused(ct_path: Path, mesh_path: Path, out: Path, error: type[OsteofeError], match: str,
             **options: Any) -> OsteofeError:
    """``run_map`` (this file's defaults, changed by ``options``) raises ``error`` matching
    ``match`` and writes nothing into ``out``'s folder. Returns the error."""
    out.parent.mkdir(exist_ok=True)
    kwargs: dict[str, Any] = {"calibration": CALIBRATION, "law": "morgan2003_neck",
                              "mode": "hu_average", "quadrature_degree": 2, **options}
    with pytest.raises(error, match=match) as info:
        run_map(ct_path, mesh_path, out, **kwargs)
    _no_output(out.parent)
    return info.value


def test_unrescaled_ct_is_refused(inputs: Inputs, tmp_path: Path) -> None:
    _, mesh_path, ct, _ = inputs
    stored = np.random.default_rng(0).integers(0, 4096, size=ct.grid.shape)
    raw = CTVolume(ct.grid, stored.astype(np.float32))
    raw_path = write_ct(raw, tmp_path / "raw" / "raw.nii.gz")
    err = _refused(raw_path, mesh_path, tmp_path / "out" / "m.vtu", CalibrationError,
                   r"raw 0\.\.4095 storage")
    assert "RescaleSlope" in err.hint


def test_negative_slope_is_refused(inputs: Inputs, tmp_path: Path) -> None:
    ct_path, mesh_path, _, _ = inputs
    err = _refused(ct_path, mesh_path, tmp_path / "out" / "m.inp", CalibrationError,
                   "density must grow with HU",
                   calibration={"slope": -0.0008, "intercept": -0.01}, groups=4)
    assert "wrong order" in err.hint


def test_mesh_outside_ct_is_refused(inputs: Inputs, tmp_path: Path) -> None:
    ct_path, _, _, mesh = inputs
    mirrored = tmp_path / "mirrored.vtu"  # a mesh exported in RAS instead of LPS
    meshio.write(mirrored, meshio.Mesh(mesh.points * np.array([-1.0, -1.0, 1.0]),
                                       [("tetra", mesh.cells)]))
    err = _refused(ct_path, mirrored, tmp_path / "out" / "m.xdmf", MappingError,
                   f"{mesh.num_cells} of {mesh.num_cells} cells lie outside the CT")
    assert "coordinate system" in err.hint


def test_bad_requests_are_refused(inputs: Inputs, tmp_path: Path) -> None:
    ct_path, mesh_path, _, mesh = inputs
    out_dir = tmp_path / "out"
    surface = tmp_path / "surface.vtu"
    meshio.write(surface, meshio.Mesh(mesh.points, [("triangle", mesh.cells[:, :3])]))
    cases: list[tuple[dict[str, Any], type[OsteofeError], str]] = [
        (dict(out=out_dir / "m.stl"), InputError, "cannot write the mapped mesh"),
        (dict(mesh=surface), InputError, "contains no tetrahedra"),
        (dict(law="morgan"), OsteofeError, "unknown material law 'morgan'"),
        (dict(groups=0), InputError, "groups = 0"),
        (dict(calibration={"slope": 0.8, "intercept": -10.0}), CalibrationError, "slope 0.8"),
        (dict(calibration={"slope": 0.0008}), CalibrationError, "both slope and intercept"),
    ]
    for change, error, match in cases:
        kwargs: dict[str, Any] = {"mesh": mesh_path, "out": out_dir / "m.vtu", **change}
        _refused(ct_path, kwargs.pop("mesh"), kwargs.pop("out"), error, match, **kwargs)
