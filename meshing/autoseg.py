"""Automatic femur segmentation from the CT alone (classical, CPU only), and its confidence.

Method (every step is numpy / scipy.ndimage, the watershed is SimpleITK's):

1. The CT is brought to a canonical axis order (array axes along world LPS +x, +y, +z) from its
   direction cosines (oblique scans, > 25 deg off the axes, are refused).
2. Bone: hysteresis threshold (voxels above ``low_hu`` 6-connected to a voxel above
   ``high_hu``), holes and marrow filled slice by slice along the three axes and in 3-D, and
   one voxel of partial-volume rim above ``rim_hu`` added.
3. Femur shafts: the bone pieces of the lowest slab of slices (the femurs leave a proximal
   femur / pelvis scan through its inferior face), at most one per side of the bone's
   midline.
4. Femoral head: for each shaft, the sphere (centre, radius 20-28 mm) whose upper cap best
   fits a low-density joint-space valley between a brighter inner shell (subchondral bone)
   and a brighter outer shell (acetabulum): ``score = min(inner, outer) - gap`` (HU means,
   FFT correlation with spherical shell kernels). The side is where the head lies relative
   to its shaft (medial: +x for a right femur in LPS).
5. Separation of femur and pelvis at the joint space: a marker-based morphological watershed
   (Beucher & Meyer 1993) on the negated CT inside the bone mask, seeded by the shafts and
   the head balls (femurs), the acetabular cap outside the head sphere, the other bone of the
   lowest slab and the bone of the top slices (pelvis / other bone).
6. Output label values and names as TotalSegmentator v2 (75 femur_left, 76 femur_right),
   a confidence per femur (joint-space contrast, head radius, surface smoothness, volume),
   and lytic lesion candidates as a separate ``lesion`` label (:data:`LESION_CANDIDATE_LABEL`)
   that is flagged automatic and never used by the strength pipeline unless asked for.

Scope: proximal femur / pelvis CT with the hip joint in the field of view and the femur
leaving the image inferiorly. When unsure (no joint space found, implausible head or volume)
:func:`segment_femurs` refuses with an :class:`~meshing.errors.InputError`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from core.atomic import atomic_path
from core.lazy import LazyModule
from core.types import BoolArray
from meshing.errors import InputError
from meshing.imaging import TOTALSEGMENTATOR_V2_LABELS
from meshing.segmentation import METAL_HU
from meshing.types import CTVolume, ImageGrid, LabelMap

if TYPE_CHECKING:
    import SimpleITK as sitk
else:  # imported on first use: a process that reads no image never loads it
    sitk = LazyModule("SimpleITK")

__all__ = [
    "FEMUR_LABELS",
    "LESION_CANDIDATE_LABEL",
    "AutoSegParams",
    "FemurConfidence",
    "FemurSegmentation",
    "LesionCandidate",
    "confidence_path",
    "dice",
    "mean_surface_distance",
    "segment_femurs",
    "segment_with_totalsegmentator",
    "write_segmentation",
]

_LOG = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

#: Side -> (label value, name) as TotalSegmentator v2 (see ``TOTALSEGMENTATOR_V2_LABELS``).
FEMUR_LABELS: dict[str, tuple[int, str]] = {
    "left": (75, TOTALSEGMENTATOR_V2_LABELS[75]),
    "right": (76, TOTALSEGMENTATOR_V2_LABELS[76]),
}
#: Label value of the automatic lytic lesion candidates: not a TotalSegmentator id and not
#: osteofe's default lesion value 2, so that no later step picks it up unless asked to.
LESION_CANDIDATE_LABEL = 200


@dataclass(frozen=True)
class AutoSegParams:
    """Thresholds of :func:`segment_femurs` (HU, mm).

    Attributes:
        low_hu: Hysteresis low threshold (trabecular bone is above it).
        high_hu: Hysteresis seed threshold (cortical / dense bone).
        rim_hu: On coarse scans, a voxel next to the bone above this (and above halfway
            between soft tissue and its brightest bone neighbour) joins it: partial volume
            at the surface, as TotalSegmentator's 3 mm labels include it (muscle ~40 HU).
        half_max_below_mm: Scans whose largest voxel spacing is at most this resolve the
            cortex: their surface is placed at half maximum (a voxel is bone when brighter
            than halfway between ``soft_tissue_hu`` and the local cortical peak within 4 mm;
            the classical full-width-at-half-maximum edge, e.g. Prevrhal et al. 1999, Phys
            Med Biol 44:751), and no rim is added.
        soft_tissue_hu: Soft tissue (muscle) HU for the half-maximum rules.
        cap_from_neck_deg: Pelvis seeds (the acetabular cap just outside the head sphere)
            lie more than this angle from the femoral neck axis. The bony acetabulum is
            about a hemisphere whose opening faces laterally and inferiorly at ~45 deg
            inclination (Murray 1993, J Bone Joint Surg Br 75:228), close to the neck axis
            assumed here (40 deg below horizontal), so 90 deg: a narrower cone (60 deg)
            seeded the superolateral head-neck junction, which the acetabulum does not
            cover (lateral centre-edge angle ~25-40 deg, Wiberg 1939), as pelvis.
        slab_mm: Thickness of the lowest slab searched for femoral shafts.
        head_radius_mm: Range of femoral head radii searched (adult heads are 40-56 mm in
            diameter).
        min_gap_contrast_hu: Refuse when the joint-space valley is shallower than this.
        volume_range_cm3: Plausible femur volume in the image.
        min_smoothness: Refuse when fewer surface voxels survive an opening/closing.
        lesion_max_hu: Lesion candidates: smoothed HU below this inside the femur ...
        lesion_min_hu: ... and above this (fatty marrow, ~-100..0 HU, is not lytic tissue).
        lesion_min_mm3: Smallest lesion candidate kept.
        lesion_contrast_hu: A candidate is at least this much darker than the femur's mean
            within ~10 mm.
        lesion_envelope_mm: Radius of the ball the femur is morphologically closed with to
            find lytic defects open through the cortex (a lesion that breaches the cortex
            leaves a notch in the bone mask; the closing bridges openings up to about twice
            this radius).
        lesion_min_inside: A candidate lies at least this fraction inside the bone mask (a
            defect of the bone, not a surface concavity such as the trochanteric fossa).
        breach_min_fraction: A candidate breaches the cortex when at least this fraction of
            its boundary faces the closed femur's outer voxel layer or beyond
            (:attr:`LesionCandidate.breach_fraction`).
        edge_hu_per_mm: Gradient magnitude of an edge voxel in the head search (HU/mm).
        head_candidates: Hough maxima judged by their joint-space contrast.
        head_margin_voxels: On coarse scans the head is the joint sphere grown by this many
            voxels.
        radius_step_mm: Step of the head radii searched.
        min_hough: Head centres need at least this fraction of the best Hough support.
        head_above_shaft_mm: The head centre is searched up to this far above the lowest
            slab (a proximal femur scan holds at most ~250 mm of femur below the head).
        refine_head: Refine the head sphere by a least-squares fit to its edge voxels.
        close_surface: On coarse scans, close one-voxel clefts of the femur (6-neighbourhood).
        work_spacing_mm: Scans finer than this are segmented on a working grid of block
            means (exact partial-volume averaging, an integer number of voxels per axis:
            ``floor(work_spacing_mm / spacing)``, so the working voxels are at most this
            size) and the labels are mapped back voxel for voxel (TotalSegmentator --fast
            works at 3 mm). 1.5 mm: scans of 0.75 mm and coarser run on their own grid; at
            2 mm the 2 mm joint space of the 1 mm benchmark phantom is lost (Dice 0.92).
            0: always the native grid.
        metal_hu: Voxels above this are metal (``meshing.segmentation.METAL_HU``); a femur
            holding more than 0.1% of them is not accepted.
    """

    low_hu: float = 120.0
    high_hu: float = 300.0
    rim_hu: float = 100.0
    slab_mm: float = 6.0
    head_radius_mm: tuple[float, float] = (20.0, 28.0)
    min_gap_contrast_hu: float = 15.0
    volume_range_cm3: tuple[float, float] = (40.0, 1500.0)
    min_smoothness: float = 0.6
    lesion_max_hu: float = 100.0
    lesion_min_hu: float = 0.0
    lesion_min_mm3: float = 500.0
    lesion_contrast_hu: float = 120.0
    lesion_envelope_mm: float = 12.0
    lesion_min_inside: float = 0.3
    breach_min_fraction: float = 0.05
    metal_hu: float = METAL_HU
    close_surface: bool = True
    refine_head: bool = True
    head_margin_voxels: float = 0.5
    radius_step_mm: float = 1.0
    head_above_shaft_mm: float = 250.0
    min_hough: float = 0.1
    edge_hu_per_mm: float = 60.0
    head_candidates: int = 10
    half_max_below_mm: float = 2.0
    soft_tissue_hu: float = 40.0
    cap_from_neck_deg: float = 90.0
    work_spacing_mm: float = 1.5


@dataclass(frozen=True)
class FemurConfidence:
    """How much to trust one automatic femur.

    Attributes:
        side: "left" or "right".
        label: Label value written (75 or 76).
        head_centre_mm: (3,) float64 world (LPS, mm) centre of the fitted head sphere.
        head_radius_mm: Radius of the joint-space sphere, mm.
        gap_contrast_hu: ``min(inner, outer) - gap`` of the head sphere, HU (0: no joint
            space seen).
        joint_space_found: ``gap_contrast_hu >= min_gap_contrast_hu``.
        acetabulum_in_image: Bone covers at least 10% of the cap just outside the head
            sphere (without it, e.g. a femur scanned alone, no joint space is needed).
        smoothness: Fraction of the femur's surface voxels unchanged by a one-voxel
            opening and closing (1 = smooth).
        volume_cm3: Femur volume.
        volume_plausible: Volume inside ``volume_range_cm3``.
        accepted: All checks passed.
        reasons: Why it was not accepted (empty when accepted).
    """

    side: str
    label: int
    head_centre_mm: npt.NDArray[np.float64]
    head_radius_mm: float
    gap_contrast_hu: float
    joint_space_found: bool
    acetabulum_in_image: bool
    smoothness: float
    volume_cm3: float
    volume_plausible: bool
    accepted: bool
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {"side": self.side, "label": self.label,
                "head_centre_mm": [round(float(x), 2) for x in self.head_centre_mm],
                "head_radius_mm": self.head_radius_mm,
                "gap_contrast_hu": round(self.gap_contrast_hu, 1),
                "joint_space_found": self.joint_space_found,
                "acetabulum_in_image": self.acetabulum_in_image,
                "smoothness": round(self.smoothness, 3), "volume_cm3": round(self.volume_cm3, 1),
                "volume_plausible": self.volume_plausible, "accepted": self.accepted,
                "reasons": list(self.reasons)}


@dataclass(frozen=True)
class LesionCandidate:
    """One automatic lytic lesion candidate.

    Attributes:
        side: Femur it lies in ("left" / "right").
        volume_mm3: Volume (voxels inside the closed femur), mm^3.
        centroid_mm: (3,) float64 world (LPS) centroid, mm.
        inside_fraction: Share of its voxels inside the femur's bone mask (the rest fill a
            notch of the bone surface: bone replaced by tumour through the cortex).
        breach_fraction: Share of its boundary faces that face the outermost voxel layer
            of the femur closed with a ball of ``lesion_envelope_mm``, or beyond
            (extra-osseous tissue): 0 for a lesion inside the marrow under at least one
            voxel of cortex, the relative size of its cortical opening for one that
            breaches the cortex (or thins it below one voxel).
        breaches_cortex: ``breach_fraction >= breach_min_fraction``.
    """

    side: str
    volume_mm3: float
    centroid_mm: npt.NDArray[np.float64]
    inside_fraction: float
    breach_fraction: float
    breaches_cortex: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {"side": self.side, "volume_mm3": round(self.volume_mm3, 1),
                "centroid_mm": [round(float(x), 2) for x in self.centroid_mm],
                "inside_fraction": round(self.inside_fraction, 3),
                "breach_fraction": round(self.breach_fraction, 3),
                "breaches_cortex": self.breaches_cortex}


@dataclass(frozen=True)
class FemurSegmentation:
    """Result of :func:`segment_femurs`.

    Attributes:
        labels: Label map on the CT grid: 75 femur_left, 76 femur_right (accepted femurs
            only), :data:`LESION_CANDIDATE_LABEL` ``lesion`` (automatic candidates).
        femurs: Confidence of every femur found, accepted or not.
        lesion_voxels: Number of lesion-candidate voxels.
        method: "classical" or "totalsegmentator".
        wall_s: Seconds spent.
        lesions: The lesion candidates, each with its cortical-breach measure.
        refused: Only with ``segment_femurs(..., keep_refused=True)``: the femurs that were
            found but not accepted, under their femur labels on the CT grid (for
            diagnostics and benchmarks; nothing downstream reads it), else None.
    """

    labels: LabelMap
    femurs: tuple[FemurConfidence, ...]
    lesion_voxels: int
    method: str
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    lesions: tuple[LesionCandidate, ...] = ()
    refused: LabelMap | None = None

    def confidence(self) -> dict[str, Any]:
        """The confidence report (JSON-ready)."""
        return {"source": "automatic", "method": self.method,
                "femurs": [f.to_dict() for f in self.femurs],
                "lesion_candidates": {"label": LESION_CANDIDATE_LABEL, "name": "lesion",
                                      "voxels": self.lesion_voxels, "automatic": True,
                                      "used_for_mirels": False,
                                      "candidates": [c.to_dict() for c in self.lesions]},
                "wall_s": round(self.wall_s, 2), **self.extra}


# --------------------------------------------------------------------------------------------
# orientation
# --------------------------------------------------------------------------------------------


def _canonical(ct: CTVolume) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Axis permutation and flips that take the array to world +x, +y, +z order."""
    direction = np.asarray(ct.grid.direction, dtype=np.float64).reshape(3, 3)
    perm = [int(np.argmax(np.abs(direction[w]))) for w in range(3)]
    if sorted(perm) != [0, 1, 2] or min(abs(direction[w, perm[w]]) for w in range(3)) < 0.9:
        raise InputError(
            "the CT is oblique (image axes more than 25 deg off the patient axes); automatic "
            "femur segmentation needs an axial scan",
            hint="resample the CT onto an axis-aligned grid, or pass --labels")
    flips = tuple(bool(direction[w, perm[w]] < 0) for w in range(3))
    return (perm[0], perm[1], perm[2]), (flips[0], flips[1], flips[2])


