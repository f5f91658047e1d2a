"""Verification ladder for the DOLFINx elasticity adapter (DESIGN.md 5 a, c, f)."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from fea.loads import LoadPatch
from fea.solver import ElasticModel, SolverOptions, Support
from fea.topology import boundary_faces, face_normals_and_areas
from meshing.structured import box_mesh
from meshing.types import TetMesh

pytestmark = pytest.mark.mpi


def _distorted_box(seed: int = 1) -> TetMesh:
    """A box mesh whose interior nodes are randomly moved (an unstructured-looking mesh)."""
    mesh = box_mesh([0, 0, 0], [10, 8, 12], (5, 4, 6))
    pts = mesh.points.copy()
    interior = np.all((pts > 1e-9) & (pts < np.array([10, 8, 12]) - 1e-9), axis=1)
    rng = np.random.default_rng(seed)
    pts[interior] += rng.uniform(-0.35, 0.35, size=(interior.sum(), 3))
    return TetMesh(pts, mesh.cells, mesh.cell_tags)


GRADIENT = np.array([[1.0e-3, 2.0e-4, -3.0e-4], [5.0e-4, -2.0e-3, 1.0e-4], [0.0, 7.0e-4, 1.5e-3]])
OFFSET = np.array([0.01, -0.02, 0.03])


def _linear_field(x: np.ndarray) -> np.ndarray:
    return GRADIENT @ x + OFFSET[:, None]


@pytest.mark.parametrize("degree", [1, 2])
def test_linear_displacement_field_is_reproduced_exactly(degree):
    mesh = _distorted_box()
    nodes = np.unique(boundary_faces(mesh))
    model = ElasticModel(
        mesh, np.full(mesh.num_cells, 5000.0), 0.3,
        [Support("boundary", nodes, displacement_mm=_linear_field)],
        SolverOptions(degree=degree, rtol=1e-12),
    )
    sol = model.solve([])
    expected = _linear_field(mesh.points.T).T
    assert np.max(np.abs(sol.displacement_mm - expected)) < 1e-9
    sym = 0.5 * (GRADIENT + GRADIENT.T)
    assert np.max(np.abs(sol.strain - sym[None])) < 1e-9
    # No external load: the boundary reactions are self-equilibrated.
    assert np.linalg.norm(sol.reactions_n["boundary"]) < 1e-6 * 5000.0 * 100.0


def _bar_supports(mesh: TetMesh) -> list[Support]:
    pts = mesh.points
    bottom = np.flatnonzero(pts[:, 2] < 1e-9)
    origin = np.flatnonzero(np.all(pts < 1e-9, axis=1))
    x_end = np.flatnonzero((pts[:, 2] < 1e-9) & (pts[:, 1] < 1e-9)
                           & (pts[:, 0] > pts[:, 0].max() - 1e-9))
    return [Support("bottom", bottom, (2,)), Support("pin", origin, (0, 1)),
            Support("roller", x_end, (1,))]


def _top_patch(mesh: TetMesh, force: np.ndarray) -> LoadPatch:
    faces = boundary_faces(mesh)
    top = faces[np.all(mesh.points[faces][:, :, 2] > mesh.points[:, 2].max() - 1e-9, axis=1)]
    _, areas = face_normals_and_areas(mesh.points, top)
    return LoadPatch(top, np.unique(top), float(areas.sum()), force)


@pytest.mark.parametrize("pc", ["gamg", "lu"])
def test_uniaxial_bar_matches_closed_form(pc):
    # F = E A eps: a 10 x 10 x 50 mm bar, E = 1200 MPa, 1500 N in compression.
    mesh = box_mesh([0, 0, 0], [10, 10, 50], (3, 3, 12))
    youngs, area, length, force = 1200.0, 100.0, 50.0, 1500.0
    # The exact field is in the P1 space, so what is left is the algebraic error: solve to
    # 1e-10 so that a 1e-7 check of every cell's strain measures the discretisation only
    # (at the default rtol 1e-8, GAMG on 2 ranks leaves 1.3e-7 in the worst cell).
    model = ElasticModel(mesh, np.full(mesh.num_cells, youngs), 0.3, _bar_supports(mesh),
                         SolverOptions(pc_type=pc, rtol=1e-10))
    sol = model.solve([_top_patch(mesh, np.array([0.0, 0.0, -force]))])
    top = mesh.points[:, 2] > length - 1e-9
    expected = -force * length / (youngs * area)
    assert sol.displacement_mm[top, 2] == pytest.approx(expected, rel=1e-7)
    assert sol.strain[:, 2, 2] == pytest.approx(-force / (youngs * area), rel=1e-7)
    assert sol.strain[:, 0, 0] == pytest.approx(0.3 * force / (youngs * area), rel=1e-6)
    assert sol.reactions_n["bottom"][2] == pytest.approx(force, rel=1e-6)
    assert sol.stats.iterations < 60


def test_cantilever_tip_deflection_converges_to_beam_theory():
    # Euler-Bernoulli: delta = F L^3 / (3 E I); a slender 4 x 4 x 80 mm beam, P2 elements.
    width, length, youngs, force = 4.0, 80.0, 10000.0, 2.0
    mesh = box_mesh([0, 0, 0], [width, width, length], (2, 2, 24))
    clamped = np.flatnonzero(mesh.points[:, 2] < 1e-9)
    model = ElasticModel(mesh, np.full(mesh.num_cells, youngs), 0.0,
                         [Support("clamp", clamped)], SolverOptions(degree=2, rtol=1e-10))
    sol = model.solve([_top_patch(mesh, np.array([force, 0.0, 0.0]))])
    inertia = width**4 / 12.0
    beam = force * length**3 / (3.0 * youngs * inertia)
    # Timoshenko shear correction for a square section (k = 5/6, nu = 0): F L / (k G A).
    shear = force * length / (5.0 / 6.0 * youngs / 2.0 * width**2)
    tip = sol.displacement_mm[mesh.points[:, 2] > length - 1e-9, 0].mean()
    assert tip == pytest.approx(beam + shear, rel=0.02)
    assert sol.reactions_n["clamp"] == pytest.approx([-force, 0.0, 0.0], abs=1e-6)


def test_parallel_and_serial_solutions_agree():
    """Same problem on COMM_WORLD (any size) and COMM_SELF: same field to solver tolerance."""
    mesh = _distorted_box(seed=3)
    rng = np.random.default_rng(0)
    moduli = rng.uniform(100.0, 20000.0, mesh.num_cells)
    supports = [Support("bottom", np.flatnonzero(mesh.points[:, 2] < 1e-9))]
    patch = _top_patch(mesh, np.array([300.0, -200.0, -1000.0]))
    opts = SolverOptions(rtol=1e-11)
    world = ElasticModel(mesh, moduli, 0.3, supports, opts, comm=MPI.COMM_WORLD).solve([patch])
    serial = ElasticModel(mesh, moduli, 0.3, supports, opts, comm=MPI.COMM_SELF).solve([patch])
    scale = np.abs(serial.displacement_mm).max()
    assert np.abs(world.displacement_mm - serial.displacement_mm).max() < 1e-7 * scale
    assert world.reactions_n["bottom"] == pytest.approx(-patch.force_n, rel=1e-7)


def test_nonconverging_solve_is_an_error_with_history():
    from fea.errors import SolverError

    mesh = box_mesh([0, 0, 0], [10, 10, 50], (3, 3, 12))
    model = ElasticModel(mesh, np.full(mesh.num_cells, 1000.0), 0.3, _bar_supports(mesh),
                         SolverOptions(pc_type="jacobi", max_it=3))
    with pytest.raises(SolverError, match=r"did not converge.*last residuals"):
        model.solve([_top_patch(mesh, np.array([0.0, 0.0, -10.0]))])


def test_bad_inputs_are_refused_before_any_collective():
    from fea.errors import BoundaryConditionError

    mesh = box_mesh([0, 0, 0], [1, 1, 1], (1, 1, 1))
    with pytest.raises(ValueError, match="finite and positive"):
        ElasticModel(mesh, np.full(mesh.num_cells, -1.0), 0.3, [Support("s", np.array([0]))])
    with pytest.raises(BoundaryConditionError, match="no support"):
        ElasticModel(mesh, np.full(mesh.num_cells, 1.0), 0.3, [])


def _points_in_cells(mesh: TetMesh, reference: np.ndarray) -> np.ndarray:
    """World coordinates (m, q, 3) of reference-tetrahedron points in every cell."""
    corners = mesh.points[mesh.vertex_cells()]
    bary = np.column_stack([1.0 - reference.sum(axis=1), reference])
    return np.einsum("qk,mkd->mqd", bary, corners)


def test_per_quadrature_point_moduli_integrate_a_linear_field_exactly():
    # For P1 strains are constant per cell, so a modulus linear in space integrates to its
    # centroid value: moduli at the quadrature points (degree 2 integrates linear fields
    # exactly) must give the same answer as per-cell centroid moduli. This also checks that
    # the points land in the right cells, in the right order.
    from fea.solver import modulus_quadrature_points

    mesh = _distorted_box(seed=5)
    modulus_at = lambda x: 500.0 + 80.0 * x[..., 0] + 150.0 * x[..., 2]  # noqa: E731
    reference = modulus_quadrature_points(2)
    per_point = modulus_at(_points_in_cells(mesh, reference))
    per_cell = modulus_at(mesh.centroids())
    supports = [Support("bottom", np.flatnonzero(mesh.points[:, 2] < 1e-9))]
    patch = _top_patch(mesh, np.array([200.0, 0.0, -800.0]))
    opts = SolverOptions(rtol=1e-12)
    a = ElasticModel(mesh, per_point, 0.3, supports, opts).solve([patch])
    b = ElasticModel(mesh, per_cell, 0.3, supports, opts).solve([patch])
    scale = np.abs(b.displacement_mm).max()
    assert np.abs(a.displacement_mm - b.displacement_mm).max() < 1e-8 * scale
    # A field that is not linear differs: the points carry information a cell value cannot.
    curved = ElasticModel(mesh, per_point * (1.0 + 0.5 * np.sin(per_point / 300.0)), 0.3,
                          supports, opts).solve([patch])
    assert np.abs(curved.displacement_mm - b.displacement_mm).max() > 1e-3 * scale


def test_moduli_of_the_wrong_shape_are_refused():
    mesh = box_mesh([0, 0, 0], [1, 1, 1], (1, 1, 1))
    with pytest.raises(ValueError, match="per quadrature point"):
        ElasticModel(mesh, np.ones((mesh.num_cells, 7)), 0.3, [Support("s", np.array([0]))])


def test_softened_moduli_with_the_old_preconditioner_give_the_fresh_answer():
    """update_moduli(refresh_preconditioner=False): same solution as a freshly set-up model.

    The secant moduli of a softening analysis only fall; CG with the preconditioner of the
    stiffer operator must still converge to the new operator's solution (more iterations),
    here with a tenfold softening of a third of the cells, warm-started as the nonlinear
    driver does.
    """
    mesh = _distorted_box(seed=5)
    rng = np.random.default_rng(2)
    stiff = rng.uniform(1000.0, 20000.0, mesh.num_cells)
    soft = np.where(rng.random(mesh.num_cells) < 1 / 3, stiff / 10.0, stiff)
    supports = [Support("bottom", np.flatnonzero(mesh.points[:, 2] < 1e-9))]
    patch = _top_patch(mesh, np.array([200.0, 100.0, -800.0]))
    opts = SolverOptions(rtol=1e-11)
    reused = ElasticModel(mesh, stiff, 0.3, supports, opts)
    reused.set_warm_start(True)
    first = reused.solve([patch])
    reused.update_moduli(soft, refresh_preconditioner=False)
    again = reused.solve([patch])
    fresh = ElasticModel(mesh, soft, 0.3, supports, opts).solve([patch])
    scale = np.abs(fresh.displacement_mm).max()
    assert np.abs(again.displacement_mm - fresh.displacement_mm).max() < 1e-8 * scale
    assert np.abs(again.displacement_mm - first.displacement_mm).max() > 1e-2 * scale
    assert again.reactions_n["bottom"] == pytest.approx(-patch.force_n, rel=1e-8)
    assert "reassembly" in reused.timings_s


def test_freeing_gamg_product_data_keeps_the_answer_and_no_global_option():
    """mat_product_clear (set unprefixed for the set-up only) changes memory, not the solve."""
    from petsc4py import PETSc

    mesh = box_mesh([0, 0, 0], [10, 10, 50], (3, 3, 12))
    moduli = np.random.default_rng(2).uniform(100.0, 20000.0, mesh.num_cells)
    patch = _top_patch(mesh, np.array([200.0, 0.0, -1500.0]))
    options = PETSc.Options()
    assert not options.hasName("mat_product_clear")
    cleared = ElasticModel(mesh, moduli, 0.3, _bar_supports(mesh),
                           SolverOptions(degree=2)).solve([patch])
    assert not options.hasName("mat_product_clear")  # removed after the set-up
    kept = ElasticModel(mesh, moduli, 0.3, _bar_supports(mesh),
                        SolverOptions(degree=2, extra={"mat_product_clear": "0"})).solve([patch])
    assert cleared.stats.iterations == kept.stats.iterations
    scale = np.abs(kept.displacement_mm).max()
    # The same preconditioner: equal up to round-off (GAMG set-ups differ by ~1e-12).
    assert np.abs(cleared.displacement_mm - kept.displacement_mm).max() < 1e-10 * scale
    options["mat_product_clear"] = "0"  # a user's global value wins and stays
    try:
        ElasticModel(mesh, moduli, 0.3, _bar_supports(mesh), SolverOptions(degree=2))
        assert options.getString("mat_product_clear") == "0"
    finally:
        options.delValue("mat_product_clear")


_SIGNALS_AFTER_LOADING_THE_BACKEND = """
import os, signal, socket, sys
import fea.solver  # loads the backend: dolfinx_solver, dolfinx, petsc4py
a, b = socket.socketpair()
b.close()
try:
    a.send(b"x")
except BrokenPipeError:
    print("broken pipe raised", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.mark.skip_in_parallel
def test_the_backend_leaves_sigpipe_and_sigterm_to_python() -> None:
    """A write to a closed socket raises; SIGTERM terminates (no PETSc MPI_Abort for either).

    PETSc's default signal handlers turned a Dask scheduler's write to a worker that had
    just died into an MPI_Abort of the whole cohort process.
    """
    import signal
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _SIGNALS_AFTER_LOADING_THE_BACKEND],
                          capture_output=True, text=True, timeout=120)
    assert "broken pipe raised" in proc.stdout, proc.stderr
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "PETSC ERROR" not in proc.stderr
