"""What the scan says about a metastatic lesion: type, size, axial cortical involvement, site.

These are the image-derived inputs of the clinical scores (Mirels 1989; axial cortical
involvement, Van der Linden et al. 2004). Every function takes the CT (or its grid), a bone
mask, a lesion mask and the shaft axis (a unit vector and a point on it, in world mm, as given
by ``fea.landmarks.find_landmarks``); nothing here imports fea, material or risk.

Masks. The femur is ``bone_mask | lesion_mask``: the phantom and
:func:`meshing.segmentation.select_femur` give disjoint bone and lesion masks, a combined femur
mask is accepted as well. Lesion voxels outside the bone envelope (an extra-osseous mass) are
counted as replaced bone; pass ``lesion_mask & envelope`` to exclude them.

Sections. Measurements are made in slabs perpendicular to the shaft axis, without resampling
the image (:class:`SectionFrame`): each voxel centre is projected on the axis, and the voxel
goes to the slab whose centre is nearest. The slab thickness defaults to the largest step
that a voxel makes along the axis (``max_i |axis . d_i| h_i``, the slice spacing when the
axis is along the image k axis), so that every image column crossing a slab puts exactly one
voxel in it whatever the axis direction; for an axis along the image k axis the slabs are
the axial slices themselves. Levels are mm along the axis from the frame's axis point
(:func:`measure_lesion` puts it at the level of the head centre: negative = distal).

Depth. The depth of a voxel below the periosteal surface is its Euclidean distance to the
nearest voxel outside the femur minus half the smallest voxel size (the surface lies half a
voxel outside the outermost voxel centres), computed with ``scipy.ndimage`` after filling the
mask's cavities (a canal left out of the segmentation is not a surface).

Cortex (for the axial and circumferential involvement) is the **outer shell of the femur
mask**: voxels whose depth is at most ``cortex_mm`` (default :data:`DEFAULT_CORTEX_MM`). A
geometric shell is used rather than a HU threshold because a lytic lesion has destroyed the
very cortex whose involvement is measured: its voxels are no longer cortical in HU.

Lesion type (:func:`lesion_type`). Radiologically a lytic lesion is one of lower attenuation
than the bone it replaces (bone destruction, radiolucent), a blastic one of higher attenuation
(sclerosis), a mixed one has both components (the categories of Mirels 1989). osteofe makes
this quantitative by comparing each lesion voxel with the bone around the lesion at the same
depth below the periosteal surface (so a cortical voxel is compared with cortex and a
medullary one with trabecular bone or marrow); see :data:`REFERENCE_PERCENTILES`,
:data:`COMPONENT_MIN_FRACTION` and :data:`SCLEROTIC_MIN_HU`. The thresholds are osteofe's
choices, not validated against radiologists' readings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from core.types import ArrayRecord, BoolArray, FloatArray, IntArray, freeze_arrays
from meshing.errors import InputError
from meshing.types import CTVolume, ImageGrid

__all__ = [
    "COMPONENT_MIN_FRACTION",
    "DEFAULT_CORTEX_MM",
    "DEFAULT_RING_MM",
    "LESSER_TROCHANTER_DEPTH_MM",
    "MIN_REFERENCE_VOXELS",
    "PROJECTION_DIRECTIONS",
    "REFERENCES",
    "REFERENCE_PERCENTILES",
    "SCLEROTIC_MIN_HU",
    "SECTOR_COUNT",
    "SECTOR_INVOLVED_FRACTION",
    "SUBTROCHANTERIC_LENGTH_MM",
    "CorticalInvolvement",
    "LesionError",
    "LesionKind",
    "LesionMeasurements",
    "MirelsSite",
    "SectionFrame",
    "SizeBasis",
    "SizeFraction",
    "axial_cortical_involvement_mm",
    "cortical_involvement",
    "fill_lesion_hu",
    "lesion_size_fraction",
    "lesion_type",
    "measure_lesion",
    "mirels_site_from_position",
]


#: Radiological lesion types (the Mirels "lesion" item categories).
LesionKind = Literal["lytic", "blastic", "mixed"]

#: Mirels sites a femoral lesion can have (the femur is never "upper_limb").
MirelsSite = Literal["peritrochanteric", "lower_limb"]

#: What the Mirels size fraction is measured on.
SizeBasis = Literal["diameter", "circumference"]


# --------------------------------------------------------------------------------------------
# The table: sources and constants.
# --------------------------------------------------------------------------------------------

#: Sources of the rules below, by key ([UNVERIFIED] where not checked against the paper).
REFERENCES: Mapping[str, str] = MappingProxyType(
    {
        "mirels1989": "Mirels H (1989). Metastatic disease in long bones. A proposed scoring "
        "system for diagnosing impending pathologic fractures. Clin Orthop Relat Res "
        "(249):256-264. Lesion item blastic/mixed/lytic, size < 1/3, 1/3-2/3, > 2/3 of the "
        "bone's diameter (cortex), site upper limb/lower limb/peritrochanteric.",
        "vanderlinden2004": "Van der Linden YM et al. (2004). Comparative analysis of risk "
        "factors for pathological fracture with femoral metastases. J Bone Joint Surg Br "
        "86(4):566-573. Axial cortical involvement > 30 mm predicts fracture (measured on "
        "radiographs as the axial length of cortex involved). [UNVERIFIED: how the length "
        "was measured was not checked against the paper]",
        "vanderwal2020": "Van der Wal CWPG et al. (2020). Axial cortical involvement of "
        "metastatic lesions to identify impending femoral fractures; a clinical validation "
        "study. Radiother Oncol 144:59-64. ACI >= 30 mm high risk (threshold in "
        "risk.mirels.THRESHOLDS['aci']).",
        "radiology_convention": "Lytic = lower attenuation than the bone replaced "
        "(radiolucent, bone destruction); blastic = higher attenuation (sclerotic); mixed = "
        "both components: the usual radiological description of bone metastases, as used "
        "by Mirels 1989. [UNVERIFIED: no quantitative (HU) definition was found; the "
        "percentile rule of osteofe is its own]",
        "subtrochanteric_region": "Subtrochanteric region = from the lesser trochanter to "
        "5 cm distal to it, the conventional definition in fracture classification (e.g. "
        "Fielding 1973; Loizou et al. 2010, Injury 41:739). [UNVERIFIED: recalled, not "
        "checked]",
    }
)

#: Ring of bone around the lesion used as its reference (mm from the nearest lesion voxel
#: centre): inner radius skips the reactive zone and partial-volume voxels next to the
#: lesion, outer radius keeps the reference local. osteofe choice (issue "From strength to
#: risk" suggests 3-6 mm).
DEFAULT_RING_MM: tuple[float, float] = (3.0, 6.0)

#: Percentiles of the depth-matched reference HU: a lesion voxel below the low one is
#: "lower" (lytic component), above the high one (and sclerotic, :data:`SCLEROTIC_MIN_HU`)
#: "higher" (blastic component). osteofe choice: 5/95 lets 5% of normal bone on each side be
#: misread, and widens by itself with image noise.
REFERENCE_PERCENTILES: tuple[float, float] = (5.0, 95.0)

#: A lytic or blastic component is "substantial" when it fills at least this fraction of the
#: lesion's voxels (a tenth); both substantial = mixed. osteofe choice: the phantom's mixed
#: lesion has a lytic core of 0.6^3 = 22% of its volume, of which 16-22% reads lower once
#: partial-volume voxels and core parts in marrow are left out; [UNVERIFIED] against readers.
COMPONENT_MIN_FRACTION = 0.10

#: A voxel counts as sclerotic (blastic) only at or above this HU, whatever its surroundings:
#: tumour soft tissue stays below ~100 HU (~150 HU enhanced with contrast), so a lesion
#: replacing fatty marrow (-100..0 HU) is not called blastic. osteofe choice from usual
#: clinical CT values; [UNVERIFIED].
SCLEROTIC_MIN_HU = 200.0

#: Fewest ring voxels behind one depth-matched reference; the depth window widens (one bin of
#: the largest voxel size at a time) until it holds this many. osteofe choice.
MIN_REFERENCE_VOXELS = 50

#: Depth of the outer shell taken as cortex (mm). The proximal femoral cortex is ~1-2 mm thick
#: and the diaphyseal ~4-7 mm (phantom: 1 mm proximal, 5.5 mm mid-shaft), so a lesion reaching
#: the outer 2 mm has breached at least the outer third of the cortex everywhere. osteofe
#: choice; [UNVERIFIED] against radiographic ACI readings.
DEFAULT_CORTEX_MM = 2.0

#: Angular sectors (around the section's centroid) of the circumferential involvement:
#: 72 = 5 deg, about 1.3 mm of cortex on a 30 mm shaft. osteofe choice.
SECTOR_COUNT = 72

#: A sector is involved when the lesion fills at least this fraction of its cortex voxels.
SECTOR_INVOLVED_FRACTION = 0.5

#: Projection directions (over 180 deg) for the diameter fraction: 5 deg steps, the worst
#: projection being what a radiograph in the least favourable view would show. osteofe choice.
PROJECTION_DIRECTIONS = 36

#: The peritrochanteric region reaches this far below the lesser trochanter
#: (REFERENCES["subtrochanteric_region"]).
SUBTROCHANTERIC_LENGTH_MM = 50.0

#: Level of the lesser trochanter below the head centre (mm along the shaft) assumed when the
#: caller has no lesser-trochanter landmark: typical adult anatomy, ~2.6-2.8 head radii
#: (the phantom: 63 mm). [UNVERIFIED: an estimate, not a measured population mean]
LESSER_TROCHANTER_DEPTH_MM = 60.0

_DEPTH_MARGIN_MM = 25.0  # crop margin beyond the ring when computing depths


class LesionError(InputError):
    """A lesion or bone mask, axis or option cannot be measured as given."""



# --------------------------------------------------------------------------------------------
# Sections perpendicular to an axis.
# --------------------------------------------------------------------------------------------


def _unit(vector: npt.ArrayLike, name: str) -> FloatArray:
    """A finite non-zero 3-vector, normalised."""
    v = np.asarray(vector, dtype=np.float64)
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise LesionError(f"{name} must be three finite numbers, got {vector!r}",
                          hint=f"pass {name} as a world (mm) 3-vector, e.g. from find_landmarks")
    norm = float(np.linalg.norm(v))
    if norm < 1e-9:
        raise LesionError(f"{name} is the zero vector",
                          hint="pass the shaft axis direction (unit vector, pointing proximally)")
    return np.asarray(v / norm)


def _point(point: npt.ArrayLike, name: str) -> FloatArray:
    p = np.asarray(point, dtype=np.float64)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise LesionError(f"{name} must be a finite world point (3 numbers, mm), got {point!r}",
                          hint=f"pass {name} in world mm, e.g. from find_landmarks")
    return p


@dataclass(frozen=True)
class SectionFrame:
    """Slabs perpendicular to an axis, by projection of voxel centres (no resampling).

    Attributes:
        axis: (3,) float64 unit world direction of the axis (proximal for a shaft axis).
        axis_point: (3,) float64 world point (mm) on the axis; level 0.
        basis: (2, 3) float64, two orthonormal world directions spanning the section plane.
        slice_mm: Slab thickness along the axis (mm).
    """

    axis: FloatArray
    axis_point: FloatArray
    basis: FloatArray
    slice_mm: float

    def __post_init__(self) -> None:
        freeze_arrays(self, "axis", "axis_point", "basis")

    @classmethod
    def build(cls, grid: ImageGrid, axis: npt.ArrayLike, axis_point: npt.ArrayLike,
              slice_mm: float | None = None) -> SectionFrame:
        """Frame of the axis on a grid.

        Args:
            grid: Image geometry (its direction cosines and spacing set the default slab).
            axis: (3,) world direction (normalised here; must be non-zero).
            axis_point: (3,) world point on the axis, mm.
            slice_mm: Slab thickness, mm (> 0); default ``max_i |axis . d_i| h_i``, the step
                of one voxel along the image axis closest to ``axis``.

        Returns:
            The frame.

        Raises:
            LesionError: On a zero or non-finite axis or point, or a non-positive slab.
        """
        a = _unit(axis, "axis")
        p = _point(axis_point, "axis_point")
        steps = np.abs(a @ grid.direction) * grid.spacing
        thickness = float(steps.max()) if slice_mm is None else float(slice_mm)
        if not math.isfinite(thickness) or thickness <= 0.0:
            raise LesionError(f"slice thickness must be a positive number of mm, got {slice_mm!r}",
                              hint="leave slice_mm out to use one voxel step along the axis")
        # in-plane basis: the image axis least aligned with the axis, orthogonalised
        seed = grid.direction[:, int(np.argmin(np.abs(a @ grid.direction)))]
        e1 = seed - (seed @ a) * a
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(a, e1)
        return cls(axis=a, axis_point=p, basis=np.stack([e1, e2]), slice_mm=thickness)

    def coordinates(self, grid: ImageGrid, ijk: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Level along the axis and in-plane coordinates of voxel centres.

        Args:
            grid: Image geometry (owns the voxel -> world transform).
            ijk: (n, 3) voxel indices.

        Returns:
            ``(level, uv)``: (n,) float64 mm along the axis from ``axis_point`` and (n, 2)
            float64 mm along ``basis``.
        """
        rows = np.vstack([self.axis, self.basis])  # one (n, 3) @ (3, 3) product
        local = (grid.index_to_world(ijk) - self.axis_point) @ rows.T
        return np.ascontiguousarray(local[:, 0]), np.ascontiguousarray(local[:, 1:])

    def footprint(self, grid: ImageGrid, directions: FloatArray) -> FloatArray:
        """Width (mm) of one voxel projected on each world direction: ``sum_i |e . d_i| h_i``.

        Args:
            grid: Image geometry.
            directions: (k, 3) world unit vectors.

        Returns:
            (k,) float64 widths in mm.
        """
        return np.asarray(np.abs(directions @ grid.direction) @ grid.spacing)

    def voxel_second_moment(self, grid: ImageGrid) -> FloatArray:
        """(2, 2) in-plane second moment of one voxel about its centre per unit volume (mm^2).

        A box of sides h_i has ``diag(h_i^2 / 12)`` per unit volume along its own axes.
        """
        own = grid.direction @ np.diag(grid.spacing**2 / 12.0) @ grid.direction.T
        return np.asarray(self.basis @ own @ self.basis.T)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "axis": self.axis.tolist(),
            "axis_point_mm": self.axis_point.tolist(),
            "section_basis": self.basis.tolist(),
            "slice_mm": self.slice_mm,
        }