def _to_canonical(a: npt.NDArray[Any], perm: tuple[int, int, int],
                  flips: tuple[bool, bool, bool]) -> npt.NDArray[Any]:
    out = np.transpose(a, perm)
    for axis, f in enumerate(flips):
        if f:
            out = np.flip(out, axis)
    return np.ascontiguousarray(out)


def _from_canonical(a: npt.NDArray[Any], perm: tuple[int, int, int],
                    flips: tuple[bool, bool, bool]) -> npt.NDArray[Any]:
    out = a
    for axis, f in enumerate(flips):
        if f:
            out = np.flip(out, axis)
    return np.ascontiguousarray(np.transpose(out, np.argsort(perm)))


# --------------------------------------------------------------------------------------------
# the classical method
# --------------------------------------------------------------------------------------------

_FACE = ndimage.generate_binary_structure(3, 1)


def _hysteresis(hu: F32, low: float, high: float) -> BoolArray:
    pieces, _ = ndimage.label(hu > low, structure=_FACE)
    keep = np.unique(pieces[hu > high])
    return np.asarray(np.isin(pieces, keep[keep > 0]))


def _fill(mask: BoolArray) -> BoolArray:
    """Fill holes slice by slice along each axis (open marrow canals), then in 3-D.

    Works on the mask's bounding box grown by one voxel (holes lie inside it).
    """
    found = np.argwhere(mask)
    if found.size == 0:
        return mask.copy()
    lo = np.maximum(found.min(axis=0) - 1, 0)
    hi = np.minimum(found.max(axis=0) + 2, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = mask[box].copy()
    for axis in (2, 1, 0):
        moved = np.moveaxis(sub, axis, 0)
        for n in range(moved.shape[0]):
            if moved[n].any():
                moved[n] = ndimage.binary_fill_holes(moved[n])
    out = mask.copy()
    out[box] = ndimage.binary_fill_holes(sub)
    return out


def _shell_kernels(radius: float, spacing: npt.NDArray[np.float64], thick: float
                   ) -> tuple[F32, F32, F32]:
    """Normalised inner / gap / outer kernels of the upper cap of a sphere (mm)."""
    n = np.ceil((radius + 2.0 * thick) / spacing).astype(int)
    g = np.meshgrid(*[np.arange(-m, m + 1) * s for m, s in zip(n, spacing, strict=True)],
                    indexing="ij")
    d = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2)
    up = g[2] > 0.2 * d
    half = 0.5 * thick
    kernels = []
    for lo, hi in ((radius - 3 * half, radius - half), (radius - half, radius + half),
                   (radius + half, radius + 3 * half)):
        k = ((d > lo) & (d <= hi) & up).astype(np.float32)
        kernels.append((k / max(k.sum(), 1.0))[::-1, ::-1, ::-1].copy())
    return kernels[0], kernels[1], kernels[2]


