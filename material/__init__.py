"""Material stage: CT Hounsfield units -> density -> Young's modulus per mesh element.

Pipeline: :class:`LinearCalibration` (HU -> rho_QCT), a :class:`DensityChain`
(rho_QCT -> rho_ash -> rho_app) and a density -> modulus law from :data:`LAWS`, bundled in a
:class:`MaterialModel`; :func:`map_material` samples the CT over every tetrahedron
(numba kernel, Bonemat-style integration) and returns a :class:`MaterialField`.

Imports only :mod:`meshing.types` and :mod:`meshing.errors` from the rest of osteofe.
"""

from material.calibration import LinearCalibration, check_ct_is_rescaled
from material.errors import CalibrationError, MappingError, MaterialError, MaterialLawError
from material.laws import (
    ASH_FRACTIONS,
    CITATIONS,
    DENSITY_CHAINS,
    LAWS,
    QCT_TO_ASH,
    AshFraction,
    Citation,
    DensityChain,
    Law,
    LinearDensityRelation,
    MaterialModel,
    PiecewiseLaw,
    PowerLaw,
    get_density_chain,
    get_law,
)
from material.mapping import (
    map_material,
    quadrature_rule,
    sample_cells_hu,
    sample_cells_hu_reference,
    sample_cells_modulus,
)
from material.types import MaterialField

__all__ = [
    "ASH_FRACTIONS",
    "CITATIONS",
    "DENSITY_CHAINS",
    "LAWS",
    "QCT_TO_ASH",
    "AshFraction",
    "CalibrationError",
    "Citation",
    "DensityChain",
    "Law",
    "LinearCalibration",
    "LinearDensityRelation",
    "MappingError",
    "MaterialError",
    "MaterialField",
    "MaterialLawError",
    "MaterialModel",
    "PiecewiseLaw",
    "PowerLaw",
    "check_ct_is_rescaled",
    "get_density_chain",
    "get_law",
    "map_material",
    "quadrature_rule",
    "sample_cells_hu",
    "sample_cells_hu_reference",
    "sample_cells_modulus",
]
