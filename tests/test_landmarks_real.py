"""Landmarks on the phantom (exact truth) and on real femurs (independent estimates).

Phantom: the iso-surface of the phantom's bone mask and the boundary nodes of a tetrahedral
mesh of it (what the pipeline passes), against :class:`meshing.phantom.PhantomTruth`.

Real femurs (``../shared/data``, skipped when absent): the three STAPLE surfaces and the right
femur (TotalSegmentator label 76) of the real CT. Their truth is unknown, so the tests compare
with estimates made here by other methods:

* head radius: least-squares sphere (``scipy.optimize.least_squares``) on head points picked
  by hand-set rules: within a generous distance window around the found centre (+-25% of the
  found radius, then +-15%, 10%, 8%, re-centred after each fit) and on the cap facing away
  from the bone's centroid (offset from the centre along the centroid-to-head direction
  > -0.3 radii), so that the neck is left out without using the found neck axis;
* neck-shaft angle: an AP-radiograph-like 2-D measurement. Shaft axis: line through the
  area-weighted centroids of the surface triangles in 2 mm slabs at 25-75% of the bone's
  length (the mid-diaphysis). Neck axis: the surface is projected on the plane through the
  head centre that contains the shaft axis; starting from 130 deg, the neck line through the
  head centre is moved to the midpoint of the narrowest chord of the neck silhouette
  perpendicular to it (0.5-2 head radii from the centre) until it stops moving. The angle
  between that line and the distal shaft is the estimate (published normal range 120-135 deg).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import least_squares

from fea.landmarks import WORLD_CONVENTIONS, FemurLandmarks, find_landmarks
from fea.topology import boundary_faces
from meshing.phantom import Phantom, PhantomParams, make_phantom
from meshing.surface import clean_mask, extract_surface, read_surface
from meshing.types import SurfaceMesh

# ---------------------------------------------------------------------------------------------
# independent estimates
# ---------------------------------------------------------------------------------------------


def _independent_head(points: np.ndarray, centre: np.ndarray, radius: float
                      ) -> tuple[np.ndarray, float, int]:
    """Head sphere refitted on hand-picked head points (see the module docstring)."""
    away = centre - points.mean(axis=0)
    away /= np.linalg.norm(away)
    c, r = np.asarray(centre, dtype=float).copy(), float(radius)
    count = 0
    for window in (0.25, 0.15, 0.10, 0.08):
        dist = np.linalg.norm(points - c, axis=1)
        pick = (np.abs(dist - r) < window * r) & ((points - c) @ away > -0.3 * r)
        q = points[pick]
        fit = least_squares(lambda x, q=q: np.linalg.norm(q - x[:3], axis=1) - x[3],
                            np.r_[c, r])
        c, r, count = fit.x[:3], float(fit.x[3]), int(pick.sum())
    return c, r, count


def _triangle_centroids_areas(surface: SurfaceMesh) -> tuple[np.ndarray, np.ndarray]:
    p = surface.points[surface.triangles]
    areas = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    return p.mean(axis=1), areas


def _independent_shaft(surface: SurfaceMesh, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-diaphysis axis (unit, proximal) and a point on it, from area-weighted slabs."""
    c, a = _triangle_centroids_areas(surface)
    mean = (c * a[:, None]).sum(axis=0) / a.sum()
    long_axis = np.linalg.svd((c - mean) * np.sqrt(a)[:, None], full_matrices=False)[2][0]
    if (head - mean) @ long_axis < 0:
        long_axis = -long_axis
    t = (c - mean) @ long_axis
    rows = []
    for f in np.linspace(0.25, 0.75, 11):
        slab = np.abs(t - (t.min() + f * np.ptp(t))) < 2.0
        rows.append((c[slab] * a[slab, None]).sum(axis=0) / a[slab].sum())
    centroids = np.array(rows)
    direction = np.linalg.svd(centroids - centroids.mean(axis=0))[2][0]
    return (direction if direction @ long_axis > 0 else -direction), centroids.mean(axis=0)


