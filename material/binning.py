"""Grouping of per-element moduli into a few materials (Bonemat's "gap value" option).

Solvers that take one material card per element set (Abaqus, CalculiX, ANSYS) become slow to
read and write with one material per element; Bonemat therefore groups elements whose moduli
differ by less than a "gap". Here the groups are bins of equal width in log(E), so every bin
has the same *relative* width and the error is bounded relative to each element's own modulus
(a fixed gap in MPa would be coarse for marrow and needlessly fine for cortex).

Each bin is represented by the modulus that minimises the largest relative error of its
members, the harmonic mean of its smallest and largest member ``2 lo hi / (lo + hi)``: for it
``(v - lo) / lo = (hi - v) / hi = (hi - lo) / (hi + lo)``. With bins of ratio
``r = (E_max / E_min) ** (1 / groups)`` the error is at most ``(r - 1) / (r + 1)``, below the
``sqrt(r) - 1`` of the geometric mean (which minimises the largest *log* ratio instead); this is
the one binning routine of the project (fea.calculix writes its decks with it).

Source of the grouping idea: Taddei F, Schileo E, Helgason B, Cristofolini L, Viceconti M
(2007). The material mapping strategy influences the accuracy of CT-based finite element
models of bones: an evaluation against experimental measurements. Med Eng Phys
29(9):973-979. doi:10.1016/j.medengphy.2006.10.014 (Bonemat's "gap value").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core.types import FloatArray, IntArray
from material.errors import MaterialError

__all__ = ["ModulusGroups", "bin_moduli"]


def _readonly[T: np.ndarray](array: T) -> T:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class ModulusGroups:
    """Elements grouped into materials by their Young's modulus.

    Attributes:
        group: (m,) int64 group of each element, 0..g-1, groups in increasing E.
        E_MPa: (g,) float64 modulus of each group (the value written to a material card).
        lower_MPa: (g,) float64 smallest member modulus of each group.
        upper_MPa: (g,) float64 largest member modulus of each group.
        counts: (g,) int64 elements per group.
        max_rel_error: ``max |E_MPa[group] - E| / E`` over the elements (0 for exact groups).
        bin_ratio: Ratio of upper to lower edge of every bin (1.0 when all moduli are equal).
        requested_groups: Number of bins asked for (empty bins are dropped, so ``g`` may be
            smaller).
    """

    group: IntArray
    E_MPa: FloatArray
    lower_MPa: FloatArray
    upper_MPa: FloatArray
    counts: IntArray
    max_rel_error: float
    bin_ratio: float
    requested_groups: int

    @property
    def num_groups(self) -> int:
        """Number of non-empty groups (g)."""
        return int(self.E_MPa.shape[0])

    def element_moduli(self) -> FloatArray:
        """(m,) float64 modulus each element gets from its group, MPa."""
        return np.asarray(self.E_MPa[self.group])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: groups with modulus, member range and count, and the error."""
        return {
            "requested_groups": self.requested_groups,
            "num_groups": self.num_groups,
            "bin_ratio": self.bin_ratio,
            "max_rel_error": self.max_rel_error,
            "representative": "2 lo hi / (lo + hi) of each group's member range (minimises "
            "the largest relative error)",
            "groups": [
                {"E_MPa": float(e), "min_MPa": float(lo), "max_MPa": float(hi), "count": int(c)}
                for e, lo, hi, c in zip(self.E_MPa, self.lower_MPa, self.upper_MPa,
                                        self.counts, strict=True)
            ],
        }


def bin_moduli(
    youngs_modulus_mpa: npt.ArrayLike,
    groups: int | None = None,
    *,
    max_rel_error: float | None = None,
) -> ModulusGroups:
    """Bin moduli into log-spaced groups (give ``groups`` or ``max_rel_error``).

    Args:
        youngs_modulus_mpa: (m,) finite positive moduli, MPa.
        groups: Number of log-spaced bins over [E_min, E_max] (>= 1).
        max_rel_error: Instead of ``groups``: the largest relative error allowed, in (0, 1);
            the fewest bins that guarantee it are used, ``ceil(ln(E_max/E_min) / ln r)``
            with ``r = (1 + e) / (1 - e)``.

    Returns:
        The groups (only non-empty bins, in increasing E) and the error actually reached.

    Raises:
        MaterialError: Neither or both of ``groups``/``max_rel_error``, ``groups < 1``, an
            error bound outside (0, 1), or moduli that are empty, non-finite or not positive.
    """
    modulus = np.asarray(youngs_modulus_mpa, dtype=np.float64).reshape(-1)
    if (groups is None) == (max_rel_error is None):
        raise MaterialError("give either a number of groups or a maximum relative error",
                            hint="e.g. groups=256, or max_rel_error=0.01")
    if modulus.size == 0 or not np.all(np.isfinite(modulus)) or np.any(modulus <= 0.0):
        raise MaterialError("moduli to group must be finite and positive",
                            hint="apply the E floor before grouping")
    log_e = np.log(modulus)
    lo, hi = float(log_e.min()), float(log_e.max())
    if max_rel_error is not None:
        if not 0.0 < max_rel_error < 1.0:
            raise MaterialError(f"max_rel_error {max_rel_error!r} is not in (0, 1)",
                                hint="e.g. 0.01 for 1%")
        ratio = (1.0 + max_rel_error) / (1.0 - max_rel_error)
        count = max(1, math.ceil((hi - lo) / math.log(ratio) * (1.0 - 1e-12)))
    else:
        if isinstance(groups, bool) or not isinstance(groups, int | np.integer) or groups < 1:
            raise MaterialError(f"number of material groups {groups!r} is not an integer >= 1",
                                hint="e.g. groups=256")
        count = int(groups)
    width = (hi - lo) / count
    if width > 0.0:
        raw = np.minimum(((log_e - lo) / width).astype(np.int64), count - 1)
    else:
        raw = np.zeros(modulus.size, dtype=np.int64)
    used, index = np.unique(raw, return_inverse=True)
    index = index.reshape(-1).astype(np.int64)
    low = np.full(used.size, np.inf)
    high = np.zeros(used.size)
    np.minimum.at(low, index, modulus)
    np.maximum.at(high, index, modulus)
    values = 2.0 * low * high / (low + high)
    error = float(np.max(np.abs(values[index] - modulus) / modulus))
    counts = np.bincount(index, minlength=used.size).astype(np.int64)
    return ModulusGroups(
        group=_readonly(index),
        E_MPa=_readonly(values),
        lower_MPa=_readonly(low),
        upper_MPa=_readonly(high),
        counts=_readonly(counts),
        max_rel_error=error,
        bin_ratio=float(math.exp(width)),
        requested_groups=count,
    )
