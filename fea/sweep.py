"""Load directions over a cone around a load case's nominal direction (``--sweep``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["sweep_directions"]


def sweep_directions(centre: npt.NDArray[np.float64], count: int,
                     half_angle_deg: float) -> npt.NDArray[np.float64]:
    """``count`` unit directions spread evenly (golden-angle spiral) over a cone.

    Args:
        centre: (3,) unit axis of the cone.
        count: Number of directions (the axis itself is the first).
        half_angle_deg: Half opening angle of the cone.

    Returns:
        (count, 3) unit vectors.
    """
    axis = centre / np.linalg.norm(centre)
    helper = np.eye(3)[int(np.argmin(np.abs(axis)))]
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    k = np.arange(count)
    cos_max = np.cos(np.radians(half_angle_deg))
    # Equal-area spacing on the cap: cos(theta) uniform in [cos_max, 1].
    cos_t = 1.0 - (1.0 - cos_max) * k / max(count - 1, 1)
    sin_t = np.sqrt(np.maximum(1.0 - cos_t**2, 0.0))
    phi = k * np.pi * (3.0 - np.sqrt(5.0))
    dirs = (cos_t[:, None] * axis + sin_t[:, None] * (np.cos(phi)[:, None] * e1
                                                     + np.sin(phi)[:, None] * e2))
    return np.asarray(dirs / np.linalg.norm(dirs, axis=1)[:, None])
