"""The two-level p-multigrid of P2 models (fea.pmultigrid): exact coarse level, same answer."""

from __future__ import annotations

import numpy as np
import pytest

from fea.solver import ElasticModel, SolverOptions, Support
from fea.types import NodalForces
from meshing.structured import box_mesh
from meshing.types import TetMesh

pytestmark = pytest.mark.mpi


def _layered_box() -> tuple[TetMesh, np.ndarray]:
    """A distorted 12 x 10 x 30 mm box: 20 GPa shell, 800 MPa core, a 5 MPa 'lesion'."""
    mesh = box_mesh([0, 0, 0], [12, 10, 30], (4, 4, 10))
    pts = mesh.points.copy()
    interior = np.all((pts > 1e-9) & (pts < np.array([12, 10, 30]) - 1e-9), axis=1)
    pts[interior] += np.random.default_rng(4).uniform(-0.5, 0.5, (interior.sum(), 3))
    mesh = TetMesh(pts, mesh.cells, mesh.cell_tags)
    mid = mesh.centroids()
    moduli = np.where(np.hypot(mid[:, 0] - 6, mid[:, 1] - 5) > 3.5, 20000.0, 800.0)
    moduli[np.linalg.norm(mid - [6, 5, 15], axis=1) < 3.0] = 5.0
    return mesh, moduli


def _supports(mesh: TetMesh) -> list[Support]:
    pts = mesh.points
    bottom = np.flatnonzero(pts[:, 2] < 1e-9)
    # A prescribed (non-zero) x-displacement of one top edge, and the rest free.
    edge = np.flatnonzero((pts[:, 2] > 30 - 1e-9) & (pts[:, 1] < 1e-9))
    return [Support("bottom", bottom), Support("pushed", edge, (0,), np.array([0.02, 0, 0]))]


def _top_load(mesh: TetMesh) -> NodalForces:
    top = np.flatnonzero(mesh.points[:, 2] > 30 - 1e-9)
    return NodalForces(top, np.tile([40.0, 25.0, -300.0], (top.size, 1)) / top.size)


@pytest.mark.parametrize("per_point", [False, True])
def test_the_p1_level_is_the_galerkin_product_of_the_p2_stiffness(per_point):
    """P1 is a subspace of P2, so I^T A I must equal the directly assembled P1 stiffness.

    Checked on the free dofs to round-off (the prescribed ones: zero rows/columns of the
    interpolation, unit diagonal of the P1 matrix), with moduli per cell and per quadrature
    point (the P1 form must use the P2 form's quadrature).
    """
    from petsc4py import PETSc

    from fea.solver import modulus_quadrature_points

    mesh, moduli = _layered_box()
    if per_point:
        points = modulus_quadrature_points(2).shape[0]
        moduli = moduli[:, None] * np.linspace(0.7, 1.3, points)[None, :]
    model = ElasticModel(mesh, moduli, 0.3, _supports(mesh), SolverOptions(degree=2))
    coarse = model._coarse
    assert coarse is not None
    product = model.A.ptap(coarse.interpolation)
    product.axpy(-1.0, coarse.matrix, structure=PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN)
    # Constrained coarse dofs: 0 in the product, 1 in the P1 matrix.
    diagonal = product.getDiagonal()
    unit = coarse.matrix.getDiagonal()
    constrained = np.isclose(unit.array, 1.0) & np.isclose(diagonal.array, -1.0)
    diagonal.array[constrained] += 1.0
    product.setDiagonal(diagonal)
    assert model.comm.allreduce(int(constrained.sum())) > 0
    scale = coarse.matrix.norm(PETSc.NormType.INFINITY)
    assert product.norm(PETSc.NormType.INFINITY) < 1e-12 * scale
    model.destroy()


