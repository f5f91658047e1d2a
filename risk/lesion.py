"""Scan-derived lesion measures beside the FE strength: Mirels items, ACI and CTRA.

Measured from the CT and its labels (:func:`meshing.lesion.measure_lesion`,
:func:`material.rigidity.ctra`) and scored with :func:`risk.mirels.score_mirels` /
:func:`risk.mirels.aci_positive` (moved here from the pipeline).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fea.landmarks import FemurLandmarks
from material.laws import MaterialModel
from material.rigidity import ctra
from meshing.lesion import measure_lesion
from meshing.types import CTVolume
from risk.mirels import aci_positive, score_mirels

__all__ = ["lesion_measures"]


def lesion_measures(ct: CTVolume, bone: npt.NDArray[np.bool_], lesion: npt.NDArray[np.bool_],
                    landmarks: FemurLandmarks, model: MaterialModel, pain: str | None,
                    given: dict[str, str] | None = None) -> dict[str, Any]:
    """Mirels items measured from the scan, axial cortical involvement and CT rigidity.

    The Mirels total needs the pain item, which only the clinician can give: without it the
    measured items and the range of possible totals are reported. Items given by hand
    (``given``: site, lesion, size as points or categories) replace the measured ones.
    """
    measured = measure_lesion(ct, bone, lesion, shaft_axis=landmarks.shaft_axis,
                              axis_point=landmarks.shaft_point_mm,
                              head_centre=landmarks.head_centre_mm,
                              lesser_trochanter=landmarks.lesser_trochanter_mm)
    rigidity = ctra(ct, bone, model, axis=landmarks.shaft_axis,
                    axis_point=landmarks.head_centre_mm, lesion_mask=lesion)
    inputs: dict[str, Any] = measured.mirels_inputs()
    for item, value in (given or {}).items():
        parsed: Any = int(value) if str(value).isdigit() else value
        if item == "size":
            inputs.pop("size_fraction", None)
            if isinstance(parsed, int):
                inputs["size_points"] = parsed
            else:
                inputs["size_fraction"] = float(parsed)
        else:
            inputs[item] = parsed
    if pain is not None:
        mirels: dict[str, Any] = score_mirels(**inputs, pain=pain).to_dict()
    else:
        low, high = (score_mirels(**inputs, pain=p) for p in (1, 3))
        mirels = low.to_dict()
        mirels["items"].pop("pain", None)
        mirels.update({"total": None, "recommendation": None,
                       "total_range": [low.total, high.total],
                       "pain": "not given (pass --pain mild|moderate|functional)"})
    return {
        "lesion": measured.to_dict(),
        "mirels": mirels,
        "aci_mm": measured.aci_mm,
        "aci_high_risk": bool(aci_positive(measured.aci_mm)),
        "ctra": rigidity.to_dict(),
    }
