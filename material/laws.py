"""Density chains and density -> mechanical property laws of bone, as data, with sources.

This module is osteofe's one table of empirical material constants. Every number below is
defined once, in :data:`CITATIONS`, :data:`QCT_TO_ASH`, :data:`ASH_FRACTIONS`,
:data:`DENSITY_CHAINS` and :data:`LAWS`, and carries its source; ``tests/test_material_laws.py``
asserts each literature value. Units: densities in g/cm^3, moduli and stresses in MPa.

Density chain (QCT-equivalent -> ash -> apparent density):

======================  ==========================================  =========================
name                    relation                                    source
======================  ==========================================  =========================
qct_to_ash "mayo"       rho_ash = 0.0633 + 0.887 rho_QCT (K2HPO4)   Mayo group [UNVERIFIED]
qct_to_ash "schileo"    rho_ash = 0.079 + 0.877 rho_QCT (HA)        Schileo et al. 2008
                                                                    [UNVERIFIED]
qct_to_ash "identity"   rho_ash = rho_QCT (any phantom)             phantom read as ash
ash fraction "schileo"  rho_app = rho_ash / 0.6                     Schileo et al. 2008
ash fraction "dongguo"  rho_app = rho_ash / 0.626                   Dong & Guo 2004 [UNVERIFIED]
======================  ==========================================  =========================

Chains: ``mayo_schileo`` (default), ``mayo_dongguo``, ``identity_schileo`` and the Bologna
chain ``schileo2008`` (HA phantom -> Schileo ash line -> ash fraction 0.6, used with
``morgan2003_neck``).

Property laws (E = Young's modulus, yield = yield stress, min_stress = softened plateau):

=========================  =======================================================  ======
name                       law                                                      rho
=========================  =======================================================  ======
morgan2003_neck            E = 6850 rho^1.49                                        app
morgan2003_trochanter      E = 15010 rho^2.18                                       app
morgan2003_pooled          E = 8920 rho^1.83                                        app
keller1994_femur           E = 10500 rho^2.29                            [UNVERIFIED]  ash
keyak1998_modulus          E = 33900 rho^2.20 | 5307 rho + 469 | 10200 rho^2.01     ash
                           (breaks at 0.27 and 0.6)
keyak1998_yield            yield = 137 rho^1.88 | 114 rho^1.72 (break at 0.317)      ash
keyak2005_modulus          E = 14900 rho^1.86                                       ash
keyak2005_yield            yield = 102 rho^1.80                                     ash
keyak2005_min_stress       min_stress = 43.1 rho^1.81                               ash
=========================  =======================================================  ======

The Keyak 2005 nonlinear set (E, yield, softened plateau) is :data:`LAW_SETS` ``"keyak2005"``.
Valid density ranges (``valid_range``) are recorded only where the source states them; the
Morgan ranges are recalled, not checked, and say so in ``range_note``. Mapping reports the
fraction of cells outside the range (extrapolation). Users add their own power or piecewise
laws from a configuration table with :func:`law_from_config`.

Sources (full references in :data:`CITATIONS`): Morgan, Bayraktar & Keaveny 2003, J Biomech
36:897, doi:10.1016/S0021-9290(03)00071-X; Keyak et al. 1998, J Biomech 31:125 (after Keller
1994, J Biomech 27:1159); Keyak et al. 2005, Clin Orthop Relat Res 437:219; Schileo et al. 2008,
J Biomech 41:2483; Dragomir-Daescu et al. 2011, Ann Biomed Eng 39:742; Dong & Guo 2004,
J Biomech 37:1281. Entries whose value or attribution could not be checked against the
literature here carry ``verified=False`` and a note in their :class:`Citation`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from core.citation import Citation
from core.types import FloatArray
from material.calibration import LinearCalibration, PhantomMaterial
from material.errors import CalibrationError, MaterialLawError

__all__ = [
    "ASH_FRACTIONS",
    "CITATIONS",
    "DEFAULT_CHAIN",
    "DEFAULT_E_FLOOR_MPA",
    "DEFAULT_LAW",
    "DEFAULT_POISSON_RATIO",
    "DENSITY_CHAINS",
    "LAWS",
    "LAW_SETS",
    "QCT_TO_ASH",
    "AshFraction",
    "Citation",
    "DensityChain",
    "DensityKind",
    "Law",
    "LinearDensityRelation",
    "MaterialModel",
    "PiecewiseLaw",
    "PowerLaw",
    "Quantity",
    "extrapolation_report",
    "get_density_chain",
    "get_law",
    "law_from_config",
]


#: Which density a law takes: QCT-equivalent mineral, ash, or apparent (wet) density.
DensityKind = Literal["qct", "ash", "app"]

#: What a law gives: Young's modulus, yield stress, or the softened minimum stress (all MPa).
Quantity = Literal["E", "yield_stress", "min_stress", "plateau_end_strain",
                   "softening_modulus"]

_QUANTITY_SYMBOL: dict[str, str] = {"E": "E", "yield_stress": "S_y", "min_stress": "S_min",
                                    "plateau_end_strain": "eps_AB",
                                    "softening_modulus": "E_pl"}


# --------------------------------------------------------------------------------------------
# The table, part 1: sources.
# --------------------------------------------------------------------------------------------

#: Schileo et al. 2008 on density: the source of the ash/apparent ratio (and, as
#: ``schileo2008_ash``, of a CT-to-ash line; the same paper, cited for two values).
_SCHILEO_2008_DENSITY = Citation(
    "schileo2008",
    "Schileo E, Dall'Ara E, Taddei F, Malandrino A, Schotkamp T, Baleani M, Viceconti M",
    2008,
    "An accurate estimation of bone density improves the accuracy of subject-specific "
    "finite element models",
    "J Biomech 41(11):2483-2491",
    "10.1016/j.jbiomech.2008.05.017",
    note="ash/apparent density ratio 0.598 +- 0.004 (cortical) and 0.598 +- 0.036 "
    "(small trabecular specimens), i.e. a constant 0.6 (checked against the abstract; "
    "the DOI is from memory). Not the same paper as Schileo et al. 2008, J Biomech "
    "41:356 (the principal-strain failure criterion).",
)

#: Every literature source used by this module, by key.
CITATIONS: dict[str, Citation] = {
    c.key: c
    for c in (
        Citation(
            "morgan2003",
            "Morgan EF, Bayraktar HH, Keaveny TM",
            2003,
            "Trabecular bone modulus-density relationships depend on anatomic site",
            "J Biomech 36(7):897-904",
            "10.1016/S0021-9290(03)00071-X",
            note="Table of site-specific power laws E = a rho_app^b (E in MPa, rho_app in "
            "g/cm^3): femoral neck, greater trochanter, pooled.",
        ),
        Citation(
            "keyak1998",
            "Keyak JH, Rossi SA, Jones KA, Skinner HB",
            1998,
            "Prediction of femoral fracture load using automated finite element modeling",
            "J Biomech 31(2):125-133",
            "10.1016/S0021-9290(97)00123-1",
            verified=False,
            note="coefficients match the review table of Knowles et al. 2016 (J Exp Orthop "
            "3:36); the attribution of the piecewise form (end pieces after Keller 1994) and "
            "the DOI are from memory",
        ),
        Citation(
            "keller1994",
            "Keller TS",
            1994,
            "Predicting the compressive mechanical behavior of bone",
            "J Biomech 27(9):1159-1168",
            "10.1016/0021-9290(94)90056-6",
            verified=False,
            note="source of the power-law end pieces of the Keyak piecewise laws, and of the "
            "femoral law E = 10500 rho_ash^2.29 MPa as given in osteofe's material-mapping issue; "
            "coefficient, exponent, the specimens' density range and the DOI were not checked "
            "against the paper",
        ),
        Citation(
            "keyak2005",
            "Keyak JH, Kaneko TS, Tehranzadeh J, Skinner HB",
            2005,
            "Predicting proximal femoral strength using structural engineering models",
            "Clin Orthop Relat Res 437:219-228",
            "10.1097/01.blo.0000164400.37905.22",
            verified=False,
            note="E, yield and softened-plateau laws as quoted in DESIGN.md section 4; the DOI "
            "is from memory",
        ),
        _SCHILEO_2008_DENSITY,
        replace(
            _SCHILEO_2008_DENSITY,
            key="schileo2008_ash",
            verified=False,
            note="rho_ash = 0.079 + 0.877 rho_QCT with rho_QCT from a hydroxyapatite phantom "
            "(European Spine Phantom); coefficients recalled, not checked against the paper",
        ),
        Citation(
            "dragomirdaescu2011",
            "Dragomir-Daescu D, Op Den Buijs J, McEligot S, Dai Y, Entwistle RC, Salas C, "
            "Melton LJ 3rd, Bennet KE, Khosla S, Amin S",
            2011,
            "Robust QCT/FEA models of proximal femur stiffness and fracture load during a "
            "sideways fall on the hip",
            "Ann Biomed Eng 39(2):742-755",
            "10.1007/s10439-010-0196-y",
            verified=False,
            note="the line rho_ash = 0.0633 + 0.887 rho_QCT could not be traced to this paper, "
            "nor could its phantom material (taken as K2HPO4, as in Mindways phantoms): "
            "Knowles et al. 2016 tabulate its mapping as a scanner line rho_ash = -0.009 + "
            "0.0007 HU, rho_ash/rho_app = 0.6 and E = 14664 rho_ash^1.49 (Morgan's neck law "
            "in ash density)",
        ),
        Citation(
            "dongguo2004",
            "Dong XN, Guo XE",
            2004,
            "The dependence of transversely isotropic elasticity of human femoral cortical "
            "bone on porosity",
            "J Biomech 37(8):1281-1287",
            "10.1016/j.jbiomech.2003.12.011",
            verified=False,
            note="the ash fraction 0.626 is quoted after DESIGN.md section 4; not checked "
            "against the paper",
        ),
        Citation(
            "knowles2016",
            "Knowles NK, Reeves JM, Ferreira LM",
            2016,
            "Quantitative Computed Tomography (QCT) derived Bone Mineral Density (BMD) in "
            "finite element studies: a review of the literature",
            "J Exp Orthop 3(1):36",
            "10.1186/s40634-016-0072-2",
            note="review table used to cross-check the Mayo law E = 14664 rho_ash^1.49 and "
            "the Keyak piecewise coefficients",
        ),
        Citation(
            "identity",
            "",
            None,
            "No conversion: the calibration phantom is taken to give ash density directly",
            "",
            None,
            note="use when the calibration line was fitted to ash density (e.g. a "
            "scanner-specific ash line) rather than to a mineral-equivalent phantom",
        ),
    )
}


# --------------------------------------------------------------------------------------------
# Records.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearDensityRelation:
    """``rho_ash = intercept + slope * rho_QCT`` (g/cm^3).

    Attributes:
        name: Registry key.
        slope: Dimensionless.
        intercept: g/cm^3.
        citation: Source.
        phantom: The phantom material rho_QCT must be equivalent to (``"K2HPO4"`` or
            ``"HA"``), or ``None`` when the relation takes any (identity).
    """

    name: str
    slope: float
    intercept: float
    citation: Citation
    phantom: PhantomMaterial | None = None

    def __call__(self, rho_qct: npt.ArrayLike) -> FloatArray:
        """Apply the line (no clamping): float64 array, same shape as ``rho_qct``."""
        return np.asarray(self.intercept + self.slope * np.asarray(rho_qct, dtype=np.float64))

    def formula(self) -> str:
        """The relation as text."""
        if self.slope == 1.0 and self.intercept == 0.0:
            return "rho_ash = rho_QCT"
        return f"rho_ash = {self.intercept:g} + {self.slope:g} * rho_QCT"


@dataclass(frozen=True)
class AshFraction:
    """``rho_app = rho_ash / ratio``: the ash fraction of wet apparent density.

    Attributes:
        name: Registry key.
        ratio: rho_ash / rho_app, dimensionless, in (0, 1].
        citation: Source.
    """

    name: str
    ratio: float
    citation: Citation

    def __call__(self, rho_ash: npt.ArrayLike) -> FloatArray:
        """rho_app from rho_ash: float64 array, same shape."""
        return np.asarray(np.asarray(rho_ash, dtype=np.float64) / self.ratio)

    def formula(self) -> str:
        """The relation as text."""
        return f"rho_app = rho_ash / {self.ratio:g}"


@dataclass(frozen=True)
class DensityChain:
    """rho_QCT -> rho_ash -> rho_app.

    Negative densities (fat, marrow, air below the calibration's zero) are clamped to zero at
    the ash stage, so that the power laws downstream stay defined.

    Attributes:
        name: Registry key.
        qct_to_ash: The QCT -> ash line.
        ash_fraction: The ash -> apparent ratio.
    """

    name: str
    qct_to_ash: LinearDensityRelation
    ash_fraction: AshFraction

    def __call__(self, rho_qct: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Convert rho_QCT to (rho_ash, rho_app).

        Args:
            rho_qct: Any shape, g/cm^3 (may be negative).

        Returns:
            ``(rho_ash, rho_app)``, float64 arrays of the same shape in g/cm^3, both >= 0.
        """
        rho_ash = np.maximum(self.qct_to_ash(rho_qct), 0.0)
        return rho_ash, self.ash_fraction(rho_ash)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description with both relations and their sources."""
        return {
            "name": self.name,
            "qct_to_ash": self.qct_to_ash.formula(),
            "qct_to_ash_phantom": self.qct_to_ash.phantom,
            "qct_to_ash_source": self.qct_to_ash.citation.to_dict(),
            "ash_to_app": self.ash_fraction.formula(),
            "ash_to_app_source": self.ash_fraction.citation.to_dict(),
            "clamp": "rho_ash = max(rho_ash, 0)",
        }


class _DensityLaw:
    """What every density -> property law shares.

    Evaluation with rho clamped at 0 and the JSON description; the fields are declared by the
    frozen dataclasses that derive from it (:class:`PowerLaw`, :class:`PiecewiseLaw`).
    """

    name: str
    quantity: Quantity
    density_kind: DensityKind
    citation: Citation
    valid_range: tuple[float, float] | None
    range_note: str

    def __call__(self, rho: npt.ArrayLike) -> FloatArray:
        """Evaluate the law.

        Args:
            rho: Any shape, density of kind :attr:`density_kind` in g/cm^3 (negative values
                are clamped to 0).

        Returns:
            float64 array of the same shape, in MPa.
        """
        return self._evaluate(np.maximum(np.asarray(rho, dtype=np.float64), 0.0))

    def _evaluate(self, rho: FloatArray) -> FloatArray:
        raise NotImplementedError

    def formula(self) -> str:
        """The law as text."""
        raise NotImplementedError

    def _more_sources(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description with the formula and source(s)."""
        return {
            "name": self.name,
            "quantity": self.quantity,
            "density_kind": self.density_kind,
            "formula": self.formula(),
            "source": self.citation.to_dict(),
            **self._more_sources(),
            "valid_range_g_cm3": self.valid_range,
            "range_note": self.range_note,
        }


@dataclass(frozen=True)
class PowerLaw(_DensityLaw):
    """``y = offset + coefficient * rho^exponent`` with rho clamped at 0.

    Attributes:
        name: Registry key (or ``"<law>[i]"`` for a piece of a :class:`PiecewiseLaw`).
        quantity: What ``y`` is (MPa).
        density_kind: Which density ``rho`` is (g/cm^3).
        coefficient: MPa per (g/cm^3)^exponent.
        exponent: Dimensionless.
        citation: Source.
        offset: MPa (0 for a pure power law; used by linear pieces).
        valid_range: (low, high) density range of the data the law was fitted to, in g/cm^3,
            or ``None`` where not recorded; used only for reporting extrapolation.
        range_note: Where the range comes from, or why there is none.
    """

    name: str
    quantity: Quantity
    density_kind: DensityKind
    coefficient: float
    exponent: float
    citation: Citation
    offset: float = 0.0
    valid_range: tuple[float, float] | None = None
    range_note: str = ""

    def _evaluate(self, rho: FloatArray) -> FloatArray:
        return np.asarray(self.offset + self.coefficient * rho**self.exponent)

    def formula(self) -> str:
        """The law as text, e.g. ``E = 6850 * rho_app^1.49 [MPa]``."""
        symbol = _QUANTITY_SYMBOL[self.quantity]
        rho = f"rho_{self.density_kind}"
        term = rho if self.exponent == 1.0 else f"{rho}^{self.exponent:g}"
        text = f"{symbol} = {self.coefficient:g} * {term}"
        if self.offset:
            text += f" + {self.offset:g}"
        return text + " [MPa]"



@dataclass(frozen=True)
class PiecewiseLaw(_DensityLaw):
    """A density law made of power-law pieces joined at density breakpoints.

    Piece ``i`` applies on ``[breakpoints[i-1], breakpoints[i])`` (the first from 0, the last
    to infinity). For the published laws here the pieces meet within 0.1%, so which side of
    a breakpoint is closed does not matter.

    Attributes:
        name: Registry key.
        quantity: What the law gives (MPa).
        density_kind: Which density it takes (g/cm^3).
        pieces: The laws of the intervals, in increasing density order.
        breakpoints: Strictly increasing densities, ``len(pieces) - 1`` of them, g/cm^3.
        citation: Source of the combined law.
        valid_range: As in :class:`PowerLaw`.
        range_note: As in :class:`PowerLaw`.
    """

    name: str
    quantity: Quantity
    density_kind: DensityKind
    pieces: tuple[PowerLaw, ...]
    breakpoints: tuple[float, ...]
    citation: Citation
    valid_range: tuple[float, float] | None = None
    range_note: str = ""

    def __post_init__(self) -> None:
        if len(self.pieces) != len(self.breakpoints) + 1:
            raise MaterialLawError(
                f"piecewise law '{self.name}' has {len(self.pieces)} pieces but "
                f"{len(self.breakpoints)} breakpoints",
                hint="give exactly one breakpoint fewer than pieces",
            )
        if any(b >= c for b, c in zip(self.breakpoints, self.breakpoints[1:], strict=False)):
            raise MaterialLawError(
                f"piecewise law '{self.name}' has breakpoints {self.breakpoints} that are not "
                "strictly increasing",
                hint="list the breakpoints in increasing density order",
            )
        for piece in self.pieces:
            if piece.quantity != self.quantity or piece.density_kind != self.density_kind:
                raise MaterialLawError(
                    f"piece '{piece.name}' of law '{self.name}' gives {piece.quantity} of "
                    f"rho_{piece.density_kind}, not {self.quantity} of rho_{self.density_kind}",
                    hint="make every piece use the law's quantity and density kind",
                )

    def _evaluate(self, rho: FloatArray) -> FloatArray:
        which = np.searchsorted(np.asarray(self.breakpoints), rho, side="right")
        out = np.empty_like(rho)
        for index, piece in enumerate(self.pieces):  # a loop over pieces, not elements
            mask = which == index
            out[mask] = piece(rho[mask])
        return out

    def formula(self) -> str:
        """The law as text, one piece per density interval."""
        bounds = (0.0, *self.breakpoints)
        parts = []
        for index, piece in enumerate(self.pieces):
            upper = self.breakpoints[index] if index < len(self.breakpoints) else None
            interval = f"[{bounds[index]:g}, {upper:g})" if upper is not None else (
                f"[{bounds[index]:g}, inf)"
            )
            parts.append(f"{piece.formula()} on rho_{self.density_kind} in {interval}")
        return "; ".join(parts)

    def _more_sources(self) -> dict[str, Any]:
        return {"piece_sources": [piece.citation.to_dict() for piece in self.pieces]}


#: A density -> property law.
Law = PowerLaw | PiecewiseLaw


# --------------------------------------------------------------------------------------------
# The table, part 2: density relations, chains and laws.
# --------------------------------------------------------------------------------------------

#: rho_QCT -> rho_ash lines, by name.
QCT_TO_ASH: dict[str, LinearDensityRelation] = {
    "mayo": LinearDensityRelation("mayo", 0.887, 0.0633, CITATIONS["dragomirdaescu2011"],
                                  "K2HPO4"),
    "schileo": LinearDensityRelation("schileo", 0.877, 0.079, CITATIONS["schileo2008_ash"],
                                     "HA"),
    "identity": LinearDensityRelation("identity", 1.0, 0.0, CITATIONS["identity"]),
}

#: rho_ash / rho_app ratios, by name.
ASH_FRACTIONS: dict[str, AshFraction] = {
    "schileo": AshFraction("schileo", 0.6, CITATIONS["schileo2008"]),
    "dongguo": AshFraction("dongguo", 0.626, CITATIONS["dongguo2004"]),
}

#: Complete density chains, by name.
DENSITY_CHAINS: dict[str, DensityChain] = {
    "mayo_schileo": DensityChain("mayo_schileo", QCT_TO_ASH["mayo"], ASH_FRACTIONS["schileo"]),
    "mayo_dongguo": DensityChain("mayo_dongguo", QCT_TO_ASH["mayo"], ASH_FRACTIONS["dongguo"]),
    "identity_schileo": DensityChain(
        "identity_schileo", QCT_TO_ASH["identity"], ASH_FRACTIONS["schileo"]
    ),
    "schileo2008": DensityChain("schileo2008", QCT_TO_ASH["schileo"], ASH_FRACTIONS["schileo"]),
}


#: Note of laws whose specimens' density range is not recorded here.
_NOT_TRANSCRIBED = "the specimens' density range was not transcribed (not checked here)"

#: Morgan 2003 ranges of apparent density per site, recalled from the paper's specimen table.
_MORGAN_RANGE_NOTE = ("apparent density range of the paper's specimens, recalled from its "
                      "table [UNVERIFIED: not checked against the paper]; trabecular "
                      "specimens only, so cortical bone is always an extrapolation")


def _keyak1998(name: str, quantity: Quantity,
               pieces: tuple[tuple[float, float, Citation, float], ...],
               breakpoints: tuple[float, ...]) -> PiecewiseLaw:
    """A Keyak et al. 1998 piecewise law of ash density.

    Args:
        name: Registry key; piece ``i`` is named ``"<name>[i]"``.
        quantity: What the law gives.
        pieces: ``(coefficient, exponent, citation, offset)`` of each power-law piece.
        breakpoints: Ash densities where the pieces meet, g/cm^3.
    """
    return PiecewiseLaw(
        name,
        quantity,
        "ash",
        tuple(PowerLaw(f"{name}[{i}]", quantity, "ash", coefficient, exponent, citation,
                       offset=offset)
              for i, (coefficient, exponent, citation, offset) in enumerate(pieces)),
        breakpoints,
        CITATIONS["keyak1998"],
        range_note=_NOT_TRANSCRIBED,
    )


_KEYAK, _KELLER = CITATIONS["keyak1998"], CITATIONS["keller1994"]


#: Density -> property laws, by name.
LAWS: dict[str, Law] = {
    law.name: law
    for law in (
        PowerLaw("morgan2003_neck", "E", "app", 6850.0, 1.49, CITATIONS["morgan2003"],
                 valid_range=(0.26, 0.75), range_note=_MORGAN_RANGE_NOTE),
        PowerLaw("morgan2003_trochanter", "E", "app", 15010.0, 2.18, CITATIONS["morgan2003"],
                 valid_range=(0.14, 0.40), range_note=_MORGAN_RANGE_NOTE),
        PowerLaw("morgan2003_pooled", "E", "app", 8920.0, 1.83, CITATIONS["morgan2003"],
                 valid_range=(0.09, 0.75), range_note=_MORGAN_RANGE_NOTE),
        PowerLaw("keller1994_femur", "E", "ash", 10500.0, 2.29, CITATIONS["keller1994"],
                 range_note=_NOT_TRANSCRIBED),
        _keyak1998("keyak1998_modulus", "E",
                   ((33900.0, 2.20, _KELLER, 0.0), (5307.0, 1.0, _KEYAK, 469.0),
                    (10200.0, 2.01, _KELLER, 0.0)), (0.27, 0.6)),
        _keyak1998("keyak1998_yield", "yield_stress",
                   ((137.0, 1.88, _KELLER, 0.0), (114.0, 1.72, _KELLER, 0.0)), (0.317,)),
        PowerLaw("keyak2005_modulus", "E", "ash", 14900.0, 1.86, CITATIONS["keyak2005"],
                 range_note=_NOT_TRANSCRIBED),
        PowerLaw("keyak2005_yield", "yield_stress", "ash", 102.0, 1.80, CITATIONS["keyak2005"],
                 range_note=_NOT_TRANSCRIBED),
        PowerLaw("keyak2005_min_stress", "min_stress", "ash", 43.1, 1.81, CITATIONS["keyak2005"],
                 range_note=_NOT_TRANSCRIBED),
        # Strain at the end of the perfectly plastic plateau (dimensionless) and the slope of
        # the softening branch (MPa, negative) of Keyak et al. 2005's curve, as reproduced by
        # the Nijmegen group (Derikx et al. 2012) [coefficients quoted from memory: verify].
        PowerLaw("keyak2005_plateau_end_strain", "plateau_end_strain", "ash", 0.0728, 1.0,
                 CITATIONS["keyak2005"], offset=-0.00315, range_note=_NOT_TRANSCRIBED),
        PowerLaw("keyak2005_softening_modulus", "softening_modulus", "ash", -2080.0, 1.45,
                 CITATIONS["keyak2005"], range_note=_NOT_TRANSCRIBED),
    )
}

#: Laws that belong together, by set name and quantity: the Keyak 1998 elastic-yield pair and
#: the Keyak 2005 nonlinear set (E, yield stress, then a perfectly plastic plateau and
#: softening down to min_stress, DESIGN.md section 4).
LAW_SETS: dict[str, dict[str, str]] = {
    "keyak1998": {"E": "keyak1998_modulus", "yield_stress": "keyak1998_yield"},
    "keyak2005": {"E": "keyak2005_modulus", "yield_stress": "keyak2005_yield",
                  "min_stress": "keyak2005_min_stress",
                  "plateau_end_strain": "keyak2005_plateau_end_strain",
                  "softening_modulus": "keyak2005_softening_modulus"},
}

#: Default density chain: Mayo QCT -> ash line, Schileo ash fraction 0.6.
DEFAULT_CHAIN: str = "mayo_schileo"

#: Default modulus law: Morgan 2003 femoral neck (as used for whole femurs by the Bologna
#: group, and by the Mayo group in ash form, E = 14664 rho_ash^1.49).
DEFAULT_LAW: str = "morgan2003_neck"

#: Default Poisson ratio of bone (isotropic); some tools use 0.4.
DEFAULT_POISSON_RATIO: float = 0.3

#: Default lower bound on E in MPa, for marrow, fat and lytic lesions (DESIGN.md: 5-10 MPa).
DEFAULT_E_FLOOR_MPA: float = 5.0


def get_law(name: str | Mapping[str, Any] | Law) -> Law:
    """Look a law up by registry name, or build it from a configuration table.

    Args:
        name: A key of :data:`LAWS`, a table for :func:`law_from_config`, or a law (returned
            as is).

    Raises:
        MaterialLawError: If ``name`` is not in :data:`LAWS`, or the table is invalid.
    """
    if isinstance(name, PowerLaw | PiecewiseLaw):
        return name
    if isinstance(name, Mapping):
        return law_from_config(name)
    try:
        return LAWS[name]
    except KeyError:
        raise MaterialLawError(
            f"unknown material law '{name}'",
            hint=f"use one of {', '.join(sorted(LAWS))}, or define one as a table (see "
            "material.laws.law_from_config)",
        ) from None


# --------------------------------------------------------------------------------------------
# User-defined laws.
# --------------------------------------------------------------------------------------------

_QUANTITIES = ("E", "yield_stress", "min_stress")
_DENSITY_KINDS = ("qct", "ash", "app")
_LAW_KEYS = {"name", "form", "quantity", "density", "coefficient", "exponent", "offset",
             "pieces", "breakpoints", "valid_range", "source", "max_jump"}
_PIECE_KEYS = {"coefficient", "exponent", "offset"}
#: Densities (g/cm^3 of any kind) at which a user law must be finite, >= 0 and
#: non-decreasing: from nothing to beyond the densest cortical bone (~2 g/cm^3 apparent).
_CHECK_DENSITIES = np.linspace(0.0, 3.0, 3001)


def _law_error(name: str, problem: str, hint: str) -> MaterialLawError:
    return MaterialLawError(f"user law '{name}': {problem}", hint=hint)


def _number(name: str, table: Mapping[str, Any], key: str, default: float | None = None
            ) -> float:
    if key not in table:
        if default is None:
            raise _law_error(name, f"'{key}' is missing", f"give {key} as a number")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            float(value)):
        raise _law_error(name, f"{key} = {value!r} is not a finite number",
                         f"give {key} as a number")
    return float(value)