def _radiographic_neck_shaft_angle(points: np.ndarray, head: np.ndarray, radius: float,
                                   shaft: np.ndarray, shaft_point: np.ndarray) -> float:
    """Neck-shaft angle measured as on an AP radiograph (see the module docstring)."""
    medial = head - shaft_point
    medial -= (medial @ shaft) * shaft
    medial /= np.linalg.norm(medial)
    near = points[np.linalg.norm(points - head, axis=1) < 3.0 * radius]
    planar = np.column_stack([(near - head) @ medial, (near - head) @ shaft])
    theta = math.radians(130.0)
    for _ in range(50):
        to_head = np.array([math.sin(theta), -math.cos(theta)])  # (medial, proximal)
        normal = np.array([-to_head[1], to_head[0]])
        along, across = -(planar @ to_head), planar @ normal
        best = (np.inf, 0.0, 0.0)
        for s in np.arange(0.5, 2.0, 0.02) * radius:
            chord = across[np.abs(along - s) < 0.75]
            if chord.size >= 4 and np.ptp(chord) < best[0]:
                best = (float(np.ptp(chord)), float(s), 0.5 * float(chord.max() + chord.min()))
        midpoint = -best[1] * to_head + best[2] * normal
        direction = -midpoint / np.linalg.norm(midpoint)
        new = math.atan2(direction[0], -direction[1])
        if abs(new - theta) < 1e-6:
            break
        theta = new
    return math.degrees(theta)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b),
                                                -1.0, 1.0))))


def _assert_mirrored(lm: FemurLandmarks, mirrored: FemurLandmarks, flip: np.ndarray) -> None:
    """``mirrored`` is ``lm`` of the surface multiplied by the diagonal ``flip``.

    The fits see the same points in another order of rounding, so iterations may stop one
    step apart: positions agree to 0.05 mm, directions to 1e-3, angles to 0.05 deg.
    """
    assert mirrored.side != lm.side
    assert mirrored.anatomical_side == mirrored.side
    for name in ("head_centre_mm", "greater_trochanter_tip_mm", "lesser_trochanter_mm",
                 "neck_shaft_point_mm"):
        a, b = getattr(lm, name), getattr(mirrored, name)
        assert np.allclose(a * flip, b, atol=0.05), name
    for name in ("neck_axis", "shaft_axis"):
        assert np.allclose(getattr(lm, name) * flip, getattr(mirrored, name), atol=1e-3)
    for name in ("head_radius_mm", "neck_shaft_angle_deg", "anteversion_deg",
                 "femoral_offset_mm", "condylar_anteversion_deg"):
        a, b = getattr(lm, name), getattr(mirrored, name)
        assert (a is None and b is None) or a == pytest.approx(b, abs=0.05), name
    # A load given for a right femur points the mirrored way on the mirrored bone.
    for direction in ([1.0, 0.0, 0.0], [0.3, -0.2, -0.93]):
        assert np.allclose(lm.frame.to_world_direction(direction) * flip,
                           mirrored.frame.to_world_direction(direction), atol=1e-3)


# ---------------------------------------------------------------------------------------------
# phantom
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom(PhantomParams(voxel_size_mm=1.0))


@pytest.fixture(scope="module")
def phantom_surface(phantom: Phantom) -> SurfaceMesh:
    return extract_surface(clean_mask(phantom.labels.labels > 0), phantom.labels.grid)


def _check_phantom(lm: FemurLandmarks, phantom: Phantom) -> None:
    truth = phantom.truth
    assert lm.side == truth.side and lm.anatomical_side == "right"
    assert np.linalg.norm(lm.head_centre_mm - truth.head_centre_mm) < 1.0
    assert lm.head_radius_mm == pytest.approx(truth.head_radius_mm, abs=0.5)
    assert lm.shaft_axis_from_geometry and lm.proximal_from_geometry
    assert _angle(lm.shaft_axis, truth.shaft_axis) < 1.0
    assert lm.neck_axis is not None and _angle(lm.neck_axis, truth.neck_axis) < 1.5
    assert lm.neck_shaft_angle_deg == pytest.approx(truth.neck_shaft_angle_deg, abs=2.0)
    assert lm.anteversion_deg == pytest.approx(truth.anteversion_deg, abs=3.0)
    offset = truth.head_centre_mm - truth.neck_shaft_intersection_mm
    offset -= (offset @ truth.shaft_axis) * truth.shaft_axis
    assert lm.femoral_offset_mm == pytest.approx(np.linalg.norm(offset), abs=1.0)
    assert lm.neck_shaft_point_mm is not None
    assert np.linalg.norm(lm.neck_shaft_point_mm - truth.neck_shaft_intersection_mm) < 2.0
    assert lm.condylar_anteversion_deg is None  # no knee on a proximal femur
    # Lesser trochanter: the apex of its ellipsoid.
    assert lm.lesser_trochanter_mm is not None
    assert np.linalg.norm(lm.lesser_trochanter_mm - truth.lesser_trochanter_mm) < 3.0
    # Greater trochanter: its most lateral point lies on a near-vertical tangent plane, so
    # its lateral distance is exact and its height is not; the tip is the ellipsoid's top.
    medial = -truth.frame_axes[0]
    gt = phantom.params.greater_trochanter_semi_axes_mm if phantom.params else (13, 18, 20)
    assert lm.greater_trochanter_lateral_mm is not None
    lateral_error = (lm.greater_trochanter_lateral_mm - truth.greater_trochanter_lateral_mm
                     ) @ medial
    assert abs(lateral_error) < 1.0
    assert np.linalg.norm(lm.greater_trochanter_lateral_mm
                          - truth.greater_trochanter_lateral_mm) < 8.0
    top = truth.greater_trochanter_lateral_mm + gt[0] * medial + gt[2] * truth.shaft_axis
    assert lm.greater_trochanter_tip_mm is not None
    assert np.linalg.norm(lm.greater_trochanter_tip_mm - top) < 3.0


