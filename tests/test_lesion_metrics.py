"""Lesion measurements from the scan (meshing.lesion) against closed forms and the phantom.

Synthetic bones are voxelised rods and tubes (a voxel belongs to a body when its centre does),
so exact widths and lengths are known up to one voxel. The phantom tests use its documented
geometry (PhantomParams, LesionParams): 1.0 mm voxels keep the module under ~15 s.
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

from meshing.lesion import (
    COMPONENT_MIN_FRACTION,
    LesionError,
    LesionKind,
    LesionMeasurements,
    SectionFrame,
    axial_cortical_involvement_mm,
    cortical_involvement,
    fill_lesion_hu,
    lesion_size_fraction,
    lesion_type,
    measure_lesion,
    mirels_site_from_position,
)
from meshing.phantom import LesionParams, Phantom, PhantomParams, make_phantom
from meshing.types import CTVolume, ImageGrid
from risk.mirels import aci_positive, score_mirels

VOXEL_MM = 1.0
BONE_HU = 1500.0




class _Body:
    """A grid and the cylindrical coordinates (level z, radius r, angle theta) of its voxels.

    The body's axis runs through ``centre`` along ``axis``; theta is measured from ``e1``
    (the component of world x perpendicular to the axis).
    """

    def __init__(self, h: float, half_width: float, half_length: float,
                 axis: npt.ArrayLike = (0.0, 0.0, 1.0), direction: npt.ArrayLike | None = None,
                 centre: npt.ArrayLike = (0.0, 0.0, 0.0)) -> None:
        self.axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
        self.centre = np.asarray(centre, dtype=float)
        rot = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
        if direction is None and np.allclose(self.axis, [0, 0, 1]):
            shape = (int(2 * half_width / h) + 3,) * 2 + (int(2 * half_length / h) + 1,)
        else:  # a cube holding the tilted body
            n = int(2 * math.hypot(half_width, half_length) / h) + 3
            shape = (n, n, n)
        origin = self.centre - rot @ (h * (np.array(shape) - 1) / 2.0)
        self.grid = ImageGrid(shape=shape, spacing=np.full(3, h), origin=origin, direction=rot)
        ijk = np.indices(shape).reshape(3, -1).T
        d = self.grid.index_to_world(ijk) - self.centre
        e1 = np.array([1.0, 0, 0]) - self.axis[0] * self.axis
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(self.axis, e1)
        self.z = (d @ self.axis).reshape(shape)
        self.r = np.hypot(d @ e1, d @ e2).reshape(shape)
        self.theta = np.degrees(np.arctan2(d @ e2, d @ e1)).reshape(shape)
        self.half_length = half_length

    def ct(self, *masks_and_hu: tuple[npt.NDArray[np.bool_], float]) -> CTVolume:
        hu = np.full(self.grid.shape, -1000.0, dtype=np.float32)
        for mask, value in masks_and_hu:
            hu[mask] = value
        return CTVolume(self.grid, hu)

    def tube(self, outer: float, inner: float) -> npt.NDArray[np.bool_]:
        return (self.r <= outer) & (self.r >= inner) & (np.abs(self.z) <= self.half_length)


# ---------------------------------------------------------------------------------------------
# closed forms: size fraction, ACI, circumferential involvement
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("radius", "offset"), [(5.0, 0.0), (6.0, 3.0)])
def test_size_fraction_of_a_ball_in_a_rod(radius: float, offset: float) -> None:
    """A ball of radius rho inside a rod of radius R: 2 rho / 2R in the section through it."""
    h, big_r = 0.4, 10.0
    body = _Body(h, big_r + 1.0, 12.0)
    rod = body.tube(big_r, 0.0)
    d = body.grid.index_to_world(np.indices(body.grid.shape).reshape(3, -1).T)
    ball = (np.linalg.norm(d - [offset, 0.0, 0.0], axis=1) <= radius).reshape(body.grid.shape)
    size = lesion_size_fraction(body.grid, rod & ~ball, ball, shaft_axis=[0, 0, 1],
                                axis_point=[0, 0, 0])
    assert size.fraction == pytest.approx(radius / big_r, abs=h / big_r)
    # the width 2 sqrt(rho^2 - z^2) is within one voxel of 2 rho for |z| < sqrt(2 rho h)
    assert abs(size.level_mm) <= math.sqrt(2.0 * radius * h)
    assert size.fractions.shape == size.levels_mm.shape
    assert size.levels_mm[0] == pytest.approx(-radius, abs=2 * h)


def test_aci_and_circumference_of_a_wedge_through_the_wall() -> None:
    """A 60 deg wedge through a tube wall over 20 mm: ACI 20 mm, 1/6 of the circumference."""
    h = 0.4
    body = _Body(h, 13.0, 20.0)
    tube = body.tube(12.0, 8.0)
    wedge = tube & (np.abs(body.theta) < 30.0) & (np.abs(body.z) <= 10.0)
    inv = cortical_involvement(body.grid, tube & ~wedge, wedge, shaft_axis=[0, 0, 1],
                               axis_point=[0, 0, 0])
    # voxel layers at z = 0.4 k mm: 51 of them within |z| <= 10 mm
    assert inv.involved_slices == 51
    assert inv.aci_mm == pytest.approx(51 * h)
    assert inv.span_mm == inv.aci_mm
    assert inv.first_level_mm == pytest.approx(-10.0, abs=h)
    assert inv.last_level_mm == pytest.approx(10.0, abs=h)
    assert inv.circumferential_fraction == pytest.approx(1.0 / 6.0, abs=2.0 / 72.0)
    assert axial_cortical_involvement_mm(body.grid, tube, wedge, shaft_axis=[0, 0, 1],
                                         axis_point=[0, 0, 0]) == inv.aci_mm
    assert bool(aci_positive(inv.aci_mm)) is False


def test_endosteal_lesion_involves_the_cortex_only_with_a_deeper_shell() -> None:
    """A lesion 2.5-4 mm deep misses a 2 mm cortical shell but not a 3 mm one."""
    h = 0.4
    body = _Body(h, 13.0, 20.0)
    tube = body.tube(12.0, 8.0)
    pocket = tube & (body.r <= 9.5) & (np.abs(body.theta) < 30.0) & (np.abs(body.z) <= 10.0)
    kwargs: dict[str, Any] = {"shaft_axis": [0, 0, 1], "axis_point": [0, 0, 0]}
    shallow = cortical_involvement(body.grid, tube, pocket, **kwargs)
    assert shallow.aci_mm == 0.0 and shallow.involved_slices == 0
    assert math.isnan(shallow.first_level_mm)
    assert shallow.circumferential_fraction == 0.0
    deep = cortical_involvement(body.grid, tube, pocket, cortex_mm=3.0, **kwargs)
    assert deep.aci_mm == pytest.approx(51 * h)


def test_oblique_axis_on_a_rotated_grid() -> None:
    """The same wedge in a tube tilted 8 deg, on a grid with rotated direction cosines."""
    h = 0.5
    axis = rotation("y", 8.0) @ np.array([0.0, 0.0, 1.0])
    direction = rotation("z", 25.0) @ rotation("x", 10.0)
    centre = np.array([4.0, -3.0, 7.0])
    body = _Body(h, 13.0, 18.0, axis=axis, direction=direction, centre=centre)
    tube = body.tube(12.0, 8.0)
    wedge = tube & (np.abs(body.theta) < 45.0) & (np.abs(body.z) <= 10.0)
    kwargs = {"shaft_axis": axis, "axis_point": centre}
    inv = cortical_involvement(body.grid, tube, wedge, **kwargs)
    frame = SectionFrame.build(body.grid, axis, centre)
    assert inv.slice_mm == frame.slice_mm
    assert h * 0.9 < frame.slice_mm <= h
    assert inv.aci_mm == pytest.approx(20.0, abs=2 * frame.slice_mm)
    assert inv.circumferential_fraction == pytest.approx(0.25, abs=2.0 / 72.0)
    size = lesion_size_fraction(body.grid, tube, wedge, **kwargs)
    # the wedge's chord 2 * 12 * sin(45 deg) against the 24 mm diameter
    assert size.fraction == pytest.approx(math.sin(math.radians(45.0)), abs=2 * h / 24.0)


def test_fill_restores_the_wall_hu() -> None:
    """Filling a wedge of a homogeneous tube gives back the tube's HU."""
    body = _Body(0.5, 13.0, 12.0)
    tube = body.tube(12.0, 8.0)
    wedge = tube & (np.abs(body.theta) < 30.0) & (np.abs(body.z) <= 5.0)
    ct = body.ct((tube, BONE_HU), (wedge, 30.0))
    filled = fill_lesion_hu(ct, tube & ~wedge, wedge)
    assert np.all(filled[wedge] == BONE_HU)
    assert np.array_equal(filled[~wedge], ct.hu[~wedge])
    kind, evidence = lesion_type(ct, tube & ~wedge, wedge)
    assert kind == "lytic" and evidence["lower_fraction"] == 1.0 and evidence["confident"]


