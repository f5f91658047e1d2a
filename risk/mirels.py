"""The Mirels score, clinical thresholds and published operating points, as data with sources.

This module is the risk stage's one table of empirical constants. Every number below is defined
once, in :data:`CITATIONS`, :data:`MIRELS_SITE_POINTS`, :data:`MIRELS_PAIN_POINTS`,
:data:`MIRELS_LESION_POINTS`, :data:`MIRELS_SIZE_BOUNDS`, :data:`MIRELS_FIX_MIN`,
:data:`MIRELS_JUDGEMENT`, :data:`THRESHOLDS` and :data:`OPERATING_POINTS`, and carries its source;
``tests/test_risk_mirels.py`` asserts each literature value.

Mirels score (Mirels 1989, Clin Orthop Relat Res 249:256-264):

=========  ====================  ===================  ==================
item       1 point               2 points             3 points
=========  ====================  ===================  ==================
site       upper limb            lower limb           peritrochanteric
pain       mild                  moderate             functional
lesion     blastic               mixed                lytic
size       < 1/3                 1/3 - 2/3            > 2/3
=========  ====================  ===================  ==================

Size is the fraction of the cortex (or bone diameter) destroyed by the lesion; the boundaries
1/3 and 2/3 themselves score 2. Total 4-12: >= 9 prophylactic fixation, 8 clinical judgement,
<= 7 irradiation (Mirels 1989).

Thresholds (:data:`THRESHOLDS`): axial cortical involvement >= 30 mm (Van der Linden et al. 2004,
who wrote "> 30 mm"; validated as ">= 30 mm" by Van der Wal et al. 2020); Mirels total >= 9;
load-to-strength ratio ("factor of risk", Keaveny & Bouxsein 2008) phi = applied load / failure
load >= 1.

Published clinical operating points on metastatic femurs (:data:`OPERATING_POINTS`, for plotting
next to a cohort's ROC curve):

=====================  ============================  =====  =====  ========  ====
key                    rule                          sens   spec   patients  fx
=====================  ============================  =====  =====  ========  ====
damron2003_mirels      Mirels >= 9                   0.91   0.35   12 cases  -
vanderwal2020_aci      ACI >= 30 mm                  0.86   0.50   100       14
eggermont2018_fe       Nijmegen FE failure load      0.89   0.79   39        9
sternheim2020_sfr      strain-fold ratio >= 1.48     1.00   0.67   33        9
sternheim2020_mirels   Mirels                        0.88   0.38   33        9
=====================  ============================  =====  =====  ========  ====

Every clinical cohort above has at most 15 fractures: compare with confidence intervals, never
with the point values alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from core.citation import Citation
from core.keyed import keyed
from core.types import BoolArray, FloatArray
from risk.errors import MirelsError, RiskError

__all__ = [
    "CITATIONS",
    "MIRELS_FIX_MIN",
    "MIRELS_JUDGEMENT",
    "MIRELS_LESION_POINTS",
    "MIRELS_PAIN_POINTS",
    "MIRELS_SITE_POINTS",
    "MIRELS_SIZE_BOUNDS",
    "OPERATING_POINTS",
    "THRESHOLDS",
    "USER_GIVEN",
    "Citation",
    "MirelsItem",
    "MirelsItemName",
    "MirelsScore",
    "OperatingPoint",
    "Recommendation",
    "Threshold",
    "aci_positive",
    "lesion_item",
    "load_to_strength_ratio",
    "mirels_recommendation",
    "pain_item",
    "score_mirels",
    "site_item",
    "size_item",
]


#: The four Mirels items, in the order of the paper's table.
MirelsItemName = Literal["site", "pain", "lesion", "size"]

#: Mirels' treatment recommendation for a total score.
Recommendation = Literal["fix", "judgement", "irradiate"]

#: Derivation text of an item whose points were given directly rather than measured.
USER_GIVEN = "given by user"


# --------------------------------------------------------------------------------------------
# The table, part 1: sources (constants of this module and the methods of risk.metrics).
# --------------------------------------------------------------------------------------------

#: Every literature source of the risk stage, by key.
CITATIONS: Mapping[str, Citation] = keyed(
    Citation(
        "mirels1989",
        "Mirels H",
        1989,
        "Metastatic disease in long bones. A proposed scoring system for diagnosing "
        "impending pathologic fractures",
        "Clin Orthop Relat Res (249):256-264",
        None,
        note="item points 1-3 for site, pain, lesion type and size (< 1/3, 1/3-2/3, "
        "> 2/3 of the cortex); >= 9 fix, 8 judgement, <= 7 irradiate. PMID 2684463; "
        "the journal issue predates DOIs.",
    ),
    Citation(
        "damron2003",
        "Damron TA, Morgan H, Prakash D, Grant W, Aronowitz J, Heiner J",
        2003,
        "Critical evaluation of Mirels' rating system for impending pathologic "
        "fractures",
        "Clin Orthop Relat Res (415 Suppl):S201-S207",
        None,
        note="12 clinical histories of femoral metastases scored by 53 observers; "
        "overall sensitivity 91%, specificity 35% (checked against the abstract).",
    ),
    Citation(
        "vanderlinden2004",
        "Van der Linden YM, Dijkstra PDS, Kroon HM, Lok JJ, Noordijk EM, Leer JWH, "
        "Marijnen CAM",
        2004,
        "Comparative analysis of risk factors for pathological fracture with femoral "
        "metastases",
        "J Bone Joint Surg Br 86(4):566-573",
        "10.1302/0301-620X.86B4.14703",
        verified=False,
        note="102 patients, 110 lesions, 14 fractures; axial cortical involvement "
        "> 30 mm predictive (p = 0.01), checked against the abstract. The author list "
        "after the third author and the DOI are from memory.",
    ),
    Citation(
        "vanderwal2020",
        "Van der Wal CWPG, Eggermont F, Fiocco M, Kroon HM, Ayu O, Slot A, Snyers A, "
        "Rozema T, Verdonschot NJJ, Dijkstra PDS, Tanck E, Van der Linden YM",
        2020,
        "Axial cortical involvement of metastatic lesions to identify impending femoral "
        "fractures; a clinical validation study",
        "Radiother Oncol 144:59-64",
        "10.1016/j.radonc.2019.10.009",
        verified=False,
        note="100 patients, 14 fractures; ACI >= 30 mm sensitivity 86%, specificity "
        "50%, PPV 20%, NPV 96% (checked against the abstract); the DOI is from memory.",
    ),
    Citation(
        "eggermont2018",
        "Eggermont F, Derikx LC, Verdonschot N, van der Geest ICM, de Jong MAA, "
        "Snyers A, van der Linden YM, Tanck E",
        2018,
        "Can patient-specific finite element models better predict fractures in "
        "metastatic bone disease than experienced clinicians? Towards computational "
        "modelling in daily clinical practice",
        "Bone Joint Res 7(6):430-439",
        "10.1302/2046-3758.76.BJR-2017-0325.R2",
        note="39 patients, 9 fractures in 7 patients; FE sensitivity 89%, specificity "
        "79% (checked against the abstract).",
    ),
    Citation(
        "sternheim2020",
        "Sternheim A, Traub F, Trabelsi N, Dadia S, Gortzak Y, Snir N, Gorfine M, "
        "Yosibash Z",
        2020,
        "When and where do patients with bone metastases actually break their femurs? "
        "A CT-based finite element analysis",
        "Bone Joint J 102-B(5):638-645",
        "10.1302/0301-620X.102B5.BJJ-2019-1328.R2",
        verified=False,
        note="sensitivity/specificity on 9 fractured and 24 non-fractured patients: "
        "strain-fold ratio (threshold 1.48) 100%/67%, Mirels 88%/38% (checked against "
        "the abstract); the author list and pages are from memory.",
    ),
    Citation(
        "keaveny2008",
        "Keaveny TM, Bouxsein ML",
        2008,
        "Theoretical implications of the biomechanical fracture threshold",
        "J Bone Miner Res 23(10):1541-1547",
        "10.1359/jbmr.080406",
        verified=False,
        note="load-to-strength ratio (factor of risk) phi = applied load / failure "
        "load, fracture expected when phi >= 1; the factor of risk goes back to Hayes "
        "et al. (1991). Volume, pages and DOI from memory.",
    ),
    Citation(
        "hanley1982",
        "Hanley JA, McNeil BJ",
        1982,
        "The meaning and use of the area under a receiver operating characteristic "
        "(ROC) curve",
        "Radiology 143(1):29-36",
        "10.1148/radiology.143.1.7063747",
        note="AUC equals the Mann-Whitney probability P(score_fx > score_no_fx), ties "
        "counted 1/2.",
    ),
    Citation(
        "delong1988",
        "DeLong ER, DeLong DM, Clarke-Pearson DL",
        1988,
        "Comparing the areas under two or more correlated receiver operating "
        "characteristic curves: a nonparametric approach",
        "Biometrics 44(3):837-845",
        "10.2307/2531595",
        note="structural components V10/V01 and the covariance of correlated AUCs.",
    ),
    Citation(
        "sunxu2014",
        "Sun X, Xu W",
        2014,
        "Fast implementation of DeLong's algorithm for comparing the areas under "
        "correlated receiver operating characteristic curves",
        "IEEE Signal Process Lett 21(11):1389-1393",
        "10.1109/LSP.2014.2337313",
        note="midrank formulation of DeLong's structural components, O(n log n).",
    ),
    Citation(
        "wilson1927",
        "Wilson EB",
        1927,
        "Probable inference, the law of succession, and statistical inference",
        "J Am Stat Assoc 22(158):209-212",
        "10.1080/01621459.1927.10502953",
        note="score confidence interval of a binomial proportion.",
    ),
    Citation(
        "brier1950",
        "Brier GW",
        1950,
        "Verification of forecasts expressed in terms of probability",
        "Mon Weather Rev 78(1):1-3",
        "10.1175/1520-0493(1950)078<0001:VOFEIT>2.0.CO;2",
        note="mean squared difference between forecast probability and outcome.",
    ),
    Citation(
        "cox1958",
        "Cox DR",
        1958,
        "Two further applications of a model for binary regression",
        "Biometrika 45(3/4):562-565",
        "10.1093/biomet/45.3-4.562",
        note="logistic recalibration logit P(y=1) = a + b logit(p): calibration "
        "intercept a and slope b.",
    ),
    Citation(
        "platt1999",
        "Platt JC",
        1999,
        "Probabilistic outputs for support vector machines and comparisons to "
        "regularized likelihood methods",
        "Advances in Large Margin Classifiers, MIT Press, 61-74",
        None,
        note="sigmoid (logistic) calibration of a score; preferred over isotonic "
        "calibration for small samples.",
    ),
    Citation(
        "vickers2006",
        "Vickers AJ, Elkin EB",
        2006,
        "Decision curve analysis: a novel method for evaluating prediction models",
        "Med Decis Making 26(6):565-574",
        "10.1177/0272989X06295361",
        note="net benefit = TP/n - FP/n * pt/(1 - pt) at threshold probability pt.",
    ),
)


# --------------------------------------------------------------------------------------------
# The table, part 2: the Mirels score (Mirels 1989).
# --------------------------------------------------------------------------------------------

#: Site points (Mirels 1989).
MIRELS_SITE_POINTS: Mapping[str, int] = MappingProxyType(
    {"upper_limb": 1, "lower_limb": 2, "peritrochanteric": 3}
)
#: Pain points (Mirels 1989).
MIRELS_PAIN_POINTS: Mapping[str, int] = MappingProxyType(
    {"mild": 1, "moderate": 2, "functional": 3}
)
#: Lesion type points (Mirels 1989).
MIRELS_LESION_POINTS: Mapping[str, int] = MappingProxyType(
    {"blastic": 1, "mixed": 2, "lytic": 3}
)
#: Size boundaries (fraction of the cortex or diameter): < 1/3 -> 1, [1/3, 2/3] -> 2, > 2/3 -> 3.
MIRELS_SIZE_BOUNDS: tuple[float, float] = (1.0 / 3.0, 2.0 / 3.0)
#: Lowest total for which Mirels recommends prophylactic fixation.
MIRELS_FIX_MIN = 9
#: The total for which Mirels recommends clinical judgement (below it: irradiation).
MIRELS_JUDGEMENT = 8

#: Accepted spellings of the categories (keys after lower-casing, '-'/' ' -> '_').
_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "upper_extremity": "upper_limb",
        "lower_extremity": "lower_limb",
        "osteoblastic": "blastic",
        "sclerotic": "blastic",
        "osteolytic": "lytic",
        "mild_pain": "mild",
        "moderate_pain": "moderate",
        "functional_pain": "functional",
    }
)

_SIZE_LABELS = ("< 1/3", "1/3 - 2/3", "> 2/3")


# --------------------------------------------------------------------------------------------
# The table, part 3: thresholds and published operating points.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """A published decision threshold: positive (fracture predicted) when ``value`` is reached.

    Attributes:
        key: Registry key.
        quantity: What is compared, e.g. ``"axial cortical involvement"``.
        value: The threshold, in ``unit``.
        unit: Unit of ``value`` (``""`` for dimensionless).
        inclusive: ``True``: positive when quantity >= value; ``False``: when quantity > value.
        citation: Key into :data:`CITATIONS`.
        note: Where the threshold comes from and how it was phrased.
    """

    key: str
    quantity: str
    value: float
    unit: str
    inclusive: bool
    citation: str
    note: str = ""

    def positive(self, x: npt.ArrayLike) -> BoolArray:
        """Whether each value reaches the threshold.

        Args:
            x: Values of :attr:`quantity` in :attr:`unit`, any shape; must be finite.

        Returns:
            Boolean array of ``x``'s shape, ``True`` where a fracture is predicted.

        Raises:
            RiskError: If a value is NaN or infinite.
        """
        arr = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(arr)):
            raise RiskError(
                f"{self.quantity} has non-finite values (NaN = missing?)",
                "drop or impute the missing measurements before applying the threshold",
            )
        return np.asarray(arr >= self.value if self.inclusive else arr > self.value)


#: Published decision thresholds, by key.
THRESHOLDS: Mapping[str, Threshold] = keyed(
    Threshold(
        "aci",
        "axial cortical involvement",
        30.0,
        "mm",
        True,
        "vanderwal2020",
        note="Van der Linden et al. 2004 found ACI > 30 mm predictive; Van der Wal et "
        "al. 2020 validated lesions >= 30 mm as high risk.",
    ),
    Threshold(
        "mirels_fix",
        "Mirels total score",
        float(MIRELS_FIX_MIN),
        "points",
        True,
        "mirels1989",
        note=">= 9: prophylactic fixation recommended.",
    ),
    Threshold(
        "factor_of_risk",
        "load-to-strength ratio phi",
        1.0,
        "",
        True,
        "keaveny2008",
        note="phi = applied load / failure load; fracture expected when the applied "
        "load reaches the strength.",
    ),
)


@dataclass(frozen=True)
class OperatingPoint:
    """A published (sensitivity, specificity) pair of a fracture-risk rule.

    Attributes:
        key: Registry key.
        method: Short label for plots, e.g. ``"Mirels"``.
        rule: The decision rule as published.
        sensitivity: True-positive rate, in [0, 1].
        specificity: True-negative rate, in [0, 1].
        citation: Key into :data:`CITATIONS`.
        n_patients: Patients (or cases) in the analysis, ``None`` if not reported.
        n_fractures: Fractured femurs in the analysis, ``None`` if not reported.
        note: What the numbers refer to.
    """

    key: str
    method: str
    rule: str
    sensitivity: float
    specificity: float
    citation: str
    n_patients: int | None = None
    n_fractures: int | None = None
    note: str = ""

    @property
    def false_positive_rate(self) -> float:
        """``1 - specificity``, the x coordinate on a ROC plot."""
        return 1.0 - self.specificity


#: Published clinical operating points on metastatic femurs, by key.
OPERATING_POINTS: Mapping[str, OperatingPoint] = keyed(
    OperatingPoint(
        "damron2003_mirels",
        "Mirels",
        "Mirels total >= 9",
        0.91,
        0.35,
        "damron2003",
        n_patients=12,
        note="12 clinical histories scored by 53 observers (pooled over observers).",
    ),
    OperatingPoint(
        "vanderwal2020_aci",
        "ACI",
        "axial cortical involvement >= 30 mm",
        0.86,
        0.50,
        "vanderwal2020",
        n_patients=100,
        n_fractures=14,
        note="conventional radiographs, three observers.",
    ),
    OperatingPoint(
        "eggermont2018_fe",
        "Nijmegen FE",
        "FE failure load below the high-risk threshold",
        0.89,
        0.79,
        "eggermont2018",
        n_patients=39,
        n_fractures=9,
        note="9 fractures in 7 patients; non-linear patient-specific FE.",
    ),
    OperatingPoint(
        "sternheim2020_sfr",
        "Strain-fold ratio",
        "CT-FEA strain-fold ratio >= 1.48",
        1.00,
        0.67,
        "sternheim2020",
        n_patients=33,
        n_fractures=9,
        note="9 fractured and 24 non-fractured patients without prophylactic fixation.",
    ),
    OperatingPoint(
        "sternheim2020_mirels",
        "Mirels",
        "Mirels score (same cohort as the strain-fold ratio)",
        0.88,
        0.38,
        "sternheim2020",
        n_patients=33,
        n_fractures=9,
        note="the Mirels comparator of the same 33 patients.",
    ),
)


# --------------------------------------------------------------------------------------------
# Mirels items and score.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MirelsItem:
    """One Mirels item: its points and how they were obtained.

    Attributes:
        name: ``"site"``, ``"pain"``, ``"lesion"`` or ``"size"``.
        points: 1, 2 or 3.
        category: The item's category: a key of the item's points table (``"peritrochanteric"``,
            ``"functional"``, ``"lytic"``) or, for size, ``"< 1/3"``, ``"1/3 - 2/3"`` or
            ``"> 2/3"``.
        derivation: :data:`USER_GIVEN` when the points were given directly, otherwise the
            measurement they were derived from (e.g. ``"size fraction 0.5 of the
            cortex/diameter"``).
        measurement: The raw measurement: the category string for site/pain/lesion, the size
            fraction (float, 0-1) for size; ``None`` when the points were given directly.
    """

    name: MirelsItemName
    points: int
    category: str
    derivation: str
    measurement: str | float | None = None

    def __post_init__(self) -> None:
        if self.name not in ("site", "pain", "lesion", "size"):
            raise MirelsError(
                f"unknown Mirels item {self.name!r}",
                "use one of 'site', 'pain', 'lesion', 'size'",
            )
        if (
            isinstance(self.points, bool)
            or not isinstance(self.points, Integral)
            or self.points not in (1, 2, 3)
        ):
            raise MirelsError(
                f"Mirels {self.name} points must be 1, 2 or 3, got {self.points!r}",
                "each Mirels item scores 1-3 points",
            )

    @property
    def given_by_user(self) -> bool:
        """Whether the points were given directly rather than derived from a measurement."""
        return self.measurement is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "name": self.name,
            "points": self.points,
            "category": self.category,
            "derivation": self.derivation,
            "measurement": self.measurement,
        }


def mirels_recommendation(total: int) -> Recommendation:
    """Mirels' treatment recommendation for a total score.

    Args:
        total: Mirels total, 4-12.

    Returns:
        ``"fix"`` (>= 9), ``"judgement"`` (8) or ``"irradiate"`` (<= 7).

    Raises:
        MirelsError: If ``total`` is not an integer in 4-12.
    """
    if isinstance(total, bool) or not isinstance(total, Integral) or not 4 <= int(total) <= 12:
        raise MirelsError(
            f"Mirels total must be an integer in 4-12, got {total!r}",
            "the total is the sum of four items of 1-3 points",
        )
    if total >= MIRELS_FIX_MIN:
        return "fix"
    if total == MIRELS_JUDGEMENT:
        return "judgement"
    return "irradiate"


@dataclass(frozen=True)
class MirelsScore:
    """The four Mirels items of one lesion, with total and recommendation.

    Build it with :func:`score_mirels`, :meth:`from_points` or :meth:`from_measurements`.

    Attributes:
        site: Site item.
        pain: Pain item.
        lesion: Lesion type item.
        size: Size item.
    """

    site: MirelsItem
    pain: MirelsItem
    lesion: MirelsItem
    size: MirelsItem

    def __post_init__(self) -> None:
        for field_name in ("site", "pain", "lesion", "size"):
            item = getattr(self, field_name)
            if not isinstance(item, MirelsItem) or item.name != field_name:
                raise MirelsError(
                    f"MirelsScore.{field_name} must be a MirelsItem named {field_name!r}, "
                    f"got {item!r}",
                    "build the items with site_item/pain_item/lesion_item/size_item",
                )

    @property
    def items(self) -> tuple[MirelsItem, MirelsItem, MirelsItem, MirelsItem]:
        """The items in the order site, pain, lesion, size."""
        return (self.site, self.pain, self.lesion, self.size)

    @property
    def points(self) -> tuple[int, int, int, int]:
        """Points of site, pain, lesion, size."""
        return (self.site.points, self.pain.points, self.lesion.points, self.size.points)

    @property
    def total(self) -> int:
        """Sum of the four items, 4-12."""
        return sum(self.points)

    @property
    def recommendation(self) -> Recommendation:
        """Mirels' recommendation: ``"fix"``, ``"judgement"`` or ``"irradiate"``."""
        return mirels_recommendation(self.total)

    @classmethod
    def from_points(cls, site: int, pain: int, lesion: int, size: int) -> MirelsScore:
        """Score from points given directly (each derivation is :data:`USER_GIVEN`).

        Args:
            site: Site points, 1-3.
            pain: Pain points, 1-3.
            lesion: Lesion type points, 1-3.
            size: Size points, 1-3.

        Returns:
            The score.

        Raises:
            MirelsError: If a value is not an integer 1-3.
        """
        return score_mirels(site=site, pain=pain, lesion=lesion, size_points=size)

    @classmethod
    def from_measurements(
        cls, site: str, pain: str, lesion: str, size_fraction: float
    ) -> MirelsScore:
        """Score from categories and the measured size fraction.

        Args:
            site: ``"upper_limb"``, ``"lower_limb"`` or ``"peritrochanteric"``.
            pain: ``"mild"``, ``"moderate"`` or ``"functional"``.
            lesion: ``"blastic"``, ``"mixed"`` or ``"lytic"``.
            size_fraction: Fraction of the cortex (or diameter) involved, in [0, 1].

        Returns:
            The score.

        Raises:
            MirelsError: If a category is unknown or the fraction is outside [0, 1].
        """
        for name, value in (("site", site), ("pain", pain), ("lesion", lesion)):
            if not isinstance(value, str):
                raise MirelsError(
                    f"Mirels {name} measurement must be a category string, got {value!r}",
                    "use MirelsScore.from_points for points",
                )
        return score_mirels(site=site, pain=pain, lesion=lesion, size_fraction=size_fraction)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields: the items, total and recommendation."""
        return {
            "items": {item.name: item.to_dict() for item in self.items},
            "total": self.total,
            "recommendation": self.recommendation,
        }


def _normalise(value: str) -> str:
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(key, key)


def _points(name: str, value: object) -> int:
    """Validate directly given points: an integer (or integral float) 1-3, not a bool."""
    ok = not isinstance(value, bool) and isinstance(value, Real)
    if ok and isinstance(value, Integral):
        points = int(value)
    elif ok and math.isfinite(float(value)) and float(value).is_integer():  # type: ignore[arg-type]
        points = int(float(value))  # type: ignore[arg-type]
    else:
        raise MirelsError(
            f"Mirels {name} points must be an integer 1, 2 or 3, got {value!r}",
            f"give the {name} as points 1-3 or as a category string",
        )
    if points not in (1, 2, 3):
        raise MirelsError(
            f"Mirels {name} points must be 1, 2 or 3, got {value!r}",
            "each Mirels item scores 1-3 points",
        )
    return points


def _category_item(name: MirelsItemName, value: str | int, table: Mapping[str, int]) -> MirelsItem:
    if isinstance(value, str):
        key = _normalise(value)
        if key not in table:
            raise MirelsError(
                f"unknown Mirels {name} {value!r}",
                f"use one of {', '.join(repr(k) for k in table)} or points 1-3",
            )
        return MirelsItem(name, table[key], key, f"{name} {key!r}", measurement=key)
    points = _points(name, value)
    category = next(k for k, v in table.items() if v == points)
    return MirelsItem(name, points, category, USER_GIVEN)


def site_item(value: str | int) -> MirelsItem:
    """The site item from a category (``"peritrochanteric"``, ...) or points 1-3.

    Args:
        value: Category string (case-insensitive; ``-`` and spaces read as ``_``;
            ``"upper extremity"``/``"lower extremity"`` accepted) or points.

    Returns:
        The item; its derivation names the category, or is :data:`USER_GIVEN` for points.

    Raises:
        MirelsError: If the category is unknown or the points are not 1-3.
    """
    return _category_item("site", value, MIRELS_SITE_POINTS)


def pain_item(value: str | int) -> MirelsItem:
    """The pain item from a category (``"mild"``, ``"moderate"``, ``"functional"``) or points.

    Args:
        value: Category string (case-insensitive) or points 1-3.

    Returns:
        The item.

    Raises:
        MirelsError: If the category is unknown or the points are not 1-3.
    """
    return _category_item("pain", value, MIRELS_PAIN_POINTS)


def lesion_item(value: str | int) -> MirelsItem:
    """The lesion-type item from a category (``"blastic"``, ``"mixed"``, ``"lytic"``) or points.

    Args:
        value: Category string (case-insensitive; ``"osteolytic"``/``"osteoblastic"``
            accepted) or points 1-3.

    Returns:
        The item.

    Raises:
        MirelsError: If the category is unknown or the points are not 1-3.
    """
    return _category_item("lesion", value, MIRELS_LESION_POINTS)


def size_item(*, points: int | None = None, fraction: float | None = None) -> MirelsItem:
    """The size item from points or from the measured fraction of the cortex/diameter.

    Exactly one of ``points`` and ``fraction`` must be given. The boundaries 1/3 and 2/3
    themselves score 2 points.

    Args:
        points: Size points 1-3, given directly.
        fraction: Fraction of the cortex (or bone diameter) destroyed, in [0, 1].

    Returns:
        The item.

    Raises:
        MirelsError: If both or neither are given, the points are not 1-3, or the fraction is
            not a finite number in [0, 1].
    """
    if (points is None) == (fraction is None):
        raise MirelsError(
            "give exactly one of the Mirels size points and the size fraction",
            "pass size_points=1..3 or size_fraction=0..1, not both",
        )
    if points is not None:
        p = _points("size", points)
        return MirelsItem("size", p, _SIZE_LABELS[p - 1], USER_GIVEN)
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, Real)
        or not math.isfinite(float(fraction))
        or not 0.0 <= float(fraction) <= 1.0
    ):
        raise MirelsError(
            f"Mirels size fraction must be a number in [0, 1], got {fraction!r}",
            "give the fraction of the cortex/diameter involved (0.5 for half), not a "
            "percentage or millimetres",
        )
    f = float(fraction)
    lo, hi = MIRELS_SIZE_BOUNDS
    p = 1 if f < lo else (2 if f <= hi else 3)
    return MirelsItem(
        "size", p, _SIZE_LABELS[p - 1], f"size fraction {f:g} of the cortex/diameter",
        measurement=f,
    )


def score_mirels(
    *,
    site: str | int,
    pain: str | int,
    lesion: str | int,
    size_points: int | None = None,
    size_fraction: float | None = None,
) -> MirelsScore:
    """Mirels score from any mix of points and measurements.

    Args:
        site: Site category or points 1-3.
        pain: Pain category or points 1-3.
        lesion: Lesion type category or points 1-3.
        size_points: Size points 1-3 (exclusive with ``size_fraction``).
        size_fraction: Fraction of the cortex/diameter involved, 0-1 (exclusive with
            ``size_points``).

    Returns:
        The score; each item records whether it was given or measured.

    Raises:
        MirelsError: If an item is invalid (see :func:`site_item`, :func:`size_item`).

    Example:
        >>> s = score_mirels(site="peritrochanteric", pain=2, lesion="lytic", size_fraction=0.5)
        >>> s.total, s.recommendation
        (10, 'fix')
    """
    return MirelsScore(
        site_item(site),
        pain_item(pain),
        lesion_item(lesion),
        size_item(points=size_points, fraction=size_fraction),
    )


# --------------------------------------------------------------------------------------------
# Load-to-strength ratio and ACI.
# --------------------------------------------------------------------------------------------


@overload
def load_to_strength_ratio(applied_load_N: float, failure_load_N: float) -> float: ...


@overload
def load_to_strength_ratio(
    applied_load_N: npt.ArrayLike, failure_load_N: npt.ArrayLike
) -> float | FloatArray: ...


def load_to_strength_ratio(
    applied_load_N: npt.ArrayLike, failure_load_N: npt.ArrayLike
) -> float | FloatArray:
    """Load-to-strength ratio ("factor of risk", Keaveny & Bouxsein 2008).

    ``phi = applied_load / failure_load``; a fracture is expected when ``phi >= 1``
    (:data:`THRESHOLDS` ``["factor_of_risk"]``). Both loads in the same unit (N, or both in
    body weights).

    Args:
        applied_load_N: Applied (activity) load, >= 0, scalar or array.
        failure_load_N: Failure load (femoral strength), > 0, broadcastable to
            ``applied_load_N``.

    Returns:
        phi (dimensionless): a float for scalar inputs, else a float64 array of the broadcast
        shape.

    Raises:
        RiskError: If a load is not finite, the applied load is negative or the failure load
            is not positive.
    """
    applied = np.asarray(applied_load_N, dtype=np.float64)
    failure = np.asarray(failure_load_N, dtype=np.float64)
    if not (np.all(np.isfinite(applied)) and np.all(np.isfinite(failure))):
        raise RiskError("load-to-strength ratio: a load is NaN or infinite",
                        "give finite loads in N")
    if np.any(applied < 0):
        raise RiskError(f"applied load must be >= 0 N, got {float(applied.min()):g}",
                        "give the load magnitude")
    if np.any(failure <= 0):
        raise RiskError(
            f"failure load must be > 0 N, got {float(failure.min()):g}",
            "check the FE result; a zero failure load means the analysis failed",
        )
    phi = applied / failure
    return float(phi) if phi.ndim == 0 else phi


def aci_positive(aci_mm: npt.ArrayLike) -> BoolArray:
    """Axial cortical involvement at or above 30 mm (Van der Wal et al. 2020).

    Args:
        aci_mm: Axial cortical involvement in mm, any shape, finite.

    Returns:
        Boolean array, ``True`` where the lesion is high-risk.

    Raises:
        RiskError: If a value is NaN or infinite.
    """
    return THRESHOLDS["aci"].positive(aci_mm)
