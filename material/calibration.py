"""HU -> equivalent mineral density (rho_QCT) calibration, and a check that a CT is in HU.

A QCT calibration is a straight line ``rho_QCT [g/cm^3] = intercept + slope * HU``. It is
specific to the scanner, tube voltage and reconstruction kernel, so osteofe never assumes one
silently: the caller gives the line, or the readings to fit it, and its name, source, phantom
material and fit statistics travel with every :class:`~material.types.MaterialField`.

Four ways to obtain the line:

* **scanner line** given directly: :class:`LinearCalibration` (``slope``, ``intercept``);
* **phantom rods, values**: mean HU measured in each rod of a calibration phantom scanned with
  the patient and the rods' nominal densities, fitted by least squares:
  :meth:`LinearCalibration.from_phantom`;
* **phantom rods, ROIs**: the rods segmented in the CT as labels, their mean HU measured here:
  :func:`calibration_from_rois`;
* **phantomless**: internal reference tissues of the patient (air, fat, muscle, optionally
  blood or thick cortical bone) with assigned K2HPO4-equivalent densities, fitted by weighted
  least squares: :func:`phantomless_calibration`.

Every fitted line carries a :class:`CalibrationFit`: the points, residuals, R^2, the standard
errors of slope and intercept and their covariance, from which :meth:`CalibrationFit.density_sd`
propagates the uncertainty of the line to any HU (reported at 1000 HU, typical of cortex).

Phantom materials. Solid or liquid phantoms are made of dipotassium hydrogen phosphate
(K2HPO4, e.g. Mindways liquid and solid phantoms) or calcium hydroxyapatite (HA, e.g. QRM,
European Spine Phantom). The two "equivalent densities" differ for the same bone, so the line
records its ``material`` and a density chain that expects the other one refuses it
(:class:`~material.laws.MaterialModel`). osteofe does not convert between them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from core.types import BoolArray, FloatArray
from material.errors import CalibrationError
from meshing.types import CTVolume, LabelMap

__all__ = [
    "DEFAULT_PHANTOMLESS_TISSUES",
    "GENERIC_LINE",
    "INTERCEPT_RANGE_G_CM3",
    "PHANTOM_MATERIALS",
    "RAW_STORAGE_MAX_HU",
    "RAW_STORAGE_MIN_HU",
    "REFERENCE_HU",
    "REFERENCE_TISSUES",
    "SLOPE_RANGE_G_CM3_PER_HU",
    "CalibrationFit",
    "LinearCalibration",
    "PhantomMaterial",
    "ReferenceTissue",
    "calibration_from_config",
    "calibration_from_rois",
    "check_ct_is_rescaled",
    "phantom_material",
    "phantomless_calibration",
]


#: Plausible calibration slopes in g/cm^3 per HU. Phantom fits on clinical scanners give
#: about 0.6e-3 to 1.2e-3 (K2HPO4 or HA equivalent); a slope outside this window almost
#: always means mg/cm^3 were entered as g/cm^3 (x1000) or the axes were swapped. A negative
#: slope (density falling with HU) is always an error.
SLOPE_RANGE_G_CM3_PER_HU: tuple[float, float] = (1e-4, 3e-3)

#: Plausible intercepts in g/cm^3 (density at 0 HU, i.e. water); phantom fits give a few
#: hundredths of a g/cm^3 either side of zero.
INTERCEPT_RANGE_G_CM3: tuple[float, float] = (-0.5, 0.5)

#: A CT whose smallest value is at least this is suspected of holding raw detector values
#: (0..4095 storage) rather than HU: any real CT of a thigh has air (-1000 HU) or fat
#: (-100 HU) in it.
RAW_STORAGE_MIN_HU: float = 0.0

#: ... provided its largest value is at least this (raw storage puts water near 1024 and
#: bone well above 2000).
RAW_STORAGE_MAX_HU: float = 2000.0

#: HU at which fit uncertainties are reported as a density (dense cortical bone reads
#: 1000-1800 HU on clinical scanners; the line's uncertainty grows away from its points).
REFERENCE_HU: float = 1000.0

#: Largest nominal rod density accepted, g/cm^3 (HA rods reach ~1.2, K2HPO4 ~0.4): a larger
#: number is almost certainly mg/cm^3.
_MAX_ROD_DENSITY_G_CM3 = 2.5

#: Phantom materials and what their densities mean.
PHANTOM_MATERIALS: dict[str, str] = {
    "K2HPO4": "dipotassium hydrogen phosphate equivalent density, g/cm^3 (e.g. Mindways)",
    "HA": "calcium hydroxyapatite equivalent density, g/cm^3 (e.g. QRM, European Spine "
    "Phantom)",
}

#: The mineral a calibration line's densities are equivalent to.
PhantomMaterial = Literal["K2HPO4", "HA"]

_MATERIAL_ALIASES: dict[str, PhantomMaterial] = {
    "k2hpo4": "K2HPO4",
    "dipotassium phosphate": "K2HPO4",
    "dipotassium hydrogen phosphate": "K2HPO4",
    "ha": "HA",
    "hydroxyapatite": "HA",
    "caha": "HA",
    "calcium hydroxyapatite": "HA",
}


def phantom_material(name: str) -> PhantomMaterial:
    """Normalise a phantom material name (``"k2hpo4"``, ``"hydroxyapatite"``, ...).

    Returns:
        ``"K2HPO4"`` or ``"HA"``.

    Raises:
        CalibrationError: For any other name.
    """
    key = str(name).strip().lower()
    if key not in _MATERIAL_ALIASES:
        raise CalibrationError(
            f"unknown calibration phantom material {name!r}",
            hint="use 'K2HPO4' (dipotassium hydrogen phosphate, e.g. Mindways) or 'HA' "
            "(hydroxyapatite, e.g. QRM or the European Spine Phantom)",
        )
    return _MATERIAL_ALIASES[key]


# --------------------------------------------------------------------------------------------
# Fit statistics.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationFit:
    """How a calibration line was fitted, and how good and how certain it is.

    Attributes:
        method: ``"phantom rods"``, ``"phantom ROIs"`` or ``"phantomless"``.
        names: (n,) what each point is (rod, label or tissue name).
        hu: (n,) mean HU of each point.
        density_g_cm3: (n,) nominal or assigned equivalent density of each point.
        residuals_g_cm3: (n,) ``density - line(hu)``.
        r2: Coefficient of determination of the (weighted) fit (1.0 for two points).
        covariance: 2x2 covariance of ``(intercept, slope)`` in (g/cm^3)^2, g^2/cm^6/HU and
            (g/cm^3/HU)^2, or ``None`` when it cannot be estimated (two rods: no residual
            degree of freedom).
        covariance_basis: How the covariance was obtained (from the residual scatter, or from
            the assigned uncertainties of reference tissues).
        residual_sd_g_cm3: Residual standard deviation ``sqrt(RSS / (n - 2))`` (``None`` for
            n = 2), unweighted.
        hu_sd: (n,) standard deviation of HU inside each ROI, or ``None`` for given values.
        voxels: (n,) voxels of each ROI, or ``None`` for given values.
        density_sd_g_cm3: (n,) assigned uncertainty of each point's density (phantomless), or
            ``None``.
    """

    method: str
    names: tuple[str, ...]
    hu: tuple[float, ...]
    density_g_cm3: tuple[float, ...]
    residuals_g_cm3: tuple[float, ...]
    r2: float
    covariance: tuple[tuple[float, float], tuple[float, float]] | None
    covariance_basis: str
    residual_sd_g_cm3: float | None
    hu_sd: tuple[float, ...] | None = None
    voxels: tuple[int, ...] | None = None
    density_sd_g_cm3: tuple[float, ...] | None = None

    @property
    def n(self) -> int:
        """Number of points fitted."""
        return len(self.hu)

    @property
    def stderr_intercept(self) -> float | None:
        """Standard error of the intercept, g/cm^3 (``None`` without a covariance)."""
        return None if self.covariance is None else math.sqrt(self.covariance[0][0])

    @property
    def stderr_slope(self) -> float | None:
        """Standard error of the slope, g/cm^3 per HU (``None`` without a covariance)."""
        return None if self.covariance is None else math.sqrt(self.covariance[1][1])

    def density_sd(self, hu: npt.ArrayLike) -> FloatArray | None:
        """Standard uncertainty of the line's density at ``hu`` (g/cm^3, same shape).

        ``sqrt(var_a + 2 hu cov_ab + hu^2 var_b)`` for ``rho = a + b HU``: the uncertainty of
        the calibration line itself (not of a single voxel, whose noise adds to it).
        ``None`` when the fit has no covariance.
        """
        if self.covariance is None:
            return None
        h = np.asarray(hu, dtype=np.float64)
        (vaa, vab), (_, vbb) = self.covariance
        return np.asarray(np.sqrt(np.maximum(vaa + 2.0 * h * vab + h * h * vbb, 0.0)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready statistics, with the density uncertainty at :data:`REFERENCE_HU`."""
        sd = self.density_sd(REFERENCE_HU)
        return {
            "method": self.method,
            "n": self.n,
            "points": [
                {
                    "name": name,
                    "hu": hu,
                    "density_g_cm3": rho,
                    "residual_g_cm3": res,
                    **({"hu_sd": self.hu_sd[i]} if self.hu_sd is not None else {}),
                    **({"voxels": self.voxels[i]} if self.voxels is not None else {}),
                    **({"density_sd_g_cm3": self.density_sd_g_cm3[i]}
                       if self.density_sd_g_cm3 is not None else {}),
                }
                for i, (name, hu, rho, res) in enumerate(
                    zip(self.names, self.hu, self.density_g_cm3, self.residuals_g_cm3,
                        strict=True)
                )
            ],
            "r2": self.r2,
            "residual_sd_g_cm3": self.residual_sd_g_cm3,
            "max_abs_residual_g_cm3": float(np.max(np.abs(self.residuals_g_cm3))),
            "stderr_slope_g_cm3_per_HU": self.stderr_slope,
            "stderr_intercept_g_cm3": self.stderr_intercept,
            "covariance_intercept_slope": None if self.covariance is None
            else [list(row) for row in self.covariance],
            "covariance_basis": self.covariance_basis,
            "reference_hu": REFERENCE_HU,
            "density_sd_at_reference_hu_g_cm3": None if sd is None else float(sd),
        }


