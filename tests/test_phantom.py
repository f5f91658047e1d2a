"""Tests of the synthetic femur phantom against the geometry and densities it was built from."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from scipy import ndimage

from meshing.errors import InputError
from meshing.imaging import read_ct, read_labels
from meshing.phantom import LesionParams, Phantom, PhantomParams, make_phantom, write_phantom

COARSE = PhantomParams(voxel_size_mm=1.0)


@pytest.fixture(scope="module")
def default() -> Phantom:
    return make_phantom()


@pytest.fixture(scope="module")
def coarse() -> Phantom:
    return make_phantom(COARSE)


def _bone_points(ph: Phantom) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates and HU of every voxel labelled bone or lesion."""
    idx = np.argwhere(ph.labels.labels > 0)
    return ph.ct.grid.index_to_world(idx), ph.ct.hu[tuple(idx.T)]


def _shaft_coords(ph: Phantom, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance below the head centre along the shaft axis, distance from the shaft axis)."""
    t = ph.truth
    rel = pts - t.neck_shaft_intersection_mm
    along = rel @ t.shaft_axis
    radial = np.linalg.norm(rel - np.outer(along, t.shaft_axis), axis=1)
    below_head = -((pts - t.head_centre_mm) @ t.shaft_axis)
    return below_head, radial


def _fit_sphere(pts: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic least-squares sphere: |p|^2 = 2 c.p + (r^2 - |c|^2)."""
    a = np.column_stack([2.0 * pts, np.ones(len(pts))])
    sol = np.linalg.lstsq(a, (pts**2).sum(axis=1), rcond=None)[0]
    centre = sol[:3]
    return centre, float(np.sqrt(sol[3] + centre @ centre))


def _profile_thickness(ph: Phantom, start: np.ndarray, direction: np.ndarray,
                       threshold: float, length: float = 40.0, step: float = 0.05) -> float:
    """Length (mm) of a ray, sampled with trilinear interpolation, where HU > threshold."""
    s = np.arange(0.0, length, step)
    pts = start + np.outer(s, direction)
    values = ndimage.map_coordinates(ph.ct.hu, ph.ct.grid.world_to_index(pts).T, order=1)
    return float((values > threshold).sum() * step)


# --------------------------------------------------------------------------------------------
# size, speed, determinism
# --------------------------------------------------------------------------------------------


def test_default_size(default: Phantom) -> None:
    # Generation speed is measured by benchmarks/bench_meshing.py, not asserted here.
    ph = default
    grid = ph.ct.grid
    assert np.prod(grid.shape) < 10_000_000
    np.testing.assert_allclose(grid.spacing, 0.8)
    np.testing.assert_allclose(grid.direction, np.eye(3))
    assert ph.ct.hu.dtype == np.float32
    np.testing.assert_array_equal(ph.ct.hu, np.rint(ph.ct.hu))
    # The image reaches ~200 mm below the head centre and stops two slices below the cut.
    t = ph.truth
    assert t.distal_cut_z_mm == pytest.approx(t.head_centre_mm[2] - 200.0 + 0.4, abs=1e-6)
    low, high = grid.world_bounds()
    assert low[2] == pytest.approx(t.distal_cut_z_mm - 2 * 0.8)
    assert high[2] > t.head_centre_mm[2] + t.head_radius_mm


def test_determinism_and_seeded_noise() -> None:
    params = PhantomParams(voxel_size_mm=1.5, noise_sd_hu=20.0, seed=7)
    a, b = make_phantom(params), make_phantom(params)
    np.testing.assert_array_equal(a.ct.hu, b.ct.hu)
    np.testing.assert_array_equal(a.labels.labels, b.labels.labels)
    other = make_phantom(PhantomParams(voxel_size_mm=1.5, noise_sd_hu=20.0, seed=8))
    assert not np.array_equal(a.ct.hu, other.ct.hu)
    clean = make_phantom(PhantomParams(voxel_size_mm=1.5))
    noise = a.ct.hu - clean.ct.hu
    # sd of N(0, 20) rounded to whole HU: sqrt(20^2 + 1/12) = 20.002
    assert float(noise.std()) == pytest.approx(20.0, rel=0.02)
    assert abs(float(noise.mean())) < 0.2
    np.testing.assert_array_equal(a.labels.labels, clean.labels.labels)