def _find_head(x: F32, spacing: npt.NDArray[np.float64], shaft: npt.NDArray[np.float64],
               direction: int | None, params: AutoSegParams
               ) -> tuple[float, npt.NDArray[np.float64], float]:
    """Femoral head above a shaft: (joint-space contrast HU, centre index, radius mm).

    Two cues are added, each scaled by its maximum over the search box (centres 10 mm or more
    above the shaft's lowest slab, up to ``head_above_shaft_mm``; up to 90 mm to its medial
    side; within 60 mm front to back), for every radius of ``head_radius_mm`` (1 mm steps);
    centres with less than ``min_hough`` of the best Hough support are not considered:

    * a gradient Hough transform for spheres: every edge voxel votes, towards the brighter
      side, at the radius; votes are smoothed and divided by ``r^2`` (the sphere's area);
    * the joint-space valley of the upper cap: ``min(inner, outer) - gap``, the mean HU of
      an inner (subchondral), a gap and an outer (acetabular) spherical shell, one voxel (at
      least 2 mm) thick each, by FFT correlation.

    The valley contrast of the chosen sphere is returned as the joint-space evidence.
    Computed on the search box grown by the largest radius plus two shells.
    """
    n = np.asarray(x.shape)
    hi_r = params.head_radius_mm[1]
    reach = (hi_r + 3.0 * max(float(spacing.max()), 2.0) + 2.0) / spacing
    span_lat = np.array([-90.0, 90.0]) if direction is None else np.sort([0.0, 90.0 * direction])
    low = np.array([shaft[0] + span_lat[0] / spacing[0], shaft[1] - 60.0 / spacing[1],
                    shaft[2] + 10.0 / spacing[2]]) - reach
    high = np.array([shaft[0] + span_lat[1] / spacing[0], shaft[1] + 60.0 / spacing[1],
                     shaft[2] + params.head_above_shaft_mm / spacing[2]]) + reach
    low = np.clip(np.floor(low), 0, n - 1).astype(int)
    high = np.clip(np.ceil(high), 0, n - 1).astype(int)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(low, high, strict=True))
    crop = np.ascontiguousarray(x[box])
    # search on a grid of at least 2 mm (block means), refine on the full grid
    factor = np.maximum(np.floor(2.0 / spacing + 1e-9), 1).astype(int)
    coarse = _block_mean(crop, factor)
    contrast, centre_c, radius = _find_head_in(coarse, spacing * factor,
                                               (shaft - low) / factor, direction, params)
    centre = centre_c * factor + 0.5 * (factor - 1)
    if np.any(factor > 1):
        # the same search on the full grid, within 6 mm of the coarse centre
        m = np.ceil((6.0 + reach * spacing) / spacing).astype(int)
        c0 = np.rint(centre).astype(int)
        lo2 = np.maximum(c0 - m, 0)
        hi2 = np.minimum(c0 + m, np.asarray(crop.shape) - 1)
        sub = np.ascontiguousarray(crop[tuple(slice(int(a), int(b) + 1)
                                              for a, b in zip(lo2, hi2, strict=True))])
        contrast, centre, radius = _find_head_in(sub, spacing, shaft - low - lo2, direction,
                                                 params)
        centre = centre + lo2
    if params.refine_head:
        edges, unit, _weight = _edges(crop, spacing, params.edge_hu_per_mm)
        centre, _edge_radius = _refine_sphere(edges, unit, spacing, centre, radius)
    return contrast, centre + low, radius


