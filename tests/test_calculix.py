"""Cross-code verification against CalculiX (DESIGN.md 5e) and the deck writer's contracts."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_ccx

from fea.calculix import (
    CalculixError,
    run_calculix,
    to_quadratic,
    write_inp,
)
from fea.failure import principal_strains
from fea.loads import LoadPatch
from fea.solver import ElasticModel, SolverOptions, Support
from fea.topology import boundary_faces, face_normals_and_areas
from material.binning import bin_moduli
from meshing.structured import box_mesh
from meshing.types import TetMesh

#: CalculiX/Abaqus C3D10: corners 1-4, then the mid-nodes of edges 1-2, 2-3, 3-1, 1-4, 2-4,
#: 3-4 (CalculiX User's Manual, element C3D10), here 0-based.
ABAQUS_C3D10_EDGES = [(0, 1), (1, 2), (2, 0), (0, 3), (1, 3), (2, 3)]

LENGTH = 30.0
FORCES = (np.array([40.0, -25.0, -300.0]), np.array([0.0, 60.0, 150.0]))


def _distorted_box() -> TetMesh:
    """A 10 x 8 x 30 mm bar with randomly moved interior nodes (unstructured-looking)."""
    mesh = box_mesh([0, 0, 0], [10, 8, LENGTH], (4, 3, 10))
    pts = mesh.points.copy()
    interior = np.all((pts > 1e-9) & (pts < np.array([10, 8, LENGTH]) - 1e-9), axis=1)
    pts[interior] += np.random.default_rng(7).uniform(-0.4, 0.4, size=(interior.sum(), 3))
    return TetMesh(pts, mesh.cells, mesh.cell_tags)


def _graded_moduli(mesh: TetMesh) -> np.ndarray:
    """Four z-layers, 2.5x stiffer on the +x half: 8 distinct moduli, 300-22,500 MPa."""
    c = mesh.centroids()
    layer = np.minimum((c[:, 2] / LENGTH * 4).astype(int), 3)
    return np.array([300.0, 2000.0, 9000.0, 4000.0])[layer] * np.where(c[:, 0] > 5.0, 2.5, 1.0)


def _top_patch(mesh: TetMesh, force: np.ndarray) -> LoadPatch:
    faces = boundary_faces(mesh)
    top = faces[np.all(mesh.points[faces][:, :, 2] > LENGTH - 1e-9, axis=1)]
    _, areas = face_normals_and_areas(mesh.points, top)
    return LoadPatch(top, np.unique(top), float(areas.sum()), force)


def _clamp(mesh: TetMesh) -> list[Support]:
    return [Support("clamp", np.flatnonzero(mesh.points[:, 2] < 1e-9))]


# -- no CalculiX needed --------------------------------------------------------------------


def test_to_quadratic_puts_midnodes_on_the_abaqus_c3d10_edges(tmp_path: Path) -> None:
    mesh = _distorted_box()
    quad = to_quadratic(mesh)
    assert quad.cells.shape == (mesh.num_cells, 10)
    assert np.array_equal(quad.cells[:, :4], mesh.cells)
    assert np.array_equal(quad.points[: mesh.num_nodes], mesh.points)
    p = quad.points[quad.cells]
    for k, (a, b) in enumerate(ABAQUS_C3D10_EDGES):
        assert np.abs(p[:, 4 + k] - 0.5 * (p[:, a] + p[:, b])).max() < 1e-12
    # Conforming: one mid-node per mesh edge (Euler: E = V + F - C - 1 for a ball).
    faces = np.unique(np.sort(mesh.cells[:, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]]
                              .reshape(-1, 3), axis=1), axis=0)
    num_edges = mesh.num_nodes + faces.shape[0] - mesh.num_cells - 1
    assert quad.num_nodes - mesh.num_nodes == num_edges
    # The deck lists exactly these nodes, 1-based, in this order.
    summary = write_inp(tmp_path / "order.inp", quad, np.full(mesh.num_cells, 1e3), 0.3,
                        [Support("fix", np.array([0]))], [])
    text = summary.path.read_text()
    found = re.search(r"^\*ELEMENT, TYPE=C3D10.*\n(.*)$", text, re.MULTILINE)
    assert found is not None
    ids = np.array([int(v) for v in found.group(1).split(",")])
    assert np.array_equal(ids[1:] - 1, quad.cells[ids[0] - 1])


def test_patch_loads_are_consistent_nodal_forces(tmp_path: Path) -> None:
    mesh = _distorted_box()
    force = np.array([12.0, -7.0, -90.0])
    patch = _top_patch(mesh, force)
    for m, name in ((mesh, "p1"), (to_quadratic(mesh), "p2")):
        path = write_inp(tmp_path / f"{name}.inp", m, np.full(mesh.num_cells, 1e3), 0.3,
                         [Support("fix", np.array([0, 1, 2]))], [patch]).path
        block = path.read_text().split("*CLOAD, OP=NEW\n")[1].split("*")[0]
        rows = np.loadtxt(block.splitlines(), delimiter=",", ndmin=2)
        nodal = np.zeros((m.num_nodes, 3))
        nodal[rows[:, 0].astype(int) - 1, rows[:, 1].astype(int) - 1] = rows[:, 2]
        assert nodal.sum(axis=0) == pytest.approx(force, rel=1e-12)
        top_area = 10.0 * 8.0
        if m.order == 1:
            # Linear triangles: A t / 3 per vertex, i.e. the lumped node areas times t.
            from fea.topology import node_areas

            lumped = node_areas(m.num_nodes, m.points, patch.faces)
            assert np.allclose(nodal, np.outer(lumped, force / top_area), atol=1e-12)
        else:
            # Quadratic triangles: no corner load, A t / 3 on each mid-edge node.
            assert np.abs(nodal[: mesh.num_nodes]).max() == 0.0
            assert (np.count_nonzero(nodal[:, 2])
                    == len({tuple(sorted(e)) for f in patch.faces
                            for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}))


def test_material_binning_respects_its_error_bound(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    moduli = np.exp(rng.uniform(np.log(50.0), np.log(25000.0), 5000))
    groups = 32
    binned = bin_moduli(moduli, groups)
    index, values, error = binned.group, binned.E_MPa, binned.max_rel_error
    ratio = (moduli.max() / moduli.min()) ** (1.0 / groups)
    assert values.size <= groups
    assert np.all(np.diff(values) > 0)
    rel = np.abs(values[index] - moduli) / moduli
    assert error == pytest.approx(rel.max())
    # The harmonic mean of a bin's ends minimises the largest relative error |E_g - E| / E:
    # (r - 1) / (r + 1), below the geometric mean's sqrt(r) - 1 (5.1 % vs 10.2 % here).
    assert error <= (ratio - 1.0) / (ratio + 1.0) + 1e-12
    assert error > 0.5 * (ratio - 1.0) / (ratio + 1.0)
    # More groups, smaller error; one modulus needs one exact group.
    assert bin_moduli(moduli, 256).max_rel_error < 0.013
    assert bin_moduli(np.full(4, 7.0), 8).E_MPa.tolist() == [7.0]
    # The deck carries one material per group and reports the same error.
    mesh = box_mesh([0, 0, 0], [1, 1, 1], (10, 10, 8))
    summary = write_inp(tmp_path / "binned.inp", mesh, moduli[: mesh.num_cells], 0.3,
                        [Support("fix", np.array([0]))], [], material_groups=groups)
    assert summary.num_materials == summary.path.read_text().count("*MATERIAL") <= groups
    assert summary.max_binning_rel_error <= np.sqrt(ratio) - 1.0 + 1e-12
    exact = write_inp(tmp_path / "exact.inp", mesh, moduli[: mesh.num_cells], 0.3,
                      [Support("fix", np.array([0]))], [])
    assert exact.num_materials == mesh.num_cells and exact.max_binning_rel_error == 0.0


def test_bad_requests_are_refused(tmp_path: Path) -> None:
    mesh = box_mesh([0, 0, 0], [1, 1, 1], (1, 1, 1))
    moduli = np.full(mesh.num_cells, 1e3)
    with pytest.raises(CalculixError, match="no support"):
        write_inp(tmp_path / "a.inp", mesh, moduli, 0.3, [], [])
    with pytest.raises(ValueError, match="unknown CalculiX solver"):
        write_inp(tmp_path / "a.inp", mesh, moduli, 0.3, [Support("s", np.array([0]))], [],
                  solver="magic")
    with pytest.raises(ValueError, match="one modulus per cell"):
        write_inp(tmp_path / "a.inp", mesh, moduli[:-1], 0.3, [Support("s", np.array([0]))], [])
    with pytest.raises(CalculixError, match=r"must end in \.inp"):
        write_inp(tmp_path / "a.txt", mesh, moduli, 0.3, [Support("s", np.array([0]))], [])
    deck = write_inp(tmp_path / "a.inp", mesh, moduli, 0.3, [Support("s", np.array([0]))], []).path
    with pytest.raises(CalculixError, match=r"not found.*hint: install"):
        run_calculix(deck, ccx="no-such-ccx-binary")


# -- against CalculiX ----------------------------------------------------------------------


@needs_ccx
@pytest.mark.parametrize("degree", [1, 2])
def test_calculix_agrees_with_osteofe_on_a_graded_bar(degree: int, tmp_path: Path) -> None:
    mesh = _distorted_box()
    moduli = _graded_moduli(mesh)
    assert np.unique(moduli).size == 8
    supports = _clamp(mesh)
    cases = [[_top_patch(mesh, f)] for f in FORCES]
    model = ElasticModel(mesh, moduli, 0.3, supports,
                         SolverOptions(degree=degree, pc_type="lu"))
    ours = [model.solve(case) for case in cases]
    summary = write_inp(tmp_path / f"bar{degree}.inp",
                        mesh if degree == 1 else to_quadratic(mesh), moduli, 0.3, supports,
                        cases[0], extra_cases=cases[1:])
    assert summary.element_type == ("C3D4" if degree == 1 else "C3D10")
    assert summary.num_materials == 8
    result = run_calculix(summary.path)
    assert len(result.cases) == 2
    for force, sol, ccx in zip(FORCES, ours, result.cases, strict=True):
        # Reactions: the support carries the whole load, in both codes (.dat has 7 digits).
        assert ccx.reactions_n["clamp"] == pytest.approx(-force, rel=1e-5, abs=1e-4)
        assert np.abs(ccx.reactions_n["clamp"] - sol.reactions_n["clamp"]).max() < (
            1e-6 * np.linalg.norm(force))
        # Strains: same discretisation, so element by element (tensor shear in both).
        peak = np.abs(sol.strain).max()
        assert np.abs(ccx.element_strain - sol.strain).max() < 1e-5 * peak
        p_ours, p_ccx = principal_strains(sol.strain), principal_strains(ccx.element_strain)
        assert p_ccx[:, 2].max() == pytest.approx(p_ours[:, 2].max(), rel=1e-5)
        assert p_ccx[:, 0].min() == pytest.approx(p_ours[:, 0].min(), rel=1e-5)
        # Displacements at the corner nodes (osteofe reports those).
        corners = slice(0, mesh.num_nodes)
        scale = np.abs(sol.displacement_mm).max()
        assert np.abs(ccx.displacement_mm[corners] - sol.displacement_mm).max() < 1e-5 * scale
    model.destroy()


@needs_ccx
def test_prescribed_displacement_and_binned_materials_agree(tmp_path: Path) -> None:
    mesh = _distorted_box()
    rng = np.random.default_rng(5)
    moduli = np.exp(rng.uniform(np.log(200.0), np.log(20000.0), mesh.num_cells))
    top = np.flatnonzero(mesh.points[:, 2] > LENGTH - 1e-9)
    supports = [Support("bottom", np.flatnonzero(mesh.points[:, 2] < 1e-9)),
                Support("pull", top, (2,), (0.0, 0.0, 0.03))]
    summary = write_inp(tmp_path / "pull.inp", mesh, moduli, 0.25, supports, [],
                        material_groups=12)
    assert summary.num_materials <= 12 and 0.0 < summary.max_binning_rel_error < 0.22
    result = run_calculix(summary.path)
    # osteofe on the moduli the deck carries: the same model, the same answer.
    sol = ElasticModel(mesh, summary.youngs_modulus_mpa, 0.25, supports,
                       SolverOptions(pc_type="lu")).solve([])
    pull = sol.reactions_n["pull"][2]
    assert pull > 0.0  # the force the support exerts on the bar: upwards
    assert result.reactions_n["pull"][2] == pytest.approx(pull, rel=1e-6)
    assert result.reactions_n["bottom"] == pytest.approx(sol.reactions_n["bottom"], abs=1e-5
                                                         * abs(pull))
    assert result.displacement_mm[top, 2] == pytest.approx(0.03, rel=1e-6)
    p_ours, p_ccx = principal_strains(sol.strain), principal_strains(result.element_strain)
    assert p_ccx[:, 2].max() == pytest.approx(p_ours[:, 2].max(), rel=1e-5)
    assert p_ccx[:, 0].min() == pytest.approx(p_ours[:, 0].min(), rel=1e-5)


@needs_ccx
def test_wrong_c3d10_node_order_is_detected(tmp_path: Path) -> None:
    """Swapping two mid-edge columns (gmsh's order) must change CalculiX's answer."""
    mesh = box_mesh([0, 0, 0], [10, 8, LENGTH], (2, 2, 6))
    quad = to_quadratic(mesh)
    wrong = TetMesh(quad.points, quad.cells[:, [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]], quad.cell_tags)
    supports = [Support("clamp", np.flatnonzero(mesh.points[:, 2] < 1e-9))]
    patch = [_top_patch(mesh, np.array([50.0, 0.0, -100.0]))]
    moduli = np.full(mesh.num_cells, 1e4)
    good = run_calculix(write_inp(tmp_path / "good.inp", quad, moduli, 0.3, supports,
                                  patch).path)
    try:
        bad = run_calculix(write_inp(tmp_path / "bad.inp", wrong, moduli, 0.3, supports,
                                     patch).path)
    except CalculixError:
        return  # ccx refuses the distorted elements: detected
    tip = mesh.points[:, 2] > LENGTH - 1e-9
    diff = np.abs(bad.displacement_mm[tip] - good.displacement_mm[tip]).max()
    assert diff > 0.05 * np.abs(good.displacement_mm[tip]).max()


@needs_ccx
def test_a_broken_deck_is_a_clear_error(tmp_path: Path) -> None:
    deck = tmp_path / "broken.inp"
    deck.write_text("*NODE\n1, 0, 0, 0\n2, 1, 0, 0\n3, 0, 1, 0\n4, 0, 0, 1\n"
                    "*ELEMENT, TYPE=C3D4, ELSET=EALL\n1, 1, 2, 3, 4\n"
                    "*STEP\n*STATIC\n*END STEP\n")
    with pytest.raises(CalculixError, match=r"CalculiX failed .*no material") as info:
        run_calculix(deck)
    assert "hint:" in str(info.value) and Path(str(deck).replace(".inp", ".ccx.log")).is_file()