def test_blur_conserves_total_attenuation() -> None:
    clean = make_phantom(PhantomParams(voxel_size_mm=1.5))
    blurred = make_phantom(PhantomParams(voxel_size_mm=1.5, blur_sigma_mm=1.0))
    total = float(clean.ct.hu.astype(np.float64).sum())
    assert float(blurred.ct.hu.astype(np.float64).sum()) == pytest.approx(total, rel=1e-4)
    assert blurred.ct.hu.max() < clean.ct.hu.max()


# --------------------------------------------------------------------------------------------
# HU per tissue
# --------------------------------------------------------------------------------------------


def test_hu_ranges_per_tissue(default: Phantom) -> None:
    t = default.truth
    pts, hu = _bone_points(default)
    below, radial = _shaft_coords(default, pts)
    mid_shaft = (below > 140.0) & (below < 185.0)
    # outer radius 14.0 (cut) to 14.4 mm, cortex 5.5 mm: keep 0.7 mm off both boundaries
    cortex = mid_shaft & (radial > 9.6) & (radial < 13.3)
    assert cortex.sum() > 5000
    assert 1200.0 <= hu[cortex].min() and hu[cortex].max() <= 1800.0
    assert float(np.median(hu[cortex])) == pytest.approx(t.nominal_hu["cortex_shaft"], abs=1)
    marrow = mid_shaft & (radial < 6.0)
    np.testing.assert_array_equal(np.unique(hu[marrow]), [-50.0])

    dist_head = np.linalg.norm(pts - t.head_centre_mm, axis=1)
    head_inside = dist_head < t.head_radius_mm - 3.0
    assert 100.0 <= hu[head_inside].min() and hu[head_inside].max() <= 400.0
    along_neck = -((pts - t.head_centre_mm) @ t.neck_axis)
    off_neck = np.linalg.norm(pts - t.head_centre_mm + np.outer(along_neck, t.neck_axis), axis=1)
    neck_inside = (along_neck > 20.0) & (along_neck < 35.0) & (off_neck < 10.0)
    assert 100.0 <= hu[neck_inside].min() and hu[neck_inside].max() <= 400.0
    # the head is denser than the neck (Ward's triangle) on average
    assert np.mean(hu[head_inside]) > np.mean(hu[neck_inside]) + 50.0
    # the thin proximal cortex still reaches its nominal HU where a voxel lies inside it
    shell = (dist_head > t.head_radius_mm - 1.0) & (dist_head < t.head_radius_mm) & (
        (pts - t.head_centre_mm) @ t.neck_axis > 0)
    assert float(hu[shell].max()) == pytest.approx(t.nominal_hu["cortex_proximal"], abs=1)
    assert 1200.0 <= t.nominal_hu["cortex_proximal"] <= 1800.0


def test_soft_tissue_and_air(default: Phantom) -> None:
    g = default.ct.grid
    hu = default.ct.hu
    corners = [hu[i, j, k] for i in (0, -1) for j in (0, -1) for k in (0, -1)]
    t = default.truth
    # the 4 corners of the top slice lie beyond the soft-tissue layer
    assert sorted(corners)[:4] == [-1000.0] * 4
    # a ring 6-14 mm outside the mid-shaft surface (outer radius 14 mm) is soft tissue
    k = int(np.rint(g.world_to_index(t.head_centre_mm + np.array([0.0, 0.0, -160.0]))[2]))
    ij = np.argwhere(np.ones(g.shape[:2], bool))
    pts = g.index_to_world(np.column_stack([ij, np.full(len(ij), k)]))
    _, radial = _shaft_coords(default, pts)
    ring = (radial > 20.0) & (radial < 28.0)
    values = hu[:, :, k].ravel()[ring]
    np.testing.assert_array_equal(np.unique(values), [40.0])


def test_calibration_line_inverts_to_densities(default: Phantom) -> None:
    p, t = default.params, default.truth
    assert p is not None
    assert (t.calibration_slope, t.calibration_intercept) == (0.0008, -0.01)
    # rho_QCT of cortex shaft = intercept + slope * HU  ->  1.25 g/cm^3
    assert t.calibration_intercept + t.calibration_slope * t.nominal_hu["cortex_shaft"] == (
        pytest.approx(p.rho_cortex_shaft))
    assert float(p.rho_of(p.hu_of(0.3))) == pytest.approx(0.3)


# --------------------------------------------------------------------------------------------
# geometry and world frame
# --------------------------------------------------------------------------------------------