def test_phantom_iso_surface_landmarks_match_the_truth(phantom, phantom_surface):
    lm = find_landmarks(phantom_surface.points)
    _check_phantom(lm, phantom)
    assert lm.convention == "LPS"
    record = json.loads(json.dumps(lm.to_dict()))
    assert record["neck_shaft_angle_deg"] == pytest.approx(lm.neck_shaft_angle_deg, abs=0.01)
    assert record["lesser_trochanter_mm"] is not None


def test_phantom_tet_mesh_boundary_nodes_match_the_truth():
    from meshing.volume import tetrahedralize

    coarse = make_phantom(PhantomParams(voxel_size_mm=1.5))
    surface = extract_surface(clean_mask(coarse.labels.labels > 0), coarse.labels.grid)
    mesh = tetrahedralize(surface, size_mm=3.0)
    lm = find_landmarks(mesh.points[np.unique(boundary_faces(mesh))])
    _check_phantom(lm, coarse)


@pytest.mark.parametrize("convention", ["RAS", "ISB"])
def test_other_world_conventions_give_the_same_landmarks(phantom_surface, convention):
    lps = find_landmarks(phantom_surface.points)
    conv = WORLD_CONVENTIONS[convention]
    # Rows: the LPS directions superior, anterior, left expressed in the other convention.
    to_other = np.column_stack([conv.left, -conv.anterior, conv.superior])  # x_L, y_P, z_S
    other = find_landmarks(phantom_surface.points @ to_other.T, convention=convention)
    assert other.convention == convention and other.side == "right"
    # Same points, other rounding: agreement to the fits' stopping tolerances.
    assert np.allclose(other.head_centre_mm, to_other @ lps.head_centre_mm, atol=0.05)
    assert np.allclose(other.shaft_axis, to_other @ lps.shaft_axis, atol=1e-3)
    assert np.allclose(other.frame.axes, lps.frame.axes @ to_other.T, atol=1e-3)
    assert other.anteversion_deg == pytest.approx(lps.anteversion_deg, abs=0.05)
    assert other.neck_shaft_angle_deg == pytest.approx(lps.neck_shaft_angle_deg, abs=0.05)


def test_mirrored_phantom_is_a_left_femur_with_mirrored_landmarks(phantom_surface):
    flip = np.array([-1.0, 1.0, 1.0])  # LPS x: the patient's left-right
    lm = find_landmarks(phantom_surface.points)
    mirrored = find_landmarks(phantom_surface.points * flip)
    assert mirrored.side == "left"
    _assert_mirrored(lm, mirrored, flip)
    # Anatomical axes: x = y cross z is medial on a left femur, lateral on a right one.
    assert (mirrored.head_centre_mm - mirrored.shaft_point_mm) @ mirrored.frame.lateral < 0


@pytest.mark.parametrize(("flip", "anterior_flipped"),
                         [((-1.0, 1.0, -1.0), False), ((1.0, -1.0, -1.0), True)])