def _mask(mask: npt.ArrayLike, grid: ImageGrid, name: str) -> BoolArray:
    arr = np.asarray(mask)
    if arr.shape != grid.shape:
        raise LesionError(f"{name} has shape {arr.shape}, the CT grid {grid.shape}",
                          hint=f"resample {name} onto the CT grid (meshing.imaging)")
    return np.asarray(arr.astype(bool, copy=False))


def _masks(grid: ImageGrid, bone_mask: npt.ArrayLike, lesion_mask: npt.ArrayLike
           ) -> tuple[BoolArray, BoolArray]:
    """(femur = bone | lesion, lesion), validated."""
    bone = _mask(bone_mask, grid, "bone_mask")
    lesion = _mask(lesion_mask, grid, "lesion_mask")
    if not lesion.any():
        raise LesionError("the lesion mask is empty",
                          hint="pass the lesion label's voxels (e.g. labels == 2 of the phantom)")
    femur = bone | lesion
    if not bone.any():
        raise LesionError("the bone mask is empty", hint="pass the femur's voxels")
    return femur, lesion


def _box(ijk_min: IntArray, ijk_max: IntArray, pad: IntArray, shape: tuple[int, int, int]
         ) -> tuple[slice, slice, slice]:
    lo = np.maximum(ijk_min - pad, 0)
    hi = np.minimum(ijk_max + pad + 1, np.asarray(shape))
    return (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])),
            slice(int(lo[2]), int(hi[2])))