def _line_fit(
    x: FloatArray, y: FloatArray, sigma: FloatArray | None
) -> tuple[float, float, FloatArray, FloatArray, float]:
    """(Weighted) least-squares line ``y = a + b x``.

    Returns:
        ``(a, b, inverse_normal_matrix, residuals, r2)``. Without ``sigma`` the inverse normal
        matrix is ``(X^T X)^-1`` (multiply by the residual variance for the covariance); with
        ``sigma`` it is ``(X^T W X)^-1`` with ``W = 1 / sigma^2``, the covariance for known
        uncertainties. R^2 uses the same weights.
    """
    w = np.ones_like(x) if sigma is None else 1.0 / sigma**2
    design = np.column_stack([np.ones_like(x), x])
    normal = design.T @ (w[:, None] * design)
    inverse = np.linalg.inv(normal)
    a, b = inverse @ (design.T @ (w * y))
    residuals = y - (a + b * x)
    mean = float(np.sum(w * y) / np.sum(w))
    total = float(np.sum(w * (y - mean) ** 2))
    r2 = 1.0 - float(np.sum(w * residuals**2)) / total if total > 0.0 else 1.0
    return float(a), float(b), inverse, residuals, r2


def _as_pair(matrix: FloatArray) -> tuple[tuple[float, float], tuple[float, float]]:
    return ((float(matrix[0, 0]), float(matrix[0, 1])), (float(matrix[1, 0]),
                                                          float(matrix[1, 1])))


