"""CT rigidity analysis (material.rigidity) against closed forms and the phantom.

Closed forms of a homogeneous tube of outer radius R and inner radius r: EA = E pi (R^2 -
r^2), EI = E pi (R^4 - r^4) / 4 about any diameter, GJ = G pi (R^4 - r^4) / 2 with G = E /
(2 (1 + nu)); and of a tube with an angular sector removed (annular sectors, below). The
tubes are voxelised at 0.25-0.3 mm (a voxel belongs to the tube when its centre does).
"""

from __future__ import annotations

import json
import math
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from conftest import rotation

from material.calibration import LinearCalibration
from material.laws import MaterialModel
from material.rigidity import (
    CTRA_REDUCTION_THRESHOLD,
    RIGIDITY_KINDS,
    ReferenceFemur,
    RigidityError,
    ctra,
    rigidity_profile,
)
from meshing.lesion import LesionKind
from meshing.phantom import LesionParams, Phantom, PhantomParams, make_phantom
from meshing.types import CTVolume, ImageGrid

#: The phantom's calibration line (PhantomParams defaults) with the default density chain and
#: modulus law: 1500 HU gives E ~ 17.3 GPa; -1000 HU (air) gives the 5 MPa floor.
MODEL = MaterialModel(LinearCalibration(slope=0.0008, intercept=-0.01))
BONE_HU = 1500.0
E_BONE = float(MODEL.modulus(BONE_HU))
E_FLOOR = float(MODEL.modulus(-1000.0))
NU = MODEL.poisson_ratio




def _tube(h: float, outer: float, inner: float, length: float, *,
          axis: npt.ArrayLike = (0.0, 0.0, 1.0), direction: npt.ArrayLike | None = None,
          centre: npt.ArrayLike = (0.0, 0.0, 0.0)
          ) -> tuple[ImageGrid, npt.NDArray[np.bool_], dict[str, npt.NDArray[np.float64]]]:
    """Grid, tube mask and the cylindrical coordinates (z, r, theta deg) of every voxel."""
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    c = np.asarray(centre, dtype=float)
    rot = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    if direction is None and np.allclose(a, [0, 0, 1]):
        # an even count: centres at half-integer multiples of h, none on the circles
        shape = (2 * int(outer / h) + 4,) * 2 + (int(length / h) + 1,)
    else:
        n = int(math.hypot(2 * outer, length) / h) + 3
        shape = (n, n, n)
    grid = ImageGrid(shape=shape, spacing=np.full(3, h),
                     origin=c - rot @ (h * (np.array(shape) - 1) / 2.0), direction=rot)
    d = grid.index_to_world(np.indices(shape).reshape(3, -1).T) - c
    e1 = np.array([1.0, 0, 0]) - a[0] * a
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(a, e1)
    coords = {"z": (d @ a).reshape(shape), "r": np.hypot(d @ e1, d @ e2).reshape(shape),
              "theta": np.degrees(np.arctan2(d @ e2, d @ e1)).reshape(shape)}
    mask = (coords["r"] <= outer) & (coords["r"] >= inner) & (np.abs(coords["z"]) <= length / 2)
    return grid, mask, coords


def _ct(grid: ImageGrid, *masks_and_hu: tuple[npt.NDArray[np.bool_], float]) -> CTVolume:
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    for mask, value in masks_and_hu:
        hu[mask] = value
    return CTVolume(grid, hu)


def _annulus(outer: float, inner: float) -> dict[str, float]:
    """EA, EI, GJ of the homogeneous tube."""
    ring4 = outer**4 - inner**4
    return {"EA": E_BONE * math.pi * (outer**2 - inner**2),
            "EI_min": E_BONE * math.pi * ring4 / 4.0,
            "EI_max": E_BONE * math.pi * ring4 / 4.0,
            "GJ": E_BONE / (2.0 * (1.0 + NU)) * math.pi * ring4 / 2.0}


# ---------------------------------------------------------------------------------------------
# closed forms
# ---------------------------------------------------------------------------------------------