def test_head_sphere_fit(default: Phantom) -> None:
    t = default.truth
    g = default.ct.grid
    mask = default.labels.labels > 0
    boundary = (mask & ~ndimage.binary_erosion(mask)) | (ndimage.binary_dilation(mask) & ~mask)
    pts = g.index_to_world(np.argwhere(boundary))
    cap = ((pts - t.head_centre_mm) @ t.neck_axis > 0.0) & (
        np.linalg.norm(pts - t.head_centre_mm, axis=1) < t.head_radius_mm + 10.0)
    centre, radius = _fit_sphere(pts[cap])
    assert np.linalg.norm(centre - t.head_centre_mm) < 0.8  # one voxel
    assert radius == pytest.approx(t.head_radius_mm, abs=1.0)
    assert radius == pytest.approx(23.0, abs=0.2)


def test_truth_angles_and_axes() -> None:
    t = make_phantom(PhantomParams(voxel_size_mm=1.5)).truth
    nsa = math.degrees(math.acos(float(-t.neck_axis @ t.shaft_axis)))
    assert nsa == pytest.approx(127.0, abs=0.5)
    assert t.neck_shaft_angle_deg == pytest.approx(127.0, abs=1e-9)
    x_axis, y_axis, z_axis = t.frame_axes
    np.testing.assert_allclose(z_axis, t.shaft_axis)
    np.testing.assert_allclose(np.cross(y_axis, z_axis), x_axis, atol=1e-12)
    np.testing.assert_allclose(t.frame_axes @ t.frame_axes.T, np.eye(3), atol=1e-12)
    # LPS, right femur: frame x (lateral) points to -x world, y (anterior) to -y world
    assert x_axis[0] < -0.99 and y_axis[1] == pytest.approx(-1.0)
    n_perp = t.neck_axis - (t.neck_axis @ z_axis) * z_axis
    ante = math.degrees(math.atan2(float(n_perp @ y_axis), float(n_perp @ -x_axis)))
    assert ante == pytest.approx(12.0, abs=0.5)
    assert math.degrees(math.acos(t.shaft_axis[2])) == pytest.approx(5.0, abs=1e-9)
    # the neck axis passes through the head centre and the neck-shaft intersection
    d = t.head_centre_mm - t.neck_shaft_intersection_mm
    np.testing.assert_allclose(d / np.linalg.norm(d), t.neck_axis, atol=1e-12)
    assert np.linalg.norm(d) == pytest.approx(52.0)
    json.dumps(t.to_dict())


def test_image_geometry_matches_truth_axes(default: Phantom) -> None:
    t = default.truth
    g = default.ct.grid
    mask = default.labels.labels > 0
    pts = g.index_to_world(np.argwhere(mask))
    # neck cross-sections normal to the neck axis are centred on it
    for dist in (20.0, 25.0, 30.0):
        rel = pts - t.head_centre_mm + dist * t.neck_axis
        slab = np.abs(rel @ t.neck_axis) < 0.4
        centroid = rel[slab].mean(axis=0)
        assert np.linalg.norm(centroid - (centroid @ t.neck_axis) * t.neck_axis) < 0.3
    # axial mid-shaft centroids: the shaft axis, tilted 5 deg, 8.6 mm posterior of the head
    centroids = []
    for below in (150.0, 180.0):
        k = int(np.rint(g.world_to_index(t.head_centre_mm - np.array([0.0, 0.0, below]))[2]))
        ij = np.argwhere(mask[:, :, k]).mean(axis=0)
        centroids.append(g.index_to_world([ij[0], ij[1], k]))
    axis = centroids[0] - centroids[1]
    axis /= np.linalg.norm(axis)
    assert math.degrees(math.acos(float(axis @ t.shaft_axis))) < 0.5
    assert axis[0] < 0  # proximal end lateral (-x) for a right femur
    offset = 52.0 * math.sin(math.radians(53.0)) * math.sin(math.radians(12.0))
    assert centroids[0][1] - t.head_centre_mm[1] == pytest.approx(offset, abs=0.5)
    # medial head (+x), lateral greater trochanter (-x), posterior lesser trochanter (+y)
    assert t.head_centre_mm[0] > centroids[0][0] + 20.0
    assert t.greater_trochanter_lateral_mm[0] < t.neck_shaft_intersection_mm[0] - 15.0
    assert t.lesser_trochanter_mm[1] > t.neck_shaft_intersection_mm[1] + 10.0
    for point in (t.greater_trochanter_lateral_mm, t.lesser_trochanter_mm):
        inward = np.rint(g.world_to_index(point + 1.0 * (t.neck_shaft_intersection_mm - point)
                                          / np.linalg.norm(t.neck_shaft_intersection_mm - point)))
        assert mask[tuple(inward.astype(int))]
    # nothing below the cut; bone on the lowest bone slice
    k_cut = int(np.rint(g.world_to_index([0.0, 0.0, t.distal_cut_z_mm])[2]))
    assert not mask[:, :, :k_cut].any() and mask[:, :, k_cut].sum() > 200


