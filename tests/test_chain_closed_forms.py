"""Closed forms through the whole CT -> material -> FE chain (DESIGN.md 5 c, d)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from fea.loads import LoadPatch
from fea.solver import ElasticModel, SolverOptions, Support
from fea.topology import boundary_faces, face_normals_and_areas
from material.calibration import LinearCalibration
from material.laws import MaterialModel
from material.mapping import map_material
from meshing.structured import box_mesh
from meshing.types import CTVolume, ImageGrid, TetMesh

pytestmark = pytest.mark.mpi

SLOPE, INTERCEPT = 0.0008, -0.01  # g/cm3 per HU, g/cm3


def _hand_modulus(hu: np.ndarray | float) -> np.ndarray:
    """Written out independently of material.laws: Mayo ash chain, Schileo 0.6, Morgan neck."""
    rho_qct = INTERCEPT + SLOPE * np.asarray(hu, dtype=float)
    rho_ash = 0.0633 + 0.887 * rho_qct
    rho_app = rho_ash / 0.6
    return 6850.0 * rho_app**1.49


def _ct_around_bar(hu_of_z, spacing=(0.7, 0.7, 0.5)) -> CTVolume:
    # A rotated-free but anisotropic grid whose voxels cover [-3, 13] x [-3, 13] x [-3, 53] mm.
    origin = np.array([-3.0, -3.0, -3.0])
    shape = tuple(int(np.ceil(56.0 / s)) + 1 if i == 2 else int(np.ceil(16.0 / s)) + 1
                  for i, s in enumerate(spacing))
    grid = ImageGrid(shape, np.array(spacing), origin)
    z = origin[2] + spacing[2] * np.arange(shape[2])
    hu = np.broadcast_to(hu_of_z(z)[None, None, :], shape).astype(np.float32)
    return CTVolume(grid, hu)


def _solve_bar(mesh: TetMesh, moduli: np.ndarray, nu: float, force: float):
    pts = mesh.points
    length = pts[:, 2].max()
    supports = [
        Support("bottom", np.flatnonzero(pts[:, 2] < 1e-9), (2,)),
        Support("pin", np.flatnonzero(np.all(pts < 1e-9, axis=1)), (0, 1)),
        Support("roller", np.flatnonzero((pts[:, 2] < 1e-9) & (pts[:, 1] < 1e-9)
                                         & (pts[:, 0] > pts[:, 0].max() - 1e-9)), (1,)),
    ]
    faces = boundary_faces(mesh)
    top = faces[np.all(pts[faces][:, :, 2] > length - 1e-9, axis=1)]
    _, areas = face_normals_and_areas(pts, top)
    patch = LoadPatch(top, np.unique(top), float(areas.sum()), np.array([0.0, 0.0, -force]))
    model = ElasticModel(mesh, moduli, nu, supports, SolverOptions(rtol=1e-11))
    sol = model.solve([patch])
    return -sol.displacement_mm[pts[:, 2] > length - 1e-9, 2].mean()


def test_uniform_bar_from_ct_matches_f_equals_e_a_eps():
    hu = 1000.0
    ct = _ct_around_bar(lambda z: np.full_like(z, hu))
    mesh = box_mesh([0, 0, 0], [10, 10, 50], (3, 3, 10))
    model = MaterialModel.from_names(LinearCalibration(SLOPE, INTERCEPT))
    material = map_material(mesh, ct, model)
    expected_e = float(_hand_modulus(hu))
    assert material.E_MPa == pytest.approx(expected_e, rel=1e-6)
    force = 2000.0
    shortening = _solve_bar(mesh, material.E_MPa, 0.3, force)
    assert shortening == pytest.approx(force * 50.0 / (expected_e * 100.0), rel=1e-6)


def test_graded_bar_stiffness_matches_compliance_integral():
    # HU rises linearly along the bar, so E(z) follows the power law of a linear density:
    # 1/k = integral dz / (E(z) A). nu = 0 keeps the stress exactly uniaxial.
    hu_of_z = lambda z: 150.0 + 28.0 * z  # noqa: E731 - 150 .. 1550 HU over 50 mm
    ct = _ct_around_bar(hu_of_z)
    calibration = LinearCalibration(SLOPE, INTERCEPT)
    compliance, _ = quad(lambda z: 1.0 / (float(_hand_modulus(hu_of_z(z))) * 100.0), 0.0, 50.0)
    errors = []
    for nz in (10, 20, 40):
        mesh = box_mesh([0, 0, 0], [10, 10, 50], (2, 2, nz))
        material = map_material(mesh, ct, MaterialModel.from_names(calibration, poisson_ratio=0.0),
                                quadrature_degree=3)
        force = 1000.0
        stiffness_fe = force / _solve_bar(mesh, material.E_MPa, 0.0, force)
        errors.append(abs(stiffness_fe * compliance - 1.0))
    assert errors[-1] < 2e-3
    # Second-order convergence of the element-wise modulus: error falls ~4x per halving.
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.6), (errors, rates)
