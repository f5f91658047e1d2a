"""Tetrahedron quality metrics against closed forms."""

from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest

from meshing.errors import MeshQualityError
from meshing.quality import (
    check_quality,
    jacobian_determinants,
    mesh_quality,
    min_dihedral_angles,
    radius_ratios,
)
from meshing.types import TetMesh

EDGES = [(0, 1), (1, 2), (0, 2), (0, 3), (1, 3), (2, 3)]
REGULAR_DIHEDRAL = math.degrees(math.acos(1.0 / 3.0))  # 70.528779...


def _mesh(points: npt.ArrayLike, cells: npt.ArrayLike) -> TetMesh:
    cells = np.atleast_2d(np.asarray(cells))
    return TetMesh(np.asarray(points, dtype=float), cells, np.ones(cells.shape[0]))


def _tet10(points4: np.ndarray) -> np.ndarray:
    """Corner points plus straight edge midpoints in VTK order."""
    mids = [0.5 * (points4[a] + points4[b]) for a, b in EDGES]
    return np.vstack([points4, mids])


REGULAR = np.array([[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]], dtype=float)
CORNER = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)


def test_regular_tetrahedron_is_perfect() -> None:
    mesh = _mesh(REGULAR, [0, 1, 2, 3])
    assert mesh.cell_volumes()[0] == pytest.approx(8.0 / 3.0)
    assert min_dihedral_angles(mesh)[0] == pytest.approx(REGULAR_DIHEDRAL, abs=1e-9)
    assert radius_ratios(mesh)[0] == pytest.approx(1.0, abs=1e-12)
    q = mesh_quality(mesh)
    assert q.num_inverted == 0
    assert q.min_dihedral_deg == pytest.approx(70.528779, abs=1e-6)
    assert q.mean_radius_ratio == pytest.approx(1.0, abs=1e-12)
    check_quality(q, min_dihedral_deg=70.0)


def test_corner_tetrahedron_closed_forms() -> None:
    mesh = _mesh(CORNER, [0, 1, 2, 3])
    # Dihedral angles: 90 deg at the three axis edges, acos(1/sqrt 3) at the slanted face.
    assert min_dihedral_angles(mesh)[0] == pytest.approx(math.degrees(math.acos(3**-0.5)))
    # 3 r / R with r = 1 / (3 + sqrt 3), R = sqrt(3) / 2  ->  sqrt(3) - 1.
    assert radius_ratios(mesh)[0] == pytest.approx(math.sqrt(3.0) - 1.0, abs=1e-12)
    assert jacobian_determinants(mesh)[0, 0] == pytest.approx(1.0)


def test_metrics_are_invariant_to_orientation_scale_and_position() -> None:
    flipped = _mesh(CORNER * 7.5 + np.array([10.0, -3.0, 2.0]), [0, 2, 1, 3])
    assert min_dihedral_angles(flipped)[0] == pytest.approx(54.7356103, abs=1e-6)
    assert radius_ratios(flipped)[0] == pytest.approx(math.sqrt(3.0) - 1.0, abs=1e-12)
    assert mesh_quality(flipped).num_inverted == 1


@pytest.mark.parametrize("eps", [1e-2, 1e-4])
def test_sliver_is_near_zero(eps: float) -> None:
    # A square with one corner lifted by eps: the classic sliver.
    sliver = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, eps]], dtype=float)
    mesh = _mesh(sliver, [0, 1, 2, 3])
    assert mesh.cell_volumes()[0] == pytest.approx(eps / 6.0)
    dihedral = min_dihedral_angles(mesh)[0]
    ratio = radius_ratios(mesh)[0]
    # Smallest dihedral at the outer edges: face (0, 1, 3) has normal (0, -eps, 1), tilted
    # by atan(eps) against the base face (0, 1, 2).
    assert dihedral == pytest.approx(math.degrees(math.atan(eps)), rel=1e-3)
    assert 0.5 * eps < ratio < 2.0 * eps
    assert mesh_quality(mesh).num_inverted == 0