def _depth_mm(femur_crop: BoolArray, grid: ImageGrid, plane_normal: int | None = None
              ) -> FloatArray:
    """Depth of each femur voxel centre below the periosteal surface (mm; 0 outside).

    Cavities of the mask (a medullary canal left out of a segmentation) are filled first, so
    that depth is measured from the outer (periosteal) surface only: in each image plane
    normal to the image axis ``plane_normal`` (the one closest to the shaft axis; an open
    tube's canal is enclosed there), or in 3-D when None (closed cavities only).
    """
    if plane_normal is None:
        solid = ndimage.binary_fill_holes(femur_crop)
    else:
        structure = np.expand_dims(ndimage.generate_binary_structure(2, 1), plane_normal)
        solid = ndimage.binary_fill_holes(femur_crop, structure=structure)
    edt = ndimage.distance_transform_edt(np.asarray(solid), sampling=grid.spacing)
    depth = np.asarray(edt, dtype=np.float64) - 0.5 * float(grid.spacing.min())
    return np.asarray(np.where(femur_crop, np.maximum(depth, 0.0), 0.0))


# --------------------------------------------------------------------------------------------
# Depth-matched reference: lesion type and the "intact" fill.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    """Depth-matched reference HU of every lesion voxel (all arrays (n_lesion,))."""

    index: tuple[IntArray, IntArray, IntArray]  # lesion voxel indices in the full grid
    hu: FloatArray
    depth_mm: FloatArray
    low_hu: FloatArray
    median_hu: FloatArray
    high_hu: FloatArray
    ring_voxels: int
    ring_median_hu: float
    max_window_mm: float


def _reference(ct: CTVolume, femur: BoolArray, lesion: BoolArray,
               ring_mm: tuple[float, float]) -> _Reference:
    """Compare each lesion voxel with the ring voxels at the same depth below the surface."""
    r_in, r_out = (float(r) for r in ring_mm)
    if not (math.isfinite(r_in) and math.isfinite(r_out) and 0.0 <= r_in < r_out):
        raise LesionError(f"ring_mm must be (inner, outer) with 0 <= inner < outer, got {ring_mm}",
                          hint=f"use the default {DEFAULT_RING_MM}")
    grid = ct.grid
    h = grid.spacing
    index = np.nonzero(lesion)
    ijk = np.stack(index, axis=1).astype(np.int64)
    pad = np.ceil((r_out + _DEPTH_MARGIN_MM) / h).astype(np.int64)
    crop = _box(ijk.min(axis=0), ijk.max(axis=0), pad, grid.shape)
    fem_c, les_c = femur[crop], lesion[crop]
    depth = _depth_mm(fem_c, grid)
    to_lesion = np.asarray(ndimage.distance_transform_edt(~les_c, sampling=h))
    ring = fem_c & ~les_c & (to_lesion > r_in) & (to_lesion <= r_out)
    n_ring = int(ring.sum())
    if n_ring == 0:
        raise LesionError(
            f"no bone lies {r_in:g}-{r_out:g} mm around the lesion to compare it with",
            hint="check that bone_mask holds the femur around the lesion, or widen ring_mm",
        )
    hu_c = np.asarray(ct.hu[crop], dtype=np.float64)
    ring_hu, ring_depth = hu_c[ring], depth[ring]
    les_hu, les_depth = hu_c[les_c], depth[les_c]  # same C order as ``index``
    low_p, high_p = REFERENCE_PERCENTILES
    width = float(h.max())
    ring_bin = np.floor(ring_depth / width).astype(np.int64)
    les_bin = np.floor(les_depth / width).astype(np.int64)
    n_bins = int(max(ring_bin.max(), les_bin.max())) + 1
    order = np.argsort(ring_bin, kind="stable")
    values = ring_hu[order]
    starts = np.concatenate([[0], np.cumsum(np.bincount(ring_bin, minlength=n_bins))])
    stats = np.empty((les_hu.size, 3))
    need = min(MIN_REFERENCE_VOXELS, n_ring)
    widest = 0
    for b in np.unique(les_bin):  # one pass per depth bin (tens), not per voxel
        half = 0
        while True:
            first, last = max(int(b) - half, 0), min(int(b) + half, n_bins - 1)
            if starts[last + 1] - starts[first] >= need:
                break
            half += 1
        widest = max(widest, half)
        stats[les_bin == b] = np.percentile(values[starts[first]:starts[last + 1]],
                                            [low_p, 50.0, high_p])
    return _Reference(
        index=(index[0].astype(np.int64), index[1].astype(np.int64),
               index[2].astype(np.int64)),
        hu=les_hu,
        depth_mm=les_depth,
        low_hu=stats[:, 0],
        median_hu=stats[:, 1],
        high_hu=stats[:, 2],
        ring_voxels=n_ring,
        ring_median_hu=float(np.median(ring_hu)),
        max_window_mm=(2 * widest + 1) * width,
    )


