"""Competing risks: fracture vs death within a horizon (lifelines adapter).

In metastatic patients death competes with fracture: a patient who dies at 2 months cannot
fracture at 4, so ``1 - Kaplan-Meier`` of fracture (death censored) overstates the risk and
a binary "fractured during follow-up" mixes follow-up lengths. This module

- builds the competing-risk outcome from ``fractured``, ``died`` and ``follow_up_months``
  (:func:`event_codes`: 1 fracture, 2 death without fracture, 0 censored alive);
- estimates the cumulative incidence of each cause by risk group with the Aalen-Johansen
  estimator (:func:`cumulative_incidence`, ``lifelines.AalenJohansenFitter``; Aalen &
  Johansen 1978, Scand J Stat 5:141), with pointwise percentile intervals of the **patient
  cluster bootstrap** (patients resampled with both femurs; Field & Welsh 2007, J R Stat Soc
  B 69:369): the replicates are the same estimator on weighted femurs
  (:func:`aalen_johansen_replicates`, all replicates at once in numpy);
- fits cause-specific Cox models (:func:`fit_cause_specific`, ``lifelines.CoxPHFitter``, the
  other cause censored; Prentice et al. 1978, Biometrics 34:541; Putter, Fiocco & Geskus
  2007, Stat Med 26:2389), with patient-clustered robust standard errors;
- combines them into each patient's **fracture risk within expected survival**,
  ``CIF_fx(t | x) = sum_{u <= t} S(u- | x) P(fracture in the jump at u)`` with
  ``S = exp(-Lambda_fx - Lambda_death)`` (:meth:`CauseSpecificModel.cumulative_incidence`):
  the probability of fracturing before dying, within ``t`` months.

lifelines and pandas objects stay inside this module; results are numpy dataclasses.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core.types import FloatArray, IntArray
from risk.clustered import group_codes, resample_weights
from risk.errors import MetricsError

__all__ = [
    "HORIZONS_MONTHS",
    "CauseSpecificModel",
    "IncidenceCurve",
    "aalen_johansen_replicates",
    "cumulative_incidence",
    "event_codes",
    "fit_cause_specific",
    "horizon_risk",
]


#: Horizons at which risks are reported, months (surgical decisions in metastatic disease
#: weigh the next 3-6 months; median survival after a femoral metastasis is ~6-12 months).
HORIZONS_MONTHS = (3.0, 6.0)
FRACTURE, DEATH = 1, 2


def event_codes(fractured: npt.ArrayLike, died: npt.ArrayLike,
                follow_up_months: npt.ArrayLike) -> tuple[FloatArray, IntArray]:
    """Competing-risk outcome: time and cause per femur.

    A femur that fractured has cause 1 at its fracture time (``follow_up_months`` is the time
    of fracture), whatever happened later; one that did not and whose patient died has cause
    2 at death; otherwise 0 (censored alive at the end of follow-up).

    Args:
        fractured: 0/1, shape (n,).
        died: 0/1, shape (n,).
        follow_up_months: Time of the first event or of censoring, months, shape (n,), > 0.

    Returns:
        ``(time, cause)``: float64 months (n,), int64 codes 0/1/2 (n,).

    Raises:
        MetricsError: Inconsistent lengths, non-binary flags or non-positive times.
    """
    fx = np.asarray(fractured)
    dd = np.asarray(died)
    t = np.asarray(follow_up_months, dtype=np.float64)
    if not (fx.shape == dd.shape == t.shape) or fx.ndim != 1:
        raise MetricsError(f"fractured, died and follow_up_months have shapes {fx.shape}, "
                           f"{dd.shape}, {t.shape}", "give one value per femur")
    if not (np.all(np.isin(fx, (0, 1))) and np.all(np.isin(dd, (0, 1)))):
        raise MetricsError("fractured and died must be 0/1", "encode events as 1")
    if not np.all(np.isfinite(t) & (t > 0)):
        raise MetricsError("follow_up_months must be positive", "give the time in months")
    cause = np.where(fx == 1, FRACTURE, np.where(dd == 1, DEATH, 0)).astype(np.int64)
    return t, cause


@dataclass(frozen=True)
class IncidenceCurve:
    """Aalen-Johansen cumulative incidence of one cause in one group.

    Attributes:
        group: Group label.
        cause: ``"fracture"`` or ``"death"``.
        time: Step times, months, shape (m,).
        cif: Cumulative incidence at those times, shape (m,).
        lower: Lower pointwise percentile bound of the cluster bootstrap (patients resampled
            within the group; femurs when no clusters were given), shape (m,).
        upper: Upper bound, shape (m,).
        n: Femurs in the group.
        at_horizons: Horizon (months) -> (cif, lower, upper).
        n_clusters: Patients in the group (the resampled units).
        n_bootstrap: Bootstrap replicates.
        level: Confidence level of the bounds.
    """

    group: str
    cause: str
    time: FloatArray
    cif: FloatArray
    lower: FloatArray
    upper: FloatArray
    n: int
    at_horizons: Mapping[float, tuple[float, float, float]]
    n_clusters: int
    n_bootstrap: int
    level: float


def aalen_johansen_replicates(time: FloatArray, cause: IntArray, code: int,
                              weights: FloatArray, grid: FloatArray) -> FloatArray:
    """Aalen-Johansen cumulative incidence of ``code`` for many femur weightings at once.

    With weights ``w`` (a bootstrap replicate's multiplicities) at the distinct times
    ``u_k``: ``Y_k = sum_i w_i [T_i >= u_k]``, ``D_k`` the weighted events of any cause,
    ``D1_k`` those of ``code``, and ``CIF(t) = sum_{u_k <= t} S(u_k-) D1_k / Y_k`` with
    ``S(u_k-) = prod_{j<k} (1 - D_j / Y_j)`` (Aalen & Johansen 1978): lifelines'
    ``AalenJohansenFitter`` formula, which unit weights reproduce. Times after a replicate's
    last femur carry its last value.

    Args:
        time: Months, shape (n,) (the times lifelines used, jitter included).
        cause: 0/1/2 codes, shape (n,).
        code: Cause of interest.
        weights: Femur weights, shape (B, n).
        grid: Months at which to read the curves, shape (g,).

    Returns:
        Shape (B, g), float64.
    """
    order = np.argsort(time, kind="stable")
    t_sorted = time[order]
    starts = np.flatnonzero(np.r_[True, np.diff(t_sorted) > 0])
    w = weights[:, order]
    c = cause[order]
    at_time = np.add.reduceat(w, starts, axis=1)  # (B, m) weight observed at u_k
    at_risk = np.cumsum(at_time[:, ::-1], axis=1)[:, ::-1]
    d_all = np.add.reduceat(w * (c != 0), starts, axis=1)
    d_code = np.add.reduceat(w * (c == code), starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        hazard = np.where(at_risk > 0, d_all / np.where(at_risk > 0, at_risk, 1.0), 0.0)
        jump = np.where(at_risk > 0, d_code / np.where(at_risk > 0, at_risk, 1.0), 0.0)
    surv = np.cumprod(1.0 - hazard, axis=1)
    before = np.hstack([np.ones((w.shape[0], 1)), surv[:, :-1]])
    cif = np.hstack([np.zeros((w.shape[0], 1)), np.cumsum(before * jump, axis=1)])
    idx = np.searchsorted(t_sorted[starts], grid, side="right")  # 0: before the first time
    return cif[:, idx]


def _step_at(time: FloatArray, values: FloatArray, t: float) -> float:
    i = int(np.searchsorted(time, t, side="right")) - 1
    return float(values[i]) if i >= 0 else 0.0


def cumulative_incidence(time: npt.ArrayLike, cause: npt.ArrayLike,
                         groups: Sequence[Hashable] | None = None, *,
                         clusters: Sequence[Hashable] | None = None,
                         horizons: Sequence[float] = HORIZONS_MONTHS, seed: int = 0,
                         n_bootstrap: int = 2000, level: float = 0.95
                         ) -> list[IncidenceCurve]:
    """Aalen-Johansen cumulative incidence of fracture and of death, per group.

    The estimate is ``lifelines.AalenJohansenFitter``'s, which breaks tied event times of
    different causes by a tiny jitter (seeded here, ``jitter_level`` 1e-4 months). The
    pointwise intervals are percentile intervals of a cluster bootstrap: within each group
    the patients (``clusters``) are resampled with replacement, each with all its femurs in
    the group, and the same estimator is refitted on the jittered times
    (:func:`aalen_johansen_replicates`); fracture and death share the replicates.

    Args:
        time: Months to event or censoring, shape (n,).
        cause: 0 censored, 1 fracture, 2 death (:func:`event_codes`), shape (n,).
        groups: Risk group label per femur (None: one group ``"all"``).
        clusters: Patient id per femur; None resamples femurs (the naive bootstrap, which
            treats the two femurs of a patient as independent: for comparison only).
        horizons: Months at which to read the curves.
        seed: Seed of the jitter and of the bootstrap (group ``i`` uses ``seed + i``).
        n_bootstrap: Replicates, >= 100.
        level: Confidence level, in (0, 1).

    Returns:
        Curves for every group (sorted labels) and both causes; a cause without any event in
        a group gets a zero curve (bounds 0).

    Raises:
        MetricsError: An empty input, inconsistent lengths, ``n_bootstrap`` < 100 or a level
            outside (0, 1).
    """
    from lifelines import AalenJohansenFitter

    t = np.asarray(time, dtype=np.float64)
    c = np.asarray(cause, dtype=np.int64)
    if t.size == 0 or t.shape != c.shape:
        raise MetricsError("cumulative incidence needs one time and cause per femur",
                           "pass non-empty arrays of equal length")
    if n_bootstrap < 100:
        raise MetricsError(f"n_bootstrap must be >= 100, got {n_bootstrap!r}", "use 2000")
    if not 0.0 < level < 1.0:
        raise MetricsError(f"level must be in (0, 1), got {level!r}", "use level=0.95")
    names: list[str] = (["all"] * t.size if groups is None
                        else [str(g) for g in np.asarray(groups, dtype=object).ravel()])
    labels = np.array(names, dtype=np.str_)
    if labels.size != t.size:
        raise MetricsError(f"groups has {labels.size} entries for {t.size} femurs",
                           "pass one risk group per femur")
    codes_all = group_codes(clusters, t.size)
    alpha = 1.0 - level
    out = []
    for i, label in enumerate(sorted(set(labels.tolist()))):
        mask = labels == label
        codes = group_codes(codes_all[mask].tolist(), int(mask.sum()))
        weights = resample_weights(codes, n_bootstrap, seed + i)
        for code, name in ((FRACTURE, "fracture"), (DEATH, "death")):
            if not np.any(c[mask] == code):
                grid = np.array([0.0])
                cif = low = up = np.zeros(1)
            else:
                ajf = AalenJohansenFitter(seed=seed, jitter_level=1e-4, calculate_variance=False)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "tied event times were jittered"
                    ajf.fit(t[mask], c[mask], event_of_interest=code)
                frame = ajf.cumulative_density_
                grid = frame.index.to_numpy(dtype=np.float64)
                cif = frame.iloc[:, 0].to_numpy(dtype=np.float64)
                jittered = np.asarray(ajf.durations, dtype=np.float64)
                reps = aalen_johansen_replicates(jittered, c[mask], code, weights, grid)
                low, up = np.quantile(reps, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
            at = {float(h): (_step_at(grid, cif, h), _step_at(grid, low, h),
                             _step_at(grid, up, h)) for h in horizons}
            out.append(IncidenceCurve(str(label), name, grid, cif, low, up, int(mask.sum()), at,
                                      int(codes.max()) + 1, int(n_bootstrap), float(level)))
    return out


@dataclass(frozen=True)
class CauseSpecificModel:
    """Cause-specific Cox models of fracture and of death on the same covariates.

    Attributes:
        covariates: Covariate names, length k.
        fracture_coef: Log hazard ratios of fracture, shape (k,).
        fracture_se: Their patient-clustered robust standard errors, shape (k,).
        death_coef: Log hazard ratios of death, shape (k,).
        death_se: Their robust standard errors, shape (k,).
        n: Femurs.
        fracture_events: Fractures.
        death_events: Deaths without fracture.
    """

    covariates: tuple[str, ...]
    fracture_coef: FloatArray
    fracture_se: FloatArray
    death_coef: FloatArray
    death_se: FloatArray
    n: int
    fracture_events: int
    death_events: int
    _fitters: tuple[Any, Any]

    def cumulative_incidence(self, X: Mapping[str, npt.ArrayLike],
                             horizons: Sequence[float] = HORIZONS_MONTHS) -> FloatArray:
        """Fracture risk within expected survival: P(fracture before death and before t | x).

        ``CIF(t | x) = sum_{u <= t} S(u- | x) (dL_fx / dL) (1 - exp(-dL))`` with
        ``dL = dL_fx + dL_d`` the jumps of the two Breslow cumulative hazards at ``x`` and
        ``S = exp(-L_fx - L_d)`` (:func:`_cif`).

        Args:
            X: Covariate name -> values, shape (m,) each.
            horizons: Months.

        Returns:
            Shape (m, len(horizons)), float64, in [0, 1].
        """
        import pandas as pd

        frame = pd.DataFrame({k: np.asarray(X[k], dtype=np.float64) for k in self.covariates})
        fx, death = self._fitters
        grid = np.union1d(fx.baseline_cumulative_hazard_.index.to_numpy(dtype=np.float64),
                          death.baseline_cumulative_hazard_.index.to_numpy(dtype=np.float64))
        lam_fx = fx.predict_cumulative_hazard(frame, times=grid).to_numpy().T  # (m, g)
        lam_d = death.predict_cumulative_hazard(frame, times=grid).to_numpy().T
        cif = _cif(lam_fx, lam_d)
        cols = [int(np.searchsorted(grid, h, side="right")) - 1 for h in horizons]
        return np.column_stack([cif[:, j] if j >= 0 else np.zeros(cif.shape[0])
                                for j in cols]).astype(np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Arrays that reproduce :meth:`cumulative_incidence` without lifelines (JSON-ready).

        Per cause: ``coef``, the covariate ``mean`` lifelines centres on, and the Breslow
        baseline cumulative hazard (``times``, ``cumulative_hazard``) at that mean.
        """
        out: dict[str, Any] = {"covariates": list(self.covariates), "n": self.n,
                               "fracture_events": self.fracture_events,
                               "death_events": self.death_events,
                               "method": "cause-specific Cox (lifelines CoxPHFitter, Breslow)"}
        for name, fitter in zip(("fracture", "death"), self._fitters, strict=True):
            base = fitter.baseline_cumulative_hazard_
            out[name] = {
                "coef": fitter.params_[list(self.covariates)].to_numpy(float).tolist(),
                "mean": np.asarray(fitter._norm_mean[list(self.covariates)], float).tolist(),
                "times": base.index.to_numpy(float).tolist(),
                "cumulative_hazard": base.iloc[:, 0].to_numpy(float).tolist()}
        return out


def _cif(lam_fx: FloatArray, lam_d: FloatArray) -> FloatArray:
    """Cumulative incidence of fracture from cumulative hazards on a common grid (m, g).

    Within each jump the two hazards act together: an event happens with probability
    ``1 - exp(-(dL_fx + dL_d))``, a fracture in the share ``dL_fx / (dL_fx + dL_d)``, after
    surviving to the jump with ``exp(-(L_fx + L_d))``; so ``CIF_fx + CIF_d = 1 - S`` <= 1
    even for large jumps (a plain ``S dL_fx`` sum exceeds 1 for high-risk covariates).
    """
    zeros = np.zeros((lam_fx.shape[0], 1))
    d_fx = np.diff(np.hstack([zeros, lam_fx]), axis=1)
    d_all = d_fx + np.diff(np.hstack([zeros, lam_d]), axis=1)
    before = np.exp(-np.hstack([zeros, (lam_fx + lam_d)[:, :-1]]))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(d_all > 0, d_fx / np.where(d_all > 0, d_all, 1.0), 0.0)
    return np.cumsum(before * share * -np.expm1(-d_all), axis=1)


def horizon_risk(doc: Mapping[str, Any], x: npt.ArrayLike,
                 horizons: Sequence[float] = HORIZONS_MONTHS) -> FloatArray:
    """Fracture risk within expected survival from :meth:`CauseSpecificModel.to_dict` arrays.

    Numpy only (used when a model file is applied to a patient): the same sum as
    :meth:`CauseSpecificModel.cumulative_incidence`.

    Args:
        doc: The stored arrays.
        x: Covariate values, shape (m, k) or (k,).
        horizons: Months.

    Returns:
        Shape (m, len(horizons)).

    Raises:
        MetricsError: Malformed arrays.
    """
    xv = np.atleast_2d(np.asarray(x, dtype=np.float64))
    try:
        parts = []
        grids = [np.asarray(doc[c]["times"], float) for c in ("fracture", "death")]
        grid = np.union1d(*grids)
        for cause in ("fracture", "death"):
            d = doc[cause]
            risk = np.exp((xv - np.asarray(d["mean"], float)) @ np.asarray(d["coef"], float))
            times = np.asarray(d["times"], float)
            base = np.asarray(d["cumulative_hazard"], float)
            idx = np.searchsorted(times, grid, side="right") - 1
            at = np.where(idx >= 0, base[np.maximum(idx, 0)], 0.0)
            parts.append(risk[:, None] * at[None, :])
    except (KeyError, TypeError, ValueError) as exc:
        raise MetricsError(f"malformed competing-risk arrays: {exc}",
                           "refit the model with osteofe benchmark") from exc
    cif = _cif(*parts)
    cols = [int(np.searchsorted(grid, h, side="right")) - 1 for h in horizons]
    return np.column_stack([cif[:, j] if j >= 0 else np.zeros(xv.shape[0]) for j in cols])


def fit_cause_specific(time: npt.ArrayLike, cause: npt.ArrayLike,
                       covariates: Mapping[str, npt.ArrayLike],
                       groups: Sequence[Hashable] | None = None) -> CauseSpecificModel:
    """Cause-specific Cox models (lifelines ``CoxPHFitter``, Breslow baseline, Efron ties).

    Args:
        time: Months to event or censoring, shape (n,).
        cause: 0/1/2 codes, shape (n,).
        covariates: Name -> values (n,) (e.g. the FE risk model's log-odds).
        groups: Patient id per femur: robust (sandwich) standard errors clustered by patient.

    Returns:
        Both fitted models.

    Raises:
        MetricsError: Fewer than 2 events of a cause.
    """
    import pandas as pd
    from lifelines import CoxPHFitter

    t = np.asarray(time, dtype=np.float64)
    c = np.asarray(cause, dtype=np.int64)
    names = tuple(covariates)
    base = pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in covariates.items()})
    base["_time"] = t
    if groups is not None:
        base["_cluster"] = [str(g) for g in groups]
    fitted, coefs, ses = [], [], []
    for code, name in ((FRACTURE, "fracture"), (DEATH, "death")):
        if int(np.sum(c == code)) < 2:
            raise MetricsError(f"a cause-specific Cox model of {name} needs at least 2 "
                               f"{name}s, got {int(np.sum(c == code))}",
                               "use a cohort with follow-up of deaths and fractures")
        frame = base.copy()
        frame["_event"] = (c == code).astype(int)
        cph = CoxPHFitter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cph.fit(frame, duration_col="_time", event_col="_event",
                    cluster_col="_cluster" if groups is not None else None,
                    robust=groups is not None)
        fitted.append(cph)
        coefs.append(cph.params_[list(names)].to_numpy(dtype=np.float64))
        ses.append(cph.standard_errors_[list(names)].to_numpy(dtype=np.float64))
    return CauseSpecificModel(names, coefs[0], ses[0], coefs[1], ses[1], int(t.size),
                              int(np.sum(c == FRACTURE)), int(np.sum(c == DEATH)),
                              (fitted[0], fitted[1]))
