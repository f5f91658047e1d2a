"""Anatomical landmarks of a femur found from its surface, and the anatomical frame.

The frame follows DESIGN.md 3: origin at the femoral head centre, z along the shaft axis
pointing proximally, y anterior, x = y cross z (towards the patient's right: lateral for a
right femur, medial for a left one). Loads are defined for a right femur and mirrored in x for
a left one by :meth:`AnatomicalFrame.to_world_direction`, so they always point the right way.

World coordinates follow a named convention (:data:`WORLD_CONVENTIONS`): ITK/DICOM LPS for
images (the default: +x patient left, +y posterior, +z superior), RAS (NIfTI/Slicer) or the
ISB/OpenSim bone frame (+x anterior, +y superior, +z right) of musculoskeletal surfaces such as
the STAPLE femurs. The convention supplies the superior (proximal) and anterior hints; all
three are right-handed, so the patient's left is superior x anterior and the side follows from
the chirality of the bone: with z proximal and y anterior, x = y x z points to the patient's
right, and a femur whose head lies towards -x is a right femur. A mirrored copy of a right
femur therefore comes out left. The geometry overrides the proximal hint when the femoral head
is clearly at the other end of a long bone, and the lesser trochanter (posterior in every
femur) gives a side that needs no anterior hint (``anatomical_side``), reported as a check.

How each landmark is found (all from surface points only):

- **Head**: RANSAC sphere of femoral-head size near the proximal end, refined by least
  squares on its inliers; it must be supported over >= 60% of its sphere.
- **Proximal end** of a long piece (> 150 mm along its principal axis): the head sphere is
  sought at both ends; the end whose sphere is clearly better covered (head ~90%, condyles
  ~50-60%) is proximal, whatever the hint says.
- **Shaft axis**: line through the area centroids of the convex hulls of cross-sections of
  the diaphysis, from 4 head radii below the head centre (below the lesser trochanter) down
  to the distal cut or the distal metaphysis, refitted twice perpendicular to the current
  axis. Hull centroids do not depend on how densely the surface is sampled. Pieces with less
  than :data:`MIN_SHAFT_LENGTH_MM` of shaft (a CT that ends at the trochanters) keep the
  proximal hint as the axis and are flagged; the angles that need the shaft are then None.
- **Neck axis**: through the head centre and the area centroids of neck cross-sections
  1.0-1.5 head radii from it, perpendicular to the current guess (first guess: the centre of
  the part of the head sphere the surface does not cover, i.e. where the neck leaves it).
- **Neck-shaft angle**: 3-D angle between the neck axis (towards the head) and the distal
  shaft axis. **Femoral offset**: distance of the head centre from the shaft axis.
  **Anteversion**: angle of the neck axis projected on the plane normal to the shaft, anterior
  to the frontal plane (shaft axis and the frame's medio-lateral axis), positive anterior; for
  a whole femur also against the posterior condylar line (``condylar_anteversion_deg``).
- **Greater trochanter**: tip = most proximal surface point lateral to the shaft axis and
  away from the head; lateral point = most lateral point of the trochanteric region (the
  support of a sideways fall).
- **Lesser trochanter**: the surface point 0.4-3 head radii below the neck-shaft point that
  reaches furthest posteromedially from the shaft axis, kept when it stands out from the
  shaft.
- **Anatomical frame** (the frame loads are defined in): z the shaft axis; the frontal plane
  from the femur, not from the scanner, so that a leg lying rotated on the CT table gets the
  same loads relative to its bone. With the knee in the scan, x is parallel to the posterior
  condylar line (the reference of Bergmann et al. 2001's femur frame and of clinical
  anteversion); without it, the neck plane (shaft axis and neck axis) turned back about the
  shaft by :data:`ASSUMED_ANTEVERSION_DEG`; with neither, the image's anterior axis (flagged).
  The anterior hint only tells which sense is anterior (and so the side).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.spatial import ConvexHull, QhullError, cKDTree

from core.types import FloatArray
from fea.errors import LandmarkError

__all__ = [
    "WORLD_CONVENTIONS",
    "AnatomicalFrame",
    "Convention",
    "FemurLandmarks",
    "WorldConvention",
    "find_landmarks",
    "fit_sphere",
    "fit_sphere_ransac",
    "sphere_coverage",
]

logger = logging.getLogger(__name__)

Side = Literal["right", "left"]
Convention = Literal["LPS", "RAS", "ISB"]

#: LPS world directions used as hints: superior (proximal for a standing patient), anterior,
#: and the patient's left.
WORLD_SUPERIOR = np.array([0.0, 0.0, 1.0])
WORLD_ANTERIOR = np.array([0.0, -1.0, 0.0])
WORLD_LEFT = np.array([1.0, 0.0, 0.0])

#: A femoral head shows at least this fraction of its sphere (the rest joins the neck; the
#: neck leaves a cap of ~45 deg half angle uncovered, so intact heads reach ~0.85-0.92, while
#: the condyles of the knee reach 0.50-0.57 and the end of a box or cylinder ~0.5).
MIN_HEAD_COVERAGE = 0.6

#: The head's sphere must be better covered than the other end's best sphere by this much for
#: the geometry to decide which end is proximal (femoral heads ~0.9, condyles ~0.5-0.6).
PROXIMAL_COVERAGE_MARGIN = 0.15

#: Plausible femoral head radii in adults, mm (head diameters 38-58 mm).
HEAD_RADIUS_RANGE_MM = (15.0, 32.0)

#: The head lies within this distance (mm) of the most proximal surface point.
HEAD_SEARCH_DEPTH_MM = 75.0

#: A piece longer than this along its principal axis (mm) is tested for a head at both ends.
LONG_PIECE_MM = 150.0

#: Shaft needed below the lesser trochanter (mm) to fit a shaft axis from the geometry.
MIN_SHAFT_LENGTH_MM = 35.0

#: The shaft starts this many head radii below the head centre (below the lesser trochanter).
SHAFT_TOP_HEAD_RADII = 4.0

#: Neck cross-sections are taken at these distances from the head centre, in head radii.
NECK_SECTION_RANGE = (1.0, 1.5)

#: Lesser trochanter window below the neck-shaft point, in head radii.
LESSER_TROCHANTER_WINDOW = (0.4, 3.0)

#: The lesser trochanter must reach this much (mm) further posteromedially than the shaft.
MIN_TROCHANTER_PROMINENCE_MM = 2.0

#: Femoral anteversion assumed when the scan holds no knee (so no posterior condylar line):
#: the frontal plane is then the neck plane turned back by this angle about the shaft.
#: Mean anteversion against the posterior condylar line on CT of 50 adult cadaver femurs:
#: 11.7 deg (SD 8.2; van der Linden-van der Zwaag et al. 2015, Advances in Computed
#: Tomography 4:9-17, doi:10.4236/act.2015.41002).
ASSUMED_ANTEVERSION_DEG = 11.7

#: A frame turned further than this from the image axes is flagged (a leg lies rotated by
#: up to ~20-30 deg on a CT table; more suggests a wrong landmark or world convention).
MAX_PLAUSIBLE_LEG_ROTATION_DEG = 45.0

#: How the anatomical frame's frontal plane was found.
FrameReference = Literal["posterior_condylar_line", "neck_axis", "image_axes"]


@dataclass(frozen=True)
class WorldConvention:
    """Anatomical meaning of the world axes of a (right-handed) coordinate convention.

    Attributes:
        name: Short name ("LPS", "RAS", "ISB").
        superior: (3,) float64 unit world direction towards the head (proximal).
        anterior: (3,) float64 unit world direction to the front of the patient.
        description: One line on where the convention is used.
    """

    name: str
    superior: FloatArray
    anterior: FloatArray
    description: str

    @property
    def left(self) -> FloatArray:
        """(3,) world direction to the patient's left: superior x anterior (right-handed)."""
        return np.asarray(np.cross(self.superior, self.anterior))