def test_upside_down_surface_is_turned_by_the_head_and_the_lesser_trochanter(
        phantom_surface, flip, anterior_flipped):
    """A right femur rotated 180 deg about the AP axis, or about the LR axis, given as LPS."""
    flip = np.asarray(flip)
    lm = find_landmarks(phantom_surface.points)
    turned = find_landmarks(phantom_surface.points * flip)
    assert turned.proximal_from_geometry and turned.side == "right"
    assert turned.anatomical_side == "right"
    assert np.allclose(turned.head_centre_mm, lm.head_centre_mm * flip, atol=0.05)
    assert turned.anteversion_deg == pytest.approx(lm.anteversion_deg, abs=0.05)
    assert any("proximal hint calls distal" in w for w in turned.warnings)
    assert any("anterior sense is taken from the anatomy" in w
               for w in turned.warnings) == anterior_flipped


def test_short_proximal_piece_keeps_the_hint_and_reports_no_angles(phantom, phantom_surface):
    """Like the real CT: the image ends ~30 mm below the head centre."""
    truth = phantom.truth
    points = phantom_surface.points
    piece = points[points[:, 2] > truth.head_centre_mm[2] - 31.0]
    lm = find_landmarks(piece)
    assert not lm.shaft_axis_from_geometry and not lm.proximal_from_geometry
    assert np.allclose(lm.shaft_axis, [0.0, 0.0, 1.0])
    assert lm.side == "right"
    assert np.linalg.norm(lm.head_centre_mm - truth.head_centre_mm) < 1.0
    assert lm.head_radius_mm == pytest.approx(truth.head_radius_mm, abs=0.5)
    assert lm.neck_axis is not None and _angle(lm.neck_axis, truth.neck_axis) < 3.0
    assert lm.neck_shaft_angle_deg is None and lm.anteversion_deg is None
    assert lm.femoral_offset_mm is None and lm.lesser_trochanter_mm is None
    assert lm.greater_trochanter_tip_mm is not None
    assert any("shorter than a stretch of shaft" in w for w in lm.warnings)


# ---------------------------------------------------------------------------------------------
# real femurs
# ---------------------------------------------------------------------------------------------

#: STAPLE surfaces and the world convention of their coordinates. TLEM2 (``femur_r.stl``) is
#: in the ISB/OpenSim bone frame (+y up to the head, x anterior); the two CT segmentations
#: keep their scanners' patient axes: TLEM2_CT in LPS, VAKHUM_CT turned 180 deg about the
#: anterior axis (head at -z, medial at -x), which the head-sphere test detects.
REAL_FEMURS = {
    "tlem2_femur_r.stl": "ISB",
    "tlem2ct_femur_r.stl": "LPS",
    "vakhum_femur_r.stl": "LPS",
}


@pytest.fixture(scope="module")
def real_surfaces(shared_data: Path) -> dict[str, SurfaceMesh]:
    folder = shared_data / "femur_surfaces"
    missing = [name for name in REAL_FEMURS if not (folder / name).is_file()]
    if missing:
        pytest.skip(f"real femur surfaces missing in {folder}: {', '.join(missing)}")
    return {name: read_surface(folder / name) for name in REAL_FEMURS}


@pytest.fixture(scope="module")
def real_landmarks(real_surfaces) -> dict[str, FemurLandmarks]:
    return {name: find_landmarks(surface.points, convention=REAL_FEMURS[name])
            for name, surface in real_surfaces.items()}