def lesion_type(
    ct: CTVolume,
    bone_mask: npt.ArrayLike,
    lesion_mask: npt.ArrayLike,
    *,
    ring_mm: tuple[float, float] = DEFAULT_RING_MM,
) -> tuple[LesionKind, dict[str, Any]]:
    """Classify a lesion as lytic, blastic or mixed from its HU against the bone around it.

    The reference is the femur (bone | lesion) outside the lesion, ``ring_mm`` from it. Each
    lesion voxel is compared with the ring voxels at the same depth below the periosteal
    surface (bins of the largest voxel size, widened until :data:`MIN_REFERENCE_VOXELS`):
    below their 5th percentile it is "lower", above their 95th percentile and at least
    :data:`SCLEROTIC_MIN_HU` it is "higher" (:data:`REFERENCE_PERCENTILES`). Then: both
    fractions >= :data:`COMPONENT_MIN_FRACTION` -> ``"mixed"``; only the higher one ->
    ``"blastic"``; otherwise ``"lytic"`` (a lesion without a sclerotic component is lytic;
    ``evidence["confident"]`` is False when not even its lower fraction is substantial, e.g.
    tumour replacing fatty marrow, whose HU is not lower than the marrow's).

    Args:
        ct: The CT in HU.
        bone_mask: Bool array of ``ct.grid.shape``, the femur (with or without the lesion).
        lesion_mask: Bool array of ``ct.grid.shape``, the lesion.
        ring_mm: (inner, outer) radii of the reference ring around the lesion, mm.

    Returns:
        ``(kind, evidence)``; evidence holds the lower/higher/iso fractions, the median HU of
        the lesion and of the ring, the median contrast against the depth-matched reference,
        the thresholds, a ``rule`` text and ``confident``.

    Raises:
        LesionError: On empty or mis-shaped masks, or no bone in the ring.
    """
    femur, lesion = _masks(ct.grid, bone_mask, lesion_mask)
    ref = _reference(ct, femur, lesion, ring_mm)
    return _classify(ref, ring_mm)


def _classify(ref: _Reference, ring_mm: tuple[float, float]
              ) -> tuple[LesionKind, dict[str, Any]]:
    lower = ref.hu < ref.low_hu
    higher = (ref.hu > ref.high_hu) & (ref.hu >= SCLEROTIC_MIN_HU)
    f_low, f_high = float(lower.mean()), float(higher.mean())
    low_ok, high_ok = f_low >= COMPONENT_MIN_FRACTION, f_high >= COMPONENT_MIN_FRACTION
    kind: LesionKind
    if low_ok and high_ok:
        kind, why = "mixed", "substantial lower and higher components"
    elif high_ok:
        kind, why = "blastic", "a substantial sclerotic (higher) component only"
    else:
        kind = "lytic"
        why = ("a substantial lower component, no sclerotic one" if low_ok else
               "no substantial component either way; without sclerosis the lesion is taken as "
               "lytic (low confidence)")
    low_p, high_p = REFERENCE_PERCENTILES
    evidence: dict[str, Any] = {
        "kind": kind,
        "confident": bool(low_ok or high_ok),
        "lower_fraction": f_low,
        "higher_fraction": f_high,
        "iso_fraction": 1.0 - f_low - f_high,
        "lesion_voxels": int(ref.hu.size),
        "lesion_median_hu": float(np.median(ref.hu)),
        "ring_median_hu": ref.ring_median_hu,
        "median_contrast_hu": float(np.median(ref.hu - ref.median_hu)),
        "ring_mm": [float(ring_mm[0]), float(ring_mm[1])],
        "ring_voxels": ref.ring_voxels,
        "widest_depth_window_mm": ref.max_window_mm,
        "reference_percentiles": [low_p, high_p],
        "component_min_fraction": COMPONENT_MIN_FRACTION,
        "sclerotic_min_hu": SCLEROTIC_MIN_HU,
        "rule": (
            f"{kind}: {100 * f_low:.0f}% of the lesion below the {low_p:g}th percentile and "
            f"{100 * f_high:.0f}% above the {high_p:g}th percentile (and >= "
            f"{SCLEROTIC_MIN_HU:g} HU) of the bone {ring_mm[0]:g}-{ring_mm[1]:g} mm around it "
            f"at the same depth; {why} (component threshold "
            f"{100 * COMPONENT_MIN_FRACTION:.0f}%)"
        ),
        "source": REFERENCES["radiology_convention"],
    }
    return kind, evidence