def test_tube_closed_forms_on_axial_slices() -> None:
    """Every axial slice of a 0.25 mm tube matches EA, EI and GJ to 0.2%."""
    grid, tube, _ = _tube(0.25, 10.0, 6.0, 3.0)
    profile = rigidity_profile(_ct(grid, (tube, BONE_HU)), tube, MODEL, axis=[0, 0, 1],
                               axis_point=[0, 0, 0])
    exact = _annulus(10.0, 6.0)
    assert profile.slice_mm == 0.25
    assert profile.positions_mm.size == grid.shape[2]
    for kind in ("EA", "EI_min", "EI_max", "GJ"):
        np.testing.assert_allclose(profile.values(kind), exact[kind], rtol=2e-3)
    np.testing.assert_allclose(profile.area_mm2, math.pi * 64.0, rtol=2e-3)
    np.testing.assert_allclose(profile.centroid_mm[:, :2], 0.0, atol=1e-9)


def test_tube_closed_forms_on_an_oblique_axis() -> None:
    """A tube tilted 7 deg on a grid with rotated direction cosines: within 2% away from
    its ends, with sections perpendicular to the tube's own axis."""
    axis = rotation("y", 7.0) @ np.array([0.0, 0.0, 1.0])
    centre = np.array([3.0, -2.0, 5.0])
    grid, tube, _ = _tube(0.3, 8.0, 5.0, 10.0, axis=axis,
                          direction=rotation("z", 20.0) @ rotation("x", 10.0), centre=centre)
    profile = rigidity_profile(_ct(grid, (tube, BONE_HU)), tube, MODEL, axis=axis,
                               axis_point=centre)
    inside = np.abs(profile.positions_mm) < 4.5
    assert inside.sum() > 25
    exact = _annulus(8.0, 5.0)
    for kind in ("EA", "EI_min", "EI_max", "GJ"):
        np.testing.assert_allclose(profile.values(kind)[inside], exact[kind], rtol=0.02)
    # centroids lie on the tube's axis
    offset = profile.centroid_mm[inside] - centre
    off_axis = offset - np.outer(offset @ axis, axis)
    assert np.abs(off_axis).max() < 0.05


def _sector(alpha: float, towards: float, outer: float, inner: float
            ) -> tuple[float, float, float, float]:
    """Area, first moment along x, and second moments int x^2, int y^2 of an annular sector
    of opening ``alpha`` centred on the direction ``towards`` (0 or pi), about the centre."""
    area = alpha / 2.0 * (outer**2 - inner**2)
    q_x = 2.0 / 3.0 * math.sin(alpha / 2.0) * math.cos(towards) * (outer**3 - inner**3)
    quarter = (outer**4 - inner**4) / 4.0
    i_xx = quarter * (alpha / 2.0 + math.sin(alpha) * math.cos(2 * towards) / 2.0)
    i_yy = quarter * (alpha / 2.0 - math.sin(alpha) * math.cos(2 * towards) / 2.0)
    return area, q_x, i_xx, i_yy


def _wedge_section(outer: float, inner: float, removed_deg: float) -> dict[str, float]:
    """EA, EI_min, GJ of a tube whose sector of ``removed_deg`` (centred on +x) has E_FLOOR."""
    beta = math.radians(removed_deg)
    parts = [(E_BONE, _sector(2 * math.pi - beta, math.pi, outer, inner)),
             (E_FLOOR, _sector(beta, 0.0, outer, inner))]
    ea = sum(e * p[0] for e, p in parts)
    centroid = sum(e * p[1] for e, p in parts) / ea
    ei_x = sum(e * p[2] for e, p in parts) - ea * centroid**2  # int E (x - xc)^2
    ei_y = sum(e * p[3] for e, p in parts)
    return {"EA": ea, "EI_min": min(ei_x, ei_y), "GJ": (ei_x + ei_y) / (2.0 * (1.0 + NU))}