# --------------------------------------------------------------------------------------------
# The line.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearCalibration:
    """A linear HU -> equivalent mineral density calibration.

    ``rho_QCT [g/cm^3] = intercept + slope * HU``.

    Attributes:
        slope: g/cm^3 per HU; must lie in :data:`SLOPE_RANGE_G_CM3_PER_HU`.
        intercept: g/cm^3 at 0 HU; must lie in :data:`INTERCEPT_RANGE_G_CM3`.
        name: Short identifier reported with results (e.g. ``"mindways_k2hpo4_120kV"``).
        source: Where the line comes from: a phantom in the scan, a scanner line, a paper.
        material: The mineral the density is equivalent to, ``"K2HPO4"`` or ``"HA"`` (aliases
            such as ``"hydroxyapatite"`` are normalised).
        fit: Fit statistics when the line was fitted here, else ``None``.

    Raises:
        CalibrationError: On a non-finite, negative or implausible slope, an implausible
            intercept, or an unknown material.
    """

    slope: float
    intercept: float
    name: str = "user"
    source: str = "user-given scanner line"
    material: PhantomMaterial = "K2HPO4"
    fit: CalibrationFit | None = None

    def __post_init__(self) -> None:
        slope, intercept = float(self.slope), float(self.intercept)
        low, high = SLOPE_RANGE_G_CM3_PER_HU
        if math.isfinite(slope) and slope <= 0.0:
            raise CalibrationError(
                f"calibration '{self.name}' has slope {slope:g} g/cm^3 per HU: density must "
                "grow with HU",
                hint="a negative or zero slope means the phantom densities or HU were paired "
                "in the wrong order, or HU was fitted as a function of density; refit "
                "density = intercept + slope * HU (slope about +0.0008)",
            )
        if not math.isfinite(slope) or not low <= slope <= high:
            raise CalibrationError(
                f"calibration '{self.name}' has slope {slope:g} g/cm^3 per HU, outside the "
                f"plausible {low:g}..{high:g}",
                hint="give the slope in g/cm^3 per HU (a phantom fit gives about 0.0008); "
                "divide by 1000 if it was fitted in mg/cm^3, and make sure density = "
                "intercept + slope * HU, not HU as a function of density",
            )
        low, high = INTERCEPT_RANGE_G_CM3
        if not math.isfinite(intercept) or not low <= intercept <= high:
            raise CalibrationError(
                f"calibration '{self.name}' has intercept {intercept:g} g/cm^3, outside the "
                f"plausible {low:g}..{high:g}",
                hint="give the intercept in g/cm^3 (density at 0 HU, close to zero); divide "
                "by 1000 if it was fitted in mg/cm^3",
            )
        object.__setattr__(self, "slope", slope)
        object.__setattr__(self, "intercept", intercept)
        object.__setattr__(self, "material", phantom_material(self.material))

    def __call__(self, hu: npt.ArrayLike) -> FloatArray:
        """Convert HU to rho_QCT.

        Args:
            hu: Any shape, Hounsfield units.

        Returns:
            float64 array of the same shape, rho_QCT in g/cm^3 (negative below the line's
            zero, e.g. fat; the material model clamps later stages).
        """
        return np.asarray(self.intercept + self.slope * np.asarray(hu, dtype=np.float64))

    def hu_for_density(self, rho_qct: npt.ArrayLike) -> FloatArray:
        """Invert the line: the HU that gives ``rho_qct`` (g/cm^3), float64, same shape."""
        rho = np.asarray(rho_qct, dtype=np.float64)
        return np.asarray((rho - self.intercept) / self.slope)

    @classmethod
    def from_phantom(
        cls,
        hu: npt.ArrayLike,
        density_g_cm3: npt.ArrayLike,
        *,
        name: str = "phantom",
        source: str = "least-squares fit to phantom rods",
        material: str = "K2HPO4",
        names: Sequence[str] | None = None,
        min_r2: float = 0.95,
        method: str = "phantom rods",
        hu_sd: Sequence[float] | None = None,
        voxels: Sequence[int] | None = None,
    ) -> LinearCalibration:
        """Fit the line by ordinary least squares to phantom rod readings.

        The standard errors of slope and intercept come from the residual scatter
        (``n - 2`` degrees of freedom), so three or more rods are needed for an uncertainty;
        two rods give the line without one.

        Args:
            hu: (r,) mean HU measured in each phantom rod.
            density_g_cm3: (r,) nominal equivalent density of each rod in g/cm^3.
            name: Identifier of the calibration.
            source: Where the readings come from; the fit's R^2 and n are appended.
            material: Rod material, ``"K2HPO4"`` or ``"HA"``.
            names: (r,) names of the rods (default ``"rod 1"``, ...).
            min_r2: Refuse fits whose R^2 is lower (clinical phantom fits exceed 0.99; a low
                R^2 means a misplaced ROI or a rod listed in the wrong order).
            method: Recorded in the fit (``"phantom rods"`` or ``"phantom ROIs"``).
            hu_sd: (r,) HU standard deviation inside each ROI, if measured.
            voxels: (r,) voxel count of each ROI, if measured.

        Returns:
            The fitted calibration (validated like any other), with its :class:`CalibrationFit`.

        Raises:
            CalibrationError: With fewer than two distinct rods, mismatched lengths, rod
                densities that look like mg/cm^3, R^2 below ``min_r2``, or an implausible
                fitted line (e.g. a negative slope).
        """
        x = np.asarray(hu, dtype=np.float64).reshape(-1)
        y = np.asarray(density_g_cm3, dtype=np.float64).reshape(-1)
        if x.shape != y.shape or np.unique(x).size < 2:
            raise CalibrationError(
                f"phantom fit '{name}' needs at least two rods with distinct HU and one "
                f"density per rod, got {x.size} HU and {y.size} densities",
                hint="measure the mean HU inside every phantom rod and pass the rods' "
                "nominal densities in the same order",
            )
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise CalibrationError(f"phantom fit '{name}' has non-finite HU or densities",
                                   hint="check the rod readings")
        if np.max(np.abs(y)) > _MAX_ROD_DENSITY_G_CM3:
            raise CalibrationError(
                f"phantom fit '{name}' has rod densities up to {np.max(np.abs(y)):g}: these "
                "look like mg/cm^3, not g/cm^3",
                hint="divide the rod densities by 1000 (or set density_unit = 'mg/cm3' in "
                "the configuration)",
            )
        labels = tuple(names) if names is not None else tuple(
            f"rod {i + 1}" for i in range(x.size))
        if len(labels) != x.size:
            raise CalibrationError(f"phantom fit '{name}' has {len(labels)} names for "
                                   f"{x.size} rods", hint="give one name per rod")
        intercept, slope, inverse, residuals, r2 = _line_fit(x, y, None)
        dof = x.size - 2
        if dof > 0:
            variance = float(np.sum(residuals**2)) / dof
            covariance: tuple[tuple[float, float], tuple[float, float]] | None = _as_pair(
                inverse * variance)
            residual_sd: float | None = math.sqrt(variance)
            basis = f"residual scatter of the rods ({dof} degrees of freedom)"
        else:
            covariance, residual_sd = None, None
            basis = "none: two rods leave no residual degree of freedom"
        if r2 < min_r2:
            worst = int(np.argmax(np.abs(residuals)))
            raise CalibrationError(
                f"phantom fit '{name}' is poor: R^2 = {r2:.4f} < {min_r2:g} over {x.size} rods "
                f"(largest residual {residuals[worst]:+.4f} g/cm^3 at {labels[worst]}, "
                f"{x[worst]:.1f} HU)",
                hint="check each rod's ROI lies inside the rod, away from its edge and from "
                "streaks, and that densities are listed in the same order as the readings",
            )
        fit = CalibrationFit(
            method=method,
            names=labels,
            hu=tuple(float(v) for v in x),
            density_g_cm3=tuple(float(v) for v in y),
            residuals_g_cm3=tuple(float(v) for v in residuals),
            r2=r2,
            covariance=covariance,
            covariance_basis=basis,
            residual_sd_g_cm3=residual_sd,
            hu_sd=None if hu_sd is None else tuple(float(v) for v in hu_sd),
            voxels=None if voxels is None else tuple(int(v) for v in voxels),
        )
        return cls(slope, intercept, name, f"{source} (R^2 = {r2:.4f}, n = {x.size})",
                   phantom_material(material), fit)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: name, source, material, line, and fit statistics."""
        return {
            "name": self.name,
            "source": self.source,
            "material": self.material,
            "material_meaning": PHANTOM_MATERIALS[self.material],
            "slope_g_cm3_per_HU": self.slope,
            "intercept_g_cm3": self.intercept,
            "line": f"rho_QCT = {self.intercept:.6g} + {self.slope:.6g} * HU [g/cm^3]",
            "fit": None if self.fit is None else self.fit.to_dict(),
        }


# --------------------------------------------------------------------------------------------
# ROIs in the CT.
# --------------------------------------------------------------------------------------------


def _label_array(ct: CTVolume, labels: LabelMap | npt.ArrayLike, what: str) -> np.ndarray:
    if isinstance(labels, LabelMap):
        if not labels.grid.same_as(ct.grid):
            raise CalibrationError(
                f"{what} label map lies on another grid than the CT ({labels.grid.shape} vs "
                f"{ct.grid.shape} voxels, or different spacing/origin/direction)",
                hint="resample the labels onto the CT grid first (meshing.imaging."
                "align_labels)",
            )
        return np.asarray(labels.labels)
    array = np.asarray(labels)
    if array.shape != ct.grid.shape:
        raise CalibrationError(
            f"{what} mask/label array has shape {array.shape}, the CT {ct.grid.shape}",
            hint="give masks on the CT grid",
        )
    return array


def _roi_stats(
    hu: np.ndarray, mask: BoolArray, erode_voxels: int, min_voxels: int, what: str
) -> tuple[float, float, int]:
    """Mean and SD of HU in a (possibly eroded) mask, and its voxel count."""
    if erode_voxels > 0:
        mask = ndimage.binary_erosion(mask, iterations=erode_voxels)
    count = int(np.count_nonzero(mask))
    if count < min_voxels:
        raise CalibrationError(
            f"{what} has {count} voxel(s) (after eroding {erode_voxels} voxel(s)), fewer "
            f"than the {min_voxels} needed for a stable mean",
            hint="check the label value / threshold window, draw a larger ROI, or lower "
            "erode_voxels",
        )
    values = hu[mask].astype(np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if count > 1 else 0.0, count


def calibration_from_rois(
    ct: CTVolume,
    labels: LabelMap | npt.ArrayLike,
    densities_g_cm3: Mapping[int, float],
    *,
    material: str = "K2HPO4",
    name: str = "phantom_rois",
    erode_voxels: int = 0,
    min_voxels: int = 20,
    min_r2: float = 0.95,
) -> LinearCalibration:
    """Fit the calibration to phantom rods segmented in the CT (one label per rod).

    The mean HU inside each rod's label (optionally eroded to keep away from the rod's
    partial-volume edge) is paired with the rod's nominal density and fitted by
    :meth:`LinearCalibration.from_phantom`.

    Args:
        ct: The CT in HU (the phantom scanned with the patient).
        labels: Label map on the CT grid (or an integer array of the CT's shape) in which
            each rod is one label value.
        densities_g_cm3: Rod label value -> nominal equivalent density, g/cm^3.
        material: Rod material, ``"K2HPO4"`` or ``"HA"``.
        name: Identifier of the calibration.
        erode_voxels: Voxels eroded from each ROI before averaging.
        min_voxels: Smallest ROI accepted.
        min_r2: As in :meth:`LinearCalibration.from_phantom`.

    Returns:
        The fitted line; its fit records mean and SD of HU and voxel count per ROI.

    Raises:
        CalibrationError: The CT is not in HU, the labels are on another grid, a rod label
            has too few voxels, fewer than two rods, or a poor or implausible fit.
    """
    check_ct_is_rescaled(ct.hu)
    array = _label_array(ct, labels, "phantom rod")
    if len(densities_g_cm3) < 2:
        raise CalibrationError(
            f"phantom ROI calibration needs at least two rods, got {len(densities_g_cm3)}",
            hint="give the label value and nominal density of every rod",
        )
    means, sds, counts, rhos, names = [], [], [], [], []
    for value, rho in sorted(densities_g_cm3.items()):
        mean, sd, count = _roi_stats(ct.hu, array == int(value), erode_voxels, min_voxels,
                                     f"phantom rod label {value}")
        means.append(mean)
        sds.append(sd)
        counts.append(count)
        rhos.append(float(rho))
        names.append(f"label {int(value)}")
    return LinearCalibration.from_phantom(
        means, rhos, name=name, source=f"least-squares fit to {len(means)} phantom rod ROIs "
        "segmented in the CT", material=material, names=names, min_r2=min_r2,
        method="phantom ROIs", hu_sd=sds, voxels=counts,
    )


# --------------------------------------------------------------------------------------------
# Phantomless calibration from internal reference tissues.
# --------------------------------------------------------------------------------------------

#: osteofe's generic clinical 120 kV K2HPO4 line ``(intercept, slope)``, g/cm^3 and g/cm^3/HU:
#: the line the built-in phantom is synthesised with. It defines the assigned densities of
#: :data:`REFERENCE_TISSUES`. It is a round number of the order of clinical phantom fits, not
#: any scanner's measured line.
GENERIC_LINE: tuple[float, float] = (-0.01, 0.0008)


@dataclass(frozen=True)
class ReferenceTissue:
    """An internal reference tissue of a phantomless calibration.

    Attributes:
        name: Registry key (``"air"``, ``"fat"``, ...).
        typical_hu: Typical mean HU of the tissue on a clinical scanner at 120 kV.
        density_g_cm3: Assigned K2HPO4-equivalent density: ``typical_hu`` through
            :data:`GENERIC_LINE`.
        sd_g_cm3: Standard uncertainty assigned to that density: the spread of the tissue's
            HU between patients and scanners, through the line's slope.
        hu_window: (low, high) HU window selecting the tissue by threshold.
        source: Where the typical HU and the window come from.
        verified: ``False`` where the numbers could not be checked against a source here.
    """

    name: str
    typical_hu: float
    density_g_cm3: float
    sd_g_cm3: float
    hu_window: tuple[float, float]
    source: str
    verified: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "name": self.name,
            "typical_hu": self.typical_hu,
            "density_g_cm3": self.density_g_cm3,
            "sd_g_cm3": self.sd_g_cm3,
            "hu_window": list(self.hu_window),
            "source": self.source,
            "verified": self.verified,
        }


def _tissue(name: str, typical_hu: float, sd_hu: float, window: tuple[float, float],
            source: str, verified: bool = False) -> ReferenceTissue:
    intercept, slope = GENERIC_LINE
    return ReferenceTissue(name, typical_hu, intercept + slope * typical_hu, slope * sd_hu,
                           window, source, verified)


#: Reference tissues for :func:`phantomless_calibration`, by name.
#:
#: Method (after the internal-calibration studies of Michalski et al. 2020, Med Eng Phys
#: 78:55, and Winsor et al. 2021, Bone 143:115759, which pair air, adipose tissue, blood,
#: skeletal muscle and cortical bone with equivalent densities from phantom-calibrated
#: scans): each tissue is assigned the K2HPO4-equivalent density that its typical 120 kV HU has
#: on osteofe's generic line (:data:`GENERIC_LINE`), with an uncertainty equal to the typical
#: between-patient spread of its HU. Those published per-tissue densities were NOT
#: transcribed (not checked here), so every entry is ``verified=False``. Consequence: the
#: phantomless line corrects a scan's offset and gain relative to typical tissue HU, but it
#: inherits the generic line's mineral sensitivity, and the reported uncertainty says how far
#: that can be off.
#:
#: - air: -1000 HU by definition of the Hounsfield scale; its assigned +-0.08 g/cm^3 (100 HU
#:   times the slope) stands for a +-10% spread of mineral sensitivity between scanners and
#:   tube voltages, which air, lying 1000 HU from water, carries into the slope.
#: - fat (adipose) -100 +- 20 HU and skeletal muscle +45 +- 10 HU; threshold windows -190..-30
#:   and -29..150 HU as used for CT body composition (Mitsiopoulos et al. 1998, J Appl Physiol
#:   85:115, doi:10.1152/jappl.1998.85.1.115; window values from memory).
#: - blood +40 +- 10 HU (unenhanced scans only; contrast raises it by hundreds of HU).
#: - cortical_bone +1500 +- 200 HU: thick diaphyseal cortex at <= 1 mm voxels only; partial
#:   volume lowers it on thicker slices, so it is not a default.
REFERENCE_TISSUES: dict[str, ReferenceTissue] = {
    t.name: t
    for t in (
        _tissue("air", -1000.0, 100.0, (-1200.0, -900.0),
                "Hounsfield scale definition (air = -1000 HU); +-100 HU stands for a +-10% "
                "spread of scanner mineral sensitivity (osteofe assumption)", verified=True),
        _tissue("fat", -100.0, 20.0, (-190.0, -30.0),
                "typical adipose tissue HU at 120 kV; window after Mitsiopoulos et al. 1998"),
        _tissue("muscle", 45.0, 10.0, (-29.0, 150.0),
                "typical skeletal muscle HU at 120 kV; window after Mitsiopoulos et al. 1998"),
        _tissue("blood", 40.0, 10.0, (0.0, 80.0),
                "typical unenhanced blood HU (aorta, vena cava) at 120 kV"),
        _tissue("cortical_bone", 1500.0, 200.0, (1000.0, 2500.0),
                "typical thick diaphyseal cortex at <= 1 mm voxels, 120 kV"),
    )
}

#: Tissues used when none are named: those present in every CT of the hip.
DEFAULT_PHANTOMLESS_TISSUES: tuple[str, ...] = ("air", "fat", "muscle")


def phantomless_calibration(
    ct: CTVolume,
    tissues: Sequence[str] = DEFAULT_PHANTOMLESS_TISSUES,
    *,
    masks: Mapping[str, npt.ArrayLike | int] | None = None,
    labels: LabelMap | None = None,
    region: npt.ArrayLike | None = None,
    references: Mapping[str, ReferenceTissue] | None = None,
    erode_voxels: int = 1,
    min_voxels: int = 50,
    name: str = "phantomless",
) -> LinearCalibration:
    """Calibrate without a phantom, from the patient's own reference tissues.

    For each tissue the mean HU is measured in a mask, given either explicitly (a boolean
    array, or a label value of ``labels``), or by the tissue's HU threshold window within
    ``region``. Masks are eroded by ``erode_voxels`` so that partial-volume voxels at tissue
    borders do not bias the mean. The means are paired with the tissues' assigned densities
    (:data:`REFERENCE_TISSUES`) and fitted by weighted least squares, each point weighted by
    ``1 / (sd_ref^2 + (slope * sem_HU)^2)`` (assigned density uncertainty plus the measured
    mean's standard error through the slope; two passes). The covariance of slope and
    intercept is ``(X^T W X)^-1`` from those assigned uncertainties, scaled up by the reduced
    chi^2 when the points scatter more than assigned (n > 2); its propagation to
    :data:`REFERENCE_HU` is reported.

    Args:
        ct: The CT in HU.
        tissues: Names of the reference tissues to use (keys of ``references``), >= 2.
        masks: Optional tissue name -> boolean mask on the CT grid, or label value in
            ``labels``. Tissues without one are thresholded.
        labels: Label map on the CT grid for masks given as label values.
        region: Optional boolean mask limiting threshold masks (e.g. the body, or a box
            around the thigh). Default: the whole image.
        references: Reference table (default :data:`REFERENCE_TISSUES`).
        erode_voxels: Voxels eroded from every mask.
        min_voxels: Smallest mask accepted (after erosion).
        name: Identifier of the calibration.

    Returns:
        The line, with ``fit.method == "phantomless"``.

    Raises:
        CalibrationError: The CT is not in HU, a tissue is unknown or its mask is too small,
            fewer than two tissues, or the fitted line is implausible.
    """
    check_ct_is_rescaled(ct.hu)
    table = dict(REFERENCE_TISSUES if references is None else references)
    chosen = list(dict.fromkeys(tissues))
    if len(chosen) < 2:
        raise CalibrationError(
            f"phantomless calibration needs at least two reference tissues, got {chosen}",
            hint=f"use e.g. {list(DEFAULT_PHANTOMLESS_TISSUES)}",
        )
    unknown = [t for t in chosen if t not in table]
    if unknown:
        raise CalibrationError(f"unknown reference tissue(s) {unknown}",
                               hint=f"use some of {sorted(table)}")
    given = dict(masks or {})
    extra = sorted(set(given) - set(chosen))
    if extra:
        raise CalibrationError(f"masks given for tissue(s) {extra} that are not used",
                               hint=f"add them to tissues (now {chosen}) or drop their masks")
    region_mask = None if region is None else _label_array(ct, region, "region").astype(bool)
    label_array = None if labels is None else _label_array(ct, labels, "reference tissue")
    means, sds, counts, rhos, ref_sds, how = [], [], [], [], [], []
    for tissue in chosen:
        ref = table[tissue]
        spec = given.get(tissue)
        if spec is None:
            low, high = ref.hu_window
            mask = (ct.hu >= low) & (ct.hu <= high)
            if region_mask is not None:
                mask &= region_mask
            how.append(f"{tissue}: HU window {low:g}..{high:g}"
                       + (" in region" if region_mask is not None else ""))
        elif isinstance(spec, int | np.integer) and not isinstance(spec, bool):
            if label_array is None:
                raise CalibrationError(
                    f"tissue '{tissue}' is given as label {int(spec)} but no label map was "
                    "passed", hint="pass labels=<LabelMap on the CT grid>")
            mask = label_array == int(spec)
            how.append(f"{tissue}: label {int(spec)}")
        else:
            mask = _label_array(ct, spec, f"'{tissue}'").astype(bool)
            how.append(f"{tissue}: given mask")
        mean, sd, count = _roi_stats(ct.hu, mask, erode_voxels, min_voxels,
                                     f"reference tissue '{tissue}' ({how[-1]})")
        means.append(mean)
        sds.append(sd)
        counts.append(count)
        rhos.append(ref.density_g_cm3)
        ref_sds.append(ref.sd_g_cm3)
    x, y = np.asarray(means), np.asarray(rhos)
    if np.unique(x).size < 2:
        raise CalibrationError("reference tissues have identical mean HU",
                               hint="check the tissue masks")
    sem = np.asarray(sds) / np.sqrt(np.asarray(counts, dtype=np.float64))
    sigma = np.asarray(ref_sds, dtype=np.float64)
    if np.any(sigma <= 0.0):
        raise CalibrationError("reference tissue uncertainties must be positive",
                               hint="give every ReferenceTissue a positive sd_g_cm3")
    slope = GENERIC_LINE[1]
    for _ in range(2):  # errors in HU enter through the slope: refine the weights once
        sigma_total = np.sqrt(sigma**2 + (slope * sem) ** 2)
        intercept, slope, inverse, residuals, r2 = _line_fit(x, y, sigma_total)
    dof = x.size - 2
    chi2 = float(np.sum((residuals / sigma_total) ** 2))
    scale = max(1.0, chi2 / dof) if dof > 0 else 1.0
    basis = "assigned reference-tissue density uncertainties (weighted least squares)"
    if dof > 0:
        basis += f"; reduced chi^2 = {chi2 / dof:.3g}" + (
            ", covariance scaled by it" if scale > 1.0 else "")
    residual_sd = math.sqrt(float(np.sum(residuals**2)) / dof) if dof > 0 else None
    fit = CalibrationFit(
        method="phantomless",
        names=tuple(chosen),
        hu=tuple(float(v) for v in x),
        density_g_cm3=tuple(float(v) for v in y),
        residuals_g_cm3=tuple(float(v) for v in residuals),
        r2=r2,
        covariance=_as_pair(inverse * scale),
        covariance_basis=basis,
        residual_sd_g_cm3=residual_sd,
        hu_sd=tuple(float(v) for v in sds),
        voxels=tuple(int(v) for v in counts),
        density_sd_g_cm3=tuple(float(v) for v in sigma),
    )
    source = ("phantomless: internal reference tissues (" + "; ".join(how) + ") with assigned "
              "K2HPO4-equivalent densities on osteofe's generic 120 kV line [UNVERIFIED "
              "reference densities]")
    return LinearCalibration(slope, intercept, name, source, "K2HPO4", fit)


# --------------------------------------------------------------------------------------------
# From a configuration dictionary.
# --------------------------------------------------------------------------------------------

_CONFIG_COMMON = {"name", "source", "material", "density_unit"}
_CONFIG_KINDS = {
    "line": {"slope", "intercept"},
    "rods": {"rods"},
    "rod_labels": {"rod_labels", "erode_voxels", "min_r2"},
    "phantomless": {"phantomless", "erode_voxels"},
}


def calibration_from_config(
    spec: Mapping[str, Any],
    *,
    ct: CTVolume | None = None,
    labels: LabelMap | None = None,
) -> LinearCalibration:
    """Build a calibration from a configuration table (e.g. a TOML ``[calibration]`` section).

    Exactly one kind of entry:

    * ``slope`` and ``intercept``: a scanner line (g/cm^3 per HU, g/cm^3);
    * ``rods``: phantom readings, ``[{hu = 3.1, density = 0.0}, {hu = 120.0, density = 0.1}]``
      or ``{hu = [...], density = [...]}``;
    * ``rod_labels``: rod label value -> density, the HU measured in ``labels`` (needs
      ``ct`` and ``labels``); optional ``erode_voxels``, ``min_r2``;
    * ``phantomless``: ``true`` (default tissues), a list of tissue names (thresholds), or a
      table tissue -> label value in ``labels``; optional ``erode_voxels``.

    Common optional keys: ``name``, ``source``, ``material`` (``"K2HPO4"`` or ``"HA"``) and
    ``density_unit`` (``"g/cm3"``, the default, or ``"mg/cm3"`` for rod densities).

    Raises:
        CalibrationError: Unknown or conflicting keys, missing CT/labels, or any error of
            the chosen method.
    """
    data = dict(spec)
    kinds = [k for k, keys in _CONFIG_KINDS.items() if data.keys() & (keys - {"erode_voxels",
                                                                            "min_r2"})]
    if len(kinds) != 1:
        raise CalibrationError(
            f"calibration table must hold exactly one of slope/intercept, rods, rod_labels "
            f"or phantomless; found {kinds or 'none'} (keys {sorted(data)})",
            hint="e.g. {slope = 0.0008, intercept = -0.01} or {rods = [{hu = 0.0, density = "
            "0.0}, ...], material = 'K2HPO4'}",
        )
    kind = kinds[0]
    unknown = sorted(set(data) - _CONFIG_COMMON - _CONFIG_KINDS[kind])
    if unknown:
        raise CalibrationError(
            f"unknown key(s) {unknown} in a '{kind}' calibration table",
            hint=f"valid keys: {sorted(_CONFIG_COMMON | _CONFIG_KINDS[kind])}",
        )
    unit = str(data.get("density_unit", "g/cm3")).replace("^", "").lower()
    if unit not in ("g/cm3", "mg/cm3"):
        raise CalibrationError(f"unknown density_unit {data['density_unit']!r}",
                               hint="use 'g/cm3' or 'mg/cm3'")
    factor = 1e-3 if unit == "mg/cm3" else 1.0
    material = str(data.get("material", "K2HPO4"))
    name = str(data.get("name", kind if kind != "line" else "config"))
    try:
        if kind == "line":
            if not {"slope", "intercept"} <= data.keys():
                raise CalibrationError("a scanner line needs both slope and intercept",
                                       hint="give slope (g/cm^3 per HU) and intercept (g/cm^3)")
            return LinearCalibration(float(data["slope"]), float(data["intercept"]), name,
                                     str(data.get("source", "scanner line from configuration")),
                                     phantom_material(material))
        if kind == "rods":
            rods = data["rods"]
            if isinstance(rods, Mapping):
                hu, rho = list(rods["hu"]), list(rods["density"])
                names = None
            else:
                hu = [float(r["hu"]) for r in rods]
                rho = [float(r["density"]) for r in rods]
                names = [str(r.get("name", f"rod {i + 1}")) for i, r in enumerate(rods)]
            return LinearCalibration.from_phantom(
                hu, np.asarray(rho, dtype=np.float64) * factor, name=name,
                source=str(data.get("source", "least-squares fit to phantom rods (config)")),
                material=material, names=names,
            )
        if ct is None:
            raise CalibrationError(f"a '{kind}' calibration measures HU in the CT, but no CT "
                                   "was given", hint="pass ct= (and labels=)")
        erode = int(data.get("erode_voxels", 0 if kind == "rod_labels" else 1))
        if kind == "rod_labels":
            if labels is None:
                raise CalibrationError("rod_labels needs the label map of the rods",
                                       hint="pass labels= (the phantom rods segmented)")
            densities = {int(k): float(v) * factor for k, v in data["rod_labels"].items()}
            return calibration_from_rois(ct, labels, densities, material=material, name=name,
                                         erode_voxels=erode,
                                         min_r2=float(data.get("min_r2", 0.95)))
        choice = data["phantomless"]
        if choice is True:
            return phantomless_calibration(ct, erode_voxels=erode, name=name)
        if isinstance(choice, Mapping):
            masks = {str(k): int(v) for k, v in choice.items()}
            return phantomless_calibration(ct, list(masks), masks=dict(masks), labels=labels,
                                           erode_voxels=erode, name=name)
        if isinstance(choice, Sequence) and not isinstance(choice, str):
            return phantomless_calibration(ct, [str(t) for t in choice], erode_voxels=erode,
                                           name=name)
        raise CalibrationError(f"phantomless = {choice!r} is not understood",
                               hint="use true, a list of tissues, or a table tissue -> label")
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"malformed '{kind}' calibration table: {exc!r}",
                               hint="see material.calibration.calibration_from_config") from exc


# --------------------------------------------------------------------------------------------
# Raw storage check.
# --------------------------------------------------------------------------------------------


def check_ct_is_rescaled(hu: npt.ArrayLike) -> None:
    """Raise when a CT looks like raw scanner storage rather than Hounsfield units.

    Raw DICOM pixel data is commonly stored unsigned (0..4095) and becomes HU only after
    ``HU = RescaleSlope * value + RescaleIntercept`` (intercept usually -1024). A CT of a thigh
    always contains fat or air, i.e. negative HU; an image whose smallest value is
    >= :data:`RAW_STORAGE_MIN_HU` while its largest is >= :data:`RAW_STORAGE_MAX_HU` was
    almost certainly never rescaled, and would map every element ~1 g/cm^3 too dense.

    Args:
        hu: Any shape, the CT values (NaNs ignored).

    Raises:
        CalibrationError: If the values look like raw storage.
    """
    values = np.asarray(hu)
    if values.size == 0:
        return
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if low >= RAW_STORAGE_MIN_HU and high >= RAW_STORAGE_MAX_HU:
        raise CalibrationError(
            f"CT values span {low:g}..{high:g} with nothing negative: this looks like raw "
            "0..4095 storage, not Hounsfield units",
            hint="apply the DICOM RescaleSlope/RescaleIntercept (HU = slope * value + "
            "intercept, intercept usually -1024) when reading the CT, or pass "
            "check_rescaled=False if the image really has no fat or air in it",
        )
