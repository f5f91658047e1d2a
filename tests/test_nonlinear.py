"""Nonlinear (softening) load to failure against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from fea.nonlinear import SofteningMaterial, displacement_controlled_failure, equivalent_strain
from meshing.structured import box_mesh

pytestmark = pytest.mark.mpi


def test_equivalent_strain_closed_forms():
    nu = 0.3
    uniaxial = np.diag([2e-3, -nu * 2e-3, -nu * 2e-3])[None]
    assert equivalent_strain(uniaxial, nu) == pytest.approx([2e-3])
    # Pure shear: tau = eps_xy / (1 + nu) for a unit modulus, von Mises = sqrt(3) tau.
    shear = np.zeros((1, 3, 3))
    shear[0, 0, 1] = shear[0, 1, 0] = 1e-3
    assert equivalent_strain(shear, nu) == pytest.approx([np.sqrt(3) * 1e-3 / 1.3])
    # A hydrostatic strain has no deviatoric part.
    assert equivalent_strain(np.eye(3)[None] * 1e-3, nu) == pytest.approx([0.0], abs=1e-15)


def test_curve_shape_and_secant_modulus():
    mat = SofteningMaterial(np.array([10000.0]), np.array([50.0]), np.array([0.01]),
                            np.array([-2000.0]), np.array([10.0]), 0.3)
    strains = np.array([0.002, 0.005, 0.008, 0.015, 0.05])
    expected = [20.0, 50.0, 50.0, 40.0, 10.0]
    assert [mat.stress(np.array([e]))[0] for e in strains] == pytest.approx(expected)
    assert mat.secant_modulus(np.array([0.008])) == pytest.approx([50.0 / 0.008])


def _bar(length: float, layers: int, yield_stress, min_stress: float):
    """A 10 x 10 mm bar of ``layers`` cube layers along z, and softening curves per cell.

    Returns the mesh, the material (E 10 GPa, plateau end 0.01, softening -2 GPa, nu 0),
    the top nodes (pushed) and the bottom nodes (fixed).
    """
    mesh = box_mesh([0, 0, 0], [10, 10, length], (2, 2, layers))
    n = mesh.num_cells
    mat = SofteningMaterial(np.full(n, 10000.0), np.broadcast_to(yield_stress, n).copy(),
                            np.full(n, 0.01), np.full(n, -2000.0), np.full(n, min_stress), 0.0)
    top = np.flatnonzero(mesh.points[:, 2] > length - 1e-9)
    bottom = np.flatnonzero(mesh.points[:, 2] < 1e-9)
    return mesh, mat, top, bottom


def test_bar_force_displacement_follows_the_material_curve():
    # nu = 0 and a rigid plate on top: the strain is exactly uniaxial and uniform, so the
    # head force is A sigma(delta / L) at every increment, peaking at A * yield stress.
    length, area = 50.0, 100.0
    mesh, mat, top, bottom = _bar(length, 10, 50.0, 10.0)
    curve = displacement_controlled_failure(mesh, mat, bottom, top, [0.0, 0.0, -1.0],
                                            step_mm=0.05, max_increments=40)
    strain = curve.displacement_mm / length
    expected = area * np.array([mat.stress(np.array([e]))[0] for e in strain])
    assert curve.force_n == pytest.approx(expected, rel=1e-5)
    assert curve.peak_force_n == pytest.approx(area * 50.0, rel=1e-6)
    assert curve.peak_reached and curve.converged.all()
    csv_text = curve.to_csv()
    assert csv_text.splitlines()[0].startswith("increment,displacement_mm,force_N")
    assert len(csv_text.splitlines()) == curve.force_n.size + 1


def test_weak_layer_lowers_the_peak_in_proportion():
    # A layer with half the yield stress carries the whole force: peak = A * S_weak.
    length, area = 40.0, 100.0
    z = box_mesh([0, 0, 0], [10, 10, length], (2, 2, 8)).centroids()[:, 2]
    mesh, mat, top, bottom = _bar(length, 8, np.where((z > 20.0) & (z < 25.0), 25.0, 50.0),
                                  5.0)
    curve = displacement_controlled_failure(mesh, mat, bottom, top, [0.0, 0.0, -1.0],
                                            step_mm=0.02, max_increments=60)
    assert curve.peak_force_n == pytest.approx(area * 25.0, rel=1e-3)
    weak = np.flatnonzero((z > 20.0) & (z < 25.0))
    assert set(curve.critical_cells.tolist()) <= set(weak.tolist())


def test_ranks_agree_on_rebuilding_the_preconditioner(monkeypatch):
    """The rent-or-buy refresh compares each rank's own times: under MPI the ranks must
    take the same decision (a rebuild is collective). Rank 1 alone is told it is due."""
    from mpi4py import MPI

    import fea.nonlinear

    rank = MPI.COMM_WORLD.rank
    monkeypatch.setattr(fea.nonlinear._PreconditionerReuse, "refresh_due",
                        property(lambda self: rank == MPI.COMM_WORLD.size - 1))
    area = 100.0
    mesh, mat, top, bottom = _bar(40.0, 8, 50.0, 5.0)
    curve = displacement_controlled_failure(mesh, mat, bottom, top, [0.0, 0.0, -1.0],
                                            step_mm=0.05, max_increments=20)
    assert curve.peak_force_n == pytest.approx(area * 50.0, rel=1e-3)
    # Every secant update rebuilt it (the last rank's verdict, shared by all).
    assert curve.preconditioner_setups > 1
    assert MPI.COMM_WORLD.allreduce(curve.preconditioner_setups, op=MPI.MAX) == (
        MPI.COMM_WORLD.allreduce(curve.preconditioner_setups, op=MPI.MIN))