# ---------------------------------------------------------------------------------------------
# the phantom
# ---------------------------------------------------------------------------------------------


@cache
def _phantom(site: str | tuple[float, float, float], kind: LesionKind = "lytic",
             radius: float | tuple[float, float, float] = 10.0, noise: float = 0.0) -> Phantom:
    params = PhantomParams(voxel_size_mm=VOXEL_MM, noise_sd_hu=noise, seed=3)
    return make_phantom(params, LesionParams(site=site, kind=kind, radius_mm=radius))


def _shaft_radius(level: float) -> float:
    """Outer shaft radius (mm) of the default phantom at a level below the head centre.

    PhantomParams: 14 mm at the distal cut (200 mm below the head centre), growing linearly
    to 15.5 mm 15 mm below the lesser trochanter, itself 32 mm below the neck-shaft point,
    which lies 52 cos(53 deg) mm below the head centre (neck-shaft angle 127 deg).
    """
    subtroch = -52.0 * math.cos(math.radians(180.0 - 127.0)) - 32.0 - 15.0
    return 14.0 + 1.5 * (level + 200.0) / (subtroch + 200.0)


def _measure(ph: Phantom, **kwargs: object) -> LesionMeasurements:
    labels, truth = ph.labels.labels, ph.truth
    return measure_lesion(ph.ct, labels == 1, labels == 2, shaft_axis=truth.shaft_axis,
                          axis_point=truth.neck_shaft_intersection_mm,
                          head_centre=truth.head_centre_mm,
                          lesser_trochanter=truth.lesser_trochanter_mm, **kwargs)  # type: ignore[arg-type]


