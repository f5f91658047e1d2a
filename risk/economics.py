"""Health-economic view of prophylactic fixation: expected cost and QALYs per 100 patients.

Strategies compared on a cohort with observed outcomes (as decision curves are):

- ``fix none``: every fracture is treated when it happens;
- ``fix if Mirels >= 9`` (Mirels 1989);
- ``fix if FE probability >= t`` for every threshold ``t`` of a grid;
- ``fix all``.

Per femur, over the decision horizon: a fixed femur costs the prophylactic fixation and
loses its short-term utility, and still fractures with probability
``1 - fixation_effectiveness`` if it would have fractured; a femur left alone that fractures
costs the pathological-fracture treatment and loses the fracture's utility. Expected values
per 100 patients are the cohort means x 100; the net monetary benefit is
``NMB = willingness_to_pay x QALYs - cost`` (Stinnett & Mullahy 1998, Med Decis Making
18:S68); the best FE threshold maximises it.

Every default is data with its source in :data:`ECONOMIC_SOURCES`; values marked
``verified=False`` were recalled, not checked against the paper, and the utilities are
illustrative. Pass a table (:meth:`EconomicInputs.from_mapping`) with local costs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from core.types import FloatArray
from risk.errors import MetricsError
from risk.mirels import MIRELS_FIX_MIN, Citation

__all__ = [
    "ECONOMIC_SOURCES",
    "EconomicInputs",
    "StrategyOutcome",
    "ThresholdAnalysis",
    "evaluate_strategies",
]


#: Sources of the default inputs (``verified=False``: recalled, not checked here).
ECONOMIC_SOURCES: Mapping[str, Citation] = MappingProxyType({c.key: c for c in (
    Citation("blank2016", "Blank AT, Lerman DM, Patel NM, Rapp TB", 2016,
             "Is prophylactic intervention more cost-effective than the treatment of "
             "pathologic fractures in metastatic bone disease?",
             "Clin Orthop Relat Res 474(7):1563-1570", "10.1007/s11999-016-4739-x", False,
             "mean 90-day cost of prophylactic fixation ~21,000 USD vs ~29,000 USD for a "
             "pathological fracture (recalled; check the paper before relying on them)"),
    Citation("neumann2014", "Neumann PJ, Cohen JT, Weinstein MC", 2014,
             "Updating cost-effectiveness - the curious resilience of the $50,000-per-QALY "
             "threshold", "N Engl J Med 371(9):796-797", "10.1056/NEJMp1405158", True,
             "willingness to pay of 100,000-150,000 USD per QALY; 100,000 used"),
    Citation("stinnett1998", "Stinnett AA, Mullahy J", 1998,
             "Net health benefits: a new framework for the analysis of uncertainty in "
             "cost-effectiveness analysis", "Med Decis Making 18(2 Suppl):S68-S80",
             "10.1177/0272989X98018002S09", True, "net monetary benefit"),
    Citation("osteofe_illustrative", "osteofe", 2026, "illustrative utility decrements",
             "-", None, False, "utility decrements of fixation (0.1 for 1 month) and of a "
             "pathological fracture (0.3 for the 6-month horizon), baseline utility 0.6 of "
             "metastatic disease, fixation effectiveness 0.95: placeholders, not evidence"),
)})


@dataclass(frozen=True)
class EconomicInputs:
    """Cost and utility table (currency: USD by default; QALYs over the horizon).

    Attributes:
        cost_prophylactic_fixation: Cost of one prophylactic fixation (blank2016).
        cost_fracture_treatment: Cost of treating one pathological fracture (blank2016).
        fixation_effectiveness: Fraction of would-be fractures a fixation prevents.
        qaly_loss_fixation: QALYs lost by a prophylactic fixation (surgery, recovery).
        qaly_loss_fracture: QALYs lost by a pathological fracture within the horizon.
        baseline_utility: Utility of the metastatic state without either event.
        horizon_months: Decision horizon, months.
        willingness_to_pay: Currency per QALY (neumann2014).
        currency: Currency label.
    """

    cost_prophylactic_fixation: float = 21_000.0
    cost_fracture_treatment: float = 29_000.0
    fixation_effectiveness: float = 0.95
    qaly_loss_fixation: float = 0.1 / 12.0
    qaly_loss_fracture: float = 0.3 * 6.0 / 12.0
    baseline_utility: float = 0.6
    horizon_months: float = 6.0
    willingness_to_pay: float = 100_000.0
    currency: str = "USD"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "currency":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise MetricsError(f"economic input {f.name}={value!r} is not a finite "
                                   "number >= 0", "give costs, QALYs and rates as numbers")
        if not 0.0 <= self.fixation_effectiveness <= 1.0 or not 0 <= self.baseline_utility <= 1:
            raise MetricsError("fixation_effectiveness and baseline_utility must be in [0, 1]",
                               "give fractions")

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> EconomicInputs:
        """Defaults overridden by a table (e.g. a TOML ``[economics]`` section).

        Raises:
            MetricsError: An unknown key or a bad value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise MetricsError(f"unknown economic input(s) {unknown}",
                               f"known: {', '.join(sorted(known))}")
        return replace(cls(), **dict(table))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True)