def test_cortex_thicker_in_shaft_than_neck(default: Phantom) -> None:
    t = default.truth
    threshold = 800.0  # between cortex (>= 1325 HU) and trabecular bone/marrow (<= 390 HU)
    shaft_thickness = []
    for below in (150.0, 170.0):
        centre = t.neck_shaft_intersection_mm + (
            (t.head_centre_mm[2] - below - t.neck_shaft_intersection_mm[2]) / t.shaft_axis[2]
        ) * t.shaft_axis
        for direction in (np.array([0.0, 1.0, 0.0]), -t.frame_axes[0]):
            shaft_thickness.append(_profile_thickness(default, centre, direction, threshold))
    neck_thickness = []
    anterior = t.frame_axes[1] - (t.frame_axes[1] @ t.neck_axis) * t.neck_axis
    anterior /= np.linalg.norm(anterior)
    for dist in (20.0, 25.0, 30.0):
        centre = t.head_centre_mm - dist * t.neck_axis
        for direction in (anterior, -anterior):
            neck_thickness.append(_profile_thickness(default, centre, direction, threshold))
    assert np.mean(shaft_thickness) == pytest.approx(5.5, abs=0.3)
    assert np.mean(neck_thickness) == pytest.approx(1.0, abs=0.4)
    assert min(shaft_thickness) > 3.0 * max(neck_thickness)


# --------------------------------------------------------------------------------------------
# lesions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lytic", "blastic", "mixed"])
def test_lesion_changes_hu_inside_bone_only(
    coarse: Phantom, kind: Literal["lytic", "blastic", "mixed"]
) -> None:
    ph = make_phantom(COARSE, LesionParams(site="intertrochanteric", radius_mm=10.0, kind=kind))
    lesion = ph.labels.labels == 2
    # a sphere of radius 10 mm fully inside the bone: 4188.8 voxels of 1 mm^3
    assert lesion.sum() == pytest.approx(4.0 / 3.0 * math.pi * 1000.0, rel=0.01)
    assert ph.truth.lesion is not None
    assert ph.truth.lesion["voxels"] == lesion.sum()
    np.testing.assert_array_equal(coarse.labels.labels[lesion], 1)  # label 2 only in bone
    np.testing.assert_array_equal(ph.labels.labels > 0, coarse.labels.labels > 0)
    before = float(coarse.ct.hu[lesion].mean())
    after = float(ph.ct.hu[lesion].mean())
    assert 100.0 < before < 400.0  # trabecular metaphysis
    if kind == "lytic":
        assert after == pytest.approx(30.0, abs=15.0)
    elif kind == "blastic":
        assert after > 1100.0
    else:
        centre = np.asarray(ph.truth.lesion["centre_mm"])
        dist = np.linalg.norm(ph.ct.grid.index_to_world(np.argwhere(lesion)) - centre, axis=1)
        values = ph.ct.hu[lesion]
        assert float(values[dist < 4.0].mean()) == pytest.approx(30.0, abs=5.0)  # lytic core
        assert float(values[dist > 7.0].mean()) > 1100.0  # blastic rim
    # outside a box of +-11 mm (1 mm voxels) around the lesion centre nothing changed
    centre_ijk = np.rint(ph.ct.grid.world_to_index(ph.truth.lesion["centre_mm"])).astype(int)
    box = tuple(slice(c - 11, c + 12) for c in centre_ijk)
    changed = ph.ct.hu != coarse.ct.hu
    assert changed[box].sum() > 4000
    assert changed.sum() == changed[box].sum()


def test_subtrochanteric_lytic_lesion_breaches_cortex(coarse: Phantom) -> None:
    ph = make_phantom(COARSE, LesionParams(site="subtrochanteric", kind="lytic"))
    assert ph.truth.lesion is not None
    centre = np.asarray(ph.truth.lesion["centre_mm"])
    t = ph.truth
    medial = -t.frame_axes[0]
    axis_point = centre - 10.0 * medial  # the centre lies 4 mm inside the medial surface
    before = _profile_thickness(coarse, axis_point, medial, 800.0, length=25.0)
    after = _profile_thickness(ph, axis_point, medial, 800.0, length=25.0)
    assert before > 3.5 and after == 0.0
    assert float(np.median(ph.ct.hu[ph.labels.labels == 2])) == pytest.approx(30.0, abs=1.0)