def _piece(name: str, index: int | None, table: Mapping[str, Any], quantity: Quantity,
           kind: DensityKind, citation: Citation) -> PowerLaw:
    label = name if index is None else f"{name}[{index}]"
    coefficient = _number(label, table, "coefficient")
    exponent = _number(label, table, "exponent")
    offset = _number(label, table, "offset", 0.0)
    if coefficient <= 0.0:
        raise _law_error(label, f"coefficient {coefficient:g} is not positive",
                         "a density law grows with density: give a coefficient > 0 (MPa)")
    if not 0.0 < exponent <= 10.0:
        raise _law_error(label, f"exponent {exponent:g} is outside (0, 10]",
                         "published bone laws have exponents between 1 and 3")
    return PowerLaw(label, quantity, kind, coefficient, exponent, citation, offset)


def law_from_config(spec: Mapping[str, Any]) -> Law:
    """Build and validate a user-defined power or piecewise law from a configuration table.

    Power law: ``{name = "my_law", density = "app", coefficient = 6850.0, exponent = 1.49}``
    with optional ``offset`` (MPa, default 0), ``quantity`` (``"E"`` default,
    ``"yield_stress"``, ``"min_stress"``), ``valid_range = [low, high]`` (g/cm^3) and
    ``source`` (free text, recorded as the citation).

    Piecewise law: ``pieces = [{coefficient, exponent, offset}, ...]`` and
    ``breakpoints = [...]`` (one fewer, strictly increasing), plus the optional keys above
    and ``max_jump`` (largest relative jump allowed at a breakpoint, default 0.01).

    Checks: known keys only; ``density`` one of qct/ash/app; positive coefficients,
    exponents in (0, 10]; the law finite, >= 0 and non-decreasing on 0..3 g/cm^3; pieces
    meeting within ``max_jump``; a valid range with 0 <= low < high; a name that is not a
    built-in law's.

    Returns:
        A :class:`PowerLaw` or :class:`PiecewiseLaw` whose citation is the ``source`` text,
        marked unverified.

    Raises:
        MaterialLawError: On any invalid entry (the message names it).
    """
    if not isinstance(spec, Mapping):
        raise MaterialLawError(f"a user law must be a table, got {type(spec).__name__}",
                               hint="see material.laws.law_from_config")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise MaterialLawError("a user law needs a name", hint='give name = "my_law"')
    if name in LAWS:
        raise _law_error(name, "has the name of a built-in law",
                         "pick another name, or use the built-in law by its name")
    unknown = sorted(set(spec) - _LAW_KEYS)
    if unknown:
        raise _law_error(name, f"unknown key(s) {unknown}", f"valid keys: {sorted(_LAW_KEYS)}")
    quantity = spec.get("quantity", "E")
    if quantity not in _QUANTITIES:
        raise _law_error(name, f"quantity {quantity!r} is unknown", f"use one of {_QUANTITIES}")
    kind = spec.get("density")
    if kind not in _DENSITY_KINDS:
        raise _law_error(name, f"density {kind!r} is unknown",
                         "say which density the law takes: 'qct', 'ash' or 'app'")
    form = spec.get("form", "piecewise" if "pieces" in spec else "power")
    citation = Citation(f"user:{name}", "", None,
                        str(spec.get("source", "user-defined law from configuration")), "",
                        verified=False, note="user-defined law from configuration")
    valid_range: tuple[float, float] | None = None
    if "valid_range" in spec:
        bounds = spec["valid_range"]
        if (not isinstance(bounds, list | tuple) or len(bounds) != 2
                or not all(isinstance(b, int | float) and not isinstance(b, bool)
                           for b in bounds)
                or not 0.0 <= float(bounds[0]) < float(bounds[1])):
            raise _law_error(name, f"valid_range = {bounds!r} is not [low, high] with "
                             "0 <= low < high", "give the density range of the data, g/cm^3")
        valid_range = (float(bounds[0]), float(bounds[1]))
    note = "given in the configuration" if valid_range else "none given in the configuration"
    law: Law
    if form == "power":
        if "pieces" in spec or "breakpoints" in spec:
            raise _law_error(name, "a power law has no pieces or breakpoints",
                             "drop them, or set form = 'piecewise'")
        piece = _piece(name, None, spec, quantity, kind, citation)
        law = PowerLaw(name, quantity, kind, piece.coefficient, piece.exponent, citation,
                       piece.offset, valid_range, note)
    elif form == "piecewise":
        pieces_spec = spec.get("pieces")
        breaks = spec.get("breakpoints")
        if not isinstance(pieces_spec, list | tuple) or len(pieces_spec) < 2:
            raise _law_error(name, "a piecewise law needs at least two pieces",
                             "give pieces = [{coefficient, exponent, offset}, ...]")
        if not isinstance(breaks, list | tuple) or len(breaks) != len(pieces_spec) - 1:
            raise _law_error(name, f"needs {len(pieces_spec) - 1} breakpoint(s) for "
                             f"{len(pieces_spec)} pieces, got {breaks!r}",
                             "give one breakpoint fewer than pieces")
        pieces = []
        for i, table in enumerate(pieces_spec):
            if not isinstance(table, Mapping) or set(table) - _PIECE_KEYS:
                raise _law_error(name, f"piece {i} = {table!r} is not a table of "
                                 f"{sorted(_PIECE_KEYS)}", "give each piece as a table")
            pieces.append(_piece(name, i, table, quantity, kind, citation))
        points = tuple(_number(name, {"breakpoint": b}, "breakpoint") for b in breaks)
        if points[0] <= 0.0:
            raise _law_error(name, f"breakpoint {points[0]:g} is not positive",
                             "breakpoints are densities > 0 in g/cm^3")
        try:
            law = PiecewiseLaw(name, quantity, kind, tuple(pieces), points, citation,
                               valid_range, note)
        except MaterialLawError as exc:
            raise _law_error(name, exc.message, exc.hint) from None
        max_jump = _number(name, spec, "max_jump", 0.01)
        for i, b in enumerate(points):
            left, right = float(pieces[i](b)), float(pieces[i + 1](b))
            jump = abs(right - left) / max(abs(right), abs(left), 1e-12)
            if jump > max_jump:
                raise _law_error(
                    name, f"pieces {i} and {i + 1} differ by {100.0 * jump:.2g}% at "
                    f"rho = {b:g} ({left:.6g} vs {right:.6g} MPa)",
                    "make the pieces meet at the breakpoint, or raise max_jump",
                )
    else:
        raise _law_error(name, f"form {form!r} is unknown", "use 'power' or 'piecewise'")
    values = law(_CHECK_DENSITIES)
    if not np.all(np.isfinite(values)) or np.any(values < 0.0):
        raise _law_error(name, "gives negative or non-finite values between 0 and 3 g/cm^3",
                         "check the offset: the law must be >= 0 for every density")
    if np.any(np.diff(values) < -1e-9 * np.max(np.abs(values))):
        raise _law_error(name, "decreases with density somewhere between 0 and 3 g/cm^3",
                         "bone stiffness and strength grow with density: check the pieces")
    return law


