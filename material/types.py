"""Frozen records produced by the material stage."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from core.types import FloatArray

__all__ = ["MaterialField"]


def _readonly_vector(name: str, values: npt.ArrayLike, size: int | None) -> FloatArray:
    array = np.array(values, dtype=np.float64)  # a private copy, so freezing is safe
    if array.ndim != 1 or (size is not None and array.shape[0] != size):
        expected = "(m,)" if size is None else f"({size},)"
        raise ValueError(f"material field '{name}' must be {expected}, got {array.shape}")
    array.flags.writeable = False
    return array


def _summary(values: FloatArray) -> dict[str, float] | None:
    if values.size == 0:
        return None
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "max": float(values.max()),
    }


@dataclass(frozen=True, eq=False)
class MaterialField:
    """Isotropic elastic properties per mesh cell, and the CT values they came from.

    One row per cell of the :class:`~meshing.types.TetMesh` it was mapped onto, in the same
    order.

    Attributes:
        E_MPa: (m,) float64 Young's modulus in MPa (>= the model's floor).
        rho_qct_g_cm3: (m,) float64 calibrated QCT-equivalent density in g/cm^3 (may be
            negative in fat or marrow).
        rho_ash_g_cm3: (m,) float64 ash density in g/cm^3 (>= 0).
        rho_app_g_cm3: (m,) float64 apparent density in g/cm^3 (>= 0).
        hu: (m,) float64 cell-averaged CT value in HU.
        poisson_ratio: Isotropic Poisson ratio (dimensionless).
        description: JSON-ready provenance: mapping mode, quadrature, calibration line, density
            chain, law with its citation, floor and how many cells sit on it.
    """

    E_MPa: FloatArray
    rho_qct_g_cm3: FloatArray
    rho_ash_g_cm3: FloatArray
    rho_app_g_cm3: FloatArray
    hu: FloatArray
    poisson_ratio: float
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        e = _readonly_vector("E_MPa", self.E_MPa, None)
        size = int(e.shape[0])
        object.__setattr__(self, "E_MPa", e)
        for name in ("rho_qct_g_cm3", "rho_ash_g_cm3", "rho_app_g_cm3", "hu"):
            object.__setattr__(self, name, _readonly_vector(name, getattr(self, name), size))
        if not 0.0 <= float(self.poisson_ratio) < 0.5:
            raise ValueError(f"Poisson ratio must lie in [0, 0.5), got {self.poisson_ratio}")
        if size and not np.all(np.isfinite(e)):
            raise ValueError("material field has non-finite Young's moduli")
        object.__setattr__(self, "poisson_ratio", float(self.poisson_ratio))
        object.__setattr__(self, "description", copy.deepcopy(dict(self.description)))

    @property
    def num_cells(self) -> int:
        """Number of cells (m)."""
        return int(self.E_MPa.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: cell count, min/median/max of every array, and the description.

        Returns:
            ``{"num_cells", "poisson_ratio", "E_MPa", "rho_qct_g_cm3", "rho_ash_g_cm3",
            "rho_app_g_cm3", "hu", "description"}``; each array entry is
            ``{"min", "median", "max"}`` (``None`` for an empty field).
        """
        return {
            "num_cells": self.num_cells,
            "poisson_ratio": self.poisson_ratio,
            "E_MPa": _summary(self.E_MPa),
            "rho_qct_g_cm3": _summary(self.rho_qct_g_cm3),
            "rho_ash_g_cm3": _summary(self.rho_ash_g_cm3),
            "rho_app_g_cm3": _summary(self.rho_app_g_cm3),
            "hu": _summary(self.hu),
            "description": copy.deepcopy(self.description),
        }