def _shaft_in_frame(ph: Phantom) -> npt.NDArray[np.float64]:
    """The shaft axis's (x, y) in the phantom's anatomical frame."""
    truth = ph.truth
    return np.asarray(truth.frame_axes @ (truth.neck_shaft_intersection_mm
                                          - truth.head_centre_mm))[:2]


@pytest.mark.parametrize(
    ("site", "kind"),
    [
        ("intertrochanteric", "lytic"),
        ("subtrochanteric", "lytic"),
        ("calcar", "lytic"),
        ("subtrochanteric", "blastic"),
        ("calcar", "mixed"),
    ],
)
def test_phantom_lesion_type(site: str, kind: str) -> None:
    """Lytic phantom lesions at every named site, a blastic and a mixed one, read as such."""
    ph = _phantom(site, kind)
    labels = ph.labels.labels
    found, evidence = lesion_type(ph.ct, labels == 1, labels == 2)
    assert found == kind, evidence["rule"]
    assert evidence["confident"]
    if kind == "lytic":
        assert evidence["higher_fraction"] == 0.0
        assert evidence["median_contrast_hu"] < -100.0
    if kind == "blastic":  # the cortex it overlaps keeps its HU: higher only in the canal
        assert evidence["lower_fraction"] < COMPONENT_MIN_FRACTION
        assert evidence["higher_fraction"] > 0.3
    if kind == "mixed":  # lytic core 0.6^3 = 22% of the volume, less partial-volume voxels
        assert COMPONENT_MIN_FRACTION <= evidence["lower_fraction"] <= 0.25
        assert evidence["higher_fraction"] > 0.5


def test_phantom_mixed_lesion_with_noise() -> None:
    """30 HU of image noise does not change the reading of the hardest case, a mixed lesion."""
    ph = _phantom("intertrochanteric", "mixed", noise=30.0)
    labels = ph.labels.labels
    found, evidence = lesion_type(ph.ct, labels == 1, labels == 2)
    assert found == "mixed", evidence["rule"]


def test_phantom_aci_of_a_lesion_of_known_axial_extent() -> None:
    """An ellipsoid 32 mm long centred 1 mm under the lateral shaft surface: ACI 32 mm."""
    ph = _phantom("intertrochanteric")  # only for the frame
    x, y = _shaft_in_frame(ph)
    level = -130.0
    lateral = _phantom((x + _shaft_radius(level) - 1.0, y, level), "lytic", (6.0, 6.0, 16.0))
    m = _measure(lateral)
    assert m.aci_mm == pytest.approx(32.0, abs=VOXEL_MM)
    assert m.involvement.first_level_mm == pytest.approx(level - 16.0, abs=VOXEL_MM)
    assert m.involvement.last_level_mm == pytest.approx(level + 16.0, abs=VOXEL_MM)
    assert bool(aci_positive(m.aci_mm)) is True
    assert m.site == "lower_limb"  # top at -114 mm, below the limit at -113.3 mm