def test_explicit_lesion_centre_and_axes_in_anatomical_frame(coarse: Phantom) -> None:
    t = coarse.truth
    target = t.neck_shaft_intersection_mm - 15.0 * t.shaft_axis
    in_frame = t.frame_axes @ (target - t.head_centre_mm)
    ph = make_phantom(COARSE, LesionParams(site=tuple(in_frame.tolist()), radius_mm=(4.0, 6.0,
                                                                                     12.0)))
    assert ph.truth.lesion is not None
    np.testing.assert_allclose(ph.truth.lesion["centre_mm"], target, atol=1e-9)
    pts = ph.ct.grid.index_to_world(np.argwhere(ph.labels.labels == 2))
    assert len(pts) == pytest.approx(4.0 / 3.0 * math.pi * 4 * 6 * 12, rel=0.03)
    np.testing.assert_allclose(pts.mean(axis=0), target, atol=0.3)
    extent = (pts - target) @ t.frame_axes.T  # coordinates along frame x, y, z
    np.testing.assert_allclose(np.abs(extent).max(axis=0), [4.0, 6.0, 12.0], atol=1.0)


def test_lesion_outside_bone_is_refused() -> None:
    with pytest.raises(InputError, match="does not overlap the bone") as err:
        make_phantom(PhantomParams(voxel_size_mm=1.5),
                     LesionParams(site=(0.0, 0.0, 60.0), radius_mm=5.0))
    assert err.value.hint


# --------------------------------------------------------------------------------------------
# parameters and output
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"voxel_size_mm": 0.0}, "voxel_size_mm"),
        ({"voxel_size_mm": 2.0}, "voxel_size_mm"),
        ({"head_radius_mm": -23.0}, "head_radius_mm"),
        ({"shaft_radius_mm": float("nan")}, "shaft_radius_mm"),
        ({"neck_radius_mm": 25.0}, "neck_radius_mm"),
        ({"neck_shaft_angle_deg": 200.0}, "neck_shaft_angle_deg"),
        ({"cortex_shaft_mm": 13.0}, "cortex_shaft_mm"),
        ({"noise_sd_hu": -1.0}, "noise_sd_hu"),
        ({"lesser_trochanter_semi_axes_mm": (7.0, 0.0, 11.0)}, "lesser_trochanter_semi_axes_mm"),
    ],
)
def test_bad_phantom_params(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(InputError, match=name) as err:
        PhantomParams(**kwargs)  # type: ignore[arg-type]
    assert err.value.hint


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"radius_mm": -1.0}, "radius_mm"),
        ({"radius_mm": (5.0, 0.0, 5.0)}, "radius_mm"),
        ({"site": "knee"}, "site"),
        ({"kind": "sclerotic"}, "kind"),
        ({"core_fraction": 1.0}, "core_fraction"),
    ],
)
def test_bad_lesion_params(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(InputError, match=name):
        LesionParams(**kwargs)  # type: ignore[arg-type]


def test_write_phantom(tmp_path: Path) -> None:
    ph = make_phantom(PhantomParams(voxel_size_mm=1.5), LesionParams(site="neck", kind="mixed"))
    paths = write_phantom(ph, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ct.nii.gz", "labels.nii.gz", "phantom.json"]
    ct = read_ct(paths["ct"])
    np.testing.assert_array_equal(ct.hu, ph.ct.hu)
    assert ct.grid.same_as(ph.ct.grid, tol_mm=1e-4)
    labels = read_labels(paths["labels"])
    np.testing.assert_array_equal(labels.labels, ph.labels.labels)
    record = json.loads(paths["json"].read_text())
    assert record["truth"]["neck_shaft_angle_deg"] == pytest.approx(127.0)
    assert record["truth"]["head_centre_mm"] == list(ph.truth.head_centre_mm)
    assert record["truth"]["lesion"]["kind"] == "mixed"
    assert record["params"]["voxel_size_mm"] == 1.5
    assert record["lesion_params"]["site"] == "neck"
    assert record["labels"] == {"1": "bone", "2": "lesion"}