def _block_mean(x: F32, factor: npt.NDArray[np.int64]) -> F32:
    """Mean over ``factor``-sized blocks (the trailing partial blocks are dropped)."""
    if np.all(factor == 1):
        return x
    f0, f1, f2 = (int(f) for f in factor)
    n0, n1, n2 = (int(m) // int(f) for m, f in zip(x.shape, factor, strict=True))
    trimmed = x[: n0 * f0, : n1 * f1, : n2 * f2]
    return np.ascontiguousarray(
        trimmed.reshape(n0, f0, n1, f1, n2, f2).mean(axis=(1, 3, 5)), dtype=np.float32)


def _edges(x: F32, spacing: npt.NDArray[np.float64], threshold: float
           ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Edge voxels (gradient above ``threshold`` HU/mm): indices, unit gradients, weights."""
    grads = np.gradient(x, *spacing)
    magnitude = np.sqrt(grads[0] ** 2 + grads[1] ** 2 + grads[2] ** 2)
    edges = np.argwhere(magnitude > threshold)
    g = np.stack([grads[a][tuple(edges.T)] for a in range(3)], axis=1)
    weight = np.minimum(magnitude[tuple(edges.T)], 4.0 * threshold)
    unit = g / np.linalg.norm(g, axis=1, keepdims=True)
    return edges, unit, weight


class _Convolver:
    """``fftconvolve(x, k, mode="same")`` for many kernels, with ``x``'s transform reused.

    Args:
        x: The image.
        largest: Shape of the largest kernel to come (the padding avoids wrap-around for it
            and every smaller one).
    """

    def __init__(self, x: F32, largest: tuple[int, ...]) -> None:
        from scipy import fft

        self._fft = fft
        self.n = np.asarray(x.shape)
        self.shape = [int(fft.next_fast_len(int(a + b - 1), real=True))
                      for a, b in zip(x.shape, largest, strict=True)]
        self.spectrum = fft.rfftn(x, self.shape)

    def same(self, kernels: tuple[F32, ...]) -> list[F32]:
        """The "same"-size convolution of the image with each kernel."""
        out = []
        for k in kernels:
            full = self._fft.irfftn(self.spectrum * self._fft.rfftn(k, self.shape), self.shape)
            start = (np.asarray(k.shape) - 1) // 2
            out.append(np.asarray(full[tuple(slice(int(a), int(a + m))
                                             for a, m in zip(start, self.n, strict=True))],
                                  dtype=np.float32))
        return out


def _find_head_in(x: F32, spacing: npt.NDArray[np.float64], shaft: npt.NDArray[np.float64],
                  direction: int | None, params: AutoSegParams
                  ) -> tuple[float, npt.NDArray[np.float64], float]:
    """:func:`_find_head` on a cropped image (``shaft`` in the crop's indices)."""
    edges, unit, weight = _edges(x, spacing, params.edge_hu_per_mm)
    shape = np.asarray(x.shape)
    lo_r, hi_r = params.head_radius_mm
    radii = np.arange(lo_r, hi_r + 0.25, params.radius_step_mm)
    idx = [np.arange(m, dtype=np.float64) for m in x.shape]
    dx = (idx[0] - shaft[0])[:, None, None] * spacing[0]
    dy = (idx[1] - shaft[1])[None, :, None] * spacing[1]
    dz = (idx[2] - shaft[2])[None, None, :] * spacing[2]
    lat = dx if direction is None else dx * direction
    box = ((np.abs(lat) >= 10.0) if direction is None else (lat >= 0.0)) & (
        np.abs(lat) <= 90.0) & (dz >= 10.0) & (dz <= params.head_above_shaft_mm) & (
        np.abs(dy) <= 60.0)
    thick = float(max(spacing.max(), 2.0))
    correlate = _Convolver(x, _shell_kernels(float(radii[-1]), spacing, thick)[0].shape)
    hough, valley = [], []
    for radius in radii:
        target = np.rint(edges + radius * unit / spacing).astype(np.int64)
        ok = np.all((target >= 0) & (target < shape), axis=1)
        flat = np.ravel_multi_index(tuple(target[ok].T), x.shape)
        votes = np.bincount(flat, weights=weight[ok], minlength=x.size).reshape(x.shape)
        hough.append(np.where(box, ndimage.gaussian_filter(votes, 1.0) / radius**2, 0.0))
        inner, gap, outer = correlate.same(_shell_kernels(float(radius), spacing, thick))
        score = np.minimum(inner, outer) - gap
        valley.append(np.where(box, score, -np.inf))
    h_all = np.stack(hough)
    v_all = np.stack(valley)
    h_norm = h_all / max(float(h_all.max()), 1e-9)
    combined = np.where(h_norm >= params.min_hough, h_norm + np.maximum(v_all, 0.0) / max(
        float(v_all.max()), 1e-9), -np.inf)
    at = np.unravel_index(int(np.argmax(combined)), combined.shape)
    centre = np.array(at[1:], dtype=np.int64)
    radius = float(radii[at[0]])
    return float(v_all[at]), centre.astype(np.float64), radius


def _refine_sphere(edges: npt.NDArray[np.int64], unit: npt.NDArray[np.float64],
                   spacing: npt.NDArray[np.float64], centre: npt.NDArray[np.float64],
                   radius: float) -> tuple[npt.NDArray[np.float64], float]:
    """Least-squares sphere through the edge voxels of a found head (index space centre).

    Edge voxels within 4 mm of the sphere whose gradient points inwards along the radius
    (to the bright head; cos < -0.7) are fitted by the algebraic sphere fit
    ``|p|^2 = 2 c.p + (r^2 - |c|^2)`` (linear least squares); the fit is kept when it moves
    the centre by less than 6 mm and the radius stays within 6 mm. Only the head's own
    surface is fitted: the acetabulum's edges (gradient outwards) cover the head medially
    and superiorly only, and its fossa lies several mm off the head, so including them
    pulls the centre medially (3.6 mm on the example CT against TotalSegmentator's head).
    """
    pts = edges * spacing
    c0 = centre * spacing
    rel = pts - c0
    dist = np.linalg.norm(rel, axis=1)
    ok = (np.abs(dist - radius) <= 4.0) & (dist > 0)
    cos = np.einsum("ij,ij->i", unit, rel / np.maximum(dist, 1e-9)[:, None])
    ok &= cos < -0.7
    if np.count_nonzero(ok) < 20:
        return centre, radius
    p = pts[ok]
    a = np.column_stack([2.0 * p, np.ones(len(p))])
    b = np.einsum("ij,ij->i", p, p)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    c = sol[:3]
    r = float(np.sqrt(max(sol[3] + c @ c, 0.0)))
    if np.linalg.norm(c - c0) > 6.0 or abs(r - radius) > 6.0:
        return centre, radius
    return c / spacing, r


def _watershed(cost: F32, markers: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    image = sitk.GetImageFromArray(np.ascontiguousarray(cost.transpose(2, 1, 0)))
    seeds = sitk.GetImageFromArray(np.ascontiguousarray(markers.transpose(2, 1, 0)))
    out = sitk.MorphologicalWatershedFromMarkers(image, seeds, markWatershedLine=False,
                                                 fullyConnected=False)
    return np.asarray(sitk.GetArrayFromImage(out)).transpose(2, 1, 0).astype(np.uint8)


def _smoothness(mask: BoolArray) -> float:
    surface = mask & ~ndimage.binary_erosion(mask, _FACE)
    if not surface.any():
        return 0.0
    smooth = ndimage.binary_closing(ndimage.binary_opening(mask, _FACE), _FACE)
    changed = np.count_nonzero((smooth ^ mask) & ndimage.binary_dilation(surface, _FACE))
    return float(max(0.0, 1.0 - changed / np.count_nonzero(surface)))


def segment_femurs(ct: CTVolume, params: AutoSegParams = AutoSegParams(), *,
                   refuse: bool = True, keep_refused: bool = False) -> FemurSegmentation:
    """Segment the femurs of a pelvis / proximal femur CT (classical, CPU only).

    Args:
        ct: The CT in HU.
        params: Thresholds.
        refuse: True: raise when no femur passes its confidence checks; False: return the
            report with no femur label (for diagnostics and benchmarks).
        keep_refused: Also return the femurs that failed their checks, as
            :attr:`FemurSegmentation.refused` (to measure how far off an unsure femur is).

    Returns:
        Labels (75 femur_left / 76 femur_right as TotalSegmentator, 200 lesion candidates)
        on the CT grid, with the confidence of every femur found.

    Raises:
        InputError: The CT is oblique; no bone or no femoral shaft at the inferior face;
            (``refuse``) no femur passed the joint-space, volume and smoothness checks.
    """
    import time

    start = time.perf_counter()
    factor = _work_factor(ct.grid, params.work_spacing_mm)
    if np.any(factor > 1):
        work = _segment(_block_mean_ct(ct, factor), params, refuse=refuse, start=start,
                        keep_refused=keep_refused)
        labels = _block_repeat(work.labels.labels, factor, ct.grid.shape)
        refused = None if work.refused is None else LabelMap(
            grid=ct.grid, labels=_block_repeat(work.refused.labels, factor, ct.grid.shape),
            names=work.refused.names)
        return FemurSegmentation(
            labels=LabelMap(grid=ct.grid, labels=labels, names=work.labels.names),
            femurs=work.femurs,
            lesion_voxels=int(np.count_nonzero(labels == LESION_CANDIDATE_LABEL)),
            method=work.method, wall_s=time.perf_counter() - start,
            extra=work.extra | {"working_grid": {
                "voxels_per_block": factor.tolist(),
                "spacing_mm": [round(float(v), 3) for v in work.labels.grid.spacing],
                "shape": list(work.labels.grid.shape)}},
            lesions=work.lesions, refused=refused)
    return _segment(ct, params, refuse=refuse, start=start, keep_refused=keep_refused)


def _work_factor(grid: ImageGrid, work_spacing_mm: float) -> npt.NDArray[np.int64]:
    """Voxels per working block along each image axis (1 = native)."""
    spacing = np.asarray(grid.spacing, dtype=np.float64)
    if work_spacing_mm <= 0.0:
        return np.ones(3, dtype=np.int64)
    return np.maximum(np.floor(work_spacing_mm / spacing + 1e-9), 1).astype(np.int64)


def _block_mean_ct(ct: CTVolume, factor: npt.NDArray[np.int64]) -> CTVolume:
    """The CT averaged over blocks of ``factor`` voxels (edge blocks padded by replication)."""
    hu = np.asarray(ct.hu, dtype=np.float32)
    n = np.asarray(hu.shape)
    blocks = (n + factor - 1) // factor
    padded = np.pad(hu, [(0, int(b * f - m)) for b, f, m in zip(blocks, factor, n,
                                                                  strict=True)], mode="edge")
    mean = _block_mean(padded, factor)  # whole blocks only, after the padding
    b0, b1, b2 = (int(b) for b in blocks)
    spacing = np.asarray(ct.grid.spacing) * factor
    direction = np.asarray(ct.grid.direction, dtype=np.float64).reshape(3, 3)
    origin = np.asarray(ct.grid.origin) + direction @ (0.5 * (factor - 1)
                                                       * np.asarray(ct.grid.spacing))
    grid = ImageGrid(shape=(b0, b1, b2), spacing=spacing, origin=origin, direction=direction)
    return CTVolume(grid=grid, hu=mean)


def _block_repeat(labels: npt.NDArray[Any], factor: npt.NDArray[np.int64],
                  shape: tuple[int, int, int]) -> npt.NDArray[np.int32]:
    """Working-grid labels back on the native grid: each block's value on its voxels."""
    out = np.asarray(labels, dtype=np.int32)
    for axis, f in enumerate(factor):
        out = np.repeat(out, int(f), axis=axis)
    return np.ascontiguousarray(out[: shape[0], : shape[1], : shape[2]])


def _segment(ct: CTVolume, params: AutoSegParams, *, refuse: bool, start: float,
             keep_refused: bool = False) -> FemurSegmentation:
    """:func:`segment_femurs` on the grid it is given."""
    import time

    perm, flips = _canonical(ct)
    hu = _to_canonical(np.asarray(ct.hu, dtype=np.float32), perm, flips)
    spacing = np.asarray(ct.grid.spacing, dtype=np.float64)[list(perm)]
    voxel_mm3 = float(np.prod(spacing))
    bone = _hysteresis(hu, params.low_hu, params.high_hu)
    if not bone.any():
        raise InputError(f"no voxel above {params.high_hu:.0f} HU: the image shows no bone",
                         hint="check that the CT is in HU (rescaled), or pass --labels")
    half_max = float(spacing.max()) <= params.half_max_below_mm
    core = _fill(bone)
    if half_max:
        # full width at half maximum: the outer one or two voxel layers keep only voxels
        # brighter than halfway between soft tissue and the local cortical peak (the
        # interior, filled above, is kept whatever its density)
        size = tuple(int(v) for v in np.maximum(2 * np.rint(4.0 / spacing / 2) + 1, 3))
        peak = ndimage.maximum_filter(np.minimum(hu, 1500.0), size=size)
        dim = hu < 0.5 * (peak + params.soft_tissue_hu)
        for _layer in range(2):
            outer = core & ~ndimage.binary_erosion(core, _FACE)
            drop = outer & dim
            if not drop.any():
                break
            core &= ~drop
        mask = core
    else:
        # coarse voxels: one voxel of partial-volume rim brighter than halfway between soft
        # tissue and its brightest bone neighbour
        rim = ndimage.binary_dilation(core, _FACE) & (hu > params.rim_hu)
        brightest = ndimage.maximum_filter(np.where(core, hu, -1000.0), footprint=_FACE)
        rim &= hu > 0.5 * (np.minimum(brightest, 1500.0) + params.soft_tissue_hu)
        mask = _fill(core | rim)

    slab = max(1, round(params.slab_mm / spacing[2]))
    pieces, count = ndimage.label(mask[:, :, :slab], structure=_FACE)
    if count == 0:
        raise InputError(
            "no bone crosses the inferior face of the CT: automatic segmentation expects a "
            "pelvis / proximal femur scan whose field of view ends in the femoral shafts",
            hint="pass --labels (e.g. from TotalSegmentator)")
    sizes = np.asarray(ndimage.sum_labels(np.ones_like(pieces), pieces, range(1, count + 1)))
    centres = np.asarray(ndimage.center_of_mass(np.ones_like(pieces), pieces,
                                                range(1, count + 1)), dtype=np.float64)
    big = [n for n in np.argsort(-sizes) if sizes[n] >= 0.4 * sizes.max()
           and sizes[n] * voxel_mm3 >= 150.0 * spacing[2] * slab]
    midline = float(np.argwhere(mask)[:, 0].mean())
    shafts: list[int] = []
    for half in (-1, 1):
        side_pieces = [n for n in big if (centres[n][0] - midline) * half > 0]
        if side_pieces:
            shafts.append(side_pieces[0])
    if not shafts:
        raise InputError("no femoral shaft found at the inferior face of the CT",
                         hint="pass --labels (e.g. from TotalSegmentator)")

    smoothed = np.clip(ndimage.gaussian_filter(hu, 0.5), -200.0, 1200.0).astype(np.float32)
    heads = []
    for n in shafts:
        direction = None
        if len(shafts) == 2:  # each head lies towards the other femur
            other = shafts[1] if n == shafts[0] else shafts[0]
            direction = 1 if centres[other][0] > centres[n][0] else -1
        contrast, centre, radius = _find_head(smoothed, spacing, centres[n], direction, params)
        # LPS: +x patient left; the head is medial of the shaft, so a head at larger x
        # than its shaft belongs to a right femur
        side = "right" if centre[0] > centres[n][0] else "left"
        heads.append((n, side, contrast, centre, radius))
    if len({h[1] for h in heads}) < len(heads):
        raise InputError("both femoral shafts were read as the same side",
                         hint="pass --labels (automatic segmentation is unsure)")

    markers = np.zeros(hu.shape, dtype=np.uint8)
    markers[~mask] = 4
    slab_view = markers[:, :, :slab]
    slab_view[pieces > 0] = 3
    grid_idx = np.indices(hu.shape, dtype=np.float32)
    top = max(1, slab)
    markers[:, :, -top:][mask[:, :, -top:]] = 3
    code = {"left": 1, "right": 2}
    acetabulum: dict[str, bool] = {}
    for n, side, _contrast, centre, radius in heads:
        slab_view[pieces == n + 1] = code[side]
        rel = [(grid_idx[a] - np.float32(centre[a])) * np.float32(spacing[a]) for a in range(3)]
        d = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2) + np.float32(1e-6)
        medial = 1.0 if side == "right" else -1.0  # LPS: a right femur's medial is +x
        neck = np.array([-medial * math.cos(math.radians(40.0)), 0.0,
                         -math.sin(math.radians(40.0))])
        cos_neck = (np.float32(neck[0]) * rel[0] + np.float32(neck[2]) * rel[2]) / d
        thick = float(max(spacing.max(), 2.0))
        markers[(d <= radius - 1.5 * thick) & mask] = code[side]
        shell = ((d > radius + 0.5 * thick) & (d <= radius + 2.5 * thick)
                 & (cos_neck < math.cos(math.radians(params.cap_from_neck_deg)))
                 & (rel[2] / d > -0.3))
        cap = shell & mask
        markers[cap] = 3
        # an acetabulum covers a good part of the cap; a femur scanned alone has none
        acetabulum[side] = bool(np.count_nonzero(cap) >= 0.1 * np.count_nonzero(shell))
    cost = np.where(mask, -hu, np.float32(-hu.min() + 1.0)).astype(np.float32)
    basins = _watershed(cost, markers)

    out = np.zeros(hu.shape, dtype=np.int32)
    rejected = np.zeros(hu.shape, dtype=np.int32) if keep_refused else None
    confidences = []
    lesion = np.zeros(hu.shape, dtype=bool)
    lesions: list[tuple[str, dict[str, Any]]] = []
    for _n, side, contrast, centre, radius in heads:
        femur = basins == code[side]
        if not half_max:
            # coarse voxels do not resolve the joint space: the head is the ball inside the
            # fitted joint sphere grown by half a voxel (its dim subchondral rim and cartilage
            # are femur even where the bone threshold missed them or the watershed gave them
            # to the acetabulum), as TotalSegmentator's 3 mm labels draw it
            rel = [(grid_idx[a] - np.float32(centre[a])) * np.float32(spacing[a])
                   for a in range(3)]
            reach = radius + params.head_margin_voxels * float(spacing.max())
            ball = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2) <= reach
            femur |= ball & (basins != code["left" if side == "right" else "right"])
        pieces_f, nf = ndimage.label(femur, structure=_FACE)
        if nf > 1:
            sizes_f = ndimage.sum_labels(np.ones_like(pieces_f), pieces_f, range(1, nf + 1))
            femur = pieces_f == int(np.argmax(sizes_f)) + 1
        if params.close_surface and not half_max:
            # one-voxel clefts at coarse voxels (a dim cortex between two bright ones) would
            # mesh into a notch that concentrates strain: close them, within the bone's
            # neighbourhood and away from the other basins
            closed = ndimage.binary_closing(femur, _FACE)
            femur |= closed & ~np.isin(basins, (3, code["left" if side == "right" else "right"]))
        femur = _fill(femur)
        volume = float(np.count_nonzero(femur)) * voxel_mm3 / 1000.0
        smooth = _smoothness(femur)
        reasons = []
        found = bool(contrast >= params.min_gap_contrast_hu)
        if not found and acetabulum[side]:
            reasons.append(f"no joint space found (valley contrast {contrast:.0f} HU < "
                           f"{params.min_gap_contrast_hu:.0f} HU)")
        plausible = params.volume_range_cm3[0] <= volume <= params.volume_range_cm3[1]
        if not plausible:
            reasons.append(f"volume {volume:.0f} cm^3 outside {params.volume_range_cm3} cm^3")
        metal = int(np.count_nonzero(femur & (hu > params.metal_hu)))
        if metal > 0.001 * np.count_nonzero(femur):
            reasons.append(f"metal implant ({metal} voxels above {params.metal_hu:.0f} HU): "
                           "streak artefacts make the boundary unreliable")
        if smooth < params.min_smoothness:
            reasons.append(f"rough surface (smoothness {smooth:.2f} < "
                           f"{params.min_smoothness:.2f})")
        label, _name = FEMUR_LABELS[side]
        centre_ijk = np.zeros(3)
        centre_ijk[list(perm)] = [
            (ct.grid.shape[perm[a]] - 1 - centre[a]) if flips[a] else centre[a]
            for a in range(3)]
        confidences.append(FemurConfidence(
            side=side, label=label,
            head_centre_mm=np.asarray(ct.grid.index_to_world(centre_ijk), dtype=np.float64),
            head_radius_mm=radius, gap_contrast_hu=contrast, joint_space_found=found,
            acetabulum_in_image=acetabulum[side],
            smoothness=smooth, volume_cm3=volume, volume_plausible=plausible,
            accepted=not reasons, reasons=tuple(reasons)))
        if not reasons:
            out[femur] = label
            found_lesion, records = _lesion_candidates(hu, femur, spacing, params)
            # a candidate that breaches the cortex fills its notch of the bone surface: it
            # is part of the femur's label map (as lesion), as a reader would draw it
            out[found_lesion & (out == 0)] = label
            lesion |= found_lesion
            lesions.extend((side, r) for r in records)
        elif rejected is not None:
            rejected[femur] = label
    out[lesion & (out > 0)] = LESION_CANDIDATE_LABEL
    accepted = [c for c in confidences if c.accepted]
    if refuse and not accepted:
        why = "; ".join(f"{c.side}: {', '.join(c.reasons)}" for c in confidences)
        raise InputError(f"automatic femur segmentation is unsure ({why})",
                         hint="pass --labels (TotalSegmentator or a manual segmentation), or "
                         "try --segmenter totalsegmentator")
    names = dict(FEMUR_LABELS[c.side] for c in accepted)
    if lesion.any():
        names[LESION_CANDIDATE_LABEL] = "lesion"
    labels = LabelMap(grid=ct.grid, labels=_from_canonical(out, perm, flips), names=names)
    candidates = []
    for side, r in lesions:
        centroid = np.zeros(3)
        centroid[list(perm)] = [(ct.grid.shape[perm[a]] - 1 - r["centroid"][a]) if flips[a]
                                else r["centroid"][a] for a in range(3)]
        candidates.append(LesionCandidate(
            side=side, volume_mm3=r["volume_mm3"],
            centroid_mm=np.asarray(ct.grid.index_to_world(centroid), dtype=np.float64),
            inside_fraction=r["inside_fraction"], breach_fraction=r["breach_fraction"],
            breaches_cortex=r["breach_fraction"] >= params.breach_min_fraction))
    refused = None if rejected is None else LabelMap(
        grid=ct.grid, labels=_from_canonical(rejected, perm, flips),
        names=dict(FEMUR_LABELS[c.side] for c in confidences if not c.accepted))
    return FemurSegmentation(labels=labels, femurs=tuple(confidences),
                             lesion_voxels=int(np.count_nonzero(out == LESION_CANDIDATE_LABEL)),
                             method="classical", wall_s=time.perf_counter() - start,
                             lesions=tuple(candidates), refused=refused)


def _closed(mask: BoolArray, spacing: npt.NDArray[np.float64], radius: float) -> BoolArray:
    """Morphological closing with a ball of ``radius`` mm, the mask itself always kept.

    Exact Euclidean (distance transforms: a dilation, then an erosion), on the mask's
    bounding box padded with background so that the image border acts as outside.
    """
    found = np.argwhere(mask)
    out = mask.copy()
    if found.size == 0:
        return out
    pad = np.ceil(radius / spacing).astype(int) + 2
    lo = np.maximum(found.min(axis=0) - pad, 0)
    hi = np.minimum(found.max(axis=0) + pad + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = np.pad(mask[box], [(int(p), int(p)) for p in pad])
    grown = np.asarray(ndimage.distance_transform_edt(~sub, sampling=spacing)) <= radius
    shut = np.asarray(ndimage.distance_transform_edt(grown, sampling=spacing)) > radius
    inner = tuple(slice(int(p), int(p) + (int(b) - int(a)))
                  for p, a, b in zip(pad, lo, hi, strict=True))
    out[box] |= shut[inner]
    return out


def _lesion_candidates(hu: F32, femur: BoolArray, spacing: npt.NDArray[np.float64],
                       params: AutoSegParams) -> tuple[BoolArray, list[dict[str, Any]]]:
    """Lytic lesion candidates of one femur, and whether each breaches the cortex.

    A lytic metastasis replaces bone by soft tissue; one that breaches the cortex leaves a
    notch in the bone mask, open to the soft tissue outside. So the femur is first closed
    morphologically with a ball of ``lesion_envelope_mm`` (Euclidean distance transforms:
    a dilation then an erosion), which bridges such openings; candidate voxels lie in the
    closed femur, off its outermost voxel layer. A voxel is a candidate when its
    smoothed HU (Gaussian, 1 mm) is between ``lesion_min_hu`` (fatty marrow is lower) and
    ``lesion_max_hu``, and it is at least ``lesion_contrast_hu`` darker than the femur's mean
    within ~10 mm (normalised Gaussian convolution over the femur): a hole in the bone, not
    a bone that is low everywhere. Pieces (6-connected) that reach the femur's lowest slab
    (the medullary canal leaving the image), pieces smaller than ``lesion_min_mm3`` and
    pieces less than ``lesion_min_inside`` inside the bone mask (surface concavities) are
    dropped. For each piece the breach fraction is the share of its voxel faces that face
    the outermost voxel layer of the closed femur or beyond: 0 for a lesion inside the
    marrow under at least one voxel of cortex, the relative size of the cortical opening
    for one that breaches the cortex or thins it below one voxel (cortical destruction is
    what Mirels' size item and the axial cortical involvement measure).
    Candidates are offered, never used: see the module docstring.

    Works on the femur's bounding box grown by the reach of its filters (40 mm).

    Returns:
        (mask of candidate voxels in the closed femur, one record per candidate: voxel-index
        ``centroid`` in the canonical axes, ``volume_mm3``, ``inside_fraction``,
        ``breach_fraction``).
    """
    found = np.argwhere(femur)
    mask = np.zeros(hu.shape, dtype=bool)
    if found.size == 0:
        return mask, []
    margin = np.ceil(max(40.0, params.lesion_envelope_mm) / spacing).astype(int) + 2
    lo = np.maximum(found.min(axis=0) - margin, 0)
    hi = np.minimum(found.max(axis=0) + margin + 1, hu.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub, records = _lesion_candidates_in(np.ascontiguousarray(hu[box]), femur[box], spacing,
                                         params)
    mask[box] = sub
    for r in records:
        r["centroid"] = r["centroid"] + lo
    return mask, records


def _lesion_candidates_in(hu: F32, femur: BoolArray, spacing: npt.NDArray[np.float64],
                          params: AutoSegParams) -> tuple[BoolArray, list[dict[str, Any]]]:
    """:func:`_lesion_candidates` on a crop around the femur."""
    closed = _closed(femur, spacing, params.lesion_envelope_mm)
    inside = np.asarray(ndimage.binary_erosion(closed, _FACE))
    sigma_fine = 1.0 / spacing
    sigma_wide = 10.0 / spacing
    smooth = ndimage.gaussian_filter(hu, sigma_fine)
    weight = ndimage.gaussian_filter(femur.astype(np.float32), sigma_wide)
    local = ndimage.gaussian_filter(np.where(femur, hu, 0.0).astype(np.float32), sigma_wide)
    local = local / np.maximum(weight, 1e-3)
    low = inside & (smooth < params.lesion_max_hu) & (smooth > params.lesion_min_hu)
    low &= smooth <= local - params.lesion_contrast_hu
    pieces, count = ndimage.label(low, structure=_FACE)
    if count == 0:
        return np.zeros(hu.shape, dtype=bool), []
    index = np.arange(1, count + 1)
    sizes = np.asarray(ndimage.sum_labels(np.ones_like(pieces), pieces, index))
    in_bone = np.asarray(ndimage.sum_labels(femur, pieces, index)) / np.maximum(sizes, 1)
    keep = set((np.flatnonzero((sizes * float(np.prod(spacing)) >= params.lesion_min_mm3)
                               & (in_bone >= params.lesion_min_inside)) + 1).tolist())
    bottom = np.flatnonzero(femur.any(axis=(0, 1)))
    if bottom.size:
        slab = max(1, round(params.slab_mm / spacing[2]))
        keep -= set(np.unique(pieces[:, :, bottom[0]:bottom[0] + slab]).tolist())
    kept = sorted(keep)
    if not kept:
        return np.zeros(hu.shape, dtype=bool), []
    # boundary faces of each piece, split by what lies across them (vectorised per axis)
    faces_all = np.zeros(count + 1)
    faces_out = np.zeros(count + 1)
    for axis in range(3):
        for step in (1, -1):
            across = np.roll(pieces, -step, axis=axis)
            outside = np.roll(~inside, -step, axis=axis)
            edge = [slice(None)] * 3
            edge[axis] = slice(-1, None) if step == 1 else slice(0, 1)
            across[tuple(edge)] = 0  # no wrap-around: the image border is outside
            outside[tuple(edge)] = True
            face = (pieces > 0) & (across != pieces)
            faces_all += np.bincount(pieces[face], minlength=count + 1)
            faces_out += np.bincount(pieces[face & outside], minlength=count + 1)
    centroids = ndimage.center_of_mass(np.ones_like(pieces), pieces, kept)
    voxel_mm3 = float(np.prod(spacing))
    records = [{"centroid": np.asarray(c, dtype=np.float64),
                "volume_mm3": float(sizes[n - 1]) * voxel_mm3,
                "inside_fraction": float(in_bone[n - 1]),
                "breach_fraction": float(faces_out[n] / max(faces_all[n], 1.0))}
               for n, c in zip(kept, centroids, strict=True)]
    return np.asarray(np.isin(pieces, kept)), records


# --------------------------------------------------------------------------------------------
# optional TotalSegmentator backend
# --------------------------------------------------------------------------------------------


def segment_with_totalsegmentator(ct_path: str, *, fast: bool = True) -> FemurSegmentation:
    """Run TotalSegmentator (``pip install osteofe[segment]``) and keep its femurs.

    Raises:
        InputError: TotalSegmentator is not installed, or its weights are missing and cannot
            be downloaded (the message names the fix).
    """
    import importlib.util
    import time

    if importlib.util.find_spec("totalsegmentator") is None:
        raise InputError(
            "the TotalSegmentator backend is not installed (Python package 'totalsegmentator' "
            "not found)",
            hint="pip install 'osteofe[segment]' (and let it download its weights once), or "
            "use the default --segmenter classical")
    import tempfile

    from meshing.imaging import read_ct, read_labels

    start = time.perf_counter()  # pragma: no cover - needs the package and its weights
    with tempfile.TemporaryDirectory() as tmp:  # pragma: no cover
        out = Path(tmp) / "seg.nii.gz"
        try:
            from totalsegmentator.python_api import totalsegmentator

            totalsegmentator(str(ct_path), str(out), fast=fast, ml=True)
        except Exception as exc:
            raise InputError(f"TotalSegmentator failed: {exc}",
                             hint="check that its weights are present "
                             "(totalseg_download_weights) or use --segmenter classical"
                             ) from exc
        found = read_labels(out)
    ct = read_ct(ct_path)  # pragma: no cover
    keep = np.where(np.isin(found.labels, [75, 76]), found.labels, 0).astype(np.int32)
    names = {v: n for v, n in TOTALSEGMENTATOR_V2_LABELS.items() if v in (75, 76)}
    labels = LabelMap(grid=ct.grid, labels=keep, names=names)  # pragma: no cover
    return FemurSegmentation(labels=labels, femurs=(), lesion_voxels=0,
                             method="totalsegmentator", wall_s=time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def dice(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Dice coefficient ``2|A & B| / (|A| + |B|)`` of two masks (1.0 when both are empty)."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = np.count_nonzero(x) + np.count_nonzero(y)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(x & y) / total


def mean_surface_distance(a: npt.ArrayLike, b: npt.ArrayLike,
                          spacing: npt.ArrayLike) -> float:
    """Symmetric mean surface distance (mm) between two non-empty masks.

    Surface voxels are mask voxels with a face neighbour outside; the distance of each
    surface voxel of one mask to the nearest surface voxel of the other (Euclidean, voxel
    centres, anisotropic spacing), averaged over both surfaces together.
    """
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if not x.any() or not y.any():
        raise InputError("surface distance of an empty mask", hint="check the segmentation")
    sx = x & ~ndimage.binary_erosion(x, _FACE)
    sy = y & ~ndimage.binary_erosion(y, _FACE)
    step = np.asarray(spacing, dtype=np.float64)
    to_y = ndimage.distance_transform_edt(~sy, sampling=step)
    to_x = ndimage.distance_transform_edt(~sx, sampling=step)
    d = np.concatenate([np.asarray(to_y)[sx], np.asarray(to_x)[sy]])
    return float(d.mean())


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def confidence_path(out: str | os.PathLike[str]) -> Path:
    """``seg.nii.gz`` -> ``seg.confidence.json`` beside it."""
    p = Path(out)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".confidence.json")


def write_segmentation(ct_path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                       segmenter: str = "classical") -> dict[str, Any]:
    """Segment a CT file and write the label map and its confidence JSON (both atomically).

    Nothing is written when the segmentation refuses.

    Returns:
        The confidence record written.

    Raises:
        InputError / ImageReadError: unreadable CT, refusal, unsupported output ending.
    """
    from meshing.imaging import WRITABLE_SUFFIXES, read_ct, write_labels

    if not str(out).endswith(WRITABLE_SUFFIXES):
        raise InputError(f"cannot write a label map to {out}",
                         hint=f"use one of {', '.join(WRITABLE_SUFFIXES)}")
    if segmenter == "totalsegmentator":
        seg = segment_with_totalsegmentator(str(ct_path))
    else:
        seg = segment_femurs(read_ct(ct_path))
    record = seg.confidence() | {"ct": str(ct_path), "labels": str(out)}
    # The confidence record replaces an earlier one only once the label map is written.
    with atomic_path(confidence_path(out)) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        write_labels(seg.labels, out)
    return record
