"""Array types shared by every stage (one row per entity, dtype in the name)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["BoolArray", "FloatArray", "IntArray"]

#: float64 array (coordinates in mm, moduli in MPa, strains, ...).
FloatArray = npt.NDArray[np.float64]
#: int64 array (0-based node, cell and face indices).
IntArray = npt.NDArray[np.int64]
#: bool array (masks).
BoolArray = npt.NDArray[np.bool_]