def test_wedge_lesion_removes_a_known_fraction() -> None:
    """A 60 deg lytic wedge through the wall removes 1/6 of EA and the annular-sector share of
    EI_min (36%, above the CTRA threshold) and GJ, in the lesion's sections only; the filled
    reference is the intact tube. (60 deg: no voxel centre lies on the wedge's edges.)"""
    h, outer, inner = 0.25, 10.0, 6.0
    grid, tube, cyl = _tube(h, outer, inner, 8.0)
    wedge = tube & (np.abs(cyl["theta"]) < 30.0) & (np.abs(cyl["z"]) <= 2.0)
    ct = _ct(grid, (tube, BONE_HU), (wedge, -1000.0))
    result = ctra(ct, tube & ~wedge, MODEL, axis=[0, 0, 1], axis_point=[0, 0, 0],
                  lesion_mask=wedge)
    intact, lesioned = _annulus(outer, inner), _wedge_section(outer, inner, 60.0)
    assert result.reference_kind == "filled"
    assert result.region_mm == pytest.approx((-2.0 - h / 2, 2.0 + h / 2))
    for kind in RIGIDITY_KINDS:
        expected = 1.0 - lesioned[kind] / intact[kind]
        assert result.max_reduction[kind] == pytest.approx(expected, abs=3e-3), kind
        assert abs(result.max_reduction_level_mm[kind]) <= 2.0
        outside = np.abs(result.positions_mm) > 2.0 + h
        np.testing.assert_allclose(result.reductions[kind][outside], 0.0, atol=1e-12)
        np.testing.assert_allclose(result.reference.values(kind), intact[kind], rtol=2e-3)
    assert result.max_reduction["EA"] == pytest.approx((1 - E_FLOOR / E_BONE) / 6, abs=3e-3)
    assert result.governing == "EI_min"
    assert result.max_reduction["EI_min"] > CTRA_REDUCTION_THRESHOLD and result.high_risk
    record = json.loads(json.dumps(result.to_dict()))
    assert record["reference_kind"] == "filled" and len(record["positions_mm"]) > 30


def test_contralateral_reference_aligned_by_axis_points() -> None:
    """An intact tube elsewhere in space (another grid, shifted and tilted) as contralateral:
    compared at equal levels from each axis point, it gives the same reductions."""
    h, outer, inner = 0.3, 10.0, 6.0
    grid, tube, cyl = _tube(h, outer, inner, 8.4)
    wedge = tube & (np.abs(cyl["theta"]) < 45.0) & (np.abs(cyl["z"]) <= 2.0)
    ct = _ct(grid, (tube, BONE_HU), (wedge, -1000.0))
    axis = rotation("x", 5.0) @ np.array([0.0, 0.0, 1.0])
    centre = np.array([40.0, 10.0, -7.0])
    ref_grid, ref_tube, _ = _tube(h, outer, inner, 12.0, axis=axis, centre=centre)
    reference = ReferenceFemur(_ct(ref_grid, (ref_tube, BONE_HU)), ref_tube, axis, centre,
                               "tube elsewhere")
    kwargs: dict[str, Any] = {"axis": [0, 0, 1], "axis_point": [0, 0, 0], "lesion_mask": wedge}
    contra = ctra(ct, tube, MODEL, reference=reference, **kwargs)
    filled = ctra(ct, tube, MODEL, **kwargs)
    assert contra.reference_kind == "contralateral"
    for kind in RIGIDITY_KINDS:
        assert contra.max_reduction[kind] == pytest.approx(filled.max_reduction[kind], abs=0.02)
    assert abs(contra.max_reduction_level_mm["EA"]) <= 2.0


def test_errors() -> None:
    grid, tube, _ = _tube(0.5, 5.0, 3.0, 4.0)
    ct = _ct(grid, (tube, BONE_HU))
    kwargs: dict[str, Any] = {"axis": [0, 0, 1], "axis_point": [0, 0, 0]}
    with pytest.raises(RigidityError, match="needs the lesion mask") as err:
        ctra(ct, tube, MODEL, **kwargs)
    assert err.value.hint
    with pytest.raises(RigidityError, match="empty"):
        rigidity_profile(ct, np.zeros_like(tube), MODEL, **kwargs)
    with pytest.raises(RigidityError, match="shape"):
        rigidity_profile(ct, tube[1:], MODEL, **kwargs)
    with pytest.raises(RigidityError, match="zero vector"):
        rigidity_profile(ct, tube, MODEL, axis=[0, 0, 0], axis_point=[0, 0, 0])
    profile = rigidity_profile(ct, tube, MODEL, **kwargs)
    with pytest.raises(RigidityError, match="no section"):
        profile.weakest("EA", within_mm=(50.0, 60.0))


# ---------------------------------------------------------------------------------------------
# the phantom
# ---------------------------------------------------------------------------------------------

PHANTOM = PhantomParams(voxel_size_mm=1.2)  # coarse: the assertions are loose
PHANTOM_MODEL = MaterialModel(LinearCalibration(slope=PHANTOM.calibration_slope,
                                                intercept=PHANTOM.calibration_intercept))


@cache
def _phantom(site: str | None, kind: LesionKind = "lytic") -> Phantom:
    lesion = None if site is None else LesionParams(site=site, kind=kind)
    return make_phantom(PHANTOM, lesion)