def fill_lesion_hu(
    ct: CTVolume,
    bone_mask: npt.ArrayLike,
    lesion_mask: npt.ArrayLike,
    *,
    ring_mm: tuple[float, float] = DEFAULT_RING_MM,
) -> npt.NDArray[np.float32]:
    """HU of the femur as if intact: lesion voxels replaced by the surrounding bone's HU.

    Each lesion voxel gets the median HU of the ring voxels (``ring_mm`` around the lesion)
    at its depth below the periosteal surface, so a lesion through the cortex is refilled
    with cortex near the surface and with trabecular bone or marrow deeper in. This is the
    same-femur reference of CT rigidity analysis (``material.rigidity.ctra``).

    Args:
        ct: The CT in HU.
        bone_mask: Bool array of ``ct.grid.shape``, the femur.
        lesion_mask: Bool array of ``ct.grid.shape``, the lesion.
        ring_mm: (inner, outer) radii of the reference ring, mm.

    Returns:
        float32 array of ``ct.grid.shape``: a copy of the HU with the lesion filled.

    Raises:
        LesionError: On empty or mis-shaped masks, or no bone in the ring.
    """
    femur, lesion = _masks(ct.grid, bone_mask, lesion_mask)
    ref = _reference(ct, femur, lesion, ring_mm)
    hu = np.array(ct.hu, dtype=np.float32, copy=True)
    hu[ref.index] = ref.median_hu.astype(np.float32)
    return hu


# --------------------------------------------------------------------------------------------
# Section measurements: size fraction, axial and circumferential cortical involvement.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Band:
    """The femur voxels in the slabs the lesion spans (arrays (n,) or (m,) for slabs)."""

    frame: SectionFrame
    grid: ImageGrid
    slab: IntArray  # (n,) slab of each voxel, 0..m-1
    uv: FloatArray  # (n, 2) in-plane mm
    lesion: BoolArray  # (n,)
    shell: BoolArray  # (n,) within cortex_mm of the periosteal surface
    levels_mm: FloatArray  # (m,) slab centres, mm from the frame's axis point
    cortex_mm: float


def _band(grid: ImageGrid, femur: BoolArray, lesion: BoolArray, frame: SectionFrame,
          cortex_mm: float) -> _Band:
    if not math.isfinite(cortex_mm) or cortex_mm <= 0.0:
        raise LesionError(f"cortex_mm must be a positive depth in mm, got {cortex_mm!r}",
                          hint=f"use the default {DEFAULT_CORTEX_MM} mm")
    ijk = np.argwhere(femur)
    level, uv_all = frame.coordinates(grid, ijk)
    origin = float(level.min())
    slab = np.floor((level - origin) / frame.slice_mm + 0.5).astype(np.int64)
    in_lesion = lesion[tuple(ijk.T)]
    first, last = int(slab[in_lesion].min()), int(slab[in_lesion].max())
    keep = (slab >= first) & (slab <= last)
    ijk, slab, in_lesion, uv = ijk[keep], slab[keep] - first, in_lesion[keep], uv_all[keep]
    pad = np.ceil((cortex_mm + 2.0 * grid.spacing.max()) / grid.spacing).astype(np.int64)
    crop = _box(ijk.min(axis=0), ijk.max(axis=0), pad, grid.shape)
    normal = int(np.argmax(np.abs(frame.axis @ grid.direction)))
    depth = _depth_mm(femur[crop], grid, normal)
    lo = np.array([crop[0].start, crop[1].start, crop[2].start])
    local = ijk - lo
    shell = depth[tuple(local.T)] <= cortex_mm + 1e-9
    levels = origin + frame.slice_mm * np.arange(first, last + 1, dtype=np.float64)
    return _Band(frame, grid, slab, uv, in_lesion, shell, levels, float(cortex_mm))


def _group_extremes(slab: IntArray, values: FloatArray) -> tuple[IntArray, FloatArray,
                                                                 FloatArray]:
    """Per-slab min and max of ``values`` (n, k): (slabs present, (s, k) min, (s, k) max)."""
    order = np.argsort(slab, kind="stable")
    sorted_slab = slab[order]
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_slab[1:] != sorted_slab[:-1]])
    return (sorted_slab[starts], np.minimum.reduceat(sorted_values, starts, axis=0),
            np.maximum.reduceat(sorted_values, starts, axis=0))


@dataclass(frozen=True)
class SizeFraction(ArrayRecord):
    """Fraction of the bone's diameter taken by the lesion, in sections along the axis.

    In each slab the lesion and the bone are projected on :data:`PROJECTION_DIRECTIONS`
    in-plane directions (as radiographs in every view around the axis would show them); the
    fraction is the lesion's projected width over the bone's in the same direction, widths
    being the extent of the voxel centres plus one voxel's projected width. A slab's value is
    the worst direction; the record's is the worst slab.

    Attributes:
        fraction: Largest fraction over slabs and directions, in [0, 1].
        level_mm: Level of that slab (mm along the axis from the axis point).
        direction: (3,) float64 world unit vector of the worst projection direction.
        lesion_width_mm: Lesion width there (mm).
        bone_width_mm: Bone width there (mm).
        levels_mm: (m,) float64 levels of the slabs the lesion spans.
        fractions: (m,) float64 worst-direction fraction per slab (0 where a slab holds no
            lesion voxel).
        slice_mm: Slab thickness (mm).
    """

    fraction: float
    level_mm: float
    direction: FloatArray
    lesion_width_mm: float
    bone_width_mm: float
    levels_mm: FloatArray
    fractions: FloatArray
    slice_mm: float

    ARRAYS = ("direction", "levels_mm", "fractions")


def _size_fraction(band: _Band) -> SizeFraction:
    k = PROJECTION_DIRECTIONS
    theta = np.pi * np.arange(k) / k
    planar = np.stack([np.cos(theta), np.sin(theta)], axis=1)  # (k, 2)
    world = planar @ band.frame.basis  # (k, 3)
    foot = band.frame.footprint(band.grid, world)
    proj = band.uv @ planar.T  # (n, k)
    _, bone_min, bone_max = _group_extremes(band.slab, proj)  # every slab holds femur voxels
    bone_w = bone_max - bone_min + foot
    les_slabs, les_min, les_max = _group_extremes(band.slab[band.lesion], proj[band.lesion])
    les_w = les_max - les_min + foot
    ratio = np.minimum(les_w / bone_w[les_slabs], 1.0)  # (s, k)
    fractions = np.zeros(band.levels_mm.size)
    fractions[les_slabs] = ratio.max(axis=1)
    row, col = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    slab = int(les_slabs[row])
    return SizeFraction(
        fraction=float(ratio[row, col]),
        level_mm=float(band.levels_mm[slab]),
        direction=np.asarray(world[col]),
        lesion_width_mm=float(les_w[row, col]),
        bone_width_mm=float(bone_w[slab, col]),
        levels_mm=band.levels_mm,
        fractions=fractions,
        slice_mm=band.frame.slice_mm,
    )