def extrapolation_report(law: Law, density: npt.ArrayLike) -> dict[str, Any]:
    """How many values of ``density`` lie outside the law's valid range.

    Args:
        law: The law.
        density: Any shape, density of the law's kind in g/cm^3.

    Returns:
        JSON-ready ``{"density_kind", "valid_range_g_cm3", "range_note", "count",
        "below", "above", "fraction_below", "fraction_above", "fraction_outside"}``; the
        counts and fractions are ``None`` when the law records no range.
    """
    rho = np.asarray(density, dtype=np.float64).reshape(-1)
    report: dict[str, Any] = {
        "density_kind": law.density_kind,
        "valid_range_g_cm3": None if law.valid_range is None else list(law.valid_range),
        "range_note": law.range_note,
        "count": int(rho.size),
    }
    if law.valid_range is None or rho.size == 0:
        report.update(below=None, above=None, fraction_below=None, fraction_above=None,
                      fraction_outside=None)
        return report
    low, high = law.valid_range
    below, above = int(np.count_nonzero(rho < low)), int(np.count_nonzero(rho > high))
    report.update(below=below, above=above, fraction_below=below / rho.size,
                  fraction_above=above / rho.size, fraction_outside=(below + above) / rho.size)
    return report


def get_density_chain(name: str) -> DensityChain:
    """Look a density chain up by registry name.

    Raises:
        MaterialLawError: If ``name`` is not in :data:`DENSITY_CHAINS`.
    """
    try:
        return DENSITY_CHAINS[name]
    except KeyError:
        raise MaterialLawError(
            f"unknown density chain '{name}'",
            hint=f"use one of {', '.join(sorted(DENSITY_CHAINS))}",
        ) from None