def test_phantom_subtrochanteric_aci() -> None:
    """The named subtrochanteric lesion (r 10 mm, centre 4 mm deep) meets the outer 2 mm of
    the shaft over 2 sqrt(10^2 - (4 - 2)^2) = 19.6 mm."""
    m = _measure(_phantom("subtrochanteric"))
    assert m.aci_mm == pytest.approx(2.0 * math.sqrt(96.0), abs=2 * VOXEL_MM)
    assert m.site == "peritrochanteric"
    assert 0.0 < m.circumferential_fraction < 0.5


def test_phantom_size_fraction_of_a_medullary_lesion() -> None:
    """A ball of radius 7 mm on the shaft axis 150 mm below the head: 7 / R of the diameter,
    in the section through its centre, and no cortical involvement (canal radius ~9 mm)."""
    ph = _phantom("intertrochanteric")
    x, y = _shaft_in_frame(ph)
    m = _measure(_phantom((x, y, -150.0), "lytic", 7.0))
    assert m.size_fraction == pytest.approx(7.0 / _shaft_radius(-150.0), abs=0.04)
    assert m.size.level_mm == pytest.approx(-150.0, abs=VOXEL_MM)
    assert m.aci_mm == 0.0
    assert m.site == "lower_limb"
    # tumour replacing marrow is not lower than marrow: lytic, flagged as not confident
    assert m.kind == "lytic" and not m.kind_evidence["confident"]


def test_phantom_site_rule() -> None:
    """Subtrochanteric lesion (25 mm below the lesser trochanter): peritrochanteric, with or
    without the landmark; a mid-shaft one is lower limb."""
    ph = _phantom("subtrochanteric")
    truth, lesion = ph.truth, ph.labels.labels == 2
    kwargs = {"shaft_axis": truth.shaft_axis, "head_centre": truth.head_centre_mm}
    site, ev = mirels_site_from_position(ph.ct.grid, lesion,
                                         lesser_trochanter=truth.lesser_trochanter_mm, **kwargs)
    assert site == "peritrochanteric"
    assert ev["lesser_trochanter_level_mm"] == pytest.approx(-63.3, abs=0.5)
    assert ev["top_level_mm"] >= ev["boundary_level_mm"]
    site, ev = mirels_site_from_position(ph.ct.grid, lesion, **kwargs)
    assert site == "peritrochanteric" and "assumed" in ev["lesser_trochanter_source"]


def test_phantom_measurements_feed_mirels() -> None:
    """measure_lesion gives score_mirels its three measured items, with derivation texts."""
    m = _measure(_phantom("subtrochanteric"))
    score = score_mirels(**m.mirels_inputs(), pain="moderate")
    assert m.kind == "lytic" and m.site == "peritrochanteric"
    assert 1.0 / 3.0 <= m.size_fraction <= 1.0
    assert score.points == (3, 2, 3, 2 if m.size_fraction <= 2.0 / 3.0 else 3)
    assert set(m.derivations) == {"site", "lesion", "size", "aci"}
    assert "axial cortical involvement" in m.derivations["aci"]
    record = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert record["kind"] == "lytic" and record["aci_mm"] == m.aci_mm
    circ = _measure(_phantom("subtrochanteric"), size_basis="circumference")
    assert circ.size_fraction == circ.circumferential_fraction
    with pytest.raises(TypeError):
        m.kind_evidence["kind"] = "blastic"  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_domain_errors() -> None:
    body = _Body(0.5, 13.0, 6.0)
    tube = body.tube(12.0, 8.0)
    ct = body.ct((tube, BONE_HU))
    wedge = tube & (np.abs(body.theta) < 30.0)
    kwargs: dict[str, Any] = {"shaft_axis": [0, 0, 1], "axis_point": [0, 0, 0]}
    with pytest.raises(LesionError, match="lesion mask is empty") as err:
        cortical_involvement(body.grid, tube, np.zeros_like(tube), **kwargs)
    assert err.value.hint
    with pytest.raises(LesionError, match="zero vector"):
        cortical_involvement(body.grid, tube, wedge, shaft_axis=[0, 0, 0], axis_point=[0, 0, 0])
    with pytest.raises(LesionError, match="shape"):
        lesion_size_fraction(body.grid, tube[:-1], wedge[:-1], **kwargs)
    with pytest.raises(LesionError, match="no bone lies"):
        lesion_type(ct, tube, tube)  # the lesion is the whole bone
    with pytest.raises(LesionError, match="cortex_mm"):
        cortical_involvement(body.grid, tube, wedge, cortex_mm=0.0, **kwargs)
    with pytest.raises(LesionError, match="size basis"):
        measure_lesion(ct, tube, wedge, head_centre=[0, 0, 50], size_basis="area",  # type: ignore[arg-type]
                       **kwargs)