@dataclass(frozen=True)
class CorticalInvolvement(ArrayRecord):
    """Axial and circumferential involvement of the cortex by the lesion.

    A slab is involved when at least one lesion voxel lies in the cortical shell (depth <=
    ``cortex_mm``). The axial cortical involvement (ACI, Van der Linden et al. 2004) is the
    number of involved slabs times the slab thickness (gaps are not counted; ``span_mm``
    includes them). The circumferential involvement of a slab is the fraction of its
    :data:`SECTOR_COUNT` angular sectors around the section's centroid (sectors holding
    cortex) in which the lesion fills at least :data:`SECTOR_INVOLVED_FRACTION` of the cortex
    voxels.

    Attributes:
        aci_mm: Axial cortical involvement (mm); 0 when the lesion never reaches the shell.
        span_mm: From the first to the last involved slab, inclusive (mm).
        first_level_mm: Level of the most distal involved slab (NaN when none).
        last_level_mm: Level of the most proximal involved slab (NaN when none).
        involved_slices: Number of involved slabs.
        circumferential_fraction: Largest circumferential involvement over slabs, [0, 1].
        circumferential_level_mm: Level of that slab (NaN when 0).
        levels_mm: (m,) float64 levels of the slabs the lesion spans.
        involved: (m,) bool, slab involved.
        circumferential: (m,) float64 circumferential fraction per slab.
        cortex_mm: Depth of the cortical shell used (mm).
        slice_mm: Slab thickness (mm).
    """

    aci_mm: float
    span_mm: float
    first_level_mm: float
    last_level_mm: float
    involved_slices: int
    circumferential_fraction: float
    circumferential_level_mm: float
    levels_mm: FloatArray
    involved: BoolArray
    circumferential: FloatArray
    cortex_mm: float
    slice_mm: float

    ARRAYS = ("levels_mm", "involved", "circumferential")


def _involvement(band: _Band) -> CorticalInvolvement:
    m = band.levels_mm.size
    delta = band.frame.slice_mm
    hits = np.bincount(band.slab[band.shell & band.lesion], minlength=m)
    involved = hits > 0
    rows = np.flatnonzero(involved)
    # circumferential: sectors around each slab's (geometric) centroid
    counts = np.bincount(band.slab, minlength=m).astype(np.float64)
    centre = np.stack([np.bincount(band.slab, weights=band.uv[:, c], minlength=m)
                       for c in (0, 1)], axis=1) / counts[:, None]
    rel = band.uv - centre[band.slab]
    angle = np.arctan2(rel[:, 1], rel[:, 0])
    k = SECTOR_COUNT
    sector = np.minimum(np.floor((angle + np.pi) / (2.0 * np.pi) * k).astype(np.int64), k - 1)
    key = band.slab * k + sector
    cortex = np.bincount(key[band.shell], minlength=m * k).reshape(m, k)
    taken = np.bincount(key[band.shell & band.lesion], minlength=m * k).reshape(m, k)
    has_cortex = cortex > 0
    hit = has_cortex & (taken >= SECTOR_INVOLVED_FRACTION * cortex)
    n_sectors = has_cortex.sum(axis=1)
    circ = np.where(n_sectors > 0, hit.sum(axis=1) / np.maximum(n_sectors, 1), 0.0)
    best = int(np.argmax(circ))
    return CorticalInvolvement(
        aci_mm=float(rows.size * delta),
        span_mm=float((rows[-1] - rows[0] + 1) * delta) if rows.size else 0.0,
        first_level_mm=float(band.levels_mm[rows[0]]) if rows.size else math.nan,
        last_level_mm=float(band.levels_mm[rows[-1]]) if rows.size else math.nan,
        involved_slices=int(rows.size),
        circumferential_fraction=float(circ[best]),
        circumferential_level_mm=float(band.levels_mm[best]) if circ[best] > 0 else math.nan,
        levels_mm=band.levels_mm,
        involved=involved,
        circumferential=np.asarray(circ, dtype=np.float64),
        cortex_mm=band.cortex_mm,
        slice_mm=delta,
    )


def lesion_size_fraction(
    grid: ImageGrid,
    bone_mask: npt.ArrayLike,
    lesion_mask: npt.ArrayLike,
    *,
    shaft_axis: npt.ArrayLike,
    axis_point: npt.ArrayLike,
    slice_mm: float | None = None,
) -> SizeFraction:
    """Largest fraction of the bone's diameter taken by the lesion (the Mirels size item).

    Measured in slabs perpendicular to the shaft axis through the lesion (see
    :class:`SizeFraction`); Mirels (1989) scores < 1/3, 1/3-2/3 and > 2/3.

    Args:
        grid: Image geometry of the masks.
        bone_mask: Bool array of ``grid.shape``, the femur.
        lesion_mask: Bool array of ``grid.shape``, the lesion.
        shaft_axis: (3,) world direction of the shaft axis.
        axis_point: (3,) world point on the axis (level 0 of the returned levels), mm.
        slice_mm: Slab thickness (default: one voxel step along the axis).

    Returns:
        The size fraction, its level and the per-slab profile.

    Raises:
        LesionError: On empty or mis-shaped masks or an invalid axis.
    """
    femur, lesion = _masks(grid, bone_mask, lesion_mask)
    frame = SectionFrame.build(grid, shaft_axis, axis_point, slice_mm)
    return _size_fraction(_band(grid, femur, lesion, frame, DEFAULT_CORTEX_MM))


def cortical_involvement(
    grid: ImageGrid,
    bone_mask: npt.ArrayLike,
    lesion_mask: npt.ArrayLike,
    *,
    shaft_axis: npt.ArrayLike,
    axis_point: npt.ArrayLike,
    cortex_mm: float = DEFAULT_CORTEX_MM,
    slice_mm: float | None = None,
) -> CorticalInvolvement:
    """Axial (ACI) and circumferential involvement of the cortex by the lesion.

    See :class:`CorticalInvolvement`; the cortex is the outer ``cortex_mm`` of the femur
    mask (module docstring). ACI >= 30 mm is high risk (Van der Wal et al. 2020; compare with
    ``risk.mirels.THRESHOLDS["aci"]``).

    Args:
        grid: Image geometry of the masks.
        bone_mask: Bool array of ``grid.shape``, the femur.
        lesion_mask: Bool array of ``grid.shape``, the lesion.
        shaft_axis: (3,) world direction of the shaft axis.
        axis_point: (3,) world point on the axis (level 0), mm.
        cortex_mm: Depth of the cortical shell, mm.
        slice_mm: Slab thickness (default: one voxel step along the axis).

    Returns:
        The involvement record.

    Raises:
        LesionError: On empty or mis-shaped masks, an invalid axis or cortex depth.
    """
    femur, lesion = _masks(grid, bone_mask, lesion_mask)
    frame = SectionFrame.build(grid, shaft_axis, axis_point, slice_mm)
    return _involvement(_band(grid, femur, lesion, frame, float(cortex_mm)))