def _reference(mirror: bool = False) -> ReferenceFemur:
    """The intact phantom, as is or mirrored into a left femur (flipped along image i)."""
    ph = _phantom(None)
    grid, truth = ph.ct.grid, ph.truth
    hu, femur = ph.ct.hu, ph.labels.labels > 0
    axis, head = truth.shaft_axis, truth.head_centre_mm
    if mirror:
        hu, femur = hu[::-1], femur[::-1]
        plane = 2.0 * grid.origin[0] + grid.spacing[0] * (grid.shape[0] - 1)  # x -> plane - x
        axis = axis * np.array([-1.0, 1.0, 1.0])
        head = np.array([plane - head[0], head[1], head[2]])
    return ReferenceFemur(CTVolume(grid, hu), np.ascontiguousarray(femur), axis, head,
                          "mirrored intact phantom" if mirror else "intact phantom")


@pytest.mark.parametrize("site", ["intertrochanteric", "subtrochanteric", "calcar"])
def test_phantom_lytic_lesion_reduces_rigidity_at_the_lesion(site: str) -> None:
    """Against the intact phantom, every lytic lesion lowers EA, EI_min and GJ, most at its
    own levels; sections away from it are unchanged; the filled reference agrees."""
    ph = _phantom(site)
    labels, truth = ph.labels.labels, ph.truth
    kwargs: dict[str, Any] = {"axis": truth.shaft_axis, "axis_point": truth.head_centre_mm,
                              "lesion_mask": labels == 2}
    contra = ctra(ph.ct, labels == 1, PHANTOM_MODEL, reference=_reference(), **kwargs)
    low, high = contra.region_mm
    lesion_levels = (ph.ct.grid.index_to_world(np.argwhere(labels == 2))
                     - truth.head_centre_mm) @ truth.shaft_axis
    assert low <= lesion_levels.min() and high >= lesion_levels.max()
    for kind in RIGIDITY_KINDS:
        assert contra.max_reduction[kind] > 0.01, kind
        assert low <= contra.max_reduction_level_mm[kind] <= high
        far = (contra.positions_mm < low - 2.0) | (contra.positions_mm > high + 2.0)
        np.testing.assert_allclose(contra.reductions[kind][far], 0.0, atol=1e-9)
        weakest = contra.weakest[kind]
        assert low <= weakest["level_mm"] <= high
        assert weakest["value"] < weakest["reference_value"]
    assert contra.max_reduction["EA"] > 0.05
    filled = ctra(ph.ct, labels == 1, PHANTOM_MODEL, **kwargs)
    for kind in RIGIDITY_KINDS:  # the fill misses only the calcar's extra cortex
        assert filled.max_reduction[kind] == pytest.approx(contra.max_reduction[kind], abs=0.06)


def test_phantom_subtrochanteric_lesion_is_high_risk_by_ctra() -> None:
    """The subtrochanteric lesion breaches the medial cortex: EI_min falls by ~half."""
    ph = _phantom("subtrochanteric")
    labels, truth = ph.labels.labels, ph.truth
    result = ctra(ph.ct, labels == 1, PHANTOM_MODEL, axis=truth.shaft_axis,
                  axis_point=truth.head_centre_mm, lesion_mask=labels == 2,
                  reference=_reference(mirror=True))
    assert result.high_risk and result.governing == "EI_min"
    assert result.max_reduction["EI_min"] > 0.4
    # the mirrored (left) intact femur is as good a reference as the right one
    same = ctra(ph.ct, labels == 1, PHANTOM_MODEL, axis=truth.shaft_axis,
                axis_point=truth.head_centre_mm, lesion_mask=labels == 2,
                reference=_reference())
    for kind in RIGIDITY_KINDS:
        np.testing.assert_allclose(result.reductions[kind], same.reductions[kind], atol=1e-9)


def test_phantom_blastic_lesion_does_not_reduce_rigidity() -> None:
    """A blastic lesion only raises HU: no section loses rigidity."""
    ph = _phantom("subtrochanteric", "blastic")
    labels, truth = ph.labels.labels, ph.truth
    result = ctra(ph.ct, labels == 1, PHANTOM_MODEL, axis=truth.shaft_axis,
                  axis_point=truth.head_centre_mm, lesion_mask=labels == 2,
                  reference=_reference())
    for kind in RIGIDITY_KINDS:
        assert np.nanmax(result.reductions[kind]) <= 1e-9
    assert not result.high_risk
