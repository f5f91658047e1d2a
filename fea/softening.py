"""Keyak 2005 softening material of the nonlinear analysis, from ash density."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fea.nonlinear import SofteningMaterial
from material.laws import LAW_SETS, LAWS

__all__ = ["keyak2005_softening"]


def keyak2005_softening(rho_ash: npt.NDArray[np.float64], poisson_ratio: float,
                        floor_mpa: float) -> SofteningMaterial:
    """Per-cell Keyak 2005 softening curves from ash density (LAW_SETS['keyak2005'])."""
    laws = {q: LAWS[name] for q, name in LAW_SETS["keyak2005"].items()}
    rho = np.maximum(np.asarray(rho_ash, dtype=np.float64), 0.0)
    modulus = np.maximum(laws["E"](rho), floor_mpa)
    # Marrow/lesion cells at the floor keep a small yield stress so that they stay elastic-
    # soft rather than yielding at zero stress.
    yield_stress = np.maximum(laws["yield_stress"](rho), 1e-3 * modulus)
    return SofteningMaterial(
        E_MPa=modulus, yield_stress_MPa=yield_stress,
        plateau_end_strain=laws["plateau_end_strain"](rho),
        softening_modulus_MPa=np.minimum(laws["softening_modulus"](rho), 0.0),
        min_stress_MPa=np.maximum(laws["min_stress"](rho), 0.0),
        poisson_ratio=poisson_ratio, source=str(LAW_SETS["keyak2005"]))