def axial_cortical_involvement_mm(
    grid: ImageGrid,
    bone_mask: npt.ArrayLike,
    lesion_mask: npt.ArrayLike,
    *,
    shaft_axis: npt.ArrayLike,
    axis_point: npt.ArrayLike,
    cortex_mm: float = DEFAULT_CORTEX_MM,
    slice_mm: float | None = None,
) -> float:
    """Axial cortical involvement in mm (:func:`cortical_involvement`'s ``aci_mm``).

    Args:
        grid: Image geometry of the masks.
        bone_mask: Bool array of ``grid.shape``, the femur.
        lesion_mask: Bool array of ``grid.shape``, the lesion.
        shaft_axis: (3,) world direction of the shaft axis.
        axis_point: (3,) world point on the axis, mm.
        cortex_mm: Depth of the cortical shell, mm.
        slice_mm: Slab thickness (default: one voxel step along the axis).

    Returns:
        ACI in mm (0 when the lesion does not reach the cortical shell).

    Raises:
        LesionError: On empty or mis-shaped masks, an invalid axis or cortex depth.
    """
    return cortical_involvement(grid, bone_mask, lesion_mask, shaft_axis=shaft_axis,
                                axis_point=axis_point, cortex_mm=cortex_mm,
                                slice_mm=slice_mm).aci_mm


# --------------------------------------------------------------------------------------------
# Site.
# --------------------------------------------------------------------------------------------


def mirels_site_from_position(
    grid: ImageGrid,
    lesion_mask: npt.ArrayLike,
    *,
    shaft_axis: npt.ArrayLike,
    head_centre: npt.ArrayLike,
    lesser_trochanter: npt.ArrayLike | None = None,
) -> tuple[MirelsSite, dict[str, Any]]:
    """Mirels site of a femoral lesion: peritrochanteric (3 points) or lower limb (2).

    Rule: the peritrochanteric region is everything proximal to
    :data:`SUBTROCHANTERIC_LENGTH_MM` below the lesser trochanter (head, neck, trochanters
    and the subtrochanteric region; REFERENCES["subtrochanteric_region"]). A lesion any part
    of which lies there (its most proximal voxel centre at or above that level) is
    peritrochanteric. Levels are measured along the shaft axis from the head centre. Without
    a lesser-trochanter landmark its level is taken :data:`LESSER_TROCHANTER_DEPTH_MM` below
    the head centre (an estimate; the evidence says so).

    Args:
        grid: Image geometry of the mask.
        lesion_mask: Bool array of ``grid.shape``.
        shaft_axis: (3,) world direction of the shaft axis, pointing proximally.
        head_centre: (3,) world femoral head centre, mm.
        lesser_trochanter: (3,) world lesser trochanter apex (``FemurLandmarks.
            lesser_trochanter_mm``), or None.

    Returns:
        ``(site, evidence)`` with the levels used and a ``rule`` text.

    Raises:
        LesionError: On an empty or mis-shaped mask or invalid points.
    """
    lesion = _mask(lesion_mask, grid, "lesion_mask")
    if not lesion.any():
        raise LesionError("the lesion mask is empty", hint="pass the lesion label's voxels")
    axis = _unit(shaft_axis, "shaft_axis")
    head = _point(head_centre, "head_centre")
    level = (grid.index_to_world(np.argwhere(lesion)) - head) @ axis
    if lesser_trochanter is not None:
        lt_level = float((_point(lesser_trochanter, "lesser_trochanter") - head) @ axis)
        lt_source = "lesser trochanter landmark"
    else:
        lt_level = -LESSER_TROCHANTER_DEPTH_MM
        lt_source = (f"assumed {LESSER_TROCHANTER_DEPTH_MM:g} mm below the head centre "
                     "(no landmark given)")
    boundary = lt_level - SUBTROCHANTERIC_LENGTH_MM
    top = float(level.max())
    site: MirelsSite = "peritrochanteric" if top >= boundary else "lower_limb"
    rule = (f"{site}: the lesion reaches {top:.1f} mm from the head centre along the shaft, "
            f"{'at or above' if top >= boundary else 'below'} the peritrochanteric limit "
            f"{boundary:.1f} mm ({SUBTROCHANTERIC_LENGTH_MM:g} mm below the lesser trochanter "
            f"at {lt_level:.1f} mm, {lt_source})")
    return site, {
        "site": site,
        "top_level_mm": top,
        "centroid_level_mm": float(level.mean()),
        "bottom_level_mm": float(level.min()),
        "lesser_trochanter_level_mm": lt_level,
        "lesser_trochanter_source": lt_source,
        "boundary_level_mm": boundary,
        "rule": rule,
        "source": REFERENCES["subtrochanteric_region"],
    }


# --------------------------------------------------------------------------------------------
# Everything at once.
# --------------------------------------------------------------------------------------------


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class LesionMeasurements:
    """Image-derived inputs of the Mirels score and of the ACI rule, with derivations.

    Levels are mm along the shaft axis from the head centre (negative = distal).

    Attributes:
        kind: ``"lytic"``, ``"blastic"`` or ``"mixed"`` (Mirels lesion item).
        kind_evidence: What :func:`lesion_type` found.
        site: ``"peritrochanteric"`` or ``"lower_limb"`` (Mirels site item).
        site_evidence: What :func:`mirels_site_from_position` found.
        size_basis: ``"diameter"`` or ``"circumference"``: which fraction is the Mirels size.
        size_fraction: The Mirels size fraction, in [0, 1].
        size: Diameter fraction record.
        involvement: Axial/circumferential cortical involvement record.
        aci_mm: Axial cortical involvement (mm).
        circumferential_fraction: Largest circumferential cortical involvement, [0, 1].
        volume_mm3: Lesion volume (voxel count times voxel volume).
        centroid_mm: (3,) float64 world centroid of the lesion voxels.
        frame: The section frame (axis, level-0 point at the head centre's level, slab).
        derivations: One text per item (``"site"``, ``"lesion"``, ``"size"``, ``"aci"``)
            saying how it was measured, for reports and ``MirelsItem.derivation``.
    """

    kind: LesionKind
    kind_evidence: Mapping[str, Any]
    site: MirelsSite
    site_evidence: Mapping[str, Any]
    size_basis: SizeBasis
    size_fraction: float
    size: SizeFraction
    involvement: CorticalInvolvement
    aci_mm: float
    circumferential_fraction: float
    volume_mm3: float
    centroid_mm: FloatArray
    frame: SectionFrame
    derivations: Mapping[str, str]

    def __post_init__(self) -> None:
        freeze_arrays(self, "centroid_mm")

    def mirels_inputs(self) -> dict[str, Any]:
        """Keyword arguments for ``risk.mirels.score_mirels`` (add ``pain=``)."""
        return {"site": self.site, "lesion": self.kind, "size_fraction": self.size_fraction}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "kind": self.kind,
            "kind_evidence": dict(self.kind_evidence),
            "site": self.site,
            "site_evidence": dict(self.site_evidence),
            "size_basis": self.size_basis,
            "size_fraction": self.size_fraction,
            "size": self.size.to_dict(),
            "involvement": self.involvement.to_dict(),
            "aci_mm": self.aci_mm,
            "circumferential_fraction": self.circumferential_fraction,
            "volume_mm3": self.volume_mm3,
            "centroid_mm": self.centroid_mm.tolist(),
            "frame": self.frame.to_dict(),
            "levels": "mm along the shaft axis from the head centre, negative distal",
            "derivations": dict(self.derivations),
        }