def test_flat_tetrahedron_is_zero() -> None:
    flat = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=float)
    mesh = _mesh(flat, [0, 1, 2, 3])
    assert min_dihedral_angles(mesh)[0] == 0.0
    assert radius_ratios(mesh)[0] == 0.0
    assert mesh_quality(mesh).num_inverted == 1  # zero Jacobian counts as inverted


def test_check_quality_names_inverted_cell_and_location() -> None:
    points = np.vstack([CORNER, CORNER + np.array([5.0, 0.0, 0.0])])
    cells = np.array([[0, 1, 2, 3], [4, 6, 5, 7]])  # second cell inverted
    q = mesh_quality(_mesh(points, cells))
    assert q.num_inverted == 1
    assert q.worst_cells[0] == 1 and bool(q.worst_inverted[0])
    np.testing.assert_allclose(q.worst_centroids_mm[0], [5.25, 0.25, 0.25])
    with pytest.raises(MeshQualityError, match=r"1 of 2 tetrahedra are inverted") as err:
        check_quality(q)
    assert "cell 1 at (5.2" in str(err.value) and "(inverted)" in str(err.value)
    assert "size_mm" in err.value.hint
    check_quality(q, max_inverted=1, min_dihedral_deg=50.0)


def test_check_quality_min_dihedral() -> None:
    sliver = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.01]], dtype=float)
    q = mesh_quality(_mesh(np.vstack([REGULAR, sliver]), [[0, 1, 2, 3], [4, 5, 6, 7]]))
    assert q.num_inverted == 0
    assert q.worst_cells.tolist() == [1, 0]
    with pytest.raises(MeshQualityError, match=r"dihedral angle 0\.57 deg is below 1\.00") as err:
        check_quality(q, min_dihedral_deg=1.0)
    assert "cell 1 at (0.5, 0.5, 0.0) mm" in str(err.value)
    assert "netgen" in err.value.hint


def test_quadratic_jacobian_closed_form() -> None:
    # Mid-node of edge 01 slid along the edge to x = t: dx/dxi at vertex 0 is 4 t - 1,
    # at vertex 1 it is 3 - 4 t, so the element inverts for t < 1/4 or t > 3/4.
    for t, inverted in [(0.5, 0), (0.3, 0), (0.2, 1), (0.8, 1)]:
        pts = _tet10(CORNER)
        pts[4] = [t, 0.0, 0.0]
        mesh = _mesh(pts, np.arange(10))
        det = jacobian_determinants(mesh)[0]
        assert det.shape == (5,)
        assert det[0] == pytest.approx(4 * t - 1)
        assert det[1] == pytest.approx(3 - 4 * t)
        assert det[2] == pytest.approx(1.0) and det[3] == pytest.approx(1.0)
        assert mesh_quality(mesh).num_inverted == inverted


def test_straight_quadratic_tet_jacobian_is_six_volumes() -> None:
    pts = _tet10(REGULAR)
    det = jacobian_determinants(_mesh(pts, np.arange(10)))[0]
    np.testing.assert_allclose(det, 6.0 * 8.0 / 3.0)


def test_to_dict_is_json_ready() -> None:
    q = mesh_quality(_mesh(np.vstack([REGULAR, CORNER + 3.0]), [[0, 1, 2, 3], [4, 5, 6, 7]]))
    data = json.loads(json.dumps(q.to_dict()))
    assert data["num_cells"] == 2 and data["num_inverted"] == 0
    assert data["min_dihedral_deg"] == pytest.approx(54.7356103, abs=1e-6)
    assert data["mean_radius_ratio"] == pytest.approx((1.0 + math.sqrt(3) - 1.0) / 2.0)
    assert data["worst_cells"] == [1, 0]
    assert len(data["worst_centroids_mm"][0]) == 3


def test_empty_mesh() -> None:
    q = mesh_quality(TetMesh(np.zeros((0, 3)), np.zeros((0, 4), dtype=np.int64),
                             np.zeros(0, dtype=np.int32)))
    assert q.num_cells == 0 and q.worst_cells.size == 0
    check_quality(q)
