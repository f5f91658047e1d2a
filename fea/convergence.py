"""Grid convergence index (GCI) of a quantity computed on three meshes.

Roache PJ (1994) Perspective: a method for uniform reporting of grid refinement studies.
J Fluids Eng 116:405-413; procedure with non-constant refinement ratios as in Celik IB et al.
(2008) Procedure for estimation and reporting of uncertainty due to discretization in CFD
applications. J Fluids Eng 130:078001, doi:10.1115/1.2960953 (safety factor 1.25 for three
grids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GridConvergence", "grid_convergence_index"]

#: Celik 2008: safety factor of the GCI when three grids give the observed order.
GCI_SAFETY_FACTOR = 1.25
#: The observed order is kept within these bounds (oscillating or stagnating sequences
#: otherwise give meaningless orders; Celik 2008 section 2).
ORDER_BOUNDS = (0.5, 4.0)


@dataclass(frozen=True)
class GridConvergence:
    """Convergence of one quantity over three meshes (finest first).

    Attributes:
        sizes_mm: (3,) element sizes, finest first.
        values: (3,) the quantity on each mesh.
        observed_order: Observed order of convergence p (clipped to :data:`ORDER_BOUNDS`).
        oscillatory: True when the differences change sign (monotone convergence not seen).
        extrapolated: Richardson-extrapolated value.
        gci_fine: GCI of the finest mesh, as a fraction of its value.
        relative_change: |f_fine - f_medium| / |f_fine|.
    """

    sizes_mm: tuple[float, float, float]
    values: tuple[float, float, float]
    observed_order: float
    oscillatory: bool
    extrapolated: float
    gci_fine: float
    relative_change: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {"sizes_mm": list(self.sizes_mm), "values": list(self.values),
                "observed_order": round(self.observed_order, 3),
                "oscillatory": self.oscillatory, "extrapolated": self.extrapolated,
                "gci_fine": self.gci_fine, "relative_change": self.relative_change,
                "method": "Roache 1994 GCI, Celik et al. 2008 procedure, safety factor 1.25"}


def grid_convergence_index(sizes_mm: npt.ArrayLike, values: npt.ArrayLike
                           ) -> GridConvergence:
    """GCI of the finest of three meshes.

    Args:
        sizes_mm: (3,) representative element sizes (any order).
        values: (3,) the quantity on the meshes of ``sizes_mm``.

    Returns:
        The convergence record.

    Raises:
        ValueError: on anything but three distinct positive sizes and finite values.
    """
    h = np.asarray(sizes_mm, dtype=float)
    f = np.asarray(values, dtype=float)
    if h.shape != (3,) or f.shape != (3,) or np.any(h <= 0) or not np.all(np.isfinite(f)):
        raise ValueError("need three positive sizes and three finite values")
    order = np.argsort(h)
    h, f = h[order], f[order]
    if np.any(np.diff(h) <= 0):
        raise ValueError("the three sizes must differ")
    r21, r32 = h[1] / h[0], h[2] / h[1]
    e21, e32 = f[1] - f[0], f[2] - f[1]
    low, high = ORDER_BOUNDS
    if e21 == 0.0:
        p = high  # converged to rounding already
    elif e32 == 0.0:
        p = low
    else:
        s = math.copysign(1.0, e32 / e21)
        p = abs(math.log(abs(e32 / e21))) / math.log(r21)
        for _ in range(100):  # fixed point of Celik's eq. (3)-(5)
            q = math.log((r21 ** p - s) / (r32 ** p - s)) if (r32 ** p - s) > 0 and (
                r21 ** p - s) > 0 else 0.0
            new = abs(math.log(abs(e32 / e21)) + q) / math.log(r21)
            new = min(max(new, low), high)
            if abs(new - p) < 1e-10:
                break
            p = new
    p = min(max(p, low), high)
    factor = r21 ** p - 1.0
    extrapolated = float((r21 ** p * f[0] - f[1]) / factor)
    relative = abs(e21 / f[0]) if f[0] != 0.0 else math.inf
    return GridConvergence(
        sizes_mm=(float(h[0]), float(h[1]), float(h[2])),
        values=(float(f[0]), float(f[1]), float(f[2])),
        observed_order=float(p),
        oscillatory=bool(e21 * e32 < 0.0),
        extrapolated=extrapolated,
        gci_fine=float(GCI_SAFETY_FACTOR * relative / factor),
        relative_change=float(relative),
    )