def _constant(*values: float) -> FloatArray:
    v = np.array(values, dtype=np.float64)
    v.flags.writeable = False
    return v


#: World conventions understood by :func:`find_landmarks`. All are right-handed, so the
#: patient's left is superior x anterior and the side follows from the chirality of the bone.
WORLD_CONVENTIONS: dict[str, WorldConvention] = {
    "LPS": WorldConvention("LPS", _constant(0, 0, 1), _constant(0, -1, 0),
                           "ITK/DICOM patient coordinates: +x left, +y posterior, +z superior"),
    "RAS": WorldConvention("RAS", _constant(0, 0, 1), _constant(0, 1, 0),
                           "NIfTI/Slicer/FreeSurfer: +x right, +y anterior, +z superior"),
    "ISB": WorldConvention("ISB", _constant(0, 1, 0), _constant(1, 0, 0),
                           "ISB/OpenSim bone frames (Wu et al. 2002, J Biomech 35:543): "
                           "+x anterior, +y superior, +z right"),
}


@dataclass(frozen=True)
class AnatomicalFrame:
    """Right-handed anatomical frame of one femur.

    Attributes:
        origin: (3,) femoral head centre in world mm.
        axes: (3, 3) rows are the unit x, y, z axes expressed in world coordinates.
        side: "right" or "left".
    """

    origin: FloatArray
    axes: FloatArray
    side: Side

    def to_local(self, points: npt.ArrayLike) -> FloatArray:
        """World points (n, 3) mm -> anatomical coordinates (n, 3) mm."""
        return np.asarray((np.asarray(points, dtype=float) - self.origin) @ self.axes.T)

    def to_world_direction(self, right_femur_direction: npt.ArrayLike) -> FloatArray:
        """A direction given for a right femur (anatomical frame) -> world unit vector.

        For a left femur the x component (lateral for a right femur) is mirrored, so that a
        load "from medial to lateral" stays medial-to-lateral on either side.
        """
        local = np.asarray(right_femur_direction, dtype=float).copy()
        if self.side == "left":
            local[0] = -local[0]
        world = local @ self.axes
        return np.asarray(world / np.linalg.norm(world))

    @property
    def lateral(self) -> FloatArray:
        """(3,) world unit vector pointing laterally (away from the patient's midline)."""
        return np.asarray(self.axes[0] if self.side == "right" else -self.axes[0])


