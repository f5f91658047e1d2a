"""HU -> equivalent mineral density (rho_QCT) calibration, and a check that a CT is in HU.

A QCT calibration is a straight line fitted to a phantom in the scan (K2HPO4 or
hydroxyapatite rods), ``rho_QCT [g/cm^3] = intercept + slope * HU``. It is specific to the
scanner, tube voltage and reconstruction kernel, so osteofe never assumes one silently: the
caller gives the line (or the phantom readings to fit it), and its name and source travel with
every :class:`~material.types.MaterialField`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from material.errors import CalibrationError

__all__ = [
    "INTERCEPT_RANGE_G_CM3",
    "RAW_STORAGE_MAX_HU",
    "RAW_STORAGE_MIN_HU",
    "SLOPE_RANGE_G_CM3_PER_HU",
    "LinearCalibration",
    "check_ct_is_rescaled",
]

#: Plausible calibration slopes in g/cm^3 per HU. Phantom fits on clinical scanners give
#: about 0.6e-3 to 1.2e-3 (K2HPO4 or HA equivalent); a slope outside this window almost
#: always means mg/cm^3 were entered as g/cm^3 (x1000) or the axes were swapped.
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


@dataclass(frozen=True)
class LinearCalibration:
    """A linear HU -> equivalent mineral density calibration.

    ``rho_QCT [g/cm^3] = intercept + slope * HU``.

    Attributes:
        slope: g/cm^3 per HU; must lie in :data:`SLOPE_RANGE_G_CM3_PER_HU`.
        intercept: g/cm^3 at 0 HU; must lie in :data:`INTERCEPT_RANGE_G_CM3`.
        name: Short identifier reported with results (e.g. ``"mindways_k2hpo4_120kV"``).
        source: Where the line comes from: a phantom in the scan, a scanner line, a paper.

    Raises:
        CalibrationError: On a non-finite or implausible slope or intercept.
    """

    slope: float
    intercept: float
    name: str = "user"
    source: str = "user-given scanner line"

    def __post_init__(self) -> None:
        slope, intercept = float(self.slope), float(self.intercept)
        low, high = SLOPE_RANGE_G_CM3_PER_HU
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

    def __call__(self, hu: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Convert HU to rho_QCT.

        Args:
            hu: Any shape, Hounsfield units.

        Returns:
            float64 array of the same shape, rho_QCT in g/cm^3 (negative below the line's
            zero, e.g. fat; the material model clamps later stages).
        """
        return np.asarray(self.intercept + self.slope * np.asarray(hu, dtype=np.float64))

    def hu_for_density(self, rho_qct: npt.ArrayLike) -> npt.NDArray[np.float64]:
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
    ) -> LinearCalibration:
        """Fit the line by least squares to phantom rod readings.

        Args:
            hu: (r,) mean HU measured in each phantom rod.
            density_g_cm3: (r,) nominal equivalent density of each rod in g/cm^3.
            name: Identifier of the calibration.
            source: Where the readings come from; the fit's R^2 is appended.

        Returns:
            The fitted calibration (validated like any other).

        Raises:
            CalibrationError: With fewer than two distinct rods, mismatched lengths, or an
                implausible fitted line.
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
        slope, intercept = np.polyfit(x, y, 1)
        residual = y - (intercept + slope * x)
        total = float(np.sum((y - y.mean()) ** 2))
        r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0.0 else 1.0
        return cls(float(slope), float(intercept), name, f"{source} (R^2 = {r2:.4f})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: name, source, slope, intercept and the line as text."""
        return {
            "name": self.name,
            "source": self.source,
            "slope_g_cm3_per_HU": self.slope,
            "intercept_g_cm3": self.intercept,
            "line": f"rho_QCT = {self.intercept:.6g} + {self.slope:.6g} * HU [g/cm^3]",
        }


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
