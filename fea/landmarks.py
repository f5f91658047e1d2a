"""Anatomical landmarks of a femur found from its surface, and the anatomical frame.

The frame follows DESIGN.md 3: origin at the femoral head centre, z along the shaft axis
pointing proximally, y anterior, x = y cross z (towards the patient's right: lateral for a
right femur, medial for a left one). Loads are defined for a right femur and mirrored in x for
a left one by :meth:`AnatomicalFrame.to_world_direction`, so they always point the right way.

World coordinates are ITK/DICOM LPS (+x patient left, +y posterior, +z superior).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fea.errors import LandmarkError

__all__ = [
    "AnatomicalFrame",
    "FemurLandmarks",
    "find_landmarks",
    "fit_sphere",
    "fit_sphere_ransac",
    "sphere_coverage",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: LPS world directions used as hints: superior (proximal for a standing patient), anterior,
#: and the patient's left.
WORLD_SUPERIOR = np.array([0.0, 0.0, 1.0])
WORLD_ANTERIOR = np.array([0.0, -1.0, 0.0])
WORLD_LEFT = np.array([1.0, 0.0, 0.0])

#: A femoral head shows at least this fraction of its sphere (the rest joins the neck).
MIN_HEAD_COVERAGE = 0.4

#: Plausible femoral head radii in adults, mm (head diameters 38-58 mm).
HEAD_RADIUS_RANGE_MM = (15.0, 32.0)


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
    side: Literal["right", "left"]

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


@dataclass(frozen=True)
class FemurLandmarks:
    """Landmarks found on a femur surface.

    Attributes:
        head_centre_mm: (3,) world position of the femoral head centre.
        head_radius_mm: Radius of the fitted head sphere.
        head_fit_rms_mm: RMS distance of the head inlier points to the sphere.
        shaft_axis: (3,) unit vector along the shaft, pointing proximally (world).
        shaft_point_mm: (3,) a point on the shaft axis (world).
        distal_level_mm: Coordinate of the most distal surface point along ``shaft_axis``.
        proximal_level_mm: Coordinate of the most proximal surface point along ``shaft_axis``.
        shaft_axis_from_geometry: False when the bone was too short to fit a shaft and the
            world superior axis was used instead.
        frame: The anatomical frame.
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

    @property
    def length_mm(self) -> float:
        """Extent of the bone along the shaft axis, mm."""
        return self.proximal_level_mm - self.distal_level_mm

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "side": self.frame.side,
            "head_centre_mm": self.head_centre_mm.round(3).tolist(),
            "head_radius_mm": round(self.head_radius_mm, 3),
            "head_fit_rms_mm": round(self.head_fit_rms_mm, 4),
            "shaft_axis": self.shaft_axis.round(5).tolist(),
            "shaft_axis_from_geometry": self.shaft_axis_from_geometry,
            "length_along_shaft_mm": round(self.length_mm, 2),
            "frame_axes_world": self.frame.axes.round(5).tolist(),
        }


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
    # Algebraic fit: |x|^2 = 2 c.x + (r^2 - |c|^2), linear in (c, k).
    a = np.hstack([2.0 * p, np.ones((p.shape[0], 1))])
    rhs = np.einsum("ij,ij->i", p, p)
    sol, *_ = np.linalg.lstsq(a, rhs, rcond=None)
    centre = sol[:3]
    radius = float(np.sqrt(max(sol[3] + centre @ centre, 0.0)))
    # Geometric refinement: minimise sum (|p - c| - r)^2.
    for _ in range(20):
        diff = p - centre
        dist = np.linalg.norm(diff, axis=1)
        dist = np.maximum(dist, 1e-12)
        residual = dist - radius
        jac = np.hstack([-diff / dist[:, None], -np.ones((p.shape[0], 1))])
        step, *_ = np.linalg.lstsq(jac, -residual, rcond=None)
        centre = centre + step[:3]
        radius += float(step[3])
        if np.linalg.norm(step) < 1e-10:
            break
    rms = float(np.sqrt(np.mean((np.linalg.norm(p - centre, axis=1) - radius) ** 2)))
    return centre, radius, rms


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


def sphere_coverage(offsets: FloatArray, num_directions: int = 200) -> float:
    """Fraction of a sphere's surface supported by points (offsets from its centre).

    Directions of a Fibonacci lattice count as covered when a point lies within ~12 deg.
    """
    if offsets.shape[0] == 0:
        return 0.0
    k = np.arange(num_directions) + 0.5
    polar = np.arccos(1.0 - 2.0 * k / num_directions)
    azimuth = np.pi * (1.0 + 5.0**0.5) * k
    lattice = np.column_stack([np.cos(azimuth) * np.sin(polar),
                               np.sin(azimuth) * np.sin(polar), np.cos(polar)])
    unit = offsets / np.linalg.norm(offsets, axis=1)[:, None]
    best = (lattice @ unit.T).max(axis=1)
    return float(np.mean(best > np.cos(np.radians(12.0))))