@dataclass(frozen=True)
class FemurLandmarks:
    """Landmarks found on a femur surface (world coordinates, mm; angles in degrees).

    Attributes:
        head_centre_mm: (3,) world position of the femoral head centre.
        head_radius_mm: Radius of the fitted head sphere.
        head_fit_rms_mm: RMS distance of the head inlier points to the sphere.
        shaft_axis: (3,) unit vector along the shaft, pointing proximally (world).
        shaft_point_mm: (3,) a point on the shaft axis (world).
        distal_level_mm: Coordinate of the most distal surface point along ``shaft_axis``.
        proximal_level_mm: Coordinate of the most proximal surface point along ``shaft_axis``.
        shaft_axis_from_geometry: False when the bone was too short to fit a shaft and the
            proximal hint (world superior axis) was used instead.
        frame: The anatomical frame.
        head_coverage: Fraction of the head sphere supported by surface points (0-1).
        neck_axis: (3,) unit vector along the femoral neck through the head centre, pointing
            to the head; None when no neck was found.
        neck_shaft_point_mm: (3,) where the neck axis comes closest to the shaft axis
            (midpoint of the two closest points); None without a neck or a fitted shaft.
        neck_shaft_angle_deg: 3-D angle between ``neck_axis`` and the distal shaft axis;
            None unless both axes come from the geometry (an angle to an image axis is not
            an anatomical angle).
        femoral_offset_mm: Distance from the head centre to the shaft axis; None without a
            fitted shaft axis.
        anteversion_deg: Angle of the neck axis projected on the plane normal to the shaft,
            anterior (positive) or posterior to the frontal plane given by the anterior hint;
            None without a neck or a fitted shaft axis.
        condylar_anteversion_deg: Anteversion against the posterior condylar line (the
            clinical reference, independent of the world convention); None unless the
            surface reaches the knee.
        greater_trochanter_tip_mm: (3,) most proximal surface point lateral to the shaft
            axis and away from the head (middle of the top 1 mm); None when not found.
        greater_trochanter_lateral_mm: (3,) most lateral surface point of the trochanteric
            region (support point of a sideways fall); None when not found.
        lesser_trochanter_mm: (3,) apex of the lesser trochanter (the point reaching
            furthest posteromedially below the neck); None when the piece does not reach it
            or no bump stands out.
        proximal_from_geometry: True when the head-sphere test at both ends of a long piece
            decided which end is proximal; False when the proximal hint did.
        convention: Name of the world convention whose hints were used ("LPS", "RAS", "ISB"
            or "custom" when hints were given explicitly).
        anatomical_side: Side given by the anatomy alone, without the anterior hint
            (the lesser trochanter points posteriorly; right-handed world assumed); None when
            the lesser trochanter was not found. A disagreement with ``frame.side`` means a
            mirrored or mislabelled world convention.
        frame_reference: What set the frame's frontal plane (the anterior axis y):
            ``"posterior_condylar_line"`` (the knee is in the scan: x parallel to the line,
            the reference of Bergmann's femur frame and of clinical anteversion),
            ``"neck_axis"`` (no knee: the neck plane turned back by the assumed
            anteversion) or ``"image_axes"`` (no neck either: the anterior hint).
        frame_anteversion_deg: Anteversion of the neck in the frame: measured against the
            condylar line, or the assumed value with ``"neck_axis"``; None otherwise.
        leg_rotation_deg: Angle (about the shaft) from the image's frontal plane to the
            anatomical one, positive when the femur's own frontal plane is turned towards
            anterior of the image's on the medial side: how the leg lay in the scanner.
    """

    head_centre_mm: FloatArray
    head_radius_mm: float
    head_fit_rms_mm: float
    shaft_axis: FloatArray
    shaft_point_mm: FloatArray
    distal_level_mm: float
    proximal_level_mm: float
    shaft_axis_from_geometry: bool
    frame: AnatomicalFrame
    head_coverage: float = math.nan
    neck_axis: FloatArray | None = None
    neck_shaft_point_mm: FloatArray | None = None
    neck_shaft_angle_deg: float | None = None
    femoral_offset_mm: float | None = None
    anteversion_deg: float | None = None
    condylar_anteversion_deg: float | None = None
    greater_trochanter_tip_mm: FloatArray | None = None
    greater_trochanter_lateral_mm: FloatArray | None = None
    lesser_trochanter_mm: FloatArray | None = None
    proximal_from_geometry: bool = False
    convention: str = "LPS"
    anatomical_side: Side | None = None
    frame_reference: FrameReference = "image_axes"
    frame_anteversion_deg: float | None = None
    leg_rotation_deg: float = 0.0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def length_mm(self) -> float:
        """Extent of the bone along the shaft axis, mm."""
        return self.proximal_level_mm - self.distal_level_mm

    @property
    def side(self) -> Side:
        """"right" or "left" (the frame's side)."""
        return self.frame.side

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (None where a landmark was not found)."""

        def vec(v: FloatArray | None, digits: int = 3) -> list[float] | None:
            return None if v is None else np.asarray(v).round(digits).tolist()

        def num(v: float | None, digits: int = 2) -> float | None:
            return None if v is None or not math.isfinite(v) else round(float(v), digits)

        return {
            "side": self.frame.side,
            "anatomical_side": self.anatomical_side,
            "convention": self.convention,
            "head_centre_mm": vec(self.head_centre_mm),
            "head_radius_mm": round(self.head_radius_mm, 3),
            "head_fit_rms_mm": round(self.head_fit_rms_mm, 4),
            "head_coverage": num(self.head_coverage, 3),
            "shaft_axis": vec(self.shaft_axis, 5),
            "shaft_axis_from_geometry": self.shaft_axis_from_geometry,
            "proximal_from_geometry": self.proximal_from_geometry,
            "length_along_shaft_mm": round(self.length_mm, 2),
            "neck_axis": vec(self.neck_axis, 5),
            "neck_shaft_point_mm": vec(self.neck_shaft_point_mm),
            "neck_shaft_angle_deg": num(self.neck_shaft_angle_deg),
            "femoral_offset_mm": num(self.femoral_offset_mm),
            "anteversion_deg": num(self.anteversion_deg),
            "condylar_anteversion_deg": num(self.condylar_anteversion_deg),
            "greater_trochanter_tip_mm": vec(self.greater_trochanter_tip_mm),
            "greater_trochanter_lateral_mm": vec(self.greater_trochanter_lateral_mm),
            "lesser_trochanter_mm": vec(self.lesser_trochanter_mm),
            "frame_axes_world": vec(self.frame.axes, 5),
            "frame_reference": self.frame_reference,
            "frame_anteversion_deg": num(self.frame_anteversion_deg),
            "leg_rotation_deg": num(self.leg_rotation_deg),
            "warnings": list(self.warnings),
        }


# ---------------------------------------------------------------------------------------------
# spheres
# ---------------------------------------------------------------------------------------------


def fit_sphere(points: npt.ArrayLike) -> tuple[FloatArray, float, float]:
    """Least-squares sphere through points: algebraic fit refined by Gauss-Newton.

    Args:
        points: (n, 3) points in mm, n >= 4, not coplanar.

    Returns:
        (centre (3,), radius, rms geometric residual) in mm.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.shape[0] < 4:
        raise LandmarkError("a sphere fit needs at least 4 points",
                            hint="check the head region of the surface")
    # Algebraic fit: |x|^2 = 2 c.x + (r^2 - |c|^2), linear in (c, k). Shifted to the mean
    # for conditioning far from the origin.
    mean = p.mean(axis=0)
    q = p - mean
    a = np.hstack([2.0 * q, np.ones((q.shape[0], 1))])
    rhs = np.einsum("ij,ij->i", q, q)
    sol, *_ = np.linalg.lstsq(a, rhs, rcond=None)
    centre = sol[:3]
    radius = float(np.sqrt(max(sol[3] + centre @ centre, 0.0)))
    # Geometric refinement: minimise sum (|p - c| - r)^2.
    for _ in range(20):
        diff = q - centre
        dist = np.linalg.norm(diff, axis=1)
        dist = np.maximum(dist, 1e-12)
        residual = dist - radius
        jac = np.hstack([-diff / dist[:, None], -np.ones((q.shape[0], 1))])
        step, *_ = np.linalg.lstsq(jac, -residual, rcond=None)
        centre = centre + step[:3]
        radius += float(step[3])
        if np.linalg.norm(step) < 1e-10:
            break
    rms = float(np.sqrt(np.mean((np.linalg.norm(q - centre, axis=1) - radius) ** 2)))
    return centre + mean, radius, rms


def fit_sphere_ransac(
    points: npt.ArrayLike,
    *,
    radius_range_mm: tuple[float, float] = HEAD_RADIUS_RANGE_MM,
    inlier_tol_mm: float = 1.0,
    iterations: int = 600,
    seed: int = 0,
) -> tuple[FloatArray, float, float, npt.NDArray[np.bool_]]:
    """Robust sphere fit: RANSAC on 4-point spheres, then least squares on the inliers.

    Args:
        points: (n, 3) candidate points in mm.
        radius_range_mm: Accepted radius range.
        inlier_tol_mm: Distance to the sphere under which a point is an inlier.
        iterations: RANSAC trials (deterministic for a given ``seed``).
        seed: Random seed.

    Returns:
        (centre, radius, rms, inlier mask).

    Raises:
        LandmarkError: when no sphere in the radius range is supported by the points.
    """
    p = np.asarray(points, dtype=np.float64)
    n = p.shape[0]
    if n < 20:
        raise LandmarkError(f"only {n} surface points near the femoral head",
                            hint="the surface is too coarse or the head is missing")
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, n, size=(iterations, 4))
    q = p[samples]  # (it, 4, 3)
    # Solve each 4-point sphere: 2 (q_i - q_0) . c = |q_i|^2 - |q_0|^2.
    lhs = 2.0 * (q[:, 1:] - q[:, :1])
    rhs = np.einsum("tij,tij->ti", q[:, 1:], q[:, 1:]) - np.einsum("tj,tj->t", q[:, 0], q[:, 0])[
        :, None
    ]
    det = np.linalg.det(lhs)
    good = np.abs(det) > 1e-6
    centres = np.full((iterations, 3), np.nan)
    centres[good] = np.linalg.solve(lhs[good], rhs[good][..., None])[..., 0]
    radii = np.linalg.norm(q[:, 0] - centres, axis=1)
    valid = good & (radii > radius_range_mm[0]) & (radii < radius_range_mm[1])
    if not np.any(valid):
        raise LandmarkError("no sphere of femoral-head size fits the proximal surface",
                            hint="check that the femoral head is inside the image/mesh")
    best_count = -1
    best_inliers = np.zeros(n, dtype=bool)
    # Chunked scoring keeps memory bounded (trials x points booleans).
    valid_idx = np.flatnonzero(valid)
    for start in range(0, valid_idx.size, 64):
        idx = valid_idx[start:start + 64]
        dist = np.abs(
            np.linalg.norm(p[None, :, :] - centres[idx, None, :], axis=2) - radii[idx, None]
        )
        inl = dist < inlier_tol_mm
        counts = inl.sum(axis=1)
        k = int(np.argmax(counts))
        if counts[k] > best_count:
            best_count = int(counts[k])
            best_inliers = inl[k]
    centre, radius, _ = fit_sphere(p[best_inliers])
    # One re-selection of inliers around the refined sphere, then the final fit.
    inliers = np.abs(np.linalg.norm(p - centre, axis=1) - radius) < inlier_tol_mm
    centre, radius, rms = fit_sphere(p[inliers])
    return centre, radius, rms, inliers