class StrategyOutcome:
    """Expected outcome of one strategy per 100 patients.

    Attributes:
        name: Strategy.
        fixed: Fixations per 100.
        fractures: Fractures per 100 (after prevention).
        cost: Expected cost per 100.
        qalys: Expected QALYs per 100 over the horizon.
        nmb: Net monetary benefit per 100.
    """

    name: str
    fixed: float
    fractures: float
    cost: float
    qalys: float
    nmb: float


@dataclass(frozen=True)
class ThresholdAnalysis:
    """All strategies and the FE threshold sweep.

    Attributes:
        inputs: The table used.
        strategies: Fix none, Mirels >= 9 (if given), best FE threshold, fix all.
        thresholds: FE thresholds swept, shape (m,).
        nmb: NMB per 100 of each FE threshold, shape (m,).
        cost: Cost per 100 of each threshold, shape (m,).
        qalys: QALYs per 100 of each threshold, shape (m,).
        best_threshold: The threshold of the largest NMB (lowest on ties).
    """

    inputs: EconomicInputs
    strategies: tuple[StrategyOutcome, ...]
    thresholds: FloatArray
    nmb: FloatArray
    cost: FloatArray
    qalys: FloatArray
    best_threshold: float


def _outcome(name: str, fix: npt.NDArray[np.bool_], y: npt.NDArray[np.int64],
             e: EconomicInputs) -> StrategyOutcome:
    fractures = y * np.where(fix, 1.0 - e.fixation_effectiveness, 1.0)
    cost = fix * e.cost_prophylactic_fixation + fractures * e.cost_fracture_treatment
    qalys = (e.baseline_utility * e.horizon_months / 12.0 - fix * e.qaly_loss_fixation
             - fractures * e.qaly_loss_fracture)
    c, q = 100.0 * float(cost.mean()), 100.0 * float(qalys.mean())
    return StrategyOutcome(name, 100.0 * float(fix.mean()), 100.0 * float(fractures.mean()),
                           c, q, e.willingness_to_pay * q - c)


def evaluate_strategies(y_true: npt.ArrayLike, fe_probability: npt.ArrayLike,
                        mirels_total: npt.ArrayLike | None = None,
                        inputs: EconomicInputs | None = None,
                        thresholds: npt.ArrayLike | None = None) -> ThresholdAnalysis:
    """Expected cost, QALYs and NMB per 100 patients of each fixation strategy.

    Args:
        y_true: Observed fracture within the horizon, 0/1, shape (n,).
        fe_probability: FE fracture probability (out of fold), shape (n,).
        mirels_total: Mirels totals (n,), or None.
        inputs: Cost/utility table (default :class:`EconomicInputs`).
        thresholds: FE thresholds (default 0.01..0.99).

    Returns:
        The analysis.

    Raises:
        MetricsError: Inconsistent inputs.
    """
    e = inputs or EconomicInputs()
    y = np.asarray(y_true)
    p = np.asarray(fe_probability, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape or not np.all(np.isin(y, (0, 1))) \
            or not np.all((p >= 0) & (p <= 1)):
        raise MetricsError("economics needs 0/1 outcomes and probabilities in [0, 1], one per "
                           "femur", "pass the cohort's outcomes and FE probabilities")
    y = y.astype(np.int64)
    pt = (np.round(np.arange(1, 100) / 100.0, 2) if thresholds is None
          else np.asarray(thresholds, dtype=np.float64))
    sweep = [_outcome(f"fix if FE probability >= {t:g}", p >= t, y, e) for t in pt]
    nmb = np.array([s.nmb for s in sweep])
    best = int(np.argmax(nmb))
    strategies = [_outcome("fix none", np.zeros(y.size, bool), y, e)]
    if mirels_total is not None:
        m = np.asarray(mirels_total)
        if m.shape != y.shape:
            raise MetricsError("mirels_total needs one total per femur", "pass the totals")
        strategies.append(_outcome(f"fix if Mirels >= {MIRELS_FIX_MIN}", m >= MIRELS_FIX_MIN,
                                   y, e))
    strategies += [sweep[best], _outcome("fix all", np.ones(y.size, bool), y, e)]
    return ThresholdAnalysis(e, tuple(strategies), pt, nmb,
                             np.array([s.cost for s in sweep]),
                             np.array([s.qalys for s in sweep]), float(pt[best]))
