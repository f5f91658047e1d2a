"""A deterministic synthetic CT of a right proximal femur, with an optional metastatic lesion.

The phantom lets osteofe run end to end (and be tested) on data the project makes itself. It
is built in two steps:

1. **Geometry** from smooth implicit primitives (signed-distance fields in mm, negative inside):
   a tapered shaft, a flaring metaphysis, a tapered neck, the head sphere, and ellipsoidal
   greater and lesser trochanters, merged with a polynomial smooth union so the surface has
   fillets instead of seams. The distal end is cut by an axial plane.
2. **Tissue densities** ``rho_QCT`` [g/cm^3 K2HPO4-equivalent]: cortex (thickness growing from
   the head/neck to the mid-shaft, thicker at the calcar), a trabecular field (dense head and
   principal compressive/tensile groups, sparse Ward's triangle and greater trochanter,
   fading into the marrow of the medullary canal below the lesser trochanter), marrow, soft
   tissue and air. Voxels straddling a boundary get the volume-weighted mixture (a partial
   volume model from the signed distance), and HU are obtained through the inverse of the
   calibration line ``rho_QCT = intercept + slope * HU``, then optionally blurred, given
   seeded Gaussian noise and rounded to whole HU as scanners store them.

World frame: ITK/DICOM LPS (``+x`` patient left, ``+y`` posterior, ``+z`` superior). For this
RIGHT femur medial is ``+x``, lateral ``-x``, anterior ``-y``, proximal ``+z``. The anatomical
frame recorded in :class:`PhantomTruth` follows DESIGN.md 3 and ``fea.landmarks``: origin at
the head centre, ``z`` along the shaft axis pointing proximally, ``y`` anterior and
``x = y x z`` (lateral for a right femur).

All numbers below are *illustrative adult values* chosen to give a realistic-looking femur;
they are not fitted to one subject and the phantom has no measured strength.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from core.atomic import atomic_write_text
from core.types import FloatArray, json_plain
from meshing.errors import InputError
from meshing.imaging import write_ct, write_labels
from meshing.types import CTVolume, ImageGrid, LabelMap

__all__ = [
    "LESION_SITES",
    "LesionParams",
    "Phantom",
    "PhantomParams",
    "PhantomTruth",
    "make_phantom",
    "write_phantom",
]

F32 = npt.NDArray[np.float32]
Vec3 = tuple[float, float, float]

#: Named lesion sites accepted by :class:`LesionParams`.
LESION_SITES: tuple[str, ...] = ("neck", "calcar", "intertrochanteric", "subtrochanteric")

#: Largest grid make_phantom will allocate: it peaks at about 70 bytes per voxel (1.7 GB for
#: the 25 M voxels of a 0.5 mm phantom), so this caps it near 3 GB.
MAX_VOXELS = 40_000_000

_BONE_LABEL = 1
_LESION_LABEL = 2
_ACETABULUM_LABEL = 3

# Smooth-union blending widths (mm): fillet sizes between primitives, chosen by eye for
# anatomically plausible junctions (a sharp-ish head-neck junction, broad neck base).
_BLEND_SHAFT_METAPHYSIS = 8.0
_BLEND_NECK = 10.0
_BLEND_GREATER_TROCHANTER = 8.0
_BLEND_LESSER_TROCHANTER = 5.0
_BLEND_HEAD = 3.0


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomParams:
    """Every number that defines the phantom (geometry in mm, densities in g/cm^3).

    Sources of the defaults (phantom design values, not measurements of one subject):

    - Anatomy: typical adult proximal femur as given in standard anatomy texts (not measured
      on a specimen): head diameter ~46 mm, neck-shaft angle ~127 deg, anteversion ~12 deg, femoral
      offset ~42 mm, mid-shaft outer diameter ~28 mm with a ~5.5 mm cortex, a ~1 mm cortex
      over the head and neck, the trochanter tip near the level of the head centre.
    - Trabecular architecture (dense head, principal compressive and tensile groups, sparse
      Ward's triangle): the classical description of the proximal femur (Ward 1838; Singh et
      al. 1970, J Bone Joint Surg Am 52:457), reproduced qualitatively, not quantitatively.
    - HU: air -1000 HU and water 0 HU by definition of the Hounsfield scale; fat about
      -100 HU and muscle about 40 HU (usual clinical CT values); cortical bone ~1300-1600 HU
      and trabecular bone ~100-400 HU as seen on clinical CT of the femur (compare the real
      ``totalseg_example_ct`` femur: median 168 HU, cortex above 700 HU at 3 mm voxels).
    - Calibration: a line of the order of clinical K2HPO4 phantom fits (see
      ``material.calibration.SLOPE_RANGE_G_CM3_PER_HU``); it is no specific scanner's.

    Attributes:
        voxel_size_mm: Isotropic voxel size; 0.5-1.5 mm.
        head_centre_mm: World (LPS) position of the femoral head centre.
        head_radius_mm: Femoral head radius.
        neck_shaft_angle_deg: Angle between the neck axis (towards the head) and the shaft
            axis (distally); 90-170 deg.
        anteversion_deg: Angle of the neck axis, projected on the plane normal to the shaft,
            anterior to the frontal plane; -30..60 deg.
        shaft_tilt_deg: Tilt of the shaft axis in the frontal plane away from world +z, the
            proximal end lateral (the femoral shaft runs distally and medially); 0-15 deg.
        table_rotation_deg: Rotation of the whole leg about the scanner's z axis through the
            head centre (a leg lying turned on the CT table; positive turns the front of the
            leg towards the patient's right, world -x); -45..45 deg. The bone, its cut and
            its density are the same, only the pose in the image changes.
        neck_length_mm: Distance from the head centre to the neck-shaft axes intersection
            along the neck axis (femoral offset = this times sin(180 - neck-shaft angle)).
        neck_radius_mm: Neck radius at its head end (the narrowest part of the neck).
        neck_base_radius_mm: Neck radius where it meets the shaft axis.
        shaft_radius_mm: Outer radius of the shaft at the distal cut (it grows linearly to
            ``subtrochanteric_radius_mm`` 15 mm below the lesser trochanter).
        subtrochanteric_radius_mm: Outer radius of the shaft just below the lesser trochanter.
        metaphysis_radius_mm: Outer radius of the metaphysis at the neck-shaft intersection.
        distal_cut_mm: Depth of the axial distal cut below the head centre (world z).
        greater_trochanter_semi_axes_mm: Ellipsoid semi-axes (medial-lateral, antero-
            posterior, along the shaft).
        greater_trochanter_offset_mm: Centre of the greater trochanter from the neck-shaft
            intersection: (lateral, posterior, proximal) in mm.
        lesser_trochanter_semi_axes_mm: Ellipsoid semi-axes (two across, one along the shaft).
        lesser_trochanter_offset_mm: Centre of the lesser trochanter: distance posteromedial
            from the shaft axis, and depth below the neck-shaft intersection.
        cortex_proximal_mm: Cortical thickness in the head, neck and trochanters.
        cortex_shaft_mm: Cortical thickness in the mid-shaft.
        cortex_transition_mm: Depths below the head centre (along the shaft axis) where the
            cortex starts and ends thickening from proximal to shaft value.
        calcar_extra_mm: Extra cortical thickness along the calcar (inferomedial neck).
        soft_tissue_mm: Thickness of the soft-tissue layer around the bone.
        rho_cortex_proximal: Cortical rho_QCT in the head/neck/trochanters.
        rho_cortex_shaft: Cortical rho_QCT in the mid-shaft.
        rho_trabecular_base: Trabecular rho_QCT of the metaphysis away from the groups below.
        rho_head_extra: Extra trabecular density throughout the head.
        rho_compressive_extra: Extra density along the principal compressive group.
        rho_tensile_extra: Extra density along the principal tensile group.
        rho_ward_deficit: Density missing at the centre of Ward's triangle.
        rho_greater_trochanter_deficit: Density missing in the greater trochanter.
        trabecular_hu_range: Trabecular HU are clipped to this range (before noise/blur).
        trabecular_fade_mm: Depths below the head centre where the trabecular bone starts
            and ends fading into the marrow of the medullary canal.
        marrow_hu: HU of the fatty marrow of the canal (fat ~-100 HU, water 0 HU).
        soft_tissue_hu: HU of the soft tissue (muscle ~40 HU).
        air_hu: HU of air (-1000 HU by definition of the scale).
        noise_sd_hu: Standard deviation of the added Gaussian noise (0 = none).
        blur_sigma_mm: Gaussian partial-volume blur sigma in mm (0 = none).
        seed: Seed of the noise generator.
        calibration_slope: g/cm^3 per HU of ``rho_QCT = intercept + slope * HU``; 0.0008 is
            of the order of K2HPO4 phantom fits on clinical scanners (the plausible window
            in ``material.calibration`` is 0.6e-3..1.2e-3). Not a specific scanner.
        calibration_intercept: g/cm^3 at 0 HU.
        acetabulum_mm: Thickness of a pelvis-like acetabular shell of proximal-cortex
            density around the head (0 = none): a spherical cap over the superomedial head,
            75 deg half-angle about the direction (medial + 2 x proximal), labelled 3
            ("acetabulum"), for testing femur segmentation against a touching bone.
        joint_space_mm: Gap between the head surface and the acetabular shell (the joint
            space, cartilage at soft-tissue HU); 0.5-10 mm.
    """

    voxel_size_mm: float = 0.8
    head_centre_mm: Vec3 = (-90.0, 20.0, 40.0)
    head_radius_mm: float = 23.0
    neck_shaft_angle_deg: float = 127.0
    anteversion_deg: float = 12.0
    shaft_tilt_deg: float = 5.0
    table_rotation_deg: float = 0.0
    neck_length_mm: float = 52.0
    neck_radius_mm: float = 15.0
    neck_base_radius_mm: float = 19.0
    shaft_radius_mm: float = 14.0
    subtrochanteric_radius_mm: float = 15.5
    metaphysis_radius_mm: float = 19.0
    distal_cut_mm: float = 200.0
    greater_trochanter_semi_axes_mm: Vec3 = (13.0, 18.0, 20.0)
    greater_trochanter_offset_mm: Vec3 = (10.0, 4.0, 12.0)
    lesser_trochanter_semi_axes_mm: Vec3 = (7.0, 7.0, 11.0)
    lesser_trochanter_offset_mm: tuple[float, float] = (17.0, 32.0)
    cortex_proximal_mm: float = 1.0
    cortex_shaft_mm: float = 5.5
    cortex_transition_mm: tuple[float, float] = (40.0, 110.0)
    calcar_extra_mm: float = 2.0
    soft_tissue_mm: float = 18.0
    rho_cortex_proximal: float = 1.05
    rho_cortex_shaft: float = 1.25
    rho_trabecular_base: float = 0.13
    rho_head_extra: float = 0.09
    rho_compressive_extra: float = 0.08
    rho_tensile_extra: float = 0.04
    rho_ward_deficit: float = 0.07
    rho_greater_trochanter_deficit: float = 0.03
    trabecular_hu_range: tuple[float, float] = (110.0, 390.0)
    trabecular_fade_mm: tuple[float, float] = (60.0, 105.0)
    marrow_hu: float = -50.0
    soft_tissue_hu: float = 40.0
    air_hu: float = -1000.0
    noise_sd_hu: float = 0.0
    blur_sigma_mm: float = 0.0
    seed: int = 0
    calibration_slope: float = 0.0008
    calibration_intercept: float = -0.01
    acetabulum_mm: float = 0.0
    joint_space_mm: float = 2.0

    def __post_init__(self) -> None:
        _validate_params(self)

    def hu_of(self, rho: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """HU of a rho_QCT (inverse calibration line ``(rho - intercept) / slope``)."""
        return np.asarray(
            (np.asarray(rho, dtype=np.float64) - self.calibration_intercept)
            / self.calibration_slope
        )

    def rho_of(self, hu: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """rho_QCT of a HU value (calibration line ``intercept + slope * HU``)."""
        return np.asarray(
            self.calibration_intercept + self.calibration_slope * np.asarray(hu, np.float64)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of all parameters (tuples become lists)."""
        return json_plain(asdict(self))


def _bad(name: str, value: object, need: str) -> InputError:
    """The InputError raised for an invalid phantom/lesion parameter."""
    return InputError(
        f"phantom parameter {name}={value!r} is invalid: it must be {need}",
        hint=f"pass a valid {name} (see PhantomParams/LesionParams docs) or keep the default",
    )


def _validate_params(p: PhantomParams) -> None:
    """Raise :class:`InputError` naming the first invalid parameter of ``p``."""
    for name, value in asdict(p).items():
        flat = value if isinstance(value, tuple | list) else (value,)
        if name != "seed" and not all(
            isinstance(x, int | float) and math.isfinite(float(x)) for x in flat
        ):
            raise _bad(name, value, "finite number(s)")
    if not 0.0 <= p.acetabulum_mm <= 15.0:
        raise _bad("acetabulum_mm", p.acetabulum_mm, "between 0 and 15 mm")
    if not 0.5 <= p.joint_space_mm <= 10.0:
        raise _bad("joint_space_mm", p.joint_space_mm, "between 0.5 and 10 mm")
    if not 0.5 <= p.voxel_size_mm <= 1.5:
        raise _bad("voxel_size_mm", p.voxel_size_mm, "between 0.5 and 1.5 mm")
    if len(p.head_centre_mm) != 3:
        raise _bad("head_centre_mm", p.head_centre_mm, "three world coordinates in mm")
    positive = (
        "head_radius_mm", "neck_length_mm", "neck_radius_mm", "neck_base_radius_mm",
        "shaft_radius_mm", "subtrochanteric_radius_mm", "metaphysis_radius_mm",
        "distal_cut_mm", "cortex_proximal_mm", "cortex_shaft_mm", "calibration_slope",
    )
    for name in positive:
        if not getattr(p, name) > 0:
            raise _bad(name, getattr(p, name), "> 0")
    for name in ("greater_trochanter_semi_axes_mm", "lesser_trochanter_semi_axes_mm"):
        axes = getattr(p, name)
        if len(axes) != 3 or min(axes) <= 0:
            raise _bad(name, axes, "three positive semi-axes in mm")
    non_negative = (
        "calcar_extra_mm", "soft_tissue_mm", "noise_sd_hu", "blur_sigma_mm",
        "rho_head_extra", "rho_compressive_extra", "rho_tensile_extra", "rho_ward_deficit",
        "rho_greater_trochanter_deficit",
    )
    for name in non_negative:
        if getattr(p, name) < 0:
            raise _bad(name, getattr(p, name), ">= 0")
    if not 90.0 <= p.neck_shaft_angle_deg <= 170.0:
        raise _bad("neck_shaft_angle_deg", p.neck_shaft_angle_deg, "between 90 and 170 deg")
    if not -45.0 <= p.table_rotation_deg <= 45.0:
        raise _bad("table_rotation_deg", p.table_rotation_deg, "between -45 and 45 deg")
    if not -30.0 <= p.anteversion_deg <= 60.0:
        raise _bad("anteversion_deg", p.anteversion_deg, "between -30 and 60 deg")
    if not 0.0 <= p.shaft_tilt_deg <= 15.0:
        raise _bad("shaft_tilt_deg", p.shaft_tilt_deg, "between 0 and 15 deg")
    if p.neck_radius_mm >= p.head_radius_mm:
        raise _bad("neck_radius_mm", p.neck_radius_mm,
                   f"smaller than head_radius_mm={p.head_radius_mm}")
    if p.neck_length_mm <= p.head_radius_mm:
        raise _bad("neck_length_mm", p.neck_length_mm,
                   f"longer than head_radius_mm={p.head_radius_mm}")
    if p.distal_cut_mm <= p.neck_length_mm + 40.0:
        raise _bad("distal_cut_mm", p.distal_cut_mm,
                   "at least 40 mm more than neck_length_mm (below the lesser trochanter)")
    if p.cortex_shaft_mm >= 0.8 * p.shaft_radius_mm:
        raise _bad("cortex_shaft_mm", p.cortex_shaft_mm,
                   f"< 0.8 x shaft_radius_mm={p.shaft_radius_mm} (leave a canal)")
    if p.cortex_proximal_mm + p.calcar_extra_mm >= 0.5 * p.neck_radius_mm:
        raise _bad("cortex_proximal_mm", p.cortex_proximal_mm,
                   "with calcar_extra_mm less than half the neck radius")
    for name in ("cortex_transition_mm", "trabecular_fade_mm", "trabecular_hu_range"):
        low, high = getattr(p, name)
        if not low < high:
            raise _bad(name, getattr(p, name), "an increasing pair (low, high)")
    if len(p.lesser_trochanter_offset_mm) != 2 or len(p.greater_trochanter_offset_mm) != 3:
        raise _bad("trochanter offsets", (p.greater_trochanter_offset_mm,
                                          p.lesser_trochanter_offset_mm), "3 and 2 numbers")
    if not p.rho_cortex_proximal > float(p.rho_of(p.trabecular_hu_range[1])):
        raise _bad("rho_cortex_proximal", p.rho_cortex_proximal,
                   "denser than the densest trabecular bone")
    if not isinstance(p.seed, int | np.integer) or p.seed < 0:
        raise _bad("seed", p.seed, "a non-negative integer")


@dataclass(frozen=True)
class LesionParams:
    """A metastatic lesion (ellipsoid) inserted in the phantom.

    Attributes:
        site: ``"neck"`` (on the neck axis, mid-neck), ``"calcar"`` (inferomedial neck base,
            centred 4 mm inside the inferior neck cortex, so that it breaches it),
            ``"intertrochanteric"`` (on the shaft
            axis 12 mm below the neck-shaft intersection, between the trochanters),
            ``"subtrochanteric"`` (25 mm below the lesser trochanter, centred 4 mm inside
            the medial cortex, so that it breaches it), or an explicit centre (x, y, z) in mm
            in the anatomical frame (origin head centre, y anterior, z proximal along the
            shaft, x = y x z: lateral for this right femur).
        radius_mm: Sphere radius, or ellipsoid semi-axes along the frame's (x, y, z).
        kind: ``"lytic"`` (bone replaced by soft tissue at ``lytic_hu``, cortex included),
            ``"blastic"`` (sclerotic: at least ``blastic_hu``), or ``"mixed"`` (lytic core of
            ``core_fraction`` of the semi-axes inside a blastic rim).
        lytic_hu: HU of the tumour tissue replacing bone (soft tissue ~30 HU).
        blastic_hu: HU of sclerotic bone (~1000-1500 HU).
        core_fraction: Size of the lytic core of a mixed lesion relative to the lesion.
    """

    site: str | Vec3 = "intertrochanteric"
    radius_mm: float | Vec3 = 10.0
    kind: Literal["lytic", "blastic", "mixed"] = "lytic"
    lytic_hu: float = 30.0
    blastic_hu: float = 1200.0
    core_fraction: float = 0.6

    def __post_init__(self) -> None:
        if isinstance(self.site, str):
            if self.site not in LESION_SITES:
                raise _bad("site", self.site, f"one of {', '.join(LESION_SITES)} or (x, y, z)")
        elif len(self.site) != 3 or not all(math.isfinite(float(c)) for c in self.site):
            raise _bad("site", self.site, "a named site or three finite coordinates in mm")
        axes = self.semi_axes_mm
        if not all(math.isfinite(a) and a > 0 for a in axes):
            raise _bad("radius_mm", self.radius_mm, "a positive radius or three semi-axes")
        if self.kind not in ("lytic", "blastic", "mixed"):
            raise _bad("kind", self.kind, "'lytic', 'blastic' or 'mixed'")
        if not 0.0 < self.core_fraction < 1.0:
            raise _bad("core_fraction", self.core_fraction, "between 0 and 1 (exclusive)")
        if not (math.isfinite(self.lytic_hu) and math.isfinite(self.blastic_hu)):
            raise _bad("lytic_hu/blastic_hu", (self.lytic_hu, self.blastic_hu), "finite")

    @property
    def semi_axes_mm(self) -> Vec3:
        """Ellipsoid semi-axes (x, y, z) in mm."""
        r = self.radius_mm
        if isinstance(r, int | float):
            return (float(r), float(r), float(r))
        if len(r) != 3:
            raise _bad("radius_mm", r, "a radius or three semi-axes")
        return (float(r[0]), float(r[1]), float(r[2]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of the lesion parameters."""
        return json_plain(asdict(self))


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------


def _vec(value: npt.ArrayLike, shape: tuple[int, ...]) -> FloatArray:
    arr = np.array(value, dtype=np.float64).reshape(shape)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True)
class PhantomTruth:
    """What the phantom is, exactly: landmarks, axes, angles and calibration (world LPS, mm).

    Attributes:
        head_centre_mm: (3,) float64 head centre.
        head_radius_mm: Head radius.
        neck_axis: (3,) float64 unit vector along the neck, pointing to the head.
        shaft_axis: (3,) float64 unit vector along the shaft, pointing proximally.
        neck_shaft_intersection_mm: (3,) float64 point where the neck axis meets the shaft axis.
        neck_shaft_angle_deg: Angle between ``neck_axis`` and ``-shaft_axis``.
        anteversion_deg: Angle of ``neck_axis`` (projected normal to the shaft) anterior to
            the frontal plane.
        shaft_tilt_deg: Angle between ``shaft_axis`` and world +z (frontal plane).
        frame_axes: (3, 3) float64, rows are the anatomical x, y, z axes in world coordinates
            (z = shaft_axis, y anterior, x = y x z, lateral for a right femur); origin at
            the head centre.
        greater_trochanter_lateral_mm: (3,) float64 most lateral point of the greater
            trochanter (support point of a sideways fall).
        lesser_trochanter_mm: (3,) float64 apex of the lesser trochanter.
        side: Always ``"right"``.
        calibration_slope: g/cm^3 per HU of ``rho_QCT = intercept + slope * HU``.
        calibration_intercept: g/cm^3.
        distal_cut_z_mm: World z of the lowest image slice holding bone.
        nominal_hu: Noise-free HU of each tissue (cortex proximal/shaft, trabecular range,
            marrow, soft tissue, air, lesion).
        lesion: Description of the lesion (kind, site, centre_mm, semi_axes_mm, axes,
            voxels, volume_mm3), or None.
    """

    head_centre_mm: FloatArray
    head_radius_mm: float
    neck_axis: FloatArray
    shaft_axis: FloatArray
    neck_shaft_intersection_mm: FloatArray
    neck_shaft_angle_deg: float
    anteversion_deg: float
    shaft_tilt_deg: float
    frame_axes: FloatArray
    greater_trochanter_lateral_mm: FloatArray
    lesser_trochanter_mm: FloatArray
    side: Literal["right"]
    calibration_slope: float
    calibration_intercept: float
    distal_cut_z_mm: float
    nominal_hu: dict[str, float] = field(default_factory=dict)
    lesion: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("head_centre_mm", "neck_axis", "shaft_axis", "neck_shaft_intersection_mm",
                     "greater_trochanter_lateral_mm", "lesser_trochanter_mm"):
            object.__setattr__(self, name, _vec(getattr(self, name), (3,)))
        object.__setattr__(self, "frame_axes", _vec(self.frame_axes, (3, 3)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (arrays become lists), with the world convention named."""
        out = json_plain(asdict(self))
        out["world"] = "ITK/DICOM LPS patient coordinates, mm"
        out["calibration"] = "rho_QCT [g/cm^3 K2HPO4-eq] = intercept + slope * HU"
        return out


@dataclass(frozen=True)
class Phantom:
    """A synthetic CT with its labels (1 bone, 2 lesion) and its ground truth.

    Attributes:
        ct: The CT in HU (float32 holding whole numbers).
        labels: Label map on the CT grid: 0 background, 1 bone, 2 lesion (inside the bone).
        truth: Geometry, angles and calibration the phantom was built with.
        params: The generator parameters (None when unknown).
        lesion_params: The lesion parameters, or None.
    """

    ct: CTVolume
    labels: LabelMap
    truth: PhantomTruth
    params: PhantomParams | None = None
    lesion_params: LesionParams | None = None


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """Key points in the local frame (u medial, v anterior, w proximal; origin head centre).

    ``(M, A, P)`` are the world directions of u, v, w (orthonormal, left-handed for a right
    femur in LPS); world = head centre + u M + v A + w P.
    """

    centre: FloatArray
    basis: FloatArray  # (3, 3) rows M, A, P
    neck_dir: FloatArray  # local unit vector to the head
    shaft_point: FloatArray  # local neck-shaft intersection S
    shaft_bottom_w: float
    shaft_bottom_radius: float
    subtroch_w: float
    gt_centre: FloatArray
    lt_centre: FloatArray

    @classmethod
    def from_params(cls, p: PhantomParams) -> _Geometry:
        """Place the axes, the neck-shaft intersection and the trochanters from ``p``."""
        tilt = math.radians(p.shaft_tilt_deg)
        turn = math.radians(p.table_rotation_deg)
        # Rotation about world z (LPS: +x patient's left): +turn takes the anterior
        # direction (-y) towards -x, the patient's right.
        table = np.array([[math.cos(turn), math.sin(turn), 0.0],
                          [-math.sin(turn), math.cos(turn), 0.0], [0.0, 0.0, 1.0]])
        medial = table @ np.array([math.cos(tilt), 0.0, math.sin(tilt)])
        anterior = table @ np.array([0.0, -1.0, 0.0])
        proximal = table @ np.array([-math.sin(tilt), 0.0, math.cos(tilt)])
        alpha = math.radians(180.0 - p.neck_shaft_angle_deg)
        ante = math.radians(p.anteversion_deg)
        neck = np.array([math.sin(alpha) * math.cos(ante), math.sin(alpha) * math.sin(ante),
                         math.cos(alpha)])
        s = -p.neck_length_mm * neck
        lt_w = s[2] - p.lesser_trochanter_offset_mm[1]
        posteromedial = np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0)
        lat, post, prox = p.greater_trochanter_offset_mm
        # The shaft primitive must run well below the (tilted) axial cut and the image bottom.
        bottom = -(p.distal_cut_mm + 2.0 * p.voxel_size_mm) / math.cos(tilt) - (
            abs(s[0]) + p.shaft_radius_mm + p.soft_tissue_mm) * math.tan(tilt) - (
            p.shaft_radius_mm + p.soft_tissue_mm + 5.0)
        # shaft radius linear in w: shaft_radius_mm at the cut, subtrochanteric below the LT
        subtroch_w = lt_w - 15.0
        slope = (p.subtrochanteric_radius_mm - p.shaft_radius_mm) / (subtroch_w
                                                                     + p.distal_cut_mm)
        return cls(
            centre=np.asarray(p.head_centre_mm, dtype=np.float64),
            basis=np.stack([medial, anterior, proximal]),
            neck_dir=neck,
            shaft_point=s,
            shaft_bottom_w=bottom,
            shaft_bottom_radius=p.shaft_radius_mm - slope * (-p.distal_cut_mm - bottom),
            subtroch_w=subtroch_w,
            gt_centre=s + np.array([-lat, -post, prox]),
            lt_centre=np.array([s[0], s[1], lt_w]) + p.lesser_trochanter_offset_mm[0]
            * posteromedial,
        )

    def to_world(self, local: npt.ArrayLike) -> FloatArray:
        """Local (u, v, w) -> world (x, y, z), for (3,) or (n, 3)."""
        return np.asarray(np.asarray(local, dtype=np.float64) @ self.basis + self.centre)

    def world_dir(self, local: npt.ArrayLike) -> FloatArray:
        """Local direction -> world direction."""
        return np.asarray(np.asarray(local, dtype=np.float64) @ self.basis)


def _smin(a: F32, b: F32, k: float) -> F32:
    """Polynomial smooth minimum (smooth union of two signed distances), blend width ``k`` mm.

    Equal to ``min(a, b)`` where ``|a - b| >= k``; a fillet of size ~k/4 elsewhere.
    """
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return np.asarray(b + (a - b) * h - k * h * (1.0 - h), dtype=np.float32)


def _round_cone(t: F32, q: F32, r1: float, r2: float, length: float) -> F32:
    """Exact signed distance of a round cone (convex hull of two spheres).

    Args:
        t: Axial coordinate from the first sphere's centre (mm, any shape).
        q: Distance from the axis (mm, >= 0, broadcastable with ``t``).
        r1: Radius at ``t = 0``.
        r2: Radius at ``t = length``.
        length: Distance between the two sphere centres (> |r1 - r2|).

    Returns:
        Signed distance in mm (negative inside), float32.
    """
    b = (r1 - r2) / length
    a = math.sqrt(1.0 - b * b)
    k = q * (-b) + t * a
    side = q * a + t * b - r1
    bottom = np.sqrt(q * q + t * t) - r1
    top = np.sqrt(q * q + (t - length) ** 2) - r2
    return np.asarray(np.where(k < 0.0, bottom, np.where(k > a * length, top, side)),
                      dtype=np.float32)


def _ellipsoid(du: F32, dv: F32, dw: F32, axes: npt.ArrayLike) -> F32:
    """Approximate signed distance of an axis-aligned ellipsoid (exact on its surface).

    Uses ``k0 (k0 - 1) / k1`` with ``k0 = |p / r|`` and ``k1 = |p / r^2|``, a first-order
    distance estimate that is exact for spheres and accurate near the surface.
    """
    ra, rb, rc = (float(x) for x in np.asarray(axes, dtype=np.float64))
    k0 = np.sqrt((du / ra) ** 2 + (dv / rb) ** 2 + (dw / rc) ** 2)
    k1 = np.sqrt((du / ra**2) ** 2 + (dv / rb**2) ** 2 + (dw / rc**2) ** 2)
    return np.asarray(k0 * (k0 - 1.0) / np.maximum(k1, 1e-6), dtype=np.float32)


def _axis_coords(u: F32, v: F32, w: F32, origin: FloatArray, direction: FloatArray
                 ) -> tuple[F32, F32]:
    """Axial coordinate and distance to the line ``origin + s * direction`` (local frame)."""
    du, dv, dw = u - origin[0], v - origin[1], w - origin[2]
    t = du * direction[0] + dv * direction[1] + dw * direction[2]
    q = np.sqrt(np.maximum(du * du + dv * dv + dw * dw - t * t, 0.0))
    return np.asarray(t, dtype=np.float32), np.asarray(q, dtype=np.float32)


def _bone_sdf(u: F32, v: F32, w: F32, g: _Geometry, p: PhantomParams) -> dict[str, F32]:
    """Signed distance (mm) of the uncut femur and of the primitives other fields need.

    Args:
        u: Local medial coordinate in mm (broadcastable with ``v`` and ``w``).
        v: Local anterior coordinate in mm.
        w: Local proximal coordinate in mm.
        g: Geometry.
        p: Parameters.

    Returns:
        ``"bone"`` (smooth union), ``"head"`` and ``"gt"`` signed distances, float32.
    """
    s = g.shaft_point
    axial = np.array([0.0, 0.0, 1.0])
    # shaft (mid-shaft radius at the bottom -> subtrochanteric radius), then metaphysis.
    bottom = np.array([s[0], s[1], g.shaft_bottom_w])
    t, q = _axis_coords(u, v, w, bottom, axial)
    shaft = _round_cone(t, q, g.shaft_bottom_radius, p.subtrochanteric_radius_mm,
                        g.subtroch_w - g.shaft_bottom_w)
    meta = _round_cone(t - np.float32(g.subtroch_w - g.shaft_bottom_w), q,
                       p.subtrochanteric_radius_mm, p.metaphysis_radius_mm, s[2] - g.subtroch_w)
    bone = _smin(shaft, meta, _BLEND_SHAFT_METAPHYSIS)
    tn, qn = _axis_coords(u, v, w, np.zeros(3), -g.neck_dir)
    neck = _round_cone(tn, qn, p.neck_radius_mm, p.neck_base_radius_mm, p.neck_length_mm)
    bone = _smin(bone, neck, _BLEND_NECK)
    gt = _ellipsoid(u - g.gt_centre[0], v - g.gt_centre[1], w - g.gt_centre[2],
                    p.greater_trochanter_semi_axes_mm)
    bone = _smin(bone, gt, _BLEND_GREATER_TROCHANTER)
    lt_axes = np.asarray(p.lesser_trochanter_semi_axes_mm)
    lt = _ellipsoid(u - g.lt_centre[0], v - g.lt_centre[1], w - g.lt_centre[2], lt_axes)
    bone = _smin(bone, lt, _BLEND_LESSER_TROCHANTER)
    head = np.asarray(np.sqrt(u * u + v * v + w * w) - p.head_radius_mm, dtype=np.float32)
    bone = _smin(bone, head, _BLEND_HEAD)
    return {"bone": bone, "head": head, "gt": gt}


def _smoothstep(edge0: float, edge1: float, x: npt.ArrayLike) -> F32:
    """Cubic Hermite step: 0 for x <= edge0, 1 for x >= edge1, C1 in between."""
    t = np.clip((np.asarray(x, dtype=np.float32) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return np.asarray(t * t * (3.0 - 2.0 * t), dtype=np.float32)


def _segment_distance(u: F32, v: F32, w: F32, a: npt.ArrayLike, b: npt.ArrayLike) -> F32:
    """Distance (mm) from local points to the segment [a, b]."""
    a_arr, b_arr = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ab = b_arr - a_arr
    du, dv, dw = u - a_arr[0], v - a_arr[1], w - a_arr[2]
    s = np.clip((du * ab[0] + dv * ab[1] + dw * ab[2]) / float(ab @ ab), 0.0, 1.0)
    return np.asarray(
        np.sqrt((du - s * ab[0]) ** 2 + (dv - s * ab[1]) ** 2 + (dw - s * ab[2]) ** 2),
        dtype=np.float32,
    )


def _gauss(d: F32, sigma: float) -> F32:
    """exp(-d^2 / (2 sigma^2))."""
    return np.asarray(np.exp(-0.5 * (d / sigma) ** 2), dtype=np.float32)


def _neck_radius_at(p: PhantomParams, t: float) -> float:
    """Neck radius at distance ``t`` mm from the head centre along the neck axis."""
    return p.neck_radius_mm + (p.neck_base_radius_mm - p.neck_radius_mm) * t / p.neck_length_mm


def _neck_point(g: _Geometry, t: float) -> FloatArray:
    """Local point on the neck axis ``t`` mm from the head centre towards the shaft."""
    return np.asarray(-t * g.neck_dir)


def _neck_perpendiculars(g: _Geometry) -> tuple[FloatArray, FloatArray]:
    """Local unit vectors normal to the neck axis: superior (in the neck-shaft plane), anterior."""
    up = np.array([0.0, 0.0, 1.0])
    superior = up - (up @ g.neck_dir) * g.neck_dir
    superior /= np.linalg.norm(superior)
    return superior, np.cross(g.neck_dir, superior)


def _cortex_thickness(u: F32, v: F32, w: F32, g: _Geometry, p: PhantomParams) -> F32:
    """Cortical thickness (mm) at local points: proximal -> shaft, plus the calcar."""
    grow = _smoothstep(p.cortex_transition_mm[0], p.cortex_transition_mm[1], -w)
    thickness = p.cortex_proximal_mm + (p.cortex_shaft_mm - p.cortex_proximal_mm) * grow
    if p.calcar_extra_mm > 0:
        superior, _ = _neck_perpendiculars(g)
        t_neck = 0.45 * p.neck_length_mm
        start = _neck_point(g, t_neck) - _neck_radius_at(p, t_neck) * superior
        s = g.shaft_point
        end = np.array([s[0] + p.subtrochanteric_radius_mm, s[1], g.lt_centre[2]])
        calcar = _gauss(_segment_distance(u, v, w, start, end), 6.0)
        thickness = thickness + p.calcar_extra_mm * calcar
    return np.asarray(thickness, dtype=np.float32)


def _trabecular_rho(u: F32, v: F32, w: F32, head_sdf: F32, gt_sdf: F32, g: _Geometry,
                    p: PhantomParams) -> F32:
    """Trabecular rho_QCT (g/cm^3) at local points inside the bone, before marrow fading.

    Dense head, principal compressive group (superior head dome -> medial calcar) and
    principal tensile group (lateral cortex below the greater trochanter -> over the superior
    neck -> inferior head), sparse Ward's triangle (neck base) and greater trochanter; the
    sum is clipped to ``trabecular_hu_range``.
    """
    r = p.head_radius_mm
    s = g.shaft_point
    superior, _ = _neck_perpendiculars(g)
    dome = 0.8 * r * np.array([0.35, 0.0, 1.0]) / math.hypot(0.35, 1.0)
    calcar = np.array([s[0] + 0.8 * p.subtrochanteric_radius_mm, s[1], s[2] - 18.0])
    compressive = _gauss(_segment_distance(u, v, w, dome, calcar), 6.0)
    lateral = np.array([s[0] - 0.85 * p.subtrochanteric_radius_mm, s[1], s[2] - 8.0])
    t_mid = 0.6 * p.neck_length_mm
    neck_top = _neck_point(g, t_mid) + 0.55 * _neck_radius_at(p, t_mid) * superior
    inferior_head = 0.7 * r * np.array([0.25, 0.0, -1.0]) / math.hypot(0.25, 1.0)
    tensile = np.maximum(
        _gauss(_segment_distance(u, v, w, lateral, neck_top), 4.0),
        _gauss(_segment_distance(u, v, w, neck_top, inferior_head), 4.0),
    )
    ward_centre = _neck_point(g, 0.72 * p.neck_length_mm) - 2.0 * superior
    ward_distance = np.sqrt((u - ward_centre[0]) ** 2 + (v - ward_centre[1]) ** 2
                            + (w - ward_centre[2]) ** 2)
    ward = _gauss(np.asarray(ward_distance, dtype=np.float32), 7.0)
    rho = (
        p.rho_trabecular_base
        + p.rho_head_extra * _smoothstep(0.0, 8.0, -head_sdf)
        + p.rho_compressive_extra * compressive
        + p.rho_tensile_extra * tensile
        - p.rho_ward_deficit * ward
        - p.rho_greater_trochanter_deficit * _smoothstep(0.0, 6.0, -gt_sdf)
    )
    low, high = (float(x) for x in p.rho_of(p.trabecular_hu_range))
    return np.asarray(np.clip(rho, low, high), dtype=np.float32)


def _lesion_geometry(lesion: LesionParams, g: _Geometry, p: PhantomParams
                     ) -> tuple[FloatArray, str]:
    """Local centre of the lesion and the name of its site."""
    s = g.shaft_point
    if isinstance(lesion.site, str):
        if lesion.site == "neck":
            return _neck_point(g, 0.55 * p.neck_length_mm), "neck"
        if lesion.site == "calcar":
            # Inferomedial neck base: centred 4 mm inside the inferior neck cortex, so that a
            # lesion there breaches the calcar, the compressive side in stance.
            t = 0.75 * p.neck_length_mm
            superior, _ = _neck_perpendiculars(g)
            return _neck_point(g, t) - (_neck_radius_at(p, t) - 4.0) * superior, "calcar"
        if lesion.site == "intertrochanteric":
            return np.array([s[0], s[1], s[2] - 12.0]), "intertrochanteric"
        w = g.lt_centre[2] - 25.0
        frac = (w - g.shaft_bottom_w) / (g.subtroch_w - g.shaft_bottom_w)
        radius = g.shaft_bottom_radius + (p.subtrochanteric_radius_mm
                                          - g.shaft_bottom_radius) * frac
        return np.array([s[0] + radius - 4.0, s[1], w]), "subtrochanteric"
    x, y, z = (float(c) for c in lesion.site)
    return np.array([-x, y, z]), "explicit"  # frame x is lateral = -u


# ---------------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------------


def _local_coords(grid_lower: FloatArray, shape: tuple[int, int, int], h: float, g: _Geometry
                  ) -> tuple[F32, F32, F32, F32]:
    """Broadcastable local (u, v, w) and world z of the voxel centres of an axial grid."""
    axes = [np.asarray(grid_lower[d] + h * np.arange(shape[d]) - g.centre[d], np.float32)
            for d in range(3)]
    views = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]
    local: list[F32] = []
    for row in g.basis:
        total: Any = np.float32(0.0)
        for d in range(3):
            if row[d] != 0.0:
                total = total + np.float32(row[d]) * views[d]
        local.append(np.asarray(total, dtype=np.float32))
    z = np.asarray(views[2] + np.float32(g.centre[2]), dtype=np.float32)
    return local[0], local[1], local[2], z


def _grid_bounds(g: _Geometry, p: PhantomParams) -> tuple[FloatArray, tuple[int, int, int]]:
    """Lower corner (world, mm) and shape of the tight axial grid around the soft tissue.

    The soft-tissue envelope is found on a coarse 2 mm grid over a generous box, padded by
    the coarse cell's half diagonal. The image stops two voxels below the distal cut, which
    falls on a face between slices (the lowest bone slice is centred half a voxel above it).
    """
    h = p.voxel_size_mm
    reach = max(p.head_radius_mm, p.metaphysis_radius_mm, p.neck_base_radius_mm,
                *p.greater_trochanter_semi_axes_mm, *p.lesser_trochanter_semi_axes_mm)
    keys = np.array([np.zeros(3), g.shaft_point, g.gt_centre, g.lt_centre,
                     [g.shaft_point[0], g.shaft_point[1], g.shaft_bottom_w]])
    world = g.to_world(keys)
    pad = reach + p.soft_tissue_mm + 10.0
    lower, upper = world.min(axis=0) - pad, world.max(axis=0) + pad
    # the cut plane falls between two slices, so the lowest bone slice is whole bone
    z_cut = g.centre[2] - p.distal_cut_mm
    lower[2] = z_cut + 0.5 * h - 2.0 * h
    step = 2.0
    coarse_shape = tuple(int(n) for n in np.ceil((upper - lower) / step) + 1)
    u, v, w, _ = _local_coords(lower, (coarse_shape[0], coarse_shape[1], coarse_shape[2]),
                               step, g)
    sdf = _bone_sdf(u, v, w, g, p)["bone"]
    inside = np.nonzero(sdf < p.soft_tissue_mm + step * math.sqrt(3.0) / 2.0 + h)
    idx = np.array([[ax.min(), ax.max()] for ax in inside], dtype=np.float64)
    lo = lower + idx[:, 0] * step - step
    hi = lower + idx[:, 1] * step + step
    lo[2] = lower[2]
    shape = tuple(int(n) for n in np.floor((hi - lo) / h).astype(int) + 1)
    return lo, (shape[0], shape[1], shape[2])


# ---------------------------------------------------------------------------------------------
# the phantom
# ---------------------------------------------------------------------------------------------


def make_phantom(params: PhantomParams = PhantomParams(), lesion: LesionParams | None = None
                 ) -> Phantom:
    """Generate the synthetic right proximal femur CT.

    Deterministic: the same parameters give bit-identical arrays (the noise is drawn from
    ``numpy.random.default_rng(params.seed)``).

    Args:
        params: Phantom parameters (a frozen record, so the shared default is safe).
        lesion: Optional metastatic lesion.

    Returns:
        The phantom: CT (whole HU in float32), labels (1 bone, 2 lesion) on the same axial
        grid (identity direction, isotropic ``voxel_size_mm``), and the ground truth.

    Raises:
        InputError: Invalid parameters, a grid over :data:`MAX_VOXELS`, or a lesion that
            does not touch the bone.
    """
    p = params
    h = p.voxel_size_mm
    g = _Geometry.from_params(p)
    lower, shape = _grid_bounds(g, p)
    n_voxels = int(np.prod(shape))
    if n_voxels > MAX_VOXELS:
        raise InputError(
            f"phantom grid {shape} would hold {n_voxels} voxels, over the {MAX_VOXELS} limit",
            hint="increase voxel_size_mm or reduce soft_tissue_mm/distal_cut_mm",
        )
    grid = ImageGrid(shape=shape, spacing=np.full(3, h), origin=lower)
    u, v, w, z = _local_coords(lower, shape, h, g)

    fields = _bone_sdf(u, v, w, g, p)
    sdf = fields["bone"]
    z_cut = np.float32(g.centre[2] - p.distal_cut_mm)
    sdf_cut = np.maximum(sdf, z_cut - z)

    # soft tissue and air everywhere, as rho_QCT
    rho_soft, rho_air = (float(x) for x in p.rho_of([p.soft_tissue_hu, p.air_hu]))
    soft_frac = np.clip(0.5 - (sdf - np.float32(p.soft_tissue_mm)) / np.float32(h), 0.0, 1.0)
    rho = np.float32(rho_air) + np.float32(rho_soft - rho_air) * soft_frac
    del soft_frac

    # bone: only voxels that hold some bone (partial-volume fraction > 0)
    near = np.nonzero(sdf_cut < 0.5 * h)
    un = np.broadcast_to(u, shape)[near]
    vn = np.broadcast_to(v, shape)[near]
    wn = np.broadcast_to(w, shape)[near]
    depth = -sdf[near]
    bone_frac = np.clip(0.5 - sdf_cut[near] / np.float32(h), 0.0, 1.0)
    thickness = _cortex_thickness(un, vn, wn, g, p)
    cortex_frac = np.clip(0.5 + (thickness - depth) / np.float32(h), 0.0, 1.0)
    rho_cortex = p.rho_cortex_proximal + (p.rho_cortex_shaft - p.rho_cortex_proximal) * (
        _smoothstep(p.cortex_transition_mm[0], p.cortex_transition_mm[1], -wn))
    rho_trab = _trabecular_rho(un, vn, wn, fields["head"][near], fields["gt"][near], g, p)
    keep = 1.0 - _smoothstep(p.trabecular_fade_mm[0], p.trabecular_fade_mm[1], -wn)
    rho_marrow = float(p.rho_of(p.marrow_hu))
    rho_inner = keep * rho_trab + (1.0 - keep) * np.float32(rho_marrow)
    rho_bone = cortex_frac * rho_cortex + (1.0 - cortex_frac) * rho_inner

    labels = np.zeros(shape, dtype=np.int32)
    labels[sdf_cut <= 0.0] = _BONE_LABEL
    lesion_info: dict[str, Any] | None = None
    if lesion is not None:
        centre, site = _lesion_geometry(lesion, g, p)
        axes = np.asarray(lesion.semi_axes_mm)
        les_sdf = _ellipsoid(un - np.float32(centre[0]), vn - np.float32(centre[1]),
                             wn - np.float32(centre[2]), axes)
        les_frac = np.clip(0.5 - les_sdf / np.float32(h), 0.0, 1.0)
        rho_lytic, rho_blastic = (float(x) for x in p.rho_of([lesion.lytic_hu,
                                                               lesion.blastic_hu]))
        if lesion.kind in ("blastic", "mixed"):
            rho_bone = rho_bone + les_frac * (np.maximum(rho_bone, rho_blastic) - rho_bone)
        if lesion.kind in ("lytic", "mixed"):
            core = les_frac
            if lesion.kind == "mixed":
                core_sdf = _ellipsoid(un - np.float32(centre[0]), vn - np.float32(centre[1]),
                                      wn - np.float32(centre[2]), axes * lesion.core_fraction)
                core = np.clip(0.5 - core_sdf / np.float32(h), 0.0, 1.0)
            rho_bone = rho_bone + core * (np.float32(rho_lytic) - rho_bone)
        in_lesion = (les_sdf <= 0.0) & (sdf_cut[near] <= 0.0)
        n_lesion = int(in_lesion.sum())
        if n_lesion == 0:
            raise InputError(
                f"lesion at {site} site {centre.round(1).tolist()} (local) with semi-axes "
                f"{axes.tolist()} mm does not overlap the bone",
                hint="move the lesion centre inside the femur or enlarge its radius",
            )
        labels[tuple(ax[in_lesion] for ax in near)] = _LESION_LABEL
        frame = _frame_axes(g)
        lesion_info = {
            "kind": lesion.kind,
            "site": site,
            "centre_mm": g.to_world(centre),
            "centre_frame_mm": [-centre[0], centre[1], centre[2]],
            "semi_axes_mm": axes,
            "axes": frame,
            "voxels": n_lesion,
            "volume_mm3": n_lesion * h**3,
        }
    rho[near] = bone_frac * rho_bone + (1.0 - bone_frac) * rho[near]
    if p.acetabulum_mm > 0.0:
        _add_acetabulum(rho, labels, u, v, w, p)
    del u, v, w, z, fields, sdf, sdf_cut

    hu = (rho - np.float32(p.calibration_intercept)) / np.float32(p.calibration_slope)
    del rho
    if p.blur_sigma_mm > 0:
        hu = ndimage.gaussian_filter(hu, sigma=p.blur_sigma_mm / h, mode="nearest")
    if p.noise_sd_hu > 0:
        rng = np.random.default_rng(p.seed)
        hu += np.float32(p.noise_sd_hu) * rng.standard_normal(shape, dtype=np.float32)
    np.rint(hu, out=hu)

    truth = _truth(g, p, grid, labels, lesion_info, lesion)
    hu.flags.writeable = False  # handed over to the frozen records without a copy
    labels.flags.writeable = False
    names = {_BONE_LABEL: "bone", _LESION_LABEL: "lesion"}
    if p.acetabulum_mm > 0.0:
        names[_ACETABULUM_LABEL] = "acetabulum"
    return Phantom(
        ct=CTVolume(grid=grid, hu=hu),
        labels=LabelMap(grid=grid, labels=labels, names=names),
        truth=truth,
        params=p,
        lesion_params=lesion,
    )


def _add_acetabulum(rho: F32, labels: npt.NDArray[np.int32], u: F32, v: F32, w: F32,
                    p: PhantomParams) -> None:
    """Add the acetabular shell of :attr:`PhantomParams.acetabulum_mm` in place (label 3)."""
    h = np.float32(p.voxel_size_mm)
    d = np.sqrt(u * u + v * v + w * w)
    axis = np.array([1.0, 0.0, 2.0]) / math.sqrt(5.0)
    cos_dir = (np.float32(axis[0]) * u + np.float32(axis[2]) * w) / np.maximum(d, 1e-6)
    inner = np.float32(p.head_radius_mm + p.joint_space_mm)
    half = np.float32(0.5 * p.acetabulum_mm)
    # signed distance to the cap (shell intersected with the cone), negative inside
    cone = (np.float32(math.cos(math.radians(75.0))) - cos_dir) * d
    sdf = np.maximum(np.abs(d - (inner + half)) - half, cone)
    frac = np.clip(0.5 - sdf / h, 0.0, 1.0) * (labels == 0)
    rho += frac * (np.float32(p.rho_cortex_proximal) - rho)
    labels[(sdf <= 0.0) & (labels == 0)] = _ACETABULUM_LABEL


def _frame_axes(g: _Geometry) -> FloatArray:
    """Rows x, y, z of the anatomical frame in world (x = y cross z, lateral for a right femur)."""
    y_axis, z_axis = g.basis[1], g.basis[2]
    return np.stack([np.cross(y_axis, z_axis), y_axis, z_axis])


def _truth(g: _Geometry, p: PhantomParams, grid: ImageGrid, labels: npt.NDArray[np.int32],
           lesion_info: dict[str, Any] | None, lesion: LesionParams | None) -> PhantomTruth:
    """Collect the ground truth of a generated phantom."""
    bone_slices = np.flatnonzero(labels.any(axis=(0, 1)))
    lowest = float(grid.index_to_world([0.0, 0.0, float(bone_slices[0])])[2])
    neck = g.world_dir(g.neck_dir)
    shaft = g.basis[2]
    plane = neck - (neck @ shaft) * shaft
    posteromedial = np.array([1.0, -1.0, 0.0]) / math.sqrt(2.0)
    lt_apex = g.lt_centre + p.lesser_trochanter_semi_axes_mm[0] * posteromedial
    gt_lateral = g.gt_centre - np.array([p.greater_trochanter_semi_axes_mm[0], 0.0, 0.0])
    lesion_hu: dict[str, float] = {}
    if lesion is not None:
        lesion_hu = {"lesion_lytic": lesion.lytic_hu, "lesion_blastic": lesion.blastic_hu}
    nominal = {
        "cortex_proximal": float(p.hu_of(p.rho_cortex_proximal)),
        "cortex_shaft": float(p.hu_of(p.rho_cortex_shaft)),
        "trabecular_min": float(p.trabecular_hu_range[0]),
        "trabecular_max": float(p.trabecular_hu_range[1]),
        "marrow": p.marrow_hu,
        "soft_tissue": p.soft_tissue_hu,
        "air": p.air_hu,
        **lesion_hu,
    }
    return PhantomTruth(
        head_centre_mm=g.centre,
        head_radius_mm=p.head_radius_mm,
        neck_axis=neck,
        shaft_axis=shaft,
        neck_shaft_intersection_mm=g.to_world(g.shaft_point),
        neck_shaft_angle_deg=math.degrees(math.acos(float(np.clip(-neck @ shaft, -1, 1)))),
        anteversion_deg=math.degrees(math.atan2(float(plane @ g.basis[1]),
                                                float(plane @ g.basis[0]))),
        shaft_tilt_deg=math.degrees(math.acos(float(np.clip(shaft[2], -1, 1)))),
        frame_axes=_frame_axes(g),
        greater_trochanter_lateral_mm=g.to_world(gt_lateral),
        lesser_trochanter_mm=g.to_world(lt_apex),
        side="right",
        calibration_slope=p.calibration_slope,
        calibration_intercept=p.calibration_intercept,
        distal_cut_z_mm=lowest,
        nominal_hu=nominal,
        lesion=json_plain(lesion_info) if lesion_info is not None else None,
    )


def write_phantom(phantom: Phantom, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``ct.nii.gz``, ``labels.nii.gz`` (1 bone, 2 lesion) and ``phantom.json``.

    Each file is written atomically (temporary file in ``out_dir``, then ``os.replace``).

    Args:
        phantom: The phantom.
        out_dir: Output folder (created when missing).

    Returns:
        ``{"ct": path, "labels": path, "json": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "ct": write_ct(phantom.ct, out / "ct.nii.gz"),
        "labels": write_labels(phantom.labels, out / "labels.nii.gz"),
    }
    record = {
        "generator": "osteofe.meshing.phantom",
        "truth": phantom.truth.to_dict(),
        "params": phantom.params.to_dict() if phantom.params is not None else None,
        "lesion_params": (phantom.lesion_params.to_dict()
                          if phantom.lesion_params is not None else None),
        "labels": {str(k): v for k, v in sorted(phantom.labels.names.items())},
        "grid": {
            "shape": list(phantom.ct.grid.shape),
            "spacing_mm": phantom.ct.grid.spacing.tolist(),
            "origin_mm": phantom.ct.grid.origin.tolist(),
            "direction": phantom.ct.grid.direction.tolist(),
        },
    }
    json_path = out / "phantom.json"
    atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
    paths["json"] = json_path
    return paths