def _fibonacci_directions(num: int) -> FloatArray:
    """(num, 3) unit vectors spread evenly over the sphere (Fibonacci lattice)."""
    k = np.arange(num) + 0.5
    polar = np.arccos(1.0 - 2.0 * k / num)
    azimuth = np.pi * (1.0 + 5.0**0.5) * k
    return np.column_stack([np.cos(azimuth) * np.sin(polar),
                            np.sin(azimuth) * np.sin(polar), np.cos(polar)])


def _covered_directions(offsets: FloatArray, num_directions: int) -> tuple[
        FloatArray, npt.NDArray[np.bool_]]:
    """Fibonacci directions and whether a point lies within ~12 deg of each."""
    lattice = _fibonacci_directions(num_directions)
    if offsets.shape[0] == 0:
        return lattice, np.zeros(num_directions, dtype=bool)
    unit = offsets / np.maximum(np.linalg.norm(offsets, axis=1), 1e-12)[:, None]
    cos_limit = np.cos(np.radians(12.0))
    covered = np.zeros(num_directions, dtype=bool)
    for start in range(0, unit.shape[0], 20000):  # bounded memory for dense surfaces
        covered |= (lattice @ unit[start:start + 20000].T).max(axis=1) > cos_limit
    return lattice, covered


def sphere_coverage(offsets: FloatArray, num_directions: int = 200) -> float:
    """Fraction of a sphere's surface supported by points (offsets from its centre).

    Directions of a Fibonacci lattice count as covered when a point lies within ~12 deg.

    Args:
        offsets: (n, 3) float64 points minus the sphere centre, mm.
        num_directions: Lattice size.

    Returns:
        Covered fraction in [0, 1].
    """
    _, covered = _covered_directions(np.asarray(offsets, dtype=np.float64), num_directions)
    return float(covered.mean())


@dataclass(frozen=True)
class _Head:
    """A head-sized sphere found near one end of the bone."""

    centre: FloatArray
    radius: float
    rms: float
    coverage: float
    inliers: FloatArray  # (k, 3) points on the sphere


def _find_head(points: FloatArray, axis: FloatArray, tol: float, seed: int) -> _Head | None:
    """Best head-sized sphere within :data:`HEAD_SEARCH_DEPTH_MM` of the end ``axis`` points to.

    RANSAC runs on at most 4000 of the points (seeded), the refinement on all of them.
    """
    t = points @ axis
    near = points[t > t.max() - HEAD_SEARCH_DEPTH_MM]
    if near.shape[0] < 20:
        return None
    rng = np.random.default_rng(seed)
    sample = near if near.shape[0] <= 4000 else near[rng.choice(near.shape[0], 4000,
                                                                replace=False)]
    try:
        centre, radius, _, _ = fit_sphere_ransac(sample, inlier_tol_mm=tol, seed=seed)
    except LandmarkError:
        return None
    inliers = near[np.abs(np.linalg.norm(near - centre, axis=1) - radius) < tol]
    for _ in range(2):
        if inliers.shape[0] < 20:
            return None
        centre, radius, rms = fit_sphere(inliers)
        inliers = near[np.abs(np.linalg.norm(near - centre, axis=1) - radius) < tol]
    if not HEAD_RADIUS_RANGE_MM[0] <= radius <= HEAD_RADIUS_RANGE_MM[1]:
        return None
    return _Head(centre, float(radius), float(rms),
                 sphere_coverage(inliers - centre), inliers)


# ---------------------------------------------------------------------------------------------
# axes and cross-sections
# ---------------------------------------------------------------------------------------------