@pytest.mark.data
@pytest.mark.parametrize("name", list(REAL_FEMURS))
def test_real_femur_landmarks_agree_with_independent_estimates(name, real_surfaces,
                                                               real_landmarks):
    surface, lm = real_surfaces[name], real_landmarks[name]
    centre, radius, picked = _independent_head(surface.points, lm.head_centre_mm,
                                               lm.head_radius_mm)
    shaft, shaft_point = _independent_shaft(surface, centre)
    nsa = _radiographic_neck_shaft_angle(surface.points, centre, radius, shaft, shaft_point)
    print(f"\n{name}: {json.dumps(lm.to_dict())}\n  independent: head radius {radius:.2f} mm "
          f"({picked} points), centre {np.linalg.norm(centre - lm.head_centre_mm):.2f} mm "
          f"away; neck-shaft angle {nsa:.2f} deg; shaft axis "
          f"{_angle(shaft, lm.shaft_axis):.2f} deg away")
    assert lm.side == "right" and lm.anatomical_side == "right"
    assert lm.shaft_axis_from_geometry and lm.proximal_from_geometry
    assert lm.head_coverage > 0.85
    assert lm.head_radius_mm == pytest.approx(radius, abs=1.0)
    assert np.linalg.norm(lm.head_centre_mm - centre) < 1.5
    assert _angle(lm.shaft_axis, shaft) < 1.5
    assert lm.neck_shaft_angle_deg == pytest.approx(nsa, abs=3.0)
    assert 105.0 < lm.neck_shaft_angle_deg < 140.0
    assert lm.femoral_offset_mm is not None and 30.0 < lm.femoral_offset_mm < 70.0
    assert lm.condylar_anteversion_deg is not None
    assert -20.0 < lm.condylar_anteversion_deg < 35.0
    # Trochanters where they belong, in the anatomical frame (x lateral for a right femur).
    assert lm.lesser_trochanter_mm is not None and lm.greater_trochanter_tip_mm is not None
    assert lm.greater_trochanter_lateral_mm is not None
    shaft_local = lm.frame.to_local(lm.shaft_point_mm[None])[0] * [1.0, 1.0, 0.0]
    lt, tip = lm.frame.to_local(np.vstack([lm.lesser_trochanter_mm,
                                           lm.greater_trochanter_tip_mm])) - shaft_local
    assert lt[0] < -10.0 and lt[1] < 0.0  # posteromedial
    # The tip lies near the level of the head centre (above it in a varus femur).
    assert tip[0] > 0.0 and -1.5 * lm.head_radius_mm < tip[2] < 1.0 * lm.head_radius_mm
    assert tip[2] - lt[2] > 30.0


@pytest.mark.data
def test_same_cadaver_in_two_conventions_gives_the_same_anatomy(real_landmarks):
    """TLEM2 (ISB frame) and TLEM2_CT (scanner LPS) are segmentations of one femur."""
    isb, ct = real_landmarks["tlem2_femur_r.stl"], real_landmarks["tlem2ct_femur_r.stl"]
    assert ct.head_radius_mm == pytest.approx(isb.head_radius_mm, abs=0.2)
    assert ct.neck_shaft_angle_deg == pytest.approx(isb.neck_shaft_angle_deg, abs=1.0)
    assert ct.femoral_offset_mm == pytest.approx(isb.femoral_offset_mm, abs=1.0)
    assert ct.condylar_anteversion_deg == pytest.approx(isb.condylar_anteversion_deg, abs=2.0)
    assert ct.length_mm == pytest.approx(isb.length_mm, abs=2.0)


@pytest.mark.data
def test_mirrored_real_femur_is_left(real_surfaces, real_landmarks):
    flip = np.array([1.0, 1.0, -1.0])  # ISB z: the patient's right
    name = "tlem2_femur_r.stl"
    mirrored = find_landmarks(real_surfaces[name].points * flip, convention="ISB")
    assert mirrored.side == "left"
    _assert_mirrored(real_landmarks[name], mirrored, flip)


@pytest.mark.data
@pytest.mark.parametrize(("label", "side"), [(76, "right"), (75, "left")])
def test_real_ct_femur_head_and_side(shared_data, label, side):
    """TotalSegmentator example, 3 mm voxels, ~54 mm of proximal femur cut at the lowest slice.

    Label 75 (femur_left) carries a hip implant but its bone surface is complete enough for
    the head and side.
    """
    from meshing.imaging import label_mask, read_totalsegmentator

    path = shared_data / "ct" / "totalseg_example_seg.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    labels = read_totalsegmentator(path)
    surface = extract_surface(clean_mask(label_mask(labels, label)), labels.grid)
    lm = find_landmarks(surface.points)
    centre, radius, _ = _independent_head(surface.points, lm.head_centre_mm, lm.head_radius_mm)
    print(f"\nCT label {label}: {json.dumps(lm.to_dict())}\n  independent head radius "
          f"{radius:.2f} mm, centre {np.linalg.norm(centre - lm.head_centre_mm):.2f} mm away")
    assert lm.side == side
    assert 20.0 < lm.head_radius_mm < 27.0
    assert lm.head_radius_mm == pytest.approx(radius, abs=1.0)
    assert np.linalg.norm(lm.head_centre_mm - centre) < 1.5
    assert not lm.shaft_axis_from_geometry and lm.neck_shaft_angle_deg is None
    assert lm.neck_axis is not None
    # The neck runs medially (towards the patient's midline) and up to the head.
    midline = WORLD_CONVENTIONS["LPS"].left * (1.0 if side == "right" else -1.0)
    assert lm.neck_axis @ midline > 0.5 and lm.neck_axis[2] > 0.2