def _line_fit(points: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Best-fit line (point, unit direction) through points by PCA."""
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    return centre, vt[0]


def _shaft_axis(
    surface_points: FloatArray, axis: FloatArray
) -> tuple[FloatArray, FloatArray] | None:
    """Shaft axis from centroids of surface-point slices in the diaphyseal range.

    Returns None when the bone is too short to contain a stretch of shaft.
    """
    t = surface_points @ axis
    t_min, t_max = float(t.min()), float(t.max())
    length = t_max - t_min
    if length < 110.0:
        return None
    # Which stretch is diaphysis: a whole femur has condyles at the distal end.
    lo, hi = (0.3, 0.7) if length > 300.0 else (0.06, 0.5)
    levels = np.linspace(t_min + lo * length, t_min + hi * length, 12)
    half = 0.5 * (levels[1] - levels[0])
    centroids = []
    for level in levels:
        ring = surface_points[np.abs(t - level) < half]
        if ring.shape[0] >= 12:
            centroids.append(ring.mean(axis=0))
    if len(centroids) < 4:
        return None
    point, direction = _line_fit(np.asarray(centroids))
    if direction @ axis < 0:
        direction = -direction
    return point, direction


def find_landmarks(
    surface_points: npt.ArrayLike,
    *,
    proximal_hint: npt.ArrayLike = WORLD_SUPERIOR,
    anterior_hint: npt.ArrayLike = WORLD_ANTERIOR,
    seed: int = 0,
) -> FemurLandmarks:
    """Find head centre, shaft axis, side and the anatomical frame of a femur.

    Args:
        surface_points: (n, 3) world coordinates (mm) of points on the bone surface
            (e.g. boundary nodes of the tetrahedral mesh).
        proximal_hint: World direction that points roughly proximally (superior in LPS).
        anterior_hint: World direction that points roughly anteriorly.
        seed: Seed of the robust sphere fit.

    Returns:
        The landmarks and frame.

    Raises:
        LandmarkError: when the head cannot be found.
    """
    pts = np.asarray(surface_points, dtype=np.float64)
    hint = np.asarray(proximal_hint, dtype=float)
    hint = hint / np.linalg.norm(hint)
    # Long axis by PCA, oriented by the hint; then refined on the shaft (two passes).
    _, axis = _line_fit(pts)
    if abs(axis @ hint) < 0.5:  # PCA meaningless for stubby pieces of bone
        axis = hint.copy()
    if axis @ hint < 0:
        axis = -axis
    shaft = None
    for _ in range(2):
        fitted = _shaft_axis(pts, axis)
        if fitted is None:
            break
        shaft = fitted
        axis = shaft[1]
    from_geometry = shaft is not None
    if shaft is None:
        logger.warning("bone shorter than a stretch of shaft: using the image superior axis "
                       "as the shaft axis")
        axis = hint
        shaft_point = pts.mean(axis=0)
    else:
        shaft_point = shaft[0]
    t = pts @ axis
    t_max = float(t.max())
    # The head lies within ~3 head radii of the most proximal point.
    near_top = pts[t > t_max - 75.0]
    centre, radius, rms, inliers = fit_sphere_ransac(near_top, seed=seed)
    coverage = sphere_coverage(near_top[inliers] - centre)
    if coverage < MIN_HEAD_COVERAGE:
        raise LandmarkError(
            f"no femoral head found: the best sphere (radius {radius:.1f} mm) is supported on "
            f"only {100 * coverage:.0f}% of its surface",
            hint="check that the segmentation includes the femoral head",
        )
    # Side: the head is medial to the shaft, i.e. towards the patient's midline.
    offset = centre - shaft_point
    offset -= (offset @ axis) * axis
    side: Literal["right", "left"] = "right" if offset @ WORLD_LEFT > 0 else "left"
    anterior = np.asarray(anterior_hint, dtype=float)
    y_axis = anterior - (anterior @ axis) * axis
    if np.linalg.norm(y_axis) < 1e-6:
        raise LandmarkError("anterior hint is parallel to the shaft axis",
                            hint="check the image orientation (direction cosines)")
    y_axis /= np.linalg.norm(y_axis)
    x_axis = np.cross(y_axis, axis)
    frame = AnatomicalFrame(origin=centre, axes=np.vstack([x_axis, y_axis, axis]), side=side)
    return FemurLandmarks(
        head_centre_mm=centre,
        head_radius_mm=float(radius),
        head_fit_rms_mm=float(rms),
        shaft_axis=axis,
        shaft_point_mm=np.asarray(shaft_point),
        distal_level_mm=float(t.min()),
        proximal_level_mm=t_max,
        shaft_axis_from_geometry=from_geometry,
        frame=frame,
    )