def measure_lesion(
    ct: CTVolume,
    bone_mask: npt.ArrayLike,
    lesion_mask: npt.ArrayLike,
    *,
    shaft_axis: npt.ArrayLike,
    axis_point: npt.ArrayLike,
    head_centre: npt.ArrayLike,
    lesser_trochanter: npt.ArrayLike | None = None,
    size_basis: SizeBasis = "diameter",
    cortex_mm: float = DEFAULT_CORTEX_MM,
    ring_mm: tuple[float, float] = DEFAULT_RING_MM,
    slice_mm: float | None = None,
) -> LesionMeasurements:
    """Type, site, size fraction, ACI and circumferential involvement of one lesion.

    Build the Mirels score with ``score_mirels(**m.mirels_inputs(), pain=...)`` (pain comes
    from the patient) and test the ACI with ``risk.mirels.aci_positive(m.aci_mm)``.

    Args:
        ct: The CT in HU.
        bone_mask: Bool array of ``ct.grid.shape``, the femur.
        lesion_mask: Bool array of ``ct.grid.shape``, the lesion.
        shaft_axis: (3,) world direction of the shaft axis, pointing proximally.
        axis_point: (3,) world point on the shaft axis, mm.
        head_centre: (3,) world femoral head centre, mm (level 0 of every level reported).
        lesser_trochanter: (3,) world lesser trochanter apex, or None (see
            :func:`mirels_site_from_position`).
        size_basis: ``"diameter"`` (worst projected width, the default) or
            ``"circumference"`` (circumferential cortical involvement) as the Mirels size.
        cortex_mm: Depth of the cortical shell, mm.
        ring_mm: Reference ring around the lesion for its type, mm.
        slice_mm: Slab thickness (default: one voxel step along the axis).

    Returns:
        The measurements.

    Raises:
        LesionError: On empty or mis-shaped masks, invalid axis/points/options, or no bone
            around the lesion.
    """
    if size_basis not in ("diameter", "circumference"):
        raise LesionError(f"unknown size basis {size_basis!r}",
                          hint="use 'diameter' or 'circumference'")
    grid = ct.grid
    femur, lesion = _masks(grid, bone_mask, lesion_mask)
    axis = _unit(shaft_axis, "shaft_axis")
    point = _point(axis_point, "axis_point")
    head = _point(head_centre, "head_centre")
    origin = point + float((head - point) @ axis) * axis  # on the axis, at the head's level
    frame = SectionFrame.build(grid, axis, origin, slice_mm)
    band = _band(grid, femur, lesion, frame, float(cortex_mm))
    size = _size_fraction(band)
    involvement = _involvement(band)
    kind, kind_evidence = _classify(_reference(ct, femur, lesion, ring_mm), ring_mm)
    site, site_evidence = mirels_site_from_position(
        grid, lesion, shaft_axis=axis, head_centre=head, lesser_trochanter=lesser_trochanter)
    fraction = size.fraction if size_basis == "diameter" else (
        involvement.circumferential_fraction)
    ijk = np.argwhere(lesion)
    delta = frame.slice_mm
    if size_basis == "diameter":
        size_text = (f"size fraction {fraction:.2f} of the bone's diameter: the lesion is "
                     f"{size.lesion_width_mm:.1f} mm of {size.bone_width_mm:.1f} mm in the "
                     f"worst projection, in the section {size.level_mm:.1f} mm from the head "
                     f"centre (sections {delta:.2f} mm thick perpendicular to the shaft axis; "
                     "Mirels 1989)")
    else:
        size_text = (f"size fraction {fraction:.2f} of the cortex circumference (outer "
                     f"{cortex_mm:g} mm of the bone) in the section "
                     f"{involvement.circumferential_level_mm:.1f} mm from the head centre "
                     "(Mirels 1989)")
    if involvement.involved_slices:
        aci_text = (f"axial cortical involvement {involvement.aci_mm:.1f} mm: the lesion "
                    f"reaches the outer {cortex_mm:g} mm of the bone in "
                    f"{involvement.involved_slices} sections {delta:.2f} mm thick, from "
                    f"{involvement.first_level_mm:.1f} to {involvement.last_level_mm:.1f} mm "
                    "from the head centre (Van der Linden et al. 2004; threshold in "
                    "risk.mirels.THRESHOLDS['aci'])")
    else:
        aci_text = (f"axial cortical involvement 0 mm: the lesion does not reach the outer "
                    f"{cortex_mm:g} mm of the bone (Van der Linden et al. 2004)")
    derivations = {
        "site": f"site {site_evidence['rule']}",
        "lesion": f"lesion {kind_evidence['rule']}",
        "size": size_text,
        "aci": aci_text,
    }
    return LesionMeasurements(
        kind=kind,
        kind_evidence=_frozen(kind_evidence),
        site=site,
        site_evidence=_frozen(site_evidence),
        size_basis=size_basis,
        size_fraction=float(fraction),
        size=size,
        involvement=involvement,
        aci_mm=involvement.aci_mm,
        circumferential_fraction=involvement.circumferential_fraction,
        volume_mm3=float(ijk.shape[0] * np.prod(grid.spacing)),
        centroid_mm=np.asarray(grid.index_to_world(ijk).mean(axis=0)),
        frame=frame,
        derivations=_frozen(derivations),
    )