@dataclass(frozen=True)
class MaterialModel:
    """Calibration + density chain + modulus law: HU -> (rho_QCT, rho_ash, rho_app, E).

    Attributes:
        calibration: HU -> rho_QCT line (scanner specific; no default on purpose).
        chain: rho_QCT -> rho_ash -> rho_app (default :data:`DEFAULT_CHAIN`).
        law: Density -> Young's modulus law (default :data:`DEFAULT_LAW`).
        poisson_ratio: Isotropic Poisson ratio, in [0, 0.5).
        E_floor_MPa: Lower bound applied to E (MPa, >= 0): marrow, fat, lytic lesions.
        bone_threshold_rho_qct: Samples whose rho_QCT (g/cm^3) is below this are no bone
            and get ``E_floor_MPa`` whatever the law gives (None: the law alone decides).
            With the Mayo chain's intercept, water (0 HU) would otherwise map to
            rho_ash 0.054 g/cm^3 and ~190 MPa, muscle (40 HU) to ~360 MPa.

    Raises:
        MaterialLawError: If the law does not give Young's modulus, or the Poisson ratio or
            floor are out of range.
    """

    calibration: LinearCalibration
    chain: DensityChain = field(default_factory=lambda: DENSITY_CHAINS[DEFAULT_CHAIN])
    law: Law = field(default_factory=lambda: LAWS[DEFAULT_LAW])
    poisson_ratio: float = DEFAULT_POISSON_RATIO
    E_floor_MPa: float = DEFAULT_E_FLOOR_MPA
    bone_threshold_rho_qct: float | None = None

    def __post_init__(self) -> None:
        if self.law.quantity != "E":
            raise MaterialLawError(
                f"law '{self.law.name}' gives {self.law.quantity}, not Young's modulus",
                hint="pick a modulus law, e.g. morgan2003_neck or keyak2005_modulus",
            )
        if not 0.0 <= self.poisson_ratio < 0.5:
            raise MaterialLawError(
                f"Poisson ratio {self.poisson_ratio:g} is outside [0, 0.5)",
                hint="use 0.3 for bone (some tools use 0.4)",
            )
        if not np.isfinite(self.E_floor_MPa) or self.E_floor_MPa < 0.0:
            raise MaterialLawError(
                f"E floor {self.E_floor_MPa:g} MPa is negative or not finite",
                hint="use a small positive floor such as 5-10 MPa",
            )
        expected = self.chain.qct_to_ash.phantom
        if expected is not None and expected != self.calibration.material:
            raise CalibrationError(
                f"calibration '{self.calibration.name}' gives {self.calibration.material}-"
                f"equivalent density but density chain '{self.chain.name}' expects "
                f"{expected}-equivalent density",
                hint="use a chain made for the phantom's material (schileo2008 for "
                "hydroxyapatite, mayo_schileo for K2HPO4), or identity_schileo if the line "
                "already gives ash density",
            )

    @classmethod
    def from_names(
        cls,
        calibration: LinearCalibration,
        *,
        chain: str = DEFAULT_CHAIN,
        law: str | Mapping[str, Any] | Law = DEFAULT_LAW,
        poisson_ratio: float = DEFAULT_POISSON_RATIO,
        E_floor_MPa: float = DEFAULT_E_FLOOR_MPA,
        bone_threshold_rho_qct: float | None = None,
    ) -> MaterialModel:
        """Build a model from registry names (as read from a config file).

        ``law`` may also be a user law table (:func:`law_from_config`) or a law object.
        """
        return cls(calibration, get_density_chain(chain), get_law(law), poisson_ratio,
                   E_floor_MPa, bone_threshold_rho_qct)

    def densities(self, hu: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """HU -> densities.

        Args:
            hu: Any shape, Hounsfield units.

        Returns:
            ``(rho_qct, rho_ash, rho_app)``, float64 arrays of the shape of ``hu`` in g/cm^3;
            rho_qct is the calibrated value as is (may be negative), rho_ash and rho_app are
            clamped at 0.
        """
        rho_qct = self.calibration(hu)
        rho_ash, rho_app = self.chain(rho_qct)
        return rho_qct, rho_ash, rho_app

    def modulus_from_densities(
        self, rho_qct: FloatArray, rho_ash: FloatArray, rho_app: FloatArray
    ) -> FloatArray:
        """Apply the law to the density of its kind, then the floor: E in MPa, same shape.

        Samples below :attr:`bone_threshold_rho_qct` get the floor.
        """
        rho = {"qct": rho_qct, "ash": rho_ash, "app": rho_app}[self.law.density_kind]
        modulus = np.maximum(self.law(rho), self.E_floor_MPa)
        if self.bone_threshold_rho_qct is not None:
            modulus = np.where(np.asarray(rho_qct) < self.bone_threshold_rho_qct,
                               self.E_floor_MPa, modulus)
        return np.asarray(modulus)

    def modulus(self, hu: npt.ArrayLike) -> FloatArray:
        """HU -> Young's modulus in MPa (float64, same shape as ``hu``, >= the floor)."""
        return self.modulus_from_densities(*self.densities(hu))

    def evaluate(self, hu: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """HU -> ``(rho_qct, rho_ash, rho_app, E_MPa)``, float64 arrays of the shape of ``hu``."""
        rho_qct, rho_ash, rho_app = self.densities(hu)
        return rho_qct, rho_ash, rho_app, self.modulus_from_densities(rho_qct, rho_ash, rho_app)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description of the whole chain, with sources."""
        return {
            "calibration": self.calibration.to_dict(),
            "density_chain": self.chain.to_dict(),
            "law": self.law.to_dict(),
            "poisson_ratio": self.poisson_ratio,
            "E_floor_MPa": self.E_floor_MPa,
            "bone_threshold_rho_qct_g_cm3": self.bone_threshold_rho_qct,
        }