def test_the_embedding_is_dolfinx_interpolation_with_the_constraints_left_out():
    """The dofmap-built P1 -> P2 embedding against dolfinx's general interpolation matrix."""
    import dolfinx.fem.petsc
    from petsc4py import PETSc

    mesh, moduli = _layered_box()
    model = ElasticModel(mesh, moduli, 0.3, _supports(mesh), SolverOptions(degree=2))
    coarse = model._coarse
    assert coarse is not None
    reference = dolfinx.fem.petsc.interpolation_matrix(coarse.space, model.V)
    reference.assemble()
    keep_cols, keep_rows = reference.createVecs()
    keep_rows.array[:] = ~model._constrained[: keep_rows.getLocalSize()]
    coarse_fixed = np.isclose(coarse.matrix.getDiagonal().array, 1.0)
    keep_cols.array[:] = ~coarse_fixed
    reference.diagonalScale(L=keep_rows, R=keep_cols)
    assert model.comm.allreduce(int(coarse_fixed.sum())) > 0
    reference.axpy(-1.0, coarse.interpolation,
                   structure=PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN)
    assert reference.norm(PETSc.NormType.INFINITY) < 1e-14
    # One or two entries per row (vertex / edge dof), not a cell's worth.
    info = coarse.interpolation.getInfo(PETSc.Mat.InfoType.LOCAL)
    assert info["nz_used"] <= 2 * coarse.interpolation.getLocalSize()[0]
    model.destroy()


def test_two_level_and_gamg_give_the_same_answer_in_fewer_iterations():
    mesh, moduli = _layered_box()
    supports = _supports(mesh)
    load = [_top_load(mesh)]
    two_level = ElasticModel(mesh, moduli, 0.3, supports, SolverOptions(degree=2, rtol=1e-11))
    assert two_level.ksp.getPC().getType() == "mg"
    gamg = ElasticModel(mesh, moduli, 0.3, supports,
                        SolverOptions(degree=2, rtol=1e-11, p_multigrid=False))
    assert gamg.ksp.getPC().getType() == "gamg"
    a, b = two_level.solve(load), gamg.solve(load)
    scale = np.abs(b.displacement_mm).max()
    assert np.abs(a.displacement_mm - b.displacement_mm).max() < 1e-8 * scale
    assert a.reactions_n["pushed"] == pytest.approx(b.reactions_n["pushed"], rel=1e-7)
    # The prescribed value is kept exactly by the coarse corrections.
    pushed = supports[1].nodes
    assert np.abs(a.displacement_mm[pushed, 0] - 0.02).max() < 1e-12
    assert a.stats.iterations < b.stats.iterations
    two_level.destroy()
    gamg.destroy()


def test_refreshed_moduli_reach_the_coarse_level():
    """update_moduli rebuilds the P1 stiffness too: the answer of a fresh model."""
    mesh, moduli = _layered_box()
    supports = _supports(mesh)
    load = [_top_load(mesh)]
    options = SolverOptions(degree=2, rtol=1e-11)
    model = ElasticModel(mesh, moduli, 0.3, supports, options)
    softer = moduli * np.where(mesh.centroids()[:, 2] < 10.0, 0.05, 1.0)
    model.update_moduli(softer)
    again = model.solve(load)
    fresh = ElasticModel(mesh, softer, 0.3, supports, options).solve(load)
    scale = np.abs(fresh.displacement_mm).max()
    assert np.abs(again.displacement_mm - fresh.displacement_mm).max() < 1e-8 * scale
    # Without the coarse reassembly the P1 level would still be the stiff one.
    assert again.stats.iterations <= 1.25 * fresh.stats.iterations + 1  # partition noise
    model.destroy()


def test_the_options_move_gamg_settings_to_the_coarse_level():
    options = SolverOptions(degree=2, extra={"pc_gamg_threshold": "0.05",
                                             "ksp_monitor_short": ""})
    two_level = options.petsc_options()
    assert options.uses_p_multigrid
    assert two_level["pc_type"] == "mg" and two_level["mg_coarse_pc_type"] == "gamg"
    assert two_level["mg_coarse_pc_gamg_threshold"] == "0.05"  # the user's, on the GAMG
    assert "pc_gamg_threshold" not in two_level and "ksp_monitor_short" in two_level
    assert two_level["mg_coarse_mg_levels_ksp_type"] == "chebyshev"  # GAMG's own levels
    assert options.petsc_options(algebraic=True)["pc_type"] == "gamg"
    assert not SolverOptions(degree=1).uses_p_multigrid
    assert not SolverOptions(degree=2, pc_type="lu").uses_p_multigrid
    assert not SolverOptions(degree=2, p_multigrid=False).uses_p_multigrid
