"""Landmarks (sphere fits, side, frame) and the strain failure criterion on closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from fea.errors import BoundaryConditionError, LandmarkError
from fea.failure import SCHILEO_2008, principal_strains, strain_failure
from fea.landmarks import WORLD_CONVENTIONS, find_landmarks, fit_sphere, fit_sphere_ransac
from fea.loads import LOAD_CASES, direction_from_angles
from fea.topology import boundary_faces
from meshing.structured import box_mesh


def _sphere_points(centre, radius, n, rng, noise=0.0):
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1)[:, None]
    return centre + radius * v + rng.normal(scale=noise, size=(n, 3))


def test_fit_sphere_recovers_centre_and_radius_under_noise():
    rng = np.random.default_rng(0)
    centre = np.array([12.0, -40.0, 100.0])
    pts = _sphere_points(centre, 23.5, 2000, rng, noise=0.2)
    c, r, rms = fit_sphere(pts)
    assert np.linalg.norm(c - centre) < 0.05
    assert r == pytest.approx(23.5, abs=0.05)
    assert rms == pytest.approx(0.2, rel=0.1)  # only the radial noise component counts


def test_ransac_ignores_outliers_that_break_least_squares():
    rng = np.random.default_rng(1)
    centre = np.array([0.0, 0.0, 0.0])
    head = _sphere_points(centre, 22.0, 1500, rng)
    head = head[head[:, 2] > -10.0]  # a cap, as on a real head
    clutter = rng.uniform(-60, 60, size=(700, 3)) + np.array([-50.0, 0.0, -40.0])
    pts = np.vstack([head, clutter])
    c, r, _, inliers = fit_sphere_ransac(pts, seed=0)
    assert np.linalg.norm(c - centre) < 0.05
    assert r == pytest.approx(22.0, abs=0.05)
    assert inliers[: head.shape[0]].mean() > 0.99


def _femur_like_cloud(side: str, rng) -> tuple[np.ndarray, np.ndarray]:
    """A head sphere medial-superior of a vertical cylindrical shaft (LPS world)."""
    medial = 1.0 if side == "right" else -1.0  # the midline is at +x for a right femur
    head_centre = np.array([medial * 45.0, 0.0, 0.0])
    head = _sphere_points(head_centre, 23.0, 3000, rng)
    head = head[np.linalg.norm(head - [0.0, 0.0, -30.0], axis=1) > 30.0]
    theta = rng.uniform(0, 2 * np.pi, 6000)
    z = rng.uniform(-200.0, -30.0, 6000)
    shaft = np.column_stack([14.0 * np.cos(theta), 14.0 * np.sin(theta), z])
    return np.vstack([head, shaft]), head_centre


@pytest.mark.parametrize("side", ["right", "left"])
def test_landmarks_side_shaft_axis_and_frame(side):
    pts, head_centre = _femur_like_cloud(side, np.random.default_rng(2))
    lm = find_landmarks(pts)
    assert lm.frame.side == side
    assert np.linalg.norm(lm.head_centre_mm - head_centre) < 0.1
    assert lm.head_radius_mm == pytest.approx(23.0, abs=0.1)
    assert np.degrees(np.arccos(lm.shaft_axis @ [0, 0, 1])) < 1.0
    axes = lm.frame.axes
    assert np.allclose(axes @ axes.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(axes) == pytest.approx(1.0)
    # A lateral load direction ends up pointing away from the midline on either side.
    lateral_world = lm.frame.to_world_direction([1.0, 0.0, 0.0])
    midline = np.array([1.0 if side == "right" else -1.0, 0.0, 0.0])
    assert lateral_world @ midline == pytest.approx(-1.0, abs=1e-3)


@pytest.mark.parametrize("convention", ["LPS", "RAS", "ISB"])
def test_conventions_are_right_handed_and_name_the_patient_axes(convention):
    conv = WORLD_CONVENTIONS[convention]
    basis = np.vstack([conv.left, -conv.anterior, conv.superior])  # L, P, S
    assert np.allclose(basis @ basis.T, np.eye(3))
    assert np.linalg.det(basis) == pytest.approx(1.0)  # LPS itself is right-handed


@pytest.mark.parametrize("convention", ["RAS", "ISB"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_side_in_other_conventions(side, convention):
    pts, head_centre = _femur_like_cloud(side, np.random.default_rng(2))
    conv = WORLD_CONVENTIONS[convention]
    to_other = np.column_stack([conv.left, -conv.anterior, conv.superior])
    lm = find_landmarks(pts @ to_other.T, convention=convention)
    assert lm.frame.side == side and lm.convention == convention
    assert np.linalg.norm(lm.head_centre_mm - to_other @ head_centre) < 0.1
    assert lm.shaft_axis @ conv.superior > 0.999


def test_bad_conventions_and_hints_are_refused():
    pts, _ = _femur_like_cloud("right", np.random.default_rng(2))
    with pytest.raises(LandmarkError, match="unknown world convention"):
        find_landmarks(pts, convention="XYZ")
    with pytest.raises(LandmarkError, match="parallel to the shaft"):
        find_landmarks(pts, anterior_hint=[0.0, 0.1, 1.0])
    with pytest.raises(LandmarkError, match="non-zero 3-vector"):
        find_landmarks(pts, proximal_hint=[0.0, 0.0])
    with pytest.raises(LandmarkError, match=r"\(n >= 20, 3\)"):
        find_landmarks(pts[:10])


def test_explicit_hints_override_the_convention():
    pts, head_centre = _femur_like_cloud("right", np.random.default_rng(2))
    lm = find_landmarks(pts, convention="ISB", proximal_hint=[0, 0, 1], anterior_hint=[0, -1, 0])
    assert lm.convention == "custom" and lm.frame.side == "right"
    assert np.linalg.norm(lm.head_centre_mm - head_centre) < 0.1


def test_landmarks_refuse_a_bone_without_a_head():
    mesh = box_mesh([-10, -10, -200], [10, 10, 0], (6, 6, 60))
    surface = mesh.points[np.unique(boundary_faces(mesh))]
    with pytest.raises(LandmarkError, match="no femoral head"):
        find_landmarks(surface)


def test_load_directions_follow_their_angles():
    d = direction_from_angles(13.0, 8.0)
    assert np.linalg.norm(d) == pytest.approx(1.0)
    assert np.degrees(np.arctan2(d[0], -d[2])) == pytest.approx(13.0)
    assert np.degrees(np.arctan2(-d[1], -d[2])) == pytest.approx(8.0)
    # Bergmann 2001 peaks with Heller 2005's components (lateral, posterior, distal %BW).
    assert np.asarray(LOAD_CASES["stance"].direction) == pytest.approx(
        np.array([54.0, -32.8, -229.2]) / 237.75, abs=2e-4)
    assert np.asarray(LOAD_CASES["stairs_up"].direction) == pytest.approx(
        np.array([59.3, -60.6, -236.3]) / 251.05, abs=2e-4)
    assert LOAD_CASES["stance"].magnitude_bw == 2.38
    assert LOAD_CASES["stairs_up"].magnitude_bw == 2.51
    assert LOAD_CASES["stairs_down"].magnitude_bw == 2.60


def test_principal_strains_of_a_rotated_tensor():
    rot, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))
    tensor = rot @ np.diag([-0.002, 0.0005, 0.003]) @ rot.T
    assert principal_strains(tensor) == pytest.approx([-0.002, 0.0005, 0.003])


@pytest.mark.parametrize(("eps_zz", "mode", "limit"),
                         [(-0.002, "compression", 0.0104), (0.001, "tension", 0.0073)])
def test_uniform_strain_gives_closed_form_load_factor(eps_zz, mode, limit):
    mesh = box_mesh([0, 0, 0], [10, 10, 40], (2, 2, 8))
    strain = np.zeros((mesh.num_cells, 3, 3))
    strain[:, 2, 2] = eps_zz
    strain[:, 0, 0] = strain[:, 1, 1] = -0.3 * eps_zz
    result = strain_failure(mesh, strain, boundary_faces(mesh))
    assert result.mode == mode
    assert result.load_factor == pytest.approx(limit / abs(eps_zz), rel=1e-12)
    assert SCHILEO_2008.tension == 0.0073 and SCHILEO_2008.compression == 0.0104


def test_failure_starts_where_strain_peaks_and_exclusions_apply():
    mesh = box_mesh([0, 0, 0], [10, 10, 40], (2, 2, 8))
    centroids = mesh.centroids()
    strain = np.zeros((mesh.num_cells, 3, 3))
    strain[:, 2, 2] = -1e-3 * (1.0 + centroids[:, 2] / 40.0)  # grows towards the top
    faces = boundary_faces(mesh)
    free = strain_failure(mesh, strain, faces)
    assert mesh.points[free.critical_node, 2] == pytest.approx(40.0)
    top = mesh.points[:, 2] > 35.0
    limited = strain_failure(mesh, strain, faces, excluded_nodes=top)
    assert mesh.points[limited.critical_node, 2] <= 35.0
    assert limited.load_factor > free.load_factor


def _compressed_at_x0(mesh):
    """Compression along z that peaks on the face x = 0 at mid-height (z = 20)."""
    c = mesh.centroids()
    strain = np.zeros((mesh.num_cells, 3, 3))
    strain[:, 2, 2] = -1e-3 * (1.0 + (10.0 - c[:, 0]) / 10.0) * (
        1.0 + np.exp(-((c[:, 2] - 20.0) / 4.0) ** 2))
    return strain


def test_nodes_mostly_on_floor_cells_are_left_out_and_their_load_reported():
    """Nodes whose averaged surface is mostly floor material are not bone surface."""
    mesh = box_mesh([0, 0, 0], [10, 10, 40], (4, 4, 16))
    strain = _compressed_at_x0(mesh)
    faces = boundary_faces(mesh)
    c = mesh.centroids()
    none = strain_failure(mesh, strain, faces)
    assert mesh.points[none.critical_node, 0] == pytest.approx(0.0)
    assert none.critical_floor_share == 0.0 and none.non_bone_load_factor is None
    # A floor skin under the face x = 0: that face is left out, its load is reported, and
    # failure starts elsewhere, on bone, at a higher load.
    skin = strain_failure(mesh, strain, faces, floor_cells=c[:, 0] < 2.5)
    assert skin.non_bone_load_factor == pytest.approx(none.load_factor, rel=1e-12)
    assert skin.load_factor > none.load_factor
    assert skin.critical_floor_share <= 0.5
    on_x0 = np.isclose(mesh.points[:, 0], 0.0) & (mesh.points[:, 1] > 2.0) & (
        mesh.points[:, 1] < 8.0)
    assert not skin.evaluated[on_x0].any()
    # Evaluating every node (limit 1) is the criterion without the floor rule.
    every_node = strain_failure(mesh, strain, faces, floor_cells=c[:, 0] < 2.5,
                                max_floor_share=1.0)
    assert every_node.load_factor == pytest.approx(none.load_factor, rel=1e-12)
    assert every_node.critical_floor_share == pytest.approx(1.0, abs=1e-12)
    assert every_node.non_bone_load_factor is None  # a share of 1 is within a limit of 1
    all_floor = strain_failure(mesh, strain, faces, floor_cells=np.ones(mesh.num_cells, bool),
                               max_floor_share=1.0)
    assert all_floor.load_factor == pytest.approx(none.load_factor, rel=1e-12)
    assert all_floor.non_bone_load_factor is None
    far_side = strain_failure(mesh, strain, faces, floor_cells=c[:, 0] > 7.5)
    assert far_side.load_factor == none.load_factor  # the x = 10 face is not averaged at x = 0
    assert far_side.critical_floor_share == 0.0
    # Floor below z = 20 only: the share at the critical node is the area share of the
    # samples within the 3 mm sphere on the node's side of the bone, summed sample by sample.
    lower = c[:, 2] < 20.0
    half = strain_failure(mesh, strain, faces, floor_cells=lower, max_floor_share=1.0)
    from fea.failure import _FACE_RULE
    from fea.topology import bone_surface_facets, face_normals_and_areas

    facets = bone_surface_facets(mesh)
    normals, areas = face_normals_and_areas(mesh.points, facets.faces)
    node = mesh.points[half.critical_node]
    node_normal = np.zeros(3)
    for f, face in enumerate(facets.faces):
        if half.critical_node in face:
            node_normal += normals[f] * areas[f]
    floor_area = total_area = 0.0
    for f, face in enumerate(facets.faces):
        for bary in _FACE_RULE:
            point = bary @ mesh.points[face]
            if np.linalg.norm(point - node) <= 3.0 and normals[f] @ node_normal > 0.0:
                total_area += areas[f] / 3.0
                floor_area += areas[f] / 3.0 * lower[facets.cells[f]]
    assert 0.2 < half.critical_floor_share < 0.8
    assert half.critical_floor_share == pytest.approx(floor_area / total_area, rel=1e-12)


def test_a_surface_that_is_all_floor_material_is_refused():
    mesh = box_mesh([0, 0, 0], [10, 10, 40], (2, 2, 8))
    with pytest.raises(BoundaryConditionError, match="no bone surface"):
        strain_failure(mesh, _compressed_at_x0(mesh), floor_cells=np.ones(mesh.num_cells, bool))


def test_floor_cells_of_the_wrong_shape_are_refused():
    mesh = box_mesh([0, 0, 0], [10, 10, 40], (2, 2, 8))
    with pytest.raises(ValueError, match="floor_cells must have shape"):
        strain_failure(mesh, _compressed_at_x0(mesh), floor_cells=np.ones(3, bool))
