"""Material stage: CT Hounsfield units -> density -> Young's modulus per mesh element.

Pipeline: a :class:`LinearCalibration` (HU -> rho_QCT: a scanner line, a phantom fit from rod
values or rod ROIs, or a phantomless fit to reference tissues, with fit statistics), a
:class:`DensityChain` (rho_QCT -> rho_ash -> rho_app) and a density -> modulus law from
:data:`LAWS` (or a user law from :func:`law_from_config`), bundled in a :class:`MaterialModel`;
:func:`map_material` samples the CT over every tetrahedron (numba kernel, Bonemat-style
integration, or centroid voxel lookup) and returns a :class:`MaterialField`;
:func:`map_material_qp` gives E at quadrature points; :func:`bin_moduli` groups moduli into
materials for solver decks.

Imports only :mod:`meshing.types` and :mod:`meshing.errors` from the rest of osteofe.
"""

from material.binning import ModulusGroups, bin_moduli
from material.calibration import (
    DEFAULT_PHANTOMLESS_TISSUES,
    REFERENCE_TISSUES,
    CalibrationFit,
    LinearCalibration,
    ReferenceTissue,
    calibration_from_config,
    calibration_from_rois,
    check_ct_is_rescaled,
    phantomless_calibration,
)
from material.errors import CalibrationError, MappingError, MaterialError, MaterialLawError
from material.laws import (
    ASH_FRACTIONS,
    CITATIONS,
    DENSITY_CHAINS,
    LAW_SETS,
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
    extrapolation_report,
    get_density_chain,
    get_law,
    law_from_config,
)
from material.mapping import (
    map_material,
    map_material_qp,
    quadrature_rule,
    sample_cells_centroid_hu,
    sample_cells_hu,
    sample_cells_hu_reference,
    sample_cells_modulus,
)
from material.types import MaterialField

__all__ = [
    "ASH_FRACTIONS",
    "CITATIONS",
    "DEFAULT_PHANTOMLESS_TISSUES",
    "DENSITY_CHAINS",
    "LAWS",
    "LAW_SETS",
    "QCT_TO_ASH",
    "REFERENCE_TISSUES",
    "AshFraction",
    "CalibrationError",
    "CalibrationFit",
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
    "ModulusGroups",
    "PiecewiseLaw",
    "PowerLaw",
    "ReferenceTissue",
    "bin_moduli",
    "calibration_from_config",
    "calibration_from_rois",
    "check_ct_is_rescaled",
    "extrapolation_report",
    "get_density_chain",
    "get_law",
    "law_from_config",
    "map_material",
    "map_material_qp",
    "phantomless_calibration",
    "quadrature_rule",
    "sample_cells_centroid_hu",
    "sample_cells_hu",
    "sample_cells_hu_reference",
    "sample_cells_modulus",
]