def _line_fit(points: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Best-fit line (point, unit direction) through points by PCA."""
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    return centre, vt[0]


def _perpendicular_basis(direction: FloatArray) -> FloatArray:
    """(2, 3) orthonormal vectors perpendicular to a unit ``direction``."""
    helper = np.eye(3)[int(np.argmin(np.abs(direction)))]
    u = np.cross(direction, helper)
    u /= np.linalg.norm(u)
    return np.vstack([u, np.cross(direction, u)])


def _polygon_centroid(points2d: FloatArray) -> tuple[FloatArray, float] | None:
    """Area centroid and area of the convex hull of 2-D points, or None if degenerate."""
    if points2d.shape[0] < 6:
        return None
    shift = points2d.mean(axis=0)
    q = points2d - shift
    try:
        hull = ConvexHull(q)
    except QhullError:
        return None
    v = q[hull.vertices]  # counter-clockwise for 2-D hulls
    w = np.roll(v, -1, axis=0)
    cross = v[:, 0] * w[:, 1] - w[:, 0] * v[:, 1]
    area = 0.5 * float(cross.sum())
    if area <= 1e-9:
        return None
    centroid = ((v + w) * cross[:, None]).sum(axis=0) / (6.0 * area)
    return centroid + shift, area


def _sections(
    points: FloatArray,
    origin: FloatArray,
    direction: FloatArray,
    offsets: FloatArray,
    half_thickness: float,
    max_radius: float | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Convex cross-sections of a surface perpendicular to a line.

    Args:
        points: (n, 3) surface points.
        origin: (3,) point on the line.
        direction: (3,) unit direction of the line.
        offsets: (k,) positions of the sections along the line from ``origin``, mm.
        half_thickness: Half thickness of the slab of points that makes each section, mm.
        max_radius: Ignore points further than this from the line (mm), if given.

    Returns:
        ((k, 3) area centroids in world mm, NaN where a section is empty or degenerate;
        (k,) hull areas in mm^2, NaN likewise).
    """
    rel = points - origin
    t = rel @ direction
    basis = _perpendicular_basis(direction)
    planar = rel @ basis.T  # (n, 2)
    keep = np.ones(points.shape[0], dtype=bool)
    if max_radius is not None:
        keep = np.einsum("ij,ij->i", planar, planar) < max_radius**2
    centres = np.full((offsets.shape[0], 3), np.nan)
    areas = np.full(offsets.shape[0], np.nan)
    for i, s in enumerate(offsets):
        slab = keep & (np.abs(t - s) < half_thickness)
        result = _polygon_centroid(planar[slab])
        if result is not None:
            c2, areas[i] = result
            centres[i] = origin + s * direction + c2 @ basis
    return centres, areas


@dataclass(frozen=True)
class _Shaft:
    point: FloatArray  # (3,) on the axis
    direction: FloatArray  # (3,) unit, proximal
    radius: float  # equivalent radius of the narrowest sections, mm


def _shaft_axis(
    points: FloatArray, axis: FloatArray, head_level: float, head_radius: float, half: float
) -> _Shaft | None:
    """Shaft axis from the area centroids of shaft cross-sections.

    The sections run from 5 mm above the distal end to :data:`SHAFT_TOP_HEAD_RADII` head
    radii below the head centre; the shaft is the run of sections from the top down to the
    first one wider than 1.6 times the 20th percentile of their areas (the distal metaphysis
    of a whole femur). Returns None when less than :data:`MIN_SHAFT_LENGTH_MM` of shaft
    remains.
    """
    t = points @ axis
    low = float(t.min()) + 5.0
    high = head_level - SHAFT_TOP_HEAD_RADII * head_radius
    if high - low < MIN_SHAFT_LENGTH_MM:
        return None
    count = int(np.clip((high - low) / 5.0, 6, 60))
    levels = np.linspace(low, high, count)
    centres, areas = _sections(points, np.zeros(3), axis, levels, half)
    ok = np.isfinite(areas)
    if ok.sum() < 5:
        return None
    reference = float(np.percentile(areas[ok], 20.0))
    # The shaft runs down from the top section to the first wide one (distal metaphysis or
    # condyles; a knee cut obliquely to the shaft also gives small caps lower down).
    wide = np.flatnonzero(ok & (areas >= 1.6 * reference))
    shaft = ok & (np.arange(levels.size) > (wide.max() if wide.size else -1))
    if shaft.sum() < 5 or np.ptp(levels[shaft]) < MIN_SHAFT_LENGTH_MM:
        return None
    point, direction = _line_fit(centres[shaft])
    if direction @ axis < 0:
        direction = -direction
    return _Shaft(point, direction, math.sqrt(reference / math.pi))


def _neck_axis(
    points: FloatArray, centre: FloatArray, radius: float, head: _Head, half: float
) -> FloatArray | None:
    """Unit neck direction from the head centre into the neck (None when not found).

    First guess: the centre of the part of the head sphere that carries no surface (where
    the neck leaves the head). Then, repeatedly: cross-sections perpendicular to the guess at
    :data:`NECK_SECTION_RANGE` head radii from the head centre, points within one head
    radius of the line only; the new direction is the line through the head centre that
    best fits the section centroids (up to 12 times, until it turns by < 0.005 deg).
    """
    lattice, covered = _covered_directions(head.inliers - centre, 400)
    if covered.all() or not covered.any():
        return None
    guess = lattice[~covered].mean(axis=0)
    if np.linalg.norm(guess) < 1e-6:
        return None
    direction = guess / np.linalg.norm(guess)
    offsets = radius * np.linspace(*NECK_SECTION_RANGE, 6)
    for _ in range(12):
        centres, _ = _sections(points, centre, direction, offsets, half, max_radius=radius)
        ok = np.all(np.isfinite(centres), axis=1)
        if ok.sum() < 3:
            return None
        rel = centres[ok] - centre
        _, _, vt = np.linalg.svd(rel, full_matrices=False)  # line through the head centre
        new = vt[0] if vt[0] @ direction > 0 else -vt[0]
        change = float(np.degrees(np.arccos(np.clip(new @ direction, -1.0, 1.0))))
        direction = new
        if change < 0.005:
            break
    return direction


def _closest_points(p1: FloatArray, d1: FloatArray, p2: FloatArray, d2: FloatArray
                    ) -> tuple[FloatArray, FloatArray]:
    """Closest points of two lines (point, unit direction)."""
    w = p1 - p2
    b = float(d1 @ d2)
    denom = 1.0 - b * b
    if denom < 1e-12:
        return p1, p2 + (w @ d2) * d2
    s = (b * float(w @ d2) - float(w @ d1)) / denom
    t = (float(w @ d2) - b * float(w @ d1)) / denom
    return p1 + s * d1, p2 + t * d2


def _angle_deg(a: FloatArray, b: FloatArray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)),
                                              -1.0, 1.0))))


def _point_spacing(points: FloatArray, seed: int) -> float:
    """Median distance from a surface point to its nearest neighbour (mm, on a sample)."""
    rng = np.random.default_rng(seed)
    sample = points if points.shape[0] <= 3000 else points[rng.choice(points.shape[0], 3000,
                                                                      replace=False)]
    dist, _ = cKDTree(points).query(sample, k=2)
    return float(np.median(dist[:, 1]))


def _resolve_hints(
    convention: str,
    proximal_hint: npt.ArrayLike | None,
    anterior_hint: npt.ArrayLike | None,
) -> tuple[str, FloatArray, FloatArray]:
    """Convention name and the unit proximal and anterior hints."""
    key = str(convention).upper()
    if key not in WORLD_CONVENTIONS:
        raise LandmarkError(
            f"unknown world convention {convention!r}",
            hint=f"use one of {', '.join(WORLD_CONVENTIONS)} (or pass explicit hints)",
        )
    conv = WORLD_CONVENTIONS[key]
    name = conv.name
    hints = []
    for given, default in ((proximal_hint, conv.superior), (anterior_hint, conv.anterior)):
        if given is None:
            hints.append(np.array(default, dtype=np.float64))
            continue
        vec = np.asarray(given, dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(vec)) if vec.shape == (3,) else 0.0
        if not (math.isfinite(norm) and norm > 0.0):
            raise LandmarkError(f"direction hint {given!r} is not a non-zero 3-vector",
                                hint="pass hints as world directions (x, y, z)")
        hints.append(vec / norm)
        name = "custom"
    return name, hints[0], hints[1]


def _checked_points(surface_points: npt.ArrayLike) -> FloatArray:
    """(n, 3) float64 finite surface points, n >= 20, or LandmarkError."""
    pts = np.asarray(surface_points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 20:
        raise LandmarkError(f"surface points must be an (n >= 20, 3) array, got {pts.shape}",
                            hint="pass the boundary node coordinates of the femur mesh")
    if not np.all(np.isfinite(pts)):
        raise LandmarkError("surface points contain NaN or infinite coordinates",
                            hint="check the mesh or surface file")
    return pts


def _elongation(points: FloatArray) -> float:
    """Ratio of the first to the second principal standard deviation of a point cloud."""
    sv = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    return float(sv[0] / max(sv[1], 1e-12))


@dataclass(frozen=True)
class _ProximalEnd:
    axis: FloatArray  # (3,) unit, towards the head
    head: _Head | None
    from_geometry: bool  # the sphere test at both ends decided
    against_hint: bool  # ... and it contradicted the proximal hint


def _proximal_end(points: FloatArray, hint: FloatArray, tol: float, seed: int,
                  note: Callable[[str], None]) -> _ProximalEnd:
    """Long axis oriented proximally and the head sphere at that end.

    Pieces longer than :data:`LONG_PIECE_MM` along their principal axis are tested for a
    head-sized sphere at both ends; the end whose sphere is better covered by
    :data:`PROXIMAL_COVERAGE_MARGIN` or more is proximal. Shorter pieces trust the hint.
    """
    _, principal = _line_fit(points)
    extent = float(np.ptp(points @ principal))
    if extent <= LONG_PIECE_MM:
        return _ProximalEnd(hint.copy(), _find_head(points, hint, tol, seed), False, False)
    if abs(principal @ hint) > 0.3:
        axis = principal if principal @ hint > 0 else -principal
    elif _elongation(points) > 2.0:
        axis = principal  # the hint runs across the bone: only the sphere test can decide
        note("the proximal hint is not along the bone's long axis: the world convention may "
             "be wrong; the femoral head decides which end is proximal")
    else:
        return _ProximalEnd(hint.copy(), _find_head(points, hint, tol, seed), False, False)
    head = _find_head(points, axis, tol, seed)
    other = _find_head(points, -axis, tol, seed)
    cov_this = head.coverage if head is not None else 0.0
    cov_other = other.coverage if other is not None else 0.0
    if cov_other - cov_this >= PROXIMAL_COVERAGE_MARGIN:
        against = bool(-axis @ hint < 0.0)
        if against:
            note(f"the femoral head (sphere coverage {cov_other:.2f} against {cov_this:.2f} "
                 "at the other end) is at the end the proximal hint calls distal: the "
                 "geometry decides (check the world convention of the surface)")
        return _ProximalEnd(-axis, other, True, against)
    decided = cov_this - cov_other >= PROXIMAL_COVERAGE_MARGIN
    return _ProximalEnd(axis, head, decided, False)


def _frame(centre: FloatArray, axis: FloatArray, anterior: FloatArray, medial: FloatArray
           ) -> AnatomicalFrame:
    """Anatomical frame: z = axis, y = anterior made normal to it, x = y x z.

    In a right-handed world x points to the patient's right, so the femur is a right one
    when its head (``medial``) lies towards -x.
    """
    y_axis = anterior - (anterior @ axis) * axis
    if np.linalg.norm(y_axis) < 0.3:
        raise LandmarkError("the anterior hint is (nearly) parallel to the shaft axis",
                            hint="check the image orientation (direction cosines) or pass the "
                                 "surface's world convention (LPS, RAS or ISB)")
    y_axis = y_axis / np.linalg.norm(y_axis)
    x_axis = np.cross(y_axis, axis)
    side: Side = "right" if medial @ x_axis < 0.0 else "left"
    return AnatomicalFrame(origin=centre, axes=np.vstack([x_axis, y_axis, axis]), side=side)


@dataclass(frozen=True)
class _Local:
    """Surface points in the frame, x mirrored so that lateral is positive on either side."""

    lateral: FloatArray  # (n,) mm lateral of the shaft axis (medial negative)
    anterior: FloatArray  # (n,) mm anterior of the shaft axis
    level: FloatArray  # (n,) mm above the head centre along the shaft axis
    from_head: FloatArray  # (n,) mm from the head centre

    @classmethod
    def of(cls, frame: AnatomicalFrame, points: FloatArray, shaft_point: FloatArray) -> _Local:
        local = frame.to_local(points)
        shaft = frame.to_local(shaft_point[None])[0]
        mirror = 1.0 if frame.side == "right" else -1.0
        return cls(mirror * (local[:, 0] - shaft[0]), local[:, 1] - shaft[1], local[:, 2],
                   np.linalg.norm(local, axis=1))

    def direction(self, frame: AnatomicalFrame, world: FloatArray) -> FloatArray:
        """(lateral, anterior, proximal) components of a world direction."""
        local = frame.axes @ world
        mirror = 1.0 if frame.side == "right" else -1.0
        return np.array([mirror * local[0], local[1], local[2]])


def _lesser_trochanter(loc: _Local, radius: float, ns_level: float, distal_level: float,
                       shaft_radius: float | None) -> tuple[int | None, float | None]:
    """Index of the lesser trochanter apex and the evidence that it is posterior.

    Within :data:`LESSER_TROCHANTER_WINDOW` head radii below the neck-shaft level, the point
    reaching furthest posteromedially from the shaft axis is the apex, kept when it stands
    :data:`MIN_TROCHANTER_PROMINENCE_MM` out of the shaft. The evidence is the posteromedial
    reach minus the anteromedial reach in the same window (mm): positive when the biggest
    medial bump below the neck is posterior in this frame, as it is in every femur.

    Returns:
        (apex index or None, evidence in mm or None).
    """
    low = ns_level - LESSER_TROCHANTER_WINDOW[1] * radius
    high = ns_level - LESSER_TROCHANTER_WINDOW[0] * radius
    if distal_level > low - 5.0:
        return None, None
    window = np.flatnonzero((loc.from_head > 1.5 * radius) & (loc.level > low)
                            & (loc.level < high))
    if window.size < 10:
        return None, None
    posteromedial = (-loc.lateral[window] - loc.anterior[window]) / math.sqrt(2.0)
    anteromedial = (-loc.lateral[window] + loc.anterior[window]) / math.sqrt(2.0)
    evidence = float(posteromedial.max() - anteromedial.max())
    reference = shaft_radius if shaft_radius is not None else float(
        np.median(np.hypot(loc.lateral[window], loc.anterior[window])))
    best = int(np.argmax(posteromedial))
    if posteromedial[best] - reference < MIN_TROCHANTER_PROMINENCE_MM:
        return None, evidence
    return int(window[best]), evidence


def _greater_trochanter(loc: _Local, radius: float, ns_level: float
                        ) -> tuple[int | None, int | None]:
    """Indices of the greater trochanter tip and of its most lateral point.

    Region: points more than 1.5 head radii from the head centre, lateral to the shaft axis
    for the tip, above one head radius below the neck-shaft level for the lateral point.
    The top of a trochanter is a plateau and its lateral face nearly vertical, so an argmax
    alone wanders along them with the axes: the tip is the point nearest the middle of those
    within 1 mm of the highest level, the lateral point the point nearest the middle of
    those within 0.5 mm of the largest lateral distance.
    """
    away = loc.from_head > 1.5 * radius
    tip = lateral = None
    region = np.flatnonzero(away & (loc.lateral > 0.0) & (loc.level > ns_level - 0.5 * radius))
    if region.size:
        top = region[loc.level[region] > loc.level[region].max() - 1.0]
        across = np.column_stack([loc.lateral[top], loc.anterior[top]])
        tip = int(top[np.argmin(np.linalg.norm(across - across.mean(axis=0), axis=1))])
    upper = np.flatnonzero(away & (loc.level > ns_level - radius))
    if upper.size:
        band = upper[loc.lateral[upper] > loc.lateral[upper].max() - 0.5]
        across = np.column_stack([loc.anterior[band], loc.level[band]])
        lateral = int(band[np.argmin(np.linalg.norm(across - across.mean(axis=0), axis=1))])
    return tip, lateral


def _posterior_condylar_line(loc: _Local, distal_level: float,
                             shaft_radius: float) -> FloatArray | None:
    """Direction of the posterior condylar line (lateral, anterior), pointing medially.

    The posterior condylar line is the longest edge of the convex hull of the distal
    40 mm (projected on the plane normal to the shaft) whose outward normal points
    posteriorly: the bitangent of the two posterior condyles. None when the distal end is
    no knee (narrower than four shaft radii) or no edge spans the condyles.

    Args:
        loc: Surface points in the mirrored frame.
        distal_level: Level of the most distal point (mm from the head centre).
        shaft_radius: Equivalent radius of the narrowest shaft section (mm).
    """
    distal = loc.level < distal_level + 40.0
    planar = np.column_stack([loc.lateral[distal], loc.anterior[distal]])
    if planar.shape[0] < 20:
        return None
    width = float(np.ptp(planar[:, 0]))
    if width < 4.0 * shaft_radius:
        return None
    try:
        hull = ConvexHull(planar)
    except QhullError:
        return None
    v = planar[hull.vertices]  # counter-clockwise
    edges = np.roll(v, -1, axis=0) - v
    lengths = np.linalg.norm(edges, axis=1)
    outward_posterior = edges[:, 0] / np.maximum(lengths, 1e-12)  # -(normal . anterior)
    candidates = np.flatnonzero(outward_posterior > 0.5)
    if candidates.size == 0:
        return None
    k = int(candidates[np.argmax(lengths[candidates])])
    if lengths[k] < 0.3 * width:
        return None
    line = edges[k] if edges[k, 0] < 0 else -edges[k]  # pointing medially
    return np.asarray(line / lengths[k])


def _angle_from_medial(direction: FloatArray) -> float:
    """Angle (rad) of a (lateral, anterior[, ...]) direction from medial towards anterior."""
    return math.atan2(float(direction[1]), -float(direction[0]))


def _wrap_deg(angle_rad: float) -> float:
    """Angle in degrees wrapped to (-180, 180]."""
    return float(np.degrees((angle_rad + math.pi) % (2.0 * math.pi) - math.pi))


def _turned_frame(frame: AnatomicalFrame, angle_rad: float) -> AnatomicalFrame:
    """The frame turned about its z axis so that its medial axis moves ``angle_rad`` anteriorly.

    Works on either side: angles are measured in the mirrored (lateral, anterior) plane, so
    the same angle turns a right and a left femur's frame the same anatomical way.
    """
    lateral, anterior = frame.lateral, frame.axes[1]
    new_anterior = math.cos(angle_rad) * anterior + math.sin(angle_rad) * lateral
    new_medial = -math.cos(angle_rad) * lateral + math.sin(angle_rad) * anterior
    return _frame(frame.origin, frame.axes[2], new_anterior, new_medial)


# ---------------------------------------------------------------------------------------------
# the landmarks
# ---------------------------------------------------------------------------------------------


def find_landmarks(
    surface_points: npt.ArrayLike,
    *,
    convention: Convention | str = "LPS",
    proximal_hint: npt.ArrayLike | None = None,
    anterior_hint: npt.ArrayLike | None = None,
    seed: int = 0,
    assumed_anteversion_deg: float = ASSUMED_ANTEVERSION_DEG,
) -> FemurLandmarks:
    """Find head, neck, shaft axis, trochanters, angles, side and frame of a femur.

    Args:
        surface_points: (n, 3) float world coordinates (mm) of points on the bone surface
            (e.g. boundary nodes of the tetrahedral mesh, or the vertices of an STL).
        convention: World convention of the coordinates (:data:`WORLD_CONVENTIONS`): "LPS"
            for images read by ITK (the default), "RAS", or "ISB" for OpenSim-like bone
            surfaces (x anterior, y superior, z right). It supplies the superior and
            anterior hints; the side follows from the bone's chirality in that frame.
        proximal_hint: World direction that points roughly proximally; overrides the
            convention's superior axis. The geometry overrides both for a long bone whose
            head is clearly at the other end (then the lesser trochanter also decides the
            anterior sense when the two disagree).
        anterior_hint: World direction that points roughly anteriorly; overrides the
            convention's anterior axis.
        seed: Seed of the robust sphere fits (results are deterministic for a seed).
        assumed_anteversion_deg: Anteversion that places the frontal plane when the surface
            does not reach the knee (:data:`ASSUMED_ANTEVERSION_DEG`).

    Returns:
        The landmarks and frame. Landmarks that the piece of bone does not contain are None
        (see :class:`FemurLandmarks`); the reasons are logged and listed in ``warnings``.

    Raises:
        LandmarkError: when the points are unusable, the convention is unknown, a hint is
            invalid or along the shaft, or no femoral head is found.
    """
    pts = _checked_points(surface_points)
    conv_name, hint, anterior = _resolve_hints(convention, proximal_hint, anterior_hint)
    notes: list[str] = []

    def note(message: str) -> None:
        logger.warning(message)
        notes.append(message)

    spacing = _point_spacing(pts, seed)
    tol = max(1.0, 0.5 * spacing)  # sphere inlier band, mm
    half = max(1.5, 0.75 * spacing)  # half thickness of the section slabs, mm

    # 1. Long axis, proximal end and head.
    end = _proximal_end(pts, hint, tol, seed, note)
    axis, head = end.axis, end.head
    if head is None:
        raise LandmarkError("no femoral head found: no sphere of femoral-head size fits the "
                            "proximal end of the surface",
                            hint="check that the segmentation includes the femoral head and "
                                 "that the world convention (superior axis) is right")
    if head.coverage < MIN_HEAD_COVERAGE:
        raise LandmarkError(
            f"no femoral head found: the best sphere (radius {head.radius:.1f} mm) is "
            f"supported on only {100 * head.coverage:.0f}% of its surface",
            hint="check that the segmentation includes the femoral head",
        )

    # 2. Shaft axis (two passes perpendicular to the current axis), then the head again.
    shaft: _Shaft | None = None
    for _ in range(2):
        fitted = _shaft_axis(pts, axis, float(head.centre @ axis), head.radius, half)
        if fitted is None:
            break
        shaft, axis = fitted, fitted.direction
    if shaft is None:
        used = "principal axis of the piece" if end.from_geometry else (
            "proximal hint (image superior axis)")
        note(f"bone shorter than a stretch of shaft: the {used} is used as the shaft axis; "
             "neck-shaft angle, offset and anteversion are not measured")
        shaft_point = pts.mean(axis=0)
    else:
        shaft_point = shaft.point
        refit = _find_head(pts, axis, tol, seed)
        if refit is not None and refit.coverage >= MIN_HEAD_COVERAGE:
            head = refit
    centre, radius = head.centre, head.radius
    t = pts @ axis
    distal_level = float(t.min() - centre @ axis)

    # 3. Neck axis.
    neck_dir = _neck_axis(pts, centre, radius, head, half)
    neck_axis = None if neck_dir is None else -neck_dir
    if neck_axis is None:
        note("no femoral neck found next to the head")

    # 4. Side and frame: the head is medial; chirality in the given convention.
    offset = centre - shaft_point
    offset -= (offset @ axis) * axis
    medial = offset if shaft is not None or neck_axis is None else (
        neck_axis - (neck_axis @ axis) * axis)
    frame = _frame(centre, axis, anterior, medial)
    neck_shaft_point = None
    if shaft is not None and neck_axis is not None:
        a, b = _closest_points(centre, neck_axis, shaft_point, axis)
        neck_shaft_point = 0.5 * (a + b)
        ns_level = float((neck_shaft_point - centre) @ axis)
    else:
        ns_level = -1.4 * radius  # typical: the neck meets the shaft ~1.4 radii lower
    shaft_radius = None if shaft is None else shaft.radius
    loc = _Local.of(frame, pts, shaft_point)

    # 5. Lesser trochanter, and the anatomy's own word on the anterior sense.
    lesser, evidence = _lesser_trochanter(loc, radius, ns_level, distal_level, shaft_radius)
    anatomical_side: Side | None = None
    if evidence is not None and abs(evidence) >= MIN_TROCHANTER_PROMINENCE_MM:
        other: Side = "left" if frame.side == "right" else "right"
        anatomical_side = frame.side if evidence > 0 else other
        if evidence < 0 and end.against_hint:
            note("the lesser trochanter is anterior in the given convention, whose proximal "
                 "axis was already wrong: the anterior sense is taken from the anatomy")
            frame = _frame(centre, axis, -anterior, medial)
            loc = _Local.of(frame, pts, shaft_point)
            lesser, evidence = _lesser_trochanter(loc, radius, ns_level, distal_level,
                                                  shaft_radius)
        elif evidence < 0:
            note(f"the lesser trochanter lies anterior of the shaft in the {conv_name} "
                 f"convention: the surface may be mirrored or in another convention (the "
                 f"anatomy says {anatomical_side}, the convention {frame.side})")
    if lesser is None:
        note("lesser trochanter not found (the piece may end above it)")

    # 6. Angles (against the image's frontal plane, given by the anterior hint).
    nsa = offset_mm = anteversion = condylar = None
    condylar_line = neck_local = None
    if shaft is not None:
        offset_mm = float(np.linalg.norm(offset))
        condylar_line = _posterior_condylar_line(loc, distal_level, shaft.radius)
        if neck_axis is not None:
            nsa = _angle_deg(neck_axis, -axis)
            neck_local = loc.direction(frame, neck_axis)
            anteversion = _wrap_deg(_angle_from_medial(neck_local))
            if condylar_line is not None:
                condylar = _wrap_deg(_angle_from_medial(neck_local)
                                     - _angle_from_medial(condylar_line))

    # 7. The anatomical frame: the frontal plane from the femur itself, so that a leg
    # rotated on the CT table gives the same frame relative to the bone (DESIGN.md 3).
    reference: FrameReference = "image_axes"
    turn = 0.0
    frame_anteversion: float | None = None
    if condylar_line is not None:
        reference, turn, frame_anteversion = ("posterior_condylar_line",
                                              _angle_from_medial(condylar_line), condylar)
    elif neck_local is not None:
        reference = "neck_axis"
        turn = _angle_from_medial(neck_local) - math.radians(assumed_anteversion_deg)
        frame_anteversion = float(assumed_anteversion_deg)
    else:
        note("neither the knee nor the femoral neck is in the surface: the frontal plane "
             "of the load frame comes from the image axes, so the result depends on how the "
             "leg lay in the scanner")
    leg_rotation = _wrap_deg(turn)
    if abs(leg_rotation) > MAX_PLAUSIBLE_LEG_ROTATION_DEG:
        note(f"the femur's frontal plane ({reference}) is turned {leg_rotation:.0f} deg from "
             "the image's: check the world convention and the landmarks")
    if turn != 0.0:
        frame = _turned_frame(frame, turn)
        loc = _Local.of(frame, pts, shaft_point)
        lesser, _ = _lesser_trochanter(loc, radius, ns_level, distal_level, shaft_radius)

    # 8. Greater trochanter.
    gt_tip, gt_lateral = _greater_trochanter(loc, radius, ns_level)

    def point(index: int | None) -> FloatArray | None:
        return None if index is None else pts[index].copy()

    return FemurLandmarks(
        head_centre_mm=centre,
        head_radius_mm=float(radius),
        head_fit_rms_mm=float(head.rms),
        shaft_axis=axis,
        shaft_point_mm=np.asarray(shaft_point),
        distal_level_mm=float(t.min()),
        proximal_level_mm=float(t.max()),
        shaft_axis_from_geometry=shaft is not None,
        frame=frame,
        head_coverage=head.coverage,
        neck_axis=neck_axis,
        neck_shaft_point_mm=neck_shaft_point,
        neck_shaft_angle_deg=nsa,
        femoral_offset_mm=offset_mm,
        anteversion_deg=anteversion,
        condylar_anteversion_deg=condylar,
        greater_trochanter_tip_mm=point(gt_tip),
        greater_trochanter_lateral_mm=point(gt_lateral),
        lesser_trochanter_mm=point(lesser),
        proximal_from_geometry=end.from_geometry,
        convention=conv_name,
        anatomical_side=anatomical_side,
        frame_reference=reference,
        frame_anteversion_deg=frame_anteversion,
        leg_rotation_deg=leg_rotation,
        warnings=tuple(notes),
    )
